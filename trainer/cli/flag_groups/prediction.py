"""Flags of `python -m trainer.predict` only: the rows to predict on, where the results go.

Imported by `trainer.cli.predict`. `--model_dir`, `--export_dir`, `--batch_size`, `--feature_key` and
`--verbosity` are the training's own flags, declared key flags here so that `--help` lists them.
"""

from absl import flags

from trainer.cli.flag_groups import data, outputs, training  # noqa: F401  (define the key flags below)

TITLE = "Prediction"

flags.DEFINE_string(
    "input", None,
    "The rows to predict on. A model trained on a table: 'csv:PATH' (a header row; the feature "
    "columns are found by name, in any order; other columns are ignored, the label column may "
    "be absent). Other models: 'npz:PATH' (array x, like the training's) or 'tfrecord:GLOB' "
    "(records with the training's --feature_key).")
flags.DEFINE_string(
    "output", None,
    "The results, one row per input row in input order: 'PATH.csv' (streamed) or 'PATH.npz' "
    "(held in memory). Written to a temporary file and renamed when every row is done, so a "
    "failed run leaves no output.")
flags.DEFINE_list(
    "keep_columns", [],
    "Input columns copied verbatim to the output, first (e.g. an ID, to join the results back); "
    "npz: arrays [N] of the file; tfrecord: keys holding one value per record.")
for _name in ("model_dir", "export_dir", "batch_size", "feature_key", "verbosity"):
    flags.declare_key_flag(_name)
