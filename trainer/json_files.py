"""JSON files the project writes and reads: run metrics, evaluation reports, operating points.

Writes are atomic (a temporary file renamed into place), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from trainer.atomic_files import atomic_write


def to_jsonable(value: Any) -> Any:
    """`value` with NumPy arrays and scalars as Python values and non-finite floats as None.

    Dicts, lists and tuples are converted element by element (tuples become
    lists, NumPy integer keys become ints); anything else is returned as is.
    """
    if isinstance(value, dict):
        return {_jsonable_key(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _jsonable_key(key: Any) -> Any:
    return int(key) if isinstance(key, np.integer) else key


def write_json_atomically(path: str, payload: Any) -> str:
    """Writes `payload` as indented JSON to `path` through a temporary file and a rename.

    Creates the directory when it is missing. NumPy arrays and scalars are
    written as lists and numbers, NaN and infinities as `null` (the file is
    strict JSON).

    Args:
      path: The file to write.
      payload: A JSON-serialisable value (NumPy values allowed).

    Returns:
      `path`.

    Raises:
      TypeError: when `payload` holds a value JSON cannot represent.
    """
    with atomic_write(path) as stream:
        json.dump(to_jsonable(payload), stream, indent=2, allow_nan=False)
    return path


def read_json(path: str) -> Any:
    """The value stored in the JSON file `path`.

    Raises:
      OSError: when the file cannot be read.
      ValueError: when it is not valid JSON (`json.JSONDecodeError`).
    """
    with open(path) as stream:
        return json.load(stream)
