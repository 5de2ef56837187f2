"""Builds a `tf.distribute` strategy from its name.

Names: `default`, `one_device`, `mirrored`, `multi_worker` (configured by
`TF_CONFIG`) and `tpu` (needs a TPU address or name).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

STRATEGY_NAMES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def split_cpu_into_logical_devices(num_devices: int) -> None:
    """Splits the first CPU into `num_devices` logical devices.

    Lets `mirrored` run on a machine without accelerators. Must be called
    before TensorFlow initialises its devices.

    Raises:
      ValueError: when `num_devices` < 1 or TensorFlow is already initialised
        with a different split.
    """
    if num_devices < 1:
        raise ValueError(f"--num_cpu_devices must be at least 1, got {num_devices}.")
    if num_devices == 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != num_devices:
            raise ValueError(
                f"--num_cpu_devices={num_devices} cannot be applied: TensorFlow is already "
                f"initialised with {existing} logical CPU device(s).") from error


def _devices_for_mirrored() -> list:
    accelerators = tf.config.list_logical_devices("GPU")
    if accelerators:
        return [device.name for device in accelerators]
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def new_mirrored_strategy(devices: Optional[list] = None) -> tf.distribute.MirroredStrategy:
    """A `MirroredStrategy` whose collective keys no other strategy in the process uses.

    TensorFlow gives every MirroredStrategy over the same devices the same
    collective group and instance keys (`MirroredStrategy._collective_key_base`),
    so a second strategy in one process whose all-reduces have other shapes
    aborts with "Shape mismatch in the collective instance". Moving the base
    before and after keeps this strategy's keys apart from the others'
    (notebooks, benchmarks and tests build several).

    Args:
      devices: Device names; default the GPUs, or the logical CPUs without GPUs.
    """
    cls = tf.distribute.MirroredStrategy
    movable = hasattr(cls, "_collective_key_base")
    if movable:
        cls._collective_key_base += 1000
    strategy = cls(devices=devices or _devices_for_mirrored())
    if movable:
        cls._collective_key_base += 1000
    return strategy


def make_strategy(name: str, *, tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """Returns the strategy called `name`.

    Args:
      name: One of `STRATEGY_NAMES`.
      tpu: TPU name or `grpc://` address for `tpu` ("" or "local" for a TPU VM).

    Raises:
      ValueError: naming `--strategy` when the name is unknown.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        return new_mirrored_strategy()
    if name == "multi_worker":
        from trainer.distributed import validate_tf_config
        validate_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu in (None, "local") else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"--strategy={name!r} is not known; choose one of {', '.join(STRATEGY_NAMES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes summaries, metrics and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return task_type in (None, "worker") and task_id == 0 and "chief" not in cluster
