"""Per-example sample weights: the check every source runs (numbers, one per row, finite, >= 0).

An NPZ file's weights are checked whole (`check_array`); a streamed source's batch by batch
(`WeightScan`), so the error names the first bad row and how many are bad in the whole file.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from .errors import InputDataError, describe_location

# What sample weights must be, for the messages.
REQUIREMENT = "sample weights must be finite numbers >= 0"
# `weight_key` that turns an NPZ file's array `w` off.
NO_WEIGHTS = "none"
# The array an NPZ file's weights are read from when `weight_key` is not given.
NPZ_DEFAULT_ARRAY = "w"


def _bad_mask(weights: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(weights) | (weights < 0)


class WeightScan:
    """Checks sample weights batch by batch; `finish` raises naming the first bad one and the count.

    Args:
      argument: The argument that named the weights (`weight_key`, `weight_column`).
      value: Its value.
      source: The file (or glob) for the message.
      where: Maps a 1-based row of the stream to `describe_location` keyword arguments
        (path, row, line, column).
    """

    def __init__(self, argument: str, value: Any, source: str,
                 where: Callable[[int], Dict[str, Any]]) -> None:
        self.argument = argument
        self.value = value
        self.source = source
        self.where = where
        self.rows = 0
        self.bad = 0
        self.total = 0.0
        self.first: Optional[str] = None

    def add(self, weights: np.ndarray, first_row: int) -> None:
        """Adds a batch of float weights `[B]` whose first row is `first_row` (1-based)."""
        weights = np.asarray(weights, np.float64).reshape(-1)
        bad = _bad_mask(weights)
        count = int(bad.sum())
        if count and self.first is None:
            r = int(np.argmax(bad))
            self.first = describe_location(**self.where(first_row + r), value=float(weights[r]))
        self.bad += count
        self.rows += len(weights)
        self.total += float(weights[~bad].sum())

    def finish(self) -> None:
        """Raises when any weight was bad, or every weight was 0.

        Raises:
          InputDataError: Naming the argument, the first bad weight's location and value, and how
            many of the rows are bad.
        """
        if self.bad:
            raise InputDataError(
                f"{self.argument}={self.value!r}: {self.bad:,} of {self.rows:,} sample weights are "
                f"negative or not finite ({REQUIREMENT}); the first: {self.first}",
                argument=self.argument, value=self.value)
        if self.rows and self.total == 0:
            raise InputDataError(
                f"{self.argument}={self.value!r}: every one of the {self.rows:,} sample weights of "
                f"{self.source!r} is 0, so nothing would train", argument=self.argument, value=self.value)


def check_array(weights: Any, *, num_rows: int, argument: str, value: Any, source: str,
                name: str) -> np.ndarray:
    """Checks an in-memory weight array for `num_rows` rows; returns it as float32 `[N]`.

    Args:
      weights: The array (`[N]` or `[N, 1]`, numbers).
      num_rows: The rows of the features it weighs.
      argument: The argument that named it, for the message.
      value: Its value.
      source: The file.
      name: The array's name in the file.

    Raises:
      InputDataError: Naming `argument`: not numbers, the wrong shape or length, or bad values
        (the first row, its 0-based index, and the count).
    """
    w = np.asarray(weights)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1:
        raise InputDataError(f"{argument}={value!r}: array {name!r} of file {source!r} must have shape "
                             f"[N] (one sample weight per row), got {w.shape}", argument=argument,
                             value=value)
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_) or np.iscomplexobj(w):
        raise InputDataError(f"{argument}={value!r}: array {name!r} of file {source!r} must hold numbers "
                             f"(sample weights), got dtype {w.dtype}", argument=argument, value=value)
    if len(w) != num_rows:
        raise InputDataError(f"{argument}={value!r}: file {source!r} has {len(w):,} sample weights in "
                             f"{name!r} for {num_rows:,} rows of 'x' (one weight per row)",
                             argument=argument, value=value)
    w = w.astype(np.float64)
    scan = WeightScan(argument, value, source,
                      lambda row: {"path": source, "row": row, "column": f"{name}[{row - 1}]"})
    scan.add(w, 1)
    scan.finish()
    return w.astype(np.float32)
