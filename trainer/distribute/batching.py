"""How a global batch is split between replicas and workers: input sharding and the step's batch size.

Every worker reads the same seeded input and keeps its part, so the steps equal one process's.
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from trainer.distribute.cluster import is_multi_worker


def shard_by_data(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """Makes a multi-worker strategy split each global batch between workers.

    With `AutoShardPolicy.DATA`, every worker reads the whole (identically
    seeded) input and keeps its part of each global batch, so the workers
    together take exactly the steps one process with the same global batch
    would. TensorFlow's default, `AUTO`, shards by file when it can, so the
    batches depend on how files fall to workers. An explicit policy set on the
    dataset by the caller is kept.

    Args:
      dataset: The batched input (global batch size).
      strategy: The run's strategy; other strategies leave `dataset` as is.

    Returns:
      The dataset, with the DATA policy when it was AUTO under several workers.
    """
    if not is_multi_worker(strategy):
        return dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # options() of a traced dataset.
        policy = dataset.options().experimental_distribute.auto_shard_policy
    if policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def global_batch_size(labels: tf.Tensor, strategy: tf.distribute.Strategy) -> tf.Tensor:
    """Examples in this step over all replicas; call in a replica context.

    With several replicas, the last (partial) batch of an epoch splits
    unevenly, so `per-replica size x replicas` (what `compute_average_loss`
    assumes) would weight it wrongly; this sums the real sizes (one scalar
    all-reduce per step, none with one replica).

    Args:
      labels: This replica's labels; their first dimension is its batch size.
      strategy: The run's strategy.

    Returns:
      int32 scalar: the examples of this step on every replica together.
    """
    local = tf.shape(labels)[0]
    if strategy.num_replicas_in_sync == 1:
        return local
    total = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.cast(local, tf.float32))
    return tf.cast(tf.round(total), tf.int32)
