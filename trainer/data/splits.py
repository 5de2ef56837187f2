"""Deterministic, stratified train/held-out splits: exact per-class counts, seeded, disjoint.

In-memory data takes a seeded permutation per class; streamed data a systematic sample in the stream.
"""

# The rule: class c with n_c examples puts `floor(n_c * p + u_c)` of them in the held-out split,
# where `p` is the validation split and `u_c` in [0, 1 - p) is a seeded hash of (seed, class
# name); so each class's held-out share is within one example of `p`, and a class's first
# example always trains (a singleton class is never held out).
#
# - In-memory data (npz, synthetic, Fashion-MNIST): per class, the first held-out-count
#   indices of a seeded permutation of that class's indices (`stratified_indices`).
# - Streamed data (CSV, TFRecord): the r-th example (0-based, in file order) of class c is
#   held out iff `floor((r + 1) * p + u_c) > floor(r * p + u_c)`: a systematic sample along
#   each class's occurrence order, decided in the stream with a running per-class counter
#   (`tf.data.Dataset.scan`, `streamed_split`), so no index list is ever held in memory.

from __future__ import annotations

import hashlib
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.checks import check_number

from .errors import checked


def check_validation_split(validation_split: float) -> float:
    """Returns `validation_split` as a float, or raises if it is not a number in (0, 1).

    Raises:
      DataArgumentError: Naming `validation_split` and the value.
    """
    return checked(check_number, validation_split, "validation_split", minimum=0, maximum=1,
                   exclusive_minimum=True, exclusive_maximum=True)


def class_offsets(class_names: Sequence[str], seed: int, validation_split: float) -> np.ndarray:
    """Seeded per-class offsets u_c in [0, 1 - p), one per class name (float64)."""
    offsets = []
    for name in class_names:
        digest = hashlib.sha256(f"{int(seed)}/{name}".encode("utf-8")).digest()
        unit = int.from_bytes(digest[:8], "big") / 2.0 ** 64
        offsets.append(unit * (1.0 - validation_split))
    return np.asarray(offsets, dtype=np.float64)


def held_out_count(class_count: int, validation_split: float, offset: float) -> int:
    """How many of a class's `class_count` examples are held out."""
    return int(np.floor(class_count * validation_split + offset))


def stratified_indices(labels: np.ndarray, class_names: Sequence[str], seed: int,
                       validation_split: float) -> Tuple[np.ndarray, np.ndarray]:
    """Splits in-memory labels into disjoint, sorted train and held-out index arrays.

    Args:
      labels: int array [N] of class indices in [0, len(class_names)).
      class_names: Names indexed by class (they seed the per-class offsets).
      seed: Split seed.
      validation_split: Held-out fraction p in (0, 1).

    Returns:
      (train_indices, held_out_indices), int64, each sorted.
    """
    offsets = class_offsets(class_names, seed, validation_split)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
    held_out = []
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)
        order = rng.permutation(members)
        held_out.append(order[:held_out_count(len(members), validation_split, offsets[c])])
    held = np.sort(np.concatenate(held_out)).astype(np.int64) if held_out else np.zeros(0, np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask).astype(np.int64), held


def streamed_held_out_mask(ranks: np.ndarray, offsets: np.ndarray,
                           validation_split: float) -> np.ndarray:
    """Numpy form of the streamed rule: which examples (by per-class rank) are held out.

    Args:
      ranks: int64 [B]: each example's 0-based rank among its class in file order.
      offsets: float64 [B]: each example's class offset u_c.
      validation_split: p.

    Returns:
      bool [B].
    """
    ranks = ranks.astype(np.float64)
    return (np.floor((ranks + 1.0) * validation_split + offsets)
            > np.floor(ranks * validation_split + offsets))


def streamed_split(batches: tf.data.Dataset, num_classes: int, offsets: np.ndarray,
                   validation_split: float, held_out: bool) -> tf.data.Dataset:
    """Keeps one side of the streamed split of an ordered dataset of (x, y) batches.

    Args:
      batches: Dataset of (features [B, ...], int32 labels [B]) in file order.
      num_classes: K.
      offsets: float64 [K] class offsets (see `class_offsets`).
      validation_split: p.
      held_out: True for the held-out side, False for the training side.

    Returns:
      Dataset of the same (variable-size) batches restricted to one side.
    """
    offsets_t = tf.constant(offsets, dtype=tf.float64)
    p = tf.constant(validation_split, dtype=tf.float64)

    @tf.autograph.experimental.do_not_convert
    def step(counts, batch):
        x, y = batch
        one_hot = tf.one_hot(y, num_classes, dtype=tf.int64)
        before = tf.cumsum(one_hot, axis=0, exclusive=True)
        ranks = tf.reduce_sum(before * one_hot, axis=1) + tf.gather(counts, y)
        r = tf.cast(ranks, tf.float64)
        u = tf.gather(offsets_t, y)
        mask = tf.math.floor((r + 1.0) * p + u) > tf.math.floor(r * p + u)
        if not held_out:
            mask = tf.logical_not(mask)
        new_counts = counts + tf.reduce_sum(one_hot, axis=0)
        return new_counts, (tf.boolean_mask(x, mask), tf.boolean_mask(y, mask))

    return batches.scan(tf.zeros([num_classes], tf.int64), step)
