"""Opens a prediction input (`csv:`, `npz:` or `tfrecord:`) as the exported model can read it.

A model trained on a table (its export metadata has a `schema`) reads `csv:PATH` only
(`trainer.prediction.table_input`); other models read `npz:PATH` or `tfrecord:GLOB`
(`trainer.prediction.array_inputs`). Every check that can be made before reading the rows (the
input kind, absent feature or `keep_columns` columns, the array shape) is made when the input is
opened, before anything is written.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from trainer.data.errors import InputDataError
from trainer.data.schema import TabularSchema
from trainer.data.sources import parse_spec

from .array_inputs import NpzInput, TfrecordInput
from .batches import PredictionInput
from .table_input import CsvInput

INPUT_FORMS = ("csv:PATH", "npz:PATH", "tfrecord:GLOB")


def open_input(input: str,  # the --input flag
               metadata: Mapping[str, Any], *, keep_columns: Sequence[str] = (),
               batch_size: int = 1024, feature_key: str = "features",
               channels_first: Optional[bool] = None, refuse_missing: bool = False) -> PredictionInput:
    """Opens `input` for the exported model described by `metadata` (its `metadata.json`).

    Args:
      input: `csv:PATH`, `npz:PATH` or `tfrecord:GLOB`.
      metadata: The export's metadata (`schema` for a model trained on a table, `input_shape`).
      keep_columns: Columns (CSV), arrays (NPZ) or record keys (TFRecord) passed through.
      batch_size: Rows per batch.
      feature_key: TFRecord: the float feature key the model was trained on.
      channels_first: NPZ: `x` is (N, C, H, W) (as the training was told).
      refuse_missing: CSV: refuse missing feature cells.

    Raises:
      InputDataError: (argument `input`) a spec that is not one of `INPUT_FORMS`, a kind the
        model cannot read (a table model needs `csv:`; other models `npz:` or `tfrecord:`), or
        see the readers.
    """
    spec = input
    parsed = parse_spec(spec, argument="input")
    if parsed.path is None:
        raise InputDataError(f"input={spec!r} is not a file of rows; valid forms: {', '.join(INPUT_FORMS)}",
                             argument="input", value=spec)
    schema_json = metadata.get("schema")
    if schema_json is not None:
        schema = TabularSchema.from_json(schema_json)
        if parsed.kind != "csv":
            raise InputDataError(
                f"input={spec!r}: the model was trained on a table; give its rows as csv:PATH (a "
                f"header row with the feature columns {schema.feature_names})", argument="input",
                value=spec)
        return CsvInput(spec, parsed.path, schema, keep_columns=keep_columns, batch_size=batch_size,
                        refuse_missing=refuse_missing)
    input_shape = tuple(int(d) for d in metadata["input_shape"])
    if parsed.kind == "csv":
        raise InputDataError(
            f"input={spec!r}: the model was not trained on a table (it takes feature arrays of shape "
            f"{input_shape}); give npz:PATH (array 'x') or tfrecord:GLOB", argument="input", value=spec)
    if parsed.kind == "npz":
        return NpzInput(spec, parsed.path, input_shape, keep_columns=keep_columns, batch_size=batch_size,
                        channels_first=channels_first)
    return TfrecordInput(spec, parsed.path, input_shape, feature_key=feature_key,
                         keep_columns=keep_columns, batch_size=batch_size)
