"""Builds a `tf.distribute` strategy from its name, and splits a CPU into logical devices.

Names: `default`, `one_device`, `mirrored`, `multi_worker` (configured by TF_CONFIG), `tpu`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from trainer.checks import ArgumentError, check_choice, check_positive_integer
from trainer.distribute.cluster import check_tf_config

STRATEGY_NAMES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def split_cpu_into_logical_devices(num_devices: int) -> None:
    """Splits the first CPU into `num_devices` logical devices.

    Lets `mirrored` run on a machine without accelerators. Must be called
    before TensorFlow initialises its devices; 1 leaves the CPU as it is.

    Args:
      num_devices: How many logical devices, >= 1.

    Raises:
      ArgumentError: Naming `num_devices` when it is not a positive integer, or when TensorFlow is
        already initialised with a different split.
    """
    num_devices = check_positive_integer(num_devices, "num_devices")
    if num_devices == 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != num_devices:
            raise ArgumentError(
                "num_devices", num_devices,
                f"cannot be applied: TensorFlow is already initialised with {existing} logical CPU "
                f"device(s)") from error


def _devices_for_mirrored() -> list:
    accelerators = tf.config.list_logical_devices("GPU")
    if accelerators:
        return [device.name for device in accelerators]
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def new_mirrored_strategy(devices: Optional[Sequence[str]] = None) -> tf.distribute.MirroredStrategy:
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
    strategy = cls(devices=list(devices) if devices else _devices_for_mirrored())
    if movable:
        cls._collective_key_base += 1000
    return strategy


def make_strategy(name: str, *, tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """Returns the strategy called `name`.

    Args:
      name: One of `STRATEGY_NAMES`.
      tpu: TPU name or `grpc://` address for `tpu` ("" or "local" for a TPU VM).

    Raises:
      ArgumentError: Naming `name` when it is not one of `STRATEGY_NAMES`.
      TFConfigError: For `multi_worker`, naming the field of a malformed TF_CONFIG.
    """
    check_choice(name, "name", STRATEGY_NAMES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        return new_mirrored_strategy()
    if name == "multi_worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if tpu in (None, "local") else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
