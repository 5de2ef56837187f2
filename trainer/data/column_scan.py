"""The column statistics of one streaming pass over a table, and the schema they decide.

`ColumnScan.add` takes each batch of cells (already classified as missing / numeric in
TensorFlow); `ColumnScan.schema` decides each column's kind, vocabulary and moments, and
raises one error that lists every offending column. Memory is bounded: a column's category
counts are dropped once it has more distinct training values than the vocabulary allows.
"""

from __future__ import annotations

import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataWarning, InputDataError, describe_location
from .schema import CATEGORICAL, MISSING_TOKEN, NUMERIC, ColumnSchema, TabularSchema

# A column name that reads as an identifier (`id`, `customer_id`, `ID`, `row.id`, `uuid`).
_ID_NAME = re.compile(r"(^|[_.\s-])(id|uuid|guid|key|index)$|^(id|uuid)([_.\s-]|$)", re.IGNORECASE)


# A numeric column whose farthest training value lies more than this many standard deviations
# from the mean is heavy-tailed ...
HEAVY_TAIL_Z = 10.0
# ... and is read through sign(x) log(1 + |x|) when that at least halves the farthest distance.
HEAVY_TAIL_GAIN = 2.0


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): compresses heavy tails, keeps the sign and the order."""
    return np.sign(values) * np.log1p(np.abs(values))


class MaskedMoments:
    """Per-column count, mean, population variance, min and max of the cells a mask keeps (Chan merge)."""

    def __init__(self, columns: int) -> None:
        self.count = np.zeros(columns, np.int64)
        self.mean = np.zeros(columns, np.float64)
        self.m2 = np.zeros(columns, np.float64)
        self.low = np.full(columns, np.inf)
        self.high = np.full(columns, -np.inf)

    def add(self, values: np.ndarray, mask: np.ndarray) -> None:
        """Adds the cells of `values` `[B, F]` where `mask`."""
        nb = mask.sum(axis=0)
        if not nb.any():
            return
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean_b = np.where(nb > 0, (values * mask).sum(axis=0) / np.maximum(nb, 1), 0.0)
            m2_b = (((values - mean_b) * mask) ** 2).sum(axis=0)
            total = self.count + nb
            delta = mean_b - self.mean
            share = np.where(total > 0, nb / np.maximum(total, 1), 0.0)
            self.m2 = self.m2 + m2_b + delta ** 2 * self.count * share
            self.mean = self.mean + delta * share
        self.count = total
        self.low = np.minimum(self.low, np.where(mask, values, np.inf).min(axis=0))
        self.high = np.maximum(self.high, np.where(mask, values, -np.inf).max(axis=0))

    def mean_of(self, c: int) -> float:
        """Column c's mean (0 when it has no cells)."""
        return float(self.mean[c]) if self.count[c] else 0.0

    def variance_of(self, c: int) -> float:
        """Column c's population variance (1 when it has no cells)."""
        return float(self.m2[c] / self.count[c]) if self.count[c] else 1.0

    def farthest_z(self, c: int) -> float:
        """How many standard deviations column c's farthest value lies from its mean (0 if constant)."""
        std = np.sqrt(self.variance_of(c))
        if not self.count[c] or std == 0:
            return 0.0
        return float(max(self.high[c] - self.mean[c], self.mean[c] - self.low[c]) / std)


def heavy_tailed(raw: MaskedMoments, logged: MaskedMoments, c: int) -> bool:
    """Whether column c is read through `signed_log1p` (see `HEAVY_TAIL_Z`, `HEAVY_TAIL_GAIN`)."""
    z = raw.farthest_z(c)
    return z > HEAVY_TAIL_Z and logged.farthest_z(c) * HEAVY_TAIL_GAIN <= z


class ColumnScan:
    """Accumulates per-column facts over batches of cells, in stream order.

    Args:
      path: The file (for messages).
      names: The feature columns, in order.
      max_vocabulary: Most distinct training values a categorical column may have.
    """

    def __init__(self, path: str, names: Sequence[str], max_vocabulary: int) -> None:
        f = len(names)
        self.path = path
        self.names = list(names)
        self.max_vocabulary = int(max_vocabulary)
        self.rows = 0
        self.train_rows = 0
        self.missing_all = np.zeros(f, np.int64)
        self.missing_train = np.zeros(f, np.int64)
        self.first_missing: List[Optional[int]] = [None] * f
        self.nonnumeric = np.zeros(f, np.int64)
        self.numeric_cells = np.zeros(f, np.int64)
        self.infinite = np.zeros(f, np.int64)
        self.first_infinite: List[Optional[Tuple[int, bytes]]] = [None] * f
        self.first_nonnumeric: List[Optional[Tuple[int, bytes]]] = [None] * f
        self.raw = MaskedMoments(f)
        self.logged = MaskedMoments(f)
        self.categories: List[Optional[Dict[bytes, int]]] = [{} for _ in range(f)]

    def add(self, cells: np.ndarray, missing: np.ndarray, numeric: np.ndarray, values: np.ndarray,
            infinite: np.ndarray, train: np.ndarray, first_row: int) -> None:
        """Adds a batch.

        Args:
          cells: bytes `[B, F]`, stripped.
          missing: bool `[B, F]`: the cell spells a missing value.
          numeric: bool `[B, F]`: the cell is a finite number.
          values: float64 `[B, F]`: the number where `numeric`.
          infinite: bool `[B, F]`: the cell spells an infinite number ('inf', '-Infinity', ...).
          train: bool `[B]`: the row is on the training side of the split.
          first_row: 1-based row number of the batch's first row.
        """
        self.rows += len(cells)
        self.train_rows += int(train.sum())
        self.missing_all += missing.sum(axis=0)
        self.missing_train += (missing & train[:, None]).sum(axis=0)
        odd = ~numeric & ~missing & ~infinite
        self.nonnumeric += odd.sum(axis=0)
        self.numeric_cells += (numeric & ~missing).sum(axis=0)
        self.infinite += infinite.sum(axis=0)
        for c in np.flatnonzero(infinite.any(axis=0)):
            if self.first_infinite[c] is None:
                r = int(np.argmax(infinite[:, c]))
                self.first_infinite[c] = (first_row + r, cells[r, c])
        for c in np.flatnonzero(missing.any(axis=0)):
            if self.first_missing[c] is None:
                self.first_missing[c] = first_row + int(np.argmax(missing[:, c]))
        for c in np.flatnonzero(odd.any(axis=0)):
            if self.first_nonnumeric[c] is None:
                r = int(np.argmax(odd[:, c]))
                self.first_nonnumeric[c] = (first_row + r, cells[r, c])
        observed = numeric & ~missing & train[:, None]
        values = np.where(numeric, values, 0.0)
        self.raw.add(values, observed)
        self.logged.add(signed_log1p(values), observed)
        train_cells = cells[train]
        train_missing = missing[train]
        for c, counts in enumerate(self.categories):
            if counts is None or not len(train_cells):
                continue
            column = np.where(train_missing[:, c], MISSING_TOKEN.encode(), train_cells[:, c])
            uniq, n = np.unique(column, return_counts=True)
            for value, k in zip(uniq.tolist(), n.tolist()):
                counts[value] = counts.get(value, 0) + k
            if len(counts) > self.max_vocabulary:
                self.categories[c] = None

    def _where(self, row: int, c: int, value=None) -> str:
        return describe_location(self.path, row=row, line=row + 1, column=self.names[c], value=value)

    def schema(self, *, label_column: str, weight_column: Optional[str], header: Sequence[str],
               categorical_columns: Sequence[str], missing_values: Sequence[str],
               min_category_count: int, missing_policy: str) -> TabularSchema:
        """Decides the schema (see the module doc).

        Args:
          label_column: The label column.
          weight_column: The weight column or None.
          header: Every column of the file.
          categorical_columns: Columns read as categories even when every cell is a number.
          missing_values: The canonical missing spellings (for the schema).
          min_category_count: Training count a category needs to get its own input.
          missing_policy: 'impute' (default) or 'error' (any missing feature cell is an error).

        Raises:
          InputDataError: One message listing every column that cannot be used, with
            `argument` set when a flag decides it ('max_vocabulary', 'missing').
        """
        forced = set(categorical_columns)
        problems: List[str] = []
        argument = None
        columns = []
        for c, name in enumerate(self.names):
            if self.missing_all[c] == self.rows:
                problems.append(f"column {name!r} is missing in every row ({self.rows:,}): exclude it "
                                "(exclude_columns)")
                continue
            if missing_policy == "error" and self.missing_all[c]:
                problems.append(f"column {name!r} has {int(self.missing_all[c]):,} missing cells (first: "
                                f"{self._where(self.first_missing[c], c)}); missing='error' refuses them")
                argument = argument or "missing"
                continue
            categorical = name in forced or self.nonnumeric[c] > 0
            if not categorical and self.infinite[c]:
                row, value = self.first_infinite[c]
                problems.append(f"column {name!r} has {int(self.infinite[c]):,} infinite cells (first: "
                                f"{self._where(row, c, value)}): replace them, or list their spelling "
                                "in missing_values")
                continue
            if not categorical:
                moments = self.logged if heavy_tailed(self.raw, self.logged, c) else self.raw
                columns.append(ColumnSchema(
                    name=name, kind=NUMERIC, rows=self.train_rows, missing=int(self.missing_train[c]),
                    mean=moments.mean_of(c), variance=moments.variance_of(c),
                    transform="signed_log1p" if moments is self.logged else None))
                continue
            counts = self.categories[c]
            if counts is None:
                text = (f"column {name!r} has more than {self.max_vocabulary:,} distinct values in the "
                        "training rows")
                if self.nonnumeric[c] and name not in forced and self.numeric_cells[c] > self.nonnumeric[c]:
                    row, value = self.first_nonnumeric[c]
                    text += (f" and {int(self.nonnumeric[c]):,} cells that are not numbers (first: "
                             f"{self._where(row, c, value)}): a numeric column with bad cells (list "
                             "their spelling in missing_values) or an identifier (exclude it)")
                else:
                    text += ": an identifier or free text (exclude it), or raise max_vocabulary"
                problems.append(text)
                argument = argument or "max_vocabulary"
                continue
            if name not in forced:
                self._warn_mostly_numeric(c)
            kept = sorted(((v, k) for v, k in counts.items() if k >= min_category_count),
                          key=lambda item: (-item[1], item[0]))
            vocabulary = tuple(v.decode("utf-8", "replace") for v, _ in kept)
            columns.append(ColumnSchema(
                name=name, kind=CATEGORICAL, rows=self.train_rows, missing=int(self.missing_train[c]),
                vocabulary=vocabulary, other=int(sum(counts.values()) - sum(k for _, k in kept))))
        if problems:
            value = {"missing": missing_policy, "max_vocabulary": self.max_vocabulary}.get(argument)
            prefix = "" if argument is None else f"{argument}={value!r}: "
            raise InputDataError(f"{prefix}file {self.path!r}: {len(problems)} feature column"
                                 f"{'s' if len(problems) > 1 else ''} cannot be used:\n  - "
                                 + "\n  - ".join(problems), argument=argument, value=value)
        schema = TabularSchema(columns=tuple(columns), label_column=label_column,
                               weight_column=weight_column, missing_values=tuple(missing_values),
                               header=tuple(header))
        self._warn_identifiers(schema)
        return schema

    def _warn_mostly_numeric(self, c: int) -> None:
        """Warns when a column is read as categories because of a few cells that are not numbers."""
        numbers, others = int(self.numeric_cells[c]), int(self.nonnumeric[c])
        if numbers >= 20 and others <= 0.05 * (numbers + others):
            row, value = self.first_nonnumeric[c]
            warnings.warn(
                f"column {self.names[c]!r} is read as categorical: {numbers:,} of its cells are numbers "
                f"but {others:,} are not (first: {self._where(row, c, value)}); if those cells mean "
                "'no value', list their spelling in missing_values so the column stays numeric",
                DataWarning, stacklevel=4)

    def check_known(self, schema: TabularSchema) -> None:
        """Checks an eval file's cells against the training schema (numeric columns hold numbers)."""
        problems = []
        for c, name in enumerate(self.names):
            column = schema.columns[c]
            if column.kind == NUMERIC and self.infinite[c]:
                row, value = self.first_infinite[c]
                problems.append(f"column {name!r} has {int(self.infinite[c]):,} infinite cells (first: "
                                f"{self._where(row, c, value)})")
            if column.kind == NUMERIC and self.nonnumeric[c]:
                row, value = self.first_nonnumeric[c]
                problems.append(f"column {name!r} is numeric in the training data but has "
                                f"{int(self.nonnumeric[c]):,} cells that are not numbers (first: "
                                f"{self._where(row, c, value)})")
        if problems:
            raise InputDataError(f"file {self.path!r} does not match the training columns:\n  - "
                                 + "\n  - ".join(problems))

    def _warn_identifiers(self, schema: TabularSchema) -> None:
        for c, column in enumerate(schema.columns):
            c = self.names.index(column.name)
            many = self.categories[c] is not None and self.train_rows >= 20 and (
                len(self.categories[c]) > 0.5 * self.train_rows)
            if _ID_NAME.search(column.name) or (column.kind == CATEGORICAL and many):
                warnings.warn(
                    f"feature column {column.name!r} looks like an identifier ("
                    + ("its name" if _ID_NAME.search(column.name) else
                       f"{len(self.categories[c]):,} distinct values in {self.train_rows:,} rows")
                    + f"): it is used as a feature; exclude it with exclude_columns={column.name} "
                    "if it is not one", DataWarning, stacklevel=4)
