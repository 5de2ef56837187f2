"""Multi-label data: several yes/no label columns of a CSV file (or an NPZ `y` [N, L]) as multi-hot targets.

`load_multi_label_data` reads the rows into memory: float32 features (a CSV's cells encoded by
the training rows' schema, as `csv:` single-label data) and int32 multi-hot labels `[N, L]`.
A label cell is 0 or 1 (any spelling of those numbers, or true/false); anything else, a missing
cell included, is an error naming the row, column and value.

The splits are stratified on each row's rarest positive label (by the file's counts; rows
without any label form a stratum of their own), with the same seeded rule as single-label
data (`trainer.data.splits.SplitRule`): every label with enough positives has about the split's
fraction of them in validation and in test. The bundle's classes are the `2L` label values of
`trainer.tasks.MultiLabelTask` (class `2l` "not l", `2l + 1` "l"); its class counts are the
negatives and positives of each label.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from . import csv_source, encoding, streaming, weights
from .arrays import ArrayPipeline, load_npz, validate_features
from .bundle import DataBundle, DataSplit
from .column_scan import ColumnScan
from .csv_source import ColumnOptions
from .errors import DataWarning, InputDataError, describe_location
from .schema import TabularSchema, missing_tokens
from .sources import DatasetSpec, parse_spec, require_held_out, require_test, split_origins, split_rule
from .splits import stratified_parts
from .stats import Moments

# Label cells read as 1 and 0 besides numbers equal to them (compared lower-case).
TRUE_CELLS = ("true",)
FALSE_CELLS = ("false",)
# A label with fewer training positives than this gets a warning.
TINY_LABEL_SIZE = 10
NO_LABEL_STRATUM = "(no label)"


def label_value_counts(labels: np.ndarray) -> np.ndarray:
    """`[2L]` counts of the `2L` label-value classes of a multi-hot `[N, L]` matrix: per label its
    negatives, then its positives (what `ClassWeights.inverse_frequency` takes)."""
    labels = np.asarray(labels)
    positives = labels.sum(axis=0).astype(np.int64)
    return np.stack([len(labels) - positives, positives], axis=1).reshape(-1)


def label_value_names(label_names: Sequence[str]) -> List[str]:
    """`['not a', 'a', 'not b', 'b', ...]`: the `2L` classes of labels `a, b, ...`."""
    return [text for name in label_names for text in (f"not {name}", str(name))]


def strata(labels: np.ndarray) -> np.ndarray:
    """Each row's stratum: the index of its rarest positive label (by `labels`' own counts; ties go to
    the first), or `L` for a row without any positive label. int64 `[N]`."""
    labels = np.asarray(labels)
    counts = labels.sum(axis=0).astype(np.float64)
    rarity = np.where(labels == 1, counts[None, :], np.inf)
    rarest = np.argmin(rarity, axis=1)
    return np.where(np.isinf(rarity.min(axis=1)), labels.shape[1], rarest).astype(np.int64)


def _check_label_names(label_columns: Sequence[str]) -> Tuple[str, ...]:
    names = tuple(str(c).strip() for c in label_columns)
    if len(names) < 1 or any(not n for n in names):
        raise InputDataError(f"label_columns={','.join(names)!r} must name one or more labels, none empty",
                             argument="label_columns", value=",".join(names))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputDataError(f"label_columns names {', '.join(map(repr, repeated))} more than once",
                             argument="label_columns", value=",".join(names))
    return names


def _parse_label_cells(cells: np.ndarray, path: str, label_columns: Sequence[str],
                       first_row: int) -> np.ndarray:
    """Label cells `[B, L]` (bytes) of rows `first_row`.. (1-based) -> int32 `[B, L]` of 0/1.

    Raises:
      InputDataError: naming the first cell that is not 0 or 1 (missing included).
    """
    text = np.char.lower(np.char.strip(cells.astype(bytes)))
    out = np.full(text.shape, -1, np.int32)
    out[np.isin(text, [c.encode() for c in TRUE_CELLS])] = 1
    out[np.isin(text, [c.encode() for c in FALSE_CELLS])] = 0
    rest = out < 0
    if rest.any():
        flat = text[rest]
        values = np.full(flat.shape, np.nan)
        for i, cell in enumerate(flat.tolist()):
            try:
                values[i] = float(cell)
            except ValueError:
                pass
        out[rest] = np.where(values == 1, 1, np.where(values == 0, 0, -1))
    bad = np.argwhere(out < 0)
    if len(bad):
        r, c = (int(v) for v in bad[0])
        value = cells[r, c].decode("utf-8", "replace") if isinstance(cells[r, c], bytes) else str(cells[r, c])
        where = describe_location(path, row=first_row + r, line=first_row + r + 1,
                                  column=label_columns[c], value=value)
        raise InputDataError(f"label_columns: a multi-label cell must be 0 or 1 (or true/false), and "
                             f"{len(bad):,} of this batch's are not; the first: {where}",
                             argument="label_columns", value=",".join(label_columns))
    return out


def _csv_header(path: str, label_columns: Sequence[str]) -> List[str]:
    header, _ = csv_source.read_header(path, label_columns[0])
    absent = [c for c in label_columns if c not in header]
    if absent:
        raise InputDataError(f"label_columns: {', '.join(map(repr, absent))} "
                             f"{'is not a column' if len(absent) == 1 else 'are not columns'} of file "
                             f"{path!r}; the columns are {header}", argument="label_columns",
                             value=",".join(absent))
    return header


def _csv_features(path: str, header: Sequence[str], label_columns: Sequence[str],
                  options: ColumnOptions) -> List[str]:
    """The feature columns: every column but the labels and the weight (or `feature_columns`)."""
    labels = set(label_columns)
    for argument, names in (("feature_columns", options.feature_columns or ()),
                            ("categorical_columns", options.categorical_columns),
                            ("weight_column", (options.weight_column,) if options.weight_column else ())):
        clash = [n for n in names if n in labels]
        if clash:
            raise InputDataError(f"{argument}: {', '.join(map(repr, clash))} is a label column "
                                 f"(label_columns), never a feature or a weight", argument=argument,
                                 value=",".join(clash))
    others = tuple(c for c in label_columns[1:] if c not in options.exclude_columns)
    return csv_source.select_features(path, header, label_columns[0], dataclasses.replace(
        options, exclude_columns=tuple(options.exclude_columns) + others))


def _csv_batches(path: str, header: Sequence[str], features: Sequence[str],
                 label_columns: Sequence[str], weight_column: Optional[str], tokens: Sequence[str]):
    return (csv_source.data_lines(path).batch(streaming.STATS_BATCH)
            .map(csv_source.scan_decoder(header, features, label_columns, weight_column, tokens),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2))


def _csv_labels(path: str, header: Sequence[str], label_columns: Sequence[str]) -> np.ndarray:
    """Pass 1: the multi-hot labels `[N, L]` of every row."""
    decode = csv_source.cell_decoder(len(header))
    index = [list(header).index(c) for c in label_columns]
    batches = csv_source.data_lines(path).batch(streaming.STATS_BATCH).map(
        tf.autograph.experimental.do_not_convert(
            lambda lines: (tf.stack([decode(lines)[i] for i in index], axis=1),)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parts: List[np.ndarray] = []
    rows = streaming.scan_batches(
        batches, streaming.STATS_BATCH, lambda s, e: csv_source.locate_error(path, list(header), s, e),
        lambda start, batch: parts.append(_parse_label_cells(batch[0], path, label_columns, start + 1)))
    if rows == 0:
        raise InputDataError(f"file {path!r}: no data rows after the header")
    return np.concatenate(parts)


def _csv_schema(path: str, header: Sequence[str], features: Sequence[str],
                label_columns: Sequence[str], options: ColumnOptions, train_mask: np.ndarray,
                schema: Optional[TabularSchema] = None) -> TabularSchema:
    """Pass 2: the column schema of the rows of `train_mask` (an eval file: checked against `schema`),
    and the weight column's check."""
    weight_column = options.weight_column if schema is None else (
        schema.weight_column if schema.weight_column in header else None)
    tokens = missing_tokens(options.missing_values) if schema is None else schema.missing_values
    scan = ColumnScan(path, features, options.max_vocabulary)

    def visit(start: int, batch: tuple) -> None:
        cells, missing, numeric, values, infinite, _, cell_weights = batch
        infinite = infinite | (numeric & ~np.isfinite(values))
        numeric = numeric & ~infinite
        scan.add(cells, missing, numeric, values, infinite, train_mask[start:start + len(cells)], start + 1)
        if weight_column is not None:
            csv_source.check_weights(path, weight_column, cell_weights, start + 1, tokens)

    streaming.scan_batches(_csv_batches(path, header, features, label_columns, weight_column, tokens),
                           streaming.STATS_BATCH,
                           lambda s, e: csv_source.locate_error(path, list(header), s, e), visit)
    if schema is not None:
        scan.check_known(schema)
        return schema
    made = scan.schema(label_column=label_columns[0], weight_column=weight_column, header=header,
                       categorical_columns=options.categorical_columns, missing_values=tokens,
                       min_category_count=options.min_category_count, missing_policy=options.missing)
    return dataclasses.replace(made, other_label_columns=tuple(label_columns[1:]))


def _csv_encoded(path: str, header: Sequence[str], schema: TabularSchema,
                 weight_column: Optional[str]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Pass 3: every row's encoded features `[N, width]` (and weights `[N]`, or None)."""
    decode = csv_source.cell_decoder(len(header))
    index = {c: list(header).index(c) for c in schema.feature_names}
    weight_index = None if weight_column is None else list(header).index(weight_column)
    encoder = encoding.FeatureEncoder(schema)

    @tf.autograph.experimental.do_not_convert
    def parse(lines):
        fields = decode(lines)
        x = encoder(encoding.parse_cells(schema, {c: fields[i] for c, i in index.items()}))
        w = (tf.zeros([tf.shape(lines)[0]]) if weight_index is None else
             tf.strings.to_number(tf.strings.strip(fields[weight_index]), tf.float32))
        return x, w

    xs, ws = [], []
    for x, w in csv_source.data_lines(path).batch(streaming.PARSE_BATCH).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True):
        xs.append(x.numpy())
        ws.append(w.numpy())
    return np.concatenate(xs), None if weight_index is None else np.concatenate(ws)


def _read_csv(spec: DatasetSpec, label_columns: Sequence[str], options: ColumnOptions,
              train_rows, schema: Optional[TabularSchema] = None):
    """(features, labels, weights or None, schema): `train_rows(labels)` says which rows fit the schema."""
    header = _csv_header(spec.path, label_columns)
    if schema is None:
        features = _csv_features(spec.path, header, label_columns, options)
    else:
        absent = [c for c in schema.feature_names if c not in header]
        if absent:
            raise InputDataError(f"file {spec.path!r} lacks the feature column(s) "
                                 f"{', '.join(map(repr, absent))} the model was trained with; its "
                                 f"columns are {header}")
        features = schema.feature_names
    labels = _csv_labels(spec.path, header, label_columns)
    schema = _csv_schema(spec.path, header, features, label_columns, options, train_rows(labels), schema)
    weight_column = schema.weight_column if schema.weight_column in header else None
    x, w = _csv_encoded(spec.path, header, schema, weight_column)
    return x, labels, w, schema


def _read_npz(spec: DatasetSpec, label_columns: Sequence[str], weight_key: Optional[str],
              channels_first: Optional[bool], *, eval_file: bool = False):
    """(features, labels, weights or None, the weights' array name or None) of an NPZ file."""
    x, y, w, name = load_npz(spec.path, weight_key, required=not eval_file)
    y = np.asarray(y)
    if y.dtype == np.bool_:
        y = y.astype(np.int32)
    if y.ndim != 2 or y.shape[1] != len(label_columns):
        raise InputDataError(f"label_columns names {len(label_columns)} labels, so 'y' of file "
                             f"{spec.path!r} must be multi-hot [N, {len(label_columns)}]; it has shape "
                             f"{y.shape}", argument="label_columns", value=",".join(label_columns))
    if not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
        bad = np.argwhere(~np.isin(y, (0, 1))) if np.issubdtype(y.dtype, np.number) else [(0, 0)]
        r, c = (int(v) for v in bad[0])
        where = describe_location(spec.path, row=r + 1, column=f"y[:, {c}] ({label_columns[c]})",
                                  value=y[r, c].item())
        raise InputDataError(f"label_columns: a multi-label target must be 0 or 1: {where}",
                             argument="label_columns", value=",".join(label_columns))
    x = validate_features(x, num_rows=len(y), source=spec.path, channels_first=channels_first)
    if w is not None:
        w = weights.check_array(w, num_rows=len(y), argument="weight_key", value=weight_key or name,
                                source=spec.path, name=name)
    return x, y.astype(np.int32), w, name


def _split(name: str, x: np.ndarray, y: np.ndarray, w: Optional[np.ndarray], origin: str) -> DataSplit:
    return DataSplit(name=name, input_shape=tuple(int(d) for d in x.shape[1:]),
                     class_counts=label_value_counts(y), num_examples=int(len(y)),
                     pipeline=ArrayPipeline(x, y, w), origin=origin, weighted=w is not None)


def _notes(label_names: Sequence[str], train: DataSplit, validation: Optional[DataSplit],
           test: Optional[DataSplit]) -> List[str]:
    notes = []
    for j, name in enumerate(label_names):
        positives = int(train.class_counts[2 * j + 1])
        if positives == 0:
            notes.append(f"label {name!r} has no positive training row: the model learns to never "
                         f"predict it")
        elif positives < TINY_LABEL_SIZE:
            notes.append(f"label {name!r} has {positives} positive training row(s) (fewer than "
                         f"{TINY_LABEL_SIZE}): any recall measured for it rests on very few rows")
        for split in (validation, test):
            if split is not None and positives and split.class_counts[2 * j + 1] == 0:
                notes.append(f"label {name!r} has no positive row in the {split.name} split "
                             f"({split.origin})")
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return notes


def load_multi_label_data(dataset: str, *, label_columns: Sequence[str],
                          eval_dataset: Optional[str] = None, validation_split: float = 0.2,
                          test_split: float = 0.2, seed: int = 0,
                          columns: Optional[ColumnOptions] = None, hold_out_validation: bool = False,
                          weight_key: Optional[str] = None,
                          channels_first: Optional[bool] = None,
                          schema: Optional[TabularSchema] = None) -> DataBundle:
    """Loads multi-label `csv:` or `npz:` data into a `DataBundle` of multi-hot `[N, L]` labels.

    Args:
      dataset: `csv:PATH` (the label columns are `label_columns`) or `npz:PATH` (`y` [N, L], its
        columns named by `label_columns`).
      label_columns: The labels' columns (CSV) or names (NPZ), in order.
      eval_dataset: Reporting data of the same form; default: a stratified test split.
      validation_split, test_split, seed, hold_out_validation: As for `load_data`.
      columns: A CSV file's column choices (`ColumnOptions`; the label columns are never features).
      weight_key: NPZ sample weights, as for `load_data`.
      channels_first: NPZ images, as for `load_data`.
      schema: A trained model's CSV schema (e.g. from its export): every file is encoded with it
        (none is inferred), so the rows are the inputs that model was trained on.

    Returns:
      The bundle: `num_classes` is `2L`, `class_names` the label values ("not a", "a", ...),
      `label_names` the labels; every split's batches are (features, int32 `[B, L]`[, weights]).

    Raises:
      InputDataError: naming the argument (`label_columns`, ...) or the file, row, column and value.
    """
    label_names = _check_label_names(label_columns)
    spec = parse_spec(dataset, "dataset")
    eval_spec = parse_spec(eval_dataset, "eval_dataset") if eval_dataset else None
    for argument, item in (("dataset", spec), ("eval_dataset", eval_spec)):
        if item is not None and item.kind not in ("csv", "npz"):
            raise InputDataError(f"{argument}={item}: multi-label data (label_columns) are read from "
                                 f"csv: or npz: files", argument=argument, value=str(item))
    if eval_spec is not None and eval_spec.kind != spec.kind:
        raise InputDataError(f"eval_dataset={eval_spec} is not the same kind of file as dataset={spec}",
                             argument="eval_dataset", value=str(eval_spec))
    columns = columns if columns is not None else ColumnOptions()
    if spec.kind != "csv" and columns != ColumnOptions():
        raise InputDataError(f"column choices (feature_columns, exclude_columns, weight_column, ...) "
                             f"apply to csv: data, not dataset={spec}", argument="dataset", value=str(spec))
    rule, three_part = split_rule(spec, eval_spec, validation_split=validation_split,
                                  test_split=test_split, seed=seed, hold_out_validation=hold_out_validation)
    stratum_names = [*label_names, NO_LABEL_STRATUM]

    def parts_of(y: np.ndarray):
        if rule is None:
            return np.arange(len(y)), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return stratified_parts(strata(y), stratum_names, rule)

    def train_rows(y: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(y), bool)
        mask[parts_of(y)[0]] = True
        return mask

    weights_from = None
    if spec.kind == "csv":
        x, y, w, schema = _read_csv(spec, label_names, columns, train_rows, schema=schema)
        weights_from = None if w is None else f"column {schema.weight_column!r} of {spec.path}"
    else:
        x, y, w, name = _read_npz(spec, label_names, weight_key, channels_first)
        weights_from = None if w is None else f"array {name!r} of {spec.path}"
    origins = split_origins(spec, eval_spec, rule)
    tr, va, te = parts_of(y)

    def rows(index):
        return None if w is None else w[index]

    train = _split("train", x[tr], y[tr], rows(tr), origins["train"])
    validation = test = None
    if rule is not None:
        validation = _split("validation", x[va], y[va], rows(va), origins["validation"])
        require_held_out(validation, dataset, rule.validation)
        if three_part:
            test = _split("eval", x[te], y[te], rows(te), origins["eval"])
            require_test(test, dataset, rule.test)
    if eval_spec is not None:
        if eval_spec.kind == "csv":
            ex, ey, ew, _ = _read_csv(eval_spec, label_names, columns,
                                      lambda labels: np.ones(len(labels), bool), schema=schema)
        else:
            ex, ey, ew, _ = _read_npz(eval_spec, label_names, weight_key if w is not None else "none",
                                      channels_first, eval_file=True)
        if tuple(ex.shape[1:]) != tuple(x.shape[1:]):
            raise InputDataError(f"eval_dataset={eval_dataset!r} has feature shape {tuple(ex.shape[1:])}, "
                                 f"the training data {dataset!r} has {tuple(x.shape[1:])}",
                                 argument="eval_dataset", value=eval_dataset)
        test = _split("eval", ex, ey, ew, origins["eval"])
    if schema is not None:
        mean, variance = schema.moments()
    else:
        moments = Moments()
        moments.add(x[tr])
        mean, variance = moments.result()
    notes = _notes(label_names, train, validation, test)
    positives = ", ".join(f"{n} {int(train.class_counts[2 * j + 1]):,}" for j, n in enumerate(label_names))
    held = "" if validation is None else f"; validation {validation.num_examples:,} (chooses)"
    description = (f"{spec}: {len(label_names)} labels (training positives: {positives}), input shape "
                   f"{tuple(train.input_shape)}; train {train.num_examples:,}{held}; eval "
                   f"{test.num_examples:,} ({origins['eval']}, reports); splits stratified on each "
                   f"row's rarest label")
    if schema is not None:
        description += f"; {schema.describe()}"
    if weights_from is not None:
        description += f"; sample weights: {weights_from}"
    return DataBundle(train=train, eval=test, num_classes=2 * len(label_names),
                      class_names=label_value_names(label_names), feature_mean=mean,
                      feature_variance=variance, description=description, validation=validation,
                      notes=notes, schema=schema, sample_weights=weights_from,
                      label_names=list(label_names))
