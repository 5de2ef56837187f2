"""Streaming per-class metrics: a confusion matrix summed across replicas.

Recall, precision, F1, balanced accuracy and macro-F1 are derived from the
matrix on the host, so the compiled step only pays for one `bincount`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf


class ConfusionMatrix(keras.metrics.Metric):
    """Streams a `[num_classes, num_classes]` confusion matrix (rows: true class).

    Predictions are the argmax of `y_pred` when it has a class axis, or class
    indices otherwise. The counts live in an ON_READ variable with SUM
    aggregation, so under any `tf.distribute` strategy each replica counts its
    own examples and reading the metric sums them. Counts are int32 (exact up
    to 2^31 - 1 examples per cell). Works in plain `model.fit` too (its
    `result()` is the matrix; use `per_class_metrics` to derive the rest).

    Sample weights count only when asked (`weighted=True`): each cell then
    sums the weights of its examples (float32). An unweighted matrix counts
    examples, and a `sample_weight` passed to it (as `model.fit` does with
    `sample_weight=`) is not counted: a warning says so when the step is traced.

    Args:
      num_classes: Number of classes.
      name: Metric name.
      weighted: Whether the cells sum sample weights instead of counting examples.
    """

    def __init__(self, num_classes: int, name: str = "confusion_matrix", *, weighted: bool = False,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.weighted = bool(weighted)
        self.matrix = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros",
            dtype="float32" if self.weighted else "int32", name="matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank is not None and y_pred.shape.rank >= 2 and y_pred.shape[-1] != 1:
            predictions = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        else:
            predictions = tf.cast(y_pred, tf.int32)
        predictions = tf.reshape(predictions, [-1])
        k = self.num_classes
        cells = labels * k + predictions
        if sample_weight is not None and not self.weighted:
            warnings.warn(f"{self.name}: the confusion matrix counts examples and does not count the "
                          "sample_weight it was given; ConfusionMatrix(weighted=True) sums the weights",
                          stacklevel=2)
        if self.weighted:
            weights = (tf.ones_like(cells, tf.float32) if sample_weight is None
                       else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        else:
            weights = tf.zeros([0], tf.int32)
        # A constant size (bincount's min/maxlength compute one from the data), so XLA compiles it.
        counts = tf.raw_ops.DenseBincount(input=cells, size=tf.constant(k * k, tf.int32),
                                          weights=weights)
        self.matrix.assign_add(tf.reshape(counts, [k, k]))

    def result(self):
        return tf.convert_to_tensor(self.matrix)

    def reset_state(self):
        self.matrix.assign(tf.zeros_like(self.matrix))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "weighted": self.weighted}


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def count_confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                           sample_weight: Optional[np.ndarray] = None) -> np.ndarray:
    """`[K, K]` counts of NumPy labels and predictions, rows true class, columns predicted.

    int64 counts of examples; with `sample_weight` (`[N]`), float64 sums of the weights.
    """
    cells = np.asarray(labels, np.int64).reshape(-1) * num_classes + \
        np.asarray(predictions, np.int64).reshape(-1)
    if sample_weight is None:
        return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    weights = np.asarray(sample_weight, np.float64).reshape(-1)
    if weights.shape != cells.shape:
        raise ValueError(f"sample_weight has {weights.size} values for {cells.size} examples.")
    return np.bincount(cells, weights=weights,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(confusion_matrix: np.ndarray) -> Dict[str, object]:
    """Derives per-class and summary metrics from a confusion matrix.

    Conventions: a class with no support has NaN recall and F1 and is left
    out of balanced accuracy, macro-F1 and the minimum recall. A class that is
    never predicted has NaN precision; its F1 is 0 when it has support (the
    class is missed entirely).

    Args:
      confusion_matrix: `[K, K]` counts, rows true class, columns predicted
        (or, for weighted metrics, sums of sample weights: a float matrix).

    Returns:
      A dict with `recall`, `precision`, `f1`, `support` (arrays of length K;
      `support` int64 for a matrix of integer counts, the float row sums of a
      float one) and the floats `accuracy`, `balanced_accuracy`, `macro_f1`,
      `min_recall` (NaN when nothing was counted).
    """
    counts = np.asarray(confusion_matrix)
    matrix = counts.astype(np.float64)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    recall = _safe_divide(true_positives, support)
    precision = _safe_divide(true_positives, predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(
            support > 0,
            np.where(true_positives > 0,
                     2 * true_positives / np.maximum(support + predicted, 1), 0.0),
            np.nan)
    has_support = support > 0
    total = matrix.sum()

    def mean_over_supported(values: np.ndarray) -> float:
        return float(np.mean(values[has_support])) if has_support.any() else float("nan")

    return {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "support": support.astype(np.int64) if counts.dtype.kind in "iub" else support,
        "accuracy": float(true_positives.sum() / total) if total > 0 else float("nan"),
        "balanced_accuracy": mean_over_supported(recall),
        "macro_f1": mean_over_supported(f1),
        "min_recall": float(np.min(recall[has_support])) if has_support.any() else float("nan"),
    }


def flatten_metrics(metrics: Dict[str, object], prefix: str = "") -> Dict[str, float]:
    """Turns `per_class_metrics` output into scalar logs with stable names.

    Per-class arrays become `recall/<k>`, `precision/<k>`, `f1/<k>`; summary
    values keep their names. `prefix` (e.g. "val_") is put in front of each.
    """
    logs: Dict[str, float] = {}
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "min_recall"):
        if key in metrics:
            logs[prefix + key] = float(metrics[key])
    for key in ("recall", "precision", "f1"):
        for class_id, value in enumerate(np.asarray(metrics[key])):
            logs[f"{prefix}{key}/{class_id}"] = float(value)
    return logs


def _support(value) -> str:
    """A class's support for a table: a count, or a sum of sample weights (weighted metrics)."""
    value = float(value)
    return f"{int(value):d}" if value == int(value) else f"{value:.6g}"


def format_per_class_table(metrics: Dict[str, object],
                           class_names: Optional[list] = None) -> str:
    """Renders support, recall, precision and F1 per class as a text table."""
    support = np.asarray(metrics["support"])
    names = list(class_names) if class_names else [str(k) for k in range(len(support))]
    width = max(5, max(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'support':>8}  {'recall':>7}  {'precision':>9}  {'f1':>7}"]
    for k, name in enumerate(names):
        lines.append(
            f"{name:<{width}}  {_support(support[k]):>8}  {metrics['recall'][k]:>7.4f}  "
            f"{metrics['precision'][k]:>9.4f}  {metrics['f1'][k]:>7.4f}")
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}  "
        f"macro-F1 {metrics['macro_f1']:.4f}  min recall {metrics['min_recall']:.4f}")
    return "\n".join(lines)


def format_decision_table(served: Dict[str, object], argmax: Optional[Dict[str, object]] = None,
                          class_names: Optional[list] = None, *, decision: str = "argmax",
                          measured_on: str = "", targets: Optional[Dict[int, float]] = None) -> str:
    """The end-of-run table: per class, the served decision's recall, precision and F1.

    With `argmax` (the plain argmax's metrics on the same data) and a decision
    other than the argmax, its recall and precision stand beside the served
    ones, so the table shows what the export does and what it changed.

    Args:
      served: `per_class_metrics` of the decisions the export serves.
      argmax: The same for the plain argmax, or None.
      class_names: Names indexed by class.
      decision: What the served decision is (e.g. "threshold on class 2").
      measured_on: Which data the figures were measured on, for the title line.
      targets: Target recall by class (several recall targets), shown in a column of
        their own with whether the served recall reaches it; None: no such column.
    """
    support = np.asarray(served["support"])
    names = list(class_names) if class_names else [str(k) for k in range(len(support))]
    width = max(5, max(len(n) for n in names))
    beside = argmax is not None and decision != "argmax"
    header = f"{'class':<{width}}  {'support':>8}  {'recall':>7}  {'precision':>9}  {'f1':>7}"
    if beside:
        header += f"  {'argmax recall':>13}  {'argmax precision':>16}"
    if targets:
        header += f"  {'target recall':>18}"
    title = f"Served decision: {decision}" + (f"; measured on {measured_on}" if measured_on else "")
    lines = [title, header]
    for k, name in enumerate(names):
        line = (f"{name:<{width}}  {_support(support[k]):>8}  {served['recall'][k]:>7.4f}  "
                f"{served['precision'][k]:>9.4f}  {served['f1'][k]:>7.4f}")
        if beside:
            line += f"  {argmax['recall'][k]:>13.4f}  {argmax['precision'][k]:>16.4f}"
        if targets and k in targets:
            reached = "met" if served["recall"][k] >= targets[k] else "missed"
            line += f"  {targets[k]:>11.4g} {reached:>6}"
        lines.append(line)
    lines.append(
        f"accuracy {served['accuracy']:.4f}  balanced accuracy {served['balanced_accuracy']:.4f}  "
        f"macro-F1 {served['macro_f1']:.4f}  min recall {served['min_recall']:.4f}")
    if beside:
        lines.append(f"argmax: accuracy {argmax['accuracy']:.4f}  balanced accuracy "
                     f"{argmax['balanced_accuracy']:.4f}  macro-F1 {argmax['macro_f1']:.4f}  "
                     f"min recall {argmax['min_recall']:.4f}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class PrecisionRecallCurve:
    """One-vs-rest precision and recall at every cut-off of a score, highest score first.

    Attributes:
      recall: `[M + 1]` recall after predicting the top 0, 1, ... distinct scores (starts at 0).
      precision: `[M + 1]` precision there (the first point repeats the second's, as usual).
      thresholds: `[M]` the distinct scores, descending (cut-off `score >= threshold`).
      average_precision: `sum_i (R_i - R_{i-1}) P_i` (step-wise area; NaN without positives).
      positives: Number of positive examples.
    """

    recall: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray
    average_precision: float
    positives: int


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray) -> PrecisionRecallCurve:
    """The PR curve of `scores` for the boolean `positive` (ties share one cut-off).

    Args:
      scores: `[N]` scores, higher meaning more positive.
      positive: `[N]` booleans.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    positive = np.asarray(positive, bool).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    # The last index of each run of equal scores: one cut-off per distinct score.
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    true_positives = np.cumsum(hits)[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    total = int(hits.sum())
    recall = true_positives / total if total else np.zeros_like(true_positives)
    precision = true_positives / predicted
    first = precision[0] if precision.size else 1.0
    recall = np.r_[0.0, recall]
    precision = np.r_[first, precision]
    average = float(np.sum(np.diff(recall) * precision[1:])) if total else float("nan")
    return PrecisionRecallCurve(recall, precision, ranked[last], average, total)


def per_label_metrics(confusion_matrix: np.ndarray,
                      label_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Per-label metrics of a multi-label task's `[2L, 2L]` confusion matrix (`MultiLabelTask`).

    Class `2l` is "without label l", `2l + 1` "with label l"; the matrix is
    block diagonal (block l is label l's `2 x 2` matrix).

    Returns:
      `recall`, `precision`, `f1` of each label's positives, `positives` and
      `negatives` (arrays of length L), `label_names`, and the floats
      `hamming_accuracy` (share of correct (example, label) decisions),
      `balanced_accuracy` (mean over labels of the mean of both recalls),
      `macro_f1` and `min_recall` over labels with positives.

    Raises:
      ValueError: when the matrix is not `[2L, 2L]` block diagonal.
    """
    matrix = np.asarray(confusion_matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] % 2:
        raise ValueError(f"confusion_matrix must be [2L, 2L], got shape {matrix.shape}.")
    num_labels = matrix.shape[0] // 2
    block = np.kron(np.eye(num_labels, dtype=bool), np.ones((2, 2), bool))
    if np.any(matrix[~block]):
        raise ValueError("confusion_matrix has counts outside its 2 x 2 label blocks: it is not a "
                         "multi-label task's matrix.")
    per_class = per_class_metrics(matrix)
    recall, f1 = per_class["recall"][1::2], per_class["f1"][1::2]
    positives = per_class["support"][1::2]
    has_positives = positives > 0
    return {
        "label_names": list(label_names) if label_names is not None
        else [f"label {j}" for j in range(num_labels)],
        "recall": recall,
        "precision": per_class["precision"][1::2],
        "f1": f1,
        "positives": positives,
        "negatives": per_class["support"][0::2],
        "hamming_accuracy": per_class["accuracy"],
        "balanced_accuracy": per_class["balanced_accuracy"],
        "macro_f1": float(np.mean(f1[has_positives])) if has_positives.any() else float("nan"),
        "min_recall": float(np.min(recall[has_positives])) if has_positives.any() else float("nan"),
    }


def label_average_precision(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`[L]` average precision of each label's logit (`precision_recall_curve`; NaN without positives).

    Args:
      logits: `[N, L]` scores.
      labels: `[N, L]` multi-hot targets.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.shape != labels.shape or logits.ndim != 2:
        raise ValueError(f"logits and labels must both be [N, L], got {logits.shape} and {labels.shape}.")
    return np.array([precision_recall_curve(logits[:, j], labels[:, j] == 1).average_precision
                     for j in range(logits.shape[1])])
