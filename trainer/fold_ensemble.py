"""The cross-fit's fold models served as one model: the mean of their logits.

`mean_logits_model` builds it (a Keras model, exported like any other); `ensemble_logits` runs it over
a dataset, as `Trainer.collect_logits` runs one model.
"""

# Why: the operating point of a cross-fit is chosen on out-of-fold logits, each from a fold model
# trained on (K-1)/K of the rows. On new rows, the mean of those same K models' logits is the score
# closest to what the point was chosen on, and averaging models usually ranks better than one; a
# model refit on all the rows is a different model (trained on more rows per epoch, often more
# confident), on which the chosen cut-off need not give the recall it gave on the folds.

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError


class MeanLogits(keras.Model):
    """The mean of its member models' logits (float32); see `mean_logits_model`."""

    def __init__(self, members: Sequence[keras.Model], **kwargs: Any):
        super().__init__(**kwargs)
        self.members = list(members)

    def call(self, inputs: Any, training: bool = False) -> Any:
        outputs = [keras.ops.cast(member(inputs, training=training), "float32") for member in self.members]
        return keras.ops.mean(keras.ops.stack(outputs, axis=0), axis=0)

    @property
    def output_shape(self) -> Tuple[Optional[int], ...]:
        """The members' (common) output shape, as a functional model gives it."""
        return tuple(self.members[0].output_shape)


def mean_logits_model(models: Sequence[keras.Model], input_shape: Sequence[int]) -> keras.Model:
    """A Keras model whose logits are the mean of `models`' logits (float32), built.

    Args:
      models: Two or more built models with the same input and output shape.
      input_shape: One example's shape (no batch axis).

    Raises:
      ArgumentError: naming `models` when fewer than two are given or their outputs differ in shape.
    """
    models = list(models)
    if len(models) < 2:
        raise ArgumentError("models", f"{len(models)} model(s)", "must be two or more fold models")
    probe = tf.zeros([1, *(int(d) for d in input_shape)], tf.float32)
    shapes = sorted({tuple(model(probe, training=False).shape[1:]) for model in models})
    if len(shapes) != 1:
        raise ArgumentError("models", f"outputs of shapes {shapes}", "must all give logits of the same shape")
    ensemble = MeanLogits(models, name=f"mean_of_{len(models)}_fold_models")
    ensemble(probe)
    return ensemble


def ensemble_logits(model: keras.Model, data: tf.data.Dataset, *,
                    decision_logits: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """`(logits float32 [N, K], labels int64 [N])` of `model` over `(features, labels[, weights])` batches.

    Args:
      model: E.g. `mean_logits_model(...)`.
      data: Batched, in order.
      decision_logits: The task's view of the model's output (`Task.decision_logits`: `[0, z]` of a
        one-logit model), as `Trainer.collect_logits` returns it; default the output itself.
    """
    to_decision = decision_logits or (lambda logits: logits)
    forward = tf.function(lambda features: to_decision(tf.cast(model(features, training=False),
                                                               tf.float32)),
                          reduce_retracing=True)
    logits, labels = [], []
    for batch in data:
        logits.append(np.asarray(forward(batch[0]), np.float32))
        labels.append(np.asarray(batch[1]).reshape(-1))
    return np.concatenate(logits), np.concatenate(labels).astype(np.int64)
