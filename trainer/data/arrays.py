"""In-memory sources: validating (x, y) arrays, NPZ files, and their tf.data pipeline.

The pipeline shuffles example indices (seeded), batches them, and gathers features in parallel.
"""

from __future__ import annotations

import os
import zipfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from . import labels, splits, stats, weights
from .bundle import DataSplit
from .errors import InputDataError, describe_location
from .labels import LabelSpace


class ArrayPipeline:
    """Batched pipelines over in-memory float32 features, int32 labels and optional float32 weights."""

    def __init__(self, x: np.ndarray, y: np.ndarray, w: Optional[np.ndarray] = None) -> None:
        self._x_np = x
        self._y_np = y
        self._w_np = w
        self._tensors: Optional[Tuple[tf.Tensor, ...]] = None

    def batched(self, batch_size: int, *, shuffle: bool, seed: int, repeat: bool,
                drop_remainder: bool,
                input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
        """See `DataSplit.dataset`; batches are (x, y, w) when the split has sample weights."""
        if self._tensors is None:
            arrays = (self._x_np, self._y_np) + (() if self._w_np is None else (self._w_np,))
            self._tensors = tuple(tf.convert_to_tensor(a) for a in arrays)
        tensors = self._tensors
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
            lambda i: tuple(tf.gather(t, i) for t in tensors))
        ds = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def folds(self, k: int, seed: int, fold_counts: np.ndarray) -> List[Tuple["ArrayPipeline",
                                                                            "ArrayPipeline"]]:
        """(training side, held-out side) pipelines of each fold (`splits.stratified_folds`)."""
        num_classes = int(np.asarray(fold_counts).shape[1])
        w = self._w_np
        out = []
        for j, (train, held) in enumerate(splits.stratified_folds(self._y_np, k, seed, num_classes)):
            counts = np.bincount(self._y_np[held], minlength=num_classes)
            if not np.array_equal(counts, fold_counts[j]):
                raise AssertionError(f"fold {j}: counts {counts.tolist()} differ from the rule's "
                                     f"{np.asarray(fold_counts[j]).tolist()}")
            out.append((ArrayPipeline(self._x_np[train], self._y_np[train],
                                      None if w is None else w[train]),
                        ArrayPipeline(self._x_np[held], self._y_np[held],
                                      None if w is None else w[held])))
        return out


def array_split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int,
                origin: str = "", w: Optional[np.ndarray] = None) -> DataSplit:
    """Wraps validated arrays (and checked sample weights `w`, or None) as a `DataSplit`."""
    return DataSplit(name=name, input_shape=tuple(int(d) for d in x.shape[1:]),
                     class_counts=np.bincount(y, minlength=num_classes).astype(np.int64),
                     num_examples=int(len(y)), pipeline=ArrayPipeline(x, y, w), origin=origin,
                     weighted=w is not None)


def load_npz(path: str, weight_key: Optional[str] = None, *, required: bool = True
             ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[str]]:
    """Reads arrays `x`, `y` and the sample weights (unchecked) from an .npz file.

    Args:
      path: The file.
      weight_key: The array of per-row sample weights: None reads `w` when the file has one
        (`weights.NPZ_DEFAULT_ARRAY`), `'none'` reads none, another name that array.
      required: Whether a named `weight_key` array must be in the file (False: absent means no
        weights, as for an eval file).

    Returns:
      (x, y, weights or None, the weights' array name or None).

    Raises:
      InputDataError: Missing or unreadable file, missing `x`/`y` (naming the arrays present), or a
        `weight_key` array the file lacks (argument `weight_key`).
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
            if weight_key in ("x", "y"):
                what = "features" if weight_key == "x" else "labels"
                raise InputDataError(f"weight_key={weight_key!r} names the {what} of file {path!r}, "
                                     "not sample weights", argument="weight_key", value=weight_key)
            if weight_key is None:
                name = weights.NPZ_DEFAULT_ARRAY if weights.NPZ_DEFAULT_ARRAY in names else None
            elif weight_key == weights.NO_WEIGHTS:
                name = None
            elif weight_key not in names and not required:
                name = None
            elif weight_key not in names:
                raise InputDataError(f"weight_key={weight_key!r} is not an array of file {path!r}; it has "
                                     f"{names}", argument="weight_key", value=weight_key)
            else:
                name = weight_key
            return data["x"], data["y"], None if name is None else data[name], name
    except InputDataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputDataError(f"file {path!r}: cannot read as .npz: {e}") from e


# Channels-first images: (N, C, H, W) with C one of these and H, W larger than this.
_CHANNEL_COUNTS = (1, 3, 4)
_MIN_IMAGE_SIDE = 8


def _channels_last(x: np.ndarray, source: str, channels_first: Optional[bool]) -> np.ndarray:
    """Images as (N, H, W, C): adds the channel axis of (N, H, W), transposes channels-first input.

    Raises:
      InputDataError: (argument `channels_first`) `True` for `x` that is not [N, C, H, W], or
        `None` (not said) for `x` that looks channels-first.
    """
    if channels_first:
        if x.ndim != 4:
            raise InputDataError(
                f"channels_first=True needs images 'x' of shape (N, C, H, W), but file {source!r} "
                f"has shape {x.shape}", argument="channels_first", value=True)
        return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    if x.ndim == 3:
        return x[..., None]
    if (channels_first is None and x.ndim == 4 and x.shape[1] in _CHANNEL_COUNTS
            and x.shape[3] not in _CHANNEL_COUNTS and min(x.shape[2:]) >= _MIN_IMAGE_SIDE):
        raise InputDataError(
            f"channels_first is not set and file {source!r} has images 'x' of shape {x.shape}, "
            f"which looks channels-first (N, C, H, W); images must be channels-last (N, H, W, C): "
            f"save np.transpose(x, (0, 2, 3, 1)) in the file instead, or set it "
            f"(true: transpose on load; false: they are (N, H, W, C) already)",
            argument="channels_first", value=None)
    return x


def _label_keys(y: np.ndarray, source: str) -> Tuple[List[str], np.ndarray, List[int]]:
    """Distinct canonical labels of `y` [N], each example's position among them, first rows.

    Raises:
      InputDataError: A label that is not a number or a string, or a NaN/infinite label.
    """
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            where = "; ".join(describe_location(source, row=int(r) + 1, column="y", value=float(y[r]))
                              for r in bad[:10])
            raise InputDataError(f"label is not a finite number: {where}"
                                 + (f"; and {len(bad) - 10} more" if len(bad) > 10 else ""))
    elif y.dtype == object:
        y = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in y])
    elif y.dtype.kind not in "iuUS":
        raise InputDataError(
            f"file {source!r}: labels 'y' must be numbers or strings, got dtype {y.dtype}")
    uniq, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    raw = [u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u) for u in uniq.tolist()]
    names = [labels.canonical_label(r) for r in raw]
    distinct = sorted(set(names))
    position = {n: i for i, n in enumerate(distinct)}
    remap = np.array([position[n] for n in names], dtype=np.int64)
    first_rows = [len(y)] * len(distinct)
    for n, f in zip(names, first.tolist()):
        first_rows[position[n]] = min(first_rows[position[n]], int(f) + 1)
    return distinct, remap[inverse.reshape(-1)], first_rows


def validate_features(x: np.ndarray, *, num_rows: int, source: str,
                      channels_first: Optional[bool] = None, images: bool = True) -> np.ndarray:
    """Checks features `x` [N, ...] for `num_rows` labels; returns them float32 (images channels-last).

    With `images` an `x` of rank 3 is images `[N, H, W]` (a channel axis is added) and one of rank
    4 may be channels-first (`_channels_last`); without, `x` is kept as given (but for an asked
    `channels_first` transposition).

    Raises:
      InputDataError: A scalar, a length that is not `num_rows`, no rows, a dtype that is not
        numeric, or a non-finite value (naming its row and column); see `_channels_last`.
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise InputDataError(f"file {source!r}: features 'x' must have shape [N, ...], got a scalar")
    if x.ndim == 1:
        x = x[:, None]
    if len(x) != num_rows:
        raise InputDataError(
            f"file {source!r}: x has {len(x)} rows but y has {num_rows} (lengths must match)")
    if num_rows == 0:
        raise InputDataError(f"file {source!r}: no examples (0 rows)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise InputDataError(f"file {source!r}: features 'x' must be numeric, got dtype {x.dtype}")
    if images or channels_first:
        x = _channels_last(x, source, channels_first)
    x = x.astype(np.float32, copy=False)
    bad = stats.first_nonfinite(x)
    if bad is not None:
        row, col = bad
        value = x.reshape(len(x), -1)[row, col]
        where = describe_location(source, row=row + 1, column=col, value=float(value))
        raise InputDataError(f"non-finite feature: {where}")
    return x


def validate_arrays(x: np.ndarray, y: np.ndarray, *, source: str,
                    num_classes: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None,
                    known: Optional[LabelSpace] = None,
                    channels_first: Optional[bool] = None
                    ) -> Tuple[np.ndarray, np.ndarray, LabelSpace]:
    """Checks features and labels and converts them to float32 / int32 class indices.

    Labels that are all integers (integral floats and strings such as '2.0' too) are class
    indices; other labels are class names, sorted (numbers by value, then text) or in the
    order of `class_names` (see `labels.resolve`); an eval set maps to the training `known`.
    Images of shape (N, H, W) get a channel axis (N, H, W, 1), so statistics are per channel.

    Args:
      x: Features [N, ...] (numeric); images [N, H, W] or [N, H, W, C].
      y: Labels [N] (or [N, 1]): numbers or strings.
      source: File (or dataset name) for messages.
      num_classes: If given, integer labels must lie in [0, num_classes).
      class_names: String labels: the class order; integer labels: the names of
        classes 0..K-1.
      known: The training label space, when validating an eval set.
      channels_first: True: `x` is [N, C, H, W], transposed to [N, H, W, C]; False: as
        given; None: as given, refusing `x` that looks channels-first.

    Returns:
      (x float32, y int32, the label space).

    Raises:
      InputDataError: Naming the source, row (1-based), column and value (with `argument`
        "num_classes", "class_names" or "channels_first" when those do not fit the data).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputDataError(f"file {source!r}: labels 'y' must have shape [N], got {y.shape}")
    x = validate_features(x, num_rows=len(y), source=source, channels_first=channels_first)
    names, inverse, first_rows = _label_keys(y, source)
    rows = dict(zip(names, first_rows))

    def at(name: str) -> str:
        value = int(name) if labels.is_int_label(name) else name
        return describe_location(source, row=rows[name], column="y", value=value)

    space = labels.resolve(rows, at=at, source=source, column="y", known=known,
                           num_classes=num_classes, allow_strings=True, class_names=class_names)
    index = np.array([space.index_of(n) for n in names], dtype=np.int32)
    return x, index[inverse], space
