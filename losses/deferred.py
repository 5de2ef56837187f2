"""Deferred re-weighting (DRW, Cao et al. 2019): plain gradients first, a reweighting rule later.

The switch reads the epoch from the training context, so a resumed run switches at exactly the same epoch.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from losses.rules import ReweightingRule, TrainingContext, deserialize_rule, serialize_rule
from trainer.checks import ArgumentError, check_integer


class DeferredReweighting(ReweightingRule):
    """Leaves the gradient unchanged before `start_epoch`, then applies `rule`.

    Cao et al. (2019) train with uniform weights until late in training (e.g.
    epoch 160 of 200) and then switch on class-balanced weights
    (`ClassWeights.effective_number`), so the features are learnt from the
    natural distribution and the classifier is rebalanced afterwards.

    The switch depends only on `context.epoch` (zero-based): epochs
    `0 .. start_epoch - 1` are uniform, `start_epoch` onward use `rule`. The
    wrapped rule is evaluated at every step and the result selected, so a
    stateful rule (e.g. `EqualizationV2`) keeps collecting its statistics
    during the uniform phase, and no collective runs inside a conditional.

    Args:
      rule: The reweighting rule to switch on.
      start_epoch: First (zero-based) epoch that uses `rule`, >= 0.
      name: Optional module name.

    Raises:
      ArgumentError: Naming `rule` or `start_epoch`.

    Example:
      >>> rule = DeferredReweighting(ClassWeights.effective_number(counts), start_epoch=160)
    """

    def __init__(self, rule: ReweightingRule, start_epoch: int, name: Optional[str] = None):
        super().__init__(name=name)
        if not isinstance(rule, ReweightingRule):
            raise ArgumentError("rule", rule, "must be a ReweightingRule")
        self.rule = rule
        self.start_epoch = check_integer(start_epoch, "start_epoch", minimum=0)

    def build(self, num_classes: int) -> None:
        super().build(num_classes)
        if not self.rule.built:
            self.rule.build(num_classes)

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor, grad_logits: tf.Tensor,
                 context: TrainingContext) -> tf.Tensor:
        reweighted = self.rule(labels, logits, grad_logits, context)
        active = tf.cast(context.epoch, tf.int64) >= self.start_epoch
        return tf.where(active, reweighted, grad_logits)

    def logit_offsets(self, context: TrainingContext) -> Optional[tf.Tensor]:
        """The wrapped rule's training logit offsets from `start_epoch` on, zeros before."""
        offsets = self.rule.logit_offsets(context)
        if offsets is None:
            return None
        active = tf.cast(context.epoch, tf.int64) >= self.start_epoch
        return tf.where(active, offsets, tf.zeros_like(offsets))

    def class_weights(self) -> Optional[tf.Tensor]:
        """The wrapped rule's weights: those applied from `start_epoch` on."""
        return self.rule.class_weights()

    def get_config(self) -> Dict[str, Any]:
        return {"rule": serialize_rule(self.rule), "start_epoch": self.start_epoch}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "DeferredReweighting":
        config = dict(config)
        rule = config.pop("rule")
        if isinstance(rule, dict):
            rule = deserialize_rule(rule)
        return cls(rule, **config)
