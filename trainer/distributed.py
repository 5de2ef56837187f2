"""What multi-worker training needs beyond the strategy: input sharding, worker directories, a shared restore.

Every worker computes the same steps; only the chief's files are kept. See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from typing import Optional

import tensorflow as tf

from trainer.preemption import is_multi_worker


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
    """
    local = tf.shape(labels)[0]
    if strategy.num_replicas_in_sync == 1:
        return local
    total = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.cast(local, tf.float32))
    return tf.cast(tf.round(total), tf.int32)


def worker_directory(model_dir: str, strategy: tf.distribute.Strategy) -> Optional[str]:
    """The private directory of a worker other than the chief, or None on the chief.

    Such a worker must take part in every checkpoint save (it is a collective
    operation) but its files are never read: every worker restores from the
    chief's checkpoints, in `<model_dir>/checkpoints`.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker(strategy):
        return None
    from trainer.strategies import is_chief
    if is_chief(strategy):
        return None
    return os.path.join(model_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def remove_worker_directory(model_dir: str, strategy: tf.distribute.Strategy) -> None:
    """Deletes this worker's private directory (and `workers/` once empty)."""
    directory = worker_directory(model_dir, strategy)
    if directory is None:
        return
    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(directory))
    except OSError:
        pass  # Another worker's directory is still there.


def check_restored_consistently(strategy: tf.distribute.Strategy, global_step: tf.Variable) -> None:
    """Fails unless every worker restored the same step (multi-worker only).

    A worker that cannot see the chief's checkpoints (a `model_dir` that is
    not on storage shared by all workers) would start from scratch while the
    others resume; the workers would then train different models.

    Raises:
      ValueError: Naming the steps restored, when they differ.
    """
    if not is_multi_worker(strategy):
        return
    step = tf.cast(tf.convert_to_tensor(global_step), tf.float64)
    replicas = strategy.num_replicas_in_sync
    # ReduceOp has no MIN/MAX: equal steps iff the variance over replicas is 0.
    sums = strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.run(lambda: tf.stack([step, tf.square(step)])), axis=None).numpy()
    mean = sums[0] / replicas
    local = int(step.numpy())
    if abs(sums[1] / replicas - mean * mean) > 1e-3:
        raise ValueError(
            f"The workers restored different checkpoints (this worker: global step {local}, "
            f"mean over workers: {mean:g}): "
            f"--model_dir must be a directory that every worker can read and the chief writes, "
            f"e.g. on a shared file system or a bucket (gs://...).")


def validate_tf_config(environ=None) -> None:
    """Checks `TF_CONFIG` before MultiWorkerMirroredStrategy reads it.

    An absent `TF_CONFIG` is allowed (one worker, e.g. for a dry run).

    Raises:
      ValueError: Naming `TF_CONFIG` and what is wrong with it.
    """
    import json
    text = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not text:
        return
    example = ('e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
               '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {example}.") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError(f"TF_CONFIG has no \"cluster\" mapping of job names to host:port lists; {example}.")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no \"task\" with \"type\" and \"index\"; {example}.")
    hosts = config["cluster"].get(task["type"])
    if not isinstance(hosts, list) or not hosts:
        raise ValueError(f"TF_CONFIG: task type {task['type']!r} is not a job of the cluster "
                         f"{sorted(config['cluster'])}.")
    index = task["index"]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(hosts):
        raise ValueError(f"TF_CONFIG: task index {index!r} is out of range: job {task['type']!r} "
                         f"has {len(hosts)} task(s).")
    unknown = sorted(set(config["cluster"]) - {"chief", "worker", "evaluator"})
    if unknown:
        raise ValueError(f"TF_CONFIG: jobs {unknown} are not used by --strategy=multi_worker "
                         f"(it takes 'chief' and 'worker').")


def check_model_dir_writable(model_dir: str) -> None:
    """Fails early, before any training, when `model_dir` cannot be written.

    Raises:
      OSError: Naming the directory and the reason.
    """
    if "://" in model_dir:
        return  # A bucket: TensorFlow's file systems report their own errors.
    probe = os.path.join(model_dir, f".write_test_{os.getpid()}")
    try:
        os.makedirs(model_dir, exist_ok=True)
        with open(probe, "w") as stream:
            stream.write("ok")
        os.remove(probe)
    except OSError as error:
        raise OSError(f"--model_dir={model_dir} cannot be written: "
                      f"{error.strerror or error}.") from None


def weights_fingerprint(variables) -> str:
    """A SHA-256 of the variables' values, to compare workers' models in logs."""
    digest = hashlib.sha256()
    for variable in variables:
        digest.update(tf.convert_to_tensor(variable).numpy().tobytes())
    return digest.hexdigest()[:16]
