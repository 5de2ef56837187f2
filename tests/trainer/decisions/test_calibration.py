"""Tests of temperature scaling and the expected calibration error.

Oracles: the temperature that generated the labels, a hand-computed ECE, the true posterior of synthetic data,
TensorFlow's softmax against NumPy's.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from trainer.checks import ArgumentError
from trainer.decisions.calibration import (
    ECE_BINS,
    FILENAME,
    Calibration,
    calibration_metrics,
    class_weight_correction,
    expected_calibration_error,
    fit_temperature,
    load_calibration,
    logit_adjustment_correction,
    negative_log_likelihood,
)

K = 5


def softmax(values):
    shifted = values - values.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def posterior_and_labels(num_examples=20_000, seed=0, scale=2.0):
    """True log-posteriors u (any logits) and labels drawn from softmax(u)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(num_examples, K)) * scale
    cumulative = np.cumsum(softmax(u), axis=1)
    labels = np.minimum((rng.random((num_examples, 1)) > cumulative).sum(axis=1), K - 1)
    return u, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7, 3.0])
def test_fit_recovers_the_generating_temperature(temperature):
    u, labels = posterior_and_labels(seed=int(temperature * 10))
    logits = temperature * u  # a model over- (T > 1) or under-confident (T < 1) by the factor T
    calibration = fit_temperature(logits, labels)
    assert calibration.temperature == pytest.approx(temperature, rel=0.04)
    # The fitted T is the NLL's minimum: no better at the generating T or 10% either side.
    def nll(t):
        return negative_log_likelihood(softmax(logits / t), labels)
    assert calibration.fit_nll == pytest.approx(nll(calibration.temperature))
    assert calibration.fit_nll <= min(nll(temperature), nll(temperature * 0.9), nll(temperature * 1.1))
    assert calibration.fit_examples == len(labels)
    assert calibration.fit_nll_uncalibrated == pytest.approx(nll(1.0))
    if temperature != 1.0:
        assert calibration.fit_ece < calibration.fit_ece_uncalibrated


def test_class_weights_are_undone_after_the_temperature():
    # A model trained with class weights w estimates softmax(u + log w); overconfident by T0 = 2.
    u, labels = posterior_and_labels(seed=1)
    weights = np.array([1.0, 4.0, 0.5, 10.0, 2.0])
    logits = 2.0 * (u + np.log(weights))
    correction = class_weight_correction(weights)
    np.testing.assert_allclose(correction, -np.log(weights))
    calibration = fit_temperature(logits, labels, prior_correction=correction)
    assert calibration.temperature == pytest.approx(2.0, rel=0.04)
    true_posterior = softmax(u)
    assert np.abs(calibration.apply(logits) - true_posterior).max() < 0.05
    uncorrected = fit_temperature(logits, labels)
    assert calibration.fit_nll < uncorrected.fit_nll - 0.01
    assert np.abs(uncorrected.apply(logits) - true_posterior).max() > 0.2


def test_logit_adjustment_is_undone_before_the_temperature():
    # A logit-adjusted loss fits softmax(z + tau log prior) to the labels: z = T0 u - tau log prior.
    u, labels = posterior_and_labels(seed=2)
    counts = np.array([5000.0, 800.0, 120.0, 40.0, 2000.0])
    log_prior = np.log(counts / counts.sum())
    logits = 1.5 * u - 1.0 * log_prior
    offsets = logit_adjustment_correction(counts, tau=1.0)
    np.testing.assert_allclose(offsets, log_prior)
    calibration = fit_temperature(logits, labels, loss_offsets=offsets)
    assert calibration.temperature == pytest.approx(1.5, rel=0.04)
    assert np.abs(calibration.apply(logits) - softmax(u)).max() < 0.05


def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    labels = np.array([0, 1, 1, 0])
    result = expected_calibration_error(probabilities, labels, bins=5)  # bins of width 0.2
    # Top label: confidences 0.7, 0.6, 0.8, 0.6, correct 1, 0, 1, 0. Bin [0.6, 0.8): 0.7, 0.6, 0.6 with
    # 1 correct: |1 - 1.9| = 0.9; bin [0.8, 1]: |1 - 0.8| = 0.2. ECE = (0.9 + 0.2) / 4.
    assert result["ece"] == pytest.approx(0.275)
    # Class 0: p 0.7, 0.6 (bin 3, 1 positive): |1 - 1.3|; 0.1 (bin 0): 0.1; 0.2 (bin 1, positive): 0.8.
    # Class 1: 0.2, 0.3, 0.2 (bin 1, 1 positive): |1 - 0.7|; 0.8 (bin 4, positive): 0.2.
    # Class 2: 0.1 x 3 (bin 0, no positive): 0.3; 0.6 (bin 3): 0.6.
    np.testing.assert_allclose(result["per_class_ece"], [1.2 / 4, 0.5 / 4, 0.9 / 4])
    assert result["bins"] == 5 and result["examples"] == 4
    # Perfectly calibrated in every bin: ECE 0 (each bin's mean score equals its positive rate).
    assert expected_calibration_error(np.array([[0.5, 0.5]] * 4), np.array([0, 1, 0, 1]))["ece"] == 0.0
    assert expected_calibration_error(probabilities, labels)["bins"] == ECE_BINS == 15
    with pytest.raises(ArgumentError, match="bins must be a positive integer"):
        expected_calibration_error(probabilities, labels, bins=0)
    with pytest.raises(ArgumentError, match="labels must be in"):
        expected_calibration_error(probabilities, np.array([0, 1, 3, 0]))


def test_numpy_and_tensorflow_agree_and_round_trip(tmp_path):
    u, labels = posterior_and_labels(4000, seed=3)
    weights = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    calibration = fit_temperature(2.0 * u + 0.3, labels, loss_offsets=[0.1, -0.2, 0.0, 0.3, 0.0],
                                  prior_correction=class_weight_correction(weights))
    logits = (2.0 * u).astype(np.float32)
    expected = calibration.apply(logits)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0)
    np.testing.assert_allclose(calibration.apply_tensor(tf.constant(logits)).numpy(), expected, atol=1e-6)
    compiled = tf.function(calibration.apply_tensor, input_signature=[tf.TensorSpec([None, K])])
    np.testing.assert_allclose(compiled(tf.constant(logits)).numpy(), expected, atol=1e-6)
    # The formula, written out.
    direct = softmax((logits + np.array([0.1, -0.2, 0.0, 0.3, 0.0])) / calibration.temperature
                     - np.log(weights))
    np.testing.assert_allclose(expected, direct, atol=1e-12)

    payload = json.loads(json.dumps(calibration.to_dict(), allow_nan=False))
    assert payload["kind"] == "temperature_scaling"
    assert Calibration.from_dict(payload) == calibration
    path = calibration.save(str(tmp_path / "run"))
    assert path.endswith(FILENAME)
    assert load_calibration(str(tmp_path / "run")) == calibration
    assert load_calibration(str(tmp_path / "none")) is None and load_calibration(None) is None
    (tmp_path / "run" / FILENAME).write_text(json.dumps(dict(payload, temperature=-1.0)))
    with pytest.raises(ValueError, match="is not a valid calibration: temperature must be a positive"):
        load_calibration(str(tmp_path / "run"))
    with pytest.raises(ArgumentError, match="prior_correction must be 5 finite numbers"):
        Calibration.from_dict(dict(payload, prior_correction=[0.0]))


def test_calibration_metrics_and_bad_arguments():
    u, labels = posterior_and_labels(3000, seed=4)
    calibration = fit_temperature(2.5 * u, labels)
    raw = calibration_metrics(2.5 * u, labels)
    fixed = calibration_metrics(2.5 * u, labels, calibration)
    assert raw["temperature"] is None and fixed["temperature"] == calibration.temperature
    assert fixed["nll"] < raw["nll"] and fixed["ece"] < raw["ece"]
    assert len(fixed["per_class_ece"]) == K and fixed["examples"] == 3000
    assert fixed["nll"] == pytest.approx(calibration.fit_nll)
    with pytest.raises(ArgumentError, match="loss_offsets must be 5 finite numbers") as raised:
        fit_temperature(u, labels, loss_offsets=[1.0, 2.0])
    assert raised.value.argument == "loss_offsets"
    with pytest.raises(ArgumentError, match="class_weights must be at least 2 positive"):
        class_weight_correction([1.0, 0.0])
    with pytest.raises(ArgumentError, match="tau must be"):
        logit_adjustment_correction([10, 20], tau=-1)


def test_a_fit_at_the_end_of_the_search_warns():
    labels = np.array([0, 1, 2, 0, 1, 2] * 20)
    separated = 5.0 * np.eye(3)[labels]
    with pytest.warns(UserWarning, match="smallest temperature"):
        assert fit_temperature(separated, labels).temperature == pytest.approx(0.01)
    with pytest.warns(UserWarning, match="largest temperature"):
        assert fit_temperature(-separated, labels).temperature == pytest.approx(100.0)
