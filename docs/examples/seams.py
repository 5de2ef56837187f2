"""Two Trainer subclasses, each overriding one seam of the step (see docs/ARCHITECTURE.md).

tests/trainer/test_seams.py runs this file and checks both against independent oracles.
"""

import tensorflow as tf

from trainer import Trainer


class ClippedTrainer(Trainer):
    """Clips each gradient to norm 1 before the optimizer (and the non-finite guard) see it."""

    def apply_gradients(self, loss, gradients, variables):
        clipped = [None if g is None else tf.clip_by_norm(g, 1.0) for g in gradients]
        return super().apply_gradients(loss, clipped, variables)


class RareClassTrainer(Trainer):
    """Scales dL/dlogits of the examples of class `rare_class` by `factor` (a per-class rule)."""

    rare_class = 2
    factor = 4.0

    def reweight(self, labels, logits, grad_logits, context):
        scale = tf.where(tf.equal(labels, self.rare_class), self.factor, 1.0)
        return grad_logits * scale[:, tf.newaxis]
