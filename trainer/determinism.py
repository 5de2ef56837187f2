"""Reproducible runs: one seed for Python, NumPy, TensorFlow and Keras, and deterministic ops.

`seed_everything(seed)` seeds; `enable_determinism(seed)` also makes TensorFlow's ops deterministic.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from trainer.checks import check_integer

# The largest seed NumPy's global generator accepts.
MAX_SEED = 2**32 - 1


def seed_everything(seed: int) -> None:
    """Seeds Python's `random`, NumPy's and TensorFlow's global generators (and so Keras's).

    Calls `keras.utils.set_random_seed(seed)`. Call it before building models
    and datasets: weights initialised and examples shuffled afterwards are the
    same on every run with the same seed. The Trainer does not seed: whoever
    builds it (the command line, a test, a notebook) calls this first.

    Args:
      seed: An integer in [0, 2**32 - 1].

    Raises:
      ArgumentError: Naming `seed` when it is not such an integer.
    """
    keras.utils.set_random_seed(check_integer(seed, "seed", minimum=0, maximum=MAX_SEED))


def enable_determinism(seed: int) -> None:
    """Seeds every generator and makes TensorFlow's ops deterministic.

    Calls `seed_everything(seed)` and `tf.config.experimental.enable_op_determinism()`.
    Ops without a deterministic kernel on the device then raise an error instead
    of varying silently, and `tf.data` keeps element order (its default). With
    it, the same command on the same machine and TensorFlow build gives the same
    weights, and a run resumed from a checkpoint finishes with the same weights
    and metrics as an uninterrupted one. Call it before building models and
    datasets. Costs speed on GPUs (deterministic kernels and reductions); little
    on CPUs.

    What it does not cover: a different TensorFlow build, device type or
    number of replicas can change floating-point rounding, and so the weights
    after many steps.

    Args:
      seed: An integer in [0, 2**32 - 1].

    Raises:
      ArgumentError: Naming `seed` when it is not such an integer.
    """
    seed_everything(seed)
    tf.config.experimental.enable_op_determinism()
    logging.info("Deterministic mode: seed %d, op determinism on.", seed)
