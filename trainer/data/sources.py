"""`load_data`: turns dataset specs (`synthetic`, `csv:PATH`, ...) into a `DataBundle`.

Parses the spec, loads or scans the source, makes the stratified split, and checks eval labels.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from trainer.checks import check_number, check_positive_integer

from . import arrays, csv_source, fashion_mnist, splits, synthetic, tfrecord_source
from .bundle import DataBundle, DataSplit
from .errors import InputDataError, checked, describe_location
from .labels import LabelSpace
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


def _load_arrays(spec: DatasetSpec, *, imbalance_ratio: float, data_dir: Optional[str], seed: int,
                 num_classes: Optional[int], known: Optional[LabelSpace]) -> _Arrays:
    """Loads an in-memory source (synthetic, fashion_mnist_lt, npz) and validates it."""
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
        return _Arrays(x, y, names, "int", (xt, yt))
    x, y = arrays.load_npz(spec.path)
    names_known = None if known is None else known.names
    x, y, names = arrays.validate_arrays(
        x, y, source=spec.path, num_classes=num_classes if known is None else None,
        class_names=names_known)
    mode = known.mode if known is not None else ("int" if y.dtype.kind in "iu" and names == [
        str(i) for i in range(len(names))] else "string")
    return _Arrays(x, y, names, mode)


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


def _require_held_out(split: DataSplit, dataset: str, p: float) -> None:
    """Raises if the held-out split is empty."""
    if split.num_examples == 0:
        raise InputDataError(
            f"validation_split={p} holds out no examples of {dataset} (too few examples per "
            "class); raise it or give separate evaluation data", argument="validation_split", value=p)


def _stream_scan(spec: DatasetSpec, p: Optional[float], *, label_column: str, feature_key: str,
                 label_key: str, seed: int, known: Optional[LabelSpace],
                 num_classes: Optional[int], cache_dir: Optional[str]
                 ) -> Tuple[StreamSummary, Callable[[], tf.data.Dataset]]:
    """Scans a streamed source; returns (summary, builder of parsed batches)."""
    if spec.kind == "csv":
        summary = csv_source.scan(spec.path, label_column=label_column, validation_split=p,
                                  seed=seed, known=known, num_classes=num_classes,
                                  cache_dir=cache_dir)
        space = LabelSpace(summary.label_mode, summary.class_names)
        return summary, csv_source.parsed_batches(spec.path, label_column, space)
    summary, files = tfrecord_source.scan(spec.path, feature_key=feature_key, label_key=label_key,
                                          validation_split=p, seed=seed, known=known,
                                          num_classes=num_classes, cache_dir=cache_dir)
    return summary, tfrecord_source.parsed_batches(files, feature_key, label_key,
                                                   summary.input_shape[0])


def _stream_split(name: str, summary: StreamSummary, build: Callable[[], tf.data.Dataset],
                  counts: List[int], split: Optional[Tuple[np.ndarray, float, bool]]) -> DataSplit:
    """A streamed `DataSplit`: one side (`split`) of the parsed batches `build` returns."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    n = int(counts_arr.sum())
    return DataSplit(name=name, input_shape=tuple(summary.input_shape), class_counts=counts_arr,
                     num_examples=n,
                     pipeline=StreamPipeline(build, len(summary.class_names), split,
                                             summary.input_shape, n))


def load_data(dataset: str, *, eval_dataset: Optional[str] = None, validation_split: float = 0.2,
              label_column: str = "label", feature_key: str = "features", label_key: str = "label",
              imbalance_ratio: float = 100.0, data_dir: Optional[str] = None, seed: int = 0,
              num_classes: Optional[int] = None, cache_dir: Optional[str] = None,
              hold_out_validation: bool = False) -> DataBundle:
    """Loads (or scans) the training and eval data and validates every example.

    Args:
      dataset: `synthetic`, `fashion_mnist_lt`, `npz:PATH`, `csv:PATH` or `tfrecord:GLOB`.
      eval_dataset: Same forms; None for the default held-out data (below).
      validation_split: Held-out fraction in (0, 1), stratified per class.
      label_column: CSV label column.
      feature_key: TFRecord float feature vector key.
      label_key: TFRecord int64 label key.
      imbalance_ratio: Largest/smallest class ratio of `synthetic` and `fashion_mnist_lt`.
      data_dir: Directory of the Fashion-MNIST .gz files (default: Debian's).
      seed: Seed of the generators, subsamples and splits.
      num_classes: If given, integer labels must lie in [0, num_classes).
      cache_dir: Where the streamed sources cache their statistics (JSON).
      hold_out_validation: With `eval_dataset` given, still hold out a stratified
        `validation_split` of `dataset` as `validation` (for the recall-target
        controller, calibration and recall callbacks, which must not see the
        evaluation data); training then uses the rest.

    With `eval_dataset` None, `synthetic` and `fashion_mnist_lt` train on their long-tailed
    pool minus a stratified `validation` split and evaluate on their balanced test set; other
    sources split into train and eval (`validation` is `eval`). With `eval_dataset` given,
    training uses the whole `dataset` and `validation` is None, unless
    `hold_out_validation`, which keeps the stratified `validation` split of `dataset`.

    Returns:
      The `DataBundle`.

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
    hold_out = eval_spec is None or hold_out_validation
    p = splits.check_validation_split(validation_split) if hold_out else None
    common = dict(label_column=label_column, feature_key=feature_key, label_key=label_key,
                  seed=seed, cache_dir=cache_dir)
    validation: Optional[DataSplit] = None

    # --- training side ---
    if spec.kind in ("csv", "tfrecord"):
        summary, build = _stream_scan(spec, p, known=None, num_classes=num_classes, **common)
        space = LabelSpace(summary.label_mode, summary.class_names)
        k = space.num_classes
        offsets = splits.class_offsets(space.names, seed, p) if p is not None else None
        train = _stream_split("train", summary, build, summary.train_counts,
                              None if p is None else (offsets, p, False))
        if p is not None:
            held = _stream_split("eval" if eval_spec is None else "validation", summary, build,
                                 summary.held_counts, (offsets, p, True))
            _require_held_out(held, dataset, p)
            eval_split = validation = held  # an explicit eval_dataset replaces eval below
        mean = None if summary.mean is None else np.asarray(summary.mean, np.float32)
        var = None if summary.variance is None else np.asarray(summary.variance, np.float32)
        input_shape = tuple(summary.input_shape)
    else:
        data = _load_arrays(spec, imbalance_ratio=imbalance_ratio, data_dir=data_dir, seed=seed,
                            num_classes=num_classes, known=None)
        space = LabelSpace(data.mode, data.names)
        k = space.num_classes
        if p is not None:
            tr, ho = splits.stratified_indices(data.y, data.names, seed, p)
            x_train, y_train = data.x[tr], data.y[tr]
            separate_eval = data.test is not None or eval_spec is not None
            held = arrays.array_split("validation" if separate_eval else "eval",
                                      data.x[ho], data.y[ho], k)
            _require_held_out(held, dataset, p)
            if data.test is not None:
                validation = held
                eval_split = arrays.array_split("eval", data.test[0], data.test[1], k)
            else:  # an explicit eval_dataset replaces eval below
                eval_split = validation = held
        else:
            x_train, y_train = data.x, data.y
        train = arrays.array_split("train", x_train, y_train, k)
        mean, var = _moments(x_train)
        input_shape = train.input_shape

    # --- explicit eval ---
    if eval_spec is not None:
        if eval_spec.kind in ("csv", "tfrecord"):
            esum, ebuild = _stream_scan(eval_spec, None, known=space, num_classes=None, **common)
            eval_split = _stream_split("eval", esum, ebuild, esum.train_counts, None)
            first_row = lambda c: esum.first_rows[c]  # noqa: E731
        else:
            edata = _load_arrays(eval_spec, imbalance_ratio=imbalance_ratio, data_dir=data_dir,
                                 seed=seed, num_classes=None, known=space)
            ex, ey = edata.test if edata.test is not None else (edata.x, edata.y)
            eval_split = arrays.array_split("eval", ex, ey, k)
            first_row = lambda c: int(np.argmax(ey == c)) + 1  # noqa: E731
        if tuple(eval_split.input_shape) != tuple(input_shape):
            raise InputDataError(
                f"eval_dataset={eval_dataset!r} has feature shape {tuple(eval_split.input_shape)}, "
                f"the training data {dataset!r} has {tuple(input_shape)}",
                argument="eval_dataset", value=eval_dataset)
        column = {"csv": label_column, "tfrecord": label_key}.get(eval_spec.kind, "y")
        _check_eval_seen(train.class_counts, eval_split, space.names,
                         eval_spec.path or str(eval_spec), column, first_row)

    description = _describe(spec, eval_spec, p, train, eval_split, validation, space.names)
    return DataBundle(train=train, eval=eval_split, num_classes=k, class_names=list(space.names),
                      feature_mean=mean, feature_variance=var, description=description,
                      validation=validation)


def _describe(spec: DatasetSpec, eval_spec: Optional[DatasetSpec], p: Optional[float],
              train: DataSplit, eval_split: DataSplit, validation: Optional[DataSplit],
              names: List[str]) -> str:
    """The one-line description of the bundle for logs."""
    counts = train.class_counts[train.class_counts > 0]
    ratio = counts.max() / counts.min() if len(counts) else float("nan")
    if eval_spec is not None:
        where = f"eval {eval_split.num_examples:,} from {eval_spec}"
        if validation is not None:
            where = f"validation {validation.num_examples:,} ({p:g} stratified), " + where
    elif validation is not None and validation is not eval_split:
        where = (f"validation {validation.num_examples:,} ({p:g} stratified), "
                 f"eval {eval_split.num_examples:,} (balanced test set)")
    else:
        where = f"eval {eval_split.num_examples:,} ({p:g} stratified split)"
    return (f"{spec}: {len(names)} classes, input shape {tuple(train.input_shape)}; "
            f"train {train.num_examples:,} (imbalance {ratio:.1f}x); {where}")
