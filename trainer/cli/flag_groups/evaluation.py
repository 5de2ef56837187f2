"""Flags of `python -m trainer.evaluate` only: where its report goes.

Imported by `trainer.cli.evaluate`; the data and output flags are shared with training.
"""

from absl import flags

TITLE = "Evaluation report"

flags.DEFINE_string("report_dir", None, "Where evaluation.json/.md go (default: --model_dir).")
