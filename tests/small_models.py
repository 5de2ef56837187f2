"""The small Keras models and batched datasets the unit tests train."""

import keras
import tensorflow as tf


def batched(features, labels, batch_size):
    """A `tf.data.Dataset` of `(features, labels)` batches, in order."""
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)


def small_mlp(num_features, num_classes, *, hidden, activation="relu", seed=0):
    """`Input -> Dense(hidden, activation) -> Dense(num_classes)` logits, seeded."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((num_features,)),
                             keras.layers.Dense(hidden, activation=activation),
                             keras.layers.Dense(num_classes)])
