"""The `tfrecord:GLOB` source: tf.train.Example records with a float feature vector and an int64 label.

Files matching the glob (or in a directory) are streamed in sorted order and parsed in batches. With
`weight_key`, each record also holds one float sample weight under that key.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from . import stats, streaming
from .errors import InputDataError, describe_location, tf_message
from .labels import LabelSpace
from .splits import SplitRule
from .stats import SplitCounter, StreamSummary
from .weights import WeightScan


def expand(pattern: str) -> List[str]:
    """Sorted files matching a glob, or in a directory.

    Raises:
      InputDataError: If nothing matches.
    """
    if os.path.isdir(pattern):
        files = [os.path.join(pattern, f) for f in sorted(os.listdir(pattern))]
        files = [f for f in files if os.path.isfile(f)]
    else:
        files = sorted(f for f in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(f))
    if not files:
        raise InputDataError(f"tfrecord:{pattern}: no files match {pattern!r}")
    return files


def _kind(feature: tf.train.Feature) -> str:
    """Which list a feature holds: 'float_list', 'int64_list', 'bytes_list' or 'empty'."""
    return feature.WhichOneof("kind") or "empty"


def _check_example(example: tf.train.Example, path: str, record: int, feature_key: str,
                   label_key: str, feature_dim: Optional[int], weight_key: Optional[str] = None) -> int:
    """Checks one example; returns its feature length.

    Raises:
      InputDataError: Naming file, record, key and what was found (with `argument`
        "feature_key", "label_key" or "weight_key" when the record has no such key).
    """
    features = example.features.feature
    keys = sorted(features.keys())
    named = ((feature_key, "feature_key"), (label_key, "label_key")) + (
        () if weight_key is None else ((weight_key, "weight_key"),))
    for key, argument in named:
        if key not in features:
            raise InputDataError(
                f"{argument}={key!r} is not a key of {describe_location(path, row=record)}; "
                f"the record has keys {keys}", argument=argument, value=key)
    f = features[feature_key]
    if _kind(f) != "float_list":
        raise InputDataError(
            f"feature {feature_key!r} must be a float_list: {describe_location(path, row=record)} "
            f"has a {_kind(f)}")
    values = np.asarray(f.float_list.value, dtype=np.float32)
    if feature_dim is not None and len(values) != feature_dim:
        raise InputDataError(
            f"ragged record: {describe_location(path, row=record, column=feature_key)} has "
            f"{len(values)} values, the first record has {feature_dim}")
    if len(values) == 0:
        where = describe_location(path, row=record, column=feature_key)
        raise InputDataError(f"empty feature vector: {where}")
    lab = features[label_key]
    if _kind(lab) != "int64_list" or len(lab.int64_list.value) != 1:
        shown = list(getattr(lab, _kind(lab)).value)[:5] if _kind(lab) != "empty" else []
        where = describe_location(path, row=record, column=label_key, value=shown)
        raise InputDataError(f"label {label_key!r} must be one int64: {where} ({_kind(lab)})")
    if weight_key is not None:
        w = features[weight_key]
        if _kind(w) != "float_list" or len(w.float_list.value) != 1:
            shown = list(getattr(w, _kind(w)).value)[:5] if _kind(w) != "empty" else []
            where = describe_location(path, row=record, column=weight_key, value=shown)
            raise InputDataError(f"weight_key={weight_key!r}: the sample weight must be one float (a "
                                 f"float_list of one value): {where} ({_kind(w)})",
                                 argument="weight_key", value=weight_key)
    return len(values)


def _records(path: str, start: int, count: int):
    """Yields (1-based record number, serialized record) for `count` records from `start`."""
    for i, rec in enumerate(tf.data.TFRecordDataset(path).skip(start).take(count)):
        yield start + i + 1, rec.numpy()


def _first_feature_dim(files: List[str], feature_key: str, label_key: str,
                       weight_key: Optional[str] = None) -> int:
    """Checks the first record of the first non-empty file; returns its feature length."""
    for path in files:
        try:
            for record, raw in _records(path, 0, 1):
                return _check_example(tf.train.Example.FromString(raw), path, record,
                                      feature_key, label_key, None, weight_key)
        except tf.errors.DataLossError as e:
            raise InputDataError(
                f"file {path!r}: not a TFRecord file or corrupted: {tf_message(e)}") from None
        except Exception as e:  # DecodeError from protobuf
            if isinstance(e, InputDataError):
                raise
            raise InputDataError(f"file {path!r}, row 1: not a tf.train.Example: {e}") from None
    raise InputDataError(f"no records in {files!r}: every file is empty")


def _parser(feature_key: str, label_key: str, feature_dim: int, weight_key: Optional[str] = None):
    """A batch parser: serialized examples [B] -> (float32 [B, F], int64 labels [B][, float32 [B]])."""
    spec = {feature_key: tf.io.FixedLenFeature([feature_dim], tf.float32),
            label_key: tf.io.FixedLenFeature([], tf.int64)}
    if weight_key is not None:
        spec[weight_key] = tf.io.FixedLenFeature([], tf.float32)

    @tf.autograph.experimental.do_not_convert
    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        if weight_key is None:
            return parsed[feature_key], parsed[label_key]
        return parsed[feature_key], parsed[label_key], parsed[weight_key]
    return parse


def first_record_keys(files: List[str]) -> List[str]:
    """The keys of the first record of the first non-empty file (empty when every file is)."""
    for path in files:
        try:
            for _, raw in _records(path, 0, 1):
                return sorted(tf.train.Example.FromString(raw).features.feature.keys())
        except Exception:  # noqa: BLE001 - a bad file is reported by `scan`
            return []
    return []


def _locate(path: str, start: int, error: tf.errors.OpError, feature_key: str, label_key: str,
            feature_dim: int, weight_key: Optional[str] = None) -> InputDataError:
    """Finds the bad record in the batch starting at record `start` (0-based) of `path`."""
    try:
        for record, raw in _records(path, start, streaming.STATS_BATCH):
            _check_example(tf.train.Example.FromString(raw), path, record, feature_key,
                           label_key, feature_dim, weight_key)
    except InputDataError as e:
        return e
    except tf.errors.DataLossError as e:
        return InputDataError(f"file {path!r}: corrupted after record {start}: {tf_message(e)}")
    except Exception as e:  # protobuf DecodeError
        return InputDataError(f"file {path!r}: a record after record {start} is not a tf.train.Example: {e}")
    return InputDataError(f"file {path!r}: cannot parse records {start + 1}-{start + streaming.STATS_BATCH}: "
                          f"{tf_message(error)}")


def scan(pattern: str, *, feature_key: str, label_key: str, rule: Optional[SplitRule],
         known: Optional[LabelSpace] = None, num_classes: Optional[int] = None,
         cache_dir: Optional[str] = None,
         class_names: Optional[Sequence[str]] = None,
         weight_key: Optional[str] = None) -> Tuple[StreamSummary, List[str]]:
    """One streaming pass over every file: validates records, counts classes, split and moments.

    Args:
      pattern: A glob, or a directory (every file in it).
      feature_key: The key of the float feature vector.
      label_key: The key of the int64 label.
      rule: The split (fractions and seed), or None to keep every record for training.
      known: The training label space (for an eval set).
      num_classes: If given, labels must lie in [0, num_classes).
      cache_dir: Where to cache the summary as JSON (keyed by files, mtimes and sizes).
      class_names: Names of classes 0..K-1 (display names; the labels are integers).
      weight_key: The key of each record's float sample weight (finite, >= 0), or None.

    Returns:
      (summary, files).

    Raises:
      InputDataError: At the first bad record (file and 1-based record number); for bad sample
        weights after the pass, naming the first and how many (argument `weight_key`).
    """
    files = expand(pattern)
    if weight_key is not None and weight_key in (feature_key, label_key):
        raise InputDataError(f"weight_key={weight_key!r} is also the "
                             f"{'feature_key' if weight_key == feature_key else 'label_key'}: sample "
                             "weights need a key of their own", argument="weight_key", value=weight_key)
    key = {"kind": "tfrecord", "files": stats.file_signature(files), "feature_key": feature_key,
           "label_key": label_key, "weight_key": weight_key, "split": stats.rule_key(rule),
           "num_classes": num_classes, "known": None if known is None else [known.mode, known.names],
           "class_names": None if class_names is None else list(class_names)}
    cached = stats.load_cached(cache_dir, key)
    if cached is not None:
        return cached, files
    dim = _first_feature_dim(files, feature_key, label_key, weight_key)
    parse = _parser(feature_key, label_key, dim, weight_key)
    counter = SplitCounter(rule, moments=known is None)
    bounds: List[Tuple[int, str]] = []  # (global row offset, file)

    def where(row: int) -> Dict[str, object]:
        start, path = max(b for b in bounds if b[0] < row)
        return {"path": path, "row": row - start}

    weight_scan = None if weight_key is None else WeightScan(
        "weight_key", weight_key, pattern, lambda row: {**where(row), "column": weight_key})
    offset = 0
    for path in files:
        bounds.append((offset, path))
        batches = (tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(streaming.STATS_BATCH)
                   .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                   .prefetch(2))

        def visit(start: int, batch: tuple, path=path, offset=offset) -> None:
            x, y = batch[:2]
            if weight_scan is not None:
                weight_scan.add(batch[2], offset + start + 1)
            bad = stats.first_nonfinite(x)
            if bad is not None:
                r, c = bad
                where = describe_location(path, row=start + r + 1, column=f"{feature_key}[{c}]",
                                          value=float(x[r, c]))
                raise InputDataError(f"NaN or infinite feature: {where}")
            uniq, inverse = streaming.group_labels(y)
            counter.add(x, uniq, inverse, offset + start + 1)

        offset += streaming.scan_batches(
            batches, streaming.STATS_BATCH,
            lambda s, e, path=path: _locate(path, s, e, feature_key, label_key, dim, weight_key),
            visit)
    if offset == 0:
        raise InputDataError(f"no records in {files!r}")
    if weight_scan is not None:
        weight_scan.finish()

    space = streaming.resolve_labels(counter, source=pattern, column=label_key, known=known,
                                     num_classes=num_classes, allow_strings=False, where=where,
                                     class_names=class_names)
    streaming.warn_if_sorted(counter, pattern, (dim,))
    summary = streaming.summarise(counter, space, (dim,))
    stats.store_cached(cache_dir, key, summary)
    return summary, files


def parsed_batches(files: List[str], feature_key: str, label_key: str, feature_dim: int,
                   weight_key: Optional[str] = None, space: Optional[LabelSpace] = None):
    """Returns a callable building the dataset of parsed (x, y[, w]) batches in file order.

    Labels are class indices as they are, or, when `space` maps codes to classes (integer codes
    with gaps: 'string' mode, `labels.resolve`), the index of their code.
    """
    parse = _parser(feature_key, label_key, feature_dim, weight_key)
    maps_codes = space is not None and space.mode != "int"

    def build() -> tf.data.Dataset:
        to_index = space.to_indices_fn() if maps_codes else None

        @tf.autograph.experimental.do_not_convert
        def to_xy(serialized):
            parsed = parse(serialized)
            labels = (to_index(tf.strings.as_string(parsed[1])) if maps_codes
                      else tf.cast(parsed[1], tf.int32))
            return (parsed[0], labels) + tuple(parsed[2:])
        return (tf.data.TFRecordDataset(files, buffer_size=1 << 20)
                .batch(streaming.PARSE_BATCH)
                .map(to_xy, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    return build
