"""Deterministic, stratified splits: train / validation (chooses) / test (reports), and K folds.

Exact per-class counts, seeded, disjoint; in memory by a seeded permutation, in a stream by rank.
"""

# The three-part rule. Class c with n_c rows, validation fraction p_v, test fraction p_t,
# q = p_v + p_t (held out) and s = p_v / q (the validation share of the held-out rows):
#
#   the r-th row of the class (0-based) is held out  iff  floor((r + 1) q + u_c) > floor(r q + u_c);
#   the j-th held-out row (j = floor(r q + u_c))     is validation iff
#                                                    floor((j + 1) s + b_c) > floor(j s + b_c),
#   else test.
#
# So after any n rows of a class: held H = floor(n q + u_c), validation V = floor(H s + b_c),
# test T = H - V, train n - H. The offsets u_c in [0, 1 - q) and b_c in [0, 1) are seeded
# hashes of (seed, class name), restricted so that every count stays within one row of its
# fraction for EVERY n (|V - n p_v| < 1, |T - n p_t| < 1, |n - H - n (1 - q)| < 1):
#   b_c in [max(s (1 - u), u (1 - s)), min(1 - s u, s + u - s u))      (worst cases of both floors)
# and so that a tiny class fills training first (u_c < 1 - q: its first row always trains),
# then validation (b_c >= 1 - s: its first held-out row is validation), then test. The second
# priority needs u_c >= (1 - 2 s) / (1 - s), which leaves room below 1 - q whenever
# p_v > p_t * (p_v + p_t) (true for the defaults 0.2 / 0.2); otherwise the one-row bound wins
# and a tiny class's first held-out row may be test.
#
# With p_t = 0 (only a validation split, e.g. next to an explicit eval_dataset) the rule is the
# two-part one: u_c = hash * (1 - p_v), every held-out row is validation.
#
# - In-memory data (npz, synthetic, Fashion-MNIST): the counts above for n = n_c, taken from a
#   seeded permutation of the class's rows: the first V validation, the next T test
#   (`stratified_parts`).
# - Streamed data (CSV, TFRecord): the rule itself, decided in the stream with a running
#   per-class counter (`tf.data.Dataset.scan`, `streamed_part`), so no index list is kept.
#
# Folds (cross-fitting) of a split: the m-th row of class c in that split (in a seeded
# permutation for arrays, in stream order for streams) is in fold (m + o_c) mod k, o_c a seeded
# per-class offset in [0, k): each fold holds floor(n_c / k) or ceil(n_c / k) rows of every
# class, and every row is held out by exactly one fold.

from __future__ import annotations

import dataclasses
import hashlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.checks import check_integer, check_number

from .errors import DataArgumentError, checked

# Default fraction of each class held out as the reporting (test) split.
DEFAULT_TEST_SPLIT = 0.2
# The parts of the three-part split, as `assign_parts` numbers them.
TRAIN, VALIDATION, TEST = 0, 1, 2
PART_NAMES = ("train", "validation", "test")
# Margin that keeps u_c strictly below 1 - q in floating point (the first row always trains).
_MARGIN = 1e-9


def check_validation_split(validation_split: float) -> float:
    """Returns `validation_split` as a float, or raises if it is not a number in (0, 1).

    Raises:
      DataArgumentError: Naming `validation_split` and the value.
    """
    return checked(check_number, validation_split, "validation_split", minimum=0, maximum=1,
                   exclusive_minimum=True, exclusive_maximum=True)


def check_test_split(test_split: float, validation_split: float, *, required: bool) -> float:
    """Returns `test_split` as a float after checking it against `validation_split`.

    Args:
      test_split: Fraction of each class held out for reporting.
      validation_split: The (checked) validation fraction.
      required: Whether a test split must exist (no eval data besides it).

    Raises:
      DataArgumentError: Naming `test_split`: not a number in [0, 1), 0 where it is
        required, or leaving no training data next to `validation_split`.
    """
    test_split = checked(check_number, test_split, "test_split", minimum=0, maximum=1,
                         exclusive_maximum=True)
    if required and test_split == 0:
        raise DataArgumentError(
            "test_split", test_split,
            "must be > 0 without separate evaluation data: the test split is the data that "
            "reports, and the validation split (which chooses) must not report")
    if validation_split + test_split >= 1 - 1e-6:
        raise DataArgumentError(
            "test_split", test_split,
            f"plus validation_split={validation_split:g} must be below 1 (the rest trains)")
    return test_split


def _unit(seed: int, name: str, salt: str = "") -> float:
    """A seeded hash of (seed, class name) in [0, 1)."""
    digest = hashlib.sha256(f"{int(seed)}/{name}{salt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def class_offsets(class_names: Sequence[str], seed: int, validation_split: float) -> np.ndarray:
    """Seeded per-class offsets u_c in [0, 1 - p) of the two-part split (float64)."""
    return np.asarray([_unit(seed, name) * (1.0 - validation_split) for name in class_names],
                      dtype=np.float64)


def held_out_count(class_count: int, validation_split: float, offset: float) -> int:
    """How many of a class's `class_count` examples the two-part split holds out."""
    return int(np.floor(class_count * validation_split + offset))


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """The three-part split rule (module comment): fractions and seed.

    Attributes:
      validation: p_v in (0, 1): fraction of each class that chooses.
      test: p_t in [0, 1): fraction of each class that reports (0: no test part).
      seed: Split seed.
    """

    validation: float
    test: float
    seed: int

    @property
    def held(self) -> float:
        """q = p_v + p_t."""
        return self.validation + self.test

    @property
    def validation_share(self) -> float:
        """s = p_v / q."""
        return self.validation / self.held

    @property
    def validation_first(self) -> bool:
        """Whether a class's first held-out row always goes to validation (module comment)."""
        if self.test == 0:
            return True
        s = self.validation_share
        return max(0.0, (1 - 2 * s) / (1 - s)) <= 1 - self.held - _MARGIN

    def offsets(self, class_names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Per-class offsets (u [K], b [K]), float64."""
        us, bs = [], []
        for name in class_names:
            u, b = self.class_offset(name)
            us.append(u)
            bs.append(b)
        return np.asarray(us, np.float64), np.asarray(bs, np.float64)

    def class_offset(self, name: str) -> Tuple[float, float]:
        """(u_c, b_c) of one class name."""
        q = self.held
        unit = _unit(self.seed, name)
        if self.test == 0:
            return unit * (1.0 - q), 0.0
        s = self.validation_share
        top = 1.0 - q - _MARGIN
        lowest = max(0.0, (1 - 2 * s) / (1 - s))
        first = lowest <= top
        u = lowest + unit * (top - lowest) if first else unit * top
        lo = max(s * (1 - u), u * (1 - s))
        if first:
            lo = max(lo, 1 - s)
        hi = min(1 - s * u, s + u - s * u)
        return u, lo + _unit(self.seed, name, "/test") * max(hi - lo, 0.0)

    def counts(self, class_count: int, u: float, b: float) -> Tuple[int, int, int]:
        """(train, validation, test) rows of a class of `class_count` rows."""
        held = int(np.floor(class_count * self.held + u))
        if self.test == 0:
            return class_count - held, held, 0
        validation = int(np.floor(held * self.validation_share + b))
        return class_count - held, validation, held - validation

    def assign(self, ranks: np.ndarray, u: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The part (TRAIN, VALIDATION, TEST) of rows with per-class ranks `ranks` (int8 [B]).

        Args:
          ranks: int [B]: each row's 0-based rank among its class.
          u: float64 [B]: each row's class offset u_c.
          b: float64 [B]: each row's class offset b_c.
        """
        r = ranks.astype(np.float64)
        q = self.held
        held = np.floor((r + 1.0) * q + u) > np.floor(r * q + u)
        if self.test == 0:
            return np.where(held, VALIDATION, TRAIN).astype(np.int8)
        s = self.validation_share
        j = np.floor(r * q + u)
        validation = np.floor((j + 1.0) * s + b) > np.floor(j * s + b)
        return np.where(held, np.where(validation, VALIDATION, TEST), TRAIN).astype(np.int8)


def stratified_parts(labels: np.ndarray, class_names: Sequence[str], rule: SplitRule
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits in-memory labels into disjoint, sorted train, validation and test index arrays.

    Args:
      labels: int array [N] of class indices in [0, len(class_names)).
      class_names: Names indexed by class (they seed the per-class offsets).
      rule: Fractions and seed.

    Returns:
      (train, validation, test) int64 index arrays, each sorted (test empty when
      `rule.test` is 0).
    """
    u, b = rule.offsets(class_names)
    rng = np.random.default_rng([int(rule.seed) & 0xFFFFFFFF, 0x5EED])
    validation, test = [], []
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)
        order = rng.permutation(members)
        _, v, t = rule.counts(len(members), u[c], b[c])
        validation.append(order[:v])
        test.append(order[v:v + t])

    def joined(parts: List[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    val, tst = joined(validation), joined(test)
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    mask[tst] = True
    return np.flatnonzero(~mask).astype(np.int64), val, tst


def stratified_indices(labels: np.ndarray, class_names: Sequence[str], seed: int,
                       validation_split: float) -> Tuple[np.ndarray, np.ndarray]:
    """The two-part split of in-memory labels: (train, held-out) sorted int64 index arrays."""
    train, held, _ = stratified_parts(labels, class_names, SplitRule(validation_split, 0.0, seed))
    return train, held


def _ranks_in_batch(y: tf.Tensor, counts: tf.Tensor, num_classes: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per-class ranks of a batch's rows given the counts so far; returns (ranks, new counts)."""
    one_hot = tf.one_hot(y, num_classes, dtype=tf.int64)
    before = tf.cumsum(one_hot, axis=0, exclusive=True)
    ranks = tf.reduce_sum(before * one_hot, axis=1) + tf.gather(counts, y)
    return ranks, counts + tf.reduce_sum(one_hot, axis=0)


def streamed_part(batches: tf.data.Dataset, num_classes: int, rule: SplitRule,
                  offsets: Tuple[np.ndarray, np.ndarray], part: int) -> tf.data.Dataset:
    """Keeps one part of the streamed three-part split of an ordered dataset of (x, y) batches.

    Args:
      batches: Dataset of (features [B, ...], int32 labels [B][, weights [B]]) in file order.
      num_classes: K.
      rule: The split rule.
      offsets: (u [K], b [K]) from `rule.offsets`.
      part: TRAIN, VALIDATION or TEST.

    Returns:
      Dataset of the same (variable-size) batches restricted to that part.
    """
    u_t = tf.constant(offsets[0], dtype=tf.float64)
    b_t = tf.constant(offsets[1], dtype=tf.float64)
    q = tf.constant(rule.held, dtype=tf.float64)
    s = tf.constant(rule.validation_share, dtype=tf.float64)
    two_part = rule.test == 0

    @tf.autograph.experimental.do_not_convert
    def step(counts, batch):
        y = batch[1]
        ranks, new_counts = _ranks_in_batch(y, counts, num_classes)
        r = tf.cast(ranks, tf.float64)
        u = tf.gather(u_t, y)
        held = tf.math.floor((r + 1.0) * q + u) > tf.math.floor(r * q + u)
        if two_part:
            parts = tf.where(held, VALIDATION, TRAIN)
        else:
            j = tf.math.floor(r * q + u)
            b = tf.gather(b_t, y)
            validation = tf.math.floor((j + 1.0) * s + b) > tf.math.floor(j * s + b)
            parts = tf.where(held, tf.where(validation, VALIDATION, TEST), TRAIN)
        mask = tf.equal(parts, part)
        return new_counts, tuple(tf.boolean_mask(t, mask) for t in batch)

    return batches.scan(tf.zeros([num_classes], tf.int64), step)


def streamed_split(batches: tf.data.Dataset, num_classes: int, offsets: np.ndarray,
                   validation_split: float, held_out: bool) -> tf.data.Dataset:
    """The two-part streamed split (`streamed_part` with no test part): one side of it.

    Args:
      batches: Dataset of (features [B, ...], int32 labels [B][, weights [B]]) in file order.
      num_classes: K.
      offsets: float64 [K] class offsets (see `class_offsets`).
      validation_split: p.
      held_out: True for the held-out side, False for the training side.
    """
    rule = SplitRule(validation_split, 0.0, 0)
    return streamed_part(batches, num_classes, rule, (offsets, np.zeros_like(offsets)),
                         VALIDATION if held_out else TRAIN)


def streamed_held_out_mask(ranks: np.ndarray, offsets: np.ndarray,
                           validation_split: float) -> np.ndarray:
    """Numpy form of the two-part streamed rule: which rows (by per-class rank) are held out."""
    rule = SplitRule(validation_split, 0.0, 0)
    return rule.assign(ranks, offsets, np.zeros_like(offsets)) == VALIDATION


# ------------------------------------------------------------------ folds


def check_folds(k: int, num_examples: int) -> int:
    """Returns `k` after checking 2 <= k <= num_examples.

    Raises:
      DataArgumentError: Naming `k`.
    """
    k = checked(check_integer, k, "k", minimum=2)
    if k > num_examples:
        raise DataArgumentError("k", k, f"must not exceed the split's {num_examples} rows")
    return k


def fold_offsets(num_classes: int, k: int, seed: int) -> np.ndarray:
    """Seeded per-class fold offsets o_c in [0, k) (int64 [K])."""
    return np.asarray([int(_unit(seed, str(c), f"/fold/{k}") * k) for c in range(num_classes)],
                      dtype=np.int64)


def fold_class_counts(class_counts: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Rows of each class held out by each fold: int64 [k, K] (each column sums to n_c)."""
    counts = np.asarray(class_counts, np.int64)
    o = fold_offsets(len(counts), k, seed)
    j = np.arange(k)[:, None]
    extra = ((j - o[None, :]) % k) < (counts % k)[None, :]
    return (counts // k)[None, :] + extra.astype(np.int64)


def stratified_fold_ids(labels: np.ndarray, k: int, seed: int,
                        num_classes: Optional[int] = None) -> np.ndarray:
    """The fold (0..k-1) of each in-memory row (module comment): int64 [N].

    Args:
      labels: int array [N] of class indices.
      k: Number of folds, 2 <= k <= N.
      seed: Fold seed.
      num_classes: K (default: max label + 1).

    Returns:
      Fold ids; fold j holds `fold_class_counts(counts, k, seed)[j, c]` rows of class c.

    Raises:
      DataArgumentError: Naming `k`, or `labels` when they are not a 1-D array of
        non-negative integers below `num_classes`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0)):
        raise DataArgumentError("labels", labels.tolist()[:10] if labels.ndim else labels.tolist(),
                                "must be a 1-D array of non-negative integer class indices")
    k = check_folds(k, len(labels))
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    elif labels.max() >= num_classes:
        raise DataArgumentError("labels", int(labels.max()), f"must be below num_classes={num_classes}")
    o = fold_offsets(num_classes, k, seed)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xF01D, k])
    fold = np.empty(len(labels), np.int64)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (np.arange(len(members)) + o[c]) % k
    return fold


def stratified_folds(labels: np.ndarray, k: int, seed: int,
                     num_classes: Optional[int] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """K stratified folds of in-memory labels (module comment): each row held out exactly once.

    Args:
      labels: int array [N] of class indices.
      k: Number of folds, 2 <= k <= N.
      seed: Fold seed.
      num_classes: K (default: max label + 1).

    Returns:
      k pairs (train indices, held-out indices), int64, each sorted; fold j holds out
      `fold_class_counts(...)[j, c]` rows of class c.

    Raises:
      DataArgumentError: As `stratified_fold_ids`.
    """
    fold = stratified_fold_ids(labels, k, seed, num_classes)
    return [(np.flatnonzero(fold != j).astype(np.int64), np.flatnonzero(fold == j).astype(np.int64))
            for j in range(int(k))]


def streamed_fold(batches: tf.data.Dataset, num_classes: int, k: int, seed: int, fold: int,
                  held_out: bool) -> tf.data.Dataset:
    """Keeps fold `fold`'s held-out rows (or the rest) of an ordered dataset of (x, y) batches.

    The m-th row of class c in the stream is in fold (m + o_c) mod k (`fold_offsets`).
    """
    o_t = tf.constant(fold_offsets(num_classes, k, seed), dtype=tf.int64)

    @tf.autograph.experimental.do_not_convert
    def step(counts, batch):
        y = batch[1]
        ranks, new_counts = _ranks_in_batch(y, counts, num_classes)
        in_fold = tf.equal((ranks + tf.gather(o_t, y)) % k, fold)
        mask = in_fold if held_out else tf.logical_not(in_fold)
        return new_counts, tuple(tf.boolean_mask(t, mask) for t in batch)

    return batches.scan(tf.zeros([num_classes], tf.int64), step)
