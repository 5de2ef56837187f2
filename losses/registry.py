"""Builds losses and reweighting rules by name, for the command line (`--loss`, `--reweighting`).

Errors name the flag and list the valid values, so the CLI can print them as they are.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import keras
import numpy as np

from losses.compose import Compose  # noqa: F401  (registers the class for deserialize_rule)
from losses.deferred import DeferredReweighting
from losses.equalization import EqualizationV2
from losses.focal import SigmoidFocalCrossentropy, SparseFocalCrossentropy
from losses.prior_adjusted import (BalancedSoftmaxCrossentropy, LDAMCrossentropy,
                                   LogitAdjustedCrossentropy)
from losses.rules import (ClassWeights, ReweightingRule, TargetClassWeight,
                          validate_class_counts, validate_class_weights)

LOSS_NAMES = ("cross_entropy", "focal", "sigmoid_focal", "logit_adjusted", "balanced_softmax",
              "ldam")
RULE_NAMES = ("none", "manual", "inverse_frequency", "effective_number", "target_class", "drw",
              "eqlv2")
# Rules that --drw_rule may name.
DRW_RULE_NAMES = ("manual", "inverse_frequency", "effective_number", "target_class", "eqlv2")


def _counts(name: str, flag: str, class_counts, num_classes: Optional[int]) -> np.ndarray:
    if class_counts is None:
        raise ValueError(
            f"{flag}={name} needs the per-class training counts (class_counts); none were given.")
    return validate_class_counts(class_counts, num_classes, argument="class_counts")


def make_loss(name: str, *, class_counts: Optional[Sequence[float]] = None,
              num_classes: Optional[int] = None, gamma: float = 2.0, tau: float = 1.0,
              alpha: Union[None, float, Sequence[float]] = None, max_margin: float = 0.5,
              scale: float = 30.0,
              reduction: Optional[str] = "sum_over_batch_size") -> keras.losses.Loss:
    """Returns the loss called `name` (the `--loss` flag).

    Args:
      name: One of `LOSS_NAMES`.
      class_counts: Training examples per class; needed by `logit_adjusted`,
        `balanced_softmax` and `ldam`.
      num_classes: When given, `class_counts` must have this many entries.
      gamma: Focusing parameter of `focal` and `sigmoid_focal`.
      tau: Temperature of `logit_adjusted`.
      alpha: `focal`: per-class weights or None; `sigmoid_focal`: positive
        weight in [0, 1] or None (no balancing).
      max_margin: Largest LDAM margin.
      scale: LDAM logit scale (30 assumes a normalised cosine head; use 1 for
        an ordinary dense head).
      reduction: Keras reduction of the returned loss (None: per example).

    Raises:
      ValueError: naming `--loss` for an unknown name, or the argument at fault.
    """
    if name == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    if name == "focal":
        return SparseFocalCrossentropy(gamma=gamma, alpha=alpha, reduction=reduction)
    if name == "sigmoid_focal":
        return SigmoidFocalCrossentropy(gamma=gamma, alpha=alpha, reduction=reduction)
    if name == "logit_adjusted":
        return LogitAdjustedCrossentropy(_counts(name, "--loss", class_counts, num_classes),
                                         tau=tau, reduction=reduction)
    if name == "balanced_softmax":
        return BalancedSoftmaxCrossentropy(_counts(name, "--loss", class_counts, num_classes),
                                           reduction=reduction)
    if name == "ldam":
        return LDAMCrossentropy(_counts(name, "--loss", class_counts, num_classes),
                                max_margin=max_margin, scale=scale, reduction=reduction)
    raise ValueError(f"--loss={name!r} is not known; choose one of {', '.join(LOSS_NAMES)}.")


def make_rule(name: str, *, num_classes: int, class_counts: Optional[Sequence[float]] = None,
              class_weights: Optional[Sequence[float]] = None, beta: float = 0.9999,
              target_class: Optional[int] = None, target_weight: Optional[float] = None,
              drw_start_epoch: Optional[int] = None, drw_rule: str = "effective_number",
              eqlv2_gamma: float = 12.0, eqlv2_mu: float = 0.8,
              eqlv2_alpha: float = 4.0) -> Optional[ReweightingRule]:
    """Returns the (unbuilt) reweighting rule called `name` (the `--reweighting` flag).

    Args:
      name: One of `RULE_NAMES`; `none` returns None.
      num_classes: Number of classes, to check the other arguments against.
      class_counts: Training examples per class (`inverse_frequency`,
        `effective_number`).
      class_weights: One weight per class (`manual`, the `--class_weights` flag).
      beta: Effective-number beta in [0, 1) (`--beta`).
      target_class: Class index for `target_class` (`--target_class`).
      target_weight: Its weight (`--target_weight`).
      drw_start_epoch: First epoch of reweighting for `drw` (`--drw_start_epoch`).
      drw_rule: The rule `drw` switches on, one of `DRW_RULE_NAMES` (`--drw_rule`).
      eqlv2_gamma: EQL v2 gamma.
      eqlv2_mu: EQL v2 mu.
      eqlv2_alpha: EQL v2 alpha.

    Raises:
      ValueError: naming the flag and the offending value.
    """
    if name == "none":
        return None
    if name == "manual":
        if class_weights is None:
            raise ValueError("--reweighting=manual needs --class_weights (one weight per class).")
        return ClassWeights(validate_class_weights(class_weights, num_classes,
                                                   argument="--class_weights"))
    if name == "inverse_frequency":
        return ClassWeights.inverse_frequency(
            _counts(name, "--reweighting", class_counts, num_classes))
    if name == "effective_number":
        if isinstance(beta, bool) or not np.isfinite(beta) or not 0.0 <= beta < 1.0:
            raise ValueError(f"--beta must be in [0, 1), got {beta!r}.")
        return ClassWeights.effective_number(
            _counts(name, "--reweighting", class_counts, num_classes), beta=beta)
    if name == "target_class":
        if target_class is None or target_weight is None:
            raise ValueError(
                "--reweighting=target_class needs --target_class and --target_weight, got "
                f"--target_class={target_class!r} --target_weight={target_weight!r}.")
        if isinstance(target_class, bool) or int(target_class) != target_class \
                or not 0 <= target_class < num_classes:
            raise ValueError(
                f"--target_class={target_class!r} is out of range for {num_classes} classes "
                f"(valid: 0..{num_classes - 1}).")
        if not np.isfinite(target_weight) or target_weight <= 0:
            raise ValueError(f"--target_weight must be positive, got {target_weight!r}.")
        return TargetClassWeight(int(target_class), float(target_weight))
    if name == "drw":
        if drw_start_epoch is None:
            raise ValueError("--reweighting=drw needs --drw_start_epoch (the first epoch to "
                             "reweight, zero-based).")
        if isinstance(drw_start_epoch, bool) or int(drw_start_epoch) != drw_start_epoch \
                or drw_start_epoch < 0:
            raise ValueError(
                f"--drw_start_epoch must be a non-negative integer, got {drw_start_epoch!r}.")
        if drw_rule not in DRW_RULE_NAMES:
            raise ValueError(f"--drw_rule={drw_rule!r} is not known; choose one of "
                             f"{', '.join(DRW_RULE_NAMES)}.")
        inner = make_rule(drw_rule, num_classes=num_classes, class_counts=class_counts,
                          class_weights=class_weights, beta=beta, target_class=target_class,
                          target_weight=target_weight, eqlv2_gamma=eqlv2_gamma,
                          eqlv2_mu=eqlv2_mu, eqlv2_alpha=eqlv2_alpha)
        return DeferredReweighting(inner, start_epoch=int(drw_start_epoch))
    if name == "eqlv2":
        return EqualizationV2(gamma=eqlv2_gamma, mu=eqlv2_mu, alpha=eqlv2_alpha)
    raise ValueError(
        f"--reweighting={name!r} is not known; choose one of {', '.join(RULE_NAMES)}.")
