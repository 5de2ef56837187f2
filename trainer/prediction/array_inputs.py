"""The rows of an NPZ array or of TFRecord files, for a model not trained on a table.

`npz:PATH`: array `x` (read into memory) shaped as the training read its NPZ (a channel axis
added to `(N, H, W)`, channels-first images transposed when the training was told so);
`keep_columns` names other arrays, one value per row. `tfrecord:GLOB`: `tf.train.Example`
records (streamed, files in sorted order) whose float list `feature_key` is a row (the label
key may be absent); `keep_columns` names other keys holding one value per record.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.data import tfrecord_source
from trainer.data.errors import InputDataError, describe_location, tf_message

from .batches import InputBatch, PredictionInput, as_text, check_keep_columns, listed, plural


def _fit_shape(x: np.ndarray, input_shape: Tuple[int, ...], channels_first: Optional[bool], spec: str,
               path: str) -> np.ndarray:
    """`x` as `[N, *input_shape]` the way training read its NPZ (a channel axis added, or
    channels-first images transposed when the training said so).

    Raises:
      InputDataError: (argument `input`) when `x` cannot take that shape.
    """
    if x.ndim == 1:
        x = x[:, None]
    if channels_first and x.ndim == 4:
        x = np.transpose(x, (0, 2, 3, 1))
    elif x.ndim == len(input_shape) and tuple(x.shape[1:]) + (1,) == input_shape:
        x = x[..., None]
    if tuple(x.shape[1:]) != input_shape:
        hint = ""
        if x.ndim == 4 and (x.shape[2], x.shape[3], x.shape[1]) == input_shape:
            hint = ("; it looks channels-first (N, C, H, W): save np.transpose(x, (0, 2, 3, 1)) "
                    "instead")
        raise InputDataError(
            f"input={spec!r}: array 'x' of file {path!r} has shape {tuple(x.shape)} but the model "
            f"takes rows of shape {input_shape}{hint}", argument="input", value=spec)
    return x


def _check_finite(x: np.ndarray, path: str) -> None:
    if len(x) == 0:
        return
    flat = x.reshape(len(x), -1)
    bad_rows = ~np.isfinite(flat).all(axis=1)
    if bad_rows.any():
        row = int(np.argmax(bad_rows))
        column = int(np.argmax(~np.isfinite(flat[row])))
        where = describe_location(path, row=row + 1, column=column, value=float(flat[row, column]))
        raise InputDataError(f"file {path!r}: {int(bad_rows.sum()):,} rows of 'x' hold NaN or Inf "
                             f"(first: {where}); the model was trained on finite values")


class NpzInput(PredictionInput):
    """The rows of array `x` of an .npz file (read into memory), for a model not trained on a table.

    `keep_columns` names other arrays of the file, each `[N]`.
    """

    def __init__(self, spec: str, path: str, input_shape: Sequence[int], *,
                 keep_columns: Sequence[str] = (), batch_size: int = 1024,
                 channels_first: Optional[bool] = None):
        self.spec, self.path, self.paths = spec, path, [path]
        if not os.path.isfile(path):
            raise InputDataError(f"input={spec!r}: npz file not found: {path!r}", argument="input",
                                 value=spec)
        try:
            with np.load(path, allow_pickle=False) as data:
                names = list(data.files)
                if "x" not in names:
                    raise InputDataError(f"input={spec!r}: file {path!r} has no array 'x' (the rows "
                                         f"to predict on); it has {names}", argument="input", value=spec)
                check_keep_columns(spec, keep_columns, names, "array")
                x = np.asarray(data["x"])
                kept = [np.asarray(data[k]) for k in keep_columns]
        except InputDataError:
            raise
        except (OSError, ValueError) as error:
            raise InputDataError(f"file {path!r}: cannot read as .npz: {error}") from None
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or x.ndim == 0:
            raise InputDataError(f"input={spec!r}: array 'x' of file {path!r} must be numeric "
                                 f"[N, ...], got dtype {x.dtype} shape {x.shape}", argument="input",
                                 value=spec)
        self.x = _fit_shape(x, tuple(int(d) for d in input_shape), channels_first, spec, path)
        _check_finite(self.x, path)
        wrong = [f"{k!r} {a.shape}" for k, a in zip(keep_columns, kept)
                 if a.ndim not in (1, 2) or a.shape[0] != len(self.x) or a.size != len(self.x)]
        if wrong:
            raise InputDataError(f"keep_columns: array{plural(wrong, '', 's')} {', '.join(wrong)} of "
                                 f"file {path!r} must have one value per row of 'x' ({len(self.x)})",
                                 argument="keep_columns", value=",".join(keep_columns))
        self.kept_names = list(keep_columns)
        self.kept = [as_text(a.reshape(-1)) for a in kept]
        self.batch_size = int(batch_size)

    def batches(self) -> Iterator[InputBatch]:
        """See `PredictionInput.batches`."""
        for start in range(0, len(self.x), self.batch_size):
            end = min(start + self.batch_size, len(self.x))
            kept = np.stack([a[start:end] for a in self.kept], axis=1).tolist() if self.kept \
                else [[] for _ in range(end - start)]
            yield InputBatch({"features": tf.constant(self.x[start:end], tf.float32)}, kept, end - start)


_KINDS = {"float_list": tf.float32, "int64_list": tf.int64, "bytes_list": tf.string}


class TfrecordInput(PredictionInput):
    """The `tf.train.Example` records of files matching a glob, for a model not trained on a table.

    Each record's float list `feature_key` is a row (the label key may be absent);
    `keep_columns` names other keys holding one value per record.
    """

    def __init__(self, spec: str, pattern: str, input_shape: Sequence[int], *, feature_key: str,
                 keep_columns: Sequence[str] = (), batch_size: int = 1024):
        self.spec, self.paths = spec, tfrecord_source.expand(pattern)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.feature_key = feature_key
        self.kept_names = list(keep_columns)
        self.batch_size = int(batch_size)
        self.kinds: Dict[str, tf.DType] = {}
        first = self._first_record()
        if first is not None:
            self._check_first(first)

    def _first_record(self) -> Optional[tf.train.Example]:
        for path in self.paths:
            try:
                for raw in tf.data.TFRecordDataset(path).take(1):
                    return tf.train.Example.FromString(raw.numpy())
            except tf.errors.DataLossError as error:
                raise InputDataError(f"file {path!r}: not a TFRecord file or corrupted: "
                                     f"{tf_message(error)}") from None
        return None

    def _check_first(self, example: tf.train.Example) -> None:
        features = example.features.feature
        keys = sorted(features.keys())
        where = describe_location(self.paths[0], row=1)
        if self.feature_key not in features:
            raise InputDataError(f"feature_key={self.feature_key!r} is not a key of {where}; the record "
                                 f"has keys {keys}", argument="feature_key", value=self.feature_key)
        values = features[self.feature_key]
        size = int(np.prod(self.input_shape))
        if values.WhichOneof("kind") != "float_list" or len(values.float_list.value) != size:
            raise InputDataError(
                f"input={self.spec!r}: key {self.feature_key!r} of {where} must be a float_list of "
                f"{size} values (the model takes rows of shape {self.input_shape})",
                argument="input", value=self.spec)
        check_keep_columns(self.spec, self.kept_names, keys, "key")
        wrong = [k for k in self.kept_names if features[k].WhichOneof("kind") not in _KINDS
                 or len(getattr(features[k], features[k].WhichOneof("kind")).value) != 1]
        if wrong:
            raise InputDataError(f"keep_columns: key{plural(wrong, '', 's')} {listed(wrong)} of {where} "
                                 "must hold one value per record", argument="keep_columns",
                                 value=",".join(wrong))
        self.kinds = {k: _KINDS[features[k].WhichOneof("kind")] for k in self.kept_names}

    def _parser(self):
        spec = {self.feature_key: tf.io.FixedLenFeature([int(np.prod(self.input_shape))], tf.float32)}
        spec.update({k: tf.io.FixedLenFeature([], dtype) for k, dtype in self.kinds.items()})

        @tf.autograph.experimental.do_not_convert
        def parse(serialized):
            parsed = tf.io.parse_example(serialized, spec)
            features = tf.reshape(parsed[self.feature_key], [-1, *self.input_shape])
            kept = [parsed[k] if self.kinds[k] == tf.string else tf.strings.as_string(parsed[k])
                    for k in self.kept_names]
            kept = (tf.stack(kept, axis=1) if kept else tf.fill([tf.shape(serialized)[0], 0], ""))
            return features, kept
        return parse

    def batches(self) -> Iterator[InputBatch]:
        """See `PredictionInput.batches`."""
        dataset = (tf.data.TFRecordDataset(self.paths, buffer_size=1 << 20).batch(self.batch_size)
                   .map(self._parser(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                   .prefetch(2))
        iterator, start = iter(dataset), 0
        while True:
            try:
                features, kept = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as error:
                raise InputDataError(
                    f"input {self.spec!r}: cannot read records {start + 1}-{start + self.batch_size} "
                    f"(counted across {len(self.paths)} file(s) in sorted order): "
                    f"{tf_message(error)}") from None
            rows = int(features.shape[0])
            yield InputBatch({"features": features}, as_text(kept.numpy()).tolist(), rows)
            start += rows
