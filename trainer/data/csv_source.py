"""The `csv:PATH` source: a header row, a label column, numeric and categorical feature columns; streamed.

One statistics pass (`scan`) reads every cell and decides the column schema (`trainer.data.schema`):
which columns are features (all but the label and weight columns, or `feature_columns`, minus
`exclude_columns`), numeric or categorical (any cell that is not a number, or `categorical_columns`),
the vocabularies, means and missing rates of the training rows. The pipeline (`parsed_batches`)
then parses and encodes each batch with the same ops the export runs (`trainer.data.encoding`).
"""

# Lines are read with `TextLineDataset` and parsed in batches with `decode_csv` (quoted fields
# are allowed, newlines inside quotes are not). Every cell is read as a string first; the
# missing-value spellings (`schema.DEFAULT_MISSING_VALUES`) are missing in every column.

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from . import encoding, stats, streaming
from .column_scan import ColumnScan
from .errors import InputDataError, describe_location, tf_message
from .labels import LabelSpace
from .schema import (
    DEFAULT_MAX_VOCABULARY,
    DEFAULT_MIN_CATEGORY_COUNT,
    DEFAULT_MISSING_VALUES,
    TabularSchema,
    missing_tokens,
)
from .splits import TRAIN, SplitRule
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


def data_lines(path: str) -> tf.data.Dataset:
    """The data lines of the CSV (header skipped), in file order."""
    return tf.data.TextLineDataset(path, buffer_size=1 << 20).skip(1)


_RAGGED_RE = re.compile(r"Expect (\d+) fields but have (\d+) in record (\d+)")


def locate_error(path: str, columns: List[str], start: int, error: tf.errors.OpError) -> InputDataError:
    """Turns a decode_csv error in the batch starting at data row `start` (0-based) into a message."""
    msg = getattr(error, "message", None) or str(error)
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




@dataclasses.dataclass(frozen=True)
class ColumnOptions:
    """How the columns of a CSV file are chosen and read (each a `load_data` argument).

    Attributes:
      feature_columns: The feature columns, or None for every column but the label and weight.
      exclude_columns: Columns left out (IDs, leaks, sibling labels).
      categorical_columns: Columns read as categories even when every cell is a number.
      weight_column: Per-row sample weights (never a feature), or None.
      missing_values: Cell spellings read as missing.
      max_vocabulary: Most distinct training values of a categorical column.
      min_category_count: Training rows a category needs for its own input (rarer: 'other').
      missing: 'impute' (mean + missing input; categories: their own value) or 'error'.
    """

    feature_columns: Optional[Tuple[str, ...]] = None
    exclude_columns: Tuple[str, ...] = ()
    categorical_columns: Tuple[str, ...] = ()
    weight_column: Optional[str] = None
    missing_values: Tuple[str, ...] = DEFAULT_MISSING_VALUES
    max_vocabulary: int = DEFAULT_MAX_VOCABULARY
    min_category_count: int = DEFAULT_MIN_CATEGORY_COUNT
    missing: str = "impute"

    def key(self) -> dict:
        """The cache-key form."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def select_features(path: str, columns: Sequence[str], label_column: str,
                    options: ColumnOptions) -> List[str]:
    """The feature columns of a file with header `columns`, in header order.

    Raises:
      InputDataError: Naming the argument and every unknown or conflicting column.
    """
    known = set(columns)
    for argument, names in (("feature_columns", options.feature_columns or ()),
                            ("exclude_columns", options.exclude_columns),
                            ("categorical_columns", options.categorical_columns),
                            ("weight_column", (options.weight_column,) if options.weight_column else ())):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputDataError(
                f"{argument}: {', '.join(repr(n) for n in unknown)} "
                f"{'is not a column' if len(unknown) == 1 else 'are not columns'} of file {path!r}; "
                f"the columns are {list(columns)}", argument=argument, value=",".join(unknown))
    special = {label_column} | ({options.weight_column} if options.weight_column else set())
    if options.weight_column == label_column:
        raise InputDataError(f"weight_column={label_column!r} is the label column",
                             argument="weight_column", value=label_column)
    if options.feature_columns is not None:
        clash = [n for n in options.feature_columns if n in special]
        if clash:
            raise InputDataError(
                f"feature_columns: {', '.join(repr(n) for n in clash)} is the label or weight column, "
                "never a feature", argument="feature_columns", value=",".join(clash))
        chosen = set(options.feature_columns)
        features = [c for c in columns if c in chosen]
    else:
        features = [c for c in columns if c not in special]
    features = [c for c in features if c not in set(options.exclude_columns)]
    if not features:
        raise InputDataError(f"exclude_columns={','.join(options.exclude_columns)}: file {path!r} has "
                             f"no feature columns left (label {label_column!r}"
                             + (f", weight {options.weight_column!r}" if options.weight_column else "")
                             + ")", argument="exclude_columns", value=",".join(options.exclude_columns))
    left_categorical = [n for n in options.categorical_columns if n not in features]
    if left_categorical:
        raise InputDataError(
            f"categorical_columns: {', '.join(repr(n) for n in left_categorical)} not a feature "
            "column (label, weight or excluded)", argument="categorical_columns",
            value=",".join(left_categorical))
    return features


def cell_decoder(num_columns: int) -> Callable[[tf.Tensor], List[tf.Tensor]]:
    """A batch decoder: lines [B] -> one string tensor [B] per column (empty cells allowed)."""
    defaults = [tf.constant([""], tf.string)] * num_columns

    @tf.autograph.experimental.do_not_convert
    def decode(lines):
        return tf.io.decode_csv(lines, record_defaults=defaults)
    return decode


def scan_decoder(columns: Sequence[str], features: Sequence[str], label_columns: Sequence[str],
                 weight_column: Optional[str], tokens: Sequence[str]):
    """lines -> (cells [B, F], missing, numeric, values float64, infinite, label cells [B, L],
    weight cells [B]): the statistics pass's view of a batch of data lines."""
    decode = cell_decoder(len(columns))
    feature_index = [columns.index(c) for c in features]
    label_indices = [columns.index(c) for c in label_columns]
    label_index = label_indices[0]
    weight_index = None if weight_column is None else columns.index(weight_column)

    @tf.autograph.experimental.do_not_convert
    def scan_batch(lines):
        fields = decode(lines)
        cells = tf.strings.strip(tf.stack([fields[i] for i in feature_index], axis=1))
        missing = encoding.is_missing(cells, tokens)
        numeric = tf.strings.regex_full_match(cells, encoding.NUMBER_PATTERN)
        infinite = tf.strings.regex_full_match(tf.strings.lower(cells), r"[+-]?inf(?:inity)?")
        values = tf.strings.to_number(tf.where(numeric, cells, tf.fill(tf.shape(cells), "0")),
                                      tf.float64)
        weights = fields[weight_index] if weight_index is not None else tf.zeros_like(fields[label_index])
        labels = tf.stack([fields[i] for i in label_indices], axis=1)
        return cells, missing, numeric, values, infinite, labels, weights
    return scan_batch


def check_weights(path: str, column: str, cells: np.ndarray, first_row: int, tokens) -> None:
    """Raises naming the first bad weight (missing, not a number, negative, non-finite)."""
    text = np.char.strip(cells.astype(bytes))
    try:
        weights = text.astype(np.float64)
        if np.all(np.isfinite(weights)) and np.all(weights >= 0):
            return
    except ValueError:
        pass
    for r, cell in enumerate(text.tolist()):
        value = cell.decode("utf-8", "replace")
        try:
            w = float(value) if value.lower() not in tokens else None
        except ValueError:
            w = None
        if w is None or not np.isfinite(w) or w < 0:
            where = describe_location(path, row=first_row + r, line=first_row + r + 1, column=column,
                                      value=value)
            raise InputDataError(f"weight_column={column}: bad sample weight (weights must be finite "
                                 f"numbers >= 0): {where}",
                                 argument="weight_column", value=column)


def scan(path: str, *, label_column: str, rule: Optional[SplitRule],
         known: Optional[LabelSpace] = None, num_classes: Optional[int] = None,
         cache_dir: Optional[str] = None, options: ColumnOptions = ColumnOptions(),
         schema: Optional[TabularSchema] = None,
         class_names: Optional[Sequence[str]] = None) -> StreamSummary:
    """One streaming pass: validates every row, decides the schema, counts classes and split sides.

    Args:
      path: The CSV file.
      label_column: The label column's name.
      rule: The split (fractions and seed), or None to keep every row for training.
      known: The training label space (for an eval file).
      num_classes: If given, integer labels must lie in [0, num_classes).
      cache_dir: Where to cache the summary as JSON (keyed by path, mtime, size and options).
      options: Which columns are features and how cells are read.
      schema: The training schema (for an eval file): its feature columns are read by name,
        numeric ones must hold numbers, and its weight column (when the file has it) is checked;
        None infers the schema from this file's training rows.
      class_names: The class order (string labels) or display names (integer labels).

    Returns:
      The summary: training-side class counts, validation and test counts, the schema
      (`summary.schema`) and the moments of the encoded inputs.

    Raises:
      InputDataError: Listing every offending column, or at the first bad row.
    """
    columns, _ = read_header(path, label_column)
    if schema is not None:
        absent = [c for c in schema.feature_names if c not in columns]
        if absent:
            raise InputDataError(
                f"file {path!r} lacks the feature column{'s' if len(absent) > 1 else ''} "
                f"{', '.join(repr(c) for c in absent)} the model was trained with; its columns are "
                f"{columns}")
        features = schema.feature_names
        # An eval file's weights: the training's weight column, when the file has it.
        weight_column = schema.weight_column if schema.weight_column in columns else None
        tokens = schema.missing_values
    else:
        features = select_features(path, columns, label_column, options)
        weight_column = options.weight_column
        tokens = missing_tokens(options.missing_values)
    key = {"kind": "csv", "version": 3, "files": stats.file_signature([path]),
           "label_column": label_column, "split": stats.rule_key(rule), "num_classes": num_classes,
           "known": None if known is None else [known.mode, known.names],
           "options": options.key(), "schema": None if schema is None else schema.to_json(),
           "class_names": None if class_names is None else list(class_names)}
    cached = stats.load_cached(cache_dir, key)
    if cached is not None:
        return cached
    counter = SplitCounter(rule, moments=False)
    columns_scan = ColumnScan(path, features, options.max_vocabulary)
    batches = (data_lines(path).batch(streaming.STATS_BATCH)
               .map(scan_decoder(columns, features, [label_column], weight_column, tokens),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .prefetch(2))

    def visit(start: int, batch: tuple) -> None:
        cells, missing, numeric, values, infinite, raw, weights = batch
        infinite = infinite | (numeric & ~np.isfinite(values))  # '1e999' overflows
        numeric = numeric & ~infinite
        uniq, inverse = streaming.group_labels(raw[:, 0])
        parts = counter.add(values, uniq, inverse, start + 1)
        columns_scan.add(cells, missing, numeric, values, infinite, parts == TRAIN, start + 1)
        if weight_column is not None:
            check_weights(path, weight_column, weights, start + 1, tokens)

    rows = streaming.scan_batches(batches, streaming.STATS_BATCH,
                                  lambda s, e: locate_error(path, columns, s, e), visit)
    if rows == 0:
        raise InputDataError(f"file {path!r}: no data rows after the header")
    space = streaming.resolve_labels(counter, source=path, column=label_column, known=known,
                                     num_classes=num_classes, allow_strings=True,
                                     where=lambda r: {"path": path, "row": r, "line": r + 1},
                                     **({} if class_names is None else {"class_names": class_names}))
    if schema is None:
        schema = columns_scan.schema(
            label_column=label_column, weight_column=weight_column, header=columns,
            categorical_columns=options.categorical_columns, missing_values=tokens,
            min_category_count=options.min_category_count, missing_policy=options.missing)
    else:
        columns_scan.check_known(schema)
    streaming.warn_if_sorted(counter, path, (schema.width,))
    summary = streaming.summarise(counter, space, (schema.width,))
    mean, variance = schema.moments()
    summary = dataclasses.replace(summary, mean=mean.tolist(), variance=variance.tolist(),
                                  schema=schema.to_json())
    stats.store_cached(cache_dir, key, summary)
    return summary


def parsed_batches(path: str, label_column: str, space: LabelSpace, schema: TabularSchema,
                   with_weights: bool = False):
    """Returns a callable building the dataset of parsed, encoded batches in file order.

    Each batch is (float32 inputs [B, schema.width], int32 labels [B]) and, with `with_weights`,
    float32 sample weights [B] from `schema.weight_column`.
    """
    columns, _ = read_header(path, label_column)
    decode = cell_decoder(len(columns))
    index = {c: columns.index(c) for c in schema.feature_names}
    label_index = columns.index(label_column)
    weight_index = columns.index(schema.weight_column) if with_weights else None

    def build() -> tf.data.Dataset:
        to_index = space.to_indices_fn()
        encoder = encoding.FeatureEncoder(schema)

        @tf.autograph.experimental.do_not_convert
        def parse(lines):
            fields = decode(lines)
            typed = encoding.parse_cells(schema, {c: fields[i] for c, i in index.items()})
            out = (encoder(typed), to_index(fields[label_index]))
            if weight_index is None:
                return out
            return out + (tf.strings.to_number(tf.strings.strip(fields[weight_index]), tf.float32),)
        return data_lines(path).batch(streaming.PARSE_BATCH).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return build
