"""Test set-up: split the CPU into two logical devices before TensorFlow starts.

Distribution tests run `MirroredStrategy` over these two devices; everything
else sees the first one, as on a normal machine.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2


def _split_cpu() -> None:
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)
    except RuntimeError:
        pass  # TensorFlow already initialised: keep what it has.


_split_cpu()


@pytest.fixture(scope="module")
def mirrored():
    """A MirroredStrategy over the two logical CPUs, with collective keys of its own."""
    from trainer.distribute.strategies import new_mirrored_strategy

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip(f"needs two logical CPU devices, have {devices}")
    return new_mirrored_strategy(devices[:2])


@pytest.fixture
def parse():
    """Parses a `trainer.main` command line into a RunConfig (`--verbosity` untouched); the flags
    are reset afterwards."""
    from absl import flags

    from trainer.cli import config as config_lib

    def parse_flags(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["trainer.main", *args])
        return config_lib.from_flags()

    yield parse_flags
    flags.FLAGS.unparse_flags()
