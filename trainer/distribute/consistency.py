"""Checks that the workers of a multi-worker run hold the same state: the restored step, the weights.

A worker that cannot read the chief's checkpoints would train a different model; these catch it.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import tensorflow as tf

from trainer.distribute.cluster import is_multi_worker


class InconsistentRestoreError(ValueError):
    """The workers restored different checkpoints.

    Attributes:
      local_step: The global step this worker restored.
      mean_step: The mean over the workers.
    """

    def __init__(self, local_step: int, mean_step: float):
        super().__init__(
            f"The workers restored different checkpoints (this worker: global step {local_step}, "
            f"mean over workers: {mean_step:g}): the model directory must be one that every worker "
            f"can read and the chief writes, e.g. on a shared file system or a bucket (gs://...).")
        self.local_step = local_step
        self.mean_step = mean_step


def check_restored_consistently(strategy: tf.distribute.Strategy, global_step: tf.Variable) -> None:
    """Fails unless every worker restored the same step (multi-worker only).

    A worker that cannot see the chief's checkpoints (a model directory that is
    not on storage shared by all workers) would start from scratch while the
    others resume; the workers would then train different models.

    Args:
      strategy: The run's strategy; a no-op unless it spans several workers.
      global_step: This worker's step counter, just restored.

    Raises:
      InconsistentRestoreError: Naming the steps restored, when they differ.
    """
    if not is_multi_worker(strategy):
        return
    step = tf.cast(tf.convert_to_tensor(global_step), tf.float64)
    replicas = strategy.num_replicas_in_sync
    # ReduceOp has no MIN/MAX: equal steps iff the variance over replicas is 0.
    sums = strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.run(lambda: tf.stack([step, tf.square(step)])), axis=None).numpy()
    mean = sums[0] / replicas
    if abs(sums[1] / replicas - mean * mean) > 1e-3:
        raise InconsistentRestoreError(int(step.numpy()), float(mean))


def weights_fingerprint(variables: Iterable[tf.Variable]) -> str:
    """A SHA-256 (16 hex digits) of the variables' values, to compare workers' models in logs."""
    digest = hashlib.sha256()
    for variable in variables:
        digest.update(tf.convert_to_tensor(variable).numpy().tobytes())
    return digest.hexdigest()[:16]
