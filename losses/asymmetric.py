"""The asymmetric loss for multi-label (and binary) sigmoid outputs (Ridnik et al., ICCV 2021)."""

from __future__ import annotations

from typing import Any, Dict

import keras
import tensorflow as tf

from losses._inputs import float_logits, sigmoid_targets
from trainer.checks import check_nonnegative, check_number


class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric loss (ASL): focusing and a probability margin on the negatives only.

    Per output unit, with p = sigmoid(z) and the shifted probability
    p_m = max(p - clip, 0) of a negative:

        positive: -(1 - p)^gamma_pos log(p)
        negative: -p_m^gamma_neg log(1 - p_m)

    Many easy negatives (the usual case of a rare label) then add little:
    `gamma_neg > gamma_pos` down-weights them as a focal loss does, and
    `clip` drops negatives with p < clip altogether (and bounds the loss of a
    mislabelled negative). `gamma_pos = gamma_neg = clip = 0` is binary
    cross-entropy. Computed from logits with log-sigmoids (log(1 - p_m) =
    log(min(sigmoid(-z) + clip, 1))), so the loss and its gradient are finite
    at logits of +-1e4. Per-example values are the mean over output units,
    as Keras's `BinaryCrossentropy` takes it (the paper's code sums them: L
    times these for L labels); with `trainer.tasks.MultiLabelTask` each
    position is one unit, so the two agree up to that factor. Targets: 0/1
    labels of a one-logit model, multi-hot `[batch, L]`, or integer class
    labels of a `[batch, C]` model (one-hot: one-vs-all sigmoids, as
    `SigmoidFocalCrossentropy`).

    Args:
      gamma_pos: Focusing of positives, >= 0 (paper: 0).
      gamma_neg: Focusing of negatives, >= 0 (paper: 4).
      clip: Probability margin of negatives, in [0, 1) (paper: 0.05).
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.

    Targets are 0/1, of the logits' shape (`[batch, L]`, or `[batch]` /
    `[batch, 1]` for one logit).
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, *,
                 reduction: Any = "sum_over_batch_size", name: str = "asymmetric_loss",
                 dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma_pos = check_nonnegative(gamma_pos, "gamma_pos")
        self.gamma_neg = check_nonnegative(gamma_neg, "gamma_neg")
        self.clip = check_number(clip, "clip", minimum=0, maximum=1, exclusive_maximum=True)

    def call(self, y_true, y_pred) -> tf.Tensor:
        logits = tf.convert_to_tensor(y_pred)
        if logits.shape.rank == 1:
            logits = logits[:, tf.newaxis]
        logits = float_logits(logits)
        targets = sigmoid_targets(y_true, logits, "AsymmetricLoss")
        positive = -tf.math.log_sigmoid(logits)
        if self.gamma_pos > 0:
            positive = tf.exp(self.gamma_pos * tf.math.log_sigmoid(-logits)) * positive
        if self.clip > 0:
            # 1 - p_m = min(1 - p + clip, 1) >= clip: its log is finite.
            log_keep = tf.math.log(tf.minimum(tf.sigmoid(-logits) + self.clip, 1.0))
            shifted = tf.maximum(tf.sigmoid(logits) - self.clip, 0.0)
            log_shifted = tf.math.log(tf.where(shifted > 0, shifted, tf.ones_like(shifted)))
        else:
            log_keep = tf.math.log_sigmoid(-logits)
            shifted = tf.sigmoid(logits)
            log_shifted = tf.math.log_sigmoid(logits)
        negative = -log_keep
        if self.gamma_neg > 0:
            # exp(gamma log p_m), 0 where p_m = 0 (no 0 ** gamma gradient there).
            focus = tf.where(shifted > 0, tf.exp(self.gamma_neg * log_shifted), tf.zeros_like(shifted))
            negative = focus * negative
        loss = targets * positive + (1.0 - targets) * negative
        return tf.reduce_mean(loss, axis=-1)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip)
        return config
