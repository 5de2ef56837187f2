"""The batch-predict command (`python -m trainer.predict`): an exported model over a file of new rows.

Reads `--input` in batches, feeds the export's `serving_default` signature (raw named columns for a
model trained on a table) and writes one result row per input row to `--output` (atomically).
"""

from __future__ import annotations

import dataclasses
import os
from types import ModuleType
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf
from absl import flags, logging

from trainer.cli import app
from trainer.cli.errors import UsageError
from trainer.cli.flag_groups import prediction as prediction_flags
from trainer.json_files import read_json
from trainer.prediction import PredictionSummary, predict_file

FLAGS = flags.FLAGS
PREDICT_BATCH_SIZE = 256  # rows per model call when --batch_size is not given
# The flag groups `--help` shows for this command.
FLAG_GROUPS: Tuple[ModuleType, ...] = (prediction_flags,)
USAGE = """Predict with an exported model on new rows: one output row per input row, in input order.

USAGE: python -m trainer.predict --model_dir=runs/x --input=csv:new.csv --output=pred.csv [--keep_columns=id]

The model is read from --export_dir (default <model_dir>/export); --batch_size (default 256) is the rows
per model call; TFRecord inputs are read with the training's --feature_key unless it is given.

Output columns: the --keep_columns (verbatim), class_name, class_id (the decided class: the
model's operating point when it has one, else the most probable class), probability_<class> for
every class (calibrated when the training calibrated them), and, when the model has an operating
point, score_<class> for every class: the scores the rule compared. The decided class has the
largest score (the logits plus the rule's per-class offsets, or minus the expected cost of each
decision with a cost matrix), except under the target-recall threshold rule: there the target
class's score is logit(p) - logit(threshold) of its probability p, and that class is decided when
it is >= 0 (else the other class with the largest score). A progress line (rows, rows/s) goes to
the log every few seconds; the last line says how many rows of each class were written.

Exit status: 0 done; 2 bad flags or input ("error: ..."), and then no output is written.
"""


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """What `python -m trainer.predict` was asked to do.

    Attributes:
      export_dir: The exported model.
      input: The rows (`csv:PATH`, `npz:PATH`, `tfrecord:GLOB`).
      output: The result file (`.csv` or `.npz`).
      keep_columns: Input columns copied to the output.
      batch_size: Rows per model call.
      feature_key: TFRecord inputs: the float feature key (`--feature_key`, else the training's).
      channels_first: NPZ inputs: as the training was told (`metrics.json`).
      refuse_missing: CSV inputs: refuse missing cells (the training used `--missing=error`).
    """

    export_dir: str
    input: str
    output: str
    keep_columns: Tuple[str, ...]
    batch_size: int
    feature_key: str
    channels_first: Optional[bool]
    refuse_missing: bool


def _trained_flags(model_dir: str) -> Dict[str, Any]:
    path = os.path.join(model_dir, "metrics.json")
    return read_json(path).get("flags", {}) if os.path.isfile(path) else {}


def from_flags(flag_values: flags.FlagValues = FLAGS) -> PredictConfig:
    """The prediction config; TFRecord and NPZ reading settings default to the training run's.

    Raises:
      UsageError: `--input` or `--output` not given.
    """
    absent = [name for name in ("input", "output") if not flag_values[name].value]
    if absent:
        raise UsageError(f"{' and '.join('--' + n for n in absent)} must be given: --input=csv:PATH "
                         "(or npz:PATH, tfrecord:GLOB) and --output=PATH.csv (or .npz) (see --help).")
    trained = _trained_flags(flag_values.model_dir)
    feature_key = (flag_values.feature_key if flag_values["feature_key"].present
                   else trained.get("feature_key", flag_values.feature_key))
    return PredictConfig(
        export_dir=flag_values.export_dir or os.path.join(flag_values.model_dir, "export"),
        input=flag_values.input, output=flag_values.output,
        keep_columns=tuple(flag_values.keep_columns or ()),
        batch_size=flag_values.batch_size or PREDICT_BATCH_SIZE,
        feature_key=feature_key, channels_first=trained.get("channels_first"),
        refuse_missing=trained.get("missing") == "error")


def run(config: PredictConfig) -> PredictionSummary:
    """Predicts as `config` says; prints the final line; returns what was written."""
    tf.get_logger().setLevel("WARNING")
    summary = predict_file(config.export_dir, config.input, config.output,
                           keep_columns=config.keep_columns, batch_size=config.batch_size,
                           feature_key=config.feature_key, channels_first=config.channels_first,
                           refuse_missing=config.refuse_missing)
    logging.info("Output columns: %s", ", ".join(summary.columns))
    print(summary.describe())
    return summary


def main(argv: Any = None) -> PredictionSummary:
    """Reads the parsed flags into a config and runs (the command `trainer.cli.app` calls)."""
    del argv  # positional arguments are refused by the flag parser
    return run(from_flags())


COMMAND = app.Command(main=main, groups=FLAG_GROUPS, usage=USAGE)
