"""The `csv:PATH` source: a header row, a label column, numeric feature columns; streamed.

Integer labels (' 07' reads as 7) are class indices; otherwise classes are the sorted label names.
"""

# Lines are read with `TextLineDataset` and parsed in batches with `decode_csv` (quoted fields
# are allowed, newlines inside quotes are not); every feature value is required (no defaults).
# Labels that are all integers are class indices; otherwise every label is a class name and
# classes are the sorted names ('1.0' is a name, not the integer 1).

from __future__ import annotations

import csv
import io
import os
import re
from typing import List, Optional, Tuple

import tensorflow as tf

from . import stats, streaming
from .errors import InputDataError, describe_location, tf_message
from .labels import LabelSpace
from .splits import SplitRule
from .stats import SplitCounter, StreamSummary


def read_header(path: str, label_column: str) -> Tuple[List[str], int]:
    """Reads the header row.

    Args:
      path: The CSV file.
      label_column: The label column's name.

    Returns:
      (column names, index of the label column).

    Raises:
      InputDataError: Missing or empty file, duplicate columns, no feature columns, or a
        `label_column` that is not a column (naming it and listing the columns).
    """
    if not os.path.isfile(path):
        raise InputDataError(f"CSV file not found: {path!r}")
    with open(path, "rb") as f:
        first = f.readline()
    text = first.decode("utf-8-sig", "replace").rstrip("\r\n")
    if not text.strip():
        raise InputDataError(f"file {path!r}: empty file (expected a header row naming the columns)")
    columns = [c.strip() for c in next(csv.reader(io.StringIO(text)))]
    seen = set()
    for c in columns:
        if c in seen:
            raise InputDataError(f"file {path!r}: duplicate column {c!r} in the header row")
        seen.add(c)
    if label_column not in columns:
        raise InputDataError(
            f"label_column={label_column!r} is not a column of file {path!r}; "
            f"the columns are {columns}", argument="label_column", value=label_column)
    if len(columns) < 2:
        raise InputDataError(f"file {path!r}: no feature columns besides the label {label_column!r}")
    return columns, columns.index(label_column)


def _decoder(num_columns: int, label_index: int):
    """A batch decoder: lines [B] -> (float32 features [B, F], raw label strings [B])."""
    defaults = [tf.constant([], tf.float32)] * num_columns
    defaults[label_index] = tf.constant([], tf.string)
    feature_cols = [i for i in range(num_columns) if i != label_index]

    @tf.autograph.experimental.do_not_convert
    def decode(lines):
        fields = tf.io.decode_csv(lines, record_defaults=defaults)
        x = tf.stack([fields[i] for i in feature_cols], axis=1)
        return x, fields[label_index]
    return decode


def _lines(path: str) -> tf.data.Dataset:
    """The data lines of the CSV (header skipped), in file order."""
    return tf.data.TextLineDataset(path, buffer_size=1 << 20).skip(1)


_FIELD_RE = re.compile(
    r"Field (\d+) in record (\d+) is not a valid float: ?([^\n]*?)(?: \[Op:[^\n]*)?(?:\n|$)")
_MISSING_RE = re.compile(r"Field (\d+) is required but missing in record (\d+)")
_RAGGED_RE = re.compile(r"Expect (\d+) fields but have (\d+) in record (\d+)")


def _locate(path: str, columns: List[str], start: int, error: tf.errors.OpError) -> InputDataError:
    """Turns a decode_csv error in the batch starting at data row `start` (0-based) into a message."""
    msg = getattr(error, "message", None) or str(error)
    m = _FIELD_RE.search(msg)
    if m:
        col, rec, value = int(m.group(1)), int(m.group(2)), m.group(3).strip()
        row = start + rec + 1
        where = describe_location(path, row=row, line=row + 1, column=columns[col], value=value)
        return InputDataError(f"non-numeric feature: {where}")
    m = _MISSING_RE.search(msg)
    if m:
        col, rec = int(m.group(1)), int(m.group(2))
        row = start + rec + 1
        where = describe_location(path, row=row, line=row + 1, column=columns[col], value="")
        return InputDataError(f"missing value: {where}")
    m = _RAGGED_RE.search(msg)
    if m:
        want, got, rec = int(m.group(1)), int(m.group(2)), int(m.group(3))
        row = start + rec + 1
        return InputDataError(
            f"ragged row: {describe_location(path, row=row, line=row + 1)} has {got} fields, "
            f"the header has {want}")
    if isinstance(error, tf.errors.NotFoundError):
        return InputDataError(f"CSV file not found: {path!r}")
    end = start + streaming.STATS_BATCH
    return InputDataError(f"file {path!r}: cannot parse rows {start + 1}-{end}: {tf_message(error)}")


def scan(path: str, *, label_column: str, rule: Optional[SplitRule],
         known: Optional[LabelSpace] = None, num_classes: Optional[int] = None,
         cache_dir: Optional[str] = None) -> StreamSummary:
    """One streaming pass: validates every row and counts classes, split sides and moments.

    Args:
      path: The CSV file.
      label_column: The label column's name.
      rule: The split (fractions and seed), or None to keep every row for training.
      known: The training label space (for an eval file).
      num_classes: If given, integer labels must lie in [0, num_classes).
      cache_dir: Where to cache the summary as JSON (keyed by path, mtime, size).

    Returns:
      The summary (training-part counts and moments; validation and test counts).

    Raises:
      InputDataError: At the first bad row.
    """
    columns, label_index = read_header(path, label_column)
    key = {"kind": "csv", "files": stats.file_signature([path]), "label_column": label_column,
           "split": stats.rule_key(rule), "num_classes": num_classes,
           "known": None if known is None else [known.mode, known.names]}
    cached = stats.load_cached(cache_dir, key)
    if cached is not None:
        return cached
    feature_names = [c for i, c in enumerate(columns) if i != label_index]
    counter = SplitCounter(rule, moments=known is None)
    batches = (_lines(path).batch(streaming.STATS_BATCH)
               .map(_decoder(len(columns), label_index), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
               .prefetch(2))

    def visit(start: int, batch: tuple) -> None:
        x, raw = batch
        bad = stats.first_nonfinite(x)
        if bad is not None:
            r, c = bad
            row = start + r + 1
            where = describe_location(path, row=row, line=row + 1, column=feature_names[c],
                                      value=float(x[r, c]))
            raise InputDataError(f"NaN or infinite feature: {where}")
        uniq, inverse = streaming.group_labels(raw)
        counter.add(x, uniq, inverse, start + 1)

    rows = streaming.scan_batches(batches, streaming.STATS_BATCH,
                                  lambda s, e: _locate(path, columns, s, e), visit)
    if rows == 0:
        raise InputDataError(f"file {path!r}: no data rows after the header")
    space = streaming.resolve_labels(counter, source=path, column=label_column, known=known,
                                     num_classes=num_classes, allow_strings=True,
                                     where=lambda r: {"path": path, "row": r, "line": r + 1})
    streaming.warn_if_sorted(counter, path, (len(feature_names),))
    summary = streaming.summarise(counter, space, (len(feature_names),))
    stats.store_cached(cache_dir, key, summary)
    return summary


def parsed_batches(path: str, label_column: str, space: LabelSpace):
    """Returns a callable building the dataset of parsed (x, y) batches in file order."""
    columns, label_index = read_header(path, label_column)
    decode = _decoder(len(columns), label_index)

    def build() -> tf.data.Dataset:
        to_index = space.to_indices_fn()

        @tf.autograph.experimental.do_not_convert
        def parse(lines):
            x, raw = decode(lines)
            return x, to_index(raw)
        return _lines(path).batch(streaming.PARSE_BATCH).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return build
