"""The report's numbers (trainer.reporting.curves) against brute-force counts."""

import numpy as np
import pytest

from trainer.reporting import curves


def _brute_force_pr(scores, positive):
    points = []
    for threshold in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= threshold
        true_positives = np.sum(predicted & positive)
        points.append((true_positives / positive.sum(), true_positives / predicted.sum()))
    return points


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pr_curve_matches_a_threshold_by_threshold_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(300), 2)  # many ties
    positive = rng.random(300) < 0.2
    curve = curves.precision_recall_curve(scores, positive)
    expected = _brute_force_pr(scores, positive)
    np.testing.assert_allclose(curve.recall[1:], [r for r, _ in expected])
    np.testing.assert_allclose(curve.precision[1:], [p for _, p in expected])
    assert curve.recall[0] == 0.0 and curve.positives == positive.sum()
    # Average precision: the step-wise area, sum of (recall gain) * precision at each cut-off.
    gains = np.diff([0.0] + [r for r, _ in expected])
    assert curve.average_precision == pytest.approx(float(np.sum(gains * [p for _, p in expected])))


def test_pr_curve_of_a_perfect_ranking_has_average_precision_one():
    curve = curves.precision_recall_curve(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0], bool))
    assert curve.average_precision == pytest.approx(1.0)
    assert np.isnan(curves.precision_recall_curve(np.array([0.5, 0.2]), np.zeros(2, bool)).average_precision)


def test_reliability_bins_match_a_loop_over_the_bins():
    rng = np.random.default_rng(3)
    scores = rng.random(500)
    scores[:3] = [0.0, 1.0, 0.5]
    outcomes = rng.random(500) < scores
    binned = curves.reliability_bins(scores, outcomes, 10)
    for b in range(10):
        low, high = b / 10, (b + 1) / 10
        inside = (scores >= low) & ((scores < high) if b < 9 else (scores <= high))
        assert binned.counts[b] == inside.sum()
        assert binned.mean_score[b] == pytest.approx(scores[inside].mean())
        assert binned.frequency[b] == pytest.approx(outcomes[inside].mean())
    assert binned.counts.sum() == 500


def test_row_percentages_add_up_to_100_and_stay_within_a_point_of_the_share():
    rng = np.random.default_rng(4)
    matrix = rng.integers(0, 40, size=(12, 12))
    matrix[3] = 0  # a class without rows
    matrix[5] = [1] * 3 + [0] * 9  # thirds
    percent = curves.row_percentages(matrix)
    totals = matrix.sum(axis=1)
    for row in range(12):
        if totals[row] == 0:
            assert np.all(percent[row] == 0)
            continue
        assert percent[row].sum() == 100
        assert np.all(np.abs(percent[row] - 100 * matrix[row] / totals[row]) < 1)
    assert percent[5, :3].tolist() == [34, 33, 33]


def test_worst_recall_classes_keep_the_target_and_put_missing_classes_last():
    recall = np.array([0.9, np.nan, 0.1, 0.5, 0.2, 0.95])
    assert curves.worst_recall_classes(recall, 3).tolist() == [2, 3, 4]
    assert curves.worst_recall_classes(recall, 3, keep=5).tolist() == [2, 4, 5]
    assert curves.worst_recall_classes(recall, 6).tolist() == list(range(6))
    assert 1 not in curves.worst_recall_classes(recall, 5).tolist()
