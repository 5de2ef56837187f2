"""Cut-off rules on one class's scores, vectorised over bootstrap resamples, and their percentile intervals.

A resample is a row of per-example counts: one code path chooses on the data and on each resample.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np

from trainer.decisions.quantiles import binomial_interval, harrell_davis_cumulative_weights

# The rules: the best-precision cut-off whose recall's lower confidence bound reaches the target
# ("bound"), the best-precision cut-off catching every positive ("catch_all"), and the Harrell-Davis
# estimate of the positives' (1 - target) score quantile ("harrell_davis").
RULES = ("bound", "catch_all", "harrell_davis")
# The lower confidence bounds of a recall: exact (Clopper-Pearson) or Wilson's approximation.
BOUNDS = ("exact", "wilson")
# How the intervals of the recall and precision on new data are computed.
INTERVAL_METHODS = ("binomial", "bootstrap")

# Cells of a [resamples, examples] array processed at once (bounds the bootstrap's memory: ~10 arrays
# of 8 bytes per cell, so about 160 MB).
_CHUNK_CELLS = 2_000_000


def recall_lower_bound(hits: np.ndarray, total: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided Wilson-score lower confidence bound of a recall `hits / total`.

    `confidence=0.5` returns the point estimate.
    """
    total = np.asarray(total, np.float64)
    recall = np.asarray(hits, np.float64) / total
    z = statistics.NormalDist().inv_cdf(confidence)
    if z <= 0:
        return recall
    spread = z * np.sqrt(recall * (1.0 - recall) / total + z * z / (4.0 * total * total))
    return (recall + z * z / (2.0 * total) - spread) / (1.0 + z * z / total)


def binomial_upper_tail(n: int, p: float) -> np.ndarray:
    """`P(Binomial(n, p) >= h)` for h = 0..n+1 (float64 `[n + 2]`), summed from the top in log space."""
    if p >= 1.0:
        return np.r_[np.ones(n + 1), 0.0]
    if p <= 0.0:
        return np.r_[1.0, np.zeros(n + 1)]
    h = np.arange(n + 1)
    log_pmf = (math.lgamma(n + 1) - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in h])
               + h * math.log(p) + (n - h) * math.log1p(-p))
    return np.r_[np.minimum(np.cumsum(np.exp(log_pmf)[::-1])[::-1], 1.0), 0.0]


def recall_passes(hits: np.ndarray, positives: int, target_recall: float, confidence: float,
                  bound: str) -> np.ndarray:
    """Whether catching `hits` of `positives` shows recall >= `target_recall` at `confidence`.

    `bound='exact'`: the one-sided Clopper-Pearson lower bound reaches the
    target, i.e. `P(Binomial(positives, target_recall) >= hits) <= 1 -
    confidence`. For a cut-off just below the k-th lowest positive score
    (hits = n - k + 1) this is exactly the probability, for any continuous
    score distribution, that its recall on new data falls short: the exact
    bound's coverage is at least `confidence` by construction.
    `bound='wilson'`: the Wilson-score bound (`recall_lower_bound`), an
    approximation that can fall short of it (16 of 16 passes 0.9 at 0.9,
    with an exact coverage of 0.815). At `confidence=0.5` both are the point
    estimate: `hits / positives >= target_recall`.
    """
    hits = np.asarray(hits)
    if confidence == 0.5 or bound == "wilson":
        return recall_lower_bound(hits, positives, confidence) >= target_recall - 1e-12
    tail = binomial_upper_tail(positives, target_recall)
    return tail[np.rint(hits).astype(np.int64)] <= 1.0 - confidence + 1e-12


def can_show_recall(positives: int, target_recall: float, confidence: float, bound: str = "exact") -> bool:
    """Whether `positives` examples can show recall >= `target_recall` at `confidence` (all caught).

    With the exact bound: iff `target_recall ** positives <= 1 - confidence`
    (recall 0.9 at confidence 0.9 needs 22 examples; the Wilson bound, 16).
    """
    return bool(recall_passes(np.array(positives), positives, target_recall, confidence, bound))


def shown_confidence(hits: int, positives: int, target_recall: float, bound: str = "exact") -> float:
    """The highest confidence at which `hits` of `positives` show recall >= `target_recall`.

    The inverse of `recall_passes`. Exact: `P(Binomial(positives,
    target_recall) <= hits - 1)`, the probability that a cut-off catching
    `hits` order statistics reaches the target on new data. Wilson: the
    one-sided score test, `Phi((hits / positives - t) / sqrt(t (1 - t) /
    positives))`, below 0.5 when the observed recall misses the target
    (t = 1: 0.5 when every positive is caught, else 0).
    """
    if bound == "exact":
        return float(1.0 - binomial_upper_tail(positives, target_recall)[int(hits)])
    recall = hits / positives
    if target_recall >= 1.0:
        return 0.5 if hits >= positives else 0.0
    z = (recall - target_recall) / np.sqrt(target_recall * (1.0 - target_recall) / positives)
    return float(statistics.NormalDist().cdf(float(z)))


@dataclasses.dataclass(frozen=True)
class RankedScores:
    """Calibration examples ranked by one class's score (descending), with what the rules need.

    Attributes:
      scores: float64 `[N]`, descending (predict the class iff score >= cut-off).
      positive: bool `[N]`, the example belongs to the class.
      weights: float64 `[N]`, each example's weight in precision (class prior).
      labels: int64 `[N]`, for stratified resampling.
    """

    scores: np.ndarray
    positive: np.ndarray
    weights: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, positive: np.ndarray, weights: np.ndarray,
           labels: np.ndarray) -> RankedScores:
        """Ranks the examples by `scores`, descending (stable: ties keep their order)."""
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        return cls(np.asarray(scores, np.float64)[order], np.asarray(positive, bool)[order],
                   np.asarray(weights, np.float64)[order], np.asarray(labels, np.int64)[order])

    @property
    def num_positives(self) -> int:
        return int(self.positive.sum())

    def group_end(self) -> np.ndarray:
        """Where a cut-off can fall: the last example of each run of equal scores."""
        return np.r_[self.scores[1:] != self.scores[:-1], True]


def _ranked_rule(data: RankedScores, counts: np.ndarray, rule: str, target_recall: float,
                 confidence: float, bound: str) -> np.ndarray:
    """The `bound` or `catch_all` cut-off of each row of `counts` (`[B, N]`, per ranked example)."""
    n = len(data.scores)
    rows = np.arange(counts.shape[0])
    positive_counts = counts * data.positive
    hits = np.cumsum(positive_counts, axis=1)
    weighted_tp = np.cumsum(positive_counts * data.weights, axis=1)
    weighted_fp = np.cumsum((counts - positive_counts) * data.weights, axis=1)
    total = hits[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(weighted_tp + weighted_fp > 0, weighted_tp / (weighted_tp + weighted_fp), 0.0)
    if rule == "bound":
        feasible = recall_passes(hits, data.num_positives, target_recall, confidence, bound)
    else:
        feasible = hits >= total
    candidates = data.group_end()[None, :] & feasible
    best = np.argmax(np.where(candidates, precision, -1.0), axis=1)  # first maximum: highest cut-off
    # The cut-off lies halfway to the next lower score present in the sample (1 below the last).
    present_index = np.where(counts > 0, np.arange(n), n)
    next_present = np.minimum.accumulate(present_index[:, ::-1], axis=1)[:, ::-1]
    following = np.where(best + 1 < n, next_present[rows, np.minimum(best + 1, n - 1)], n)
    top = data.scores[best]
    return np.where(following < n, 0.5 * (top + data.scores[np.minimum(following, n - 1)]), top - 1.0)


def _harrell_davis_rule(data: RankedScores, counts: np.ndarray, target_recall: float) -> np.ndarray:
    """The Harrell-Davis (1 - target_recall) quantile of each row's positive scores.

    With `C_j` the number of a row's positives at or below the j-th lowest
    positive score `x_j`, the row's estimate is
    `sum_j x_j (I_{C_j/n}(a, b) - I_{C_{j-1}/n}(a, b))`: the weights of the
    resample's order statistics, grouped by the value they repeat.
    """
    ascending = data.scores[data.positive][::-1]
    positive_counts = counts[:, data.positive][:, ::-1].astype(np.int64)
    n = len(ascending)
    cumulative = harrell_davis_cumulative_weights(n, 1.0 - target_recall)
    below = cumulative[np.cumsum(positive_counts, axis=1)]
    weights = np.diff(below, axis=1, prepend=0.0)
    return weights @ ascending


def choose_cutoffs(data: RankedScores, counts: np.ndarray, rule: str, target_recall: float,
                   confidence: float, bound: str = "exact") -> np.ndarray:
    """The cut-off `rule` chooses on each sample that a row of `counts` (`[B, N]`) describes.

    Args:
      data: The ranked calibration examples.
      counts: How often each ranked example is in each sample (all ones:
        the calibration data itself); every row holds all positives' count.
      rule: One of `RULES`. `bound` and `catch_all` take, among the cut-offs
        between distinct scores whose recall passes (`recall_passes` with
        `bound` and `confidence`; every positive caught), the
        one with the highest weighted precision, the higher cut-off on ties;
        `bound` needs a feasible cut-off (`can_show_recall`).
      target_recall: In (0, 1); `harrell_davis` needs it below 1.
      confidence: Of the `bound` rule.
      bound: One of `BOUNDS`, of the `bound` rule.

    Returns:
      float64 `[B]` cut-offs: predict the class iff score >= cut-off.
    """
    counts = np.asarray(counts, np.float64)
    if rule == "harrell_davis":
        return _harrell_davis_rule(data, counts, target_recall)
    return _ranked_rule(data, counts, rule, target_recall, confidence, bound)


def evaluate_cutoffs(data: RankedScores, cutoffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(recall, weighted precision)` of each cut-off on the ranked examples (precision 0: none predicted)."""
    cutoffs = np.asarray(cutoffs, np.float64)
    figures = []
    for members in (data.positive, ~data.positive):
        ascending = data.scores[members][::-1]
        prefix = np.r_[0.0, np.cumsum(data.weights[members][::-1])]
        below = np.searchsorted(ascending, cutoffs, side="left")
        figures.append((len(ascending) - below, prefix[-1] - prefix[below]))
    (hits, weighted_tp), (_, weighted_fp) = figures
    recall = hits / max(data.num_positives, 1)
    predicted = weighted_tp + weighted_fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, weighted_tp / predicted, 0.0)
    return recall, precision


def _stratified_counts(labels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`[resamples, N]` counts of a stratified bootstrap: each class resampled to its own size."""
    counts = np.zeros((resamples, len(labels)), np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)),
                                             size=resamples)
    return counts


def bootstrap_intervals(data: RankedScores, rule: str, target_recall: float, confidence: float,
                        bound: str, *, resamples: int, level: float,
                        seed: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile-bootstrap intervals of the recall and precision the rule's cut-off gives on new data.

    The bootstrap of the whole choice: each stratified resample of the
    calibration examples (every class keeps its count) chooses its own
    cut-off with `rule`, which is then measured on the full calibration
    data, the resamples' population. The spread of those figures stands in
    for the spread of the chosen cut-off's recall and precision on new data
    of the calibration data's distribution (precision under its class
    weights), including the luck of the choice itself.

    Args:
      data: The ranked calibration examples.
      rule: One of `RULES`, as in `choose_cutoffs`.
      target_recall: As in `choose_cutoffs`.
      confidence: As in `choose_cutoffs`.
      bound: As in `choose_cutoffs`.
      resamples: Number of resamples, >= 1.
      level: Two-sided coverage of the intervals, in (0, 1).
      seed: Of the resampling generator (the same seed, the same intervals).

    Returns:
      `((recall_low, recall_high), (precision_low, precision_high))`.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // len(data.scores))
    recalls, precisions = [], []
    for start in range(0, resamples, chunk):
        counts = _stratified_counts(data.labels, min(chunk, resamples - start), rng)
        recall, precision = evaluate_cutoffs(
            data, choose_cutoffs(data, counts, rule, target_recall, confidence, bound))
        recalls.append(recall)
        precisions.append(precision)
    tails = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    recall_low, recall_high = np.quantile(np.concatenate(recalls), tails)
    precision_low, precision_high = np.quantile(np.concatenate(precisions), tails)
    return (float(recall_low), float(recall_high)), (float(precision_low), float(precision_high))


def binomial_intervals(data: RankedScores, cutoff: float,
                       level: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Exact binomial intervals of the recall and precision the cut-off gives on new data.

    Recall: the Clopper-Pearson interval of the hits `h` of `n` positives.
    For a cut-off with `j = n - h` positive scores below it, the new-data
    recall lies between `1 - F(x_(j+1))` and `1 - F(x_(j))`, distributed as
    Beta(h, n - h + 1) and Beta(h + 1, n - h) for any continuous score
    distribution F: so the interval holds at `level` even for the cut-offs
    chosen from the positives' order statistics (catch-all, bound), where
    the percentile bootstrap fails (it cannot see below the lowest score).

    Precision: `W_p R / (W_p R + W_n F)` (W_p, W_n: the positives' and
    negatives' total weight; R, F: recall and false-positive rate) at the
    corners of the recall interval and the Clopper-Pearson interval of F
    (over the negatives' Kish effective count `(sum w)^2 / sum w^2` when
    their weights differ): it holds at `2 level - 1` at least (union bound),
    more in practice (`monte_carlo.interval_coverage_study`).

    Returns:
      `((recall_low, recall_high), (precision_low, precision_high))`.
    """
    recall, _ = evaluate_cutoffs(data, np.array([cutoff]))
    n = data.num_positives
    recall_low, recall_high = binomial_interval(round(float(recall[0]) * n), n, level)
    negative = ~data.positive
    if not negative.any():
        return (recall_low, recall_high), (1.0, 1.0)
    weights = data.weights[negative]
    effective = weights.sum() ** 2 / np.sum(weights ** 2)
    rate = float(weights[data.scores[negative] >= cutoff].sum() / weights.sum())
    rate_low, rate_high = binomial_interval(min(rate * effective, effective), effective, level)
    positive_weight, negative_weight = data.weights[data.positive].sum(), weights.sum()

    def precision(recall_value: float, rate_value: float) -> float:
        caught = positive_weight * recall_value
        return float(caught / (caught + negative_weight * rate_value)) if caught > 0 else 0.0

    return (recall_low, recall_high), (precision(recall_low, rate_high), precision(recall_high, rate_low))
