"""Shared input handling for the losses: integer labels and float logits.

Keras hands `y_true` to a loss as float32 and in shape [batch] or [batch, 1]; these helpers normalise both.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf


def sparse_labels(y_true) -> tf.Tensor:
    """Returns integer class labels of shape `[batch]` as int32.

    Accepts int or float labels of shape `[batch]` or `[batch, 1]` (Keras casts
    labels to the loss dtype and often adds a trailing axis).

    Raises:
      ValueError: when the labels have a shape that is neither, e.g. one-hot.
    """
    y_true = tf.convert_to_tensor(y_true)
    rank = y_true.shape.rank
    if rank is not None and (rank > 2 or (rank == 2 and y_true.shape[-1] not in (None, 1))):
        raise ValueError(
            f"y_true must be integer class labels of shape [batch] or [batch, 1], got shape "
            f"{y_true.shape}; for one-hot labels pass their argmax.")
    if y_true.dtype != tf.int32:
        y_true = tf.cast(y_true, tf.int32)
    return tf.reshape(y_true, [-1])


def float_logits(y_pred, num_classes: Optional[int] = None, argument: str = "y_pred") -> tf.Tensor:
    """Returns `[batch, num_classes]` logits, computed in float32 at least.

    Half-precision logits are cast up so log-softmax stays exact at large
    magnitudes. When `num_classes` is given, a static last dimension that
    differs from it raises.

    Raises:
      ValueError: when the logits are not rank 2 or their width is wrong.
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.dtype in (tf.float16, tf.bfloat16) or not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, tf.float32)
    if y_pred.shape.rank is not None and y_pred.shape.rank != 2:
        raise ValueError(f"{argument} must be logits of shape [batch, num_classes], got {y_pred.shape}.")
    width = y_pred.shape[-1] if y_pred.shape.rank is not None else None
    if num_classes is not None and width is not None and width != num_classes:
        raise ValueError(
            f"{argument} has {width} logits per example but the loss was configured for "
            f"{num_classes} classes.")
    return y_pred


def sigmoid_targets(y_true, logits: tf.Tensor, loss_name: str) -> tf.Tensor:
    """The 0/1 targets of a sigmoid loss, shaped like its `[batch, width]` logits.

    One logit: the labels are the targets; `width` logits: multi-hot labels
    `[batch, width]` as they are, integer class labels one-hot (one-vs-all).

    Raises:
      ValueError: when the logits' last dimension is unknown.
    """
    width = logits.shape[-1]
    y_true = tf.convert_to_tensor(y_true)
    if width is None:
        raise ValueError(f"{loss_name} needs logits with a known last dimension.")
    if width > 1 and y_true.shape.rank == 2 and y_true.shape[-1] == width:
        return tf.cast(y_true, logits.dtype)
    if width == 1:
        return tf.reshape(tf.cast(y_true, logits.dtype), [-1, 1])
    return tf.one_hot(sparse_labels(y_true), width, dtype=logits.dtype)


def as_float_list(values: Sequence[float]) -> list:
    """A JSON-friendly copy of a numeric vector, for `get_config`."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
