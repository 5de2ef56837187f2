"""Focal losses (Lin et al. 2017) computed in log space: softmax with integer labels, and sigmoid.

Loss and gradient stay exact and finite for logits up to +-1e4 (Keras's behaviour: `SparseFocalCrossentropy`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from losses._inputs import as_float_list, float_logits, sigmoid_targets, sparse_labels
from trainer.checks import ArgumentError, check_nonnegative, check_number


def _check_alpha_vector(alpha: Optional[Sequence[float]]) -> Optional[np.ndarray]:
    """Returns per-class weights as float64, or None; `ArgumentError` naming `alpha` otherwise."""
    if alpha is None:
        return None
    try:
        array = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError("alpha", alpha, "must be a list of per-class weights or None") from None
    if array.ndim != 1 or array.shape[0] < 2:
        raise ArgumentError("alpha", alpha, "must be a 1-D list with one weight per class (or None)")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ArgumentError("alpha", array.tolist(), "must be finite and non-negative")
    return array


@keras.saving.register_keras_serializable(package="imbalanced")
class SparseFocalCrossentropy(keras.losses.Loss):
    """Softmax focal loss with integer labels: -alpha_y (1 - p_y)^gamma log p_y.

    Lin et al. (2017). Both factors are computed from log-softmax values:
    log p_y = z_y - logsumexp(z) and log(1 - p_y) = logsumexp_{j != y}(z_j) -
    logsumexp(z), so the loss and its gradient are finite for logits up to
    +-1e4 and (1 - p_y)^gamma never takes a power of a rounded-off zero. With
    `alpha=None` this equals Keras `CategoricalFocalCrossentropy(alpha=1.0,
    from_logits=True)` on one-hot labels for moderate logits; `gamma=0` is
    cross-entropy. Keras clips probabilities to [1e-7, 1 - 1e-7], so for a
    confidently wrong example (logit gap 2e4) its loss saturates at a
    constant and its gradient is 0, where this loss is 2e4 with gradient
    -1/+1. (The Keras 2 binary focal loss gave NaN gradients there,
    TensorFlow issue 70326.)

    Args:
      gamma: Focusing parameter, >= 0.
      alpha: Optional per-class weights (one non-negative value per class);
        None means no class weighting.
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.

    Example:
      >>> loss = SparseFocalCrossentropy(gamma=2.0)
      >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, gamma: float = 2.0, alpha: Optional[Sequence[float]] = None, *,
                 reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "sparse_focal_crossentropy", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = check_nonnegative(gamma, "gamma")
        self.alpha = _check_alpha_vector(alpha)

    def call(self, y_true, y_pred) -> tf.Tensor:
        num_classes = None if self.alpha is None else self.alpha.shape[0]
        logits = float_logits(y_pred, num_classes)
        labels = sparse_labels(y_true)
        log_normalizer = tf.reduce_logsumexp(logits, axis=-1)
        true_logit = tf.gather(logits, labels, axis=-1, batch_dims=1)
        log_p = true_logit - log_normalizer
        loss = -log_p
        if self.gamma > 0:
            is_true = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
            other_logits = tf.where(is_true, tf.constant(-np.inf, logits.dtype), logits)
            log_one_minus_p = tf.reduce_logsumexp(other_logits, axis=-1) - log_normalizer
            loss = tf.exp(self.gamma * log_one_minus_p) * loss
        if self.alpha is not None:
            loss = tf.gather(tf.constant(self.alpha, logits.dtype), labels) * loss
        return loss

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(gamma=self.gamma,
                      alpha=None if self.alpha is None else as_float_list(self.alpha))
        return config


@keras.saving.register_keras_serializable(package="imbalanced")
class SigmoidFocalCrossentropy(keras.losses.Loss):
    """Sigmoid focal loss for binary and multi-label problems, summed over outputs.

    Per output unit: -alpha_t (1 - p_t)^gamma log p_t with p = sigmoid(z),
    p_t = p for a positive target and 1 - p for a negative one, and alpha_t =
    alpha for positives and 1 - alpha for negatives (Lin et al. 2017). Both
    factors come from log-sigmoid values (log p_t = log_sigmoid(s z) and
    log(1 - p_t) = log_sigmoid(-s z), s = +-1), so loss and gradient are finite
    for logits up to +-1e4. Per-example values are the sum over output units
    (as in RetinaNet and TensorFlow Addons); Keras `BinaryFocalCrossentropy`
    averages over them instead, so for one output unit the two agree.

    Targets are read from `y_true` by shape:
      - logits `[batch, 1]` (or `[batch]`): binary 0/1 targets, `[batch]` or
        `[batch, 1]`;
      - logits `[batch, K]` and `y_true` `[batch, K]`: multi-hot 0/1 targets;
      - logits `[batch, K]` and `y_true` `[batch]` or `[batch, 1]`: integer
        class labels, one-hot encoded (one-vs-all sigmoid classification).
    Targets must be hard 0/1 values.

    Args:
      gamma: Focusing parameter, >= 0.
      alpha: Weight of positive targets in [0, 1] (negatives get 1 - alpha), or
        None for no balancing.
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.

    Example:
      >>> loss = SigmoidFocalCrossentropy(gamma=2.0, alpha=0.25)
      >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, gamma: float = 2.0, alpha: Optional[float] = 0.25, *,
                 reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "sigmoid_focal_crossentropy", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = check_nonnegative(gamma, "gamma")
        self.alpha = None if alpha is None else check_number(alpha, "alpha", minimum=0, maximum=1)

    def call(self, y_true, y_pred) -> tf.Tensor:
        logits = tf.convert_to_tensor(y_pred)
        if logits.shape.rank == 1:
            logits = logits[:, tf.newaxis]
        logits = float_logits(logits)
        targets = sigmoid_targets(y_true, logits, "SigmoidFocalCrossentropy")
        sign = 2.0 * targets - 1.0
        signed_logits = sign * logits
        loss = -tf.math.log_sigmoid(signed_logits)
        if self.gamma > 0:
            loss = tf.exp(self.gamma * tf.math.log_sigmoid(-signed_logits)) * loss
        if self.alpha is not None:
            loss = (targets * self.alpha + (1.0 - targets) * (1.0 - self.alpha)) * loss
        return tf.reduce_sum(loss, axis=-1)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha)
        return config
