"""What every prediction input gives: batches of the serving signature's inputs and the kept columns.

`PredictionInput` is the interface of `trainer.prediction.table_input` (CSV rows of a model trained
on a table) and `trainer.prediction.array_inputs` (NPZ and TFRecord rows of other models).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np

from trainer.data.errors import InputDataError


@dataclasses.dataclass
class InputBatch:
    """One batch of rows.

    Attributes:
      inputs: The serving signature's keyword arguments (named columns, or `features`).
      kept: Per row, the values of the kept columns, as text.
      rows: Rows in the batch.
    """

    inputs: Dict[str, Any]
    kept: List[List[str]]
    rows: int


class PredictionInput:
    """Rows to predict on, in file order (see the module doc).

    Attributes:
      spec: The input as given (`csv:new.csv`).
      paths: The files read.
      kept_names: The kept columns (arrays, record keys), in the order asked.
    """

    spec: str
    paths: List[str]
    kept_names: List[str]

    def batches(self) -> Iterator[InputBatch]:
        """The batches, in row order.

        Raises:
          InputDataError: After the last batch, when cells did not fit (then no batch past
            the first offending one was yielded); at a row that cannot be read.
        """
        raise NotImplementedError


def plural(items: Sequence[Any], one: str, many: str) -> str:
    """`one` for a single item, else `many`."""
    return one if len(items) == 1 else many


def listed(items: Sequence[Any]) -> str:
    """`'a', 'b'`."""
    return ", ".join(repr(item) for item in items)


def check_keep_columns(spec: str, keep: Sequence[str], present: Sequence[str], what: str) -> None:
    """Raises (argument `keep_columns`) listing every kept name not in `present`."""
    absent = [k for k in keep if k not in present]
    if absent:
        raise InputDataError(
            f"keep_columns: {listed(absent)} {plural(absent, 'is not a', 'are not')} "
            f"{what}{plural(absent, '', 's')} of input {spec!r}; it has {list(present)}",
            argument="keep_columns", value=",".join(absent))


def as_text(values: np.ndarray) -> np.ndarray:
    """bytes/str/number array -> str array."""
    if values.dtype.kind in "SO":
        return np.char.decode(values.astype(bytes), "utf-8", "replace")
    return values.astype(str)
