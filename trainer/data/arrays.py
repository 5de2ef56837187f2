"""In-memory sources: validating (x, y) arrays, NPZ files, and their tf.data pipeline.

The pipeline shuffles example indices (seeded), batches them, and gathers features in parallel.
"""

from __future__ import annotations

import os
import zipfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from . import splits, stats
from .bundle import DataSplit
from .errors import InputDataError, describe_location


class ArrayPipeline:
    """Batched pipelines over in-memory float32 features and int32 labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self._x_np = x
        self._y_np = y
        self._tensors: Optional[Tuple[tf.Tensor, tf.Tensor]] = None

    def batched(self, batch_size: int, *, shuffle: bool, seed: int, repeat: bool,
                drop_remainder: bool,
                input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
        """See `DataSplit.dataset`."""
        if self._tensors is None:
            self._tensors = (tf.convert_to_tensor(self._x_np), tf.convert_to_tensor(self._y_np))
        x, y = self._tensors
        n = len(self._y_np)
        indices = tf.data.Dataset.range(n)
        if input_context is not None and input_context.num_input_pipelines > 1:
            indices = indices.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        if shuffle:
            indices = indices.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            indices = indices.repeat()
        indices = indices.batch(batch_size, drop_remainder=drop_remainder)
        gather = tf.autograph.experimental.do_not_convert(
            lambda i: (tf.gather(x, i), tf.gather(y, i)))
        ds = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def folds(self, k: int, seed: int, fold_counts: np.ndarray) -> List[Tuple["ArrayPipeline",
                                                                            "ArrayPipeline"]]:
        """(training side, held-out side) pipelines of each fold (`splits.stratified_folds`)."""
        num_classes = int(np.asarray(fold_counts).shape[1])
        out = []
        for j, (train, held) in enumerate(splits.stratified_folds(self._y_np, k, seed, num_classes)):
            counts = np.bincount(self._y_np[held], minlength=num_classes)
            if not np.array_equal(counts, fold_counts[j]):
                raise AssertionError(f"fold {j}: counts {counts.tolist()} differ from the rule's "
                                     f"{np.asarray(fold_counts[j]).tolist()}")
            out.append((ArrayPipeline(self._x_np[train], self._y_np[train]),
                        ArrayPipeline(self._x_np[held], self._y_np[held])))
        return out


def array_split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int,
                origin: str = "") -> DataSplit:
    """Wraps validated arrays as a `DataSplit`."""
    return DataSplit(name=name, input_shape=tuple(int(d) for d in x.shape[1:]),
                     class_counts=np.bincount(y, minlength=num_classes).astype(np.int64),
                     num_examples=int(len(y)), pipeline=ArrayPipeline(x, y), origin=origin)


def load_npz(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Reads arrays `x` and `y` from an .npz file.

    Raises:
      InputDataError: Missing or unreadable file, or missing `x`/`y` (naming the arrays present).
    """
    if not os.path.isfile(path):
        raise InputDataError(f"npz file not found: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            missing = [k for k in ("x", "y") if k not in names]
            if missing:
                raise InputDataError(
                    f"file {path!r}: npz is missing array(s) {missing}; it has {names} "
                    "(expected 'x' = features [N, ...] and 'y' = labels [N])")
            return data["x"], data["y"]
    except InputDataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputDataError(f"file {path!r}: cannot read as .npz: {e}") from e


def validate_arrays(x: np.ndarray, y: np.ndarray, *, source: str,
                    num_classes: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None
                    ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Checks features and labels and converts them to float32 / int32 class indices.

    Integer labels are class indices; string labels map to the sorted unique names
    (or, for an eval set, to the training `class_names`).

    Args:
      x: Features [N, ...] (numeric).
      y: Labels [N] (or [N, 1]): integers or strings.
      source: File (or dataset name) for messages.
      num_classes: If given, integer labels must lie in [0, num_classes).
      class_names: Training class names, when validating an eval set.

    Returns:
      (x float32, y int32, class_names).

    Raises:
      InputDataError: Naming the source, row (1-based), column and value (with `argument`
        "num_classes" when the labels do not fit `num_classes`).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputDataError(f"file {source!r}: labels 'y' must have shape [N], got {y.shape}")
    x = np.asarray(x)
    if x.ndim == 0:
        raise InputDataError(f"file {source!r}: features 'x' must have shape [N, ...], got a scalar")
    if x.ndim == 1:
        x = x[:, None]
    if len(x) != len(y):
        raise InputDataError(
            f"file {source!r}: x has {len(x)} rows but y has {len(y)} (lengths must match)")
    if len(y) == 0:
        raise InputDataError(f"file {source!r}: no examples (0 rows)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise InputDataError(f"file {source!r}: features 'x' must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = stats.first_nonfinite(x)
    if bad is not None:
        row, col = bad
        value = x.reshape(len(x), -1)[row, col]
        where = describe_location(source, row=row + 1, column=col, value=float(value))
        raise InputDataError(f"non-finite feature: {where}")

    if y.dtype.kind in "US" or y.dtype == object:
        keys = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in y],
                        dtype=object)
        names = list(class_names) if class_names is not None else sorted(set(keys.tolist()))
        index = {n: i for i, n in enumerate(names)}
        labels = np.empty(len(y), dtype=np.int32)
        for i, k in enumerate(keys):
            if k not in index:
                raise InputDataError(
                    f"label unseen in training: {describe_location(source, row=i + 1, column='y', value=k)}; "
                    f"training classes: {names}")
            labels[i] = index[k]
        if num_classes is not None and class_names is None and num_classes != len(names):
            raise InputDataError(
                f"num_classes={num_classes} but file {source!r} has {len(names)} string labels {names}",
                argument="num_classes", value=num_classes)
        return x, labels, names

    if y.dtype.kind == "f":
        nonint = ~np.isfinite(y) | (y != np.round(y))
        if nonint.any():
            row = int(np.argmax(nonint))
            where = describe_location(source, row=row + 1, column="y", value=float(y[row]))
            raise InputDataError(f"label is not an integer: {where}")
    elif y.dtype.kind not in "iub":
        raise InputDataError(f"file {source!r}: labels 'y' must be integers or strings, got dtype {y.dtype}")
    y64 = y.astype(np.int64)
    negative = y64 < 0
    if negative.any():
        row = int(np.argmax(negative))
        raise InputDataError(
            f"negative label: {describe_location(source, row=row + 1, column='y', value=int(y64[row]))}")
    limit = num_classes if num_classes is not None else (
        len(class_names) if class_names is not None else None)
    if limit is not None:
        over = y64 >= limit
        if over.any():
            row = int(np.argmax(over))
            where = describe_location(source, row=row + 1, column="y", value=int(y64[row]))
            if num_classes is not None:
                raise InputDataError(
                    f"num_classes={num_classes}, but label out of range [0, {limit}): {where}",
                    argument="num_classes", value=num_classes)
            raise InputDataError(f"label out of range [0, {limit}) set by the training classes: {where}")
    names = list(class_names) if class_names is not None else [
        str(i) for i in range(limit if limit is not None else int(y64.max()) + 1)]
    return x, y64.astype(np.int32), names
