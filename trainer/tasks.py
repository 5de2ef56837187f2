"""Tasks: how labels meet logits (the default loss, class identity, metrics, decisions).

The `Trainer` asks its `Task` everything that depends on the kind of target, so
the loop never branches on it. `MulticlassTask` (softmax over `K >= 2` logits,
integer labels `[batch]`) is the default; `BinaryTask` trains a one-logit model
(sigmoid; `one_logit_loss` turns a two-class loss into its one-logit form); `PerPositionTask`
trains a label per position (segmentation masks, token tags: logits `[batch, d1, ..., dk, K]`),
every position counted as an example; `MultiLabelTask` trains `L` independent yes/no labels
(one sigmoid logit each, multi-hot labels `[batch, L]`), each (example, label) pair counted as a
binary position whose class is `2l` (without label l) or `2l + 1` (with it).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from losses.asymmetric import AsymmetricLoss
from losses.focal import SigmoidFocalCrossentropy
from trainer.checks import ArgumentError
from trainer.data.multi_label import label_value_counts, label_value_names


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
        """The task's default decision (class indices) for NumPy decision logits."""
        raise NotImplementedError

    def decision_logits(self, model_logits: tf.Tensor) -> tf.Tensor:
        """`[batch, K]` logits whose softmax is the class probabilities, from the model's output.

        Metrics, evaluation, decisions and prediction see these; the loss sees
        the model's own output.
        """
        return model_logits

    def shift_logits(self, model_logits: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        """The model's logits with a rule's per-class offsets `[K]` added (margins in the loss)."""
        return model_logits + tf.cast(offsets, model_logits.dtype)

    def predicted_classes(self, labels: tf.Tensor, decision_logits: tf.Tensor) -> tf.Tensor:
        """int32 `[n]` predicted classes of counted examples, for the confusion matrix.

        Args:
          labels: `[n]` class labels of the counted examples (`positions`).
          decision_logits: Their `decision_logits`.
        """
        del labels
        return tf.argmax(decision_logits, axis=-1, output_type=tf.int32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities of NumPy decision logits: the softmax over classes."""
        logits = np.asarray(logits)
        logits = logits - logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=-1, keepdims=True)

    def example_view(self, logits: np.ndarray, labels: np.ndarray, num_classes: int
                     ) -> Tuple[np.ndarray, np.ndarray]:
        """Collected `(decision logits, labels)` of counted examples as a user reads them.

        Identity but for a multi-label task, whose positions become `[N, L]` logits and
        multi-hot labels again.
        """
        del num_classes
        return logits, labels

    def positions(self, model_logits: tf.Tensor, labels: tf.Tensor, sample_weight: Optional[tf.Tensor]
                  ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
        """The counted examples of a batch: `(logits [n, ...], labels [n], sample weights [n] or None)`.

        The loss, the rule, the metrics and the loss's divisor (the counted
        examples of the global batch) all see these. Identity for one label per
        example; a per-position task flattens positions and drops ignored ones.
        Runs inside the gradient tape.
        """
        return model_logits, labels, sample_weight

    @property
    def xla_compatible(self) -> bool:
        """Whether the step keeps static shapes (XLA can compile it)."""
        return True

    def check_label_shape(self, labels_shape: tf.TensorShape, logits_shape: tf.TensorShape) -> None:
        """Refuses labels that cannot fit the model's output, before any tracing.

        Args:
          labels_shape: Of a batch of labels.
          logits_shape: The model's output for one example (batch axis first).

        Raises:
          ArgumentError: naming `labels`.
        """
        del labels_shape, logits_shape  # one label per example: the step's own checks cover it


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


class BinaryTask(Task):
    """One logit `z` per example, p(class 1) = sigmoid(z); labels 0/1, `[batch]` or `[batch, 1]`.

    The model ends in one unit (e.g. `Dense(1)`); `num_classes` is 2. Default
    loss: binary cross-entropy from logits (a `losses.SigmoidFocalCrossentropy`
    with `alpha` and `gamma` is the focal variant). Rules see dL/dz `[batch, 1]`
    and the labels, so per-class weights scale each example's gradient; a
    rule's two margins `o` shift `z` by `o_1 - o_0`. Metrics, decisions and
    prediction see the two-class logits `[0, z]`, whose softmax is
    `(1 - sigmoid(z), sigmoid(z))`: the argmax is `z > 0`, and a threshold on
    the probability of class 1 is a threshold on `sigmoid(z)`.
    """

    name = "binary"

    def default_loss(self) -> Callable:
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def check_num_classes(self, num_classes: Optional[int], output_width: Optional[int]) -> int:
        if output_width is not None and output_width != 1:
            raise ArgumentError("model", f"{output_width} logits per example",
                                "must return one logit per example for a binary (sigmoid) task")
        if num_classes is not None and num_classes != 2:
            raise ArgumentError("num_classes", num_classes, "must be 2 (or None) for a binary task")
        return 2

    def class_labels(self, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
        return MulticlassTask().class_labels(labels, 2)

    def per_example_loss(self, loss: Callable, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        targets = tf.cast(tf.reshape(labels, [-1, 1]), logits.dtype)
        logits = tf.reshape(logits, [-1, 1])
        per_example = loss.call(targets, logits) if isinstance(loss, keras.losses.Loss) \
            else loss(targets, logits)
        return tf.reshape(per_example, [tf.shape(logits)[0], -1])[:, 0] \
            if per_example.shape.rank != 1 else per_example

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits).argmax(axis=-1)

    def decision_logits(self, model_logits: tf.Tensor) -> tf.Tensor:
        logits = tf.reshape(model_logits, [-1, 1])
        return tf.concat([tf.zeros_like(logits), logits], axis=-1)

    def shift_logits(self, model_logits: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        offsets = tf.cast(offsets, model_logits.dtype)
        return model_logits + (offsets[1] - offsets[0])



class PerPositionTask(MulticlassTask):
    """A class per position: logits `[batch, d1, ..., dk, K]`, integer labels `[batch, d1, ..., dk]`.

    Segmentation masks (`k = 2`) and token tags (`k = 1`). Every position is
    an example: the loss, the rule (each position's gradient weighted by its
    label's class), the confusion matrix and every per-class metric count
    positions. Positions labelled `ignore_label` (e.g. 255 or -1) are dropped
    from all of them. The loss is the sum of the counted positions' losses
    divided by the number of counted positions in the global batch; Keras's
    default reduction of a per-position loss divides by every position of the
    batch, ignored or not (the same when nothing is ignored; with ignored
    positions Keras's loss is smaller by the ignored share). Sample weights
    may be per example (`[batch]`, spread over its positions) or per position.
    Dropping positions gives the step dynamic shapes, so with an `ignore_label`
    it is not compiled by XLA (`jit_compile="auto"` then runs it plain).

    Args:
      ignore_label: The label of positions to ignore, or None; must not be a class index.
    """

    name = "per_position"

    def __init__(self, ignore_label: Optional[int] = None):
        if ignore_label is not None and (isinstance(ignore_label, bool) or int(ignore_label) != ignore_label):
            raise ArgumentError("ignore_label", ignore_label, "must be an integer (or None)")
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def check_num_classes(self, num_classes: Optional[int], output_width: Optional[int]) -> int:
        num_classes = super().check_num_classes(num_classes, output_width)
        if self.ignore_label is not None and 0 <= self.ignore_label < num_classes:
            raise ArgumentError("ignore_label", self.ignore_label,
                                f"must not be a class index (0..{num_classes - 1}): positions of that "
                                f"class would be dropped")
        return num_classes

    def class_labels(self, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
        labels = tf.cast(labels, tf.int32)
        counted = labels if self.ignore_label is None else tf.where(
            tf.equal(labels, self.ignore_label), tf.zeros_like(labels), labels)
        checks = [
            tf.debugging.assert_non_negative(counted, message="labels must be >= 0 (or the ignore_label)"),
            tf.debugging.assert_less(counted, num_classes, message=f"labels must be < num_classes="
                                                                   f"{num_classes} (or the ignore_label)"),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def check_label_shape(self, labels_shape: tf.TensorShape, logits_shape: tf.TensorShape) -> None:
        positions = tf.TensorShape(logits_shape)[1:-1]
        labels_shape = tf.TensorShape(labels_shape)
        if labels_shape.rank is None or positions.rank is None:
            return
        per_example = labels_shape[1:]
        if per_example.rank == positions.rank + 1 and per_example[-1] == 1:
            per_example = per_example[:-1]
        if per_example.rank != positions.rank or not per_example.is_compatible_with(positions):
            dims = ", ".join(str(d) for d in positions.as_list())
            raise ArgumentError("labels", f"batches of shape {labels_shape}",
                                f"must hold one label per position of the model's output: shape "
                                f"[batch, {dims}] for logits of shape [batch, {dims}, "
                                f"{tf.TensorShape(logits_shape)[-1]}]")

    def positions(self, model_logits: tf.Tensor, labels: tf.Tensor, sample_weight: Optional[tf.Tensor]
                  ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
        width = model_logits.shape[-1] if model_logits.shape[-1] is not None else tf.shape(model_logits)[-1]
        logits = tf.reshape(model_logits, [-1, width])
        labels = tf.reshape(labels, [-1])
        weights = None
        if sample_weight is not None:
            batch = tf.shape(model_logits)[0]
            weights = tf.reshape(tf.cast(sample_weight, tf.float32), [batch, -1])
            weights = tf.reshape(tf.broadcast_to(weights, [batch, tf.shape(logits)[0] // batch]), [-1])
        if self.ignore_label is not None:
            keep = tf.not_equal(labels, self.ignore_label)
            logits, labels = tf.boolean_mask(logits, keep), tf.boolean_mask(labels, keep)
            weights = None if weights is None else tf.boolean_mask(weights, keep)
        return logits, labels, weights

    @property
    def xla_compatible(self) -> bool:
        return self.ignore_label is None


class MultiLabelTask(Task):
    """`L` independent yes/no labels: logits `[batch, L]` (a sigmoid each), multi-hot labels `[batch, L]`.

    Every (example, label) pair is a binary position, as in `PerPositionTask`:
    the loss (binary cross-entropy from logits by default, or any one-logit
    loss such as `losses.AsymmetricLoss` or `losses.SigmoidFocalCrossentropy`)
    is summed over the positions and divided by their number in the global
    batch, which is Keras's `BinaryCrossentropy` on `[batch, L]` (its mean over
    labels, then over examples). Sample weights are per example (`[batch]`,
    spread over its labels) or per label (`[batch, L]`).

    Rules and metrics see `2L` classes: class `2l` is "without label l" and
    `2l + 1` "with label l" (`num_classes = 2L`). So a per-class rule
    weighs each label's positives and negatives on its own (`ClassWeights`
    with `2L` weights; `ClassWeights.inverse_frequency(task.class_counts(y))`
    gives label l's positives `n_neg / n_pos` times its negatives' weight),
    `TargetClassWeight(2l + 1, w)` and the recall-target controller with
    `target_class = 2l + 1` target label l's recall, and the confusion matrix
    is block diagonal: its `2 x 2` block l is label l's confusion matrix, so
    per-class recall and precision of class `2l + 1` are label l's
    (`trainer.metrics.per_label_metrics` reads them out). A rule's margins
    `o` shift label l's logit by `o[2l + 1] - o[2l]`.

    `Trainer.predict_logits` returns the model's `[N, L]` logits (`sigmoid`
    of them: per-label probabilities), `predict_classes` multi-hot decisions
    `z > 0`; `collect_logits` returns `[N, L]` logits and multi-hot labels.
    Per-label thresholds for per-label recall targets:
    `trainer.decisions.per_label.choose_label_thresholds`.

    Args:
      label_names: Optional names of the `L` labels (for `class_names`).
    """

    name = "multi_label"

    def __init__(self, label_names: Optional[Sequence[str]] = None):
        self.label_names = None if label_names is None else tuple(str(n) for n in label_names)

    def default_loss(self) -> Callable:
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def check_num_classes(self, num_classes: Optional[int], output_width: Optional[int]) -> int:
        if output_width is None:
            if num_classes is None or isinstance(num_classes, bool) or int(num_classes) != num_classes \
                    or num_classes < 2 or num_classes % 2:
                raise ArgumentError("num_classes", num_classes,
                                    "must be 2 x the number of labels for a multi-label task whose "
                                    "model's output width is unknown")
            output_width = int(num_classes) // 2
        if num_classes is not None and num_classes != 2 * output_width:
            raise ArgumentError("num_classes", num_classes,
                                f"must be None or 2 x the model's {output_width} labels "
                                f"(={2 * output_width}) for a multi-label task: class 2l is "
                                f"'without label l', 2l + 1 'with label l'")
        if self.label_names is not None and len(self.label_names) != output_width:
            raise ArgumentError("label_names", list(self.label_names),
                                f"has {len(self.label_names)} names but the model has "
                                f"{output_width} labels (logits per example)")
        return 2 * int(output_width)

    def class_names(self, num_labels: int) -> list:
        """`['not a', 'a', 'not b', 'b', ...]` for the `2L` classes."""
        return label_value_names(self.label_names or tuple(f"label {j}" for j in range(num_labels)))

    @staticmethod
    def class_counts(labels: np.ndarray) -> np.ndarray:
        """`[2L]` training counts of the `2L` classes (negatives, positives per label) of a
        multi-hot `[N, L]` matrix: what `ClassWeights.inverse_frequency` takes."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.isin(labels, (0, 1)).all():
            raise ArgumentError("labels", f"an array of shape {labels.shape}",
                                "must be a multi-hot [N, L] matrix of 0s and 1s")
        return label_value_counts(labels).astype(np.float64)

    def class_labels(self, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
        # Checked before the cast, so a soft target such as 0.5 is refused, not truncated to 0.
        values = tf.cast(labels, tf.float32)
        checks = [tf.debugging.assert_equal(
            values * (1 - values), tf.zeros_like(values),
            message="multi-label targets must be 0 or 1")]
        with tf.control_dependencies(checks):
            return tf.cast(values, tf.int32)

    def check_label_shape(self, labels_shape: tf.TensorShape, logits_shape: tf.TensorShape) -> None:
        labels_shape, logits_shape = tf.TensorShape(labels_shape), tf.TensorShape(logits_shape)
        if labels_shape.rank is None or logits_shape.rank is None:
            return
        if labels_shape.rank != 2 or logits_shape.rank != 2 or \
                not labels_shape[1:].is_compatible_with(logits_shape[1:]):
            raise ArgumentError("labels", f"batches of shape {labels_shape}",
                                f"must be multi-hot [batch, {logits_shape[-1]}] for the model's "
                                f"logits of shape {logits_shape} (one 0/1 target per label)")

    def positions(self, model_logits: tf.Tensor, labels: tf.Tensor, sample_weight: Optional[tf.Tensor]
                  ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
        num_labels = model_logits.shape[-1]
        logits = tf.reshape(model_logits, [-1, 1])
        classes = tf.reshape(tf.cast(labels, tf.int32) + 2 * tf.range(num_labels, dtype=tf.int32), [-1])
        weights = None
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, tf.float32), [tf.shape(model_logits)[0], -1])
            weights = tf.reshape(tf.broadcast_to(weights, tf.shape(model_logits)), [-1])
        return logits, classes, weights

    def per_example_loss(self, loss: Callable, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        return BinaryTask().per_example_loss(loss, labels % 2, logits)

    def shift_logits(self, model_logits: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        offsets = tf.cast(offsets, model_logits.dtype)
        shift = offsets[1::2] - offsets[0::2]
        return tf.reshape(tf.reshape(model_logits, [-1, tf.shape(shift)[0]]) + shift, [-1, 1])

    def predicted_classes(self, labels: tf.Tensor, decision_logits: tf.Tensor) -> tf.Tensor:
        positive = tf.cast(tf.reshape(decision_logits, [-1]) > 0, tf.int32)
        return 2 * (tf.cast(labels, tf.int32) // 2) + positive

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return (np.asarray(logits) > 0).astype(np.int64)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Per-label probabilities `sigmoid(z)` `[N, L]`."""
        logits = np.asarray(logits, np.float64)
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)

    def example_view(self, logits: np.ndarray, labels: np.ndarray, num_classes: int
                     ) -> Tuple[np.ndarray, np.ndarray]:
        num_labels = num_classes // 2  # positions run label-fastest: example i's are rows iL..iL+L-1
        return (np.asarray(logits).reshape(-1, num_labels),
                (np.asarray(labels) % 2).reshape(-1, num_labels))


# Losses that take a one-logit model's logit `[batch, 1]` and 0/1 targets as they are.
_ONE_LOGIT_LOSSES = (keras.losses.BinaryCrossentropy, keras.losses.BinaryFocalCrossentropy,
                     SigmoidFocalCrossentropy, AsymmetricLoss)


class OnTwoClassLogits(keras.losses.Loss):
    """A two-class loss (sparse labels, two logits) applied to a one-logit model's `[0, z]`.

    The softmax of `[0, z]` is `(1 - sigmoid(z), sigmoid(z))`, so a softmax loss on these
    logits is its binary form: cross-entropy is sigmoid cross-entropy; a logit-adjusted loss
    shifts `z` by `tau * log(n_1 / n_0)`; a focal loss is the binary focal loss. `BinaryTask`
    hands it the 0/1 targets `[batch, 1]` and `z` `[batch, 1]`; the wrapped loss sees int32
    labels `[batch]` and `[batch, 2]` logits. A loss with a `logit_shift()` (the prior shift
    of the decision logits) keeps it, for the calibration that undoes it.

    Args:
      loss: A loss of `(labels [batch], logits [batch, 2]) -> [batch]` (a Keras `Loss`, whose
        unreduced `call` is used, or a callable).
    """

    def __init__(self, loss: Callable, name: Optional[str] = None):
        super().__init__(name=name or f"{getattr(loss, 'name', type(loss).__name__)}_on_two_class_logits",
                         reduction=None)
        self.loss = loss
        if hasattr(loss, "logit_shift"):
            self.logit_shift = loss.logit_shift

    def call(self, y_true, y_pred) -> tf.Tensor:
        z = tf.reshape(y_pred, [-1, 1])
        logits = tf.concat([tf.zeros_like(z), z], axis=-1)
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        return MulticlassTask().per_example_loss(self.loss, labels, logits)


def one_logit_loss(loss: Callable) -> Callable:
    """The loss a one-logit (`BinaryTask`) model trains with, for a loss of two-class logits.

    Sparse categorical cross-entropy from logits becomes binary cross-entropy from logits
    (the same values and gradients); a loss already for one logit (`BinaryCrossentropy`,
    `BinaryFocalCrossentropy`, `losses.SigmoidFocalCrossentropy`: the binary focal loss) is
    returned as it is; any other loss is applied to the two-class logits `[0, z]`
    (`OnTwoClassLogits`).
    """
    if isinstance(loss, _ONE_LOGIT_LOSSES):
        return loss
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and \
            loss.get_config().get("from_logits"):
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
    return OnTwoClassLogits(loss)
