"""Equalization loss v2 (Tan et al. 2021) as a reweighting rule on softmax logit gradients.

Per-class positive/negative gradient magnitudes accumulate in variables, all-reduced across replicas.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from losses.rules import ReweightingRule, TrainingContext
from trainer.checks import check_nonnegative, check_number, check_positive

_EPSILON = 1e-10  # as in the authors' code: pos / (neg + 1e-10)


class EqualizationV2(ReweightingRule):
    """Gradient-guided reweighting of Equalization loss v2 (Tan et al. 2021).

    EQL v2 treats each class as a one-vs-all sigmoid task and keeps, per
    class j, the accumulated magnitude of its positive gradients (from
    examples of class j) and of its negative gradients (from all other
    examples). From their ratio g_j = pos_j / (neg_j + 1e-10) it derives

        f(x) = 1 / (1 + exp(-gamma (x - mu)))
        r_j = f(g_j)                 (weight of class j's negative gradients)
        q_j = 1 + alpha (1 - r_j)    (weight of class j's positive gradients)

    so a rare class, whose gradients are mostly negative (small g_j), has its
    negatives suppressed and its positives boosted, until its positive and
    negative gradients balance.

    Use it with a sigmoid (one-vs-all) loss, as in the paper: e.g.
    `SigmoidFocalCrossentropy(gamma=0.0, alpha=None)`, plain sigmoid
    cross-entropy.
    With softmax cross-entropy each example's logit gradients sum to zero,
    so a head class that rare examples mistake for it collects large
    negative gradients, gets a small ratio g_j and its negatives suppressed:
    training collapses onto the head classes (measured: 0.26 balanced
    accuracy on long-tailed Fashion-MNIST, IR 100). The command line refuses that pairing.

    For an example with label y, the gradient at logit y is class y's
    positive gradient and the gradient at logit j != y is class j's negative
    gradient.
    The rule scales dL/dz_{i,y} by q_y and dL/dz_{i,j} by r_j, then adds the
    absolute values of the scaled gradients to the statistics (the authors'
    code also accumulates the weighted gradients). Weights at a step come
    from the statistics before that step, and are 1 until statistics exist
    (the first step, as in the authors' code). The statistics accumulate the
    gradient the rule receives, already divided by the global batch size;
    the ratio g_j does not depend on that scale. Per-replica sums are
    all-reduced before they are added, so every replica holds the same
    statistics, equal to those of one device on the same global batch.

    Args:
      gamma: Steepness of the mapping f, > 0 (paper: 12).
      mu: Centre of the mapping f (paper: 0.8).
      alpha: Extra weight of positive gradients, >= 0 (paper: 4).
      name: Optional module name.

    Raises:
      ArgumentError: Naming `gamma`, `mu` or `alpha` when out of range.

    Example:
      >>> trainer = Trainer(model=model, reweighting=EqualizationV2(), num_classes=10)
    """

    def __init__(self, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.gamma = check_positive(gamma, "gamma")
        self.mu = check_number(mu, "mu")
        self.alpha = check_nonnegative(alpha, "alpha")
        self.positive_gradients: Optional[tf.Variable] = None
        self.negative_gradients: Optional[tf.Variable] = None

    def build(self, num_classes: int) -> None:
        super().build(num_classes)
        options = dict(trainable=False, dtype=tf.float32,
                       synchronization=tf.VariableSynchronization.ON_WRITE,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.positive_gradients = tf.Variable(
            tf.zeros([num_classes]), name="positive_gradients", **options)
        self.negative_gradients = tf.Variable(
            tf.zeros([num_classes]), name="negative_gradients", **options)

    def weights(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """Returns (positive weights q, negative weights r), float32 `[num_classes]`."""
        positive = tf.convert_to_tensor(self.positive_gradients)
        negative = tf.convert_to_tensor(self.negative_gradients)
        ratio = positive / (negative + _EPSILON)
        negative_weights = tf.sigmoid(self.gamma * (ratio - self.mu))
        positive_weights = 1.0 + self.alpha * (1.0 - negative_weights)
        started = tf.reduce_sum(positive + negative) > 0
        ones = tf.ones_like(ratio)
        return (tf.where(started, positive_weights, ones),
                tf.where(started, negative_weights, ones))

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor, grad_logits: tf.Tensor,
                 context: TrainingContext) -> tf.Tensor:
        positive_weights, negative_weights = self.weights()
        is_positive = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        weights = is_positive * positive_weights + (1.0 - is_positive) * negative_weights
        reweighted = grad_logits * tf.cast(weights, grad_logits.dtype)
        magnitude = tf.abs(tf.cast(reweighted, tf.float32))
        statistics = tf.stack([tf.reduce_sum(magnitude * is_positive, axis=0),
                               tf.reduce_sum(magnitude * (1.0 - is_positive), axis=0)])
        replica_context = tf.distribute.get_replica_context()
        if replica_context is not None:
            statistics = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, statistics)
        self.positive_gradients.assign_add(statistics[0])
        self.negative_gradients.assign_add(statistics[1])
        return reweighted

    def class_weights(self) -> tf.Tensor:
        """The positive-gradient weights q (the weight of each class's own examples)."""
        return self.weights()[0]

    def get_config(self) -> Dict[str, Any]:
        return {"gamma": self.gamma, "mu": self.mu, "alpha": self.alpha}
