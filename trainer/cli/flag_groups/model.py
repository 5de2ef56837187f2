"""Flags of the model: which architecture the run builds.

Each flag is a field of `trainer.cli.config.ModelConfig`.
"""

from absl import flags

from trainer.models import MODEL_NAMES

TITLE = "Model"

flags.DEFINE_enum("model", None, list(MODEL_NAMES),
                  "Model; default 'cnn' for image inputs and 'mlp' for feature vectors.")
