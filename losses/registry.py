"""Builds losses and reweighting rules by name: `make_loss(name, ...)`, `make_rule(name, ...)`.

Errors are `trainer.checks.ArgumentError`s naming this module's own arguments; the CLI maps them to its flags.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import keras
import numpy as np

from losses.asymmetric import AsymmetricLoss
from losses.compose import Compose  # noqa: F401  (registers the class for deserialize_rule)
from losses.deferred import DeferredReweighting
from losses.equalization import EqualizationV2
from losses.focal import SigmoidFocalCrossentropy, SparseFocalCrossentropy
from losses.prior_adjusted import BalancedSoftmaxCrossentropy, LDAMCrossentropy, LogitAdjustedCrossentropy
from losses.rules import (
    ClassWeights,
    ReweightingRule,
    TargetClassWeight,
    observed_class_counts,
    validate_class_weights,
)
from trainer.checks import (
    ArgumentError,
    check_choice,
    check_class_index,
    check_integer,
    check_number,
    check_positive,
)

LOSS_NAMES = ("cross_entropy", "focal", "sigmoid_focal", "logit_adjusted", "balanced_softmax",
              "ldam", "asymmetric")
# Losses of one sigmoid logit per example or label (a one-logit binary head, multi-label).
SIGMOID_LOSS_NAMES = ("sigmoid_focal", "asymmetric")
RULE_NAMES = ("none", "manual", "inverse_frequency", "effective_number", "target_class", "drw",
              "eqlv2")
# Rules that `drw_rule` may name.
DRW_RULE_NAMES = ("manual", "inverse_frequency", "effective_number", "target_class", "eqlv2")


def _needed(argument: str, value, what: str, name: str, purpose: str) -> None:
    if value is None:
        raise ArgumentError(argument, value, f"is needed by the {what} {name!r} ({purpose})")


def _counts(name: str, what: str, class_counts, num_classes: Optional[int]) -> np.ndarray:
    """The observed counts (zeros allowed: the loss or rule gives them the pseudo-count)."""
    _needed("class_counts", class_counts, what, name, "the training examples per class")
    return observed_class_counts(class_counts, num_classes, argument="class_counts")


def make_loss(name: str, *, class_counts: Optional[Sequence[float]] = None,
              num_classes: Optional[int] = None, gamma: float = 2.0, tau: float = 1.0,
              alpha: Union[None, float, Sequence[float]] = None, max_margin: float = 0.5,
              scale: float = 30.0,
              reduction: Optional[str] = "sum_over_batch_size",
              class_names: Optional[Sequence[str]] = None, gamma_pos: float = 0.0,
              gamma_neg: float = 4.0, clip: float = 0.05) -> keras.losses.Loss:
    """Returns the loss called `name`.

    Args:
      name: One of `LOSS_NAMES`.
      class_counts: Training examples per class; needed by `logit_adjusted`,
        `balanced_softmax` and `ldam`. An absent class (0) counts
        `losses.rules.ABSENT_CLASS_PSEUDO_COUNT` (a `SmallClassWarning` names it).
      num_classes: When given, `class_counts` must have this many entries.
      gamma: Focusing parameter of `focal` and `sigmoid_focal`.
      tau: Temperature of `logit_adjusted`.
      alpha: `focal`: per-class weights or None; `sigmoid_focal`: positive
        weight in [0, 1] or None (no balancing).
      max_margin: Largest LDAM margin.
      scale: LDAM logit scale (30 assumes a normalised cosine head; use 1 for
        an ordinary dense head).
      reduction: Keras reduction of the returned loss (None: per example).
      class_names: Class names, for the warnings about absent classes.
      gamma_pos: `asymmetric`'s focusing parameter of the positives.
      gamma_neg: `asymmetric`'s focusing parameter of the negatives.
      clip: `asymmetric`'s probability margin of the negatives.

    Raises:
      ArgumentError: naming `name` when it is not one of `LOSS_NAMES`, or the
        argument at fault.
    """
    check_choice(name, "name", LOSS_NAMES)
    if name == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    if name == "focal":
        return SparseFocalCrossentropy(gamma=gamma, alpha=alpha, reduction=reduction)
    if name == "sigmoid_focal":
        return SigmoidFocalCrossentropy(gamma=gamma, alpha=alpha, reduction=reduction)
    if name == "asymmetric":
        return AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, reduction=reduction)
    counts = _counts(name, "loss", class_counts, num_classes)
    if name == "logit_adjusted":
        return LogitAdjustedCrossentropy(counts, tau=tau, reduction=reduction, class_names=class_names)
    if name == "balanced_softmax":
        return BalancedSoftmaxCrossentropy(counts, reduction=reduction, class_names=class_names)
    return LDAMCrossentropy(counts, max_margin=max_margin, scale=scale, reduction=reduction,
                            class_names=class_names)


def make_rule(name: str, *, num_classes: int, class_counts: Optional[Sequence[float]] = None,
              class_weights: Optional[Sequence[float]] = None, beta: float = 0.9999,
              target_class: Optional[int] = None, target_weight: Optional[float] = None,
              drw_start_epoch: Optional[int] = None, drw_rule: str = "effective_number",
              eqlv2_gamma: float = 12.0, eqlv2_mu: float = 0.8,
              eqlv2_alpha: float = 4.0,
              class_names: Optional[Sequence[str]] = None) -> Optional[ReweightingRule]:
    """Returns the (unbuilt) reweighting rule called `name`.

    Args:
      name: One of `RULE_NAMES`; `none` returns None.
      num_classes: Number of classes, to check the other arguments against.
      class_counts: Training examples per class (`inverse_frequency`,
        `effective_number`): tiny classes (< `losses.rules.TINY_CLASS_SIZE`) are
        capped, absent ones pseudo-counted, each with a `SmallClassWarning`.
      class_weights: One weight per class (`manual`).
      beta: Effective-number beta in [0, 1) (`effective_number`).
      target_class: Class index (`target_class`).
      target_weight: Its weight, > 0 (`target_class`).
      drw_start_epoch: First epoch of reweighting, zero-based (`drw`).
      drw_rule: The rule `drw` switches on, one of `DRW_RULE_NAMES`.
      eqlv2_gamma: EQL v2 gamma.
      eqlv2_mu: EQL v2 mu.
      eqlv2_alpha: EQL v2 alpha.
      class_names: Class names, for the warnings about absent and tiny classes.

    Raises:
      ArgumentError: naming the argument at fault and its value.
    """
    check_choice(name, "name", RULE_NAMES)
    if name == "none":
        return None
    if name == "manual":
        _needed("class_weights", class_weights, "rule", name, "one weight per class")
        return ClassWeights(validate_class_weights(class_weights, num_classes, argument="class_weights"))
    if name == "inverse_frequency":
        return ClassWeights.inverse_frequency(_counts(name, "rule", class_counts, num_classes),
                                              class_names=class_names)
    if name == "effective_number":
        beta = check_number(beta, "beta", minimum=0.0, maximum=1.0, exclusive_maximum=True)
        return ClassWeights.effective_number(_counts(name, "rule", class_counts, num_classes),
                                             beta=beta, class_names=class_names)
    if name == "target_class":
        _needed("target_class", target_class, "rule", name, "the class to weight")
        _needed("target_weight", target_weight, "rule", name, "its weight")
        return TargetClassWeight(check_class_index(target_class, "target_class", num_classes),
                                 check_positive(target_weight, "target_weight"))
    if name == "drw":
        _needed("drw_start_epoch", drw_start_epoch, "rule", name,
                "the first epoch to reweight, zero-based")
        start_epoch = check_integer(drw_start_epoch, "drw_start_epoch", minimum=0)
        inner = make_rule(check_choice(drw_rule, "drw_rule", DRW_RULE_NAMES),
                          num_classes=num_classes, class_counts=class_counts,
                          class_weights=class_weights, beta=beta, target_class=target_class,
                          target_weight=target_weight, eqlv2_gamma=eqlv2_gamma,
                          eqlv2_mu=eqlv2_mu, eqlv2_alpha=eqlv2_alpha, class_names=class_names)
        return DeferredReweighting(inner, start_epoch=start_epoch)
    return EqualizationV2(gamma=eqlv2_gamma, mu=eqlv2_mu, alpha=eqlv2_alpha)
