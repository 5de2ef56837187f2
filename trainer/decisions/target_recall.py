"""The target-recall operating point: the decision rule that reaches a class's recall with the best precision.

Chosen on held-out logits after training (`choose_operating_point`), kinds `logit_offset` and `threshold`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError, check_choice, check_class_index, check_integer, check_number
from trainer.decisions.base import OperatingPoint, checked_logits_and_labels
from trainer.decisions.cutoffs import (
    BOUNDS,
    INTERVAL_METHODS,
    RankedScores,
    binomial_intervals,
    bootstrap_intervals,
    can_show_recall,
    choose_cutoffs,
    evaluate_cutoffs,
    recall_lower_bound,  # noqa: F401 (imported from here by trainer.cli.config)
    shown_confidence,
)

KINDS = ("logit_offset", "threshold")
METHODS = KINDS + ("auto",)
# How the cut-off is estimated where no confidence bound applies (see `choose_operating_point`).
ESTIMATORS = ("harrell_davis", "empirical")


def _log_sum_exp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.sum(np.exp(values - peak), axis=axis))


def _others(logits: np.ndarray, target_class: int) -> np.ndarray:
    return np.delete(logits, target_class, axis=1)


def target_scores(logits: np.ndarray, target_class: int, kind: str) -> np.ndarray:
    """The score each rule compares with its cut-off (higher: more likely the target class).

    `logit_offset`: `z_t - max_{j != t} z_j` (the target class wins the
    argmax after adding `delta` iff score >= -delta). `threshold`:
    `log p_t - log(1 - p_t) = z_t - logsumexp_{j != t} z_j`, the log-odds of
    the target class's probability, free of float saturation near p = 1.
    """
    logits = np.asarray(logits, np.float64)
    others = _others(logits, target_class)
    if kind == "logit_offset":
        return logits[:, target_class] - others.max(axis=1)
    return logits[:, target_class] - _log_sum_exp(others, axis=1)


@dataclasses.dataclass(frozen=True)
class TargetRecallPoint(OperatingPoint):
    """A decision rule for the target class.

    Both kinds add `offset` to the target class's logit (so the adjusted
    probabilities from `Trainer.predict` reflect the rule):

    - `logit_offset`: predict `argmax(logits + offset * e_t)`.
    - `threshold`: predict the target class iff its probability is at least
      `threshold` (its adjusted probability is then >= 0.5; `offset` is
      `-logit(threshold)`), otherwise the most probable other class.

    Attributes:
      kind: `'logit_offset'` or `'threshold'`.
      target_class: The class whose recall is targeted.
      num_classes: Number of classes.
      offset: Added to the target class's logit.
      threshold: Cut-off on the target class's probability (threshold kind).
      target_recall: The recall it was chosen to reach.
      validation_recall: Target-class recall on the calibration data.
      validation_precision: Target-class precision on the calibration data
        (under `class_prior` when one was given).
      class_prior: The class prior precision was measured under, or None.
      confidence: The confidence of the recall constraint (0.5: point
        estimate; see `choose_operating_point`).
      estimator: `'harrell_davis'` or `'empirical'` (files written before
        the option existed: `'empirical'`).
      bound: The recall's lower confidence bound, `'exact'` or `'wilson'`
        (older files: `'wilson'`).
      confidence_met: Whether the calibration data could show the target
        recall at `confidence` (the bound chose the cut-off); False: too few
        target-class examples, the cut-off is the point estimate. None in
        older files.
      shown_confidence: The confidence at which the calibration data show
        the chosen cut-off's recall reaches `target_recall` (the inverse of
        the Wilson bound; below 0.5 when the observed recall misses it).
      positives: Number of target-class calibration examples.
      recall_interval: `(low, high)` interval of the target-class recall
        the rule should give on new data of the calibration distribution,
        or None (not computed; older files).
      precision_interval: The same for precision (under `class_prior`).
      interval_level: Two-sided level of both intervals, e.g. 0.9.
      interval_method: `'binomial'` or `'bootstrap'` (see
        `choose_operating_point`).
      interval_resamples: Number of bootstrap resamples behind them (None
        for the binomial intervals).
    """

    kinds: ClassVar[tuple[str, ...]] = KINDS

    kind: str
    target_class: int
    num_classes: int
    offset: float
    threshold: float | None
    target_recall: float
    validation_recall: float
    validation_precision: float
    class_prior: tuple[float, ...] | None = None
    confidence: float = 0.5
    estimator: str = "empirical"
    bound: str = "wilson"
    confidence_met: bool | None = None
    shown_confidence: float | None = None
    positives: int | None = None
    recall_interval: tuple[float, float] | None = None
    precision_interval: tuple[float, float] | None = None
    interval_level: float | None = None
    interval_method: str | None = None
    interval_resamples: int | None = None

    def offsets(self) -> np.ndarray:
        """Per-class logit offsets `[num_classes]` (zero but for the target class)."""
        offsets = np.zeros(self.num_classes, np.float32)
        offsets[self.target_class] = self.offset
        return offsets

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Class indices `[N]` under this rule."""
        if self.kind == "logit_offset":
            return super().decide(logits)
        adjusted = np.asarray(self.adjust_logits(logits), np.float64)
        t = self.target_class
        is_target = target_scores(adjusted, t, "threshold") >= 0.0
        others = _others(adjusted, t).argmax(axis=1)
        others = others + (others >= t)
        return np.where(is_target, t, others)

    def _target_log_odds(self, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(the target's log-odds after the offset `[N]`, the other classes' adjusted logits `[N, K]`)."""
        adjusted = tf.cast(logits, tf.float32) + tf.constant(self.offsets())
        is_target_column = tf.one_hot(self.target_class, self.num_classes, on_value=True,
                                      off_value=False)
        others = tf.where(is_target_column, tf.constant(-np.inf, tf.float32), adjusted)
        return adjusted[:, self.target_class] - tf.reduce_logsumexp(others, axis=-1), others

    def score_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """float32 `[N, K]`: the target column holds its log-odds after the offset (decided when
        >= 0); the other columns their logits after the offsets (the largest wins otherwise)."""
        if self.kind == "logit_offset":
            return super().score_tensor(logits)
        log_odds, others = self._target_log_odds(logits)
        column = tf.one_hot(self.target_class, self.num_classes, on_value=True, off_value=False)
        return tf.where(column, log_odds[:, None], others)

    def decide_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`decide` in TensorFlow (int32 `[N]`), e.g. for a SavedModel's serving function."""
        if self.kind == "logit_offset":
            return super().decide_tensor(logits)
        log_odds, others = self._target_log_odds(logits)
        return tf.where(log_odds >= 0.0, tf.constant(self.target_class, tf.int32),
                        tf.argmax(others, axis=-1, output_type=tf.int32))

    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict (the format of `operating_point.json`)."""
        payload = dataclasses.asdict(self)
        for key in ("class_prior", "recall_interval", "precision_interval"):
            payload[key] = None if payload[key] is None else [float(v) for v in payload[key]]
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TargetRecallPoint:
        """The point `to_dict` described.

        Raises:
          ValueError: for another kind, a missing or unknown key, or a
            `target_class` or `offset` out of range.
        """
        payload = dict(payload)
        if payload.get("kind") not in KINDS:
            raise ValueError(f"Unknown operating point kind {payload.get('kind')!r}; "
                             f"expected one of {', '.join(KINDS)}.")
        for key in ("class_prior", "recall_interval", "precision_interval"):
            if payload.get(key) is not None:
                payload[key] = tuple(float(v) for v in payload[key])
        try:
            point = cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error
        check_class_index(point.target_class, "target_class",
                          check_integer(point.num_classes, "num_classes", minimum=2))
        check_number(point.offset, "offset")
        check_choice(point.estimator, "estimator", ESTIMATORS)
        check_choice(point.bound, "bound", BOUNDS)
        if point.interval_method is not None:
            check_choice(point.interval_method, "interval_method", INTERVAL_METHODS)
        for key in ("recall_interval", "precision_interval"):
            interval = getattr(point, key)
            if interval is not None and not (len(interval) == 2 and 0.0 <= interval[0] <= interval[1] <= 1.0):
                raise ArgumentError(key, list(interval), "must be [low, high] with 0 <= low <= high <= 1")
        return point


def example_weights(labels: np.ndarray, num_classes: int,
                    class_prior: Sequence[float] | None) -> np.ndarray:
    """Each example's weight in precision: 1, or `class_prior` over the class's share of `labels`.

    Raises:
      ArgumentError: naming `class_prior` unless `num_classes` non-negative numbers with a positive sum.
    """
    if class_prior is None:
        return np.ones(len(labels), np.float64)
    prior = np.asarray(class_prior, np.float64)
    if prior.shape != (num_classes,) or np.any(prior < 0) or not np.all(np.isfinite(prior)) \
            or prior.sum() <= 0:
        raise ArgumentError("class_prior", class_prior,
                            f"must be {num_classes} non-negative numbers with a positive sum")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, (prior / prior.sum()) / np.maximum(counts / len(labels), 1e-300), 0.0)
    return per_class[labels]


def _choose(ranked: RankedScores, rule: str, target_recall: float, confidence: float,
            bound: str) -> tuple[float, float, float]:
    """`(cutoff, recall, precision)` of `rule` on the calibration examples themselves."""
    cutoff = choose_cutoffs(ranked, np.ones((1, len(ranked.scores))), rule, target_recall, confidence,
                            bound)
    recall, precision = evaluate_cutoffs(ranked, cutoff)
    return float(cutoff[0]), float(recall[0]), float(precision[0])


def cutoff_rule(positives: int, target_recall: float, confidence: float, estimator: str,
                bound: str) -> tuple[str, bool]:
    """`(rule, confidence_met)`: which `cutoffs.RULES` member chooses, and whether the bound could."""
    if not can_show_recall(positives, target_recall, confidence, bound):
        # Too few positives: even catching all of them does not show the target at `confidence`.
        if estimator == "empirical" or target_recall >= 1.0:
            return "catch_all", False
        return "harrell_davis", False
    if confidence == 0.5 and estimator == "harrell_davis" and target_recall < 1.0:
        return "harrell_davis", True  # the point estimate asked for, smoothed
    return "bound", True


def choose_operating_point(logits: np.ndarray, labels: np.ndarray, *, target_class: int,
                           target_recall: float, method: str = "auto",
                           class_prior: Sequence[float] | None = None,
                           confidence: float = 0.9, estimator: str = "harrell_davis",
                           bound: str = "exact", interval_level: float | None = 0.9,
                           interval_method: str = "binomial", bootstrap_resamples: int = 1000,
                           seed: int = 0) -> TargetRecallPoint:
    """Chooses, on validation logits, the rule reaching `target_recall` with the best precision.

    Among the cut-offs whose target-class recall on these examples reaches
    `target_recall` with `confidence` (the one-sided lower confidence bound
    of the recall does), takes the one with the highest precision; with
    `method='auto'`, the better of the two kinds (a tie goes to
    `logit_offset`, which keeps the argmax decision).

    Why a confidence bound: a held-out split has few examples of a rare
    class (about 56 shirts in long-tailed Fashion-MNIST at IR 100), so a
    cut-off placed exactly at 90% of them reaches 0.9 on new data only about
    half the time. With `confidence=0.9` it does so at least 90% of the time
    if the held-out split is representative: `bound='exact'` (default, the
    Clopper-Pearson bound) guarantees it for any continuous score
    distribution (`cutoffs.recall_passes`); `bound='wilson'` (the rule
    before the option existed) approximates it and falls short with few
    examples (16 examples: 0.83 instead of 0.9).

    Too few examples for the bound: with n target-class examples even
    catching all of them shows recall t only at confidence `1 - t ** n`
    (exact; Wilson: `Phi(sqrt(n (1 - t) / t))`), so at `confidence=0.9` no
    cut-off passes for t = 0.9 below 22 examples (Wilson: 16). Then the
    point says so (`confidence_met=False`, `shown_confidence`, a warning)
    and `estimator` picks the cut-off: `'harrell_davis'` (default) the
    Harrell-Davis estimate of the score that a fraction `target_recall` of
    the class reaches (its `1 - t` quantile): the point estimate, about
    median-unbiased on new data, which keeps the precision; `'empirical'`
    (the rule before the option existed) the best-precision cut-off catching
    every example, whose threshold the lowest-scoring example sets (an
    outlier there costs most of the precision). With `confidence=0.5` (the
    point estimate asked for) `'harrell_davis'` uses that quantile too and
    `'empirical'` the best-precision cut-off whose observed recall reaches
    the target (which misses it on new data more often than not). A target
    recall of 1 has no quantile: every example is caught.
    `python -m trainer.decisions.monte_carlo` measures the variants.

    Intervals: `recall_interval` and `precision_interval`, what the rule
    should give on new data of the calibration data's distribution, at
    `interval_level`. `interval_method='binomial'` (default): exact
    binomial intervals at the chosen cut-off (`cutoffs.binomial_intervals`;
    valid for cut-offs set by the positives' order statistics, measured
    recall coverage 0.90-0.98 at level 0.9 for 12-200 positives).
    `'bootstrap'`: a stratified percentile bootstrap of the whole choice
    (`cutoffs.bootstrap_intervals`: the chosen kind, estimator, bound and
    confidence on each resample, measured on all calibration examples;
    `bootstrap_resamples` cumulative sums over N); about right from 60
    positives, too narrow below (recall coverage 0.5 at 12 positives: the
    bootstrap cannot see below the lowest positive score).
    `python -m trainer.decisions.monte_carlo --intervals` measures both.

    Args:
      logits: `[N, K]` validation logits.
      labels: `[N]` validation labels; must contain the target class.
      target_class: The class whose recall is targeted.
      target_recall: In (0, 1].
      method: `'logit_offset'`, `'threshold'` or `'auto'`.
      class_prior: Class prior to measure precision under (e.g. uniform when
        deployment data is balanced but validation data is long-tailed);
        None uses the validation data as it is. Recall does not depend on it.
      confidence: In [0.5, 1).
      estimator: `'harrell_davis'` or `'empirical'`: the cut-off where the
        bound cannot choose (see above).
      bound: `'exact'` or `'wilson'`: the recall's lower confidence bound.
      interval_level: Two-sided level of the intervals, in (0, 1); None
        computes none.
      interval_method: `'binomial'` or `'bootstrap'`.
      bootstrap_resamples: Resamples of the bootstrap intervals, >= 1.
      seed: Of the bootstrap (same data and seed: the same intervals).

    Raises:
      ValueError: naming the argument that is out of range or inconsistent
        (`trainer.checks.ArgumentError` for a bad argument value).
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    num_classes = logits.shape[1]
    target_class = check_class_index(target_class, "target_class", num_classes)
    target_recall = check_number(target_recall, "target_recall", minimum=0, maximum=1,
                                 exclusive_minimum=True)
    check_choice(method, "method", METHODS)
    confidence = check_number(confidence, "confidence", minimum=0.5, maximum=1, exclusive_maximum=True)
    check_choice(estimator, "estimator", ESTIMATORS)
    check_choice(bound, "bound", BOUNDS)
    if interval_level is not None:
        interval_level = check_number(interval_level, "interval_level", minimum=0, maximum=1,
                                      exclusive_minimum=True, exclusive_maximum=True)
    check_choice(interval_method, "interval_method", INTERVAL_METHODS)
    bootstrap_resamples = check_integer(bootstrap_resamples, "bootstrap_resamples", minimum=1)
    seed = check_integer(seed, "seed", minimum=0)
    is_target = labels == target_class
    if not is_target.any():
        raise ValueError(f"The calibration data has no example of target_class={target_class}.")
    weights = example_weights(labels, num_classes, class_prior)
    positives = int(is_target.sum())
    rule, confidence_met = cutoff_rule(positives, target_recall, confidence, estimator, bound)
    if not confidence_met:
        fallback = ("the Harrell-Davis estimate of the score that fraction of them reaches"
                    if rule == "harrell_davis" else "the cut-off that catches all of them")
        warnings.warn(
            f"{positives} examples of the target class are too few to show recall >= {target_recall} "
            f"at confidence {confidence} ({bound} bound; catching all of them shows it at confidence "
            f"{shown_confidence(positives, positives, target_recall, bound):.3f}); using {fallback} "
            f"(confidence_met=False).", stacklevel=2)
    results = []
    for kind in (KINDS if method == "auto" else (method,)):
        ranked = RankedScores.of(target_scores(logits, target_class, kind), is_target, weights, labels)
        cutoff, recall, precision = _choose(ranked, rule, target_recall, confidence, bound)
        results.append((precision, kind, cutoff, recall, ranked))
    precision, kind, cutoff, recall, ranked = max(results, key=lambda result: result[0])  # first: ties
    intervals: tuple[Any, Any] = (None, None)
    bootstrapped = interval_level is not None and interval_method == "bootstrap"
    if bootstrapped:
        intervals = bootstrap_intervals(ranked, rule, target_recall, confidence, bound,
                                        resamples=bootstrap_resamples, level=interval_level, seed=seed)
    elif interval_level is not None:
        intervals = binomial_intervals(ranked, cutoff, interval_level)
    threshold = None if kind == "logit_offset" else float(1.0 / (1.0 + math.exp(-cutoff)))
    return TargetRecallPoint(
        kind=kind, target_class=target_class, num_classes=num_classes, offset=-cutoff,
        threshold=threshold, target_recall=target_recall, validation_recall=recall,
        validation_precision=precision,
        class_prior=None if class_prior is None else tuple(float(p) for p in class_prior),
        confidence=confidence, estimator=estimator, bound=bound, confidence_met=confidence_met,
        shown_confidence=shown_confidence(round(recall * positives), positives, target_recall, bound),
        positives=positives, recall_interval=intervals[0], precision_interval=intervals[1],
        interval_level=interval_level,
        interval_method=None if interval_level is None else interval_method,
        interval_resamples=bootstrap_resamples if bootstrapped else None)
