"""Tests of the small-sample cut-off: incomplete beta, Harrell-Davis, exact bound, intervals, Monte Carlo.

Oracles: binomial sums and closed forms of I_x(a, b), Gauss-Legendre integration and Monte Carlo Beta draws of
the Harrell-Davis estimator, brute force over cut-offs on materialised resamples, exact normal CDFs.
"""

import math
import statistics
import warnings
from fractions import Fraction

import numpy as np
import pytest

from trainer.checks import ArgumentError
from trainer.decisions import choose_operating_point, from_dict
from trainer.decisions.cutoffs import (
    RankedScores,
    binomial_upper_tail,
    can_show_recall,
    choose_cutoffs,
    evaluate_cutoffs,
    shown_confidence,
)
from trainer.decisions.monte_carlo import interval_coverage_study, small_sample_study
from trainer.decisions.quantiles import (
    beta_quantile,
    binomial_interval,
    harrell_davis_quantile,
    harrell_davis_weights,
    regularized_incomplete_beta,
)

NORMAL = statistics.NormalDist()


def binomial_tail(n, p, k):
    """P(Binomial(n, p) >= k): the exact sum in rationals for n < 60, else an fsum of log-space terms."""
    if n < 60:
        p = Fraction(p)
        return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))
    if p <= 0.0 or p >= 1.0:
        return float(k <= 0) if p <= 0.0 else float(k <= n)
    return math.fsum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                              + i * math.log(p) + (n - i) * math.log1p(-p)) for i in range(k, n + 1))


def beta_pdf(t, a, b):
    return np.exp((a - 1) * np.log(t) + (b - 1) * np.log1p(-t)
                  - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))


def harrell_davis_by_angle_integration(values, q, nodes=60):
    """The same integral in t = sin^2(theta): the density becomes 2 sin^(2a-1) cos^(2b-1), smooth (so
    Gauss-Legendre is exact to rounding) when a and b are multiples of 1/2."""
    x = np.sort(values)
    n = len(x)
    a, b = q * (n + 1), (1 - q) * (n + 1)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    points, weights = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for i in range(n):
        low, high = math.asin(math.sqrt(i / n)), math.asin(math.sqrt((i + 1) / n))
        theta = low + (high - low) * (points + 1) / 2
        density = 2 * np.sin(theta) ** (2 * a - 1) * np.cos(theta) ** (2 * b - 1) / math.exp(log_beta)
        total += x[i] * (high - low) / 2 * np.sum(weights * density)
    return total


def harrell_davis_by_integration(values, q, nodes=200):
    """sum_i x_(i) * integral over [(i-1)/n, i/n] of the Beta(q(n+1), (1-q)(n+1)) density (Gauss-Legendre)."""
    x = np.sort(values)
    n = len(x)
    a, b = q * (n + 1), (1 - q) * (n + 1)
    points, weights = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for i in range(n):
        low, high = i / n, (i + 1) / n
        t = low + (high - low) * (points + 1) / 2
        total += x[i] * (high - low) / 2 * np.sum(weights * beta_pdf(t, a, b))
    return total


# --- the regularized incomplete beta -----------------------------------------------------------------

@pytest.mark.parametrize("a, b", [(1, 1), (1, 7), (3, 1), (2, 5), (12, 30), (40, 9), (150, 1350)])
def test_incomplete_beta_is_the_binomial_tail_for_integer_shapes(a, b):
    # I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integers a, b.
    grid = np.linspace(0.0, 1.0, 23) if a + b < 100 else [0.0, 0.08, 0.095, 0.1, 0.105, 0.12, 1.0]
    for x in grid:
        expected = binomial_tail(a + b - 1, float(x), a)
        assert regularized_incomplete_beta(x, a, b) == pytest.approx(expected, abs=1e-12)


def test_incomplete_beta_closed_forms_for_other_shapes():
    x = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(regularized_incomplete_beta(x, 0.5, 0.5), 2 / np.pi * np.arcsin(np.sqrt(x)),
                               atol=1e-13)
    np.testing.assert_allclose(regularized_incomplete_beta(x, 0.3, 1.0), x ** 0.3, atol=1e-13)
    np.testing.assert_allclose(regularized_incomplete_beta(x, 1.0, 2.7), 1 - (1 - x) ** 2.7, atol=1e-13)
    # Symmetry and monotonicity for shapes with no closed form.
    np.testing.assert_allclose(regularized_incomplete_beta(x, 1.3, 11.7),
                               1 - regularized_incomplete_beta(1 - x, 11.7, 1.3), atol=1e-13)
    assert np.all(np.diff(regularized_incomplete_beta(x, 2.2, 0.4)) >= 0)
    with pytest.raises(ArgumentError, match="a must be a positive number"):
        regularized_incomplete_beta(0.5, 0.0, 1.0)
    with pytest.raises(ArgumentError, match=r"x must be in \[0, 1\]"):
        regularized_incomplete_beta(1.5, 1.0, 1.0)


def test_beta_quantile_and_clopper_pearson_interval():
    assert beta_quantile(0.1, 1.0, 1.0) == pytest.approx(0.1)
    assert beta_quantile(0.05, 5.0, 1.0) == pytest.approx(0.05 ** (1 / 5))  # I_x(a, 1) = x^a
    # Clopper-Pearson of 12 of 12 at 90%: the lower end solves x^12 = 0.05.
    assert binomial_interval(12, 12, 0.9) == pytest.approx((0.05 ** (1 / 12), 1.0))
    low, high = binomial_interval(7, 20, 0.9)
    assert binomial_tail(20, low, 7) == pytest.approx(0.05, abs=1e-9)  # P(X >= 7 | low) = alpha / 2
    assert 1 - binomial_tail(20, high, 8) == pytest.approx(0.05, abs=1e-9)  # P(X <= 7 | high)


# --- Harrell-Davis -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n, q", [(n, 0.5) for n in range(1, 6)]
                         + [(1, 0.25), (2, 1 / 3), (3, 0.25), (4, 0.4), (5, 0.25), (5, 0.75)])
def test_harrell_davis_matches_numerical_integration(n, q):
    # (n, q) with q (n + 1) a multiple of 1/2, where the angle substitution makes the integrand smooth.
    values = np.random.default_rng(n).normal(size=n)
    assert harrell_davis_quantile(values, q) == pytest.approx(
        harrell_davis_by_angle_integration(values, q), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
def test_harrell_davis_matches_monte_carlo_beta_draws_at_the_tail(n):
    # HD = E[x_(ceil(n U))], U ~ Beta(q(n+1), (1-q)(n+1)); q = 0.1 makes a < 1 for n < 9 (a singular density).
    values = np.random.default_rng(10 + n).normal(size=n)
    draws = np.random.default_rng(0).beta(0.1 * (n + 1), 0.9 * (n + 1), size=1_000_000)
    order = np.clip(np.ceil(draws * n).astype(int), 1, n) - 1
    expected = np.sort(values)[order].mean()
    spread = np.sort(values)[order].std() / 1000
    assert harrell_davis_quantile(values, 0.1) == pytest.approx(expected, abs=4 * spread + 1e-12)


def test_harrell_davis_known_values_and_shape():
    assert harrell_davis_quantile([3.5], 0.1) == 3.5
    assert harrell_davis_quantile([1.0, 3.0], 0.5) == pytest.approx(2.0)  # symmetric weights
    weights = harrell_davis_weights(12, 0.1)
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    assert weights[0] == pytest.approx(float(regularized_incomplete_beta(1 / 12, 1.3, 11.7)))
    assert harrell_davis_by_integration(np.arange(12.0), 0.1, nodes=400) == pytest.approx(
        harrell_davis_quantile(np.arange(12.0), 0.1), abs=1e-6)
    big = np.random.default_rng(0).normal(size=20001)
    assert harrell_davis_quantile(big, 0.1) == pytest.approx(NORMAL.inv_cdf(0.1), abs=0.03)
    with pytest.raises(ArgumentError, match=r"q must be in \(0, 1\)"):
        harrell_davis_quantile([1.0, 2.0], 1.0)
    with pytest.raises(ArgumentError, match="values must be a non-empty sample"):
        harrell_davis_quantile([], 0.5)


# --- the exact bound ---------------------------------------------------------------------------------

def test_exact_bound_is_the_binomial_tail():
    np.testing.assert_allclose(binomial_upper_tail(30, 0.9), [binomial_tail(30, 0.9, k) for k in range(32)],
                               atol=1e-13)
    # Catching all n examples shows recall t at 1 - t^n: 21 are too few for 0.9 at 0.9, 22 enough.
    assert not can_show_recall(21, 0.9, 0.9) and can_show_recall(22, 0.9, 0.9)
    assert can_show_recall(16, 0.9, 0.9, bound="wilson")  # the approximation lets 16 through
    assert shown_confidence(16, 16, 0.9) == pytest.approx(1 - 0.9 ** 16)
    assert shown_confidence(11, 12, 0.9) == pytest.approx(1 - binomial_tail(12, 0.9, 11))
    assert shown_confidence(12, 12, 0.9, bound="wilson") == pytest.approx(
        NORMAL.cdf(0.1 / math.sqrt(0.09 / 12)))


def brute_force_exact(scores, is_target, target_recall, confidence):
    """Best precision over every cut-off whose hits h pass P(Binomial(n, t) >= h) <= 1 - confidence."""
    n = int(is_target.sum())
    best = 0.0
    for cutoff in np.unique(scores):
        predicted = scores >= cutoff
        hits = int((predicted & is_target).sum())
        if binomial_tail(n, target_recall, hits) <= 1 - confidence:
            best = max(best, (predicted & is_target).sum() / predicted.sum())
    return best


@pytest.mark.parametrize("target_recall", [0.8, 0.9])
def test_exact_bound_choice_is_the_brute_force_optimum(target_recall):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=500)
    logits = rng.normal(size=(500, 3)) + 1.5 * np.eye(3)[labels]
    point = choose_operating_point(logits, labels, target_class=1, target_recall=target_recall,
                                   method="threshold")
    assert point.bound == "exact" and point.confidence_met
    scores = logits[:, 1] - np.log(np.exp(logits[:, 0]) + np.exp(logits[:, 2]))
    assert point.validation_precision == pytest.approx(brute_force_exact(scores, labels == 1,
                                                                         target_recall, 0.9))


def test_exact_bound_reaches_the_recall_with_the_confidence_for_every_count():
    # Only target-class examples: the choice is the fewest hits passing; its coverage on new data is
    # P(Binomial(n, t) <= h - 1), which the exact bound keeps at or above the confidence for every n.
    coverages = []
    for n in range(22, 301, 7):
        logits = np.zeros((n, 3))
        logits[:, 1] = np.linspace(3.0, -3.0, n)
        point = choose_operating_point(logits, np.ones(n, np.int64), target_class=1, target_recall=0.9)
        hits = round(point.validation_recall * n)
        coverages.append(1 - binomial_tail(n, 0.9, hits))
        assert point.shown_confidence == pytest.approx(coverages[-1])
    assert min(coverages) >= 0.9


# --- the Harrell-Davis fallback ----------------------------------------------------------------------

def few_positives(n, seed, separation=3.0, negatives=24):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(size=n) + separation, rng.normal(size=n * negatives)]
    labels = np.r_[np.ones(n, np.int64), np.zeros(n * negatives, np.int64)]
    return np.c_[np.zeros_like(scores), scores], labels


def test_too_few_positives_use_the_harrell_davis_quantile_and_say_so():
    logits, labels = few_positives(12, seed=0)
    with pytest.warns(UserWarning, match=r"12 examples .* too few to show recall >= 0.9 .* 0\.718"):
        point = choose_operating_point(logits, labels, target_class=1, target_recall=0.9,
                                       method="threshold")
    assert point.confidence_met is False and point.estimator == "harrell_davis" and point.positives == 12
    expected = harrell_davis_by_integration(logits[labels == 1, 1], 0.1, nodes=400)
    assert -point.offset == pytest.approx(expected, abs=1e-6)
    hits = int(np.sum(logits[labels == 1, 1] >= -point.offset))
    assert point.validation_recall == pytest.approx(hits / 12)
    assert point.shown_confidence == pytest.approx(1 - binomial_tail(12, 0.9, hits))
    with pytest.warns(UserWarning, match="the cut-off that catches all of them"):
        old = choose_operating_point(logits, labels, target_class=1, target_recall=0.9, method="threshold",
                                     estimator="empirical")
    assert old.validation_recall == 1.0 and old.confidence_met is False
    assert -old.offset < logits[labels == 1, 1].min() < -point.offset
    # Asked for the point estimate (confidence 0.5), Harrell-Davis gives the same cut-off, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        median = choose_operating_point(logits, labels, target_class=1, target_recall=0.9,
                                        method="threshold", confidence=0.5)
    assert median.offset == pytest.approx(point.offset) and median.confidence_met


def test_harrell_davis_keeps_precision_on_fresh_samples_monte_carlo():
    # 12 positives, 288 negatives per draw; recall and precision of each rule on 400,000 fresh examples.
    fresh_logits, fresh_labels = few_positives(20_000, seed=99, negatives=20)
    recalls, precisions = {"harrell_davis": [], "empirical": []}, {"harrell_davis": [], "empirical": []}
    for seed in range(150):
        logits, labels = few_positives(12, seed=seed)
        for estimator in recalls:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                point = choose_operating_point(logits, labels, target_class=1, target_recall=0.9,
                                               method="threshold", estimator=estimator, interval_level=None)
            decided = point.decide(fresh_logits) == 1
            recalls[estimator].append(decided[fresh_labels == 1].mean())
            # Fresh data at 1 positive per 20: reweight to the calibration prevalence 1 in 25.
            tp, fp = decided[fresh_labels == 1].mean(), decided[fresh_labels == 0].mean()
            precisions[estimator].append(tp / (tp + 24 * fp))
    assert 0.86 <= np.mean(recalls["harrell_davis"]) <= 0.91  # about the 0.9 asked for
    assert np.mean(recalls["empirical"]) >= 0.91  # catch-all: n / (n + 1) = 0.923 in expectation
    assert np.mean(precisions["harrell_davis"]) >= np.mean(precisions["empirical"]) + 0.08


def test_small_sample_study_monte_carlo():
    rows = small_sample_study((12, 16), trials=300, seed=0,
                              variants=(("empirical", "wilson", 0.9), ("harrell_davis", "exact", 0.9)))
    # The oracle: cut-off at separation - z_0.9, precision at prevalence 1/25, from the normal CDF.
    cutoff = 3.0 - NORMAL.inv_cdf(0.9)
    oracle = 0.9 / (0.9 + 24 * (1 - NORMAL.cdf(cutoff)))
    by = {(row["positives"], row["estimator"]): row for row in rows}
    for n in (12, 16):
        old, new = by[(n, "empirical")], by[(n, "harrell_davis")]
        assert old["oracle_precision"] == pytest.approx(oracle)
        assert new["share_confidence_met"] == 0.0  # 12 and 16 are below the exact bound's 22
        assert 0.86 <= new["mean_recall"] <= 0.92
        assert new["precision_ratio"] >= 0.9 and new["precision_ratio"] >= old["precision_ratio"] + 0.2
        assert new["coverage_085"] >= 0.6
        assert old["coverage_090"] >= 0.65 and old["mean_recall"] >= 0.92
    assert by[(16, "empirical")]["share_confidence_met"] == 1.0  # Wilson: 16 of 16 passes


# --- intervals ---------------------------------------------------------------------------------------

def test_resampled_choice_is_the_choice_on_the_materialised_resample():
    # A row of counts stands for a sample holding each example that many times: the vectorised rules
    # must choose there what the brute force (bound) and the HD integral (fallback) choose on it.
    logits, labels = few_positives(25, seed=3, negatives=8)
    scores = logits[:, 1]
    data = RankedScores.of(scores, labels == 1, np.ones(len(labels)), labels)
    rng = np.random.default_rng(0)
    for _ in range(5):
        counts = np.zeros(len(labels))
        for label in (0, 1):
            members = np.flatnonzero(data.labels == label)
            counts[members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)))
        sample_scores = np.repeat(data.scores, counts.astype(int))
        sample_positive = np.repeat(data.positive, counts.astype(int))
        bound_cut = choose_cutoffs(data, counts[None], "bound", 0.8, 0.9)[0]
        predicted = sample_scores >= bound_cut
        assert (predicted & sample_positive).sum() / predicted.sum() == pytest.approx(
            brute_force_exact(sample_scores, sample_positive, 0.8, 0.9))
        hd_cut = choose_cutoffs(data, counts[None], "harrell_davis", 0.9, 0.9)[0]
        assert hd_cut == pytest.approx(harrell_davis_by_integration(sample_scores[sample_positive], 0.1,
                                                                    nodes=400), abs=1e-6)
        all_cut = choose_cutoffs(data, counts[None], "catch_all", 0.9, 0.9)[0]
        assert all_cut < sample_scores[sample_positive].min()
        lower = sample_scores[sample_scores < sample_scores[sample_positive].min()]
        assert lower.size == 0 or all_cut > lower.max()
    recall, precision = evaluate_cutoffs(data, np.array([np.inf, -np.inf]))
    np.testing.assert_allclose(recall, [0.0, 1.0])
    np.testing.assert_allclose(precision, [0.0, 25 / len(labels)])


def test_intervals_hold_the_truth_about_as_often_as_their_level_monte_carlo():
    rows = interval_coverage_study((12, 60), trials=120, resamples=200, seed=1)
    by = {(row["positives"], row["method"]): row for row in rows}
    for n in (12, 60):  # exact binomial: at least the level on the recall, precision conservative
        assert by[(n, "binomial")]["recall_coverage"] >= 0.85
        assert by[(n, "binomial")]["precision_coverage"] >= 0.85
    assert 0.8 <= by[(60, "bootstrap")]["recall_coverage"] <= 0.99  # about right with 60 positives
    assert 0.8 <= by[(60, "bootstrap")]["precision_coverage"] <= 1.0
    assert by[(12, "binomial")]["recall_width"] > by[(60, "binomial")]["recall_width"]


def test_intervals_are_stored_and_round_trip():
    logits, labels = few_positives(40, seed=5)
    point = choose_operating_point(logits, labels, target_class=1, target_recall=0.8,
                                   interval_method="bootstrap", bootstrap_resamples=300, seed=3)
    assert point.interval_method == "bootstrap" and point.interval_resamples == 300
    assert point.interval_level == 0.9
    low, high = point.recall_interval
    assert 0.0 <= low <= high <= 1.0 and point.precision_interval[0] <= point.precision_interval[1]
    assert point == choose_operating_point(logits, labels, target_class=1, target_recall=0.8,
                                           interval_method="bootstrap", bootstrap_resamples=300, seed=3)
    payload = point.to_dict()
    assert isinstance(payload["recall_interval"], list)
    assert from_dict(payload) == point
    binomial = choose_operating_point(logits, labels, target_class=1, target_recall=0.8)
    hits = round(binomial.validation_recall * 40)
    assert binomial.recall_interval == pytest.approx(binomial_interval(hits, 40, 0.9))
    assert binomial.interval_resamples is None
    assert choose_operating_point(logits, labels, target_class=1, target_recall=0.8,
                                  interval_level=None).recall_interval is None
    bad = dict(payload, recall_interval=[0.9, 0.2])
    with pytest.raises(ArgumentError, match="recall_interval must be"):
        from_dict(bad)


@pytest.mark.parametrize("kwargs, argument", [
    ({"estimator": "median"}, "estimator"),
    ({"bound": "hoeffding"}, "bound"),
    ({"interval_level": 1.0}, "interval_level"),
    ({"interval_method": "jackknife"}, "interval_method"),
    ({"bootstrap_resamples": 0}, "bootstrap_resamples"),
    ({"seed": -1}, "seed"),
])
def test_bad_new_arguments_are_named(kwargs, argument):
    logits, labels = few_positives(30, seed=0)
    with pytest.raises(ArgumentError) as raised:
        choose_operating_point(logits, labels, target_class=1, target_recall=0.9, **kwargs)
    assert raised.value.argument == argument


def test_binomial_interval_near_all_successes_is_finite():
    # Fractional counts within 0.01 of the trials made the bisection evaluate I_1(a, b).
    from trainer.decisions.quantiles import binomial_interval
    for successes, trials in ((14.99, 15), (999.9, 1000), (15.0, 15)):
        low, high = binomial_interval(successes, trials, 0.9)
        assert 0.0 < low < high <= 1.0
    # Monotone in the count: more successes never lower the bounds.
    assert binomial_interval(14.99, 15, 0.9)[0] >= binomial_interval(14.0, 15, 0.9)[0]
