"""Tasks: how labels meet logits (the default loss, class identity, metrics, decisions).

The `Trainer` asks its `Task` everything that depends on the kind of target, so
the loop never branches on it. Today's task is `MulticlassTask` (softmax over
`K >= 2` logits, integer labels `[batch]`); one-logit binary, multi-label and
per-position tasks implement the same methods.
"""

from __future__ import annotations

from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError


class Task:
    """The contract between a target kind and the loop.

    Subclasses implement every method; all tensor methods are pure functions
    that compile inside the step.
    """

    name = "task"

    def default_loss(self) -> Callable:
        """The per-example loss used when the Trainer is given none."""
        raise NotImplementedError

    def check_num_classes(self, num_classes: int, output_width: Optional[int]) -> int:
        """The number of classes for a model with `output_width` logits.

        Raises:
          ArgumentError: naming `num_classes` when it does not fit the task or the model.
        """
        raise NotImplementedError

    def class_labels(self, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
        """Labels as the rule and the metrics see them (checked in the step)."""
        raise NotImplementedError

    def per_example_loss(self, loss: Callable, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """`[batch]` losses: the loss's per-example values, other axes summed."""
        raise NotImplementedError

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """The task's default decision (class indices) for NumPy logits."""
        raise NotImplementedError


class MulticlassTask(Task):
    """Softmax over `K >= 2` logits, integer labels in `[0, K)` of shape `[batch]` or `[batch, 1]`.

    Default loss: sparse categorical cross-entropy from logits. The decision
    is the argmax; rules see dL/dlogits `[batch, K]` and the labels `[batch]`.
    """

    name = "multiclass"

    def default_loss(self) -> Callable:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def check_num_classes(self, num_classes: Optional[int], output_width: Optional[int]) -> int:
        if num_classes is None:
            if output_width is None:
                raise ArgumentError("num_classes", None, "must be given when the model's output "
                                    "width is unknown")
            num_classes = output_width
        if output_width is not None and output_width != num_classes:
            raise ArgumentError("num_classes", num_classes,
                                f"must equal the model's {output_width} logits per example "
                                f"(the last layer must have num_classes units)")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ArgumentError("num_classes", num_classes,
                                "must be an integer >= 2 for a softmax (multi-class) model")
        return int(num_classes)

    def class_labels(self, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        checks = [
            tf.debugging.assert_non_negative(labels, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, num_classes,
                                     message=f"labels must be < num_classes={num_classes}"),
        ]
        # The identity depends on the checks, so they run before any use of the labels.
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def per_example_loss(self, loss: Callable, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        if isinstance(loss, keras.losses.Loss):
            per_example = loss.call(labels, logits)
        else:
            per_example = loss(labels, logits)
        if per_example.shape.rank != 1:
            per_example = tf.reshape(per_example, [tf.shape(logits)[0], -1])
            per_example = tf.reduce_sum(per_example, axis=-1)
        return per_example

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits).argmax(axis=-1)
