"""Cross-entropy with a larger weight on the examples of one target class.

The loss-level form of `TargetClassWeight`; fixes the label shapes of the write-ups' `WeightedRecallLoss`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras
import tensorflow as tf

from losses._inputs import float_logits, sparse_labels
from trainer.checks import check_class_index, check_positive


@keras.saving.register_keras_serializable(package="imbalanced")
class WeightedRecallCrossentropy(keras.losses.Loss):
    """Cross-entropy whose examples labelled `target_class` count `recall_weight` times.

    Missing an example of the class you must catch costs more, which pushes
    that class's recall up (at some cost in its precision). Every other
    example keeps weight 1. Labels may be int or float, shape `[batch]` or
    `[batch, 1]`: the write-ups' `tf.where(tf.reduce_any(..., axis=1), ...)`
    fails on `[batch]` labels and broadcasts wrongly on `[batch, 1]`; here the
    mask is built from the flattened labels.

    In the Trainer, `TargetClassWeight(target_class, weight)` gives the same
    gradients as a reweighting rule.

    Args:
      target_class: Index of the class whose recall matters.
      recall_weight: Positive weight of that class's examples.
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.

    Example:
      >>> loss = WeightedRecallCrossentropy(target_class=1, recall_weight=5.0)
      >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, target_class: int, recall_weight: float, *,
                 reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "weighted_recall_crossentropy", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.target_class = check_class_index(target_class, "target_class")
        self.recall_weight = check_positive(recall_weight, "recall_weight")

    def call(self, y_true, y_pred) -> tf.Tensor:
        logits = float_logits(y_pred)
        width = logits.shape[-1]
        if width is not None:
            check_class_index(self.target_class, "target_class", width)
        labels = sparse_labels(y_true)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        weight = tf.where(tf.equal(labels, self.target_class),
                          tf.constant(self.recall_weight, loss.dtype),
                          tf.constant(1.0, loss.dtype))
        return weight * loss

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(target_class=self.target_class, recall_weight=self.recall_weight)
        return config
