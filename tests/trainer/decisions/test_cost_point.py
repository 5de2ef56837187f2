"""Tests of the expected-cost operating point.

Oracles: a per-example loop over the expected cost of each decision, the closed form of a cost matrix whose
rows are constant off the diagonal (argmax of p_j c_j), and Bayes optimality on data with a known posterior.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from trainer import decisions
from trainer.checks import ArgumentError
from trainer.decisions import CostPoint, choose_cost_point, expected_costs, fit_temperature, measured_cost

K = 3


def softmax(values):
    shifted = values - values.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def sample(num_examples, seed):
    """Logits that are the true log-posterior, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_examples, K)) * 1.5
    cumulative = np.cumsum(softmax(logits), axis=1)
    labels = np.minimum((rng.random((num_examples, 1)) > cumulative).sum(axis=1), K - 1)
    return logits, labels


COSTS = np.array([[0.0, 1.0, 2.0], [10.0, 0.0, 10.0], [1.0, 3.0, 0.0]])


def test_decision_is_the_least_expected_cost_per_example():
    logits, labels = sample(300, seed=0)
    point = choose_cost_point(logits, labels, cost_matrix=COSTS)
    probabilities = softmax(logits)
    for n in range(len(labels)):
        costs = [sum(probabilities[n, i] * COSTS[i, j] for i in range(K)) for j in range(K)]
        assert point.decide(logits[n:n + 1])[0] == int(np.argmin(costs))
    np.testing.assert_allclose(expected_costs(probabilities, COSTS), probabilities @ COSTS)
    decided = point.decide(logits)
    assert point.validation_cost == pytest.approx(np.mean([COSTS[y, d] for y, d in zip(labels, decided)]))
    assert point.validation_expected_cost == pytest.approx(np.mean((probabilities @ COSTS).min(axis=1)))
    assert point.argmax_validation_cost == pytest.approx(measured_cost(labels, logits.argmax(axis=1), COSTS))
    np.testing.assert_array_equal(point.offsets(), np.zeros(K, np.float32))


def test_constant_row_costs_are_a_logit_offset():
    # C[i, j] = c_i off the diagonal: argmin_j sum_i p_i C[i, j] = argmax_j p_j c_j = argmax(z + log c).
    miss = np.array([1.0, 4.0, 0.5])
    matrix = miss[:, None] * (1 - np.eye(K))
    logits, labels = sample(2000, seed=1)
    point = choose_cost_point(logits, labels, cost_matrix=matrix)
    np.testing.assert_array_equal(point.decide(logits), np.argmax(logits + np.log(miss), axis=1))


def test_bayes_decision_costs_less_than_argmax_on_new_data():
    # With the true posterior, the expected-cost rule is optimal: on fresh draws it costs less than
    # argmax, and its expected cost predicts its measured cost.
    logits, labels = sample(2000, seed=2)
    point = choose_cost_point(logits, labels, cost_matrix=COSTS)
    fresh_logits, fresh_labels = sample(100_000, seed=3)
    cost = measured_cost(fresh_labels, point.decide(fresh_logits), COSTS)
    argmax = measured_cost(fresh_labels, fresh_logits.argmax(axis=1), COSTS)
    assert cost < argmax - 0.1
    expected = float((softmax(fresh_logits) @ COSTS).min(axis=1).mean())
    assert cost == pytest.approx(expected, abs=0.02)


def test_calibrated_probabilities_are_used_and_tensorflow_agrees(tmp_path):
    logits, labels = sample(4000, seed=4)
    overconfident = 3.0 * logits
    calibration = fit_temperature(overconfident, labels)
    point = choose_cost_point(overconfident, labels, cost_matrix=COSTS, calibration=calibration)
    probabilities = calibration.apply(overconfident)
    np.testing.assert_array_equal(point.decide(overconfident), np.argmin(probabilities @ COSTS, axis=1))
    raw = choose_cost_point(overconfident, labels, cost_matrix=COSTS)
    assert point.validation_cost < raw.validation_cost  # calibrated probabilities decide better
    test_logits = overconfident[:1000].astype(np.float32)
    np.testing.assert_array_equal(point.decide_tensor(tf.constant(test_logits)).numpy(),
                                  point.decide(test_logits))
    # Through the registry and the file.
    assert decisions.calibrate("expected_cost", overconfident, labels, cost_matrix=COSTS,
                               calibration=calibration) == point
    point.save(str(tmp_path))
    loaded = decisions.load(str(tmp_path))
    assert loaded == point and isinstance(loaded, CostPoint)
    payload = json.loads((tmp_path / "operating_point.json").read_text())
    assert payload["kind"] == "expected_cost" and payload["calibration"]["kind"] == "temperature_scaling"


@pytest.mark.parametrize("matrix, message", [
    ([[0, 1], [1, 0]], "cost_matrix must be 3 x 3"),
    ([[0, 1, 1], [1, 0, 1]], "cost_matrix must be a finite K x K matrix"),
    ([[0, 1, np.nan], [1, 0, 1], [1, 1, 0]], "cost_matrix must be a finite K x K matrix"),
    ("costs.csv", "cost_matrix must be a K x K matrix of numbers"),
])
def test_bad_cost_matrices_are_named(matrix, message):
    logits, labels = sample(50, seed=5)
    with pytest.raises(ArgumentError, match=message) as raised:
        choose_cost_point(logits, labels, cost_matrix=matrix)
    assert raised.value.argument == "cost_matrix"


def test_a_bad_cost_file_is_a_clear_error(tmp_path):
    (tmp_path / "operating_point.json").write_text(json.dumps(
        {"kind": "expected_cost", "num_classes": 3, "cost_matrix": [[0, 1], [1, 0]]}))
    with pytest.raises(ValueError, match="is not a valid operating point: cost_matrix must be 3 x 3"):
        decisions.load(str(tmp_path))
