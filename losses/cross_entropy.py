"""Per-example sparse softmax cross-entropy from logits: the default loss.

A plain function so the Trainer and the other losses share one exact, stable formula.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from losses._inputs import float_logits, sparse_labels


@keras.saving.register_keras_serializable(package="imbalanced")
def sparse_cross_entropy(y_true, y_pred) -> tf.Tensor:
    """Per-example cross-entropy of integer labels and logits.

    Computed by `tf.nn.sparse_softmax_cross_entropy_with_logits` (log-softmax
    space), so loss and gradients are finite for logits up to +-1e4.

    Args:
      y_true: Class indices, int or float, shape `[batch]` or `[batch, 1]`.
      y_pred: Logits, `[batch, num_classes]`.

    Returns:
      `[batch]` float losses.

    Example:
      >>> sparse_cross_entropy([0, 1], [[2.0, 0.0], [0.0, 2.0]])
    """
    logits = float_logits(y_pred)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=sparse_labels(y_true), logits=logits)
