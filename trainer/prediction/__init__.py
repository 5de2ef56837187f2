"""Batch prediction: an exported model over a file of new rows, one result row per input row.

Modules, one job each: `inputs` (`open_input`: which reader a model and an input spec need),
`table_input` (CSV rows of a model trained on a table, parsed as training parses cells),
`array_inputs` (NPZ and TFRecord rows of other models), `batches` (the readers' interface),
`outputs` (result columns, CSV/NPZ written atomically), `runner` (`predict_file`: the streamed
loop with its progress line).
"""

from .outputs import output_columns
from .runner import PredictionSummary, predict_file

__all__ = ["PredictionSummary", "output_columns", "predict_file"]
