"""Flags of distribution: the tf.distribute strategy and the devices it runs on.

Each flag is a field of `trainer.cli.config.DistributionConfig` (docs/DISTRIBUTED.md).
"""

from absl import flags

from trainer.distribute import STRATEGY_NAMES

TITLE = "Distribution"

flags.DEFINE_enum("strategy", "default", list(STRATEGY_NAMES), "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_devices", 1,
                     "Split the CPU into this many logical devices (lets 'mirrored' run without GPUs).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
