"""The numbers behind the report's figures (NumPy only): PR curves, reliability bins, row percentages.

Kept apart from the drawing (`figures.py`) so each can be checked against an independent count.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from trainer.metrics import PrecisionRecallCurve as PrecisionRecallCurve  # re-exported
from trainer.metrics import precision_recall_curve as precision_recall_curve  # re-exported


@dataclasses.dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of a score on [0, 1] and how often the outcome happened in each.

    Attributes:
      edges: `[B + 1]` bin edges (0 to 1).
      counts: `[B]` examples per bin.
      mean_score: `[B]` mean score per bin (NaN where empty).
      frequency: `[B]` mean outcome per bin (NaN where empty).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_score: np.ndarray
    frequency: np.ndarray


def reliability_bins(scores: np.ndarray, outcomes: np.ndarray, bins: int) -> ReliabilityBins:
    """Bins as `trainer.decisions.expected_calibration_error` makes them: `min(floor(s * B), B - 1)`.

    Args:
      scores: `[N]` scores in [0, 1].
      outcomes: `[N]` booleans or 0/1.
      bins: Number of bins B.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    outcomes = np.asarray(outcomes, np.float64).reshape(-1)
    index = np.minimum((np.clip(scores, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_score = np.bincount(index, weights=scores, minlength=bins) / counts
        frequency = np.bincount(index, weights=outcomes, minlength=bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), counts, mean_score, frequency)


def row_percentages(matrix: np.ndarray) -> np.ndarray:
    """Whole row percentages of a count matrix that add up to exactly 100 in every row with counts.

    Largest-remainder rounding: each cell gets the floor of its share, and
    the cells with the largest remainders one point more until the row adds
    up to 100 (ties to the leftmost). Rows without counts are all 0.

    Args:
      matrix: `[R, C]` non-negative counts.

    Returns:
      `[R, C]` int64 percentages.
    """
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(100.0 * matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    floors = np.floor(shares + 1e-9)
    missing = np.where(totals[:, 0] > 0, 100 - floors.sum(axis=1), 0).astype(np.int64)
    remainders = shares - floors
    out = floors.astype(np.int64)
    for row in np.flatnonzero(missing > 0):
        order = np.argsort(-remainders[row], kind="stable")[:missing[row]]
        out[row, order] += 1
    return out


def worst_recall_classes(recall: Sequence[float], count: int, *,
                         keep: Optional[int] = None) -> np.ndarray:
    """The `count` classes of lowest recall (NaN, no support, last), plus `keep` if given; sorted by index.

    Args:
      recall: `[K]` per-class recall.
      count: How many classes in all.
      keep: A class that is always among them (e.g. the target class).
    """
    recall = np.asarray(recall, np.float64)
    if count >= recall.size:
        return np.arange(recall.size)
    ranked = np.argsort(np.where(np.isnan(recall), np.inf, recall), kind="stable")
    chosen = [] if keep is None else [int(keep)]
    for k in ranked:
        if len(chosen) >= count:
            break
        if int(k) not in chosen:
            chosen.append(int(k))
    return np.array(sorted(chosen), np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of `[N, K]` logits (float64)."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
