"""The column schema of a table: which columns are features, of what kind, with what statistics.

Inferred in the one statistics pass over a CSV file (`trainer.data.column_scan`), saved with the
run and the export, and read by `trainer.data.encoding` to turn raw columns into model inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

NUMERIC = "numeric"
CATEGORICAL = "categorical"

# Cells that mean "no value" (compared after stripping whitespace, case-insensitively):
# the empty cell and the usual spellings of R, pandas, SQL and the UCI files.
DEFAULT_MISSING_VALUES = ("", "NA", "N/A", "NaN", "null", "None", "?")
# Largest vocabulary of a categorical column (distinct training values); more is refused.
DEFAULT_MAX_VOCABULARY = 1000
# Categories seen fewer times than this in the training rows share the out-of-vocabulary input.
DEFAULT_MIN_CATEGORY_COUNT = 1
# How a categorical column's missing cells are named in its vocabulary and in reports.
MISSING_TOKEN = ""
OTHER_TOKEN = "<other>"


def missing_tokens(values: Sequence[str]) -> Tuple[str, ...]:
    """The canonical (stripped, lower-case, distinct) form of the missing-value spellings."""
    out: List[str] = []
    for value in values:
        token = str(value).strip().lower()
        if token not in out:
            out.append(token)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class ColumnSchema:
    """One feature column.

    Attributes:
      name: The column's name in the header.
      kind: `NUMERIC` or `CATEGORICAL`.
      rows: Training rows seen.
      missing: Training rows where the cell is missing.
      mean: Numeric: mean of the observed training values (the imputed value).
      variance: Numeric: population variance of the observed training values.
      vocabulary: Categorical: the categories, most frequent first (`MISSING_TOKEN` is the
        missing cell when missing cells occurred), each seen at least the minimum count.
      other: Categorical: training rows whose category is not in the vocabulary (rare ones).
      transform: Numeric: None, or 'signed_log1p' (sign(x) log(1 + |x|), for a heavy-tailed
        column: chosen by the statistics pass; `mean` and `variance` are of the transformed values).
    """

    name: str
    kind: str
    rows: int
    missing: int
    mean: float = 0.0
    variance: float = 1.0
    vocabulary: Tuple[str, ...] = ()
    other: int = 0
    transform: Optional[str] = None

    @property
    def missing_rate(self) -> float:
        """Share of training rows with the cell missing."""
        return self.missing / self.rows if self.rows else 0.0

    @property
    def missing_indicator(self) -> bool:
        """Whether a numeric column gets a 0/1 'was missing' input (it had missing training cells)."""
        return self.kind == NUMERIC and self.missing > 0

    @property
    def width(self) -> int:
        """Model inputs this column becomes."""
        if self.kind == NUMERIC:
            return 2 if self.missing_indicator else 1
        return len(self.vocabulary) + 1

    def input_names(self) -> List[str]:
        """The names of this column's model inputs (`age`, `age=missing`, `country=FR`, ...)."""
        if self.kind == NUMERIC:
            return [self.name] + ([f"{self.name}=missing"] if self.missing_indicator else [])
        names = [f"{self.name}={OTHER_TOKEN}"]
        names += [f"{self.name}={'(missing)' if v == MISSING_TOKEN else v}" for v in self.vocabulary]
        return names

    def describe(self) -> str:
        """`age (numeric, 3.1% missing)` or `country (categorical, 14 values + other)`."""
        missing = f", {100 * self.missing_rate:.1f}% missing" if self.missing else ""
        if self.kind == NUMERIC:
            log = ", heavy-tailed: log-scaled" if self.transform else ""
            return f"{self.name} (numeric{log}{missing})"
        return f"{self.name} (categorical, {len(self.vocabulary)} values + other{missing})"


@dataclasses.dataclass(frozen=True)
class TabularSchema:
    """The features of a table and how they were read.

    Attributes:
      columns: The feature columns, in header order.
      label_column: The label column.
      weight_column: The sample-weight column, or None.
      missing_values: The cell spellings read as missing (canonical: stripped, lower-case).
      header: Every column of the training file, in order (features, label, weight and
        columns left out).
      other_label_columns: A multi-label table's label columns after `label_column` (the
        first); empty for one label column.
    """

    columns: Tuple[ColumnSchema, ...]
    label_column: str
    weight_column: Optional[str]
    missing_values: Tuple[str, ...]
    header: Tuple[str, ...]
    other_label_columns: Tuple[str, ...] = ()

    @property
    def label_columns(self) -> List[str]:
        """Every label column: `label_column`, then `other_label_columns`."""
        return [self.label_column, *self.other_label_columns]

    @property
    def feature_names(self) -> List[str]:
        """The feature columns' names, in order."""
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        """Model inputs (the encoded feature vector's length)."""
        return sum(c.width for c in self.columns)

    def input_names(self) -> List[str]:
        """The name of each model input, in order."""
        return [name for c in self.columns for name in c.input_names()]

    def excluded(self) -> List[str]:
        """Columns of the file that are neither features, label nor weight."""
        used = set(self.feature_names) | set(self.label_columns) | (
            {self.weight_column} if self.weight_column else set())
        return [c for c in self.header if c not in used]

    def moments(self) -> Tuple[np.ndarray, np.ndarray]:
        """Mean and variance of each model input over the training rows, for `Normalization`.

        Numeric inputs: the observed mean and the variance after mean imputation (imputed
        cells add no spread). Missing indicators and one-hot inputs are left unscaled (mean 0,
        variance 1): standardising a rare category's 0/1 input would blow it up.
        """
        mean: List[float] = []
        var: List[float] = []
        for c in self.columns:
            if c.kind == NUMERIC:
                observed = 1.0 - c.missing_rate
                mean.append(c.mean)
                var.append(max(c.variance * observed, 0.0))
                if c.missing_indicator:
                    mean.append(0.0)
                    var.append(1.0)
            else:
                mean += [0.0] * c.width
                var += [1.0] * c.width
        return np.asarray(mean, np.float32), np.asarray(var, np.float32)

    def describe(self, limit: int = 0) -> str:
        """One line: the feature count by kind, then the first `limit` features described."""
        numeric = sum(c.kind == NUMERIC for c in self.columns)
        text = (f"{len(self.columns)} feature columns ({numeric} numeric, "
                f"{len(self.columns) - numeric} categorical -> {self.width} model inputs)")
        if limit:
            more = f", ... ({len(self.columns) - limit} more)" if len(self.columns) > limit else ""
            text += ": " + ", ".join(c.describe() for c in self.columns[:limit]) + more
        left_out = self.excluded()
        if left_out:
            text += f"; not used: {', '.join(left_out)}"
        if self.weight_column:
            text += f"; sample weights: {self.weight_column}"
        return text

    def to_json(self) -> Dict[str, Any]:
        """A JSON-compatible dict (`from_json` reads it back)."""
        return {"columns": [dataclasses.asdict(c) for c in self.columns],
                "label_column": self.label_column, "weight_column": self.weight_column,
                "missing_values": list(self.missing_values), "header": list(self.header),
                **({"other_label_columns": list(self.other_label_columns)}
                   if self.other_label_columns else {})}

    @classmethod
    def from_json(cls, payload: Dict[str, Any]) -> "TabularSchema":
        """Inverse of `to_json`."""
        columns = tuple(ColumnSchema(**{**c, "vocabulary": tuple(c.get("vocabulary", ()))})
                        for c in payload["columns"])
        return cls(columns=columns, label_column=payload["label_column"],
                   weight_column=payload.get("weight_column"),
                   missing_values=tuple(payload["missing_values"]), header=tuple(payload["header"]),
                   other_label_columns=tuple(payload.get("other_label_columns", ())))

    def serving_inputs(self) -> List[Dict[str, Any]]:
        """The export's named inputs: column, signature input name, kind, dtype, vocabulary size."""
        names = serving_input_names(self.feature_names)
        return [{"column": c.name, "input": name, "kind": c.kind,
                 "dtype": "float32" if c.kind == NUMERIC else "string",
                 **({"vocabulary_size": len(c.vocabulary)} if c.kind == CATEGORICAL else {})}
                for c, name in zip(self.columns, names)]


def serving_input_names(columns: Sequence[str]) -> List[str]:
    """Signature-safe input names (`[A-Za-z0-9_.-]`, unique ignoring case) for column names, in order.

    TensorFlow lower-cases signature argument names, so `Age` and `age` must not both stay.
    """
    out: List[str] = []
    taken = set()
    for column in columns:
        name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.-") else "_" for ch in column)
        if not name or not name[0].isalnum():
            name = "c" + name
        base, k = name, 2
        while name.lower() in taken:
            name = f"{base}_{k}"
            k += 1
        out.append(name)
        taken.add(name.lower())
    return out
