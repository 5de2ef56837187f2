"""Calibrated operating points: the decision rule that reaches a target recall with the best precision.

Chosen on held-out validation data after training, saved as JSON in the run
directory, and applied by `Trainer.predict` / `Trainer.predict_classes`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.metrics import count_confusion_matrix, per_class_metrics

FILENAME = "operating_point.json"
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


def add_offsets(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`logits + offsets` for `[N, K]` logits and `[K]` offsets, in the logits' dtype.

    Raises:
      ValueError: when the logits are not `[N, K]`.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(offsets):
        raise ValueError(f"logits must have shape [N, {len(offsets)}], got {logits.shape}.")
    return logits + np.asarray(offsets).astype(logits.dtype)


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
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

    kind: str
    target_class: int
    num_classes: int
    offset: float
    threshold: Optional[float]
    target_recall: float
    validation_recall: float
    validation_precision: float
    class_prior: Optional[Tuple[float, ...]] = None
    confidence: float = 0.5

    def offsets(self) -> np.ndarray:
        """Per-class logit offsets `[num_classes]` (zero but for the target class)."""
        offsets = np.zeros(self.num_classes, np.float32)
        offsets[self.target_class] = self.offset
        return offsets

    def adjust_logits(self, logits: np.ndarray) -> np.ndarray:
        return add_offsets(logits, self.offsets())

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Class indices `[N]` under this rule."""
        adjusted = np.asarray(self.adjust_logits(logits), np.float64)
        if self.kind == "logit_offset":
            return adjusted.argmax(axis=1)
        t = self.target_class
        is_target = target_scores(adjusted, t, "threshold") >= 0.0
        others = _others(adjusted, t).argmax(axis=1)
        others = others + (others >= t)
        return np.where(is_target, t, others)

    def decide_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`decide` in TensorFlow (int32 `[N]`), e.g. for a SavedModel's serving function."""
        adjusted = tf.cast(logits, tf.float32) + tf.constant(self.offsets())
        if self.kind == "logit_offset":
            return tf.argmax(adjusted, axis=-1, output_type=tf.int32)
        is_target_column = tf.one_hot(self.target_class, self.num_classes, on_value=True,
                                      off_value=False)
        others = tf.where(is_target_column, tf.constant(-np.inf, tf.float32), adjusted)
        log_odds = adjusted[:, self.target_class] - tf.reduce_logsumexp(others, axis=-1)
        return tf.where(log_odds >= 0.0, tf.constant(self.target_class, tf.int32),
                        tf.argmax(others, axis=-1, output_type=tf.int32))

    def to_dict(self) -> Dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["class_prior"] = None if self.class_prior is None else list(self.class_prior)
        return payload

    @classmethod
    def from_dict(cls, payload: Dict[str, Any]) -> "OperatingPoint":
        payload = dict(payload)
        if payload.get("kind") not in KINDS:
            raise ValueError(f"Unknown operating point kind {payload.get('kind')!r}; "
                             f"expected one of {', '.join(KINDS)}.")
        if payload.get("class_prior") is not None:
            payload["class_prior"] = tuple(payload["class_prior"])
        return cls(**payload)

    def save(self, directory: str) -> str:
        """Writes `<directory>/operating_point.json` atomically; returns the path."""
        return write_operating_point(self.to_dict(), directory)


def write_operating_point(payload: Dict[str, Any], directory: str) -> str:
    """Writes an operating point's dict to `<directory>/operating_point.json` atomically."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILENAME)
    with open(path + ".tmp", "w") as stream:
        json.dump(payload, stream, indent=2)
    os.replace(path + ".tmp", path)
    return path


def load_operating_point(directory: Optional[str]) -> Optional[Any]:
    """The operating point saved in `directory`, or None when there is none.

    Either kind: an `OperatingPoint` (target recall) or a
    `trainer.worst_class_point.WorstClassOperatingPoint`.
    """
    if not directory:
        return None
    path = os.path.join(directory, FILENAME)
    if not os.path.isfile(path):
        return None
    with open(path) as stream:
        try:
            payload = json.load(stream)
            if isinstance(payload, dict) and payload.get("kind") == "worst_class_offsets":
                # Imported here: that module builds on this one.
                from trainer.worst_class_point import WorstClassOperatingPoint
                return WorstClassOperatingPoint.from_dict(payload)
            return OperatingPoint.from_dict(payload)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a valid operating point: {error}") from error


def _example_weights(labels: np.ndarray, num_classes: int,
                     class_prior: Optional[Sequence[float]]) -> np.ndarray:
    if class_prior is None:
        return np.ones(len(labels), np.float64)
    prior = np.asarray(class_prior, np.float64)
    if prior.shape != (num_classes,) or np.any(prior < 0) or not np.all(np.isfinite(prior)) \
            or prior.sum() <= 0:
        raise ValueError(f"class_prior must be {num_classes} non-negative numbers, got {class_prior!r}.")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, (prior / prior.sum()) / np.maximum(counts / len(labels), 1e-300), 0.0)
    return per_class[labels]


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


def _best_cutoff(scores: np.ndarray, is_target: np.ndarray, weights: np.ndarray,
                 target_recall: float, confidence: float) -> Tuple[float, float, float]:
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
            f"{target_recall} at confidence {confidence}; using the cut-off that catches all of them.")
        candidates = np.flatnonzero(group_end & (recall >= 1.0))
    best = candidates[np.argmax(precision[candidates])]  # first maximum: highest cut-off
    if best + 1 < len(sorted_scores):
        cutoff = 0.5 * (sorted_scores[best] + sorted_scores[best + 1])
    else:
        cutoff = sorted_scores[best] - 1.0
    return float(cutoff), float(recall[best]), float(precision[best])


def checked_logits_and_labels(logits: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """`(logits float64 [N, K], labels int64 [N])` of calibration data, checked.

    Raises:
      ValueError: when the shapes do not match, there are no examples, or a
        logit is not finite.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"logits [N, K] and labels [N] must match and be non-empty; got shapes "
                         f"{logits.shape} and {labels.shape}.")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits must be finite (the model produced NaN or Inf).")
    return logits, labels


def choose_operating_point(logits: np.ndarray, labels: np.ndarray, *, target_class: int,
                           target_recall: float, method: str = "auto",
                           class_prior: Optional[Sequence[float]] = None,
                           confidence: float = 0.9) -> OperatingPoint:
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
      ValueError: naming the argument that is out of range or inconsistent.
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    num_classes = logits.shape[1]
    if isinstance(target_class, bool) or not 0 <= int(target_class) < num_classes:
        raise ValueError(f"target_class={target_class!r} is out of range for {num_classes} classes.")
    if not (isinstance(target_recall, (int, float)) and 0.0 < target_recall <= 1.0):
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1.0):
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}.")
    target_class = int(target_class)
    is_target = labels == target_class
    if not is_target.any():
        raise ValueError(f"The calibration data has no example of target_class={target_class}.")
    weights = _example_weights(labels, num_classes, class_prior)
    results = []
    for kind in (KINDS if method == "auto" else (method,)):
        cutoff, recall, precision = _best_cutoff(target_scores(logits, target_class, kind),
                                                 is_target, weights, float(target_recall),
                                                 float(confidence))
        threshold = None if kind == "logit_offset" else float(1.0 / (1.0 + math.exp(-cutoff)))
        results.append(OperatingPoint(
            kind=kind, target_class=target_class, num_classes=num_classes, offset=-cutoff,
            threshold=threshold, target_recall=float(target_recall), validation_recall=recall,
            validation_precision=precision,
            class_prior=None if class_prior is None else tuple(float(p) for p in class_prior),
            confidence=float(confidence)))
    return max(results, key=lambda point: point.validation_precision)


def operating_point_metrics(point: Optional[OperatingPoint], logits: np.ndarray,
                            labels: np.ndarray) -> Dict[str, Any]:
    """Metrics of the rule's decisions (argmax when `point` is None) on labelled logits.

    Returns `per_class_metrics` output and `confusion_matrix`, plus
    `target_recall` and `target_precision` when `point` has a target class.
    `point` may be any operating point (an `OperatingPoint` or a
    `trainer.worst_class_point.WorstClassOperatingPoint`).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, np.int64).reshape(-1)
    predictions = logits.argmax(axis=1) if point is None else point.decide(logits)
    k = logits.shape[1]
    matrix = count_confusion_matrix(labels, predictions, k)
    metrics: Dict[str, Any] = dict(per_class_metrics(matrix))
    metrics["confusion_matrix"] = matrix
    if getattr(point, "target_class", None) is not None:
        metrics["target_recall"] = float(metrics["recall"][point.target_class])
        metrics["target_precision"] = float(metrics["precision"][point.target_class])
    return metrics


def labelled_logits(trainer: Any, data: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
    """`(logits, labels)` of a dataset of `(features, labels)` batches (iterated once)."""
    logits, labels = [], []
    for features, batch_labels, *_ in data:
        logits.append(trainer.predict_logits(tf.data.Dataset.from_tensors(features)))
        labels.append(np.reshape(batch_labels.numpy(), [-1]))
    if not logits:
        raise ValueError("The calibration data is empty.")
    return np.concatenate(logits), np.concatenate(labels).astype(np.int64)


def calibrate_operating_point(trainer: Any, validation_data: tf.data.Dataset, *, target_class: int,
                              target_recall: float, method: str = "auto",
                              class_prior: Optional[Sequence[float]] = None,
                              confidence: float = 0.9, save: bool = True) -> OperatingPoint:
    """Chooses the operating point on `validation_data` and installs it in `trainer`.

    Sets `trainer.operating_point` (applied by `Trainer.predict` and
    `Trainer.predict_classes`) and, with `save` and a `model_dir`, writes
    `<model_dir>/operating_point.json`, which a `Trainer` on that directory
    loads. Use held-out data of the training distribution, not the test set.

    Args:
      trainer: A trained `Trainer`.
      validation_data: Batched `(features, labels)` held-out data.
      target_class, target_recall, method, class_prior, confidence: see
        `choose_operating_point`.
      save: Write the JSON file when the trainer has a `model_dir`.
    """
    logits, labels = labelled_logits(trainer, validation_data)
    point = choose_operating_point(logits, labels, target_class=target_class,
                                   target_recall=target_recall, method=method,
                                   class_prior=class_prior, confidence=confidence)
    trainer.operating_point = point
    if save and getattr(trainer, "model_dir", None):
        point.save(trainer.model_dir)
    return point
