"""Chains reweighting rules: each rule receives the gradient returned by the one before.

The optax-style composition that replaces flags for combined corrections (e.g. class weights then EQL v2).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from losses.rules import ReweightingRule, TrainingContext, deserialize_rule, serialize_rule
from trainer.checks import ArgumentError


class Compose(ReweightingRule):
    """Applies `rules` in order to the gradient at the logits.

    `Compose(a, b)(labels, logits, g, ctx)` is `b(labels, logits, a(labels,
    logits, g, ctx), ctx)`. Building builds every rule, and every rule's state
    is checkpointed with the composition.

    Args:
      *rules: One or more `ReweightingRule`s, applied first to last.
      name: Optional module name.

    Raises:
      ArgumentError: Naming `rules` when there is none or one is not a `ReweightingRule`.

    Example:
      >>> rule = Compose(TargetClassWeight(3, 2.0), EqualizationV2())
    """

    def __init__(self, *rules: ReweightingRule, name: Optional[str] = None):
        super().__init__(name=name)
        if not rules:
            raise ArgumentError("rules", rules, "must hold at least one rule")
        for rule in rules:
            if not isinstance(rule, ReweightingRule):
                raise ArgumentError("rules", rule, "must be ReweightingRule objects")
        self.rules = list(rules)

    def build(self, num_classes: int) -> None:
        super().build(num_classes)
        for rule in self.rules:
            if not rule.built:
                rule.build(num_classes)

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor, grad_logits: tf.Tensor,
                 context: TrainingContext) -> tf.Tensor:
        for rule in self.rules:
            grad_logits = rule(labels, logits, grad_logits, context)
        return grad_logits

    def class_weights(self) -> Optional[tf.Tensor]:
        """The product of the rules' per-class weights (None when no rule has any)."""
        product = None
        for rule in self.rules:
            weights = rule.class_weights()
            if weights is not None:
                product = weights if product is None else product * weights
        return product

    def logit_offsets(self, context: TrainingContext) -> Optional[tf.Tensor]:
        """The sum of the rules' training logit offsets (None when no rule has any)."""
        total = None
        for rule in self.rules:
            offsets = rule.logit_offsets(context)
            if offsets is not None:
                total = offsets if total is None else total + offsets
        return total

    def get_config(self) -> Dict[str, Any]:
        return {"rules": [serialize_rule(rule) for rule in self.rules]}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Compose":
        rules = [deserialize_rule(rule) if isinstance(rule, dict) else rule
                 for rule in config["rules"]]
        return cls(*rules, name=config.get("name"))
