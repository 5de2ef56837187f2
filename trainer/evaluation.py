"""One evaluation's result, and the one function that runs a model over a dataset for its logits.

`Trainer.fit` evaluates its validation data once per epoch into an
`EvaluationResult`; callbacks read that object instead of running the model again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from trainer.metrics import count_confusion_matrix, flatten_metrics, per_class_metrics


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What one pass over labelled data measured.

    The confusion matrix counts examples; sample weights count only when asked
    (`from_logits(..., sample_weight=...)`: `weighted`, float sums of weights).
    The loss is the mean of the per-example losses times their weights, as
    Keras `evaluate(sample_weight=...)` reports it.

    Attributes:
      confusion_matrix: `[K, K]` counts (weighted: float sums of sample weights), rows true
        class, columns the argmax.
      loss: Mean per-example loss (NaN when not measured).
      logits: `[N, K]` float32 logits, when they were collected.
      labels: `[N]` int64 labels, when the logits were collected.
      epoch: The 0-based epoch the evaluation closed (None outside `fit`).
      step: The global step at the evaluation (None outside `fit`).
      weighted: Whether the confusion matrix sums sample weights.
    """

    confusion_matrix: np.ndarray
    loss: float
    logits: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    epoch: Optional[int] = None
    step: Optional[int] = None
    weighted: bool = False

    @property
    def num_classes(self) -> int:
        return int(self.confusion_matrix.shape[0])

    def per_class(self) -> Dict[str, Any]:
        """`trainer.metrics.per_class_metrics` of the confusion matrix."""
        return per_class_metrics(self.confusion_matrix)

    def metrics(self) -> Dict[str, Any]:
        """The `Trainer.evaluate` dict: scalars (`loss`, `recall/<k>`, ...) plus the arrays
        `recall`, `precision`, `f1`, `support` and `confusion_matrix`."""
        per_class = self.per_class()
        result: Dict[str, Any] = {"loss": float(self.loss)}
        result.update(flatten_metrics(per_class))
        for key in ("recall", "precision", "f1", "support"):
            result[key] = np.asarray(per_class[key])
        result["confusion_matrix"] = self.confusion_matrix
        return result

    def scalars(self) -> Dict[str, float]:
        """The scalar entries of `metrics()` (what goes into Keras logs)."""
        return {k: v for k, v in self.metrics().items() if not isinstance(v, (list, np.ndarray))}

    @classmethod
    def from_logits(cls, logits: np.ndarray, labels: np.ndarray, *, loss: float = float("nan"),
                    sample_weight: Optional[np.ndarray] = None, predictions: Optional[np.ndarray] = None,
                    num_classes: Optional[int] = None, **fields) -> "EvaluationResult":
        """The result of decisions on collected logits (weights counted when given).

        `predictions` (default: the argmax of `logits`) and `num_classes` (default: their
        width) are a task's (`Task.predicted_classes`: a multi-label task's positions have
        one logit each and `2L` classes).
        """
        logits = np.asarray(logits, np.float32)
        labels = np.asarray(labels, np.int64).reshape(-1)
        predictions = logits.argmax(axis=1) if predictions is None else np.asarray(predictions).reshape(-1)
        matrix = count_confusion_matrix(labels, predictions, num_classes or logits.shape[1], sample_weight)
        return cls(confusion_matrix=matrix, loss=float(loss), logits=logits, labels=labels,
                   weighted=sample_weight is not None, **fields)


def _features_labels_weights(element) -> Tuple[Any, Optional[Any], Optional[Any]]:
    if isinstance(element, (tuple, list)):
        return (element[0], element[1] if len(element) > 1 else None,
                element[2] if len(element) > 2 else None)
    return element, None, None


def collect_outputs(forward: Callable, data: tf.data.Dataset, *, argument: str = "data",
                    with_labels: bool = True) -> Tuple[list, list]:
    """Runs `forward(features, labels[, sample_weight])` (or `forward(features)`) over `data`.

    The single place that iterates a dataset for model outputs: evaluation
    with logits, `Trainer.collect_logits` and `Trainer.predict_logits` use it.
    It runs in the caller's (cross-replica) context, so under a
    `tf.distribute` strategy every worker computes the same values.

    Args:
      forward: A compiled function returning a tuple of tensors per batch; it
        gets the batch's sample weights as a third argument when there are any.
      data: Batched `(features, labels)` or `(features, labels, sample_weight)`
        (or features-only without labels).
      argument: The caller's name for `data`, for error messages.
      with_labels: Whether elements carry labels (passed to `forward`).

    Returns:
      `(outputs, labels)`: per-batch tuples of NumPy arrays, and per-batch
      `[batch]` int64 labels (empty without labels).

    Raises:
      ValueError: naming `argument` when `data` is empty or lacks labels.
    """
    outputs, labels = [], []
    for element in data:
        features, batch_labels, weights = _features_labels_weights(element)
        if with_labels:
            if batch_labels is None:
                raise ValueError(f"{argument} must yield (features, labels) batches.")
            arguments = (features, batch_labels) if weights is None else (features, batch_labels, weights)
            outputs.append(tuple(t.numpy() for t in forward(*arguments)))
            labels.append(np.reshape(batch_labels.numpy(), [-1]).astype(np.int64))
        else:
            outputs.append(tuple(t.numpy() for t in forward(features)))
    if not outputs:
        raise ValueError(f"{argument} is empty.")
    return outputs, labels


def collect_sample_weights(data: tf.data.Dataset, *, argument: str = "data") -> Optional[np.ndarray]:
    """The `[N]` float64 sample weights of `(features, labels, sample_weight)` batches, in order.

    One pass over `data` reading only the third component (for weighted
    metrics next to logits collected in the same, unshuffled, order).

    Returns:
      The weights, or None when the batches carry none.

    Raises:
      ValueError: naming `argument` when `data` is empty.
    """
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 3:
        return None
    parts = [np.reshape(element[2].numpy(), [-1]).astype(np.float64) for element in data]
    if not parts:
        raise ValueError(f"{argument} is empty.")
    return np.concatenate(parts)


def weighted_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                     sample_weight: Optional[np.ndarray]) -> Dict[str, Any]:
    """`per_class_metrics` of decisions and their `confusion_matrix`, each cell the sum of its rows'
    sample weights (counts of rows when `sample_weight` is None)."""
    matrix = count_confusion_matrix(labels, predictions, num_classes, sample_weight)
    return {**per_class_metrics(matrix), "confusion_matrix": matrix}


class ModelLogits:
    """`(logits, labels)` of a Keras model over a fixed dataset, for callbacks outside a `Trainer`.

    In `model.fit` a callback has no `EvaluationResult` to read; this runs the
    model once over `data` through `collect_outputs` (the forward pass is one
    `tf.function`, traced for at most the full and the last partial batch).

    Args:
      data: Batched `tf.data.Dataset` of `(features, labels)`.
      argument: The caller's name for `data`, for error messages.
    """

    def __init__(self, data: tf.data.Dataset, *, argument: str = "validation_data"):
        if not isinstance(data, tf.data.Dataset):
            raise ValueError(f"{argument} must be a tf.data.Dataset of (features, labels) "
                             f"batches, got {type(data).__name__}.")
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"{argument} must yield (features, labels) batches; "
                             f"its elements are {spec}.")
        self.data = data
        self.argument = argument
        self._model = None
        self._forward = None

    def __call__(self, model) -> Tuple[np.ndarray, np.ndarray]:
        """Returns `(logits float32 [N, K], labels int64 [N])` of `model` on the data."""
        if model is not self._model:
            self._model = model
            self._forward = tf.function(
                lambda features, *_: (tf.cast(model(features, training=False), tf.float32),),
                reduce_retracing=True)
        outputs, labels = collect_outputs(self._forward, self.data, argument=self.argument)
        return concatenate(outputs, 0), np.concatenate(labels)


def concatenate(parts: list, index: int) -> np.ndarray:
    """Joins output `index` of the per-batch tuples of `collect_outputs`."""
    return np.concatenate([part[index] for part in parts], axis=0)
