"""Shared machinery of the streamed sources (CSV, TFRecord): the statistics pass and the pipeline.

A source supplies parsed batches in file order; this module splits, shuffles, batches and prefetches.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from . import splits
from .errors import InputDataError, describe_location
from .labels import LabelSpace, canonical_label, resolve
from .stats import SplitCounter, StreamSummary, order_skew

# Examples parsed per call (decode_csv / parse_example are vectorised over a batch).
PARSE_BATCH = 4096
# Rows per batch of the statistics pass.
STATS_BATCH = 8192
# Streamed shuffling (vectorised; no per-example work): examples are permuted within
# windows of about SHUFFLE_WINDOW_BYTES of features (at most SHUFFLE_WINDOW_MAX examples),
# and the windows' order is shuffled in a buffer of SHUFFLE_WINDOWS windows.
SHUFFLE_WINDOW_BYTES = 8 << 20
SHUFFLE_WINDOW_MAX = 32768
SHUFFLE_WINDOWS = 4
# A split whose parsed features take at most this many bytes is cached in memory after its
# first full pass (later epochs skip reading and parsing); larger splits stream every epoch.
CACHE_LIMIT_BYTES = 256 << 20


def shuffle_window_size(input_shape: Sequence[int]) -> int:
    """Examples per shuffle window for examples of `input_shape` (float32)."""
    per_example = 4 * int(np.prod(input_shape))
    return int(max(PARSE_BATCH, min(SHUFFLE_WINDOW_MAX, SHUFFLE_WINDOW_BYTES // max(per_example, 1))))


def window_shuffle(batches: tf.data.Dataset, window: int, seed: int) -> tf.data.Dataset:
    """Shuffles a dataset of variable-size (x, y[, w]) batches without per-example work.

    Examples are regrouped into windows of `window` consecutive examples, each window is
    permuted (a fresh seeded permutation per window and per iteration), and the window order
    is shuffled in a buffer of `SHUFFLE_WINDOWS`. Examples therefore mix within about
    `window * SHUFFLE_WINDOWS` consecutive examples of the file: shuffle a file that is sorted
    by class (and larger than that) once on disk.

    Returns:
      A dataset of permuted windows (variable size; rebatch it).
    """
    windows = batches.rebatch(window)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    @tf.autograph.experimental.do_not_convert
    def permute(batch, pair):
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(batch[1])[0]), seed=pair)
        return tuple(tf.gather(t, order) for t in batch)

    permuted = tf.data.Dataset.zip((windows, seeds)).map(
        permute, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return permuted.shuffle(SHUFFLE_WINDOWS, seed=seed, reshuffle_each_iteration=True)


# A stage of a streamed split: ("part", rule, (u, b), part) keeps one part of the three-part
# split; ("fold", k, seed, fold, held_out) keeps one side of a fold of what the stages before
# it kept. Stages apply in order, each with its own per-class rank counter.
Stage = Tuple


def apply_stages(ds: tf.data.Dataset, num_classes: int, stages: Sequence[Stage]) -> tf.data.Dataset:
    """Applies split stages (see `Stage`) to a dataset of (x, y) batches in file order."""
    for stage in stages:
        if stage[0] == "part":
            _, rule, offsets, part = stage
            ds = splits.streamed_part(ds, num_classes, rule, offsets, part)
        elif stage[0] == "fold":
            _, k, seed, fold, held_out = stage
            ds = splits.streamed_fold(ds, num_classes, k, seed, fold, held_out)
        else:
            raise ValueError(f"unknown split stage {stage[0]!r}")
    return ds


class StreamPipeline:
    """Batched pipelines over a streamed source, one part of its split.

    Args:
      parsed_batches: Callable returning a dataset of (float32 x [b, ...], int32 y [b])
        batches in file order (the same order every call).
      num_classes: K.
      stages: Split stages (see `Stage`) that select this split's rows; empty keeps all.
      input_shape: Per-example feature shape (sets the shuffle window).
      num_examples: Examples in this split (with `input_shape`, decides caching).
    """

    def __init__(self, parsed_batches: Callable[[], tf.data.Dataset], num_classes: int,
                 stages: Sequence[Stage], input_shape: Sequence[int], num_examples: int) -> None:
        self._parsed_batches = parsed_batches
        self._num_classes = num_classes
        self._stages = tuple(stages)
        self._input_shape = tuple(input_shape)
        self._window = shuffle_window_size(input_shape)
        self._bytes = num_examples * (4 * int(np.prod(input_shape)) + 4)

    def fold(self, k: int, seed: int, fold: int, held_out: bool, num_examples: int) -> "StreamPipeline":
        """The pipeline of one side of fold `fold` of `k` of this split (see `splits.streamed_fold`)."""
        return StreamPipeline(self._parsed_batches, self._num_classes,
                              self._stages + (("fold", k, seed, fold, held_out),),
                              self._input_shape, num_examples)

    def folds(self, k: int, seed: int, fold_counts: np.ndarray) -> List[Tuple["StreamPipeline",
                                                                            "StreamPipeline"]]:
        """(training side, held-out side) pipelines of each fold; `fold_counts` [k, K] held rows."""
        total = int(np.sum(fold_counts))
        return [(self.fold(k, seed, j, False, total - int(fold_counts[j].sum())),
                 self.fold(k, seed, j, True, int(fold_counts[j].sum()))) for j in range(k)]

    def batched(self, batch_size: int, *, shuffle: bool, seed: int, repeat: bool,
                drop_remainder: bool,
                input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
        """See `DataSplit.dataset`.

        Shuffling is windowed (see `window_shuffle`); a split of at most `CACHE_LIMIT_BYTES`
        is cached in memory by the returned dataset after its first full pass.
        """
        ds = apply_stages(self._parsed_batches(), self._num_classes, self._stages)
        if self._bytes <= CACHE_LIMIT_BYTES:
            ds = ds.cache()
        if input_context is not None and input_context.num_input_pipelines > 1:
            n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
            # Row r of the split goes to pipeline r mod n (strided within each batch).

            @tf.autograph.experimental.do_not_convert
            def take_rows(start, batch):
                first = tf.cast((i - start) % n, tf.int32)
                return (start + tf.cast(tf.shape(batch[1])[0], tf.int64),
                        tuple(t[first::n] for t in batch))
            ds = ds.scan(tf.constant(0, tf.int64), take_rows)
        if shuffle:
            ds = window_shuffle(ds, self._window, seed)
        if repeat:
            ds = ds.repeat()
        ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(tf.data.AUTOTUNE)


def group_labels(raw: np.ndarray) -> Tuple[List[str], np.ndarray]:
    """Groups a batch of raw labels (bytes or ints) by canonical name.

    Returns:
      (distinct canonical names, int inverse [B]).
    """
    uniq, inverse = np.unique(raw, return_inverse=True)
    names = [canonical_label(u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u))
             for u in uniq.tolist()]
    distinct = sorted(set(names))
    if len(distinct) == len(names):
        remap = np.array([distinct.index(n) for n in names], dtype=np.int64)
    else:
        pos = {n: i for i, n in enumerate(distinct)}
        remap = np.array([pos[n] for n in names], dtype=np.int64)
    return distinct, remap[inverse.reshape(-1)]


def scan_batches(batches: Iterable, rows_per_batch: int,
                 locate_error: Callable[[int, tf.errors.OpError], InputDataError],
                 visit: Callable[[int, tuple], None]) -> int:
    """Iterates parsed batches; turns a parse error into a located `InputDataError`.

    Args:
      batches: Dataset of parsed batches, each of `rows_per_batch` rows but the last.
      rows_per_batch: Rows per batch.
      locate_error: (first row of the failing batch, 0-based; the error) -> error to raise.
      visit: Called with (first row of the batch, 0-based; the numpy batch).

    Returns:
      Number of rows visited.
    """
    iterator = iter(batches)
    start = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return start
        except tf.errors.OpError as e:
            raise locate_error(start, e) from None
        visit(start, tuple(t.numpy() for t in batch))
        start += int(batch[-1].shape[0])


def resolve_labels(counter: SplitCounter, *, source: str, column: str,
                   known: Optional[LabelSpace], num_classes: Optional[int],
                   allow_strings: bool,
                   where: Optional[Callable[[int], Dict[str, object]]] = None,
                   class_names: Optional[Sequence[str]] = None) -> LabelSpace:
    """Decides the label space of a finished pass and checks every label against it.

    Numeric labels are ordered by value, integral ones are class indices ('2.0' is class 2);
    see `labels.resolve`.

    Args:
      counter: The finished pass.
      source: File name(s) for messages.
      column: Label column / key for messages.
      known: The training label space, when this is an eval set.
      num_classes: If given, integer labels must lie in [0, num_classes).
      allow_strings: Whether string labels are allowed (CSV) or must be integers.
      where: Maps a 1-based stream row to `describe_location` keyword arguments
        (path, row, line); default: `source` and the row.
      class_names: String labels: the class order (exactly the labels found); integer
        labels: display names of classes 0..K-1.

    Returns:
      The label space (`known` itself for an eval set).

    Raises:
      InputDataError: Listing each bad label at its first row (with `argument` "num_classes"
        or "class_names" when the labels do not fit those).
    """
    if where is None:
        where = lambda r: {"path": source, "row": r}  # noqa: E731

    def at(name: str) -> str:
        return describe_location(**where(counter.first_row[name]), column=column, value=name)

    return resolve(counter.first_row, at=at, source=source, column=column, known=known,
                   num_classes=num_classes, allow_strings=allow_strings, class_names=class_names)


def warn_if_sorted(counter: SplitCounter, source: str, input_shape: Sequence[int]) -> None:
    """Logs a warning when the stream looks sorted by class beyond what shuffling can mix."""
    skew = order_skew(counter)
    window = shuffle_window_size(input_shape) * SHUFFLE_WINDOWS
    if skew > 0.5 and sum(counter.seen.values()) > window:
        logging.getLogger(__name__).warning(
            "%s looks sorted by class (median class-mix distance %.2f between %d-row blocks and "
            "the whole file); the streamed shuffle mixes only about %d consecutive examples, "
            "so shuffle the file on disk once for class-mixed batches.",
            source, skew, STATS_BATCH, window)


def summarise(counter: SplitCounter, space: LabelSpace, input_shape: Tuple[int, ...]) -> StreamSummary:
    """Builds the per-class counts and moments of a finished pass in `space`'s class order."""
    train = np.zeros(space.num_classes, dtype=np.int64)
    held = np.zeros(space.num_classes, dtype=np.int64)
    test = np.zeros(space.num_classes, dtype=np.int64)
    first = np.zeros(space.num_classes, dtype=np.int64)
    for name, n in counter.seen.items():
        c = space.index_of(name)
        first[c] = counter.first_row[name] if first[c] == 0 else min(first[c], counter.first_row[name])
        h, t = counter.held.get(name, 0), counter.test.get(name, 0)
        train[c] += n - h - t
        held[c] += h
        test[c] += t
    mean, var = counter.moments.result() if counter.moments is not None else (None, None)
    return StreamSummary(class_names=list(space.names), label_mode=space.mode,
                         input_shape=tuple(input_shape), train_counts=train.tolist(),
                         held_counts=held.tolist(),
                         mean=None if mean is None else mean.tolist(),
                         variance=None if var is None else var.tolist(),
                         first_rows=first.tolist(), test_counts=test.tolist())
