"""The target-recall operating point: the decision rule that reaches a class's recall with the best precision.

Chosen on held-out logits after training (`choose_operating_point`), kinds `logit_offset` and `threshold`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError, check_choice, check_class_index, check_integer, check_number
from trainer.decisions.base import OperatingPoint, checked_logits_and_labels

KINDS = ("logit_offset", "threshold")
METHODS = KINDS + ("auto",)


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

    def decide_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`decide` in TensorFlow (int32 `[N]`), e.g. for a SavedModel's serving function."""
        if self.kind == "logit_offset":
            return super().decide_tensor(logits)
        adjusted = tf.cast(logits, tf.float32) + tf.constant(self.offsets())
        is_target_column = tf.one_hot(self.target_class, self.num_classes, on_value=True,
                                      off_value=False)
        others = tf.where(is_target_column, tf.constant(-np.inf, tf.float32), adjusted)
        log_odds = adjusted[:, self.target_class] - tf.reduce_logsumexp(others, axis=-1)
        return tf.where(log_odds >= 0.0, tf.constant(self.target_class, tf.int32),
                        tf.argmax(others, axis=-1, output_type=tf.int32))

    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict (the format of `operating_point.json`)."""
        payload = dataclasses.asdict(self)
        payload["class_prior"] = None if self.class_prior is None else list(self.class_prior)
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
        if payload.get("class_prior") is not None:
            payload["class_prior"] = tuple(payload["class_prior"])
        try:
            point = cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error
        check_class_index(point.target_class, "target_class",
                          check_integer(point.num_classes, "num_classes", minimum=2))
        check_number(point.offset, "offset")
        return point


def recall_lower_bound(hits: np.ndarray, total: int, confidence: float) -> np.ndarray:
    """One-sided Wilson-score lower confidence bound of a recall `hits / total`.

    `confidence=0.5` returns the point estimate.
    """
    recall = np.asarray(hits, np.float64) / total
    z = statistics.NormalDist().inv_cdf(confidence)
    if z <= 0:
        return recall
    spread = z * np.sqrt(recall * (1.0 - recall) / total + z * z / (4.0 * total * total))
    return (recall + z * z / (2.0 * total) - spread) / (1.0 + z * z / total)


def _example_weights(labels: np.ndarray, num_classes: int,
                     class_prior: Sequence[float] | None) -> np.ndarray:
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


def _best_cutoff(scores: np.ndarray, is_target: np.ndarray, weights: np.ndarray,
                 target_recall: float, confidence: float) -> tuple[float, float, float]:
    """Cut-off `c` (predict target iff score >= c) reaching the recall with the best precision.

    A cut-off is feasible when the lower confidence bound of its recall
    reaches `target_recall`; when none is (too few positives), the one that
    catches every positive. Returns `(cutoff, recall, precision)`; ties in
    precision go to the higher cut-off.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores, positive, weight = scores[order], is_target[order], weights[order]
    true_positives = np.cumsum(np.where(positive, 1.0, 0.0))
    weighted_tp = np.cumsum(np.where(positive, weight, 0.0))
    weighted_fp = np.cumsum(np.where(positive, 0.0, weight))
    recall = true_positives / positive.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(weighted_tp + weighted_fp > 0,
                             weighted_tp / (weighted_tp + weighted_fp), 0.0)
    group_end = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    bound = recall_lower_bound(true_positives, int(positive.sum()), confidence)
    candidates = np.flatnonzero(group_end & (bound >= target_recall - 1e-12))
    if len(candidates) == 0:
        warnings.warn(
            f"{int(positive.sum())} examples of the target class are too few to show recall >= "
            f"{target_recall} at confidence {confidence}; using the cut-off that catches all of them.",
            stacklevel=3)  # the caller of choose_operating_point
        candidates = np.flatnonzero(group_end & (recall >= 1.0))
    best = candidates[np.argmax(precision[candidates])]  # first maximum: highest cut-off
    if best + 1 < len(sorted_scores):
        cutoff = 0.5 * (sorted_scores[best] + sorted_scores[best + 1])
    else:
        cutoff = sorted_scores[best] - 1.0
    return float(cutoff), float(recall[best]), float(precision[best])


def choose_operating_point(logits: np.ndarray, labels: np.ndarray, *, target_class: int,
                           target_recall: float, method: str = "auto",
                           class_prior: Sequence[float] | None = None,
                           confidence: float = 0.9) -> TargetRecallPoint:
    """Chooses, on validation logits, the rule reaching `target_recall` with the best precision.

    Among the cut-offs whose target-class recall on these examples reaches
    `target_recall` (with `confidence`: the one-sided Wilson lower bound of
    the recall does), takes the one with the highest precision; with
    `method='auto'`, the better of the two kinds (a tie goes to
    `logit_offset`, which keeps the argmax decision).

    Why a confidence bound: a held-out split has few examples of a rare
    class (about 56 shirts in long-tailed Fashion-MNIST at IR 100), so a
    cut-off placed exactly at 90% of them reaches 0.9 on new data only about
    half the time. With `confidence=0.9` it does so about 90% of the time if
    the held-out split is representative; `0.5` uses the point estimate.

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
    is_target = labels == target_class
    if not is_target.any():
        raise ValueError(f"The calibration data has no example of target_class={target_class}.")
    weights = _example_weights(labels, num_classes, class_prior)
    results = []
    for kind in (KINDS if method == "auto" else (method,)):
        cutoff, recall, precision = _best_cutoff(target_scores(logits, target_class, kind),
                                                 is_target, weights, target_recall, confidence)
        threshold = None if kind == "logit_offset" else float(1.0 / (1.0 + math.exp(-cutoff)))
        results.append(TargetRecallPoint(
            kind=kind, target_class=target_class, num_classes=num_classes, offset=-cutoff,
            threshold=threshold, target_recall=target_recall, validation_recall=recall,
            validation_precision=precision,
            class_prior=None if class_prior is None else tuple(float(p) for p in class_prior),
            confidence=confidence))
    return max(results, key=lambda point: point.validation_precision)
