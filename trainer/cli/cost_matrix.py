"""The `--cost_matrix` file: K x K costs (rows the true class), an optional header of class names.

Read and checked once, before training; every problem names the flag, the path and what is wrong.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Any, Optional, Sequence, Tuple

from trainer.cli.errors import UsageError
from trainer.data.labels import class_index


@dataclasses.dataclass(frozen=True)
class CostMatrixFile:
    """The `--cost_matrix` CSV as read: its path, its K x K costs and its header's class names.

    Attributes:
      path: The file (for messages).
      values: `K x K` costs, rows the true class, columns the decided class.
      class_names: The header's class names in index order, or None without a header.
    """

    path: str
    values: Tuple[Tuple[float, ...], ...]
    class_names: Optional[Tuple[str, ...]] = None

    @property
    def num_classes(self) -> int:
        return len(self.values)


def _cost_matrix_error(path: str, problem: str) -> UsageError:
    return UsageError(f"--cost_matrix={path}: {problem}.")


def read_cost_matrix(path: str) -> CostMatrixFile:
    """Reads and checks a `--cost_matrix` CSV (the format the flag's help gives).

    K rows of K finite numbers (row i, column j: the cost of deciding j when
    the class is i), K >= 2, optionally after a first row of K class names:
    a first row is that header when a cell of it is not a number, or when the
    file has one row more than that row has cells (class names that are
    numbers, e.g. `0,1,2`). Blank lines are skipped; cells are stripped of
    spaces.

    Raises:
      UsageError: naming `--cost_matrix`, the path and the problem.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [[cell.strip() for cell in row] for row in csv.reader(handle)]
    except OSError as error:
        raise _cost_matrix_error(path, f"cannot be read ({error.strerror or error})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise _cost_matrix_error(path, f"is not a UTF-8 CSV file ({error})") from None
    rows = [row for row in rows if any(row)]
    if not rows:
        raise _cost_matrix_error(path, "is empty: give K rows of K costs (rows: true class)")

    def number(cell: str) -> Optional[float]:
        try:
            return float(cell)
        except ValueError:
            return None

    names: Optional[Tuple[str, ...]] = None
    # Square costs: one more row than the first row has cells means a header, numeric names too.
    if any(number(cell) is None for cell in rows[0]) or len(rows) == len(rows[0]) + 1:
        names = tuple(rows[0])
        rows = rows[1:]
        if any(not name for name in names):
            raise _cost_matrix_error(path, f"its header {list(names)} has an empty class name")
    size = len(rows)
    if size < 2:
        raise _cost_matrix_error(path, f"has {size} row(s) of costs: give K >= 2 rows of K costs")
    if names is not None and len(names) != size:
        raise _cost_matrix_error(path, f"its header names {len(names)} classes but it has {size} rows "
                                       f"of costs")
    values = []
    for line, row in enumerate(rows, start=2 if names is not None else 1):
        if len(row) != size:
            raise _cost_matrix_error(path, f"row {line} has {len(row)} values, not {size}: the matrix "
                                           f"must be square (K rows of K costs)")
        parsed = [number(cell) for cell in row]
        bad = [cell for cell, value in zip(row, parsed) if value is None or not math.isfinite(value)]
        if bad:
            raise _cost_matrix_error(path, f"row {line} has {bad[0]!r}, not a finite number")
        values.append(tuple(parsed))
    return CostMatrixFile(path=path, values=tuple(values), class_names=names)


def check_cost_matrix_classes(recall: Any, class_names: Sequence[str]) -> None:
    """Checks `--cost_matrix` against the data: one row and column per class, the header's names.

    Raises:
      UsageError: naming `--cost_matrix`, the path and the mismatch.
    """
    matrix = recall.cost_matrix
    if matrix is None:
        return
    names = [str(name) for name in class_names]
    if matrix.num_classes != len(names):
        raise _cost_matrix_error(matrix.path, f"is {matrix.num_classes} x {matrix.num_classes} but the "
                                              f"data has {len(names)} classes ({', '.join(names)}): "
                                              f"give one row and column per class")
    # Each header cell names its column's class, by name or by index (`labels.class_index`).
    if matrix.class_names is not None and [class_index(cell, names) for cell in matrix.class_names] != list(
            range(len(names))):
        raise _cost_matrix_error(matrix.path, f"its header names {list(matrix.class_names)}, not the "
                                              f"data's classes in index order {names}")
