"""`PerClassMetrics`: a Keras metric that puts `recall/<k>`, `precision/<k>`, ... into `model.fit` logs.

With it, the recall-driven callbacks follow the same log names in plain
`model.fit` as in the Trainer.
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from trainer.metrics import ConfusionMatrix


class PerClassMetrics(ConfusionMatrix):
    """Streams a confusion matrix and reports the Trainer's per-class log values.

    `result()` is a dict, which Keras spreads into the logs: `recall/<k>`,
    `precision/<k>`, `f1/<k>` for each class, `balanced_accuracy`,
    `macro_f1` and `min_recall` (and the same with `val_` during
    validation). The conventions are `trainer.metrics.per_class_metrics`'s:
    a class without support has NaN recall and is left out of the averages;
    a class never predicted has NaN precision.

    Args:
      num_classes: Number of classes.
      name: Metric name.

    Example:
      >>> model.compile(optimizer="adam", loss=loss, metrics=[PerClassMetrics(10)])
      >>> model.fit(x, y, validation_data=(vx, vy),
      ...           callbacks=[RecallEarlyStopping(class_id=6, patience=3)])
    """

    def __init__(self, num_classes: int, name: str = "per_class_metrics", **kwargs):
        super().__init__(num_classes, name=name, **kwargs)

    def result(self) -> Dict[str, tf.Tensor]:
        matrix = tf.cast(tf.convert_to_tensor(self.matrix), tf.float64)
        true_positives = tf.linalg.diag_part(matrix)
        support = tf.reduce_sum(matrix, axis=1)
        predicted = tf.reduce_sum(matrix, axis=0)
        nan = tf.constant(float("nan"), tf.float64)
        has_support = support > 0
        recall = tf.where(has_support, true_positives / tf.maximum(support, 1.0), nan)
        precision = tf.where(predicted > 0, true_positives / tf.maximum(predicted, 1.0), nan)
        f1 = tf.where(
            has_support,
            tf.where(true_positives > 0,
                     2.0 * true_positives / tf.maximum(support + predicted, 1.0),
                     tf.zeros_like(true_positives)),
            nan)
        supported = tf.reduce_sum(tf.cast(has_support, tf.float64))

        def mean_over_supported(values: tf.Tensor) -> tf.Tensor:
            total = tf.reduce_sum(tf.where(has_support, values, tf.zeros_like(values)))
            return tf.where(supported > 0, total / tf.maximum(supported, 1.0), nan)

        above_any = tf.fill(tf.shape(recall), tf.constant(2.0, tf.float64))
        min_recall = tf.reduce_min(tf.where(has_support, recall, above_any))
        logs = {
            "balanced_accuracy": mean_over_supported(recall),
            "macro_f1": mean_over_supported(f1),
            "min_recall": tf.where(supported > 0, min_recall, nan),
        }
        for class_id in range(self.num_classes):
            logs[f"recall/{class_id}"] = recall[class_id]
            logs[f"precision/{class_id}"] = precision[class_id]
            logs[f"f1/{class_id}"] = f1[class_id]
        return {key: tf.cast(value, tf.float32) for key, value in logs.items()}
