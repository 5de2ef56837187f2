"""The built-in `synthetic` dataset: a seeded long-tailed Gaussian-mixture problem (10 classes).

A long-tailed training pool and a balanced test set; the class means are fixed, `seed` draws samples.
"""

# NUM_CLASSES = 10 classes, NUM_FEATURES = 20 features, a training pool of
# `int(MAX_PER_CLASS * IR ** (-c / (K - 1)))` examples of class c with MAX_PER_CLASS = 2000 and
# IR the imbalance ratio (100: 2000 down to 20, 4,960 examples in all), and a balanced test set of
# EVAL_PER_CLASS = 200 examples per class. Each class is a mixture of CLUSTERS_PER_CLASS = 2
# Gaussian clusters with unit variance whose means are drawn once from N(0, CENTER_SCALE**2) with
# the fixed CENTER_SEED (the problem is the same for every `seed`), so classes overlap.

from __future__ import annotations

from typing import Tuple

import numpy as np

NUM_CLASSES = 10
NUM_FEATURES = 20
MAX_PER_CLASS = 2000
EVAL_PER_CLASS = 200
CLUSTERS_PER_CLASS = 2
CENTER_SCALE = 0.8
CENTER_SEED = 20240601


def long_tailed_counts(max_per_class: int, imbalance_ratio: float, num_classes: int) -> np.ndarray:
    """Per-class counts `int(max_per_class * IR ** (-c / (K - 1)))` (int64 [K])."""
    if num_classes == 1:
        return np.array([max_per_class], dtype=np.int64)
    c = np.arange(num_classes, dtype=np.float64)
    return np.array([int(max_per_class * imbalance_ratio ** (-k / (num_classes - 1))) for k in c],
                    dtype=np.int64)


def _centers() -> np.ndarray:
    """The fixed cluster means [NUM_CLASSES, CLUSTERS_PER_CLASS, NUM_FEATURES]."""
    rng = np.random.default_rng(CENTER_SEED)
    return rng.normal(0.0, CENTER_SCALE, size=(NUM_CLASSES, CLUSTERS_PER_CLASS, NUM_FEATURES))


def sample(counts: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draws `counts[c]` examples of each class c.

    Returns:
      (x float32 [N, NUM_FEATURES], y int32 [N]), grouped by class.
    """
    centers = _centers()
    xs, ys = [], []
    for c, n in enumerate(counts):
        cluster = rng.integers(0, CLUSTERS_PER_CLASS, size=int(n))
        noise = rng.normal(0.0, 1.0, size=(int(n), NUM_FEATURES))
        xs.append(centers[c, cluster] + noise)
        ys.append(np.full(int(n), c, dtype=np.int32))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def generate(imbalance_ratio: float = 100.0, seed: int = 0
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generates the long-tailed training pool and the balanced test set.

    Args:
      imbalance_ratio: Ratio of the largest to the smallest class in the pool (>= 1).
      seed: Sample seed.

    Returns:
      (x_pool, y_pool, x_test, y_test); x float32, y int32.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    pool = sample(long_tailed_counts(MAX_PER_CLASS, imbalance_ratio, NUM_CLASSES), rng)
    test = sample(np.full(NUM_CLASSES, EVAL_PER_CLASS, dtype=np.int64), rng)
    return pool[0], pool[1], test[0], test[1]
