"""`load_data`: turns dataset specs (`synthetic`, `csv:PATH`, ...) into a `DataBundle`.

Parses the spec, loads or scans the source, makes the stratified splits, and checks eval labels.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.checks import check_number, check_positive_integer

from . import arrays, csv_source, fashion_mnist, splits, synthetic, tfrecord_source, weights
from .bundle import DataBundle, DataSplit
from .csv_source import ColumnOptions
from .errors import DataWarning, InputDataError, checked, describe_location
from .labels import LabelSpace, describe_classes, int_space
from .schema import TabularSchema
from .splits import TEST, TRAIN, VALIDATION, SplitRule
from .stats import Moments, StreamSummary
from .streaming import StreamPipeline

VALID_FORMS = ("synthetic", "fashion_mnist_lt", "npz:PATH", "csv:PATH", "tfrecord:GLOB")
_BENCHMARKS = ("synthetic", "fashion_mnist_lt")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: `kind` in synthetic/fashion_mnist_lt/npz/csv/tfrecord, and `path`."""

    kind: str
    path: Optional[str] = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_spec(spec: str, argument: str = "dataset") -> DatasetSpec:
    """Parses a dataset spec such as `csv:train.csv`.

    Args:
      spec: One of `VALID_FORMS`.
      argument: The caller's name for `spec`, for the message (`load_data` passes `dataset` or
        `eval_dataset`).

    Raises:
      InputDataError: Naming `argument` and its value, and listing the valid forms.
    """
    text = (spec or "").strip()
    if text in _BENCHMARKS:
        return DatasetSpec(text)
    kind, sep, path = text.partition(":")
    if sep and kind in ("npz", "csv", "tfrecord") and path.strip():
        return DatasetSpec(kind, path.strip())
    raise InputDataError(f"{argument}={spec!r} is not a dataset; valid forms: {', '.join(VALID_FORMS)}",
                         argument=argument, value=spec)


@dataclasses.dataclass
class _Arrays:
    """An in-memory source: a pool to train on (or split) and, for benchmarks, a test set."""

    x: np.ndarray
    y: np.ndarray
    names: List[str]
    mode: str
    test: Optional[Tuple[np.ndarray, np.ndarray]] = None
    w: Optional[np.ndarray] = None
    weights_from: Optional[str] = None  # "array 'w' of PATH" when `w` is given


def _load_arrays(spec: DatasetSpec, *, imbalance_ratio: float, data_dir: Optional[str], seed: int,
                 num_classes: Optional[int], known: Optional[LabelSpace],
                 class_names: Optional[Sequence[str]] = None,
                 channels_first: Optional[bool] = None, weight_key: Optional[str] = None,
                 weights_required: bool = True) -> _Arrays:
    """Loads an in-memory source (synthetic, fashion_mnist_lt, npz) and validates it.

    An NPZ file's sample weights are `weight_key`'s array (see `arrays.load_npz`); with
    `weights_required` False (an eval file) a named array the file lacks means no weights.
    """
    if spec.kind in _BENCHMARKS:
        if spec.kind == "synthetic":
            x, y, xt, yt = synthetic.generate(imbalance_ratio, seed)
            names = [str(c) for c in range(synthetic.NUM_CLASSES)]
        else:
            x_all, y_all = fashion_mnist.load_part("train", data_dir)
            keep = fashion_mnist.long_tailed_subsample(y_all, imbalance_ratio, seed)
            x, y = fashion_mnist.to_features(x_all[keep]), y_all[keep]
            xt, yt = fashion_mnist.load_part("test", data_dir)
            xt = fashion_mnist.to_features(xt)
            names = list(fashion_mnist.CLASS_NAMES)
        k = len(names) if known is None else known.num_classes
        if num_classes is not None and num_classes != k:
            raise InputDataError(f"num_classes={num_classes} but dataset {spec} has {len(names)} classes",
                                 argument="num_classes", value=num_classes)
        if class_names is not None and known is None:
            names = int_space(len(names), class_names, source=str(spec)).names
        return _Arrays(x, y, names, "int", (xt, yt))
    x, y, w, w_name = arrays.load_npz(spec.path, weight_key, required=weights_required)
    x, y, space = arrays.validate_arrays(
        x, y, source=spec.path, num_classes=num_classes if known is None else None,
        class_names=class_names if known is None else None, known=known,
        channels_first=channels_first)
    if w is not None:
        w = weights.check_array(w, num_rows=len(y), argument="weight_key",
                                value=weight_key if weight_key is not None else w_name,
                                source=spec.path, name=w_name)
    return _Arrays(x, y, list(space.names), space.mode, w=w,
                   weights_from=None if w is None else f"array {w_name!r} of {spec.path}")


def _moments(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and population variance over all axes but the last."""
    m = Moments()
    m.add(x)
    return m.result()


def _check_eval_seen(train_counts: np.ndarray, eval_split: DataSplit, names: List[str],
                     source: str, column: str, first_row) -> None:
    """Raises if an eval class has no training examples (naming the first such row)."""
    unseen = [c for c in range(len(names)) if eval_split.class_counts[c] > 0 and train_counts[c] == 0]
    if unseen:
        c = min(unseen, key=first_row)
        where = describe_location(source, row=first_row(c), column=column, value=names[c])
        raise InputDataError(
            f"label unseen in training: {where} (class {c}); the eval data has "
            f"{int(eval_split.class_counts[c])} examples of it, the training split has none")


# A class with fewer training rows than this is "tiny" (a warning; losses cap its weight).
# The same number as `losses.rules.TINY_CLASS_SIZE` (the layers do not import each other).
TINY_CLASS_SIZE = 5


def require_held_out(split: DataSplit, dataset: str, p: float) -> None:
    """Raises if the validation split is empty."""
    if split.num_examples == 0:
        raise InputDataError(
            f"validation_split={p} holds out no examples of {dataset} (too few examples per "
            "class); raise it or give separate evaluation data", argument="validation_split", value=p)


def require_test(split: DataSplit, dataset: str, t: float) -> None:
    """Raises if the test split is empty."""
    if split.num_examples == 0:
        raise InputDataError(
            f"test_split={t} holds out no examples of {dataset} (too few examples per class); "
            "raise it or give separate evaluation data", argument="test_split", value=t)


def _stream_scan(spec: DatasetSpec, rule: Optional[SplitRule], *, label_column: str,
                 feature_key: str, label_key: str, known: Optional[LabelSpace],
                 num_classes: Optional[int], cache_dir: Optional[str],
                 columns: ColumnOptions, schema: Optional[TabularSchema] = None,
                 class_names: Optional[Sequence[str]] = None, weight_key: Optional[str] = None
                 ) -> Tuple[StreamSummary, Callable[[], tf.data.Dataset], Optional[str]]:
    """Scans a streamed source; returns (summary, builder of parsed batches, where its weights are).

    A CSV file's `summary.schema` is its column schema (`schema`, the training one, for an
    eval file); its batches carry sample weights when the schema names a weight column the file
    has. A TFRecord file's carry them with `weight_key`. The third value says where the weights
    come from ("column 'w' of PATH"), None without weights.
    """
    if spec.kind == "csv":
        summary = csv_source.scan(spec.path, label_column=label_column, rule=rule, known=known,
                                  num_classes=num_classes, cache_dir=cache_dir, options=columns,
                                  schema=schema, class_names=class_names)
        space = LabelSpace(summary.label_mode, summary.class_names)
        table = TabularSchema.from_json(summary.schema)
        header, _ = csv_source.read_header(spec.path, label_column)
        weighted = table.weight_column is not None and table.weight_column in header
        return summary, csv_source.parsed_batches(
            spec.path, label_column, space, table, with_weights=weighted), (
            f"column {table.weight_column!r} of {spec.path}" if weighted else None)
    summary, files = tfrecord_source.scan(spec.path, feature_key=feature_key, label_key=label_key,
                                          rule=rule, known=known, num_classes=num_classes,
                                          cache_dir=cache_dir, class_names=class_names,
                                          weight_key=weight_key)
    space = LabelSpace(summary.label_mode, summary.class_names)
    return summary, tfrecord_source.parsed_batches(files, feature_key, label_key,
                                                   summary.input_shape[0], weight_key, space), (
        None if weight_key is None else f"key {weight_key!r} of tfrecord:{spec.path}")


def _first_column_option(columns: ColumnOptions) -> str:
    """The first column option that differs from its default (for an error's argument)."""
    default = ColumnOptions()
    for field in dataclasses.fields(ColumnOptions):
        if getattr(columns, field.name) != getattr(default, field.name):
            return field.name
    return "dataset"


def _stream_split(name: str, summary: StreamSummary, build: Callable[[], tf.data.Dataset],
                  counts: Sequence[int], stages: Sequence[tuple], origin: str,
                  weighted: bool = False) -> DataSplit:
    """A streamed `DataSplit`: the rows of the parsed batches `build` returns that `stages` keep."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    n = int(counts_arr.sum())
    return DataSplit(name=name, input_shape=tuple(summary.input_shape), class_counts=counts_arr,
                     num_examples=n,
                     pipeline=StreamPipeline(build, len(summary.class_names), stages,
                                             summary.input_shape, n),
                     origin=origin, weighted=weighted)


def _class_notes(names: List[str], train: DataSplit, validation: Optional[DataSplit],
                 test: Optional[DataSplit]) -> List[str]:
    """Warnings about absent, tiny and split-starved classes (each also emitted as a DataWarning)."""
    notes = []
    for c, name in enumerate(names):
        n_train = int(train.class_counts[c])
        n_val = 0 if validation is None else int(validation.class_counts[c])
        n_test = 0 if test is None else int(test.class_counts[c])
        label = f"class {c} ({name!r})"
        if n_train == 0:
            notes.append(
                f"{label} has no training example (a label code with no rows, or a class missing "
                "from this subset): the model cannot learn it; prior-based losses and rules give "
                "it a pseudo-count, and its metrics are NaN where it has no support")
            continue
        if n_train < TINY_CLASS_SIZE:
            notes.append(
                f"{label} has only {n_train} training example{'s' if n_train > 1 else ''} (fewer "
                f"than {TINY_CLASS_SIZE}): inverse-frequency-style weights cap it at the weight of "
                f"a class with {TINY_CLASS_SIZE}, and any recall measured for it rests on a "
                "handful of rows")
        missing = []
        if validation is not None and n_val == 0:
            missing.append("no validation rows, so no choice can be checked on it")
        if test is not None and n_test == 0:
            missing.append("no test rows, so its test metrics are NaN")
        if missing:
            total = n_train + n_val + n_test
            notes.append(
                f"{label} has {total} row{'s' if total > 1 else ''}, too few for every split: "
                f"{n_train} train, {n_val} validation" + (f", {n_test} test" if test is not None else "")
                + " (a class fills training first, then validation, then test); it has "
                + " and ".join(missing))
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return notes


def split_rule(spec: DatasetSpec, eval_spec: Optional[DatasetSpec], *, validation_split: float,
               test_split: float, seed: int, hold_out_validation: bool
               ) -> Tuple[Optional[SplitRule], bool]:
    """The split of `spec`'s rows, and whether it has a test part (`load_data`'s Args say when).

    Returns:
      (the rule, or None when every row trains; whether the rule holds out a test split).

    Raises:
      DataArgumentError: naming `validation_split` or `test_split`.
    """
    hold_out = eval_spec is None or hold_out_validation
    three_part = eval_spec is None and spec.kind not in _BENCHMARKS
    p = splits.check_validation_split(validation_split) if hold_out else None
    if three_part:
        t = splits.check_test_split(test_split, p, required=True)
    else:
        t = checked(check_number, test_split, "test_split", minimum=0, maximum=1,
                    exclusive_maximum=True)
    return (SplitRule(p, t if three_part else 0.0, int(seed)) if hold_out else None), three_part


def load_data(dataset: str, *, eval_dataset: Optional[str] = None, validation_split: float = 0.2,
              test_split: float = splits.DEFAULT_TEST_SPLIT, label_column: str = "label",
              feature_key: str = "features", label_key: str = "label",
              imbalance_ratio: float = 100.0, data_dir: Optional[str] = None, seed: int = 0,
              num_classes: Optional[int] = None, cache_dir: Optional[str] = None,
              hold_out_validation: bool = False,
              columns: Optional[ColumnOptions] = None,
              class_names: Optional[Sequence[str]] = None,
              channels_first: Optional[bool] = None,
              schema: Optional[TabularSchema] = None,
              weight_key: Optional[str] = None) -> DataBundle:
    """Loads (or scans) the training, validation and eval data and validates every example.

    The data that chooses (`validation`: controller, calibration, early stopping) is never
    the data that reports (`eval`):

    - `eval_dataset` None, a file source (npz, csv, tfrecord): three disjoint stratified
      parts of `dataset`, per class: `validation` (`validation_split` of each class),
      `eval` = a held-out test split (`test_split` of each class) and `train` (the rest).
      Each part's count of each class is within one row of its fraction; a class's first
      row always trains and (with `validation_split > test_split * (validation_split +
      test_split)`, true for the defaults) its first held-out row goes to validation, so a
      tiny class fills training, then validation, then test (a `DataWarning` names each
      class left without validation or test rows). Deterministic given `seed` (see
      `trainer.data.splits`).
    - `eval_dataset` None, `synthetic` / `fashion_mnist_lt`: `train` and `validation` split
      the long-tailed pool; `eval` is the benchmark's balanced test set (`test_split` unused).
    - `eval_dataset` given: `eval` is that data; `train` is all of `dataset` and
      `validation` None, unless `hold_out_validation`, which holds out the stratified
      `validation_split` of `dataset` (`test_split` unused).

    Args:
      dataset: `synthetic`, `fashion_mnist_lt`, `npz:PATH`, `csv:PATH` or `tfrecord:GLOB`.
      eval_dataset: Same forms; None for the default held-out data (above).
      validation_split: Fraction of each class held out to choose, in (0, 1).
      test_split: Fraction of each class held out to report, in [0, 1) (default 0.2);
        must be > 0 and `validation_split + test_split < 1` when it is used.
      label_column: CSV label column.
      feature_key: TFRecord float feature vector key.
      label_key: TFRecord int64 label key.
      imbalance_ratio: Largest/smallest class ratio of `synthetic` and `fashion_mnist_lt`.
      data_dir: Directory of the Fashion-MNIST .gz files (default: Debian's).
      seed: Seed of the generators, subsamples and splits.
      num_classes: If given, integer labels must lie in [0, num_classes).
      cache_dir: Where the streamed sources cache their statistics (JSON).
      columns: How a CSV file's columns are chosen and read (`ColumnOptions`: feature,
        excluded, categorical and weight columns, missing values, vocabulary limits); the
        default uses every column but the label. Its schema is `bundle.schema`.
      schema: A trained model's column schema (from its export): CSV data is then read with
        it (its feature columns by name, its vocabularies and statistics) instead of inferring
        one, so the inputs are encoded as the model was trained (`trainer.evaluate`).
      hold_out_validation: With `eval_dataset` given, still hold out a stratified
        `validation_split` of `dataset` as `validation` (for the recall-target
        controller, calibration and recall callbacks, which must not see the
        evaluation data); training then uses the rest.
      class_names: The classes of `dataset`. String labels: their order (exactly the labels
        found; default sorted, numbers by value before text). Integer labels (integral
        numbers such as '2.0' too): the names of classes 0..K-1 (default '0', '1', ...).
        `bundle.class_names` are these names; an `eval_dataset` uses the training classes.
      channels_first: NPZ images: True transposes `x` [N, C, H, W] to [N, H, W, C]; False
        takes `x` as given; None (default) as given, but refuses `x` that looks
        channels-first. Images [N, H, W] get a channel axis [N, H, W, 1].
      weight_key: Per-example sample weights (finite, >= 0; each split's batches are then
        `(x, y, w)`). NPZ: the array of that name; None (default) the array `w` when the file
        has one (`bundle.description`, which the CLI logs, says so), `'none'` no weights. TFRecord: the
        key of each record's one float weight (None or `'none'`: no weights). CSV files take
        `columns.weight_column` instead. An `eval_dataset` is weighted by the same array, key or
        column when it has one (else its rows are unweighted, and the description says so).
        `bundle.sample_weights` says where the weights come from.

    A class with no training row, or fewer than `TINY_CLASS_SIZE`, gets a `DataWarning`
    naming it (index and name); the texts are in `bundle.notes`.

    Returns:
      The `DataBundle` (`bundle.splits_summary()` says which split is which).

    Raises:
      InputDataError: Bad arguments or bad data, naming the argument (also in its `argument`
        attribute; a `DataArgumentError` for a value out of range) or the file, row, column and
        value.
    """
    spec = parse_spec(dataset, "dataset")
    eval_spec = parse_spec(eval_dataset, "eval_dataset") if eval_dataset else None
    if num_classes is not None:
        num_classes = checked(check_positive_integer, num_classes, "num_classes")
    if spec.kind in _BENCHMARKS or (eval_spec is not None and eval_spec.kind in _BENCHMARKS):
        imbalance_ratio = checked(check_number, imbalance_ratio, "imbalance_ratio", minimum=1)
    rule, three_part = split_rule(spec, eval_spec, validation_split=validation_split,
                                  test_split=test_split, seed=seed,
                                  hold_out_validation=hold_out_validation)
    p = None if rule is None else rule.validation
    t = test_split
    columns = columns if columns is not None else ColumnOptions()
    checked(check_positive_integer, columns.max_vocabulary, "max_vocabulary")
    checked(check_positive_integer, columns.min_category_count, "min_category_count")
    if columns.missing not in ("impute", "error"):
        raise InputDataError(f"missing={columns.missing!r} is not 'impute' or 'error'",
                             argument="missing", value=columns.missing)
    if spec.kind != "csv" and columns != ColumnOptions():
        option = _first_column_option(columns)
        raise InputDataError(f"{option}={getattr(columns, option)!r}: dataset {spec} is not a CSV file; "
                             "column choices (feature_columns, exclude_columns, categorical_columns, "
                             "weight_column, missing, ...) apply to csv: data only", argument=option,
                             value=getattr(columns, option))
    if weight_key is not None and weight_key != weights.NO_WEIGHTS and spec.kind not in ("npz", "tfrecord"):
        what = ("a CSV file: give its weight column as weight_column" if spec.kind == "csv"
                else "built-in data, which has no sample weights")
        raise InputDataError(f"weight_key={weight_key!r} names the sample weights of npz: and tfrecord: "
                             f"data; dataset {spec} is {what}", argument="weight_key", value=weight_key)
    if channels_first and "npz" not in (spec.kind, eval_spec.kind if eval_spec else None):
        raise InputDataError(f"channels_first=True applies to npz: images, not dataset={spec}",
                             argument="channels_first", value=channels_first)
    common = dict(label_column=label_column, feature_key=feature_key, label_key=label_key,
                  cache_dir=cache_dir)
    validation: Optional[DataSplit] = None
    eval_split: Optional[DataSplit] = None
    origins = split_origins(spec, eval_spec, rule)

    tfrecord_weights = None if weight_key in (None, weights.NO_WEIGHTS) else weight_key
    weights_from: Optional[str] = None
    # --- training side ---
    if spec.kind in ("csv", "tfrecord"):
        summary, build, weights_from = _stream_scan(
            spec, rule, known=None, num_classes=num_classes, columns=columns,
            class_names=class_names, schema=schema, weight_key=tfrecord_weights, **common)
        schema = None if summary.schema is None else TabularSchema.from_json(summary.schema)
        space = LabelSpace(summary.label_mode, summary.class_names)
        k = space.num_classes
        offsets = rule.offsets(space.keys) if rule is not None else None

        def part(name: str, counts: Sequence[int], which: int) -> DataSplit:
            stages = [] if rule is None else [("part", rule, offsets, which)]
            return _stream_split(name, summary, build, counts, stages, origins[name],
                                 weights_from is not None)

        train = part("train", summary.train_counts, TRAIN)
        if rule is not None:
            validation = part("validation", summary.held_counts, VALIDATION)
            require_held_out(validation, dataset, p)
            if three_part:
                eval_split = part("eval", summary.test_counts, TEST)
                require_test(eval_split, dataset, t)
        mean = None if summary.mean is None else np.asarray(summary.mean, np.float32)
        var = None if summary.variance is None else np.asarray(summary.variance, np.float32)
        input_shape = tuple(summary.input_shape)
    else:
        data = _load_arrays(spec, imbalance_ratio=imbalance_ratio, data_dir=data_dir, seed=seed,
                            num_classes=num_classes, known=None, class_names=class_names,
                            channels_first=channels_first, weight_key=weight_key)
        space = LabelSpace(data.mode, data.names)
        k = space.num_classes
        weights_from = data.weights_from
        w = data.w

        def rows(indices):
            return None if w is None else w[indices]

        if rule is not None:
            tr, va, te = splits.stratified_parts(data.y, space.keys, rule)
            x_train, y_train, w_train = data.x[tr], data.y[tr], rows(tr)
            validation = arrays.array_split("validation", data.x[va], data.y[va], k,
                                            origins["validation"], rows(va))
            require_held_out(validation, dataset, p)
            if data.test is not None and eval_spec is None:
                eval_split = arrays.array_split("eval", data.test[0], data.test[1], k,
                                                origins["eval"])
            elif three_part:
                eval_split = arrays.array_split("eval", data.x[te], data.y[te], k, origins["eval"],
                                                rows(te))
                require_test(eval_split, dataset, t)
        else:
            x_train, y_train, w_train = data.x, data.y, w
        train = arrays.array_split("train", x_train, y_train, k, origins["train"], w_train)
        mean, var = _moments(x_train)
        input_shape = train.input_shape

    # --- explicit eval ---
    if eval_spec is not None:
        if eval_spec.kind in ("csv", "tfrecord"):
            if (eval_spec.kind == "csv") != (schema is not None):
                raise InputDataError(
                    f"eval_dataset={eval_dataset!r}: a CSV file is evaluated with a model trained on "
                    "a CSV file (its named columns), not on another kind of data",
                    argument="eval_dataset", value=eval_dataset)
            eval_weights = None
            if eval_spec.kind == "tfrecord" and weights_from is not None and tfrecord_weights in \
                    tfrecord_source.first_record_keys(tfrecord_source.expand(eval_spec.path)):
                eval_weights = tfrecord_weights
            esum, ebuild, eval_weights_from = _stream_scan(
                eval_spec, None, known=space, num_classes=None, columns=ColumnOptions(),
                schema=schema, weight_key=eval_weights, **common)
            eval_split = _stream_split("eval", esum, ebuild, esum.train_counts, [], origins["eval"],
                                       eval_weights_from is not None)
            first_row = lambda c: esum.first_rows[c]  # noqa: E731
        else:
            eval_key = weight_key if weights_from is not None else weights.NO_WEIGHTS
            edata = _load_arrays(eval_spec, imbalance_ratio=imbalance_ratio, data_dir=data_dir,
                                 seed=seed, num_classes=None, known=space,
                                 channels_first=channels_first,
                                 weight_key=None if eval_spec.kind in _BENCHMARKS else eval_key,
                                 weights_required=False)
            ex, ey = edata.test if edata.test is not None else (edata.x, edata.y)
            eval_split = arrays.array_split("eval", ex, ey, k, origins["eval"], edata.w)
            first_row = lambda c: int(np.argmax(ey == c)) + 1  # noqa: E731
        if tuple(eval_split.input_shape) != tuple(input_shape):
            raise InputDataError(
                f"eval_dataset={eval_dataset!r} has feature shape {tuple(eval_split.input_shape)}, "
                f"the training data {dataset!r} has {tuple(input_shape)}",
                argument="eval_dataset", value=eval_dataset)
        column = {"csv": label_column, "tfrecord": label_key}.get(eval_spec.kind, "y")
        _check_eval_seen(train.class_counts, eval_split, space.names,
                         eval_spec.path or str(eval_spec), column, first_row)

    notes = _class_notes(list(space.names), train, validation, eval_split if three_part else None)
    description = _describe(spec, eval_spec, rule, train, eval_split, validation, space.names)
    if schema is not None:
        description += f"; {schema.describe()}"
    if weights_from is not None:
        description += "; " + _describe_weights(weights_from, spec, weight_key, eval_split)
    return DataBundle(train=train, eval=eval_split, num_classes=k, class_names=list(space.names),
                      feature_mean=mean, feature_variance=var, description=description, schema=schema,
                      validation=validation, notes=notes, sample_weights=weights_from)


def _describe_weights(weights_from: str, spec: DatasetSpec, weight_key: Optional[str],
                      eval_split: DataSplit) -> str:
    """The description's words on sample weights: where they come from, which splits carry them."""
    found = spec.kind == "npz" and weight_key is None
    text = f"sample weights: {weights_from}" + (
        " (found in the file; weight_key='none' ignores it)" if found else "")
    if not eval_split.weighted:
        text += f"; the eval rows ({eval_split.origin}) have none"
    return text


def split_origins(spec: DatasetSpec, eval_spec: Optional[DatasetSpec], rule: Optional[SplitRule]) -> dict:
    """How each split is made, a phrase per split name (`DataSplit.origin`)."""
    if spec.kind in _BENCHMARKS:
        pool = f"the long-tailed training pool of {spec}"
    else:
        pool = str(spec)
    if rule is None:
        train = f"all of {pool}"
    elif rule.test > 0:
        train = (f"{pool} minus the validation and test splits (about {1 - rule.held:g} of each "
                 f"class, seed {rule.seed})")
    else:
        train = f"{pool} minus the validation split (about {1 - rule.held:g} of each class, seed {rule.seed})"
    validation = None if rule is None else (
        f"a {rule.validation:g} stratified validation split of {pool} (seed {rule.seed})")
    if eval_spec is not None:
        evaluation = f"eval_dataset {eval_spec}" + (
            " (its test set)" if eval_spec.kind in _BENCHMARKS else "")
    elif spec.kind in _BENCHMARKS:
        evaluation = f"the balanced test set of {spec}"
    else:
        evaluation = (f"a {rule.test:g} stratified held-out test split of {pool} (seed {rule.seed}), "
                      "kept for reporting")
    return {"train": train, "validation": validation, "eval": evaluation}


def _describe(spec: DatasetSpec, eval_spec: Optional[DatasetSpec], rule: Optional[SplitRule],
              train: DataSplit, eval_split: DataSplit, validation: Optional[DataSplit],
              names: List[str]) -> str:
    """The one-line description of the bundle for logs: each split, its size and its job."""
    counts = train.class_counts[train.class_counts > 0]
    ratio = counts.max() / counts.min() if len(counts) else float("nan")
    chooses = "" if validation is None else (
        f"validation {validation.num_examples:,} ({rule.validation:g} stratified, chooses), ")
    if eval_spec is not None:
        where = chooses + f"eval {eval_split.num_examples:,} from {eval_spec} (reports)"
    elif spec.kind in _BENCHMARKS:
        where = chooses + f"eval {eval_split.num_examples:,} (balanced test set, reports)"
    else:
        where = chooses + (f"eval {eval_split.num_examples:,} ({rule.test:g} stratified held-out "
                           "test split, reports)")
    mapping = describe_classes(names)
    classes = f"{len(names)} classes" + (f" ({mapping})" if mapping else "")
    return (f"{spec}: {classes}, input shape {tuple(train.input_shape)}; "
            f"train {train.num_examples:,} (imbalance {ratio:.1f}x); {where}")
