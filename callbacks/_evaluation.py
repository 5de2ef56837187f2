"""Runs a Keras model over a held-out dataset from inside a callback (logits and labels)."""

from __future__ import annotations

from typing import Tuple

import keras
import numpy as np
import tensorflow as tf


class LogitsCollector:
    """Collects a model's logits and the labels of a dataset of `(features, labels)` batches.

    The forward pass is one `tf.function` (traced for at most two batch
    shapes: full and last partial batch). It runs in cross-replica context,
    so under a `tf.distribute` strategy every worker computes the same
    values from the same data.

    Args:
      dataset: Batched `tf.data.Dataset` of `(features, labels)`.
    """

    def __init__(self, dataset: tf.data.Dataset):
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(f"validation_data must be a tf.data.Dataset of (features, labels) "
                             f"batches, got {type(dataset).__name__}.")
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"validation_data must yield (features, labels) batches; "
                             f"its elements are {spec}.")
        self.dataset = dataset
        self._model = None
        self._forward = None

    def __call__(self, model: keras.Model) -> Tuple[np.ndarray, np.ndarray]:
        """Returns `(logits float32 [N, K], labels int64 [N])`."""
        if model is not self._model:
            self._model = model
            self._forward = tf.function(
                lambda features: tf.cast(model(features, training=False), tf.float32),
                reduce_retracing=True)
        logits, labels = [], []
        for batch in self.dataset:
            logits.append(self._forward(batch[0]).numpy())
            labels.append(np.reshape(batch[1].numpy(), [-1]))
        if not logits:
            raise ValueError("validation_data is empty.")
        return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)
