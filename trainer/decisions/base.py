"""The operating-point protocol: per-class logit offsets and a decision rule, in NumPy and TensorFlow.

Every kind of operating point implements `OperatingPoint`; the helpers its implementations share live here.
"""

from __future__ import annotations

import abc
import os
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from trainer.json_files import write_json_atomically
from trainer.metrics import count_confusion_matrix, per_class_metrics

FILENAME = "operating_point.json"


def add_offsets(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`logits + offsets` for `[N, K]` logits and `[K]` offsets, in the logits' dtype.

    Raises:
      ValueError: when the logits are not `[N, K]`.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(offsets):
        raise ValueError(f"logits must have shape [N, {len(offsets)}], got {logits.shape}.")
    return logits + np.asarray(offsets).astype(logits.dtype)


def checked_logits_and_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


class OperatingPoint(abc.ABC):
    """A calibrated decision rule on a classifier's logits.

    A point adds per-class offsets to the logits (`offsets`: what
    `Trainer.predict` adds before the softmax, so its probabilities reflect
    the rule) and decides a class per example, in NumPy (`decide`) and in
    TensorFlow (`decide_tensor`, served by the exported SavedModel). The
    default rule is `argmax(logits + offsets())`; a kind whose rule differs
    overrides both `decide` and `decide_tensor`. A point round-trips through
    `to_dict` / `from_dict` (the JSON of `operating_point.json`, whose `kind`
    key names the class: see `trainer.decisions.KINDS`).

    Attributes:
      kind: The `kind` written to the JSON file.
      num_classes: Number of classes K.
      kinds: Class attribute: every `kind` this class reads and writes.
    """

    kinds: ClassVar[tuple[str, ...]] = ()
    kind: str
    num_classes: int

    @abc.abstractmethod
    def offsets(self) -> np.ndarray:
        """Per-class logit offsets, float32 `[num_classes]`."""

    def adjust_logits(self, logits: np.ndarray) -> np.ndarray:
        """`logits + offsets()` for `[N, K]` logits, in the logits' dtype."""
        return add_offsets(logits, self.offsets())

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Class indices `[N]` of `[N, K]` logits under this rule."""
        return np.argmax(self.adjust_logits(logits), axis=1)

    def decide_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`decide` in TensorFlow: int32 `[N]` class indices, e.g. for a SavedModel's serving function."""
        adjusted = tf.cast(logits, tf.float32) + tf.constant(self.offsets())
        return tf.argmax(adjusted, axis=-1, output_type=tf.int32)

    def score_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """float32 `[N, K]`: the per-class scores this rule compares (it decides their argmax).

        By default `logits + offsets()`; a kind with another rule overrides it.
        """
        return tf.cast(logits, tf.float32) + tf.constant(self.offsets())

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict, `kind` included."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, payload: dict[str, Any]) -> OperatingPoint:
        """The point `to_dict` described.

        Raises:
          ValueError: when `payload` is not a valid point of this class.
        """

    def save(self, directory: str) -> str:
        """Writes `<directory>/operating_point.json` atomically (creating `directory`); returns the path."""
        return write_json_atomically(os.path.join(directory, FILENAME), self.to_dict())


def decision_metrics(point: OperatingPoint | None, logits: np.ndarray,
                     labels: np.ndarray, sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of the rule's decisions (the plain argmax when `point` is None) on labelled logits.

    Args:
      point: Any operating point, or None.
      logits: `[N, K]` logits.
      labels: `[N]` labels.
      sample_weight: `[N]` weights: each confusion-matrix cell sums its rows' weights (weighted
        metrics); None counts rows.

    Returns:
      `trainer.metrics.per_class_metrics` of the decisions and their
      `confusion_matrix`, plus `target_recall` and `target_precision` when
      the point has a `target_class`.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, np.int64).reshape(-1)
    predictions = logits.argmax(axis=1) if point is None else point.decide(logits)
    matrix = count_confusion_matrix(labels, predictions, logits.shape[1], sample_weight)
    metrics: dict[str, Any] = dict(per_class_metrics(matrix))
    metrics["confusion_matrix"] = matrix
    target_class = getattr(point, "target_class", None)
    if target_class is not None:
        metrics["target_recall"] = float(metrics["recall"][target_class])
        metrics["target_precision"] = float(metrics["precision"][target_class])
    return metrics
