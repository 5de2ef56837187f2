"""Reproducible runs: one seed for Python, NumPy, TensorFlow and Keras, and deterministic ops.

With `enable_determinism(seed)`, the same command on the same machine and
TensorFlow build gives the same weights, and a run resumed from a checkpoint
finishes with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging


def enable_determinism(seed: int) -> None:
    """Seeds every generator and makes TensorFlow's ops deterministic.

    Calls `keras.utils.set_random_seed(seed)` (Python, NumPy, TensorFlow and
    Keras) and `tf.config.experimental.enable_op_determinism()`. Ops without a
    deterministic kernel on the device then raise an error instead of varying
    silently, and `tf.data` keeps element order (its default). Call it before
    building models and datasets. Costs speed on GPUs (deterministic kernels
    and reductions); little on CPUs.

    What it does not cover: a different TensorFlow build, device type or
    number of replicas can change floating-point rounding, and so the weights
    after many steps.

    Args:
      seed: The seed.
    """
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
    logging.info("Deterministic mode: seed %d, op determinism on.", seed)
