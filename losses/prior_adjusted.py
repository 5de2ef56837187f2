"""Cross-entropies that move the logits by the class prior: logit adjustment, balanced softmax, LDAM.

Also `posthoc_logit_adjustment`, the same correction applied to a trained model's logits.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from losses._inputs import as_float_list, float_logits, sparse_labels
from losses.rules import observed_class_counts, validate_class_counts
from trainer.checks import check_nonnegative, check_positive


class _ShiftedLogitsCrossentropy(keras.losses.Loss):
    """Cross-entropy of `logits + shift`, with a fixed per-class shift vector."""

    def __init__(self, class_counts: Sequence[float], *, reduction, name, dtype,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.observed_counts = observed_class_counts(class_counts)
        self.class_counts = validate_class_counts(self.observed_counts, class_names=class_names,
                                                  used_by=f"the class prior of {type(self).__name__}")

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.shape[0])

    def logit_shift(self) -> np.ndarray:
        """The per-class vector added to the logits inside the loss."""
        raise NotImplementedError

    def call(self, y_true, y_pred) -> tf.Tensor:
        logits = float_logits(y_pred, self.num_classes)
        shifted = logits + tf.constant(self.logit_shift(), logits.dtype)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=sparse_labels(y_true), logits=shifted)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(class_counts=as_float_list(self.observed_counts))
        return config


@keras.saving.register_keras_serializable(package="imbalanced")
class LogitAdjustedCrossentropy(_ShiftedLogitsCrossentropy):
    """Logit-adjusted loss of Menon et al. (2021): CE(z + tau * log prior, y).

    Training with the prior added to the logits makes the model's own logits
    estimate a balanced (prior-free) classifier, so plain argmax predictions
    target balanced error. Do not stack inverse-frequency class weights or
    class-balanced resampling on top: that counts the prior twice (see
    `warn_if_prior_counted_twice`).

    Args:
      class_counts: Non-negative number of training examples of each class; the
        prior is counts / sum(counts), an absent class (0) counting
        `ABSENT_CLASS_PSEUDO_COUNT` = 0.5 (with a `SmallClassWarning`). The
        pseudo-counted vector is `class_counts`, the given one `observed_counts`
        (what `get_config` keeps).
      tau: Temperature of the adjustment, >= 0; 0 is plain cross-entropy.
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.
      class_names: Class names for the warning (not part of the config).

    Example:
      >>> loss = LogitAdjustedCrossentropy(class_counts=[5000, 500, 50], tau=1.0)
      >>> model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, class_counts: Sequence[float], tau: float = 1.0, *,
                 reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "logit_adjusted_crossentropy", dtype: Any = None,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__(class_counts, reduction=reduction, name=name, dtype=dtype,
                         class_names=class_names)
        self.tau = check_nonnegative(tau, "tau")

    def log_prior(self) -> np.ndarray:
        """log(counts / sum(counts)), float64."""
        return np.log(self.class_counts / self.class_counts.sum())

    def logit_shift(self) -> np.ndarray:
        return self.tau * self.log_prior()

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(tau=self.tau)
        return config


@keras.saving.register_keras_serializable(package="imbalanced")
class BalancedSoftmaxCrossentropy(_ShiftedLogitsCrossentropy):
    """Balanced softmax of Ren et al. (2020): p_j proportional to n_j exp(z_j).

    That is cross-entropy of z + log n; since softmax ignores a constant shift,
    it equals `LogitAdjustedCrossentropy(class_counts, tau=1)`. Do not stack
    inverse-frequency weights or resampling on it (the prior counted twice).

    Args:
      class_counts: Non-negative number of training examples of each class (an
        absent class counts `ABSENT_CLASS_PSEUDO_COUNT` = 0.5, with a warning).
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.
      class_names: Class names for the warning (not part of the config).

    Example:
      >>> loss = BalancedSoftmaxCrossentropy(class_counts=[5000, 500, 50])
    """

    def __init__(self, class_counts: Sequence[float], *,
                 reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "balanced_softmax_crossentropy", dtype: Any = None,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__(class_counts, reduction=reduction, name=name, dtype=dtype,
                         class_names=class_names)

    def logit_shift(self) -> np.ndarray:
        return np.log(self.class_counts)


@keras.saving.register_keras_serializable(package="imbalanced")
class LDAMCrossentropy(keras.losses.Loss):
    """Label-distribution-aware margin loss of Cao et al. (2019).

    The true-class logit is lowered by a margin m_y = C / n_y^(1/4), with C
    chosen so the largest margin (that of the rarest class) is `max_margin`;
    then the logits are multiplied by `scale` and fed to cross-entropy:
    CE(scale * (z - m_y * onehot(y)), y). As in the paper, the margins and
    `scale` assume the logits are cosine similarities in [-1, 1] (a
    normalised linear head); for an ordinary unnormalised head use
    `scale=1.0` and margins on the scale of its logits. Cao et al. pair LDAM
    with deferred re-weighting (`DeferredReweighting`).

    Args:
      class_counts: Non-negative number of training examples of each class. The
        margins follow the classes that have examples (the rarest of them gets
        `max_margin`); an absent class (0, a `SmallClassWarning`) gets
        `max_margin`, which no training example ever uses.
      max_margin: Margin of the rarest class, > 0.
      scale: Multiplier of the (margin-adjusted) logits, > 0.
      reduction: Keras reduction; None returns per-example values.
      name: Loss name.
      dtype: Keras dtype policy of the computation.
      class_names: Class names for the warning (not part of the config).

    Example:
      >>> loss = LDAMCrossentropy(class_counts=[5000, 500, 50], max_margin=0.5, scale=30.0)
    """

    def __init__(self, class_counts: Sequence[float], max_margin: float = 0.5,
                 scale: float = 30.0, *, reduction: Optional[str] = "sum_over_batch_size",
                 name: str = "ldam_crossentropy", dtype: Any = None,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.observed_counts = observed_class_counts(class_counts)
        self.class_counts = validate_class_counts(
            self.observed_counts, class_names=class_names, used_by="the LDAM margins (it gets max_margin)")
        self.max_margin = check_positive(max_margin, "max_margin")
        self.scale = check_positive(scale, "scale")

    @property
    def margins(self) -> np.ndarray:
        """Per-class margins max_margin * (min(n) / n_j)^(1/4) over present classes, float64.

        An absent class gets `max_margin` (never used: no example has its label).
        """
        present = self.observed_counts > 0
        rarest = self.observed_counts[present].min()
        return np.where(present, self.max_margin * (rarest / np.where(present, self.observed_counts, 1.0))
                        ** 0.25, self.max_margin)

    def call(self, y_true, y_pred) -> tf.Tensor:
        logits = float_logits(y_pred, int(self.class_counts.shape[0]))
        labels = sparse_labels(y_true)
        margin = tf.gather(tf.constant(self.margins, logits.dtype), labels)
        adjusted = logits - tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype) * margin[:, None]
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=self.scale * adjusted)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(class_counts=as_float_list(self.observed_counts), max_margin=self.max_margin,
                      scale=self.scale)
        return config


def logit_adjustment_offsets(class_counts: Sequence[float], tau: float = 1.0) -> np.ndarray:
    """Per-class offsets -tau * log prior for post-hoc logit adjustment (Menon et al. 2021).

    Adding them to a trained model's logits (e.g. `Trainer.predict(data,
    logit_adjustment=logit_adjustment_offsets(counts, tau))`) makes argmax
    target balanced error for a model trained with plain cross-entropy. Do
    not apply them to a model trained with `LogitAdjustedCrossentropy` or
    `BalancedSoftmaxCrossentropy`, whose logits are already adjusted.

    Args:
      class_counts: Non-negative training examples per class (an absent class counts
        `ABSENT_CLASS_PSEUDO_COUNT` = 0.5, with a `SmallClassWarning`).
      tau: Strength, >= 0.

    Returns:
      float32 `[num_classes]` offsets.
    """
    tau = check_nonnegative(tau, "tau")
    counts = validate_class_counts(class_counts, used_by="post-hoc logit adjustment")
    return (-tau * np.log(counts / counts.sum())).astype(np.float32)


def posthoc_logit_adjustment(logits, class_counts: Sequence[float], tau: float = 1.0) -> tf.Tensor:
    """Returns `logits + logit_adjustment_offsets(class_counts, tau)`.

    Args:
      logits: `[batch, num_classes]`.
      class_counts: Non-negative training examples per class (see `logit_adjustment_offsets`).
      tau: Strength, >= 0.

    Returns:
      The adjusted logits, same shape and dtype.
    """
    logits = tf.convert_to_tensor(logits)
    return logits + tf.constant(logit_adjustment_offsets(class_counts, tau), logits.dtype)
