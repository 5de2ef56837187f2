"""The rows of a CSV file for a model trained on a table, read and checked as the training reads cells.

The feature columns are found by name in the header (any order; other columns are ignored, the
label column may be absent); every cell is decoded as a string by the training's own CSV reader
(`trainer.data.csv_source`) and parsed with the training's own functions
(`trainer.data.encoding.parse_numeric` / `parse_categorical`, with the schema's missing-value
spellings); the batches feed the export's raw named-column signature, whose encoder does the rest.

A numeric column's cell that is neither a finite number nor a missing-value spelling stops the
batches (none past the first offending one is yielded); the rest of the file is still read, so
that the one error lists every offending column with its count and first bad row and value.
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.data import encoding
from trainer.data.csv_source import cell_decoder, data_lines  # the training's line reading
from trainer.data.errors import InputDataError, describe_location, tf_message
from trainer.data.schema import NUMERIC, TabularSchema

from .batches import InputBatch, PredictionInput, as_text, check_keep_columns, listed, plural

_RAGGED_RE = re.compile(r"Expect (\d+) fields but have (\d+) in record (\d+)")


def read_csv_columns(path: str, spec: str) -> List[str]:
    """The column names of a CSV file's header row, read as the training reads them.

    Raises:
      InputDataError: (argument `input`) missing or empty file, duplicate column names.
    """
    if not os.path.isfile(path):
        raise InputDataError(f"input={spec!r}: CSV file not found: {path!r}", argument="input",
                             value=spec)
    with open(path, "rb") as stream:
        first = stream.readline()
    text = first.decode("utf-8-sig", "replace").rstrip("\r\n")
    if not text.strip():
        raise InputDataError(f"input={spec!r}: file {path!r} is empty (expected a header row "
                             "naming the columns)", argument="input", value=spec)
    columns = [c.strip() for c in next(csv.reader(io.StringIO(text)))]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InputDataError(f"input={spec!r}: file {path!r} has duplicate "
                             f"column{plural(duplicates, '', 's')} {listed(duplicates)} in its "
                             "header row", argument="input", value=spec)
    return columns


class _CellProblems:
    """Per feature column: cells that are not numbers, missing cells refused; first of each."""

    def __init__(self, path: str, names: Sequence[str], schema: TabularSchema, refuse_missing: bool):
        self.path = path
        self.names = list(names)
        self.schema = schema
        self.refuse_missing = refuse_missing
        self.bad = np.zeros(len(names), np.int64)
        self.first_bad: List[Optional[Tuple[int, bytes]]] = [None] * len(names)
        self.missing = np.zeros(len(names), np.int64)
        self.first_missing: List[Optional[int]] = [None] * len(names)

    def add(self, start: int, bad: np.ndarray, missing: np.ndarray, cells: tf.Tensor) -> bool:
        """Adds a batch starting at 0-based data row `start`; True when it had a problem."""
        if not self.refuse_missing:
            missing = np.zeros_like(missing)
        if not (bad.any() or missing.any()):
            return False
        raw = None
        for c in np.flatnonzero(bad.any(axis=0)):
            self.bad[c] += int(bad[:, c].sum())
            if self.first_bad[c] is None:
                raw = cells.numpy() if raw is None else raw
                r = int(np.argmax(bad[:, c]))
                self.first_bad[c] = (start + r + 1, raw[r, c])
        for c in np.flatnonzero(missing.any(axis=0)):
            self.missing[c] += int(missing[:, c].sum())
            if self.first_missing[c] is None:
                self.first_missing[c] = start + int(np.argmax(missing[:, c])) + 1
        return True

    def error(self) -> Optional[InputDataError]:
        """The one error listing every offending column, or None."""
        problems = []
        for c, name in enumerate(self.names):
            if self.bad[c]:
                row, value = self.first_bad[c]
                where = describe_location(self.path, row=row, line=row + 1, value=value)
                problems.append(f"column {name!r} is numeric in the training data but has "
                                f"{int(self.bad[c]):,} cell{'s' if self.bad[c] > 1 else ''} that "
                                f"{'are' if self.bad[c] > 1 else 'is'} not a finite number or a "
                                f"missing-value spelling (first: {where})")
            if self.missing[c]:
                row = self.first_missing[c]
                where = describe_location(self.path, row=row, line=row + 1)
                problems.append(f"column {name!r} has {int(self.missing[c]):,} missing "
                                f"cell{'s' if self.missing[c] > 1 else ''} (first: {where}) and the "
                                "model was trained with missing='error', which refuses them")
        if not problems:
            return None
        spellings = ", ".join(repr(t) for t in self.schema.missing_values)
        return InputDataError(f"file {self.path!r} does not fit the model's feature columns "
                              f"(missing-value spellings: {spellings}):\n  - " + "\n  - ".join(problems))


class CsvInput(PredictionInput):
    """The rows of a CSV file for a model trained on a table.

    Args:
      spec: The input as given, for messages.
      path: The CSV file.
      schema: The training schema (feature columns, kinds, missing-value spellings).
      keep_columns: Columns passed through verbatim.
      batch_size: Rows per batch.
      refuse_missing: Refuse missing feature cells (the model was trained with
        `missing='error'`).

    Raises:
      InputDataError: (argument `input`) feature columns absent from the header, listing every
        one; (argument `keep_columns`) kept columns absent, listing every one.
    """

    def __init__(self, spec: str, path: str, schema: TabularSchema, *, keep_columns: Sequence[str] = (),
                 batch_size: int = 1024, refuse_missing: bool = False):
        self.spec, self.path, self.paths = spec, path, [path]
        self.schema = schema
        self.columns = read_csv_columns(path, spec)
        absent = [c for c in schema.feature_names if c not in self.columns]
        if absent:
            raise InputDataError(
                f"input={spec!r}: file {path!r} lacks the feature column{plural(absent, '', 's')} "
                f"{listed(absent)} the model was trained with (it needs {schema.feature_names}); "
                f"its columns are {self.columns}", argument="input", value=spec)
        check_keep_columns(spec, keep_columns, self.columns, "column")
        self.kept_names = list(keep_columns)
        self.batch_size = int(batch_size)
        self.refuse_missing = refuse_missing

    def _parser(self):
        """lines [B] -> (signature inputs, bad [B, F], missing [B, F], cells [B, F], kept [B, K])."""
        decode = cell_decoder(len(self.columns))
        tokens = self.schema.missing_values
        specs = self.schema.serving_inputs()
        index = {c: self.columns.index(c) for c in self.schema.feature_names}
        keep = [self.columns.index(c) for c in self.kept_names]

        @tf.autograph.experimental.do_not_convert
        def parse(lines):
            fields = decode(lines)
            inputs, bad, missing = {}, [], []
            for column, spec in zip(self.schema.columns, specs):
                cells = fields[index[column.name]]
                absent = encoding.is_missing(cells, tokens)
                if column.kind == NUMERIC:
                    number = tf.strings.regex_full_match(tf.strings.strip(cells), encoding.NUMBER_PATTERN)
                    wrong = tf.logical_and(tf.logical_not(absent), tf.logical_not(number))
                    values = encoding.parse_numeric(
                        tf.where(wrong, tf.fill(tf.shape(cells), "0"), cells), tokens)
                    wrong = tf.logical_or(wrong, tf.logical_and(tf.logical_not(absent),
                                                                tf.logical_not(tf.math.is_finite(values))))
                    inputs[spec["input"]] = values
                else:
                    wrong = tf.zeros_like(absent)
                    inputs[spec["input"]] = encoding.parse_categorical(cells, tokens)
                bad.append(wrong)
                missing.append(absent)
            cells = tf.stack([fields[index[c]] for c in self.schema.feature_names], axis=1)
            kept = (tf.stack([fields[i] for i in keep], axis=1) if keep
                    else tf.fill([tf.shape(lines)[0], 0], ""))
            return inputs, tf.stack(bad, axis=1), tf.stack(missing, axis=1), cells, kept
        return parse

    def _locate(self, start: int, error: tf.errors.OpError) -> InputDataError:
        match = _RAGGED_RE.search(getattr(error, "message", None) or str(error))
        if match:
            want, got, record = (int(g) for g in match.groups())
            row = start + record + 1
            where = describe_location(self.path, row=row, line=row + 1)
            return InputDataError(f"ragged row: {where} has {got} fields, the header has {want}")
        return InputDataError(f"file {self.path!r}: cannot read rows {start + 1}-{start + self.batch_size}: "
                              f"{tf_message(error)}")

    def batches(self) -> Iterator[InputBatch]:
        """See `PredictionInput.batches`."""
        problems = _CellProblems(self.path, self.schema.feature_names, self.schema, self.refuse_missing)
        dataset = (data_lines(self.path).batch(self.batch_size)
                   .map(self._parser(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                   .prefetch(2))
        iterator = iter(dataset)
        start, failed = 0, False
        while True:
            try:
                inputs, bad, missing, cells, kept = next(iterator)
            except StopIteration:
                break
            except tf.errors.OpError as error:
                raise self._locate(start, error) from None
            rows = int(bad.shape[0])
            failed = problems.add(start, bad.numpy(), missing.numpy(), cells) or failed
            if not failed:
                yield InputBatch(inputs, as_text(kept.numpy()).tolist(), rows)
            start += rows
        error = problems.error()
        if error is not None:
            raise error
