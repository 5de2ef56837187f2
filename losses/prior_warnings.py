"""Warns when two corrections for the class prior are stacked and over-correct together.

Logit adjustment and balanced softmax remove the prior; inverse-frequency weights or resampling do it again.
"""

from __future__ import annotations

import warnings
from typing import Iterator, List, Optional

from losses.prior_adjusted import BalancedSoftmaxCrossentropy, LogitAdjustedCrossentropy
from losses.rules import ReweightingRule


def _walk(rule: Optional[ReweightingRule]) -> Iterator[ReweightingRule]:
    """Yields `rule` and the rules it wraps (`DeferredReweighting.rule`, `Compose.rules`)."""
    if rule is None:
        return
    yield rule
    inner = getattr(rule, "rule", None)
    if isinstance(inner, ReweightingRule):
        yield from _walk(inner)
    for child in getattr(rule, "rules", None) or ():
        if isinstance(child, ReweightingRule):
            yield from _walk(child)


def loss_corrects_prior(loss) -> bool:
    """Whether `loss` already trains against the class prior (its margins carry it).

    True for `LogitAdjustedCrossentropy` with tau > 0 and for
    `BalancedSoftmaxCrossentropy`; False for anything else (including None).
    Rules that would otherwise start from inverse-frequency weights (e.g.
    `callbacks.RecallTarget`) use it to start from uniform weights instead.
    """
    return (isinstance(loss, LogitAdjustedCrossentropy) and loss.tau > 0) \
        or isinstance(loss, BalancedSoftmaxCrossentropy)


def warn_if_prior_counted_twice(loss, rule: Optional[ReweightingRule] = None,
                                resampled: bool = False) -> bool:
    """Emits a `UserWarning` when a prior-corrected loss meets another prior correction.

    `LogitAdjustedCrossentropy` (tau > 0) and `BalancedSoftmaxCrossentropy`
    train against the class prior already; adding weights built by
    `ClassWeights.inverse_frequency` / `ClassWeights.effective_number`
    (recognised by their `prior_correction` attribute, also inside
    `DeferredReweighting` and `Compose`) or class-balanced resampling of the
    data corrects for it a second time and over-favours rare classes.

    Args:
      loss: The training loss (any object; only the two classes above count).
      rule: The reweighting rule, or None.
      resampled: Whether the training data is resampled toward balance.

    Returns:
      True when a warning was emitted.
    """
    if not loss_corrects_prior(loss):
        return False
    loss_name = f"{type(loss).__name__} (tau={loss.tau:g})" \
        if isinstance(loss, LogitAdjustedCrossentropy) else type(loss).__name__
    others: List[str] = []
    for part in _walk(rule):
        correction = getattr(part, "prior_correction", None)
        if correction:
            others.append(f"{correction.replace('_', '-')} class weights")
    if resampled:
        others.append("class-balanced resampling")
    if not others:
        return False
    warnings.warn(
        f"{loss_name} already corrects for the class prior; combining it with "
        f"{' and '.join(others)} counts the prior twice and over-weights rare classes. "
        "Use one correction (e.g. no reweighting rule with this loss, or plain cross-entropy "
        "with the weights).", UserWarning, stacklevel=2)
    return True
