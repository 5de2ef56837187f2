"""`--calibrate_probabilities` and `--cost_matrix` from the CLI: fitted on the choosing split, served.

Oracles: the softmax formula in NumPy from calibration.json, a hand-binned ECE, a hand count of costs.
"""

import json
import os

import numpy as np
import pytest
from absl import flags

from cli_processes import run_cli, write_npz
from trainer.cli import build
from trainer.cli import config as config_lib
from trainer.export import load_serving_function

FLAGS = flags.FLAGS
COSTLY = 1  # the class whose miss costs ten times as much
# Validation and test splits of different sizes, so a fit on the wrong one shows in its row count.
SPLITS = ("--validation_split=0.25", "--test_split=0.15")


def _args(data, model_dir, *extra):
    return (f"--dataset=npz:{data}", f"--model_dir={model_dir}", "--epochs=3", "--batch_size=32",
            "--deterministic", "--seed=1", *SPLITS, *extra)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("calibration_data") / "data.npz", num_examples=600)


@pytest.fixture(scope="module")
def test_split(data_path):
    """The evaluation (test) split's features and labels, as the runs read them (same spec and seed)."""
    FLAGS.unparse_flags()
    try:
        FLAGS(["trainer.main", *_args(data_path, "/tmp/unused")])
        bundle = build.load_bundle(config_lib.from_flags())
    finally:
        FLAGS.unparse_flags()
    features, labels = [], []
    for x, y in bundle.eval.dataset(64, shuffle=False, seed=1):
        features.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(features), np.concatenate(labels).reshape(-1).astype(np.int64)


def _served(model_dir, features):
    serve, metadata = load_serving_function(os.path.join(model_dir, "export"))
    outputs = serve(features=features.astype(np.float32))
    return {key: value.numpy() for key, value in outputs.items()}, metadata


def _metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json")) as handle:
        return json.load(handle)


def _hand_ece(probabilities, labels, bins=15):
    """Top-label ECE with equal-width bins, written out bin by bin."""
    total = 0.0
    top = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (top >= low) & ((top < high) if b < bins - 1 else (top <= high))
        if inside.any():
            total += inside.sum() / len(labels) * abs(correct[inside].mean() - top[inside].mean())
    return total


@pytest.fixture(scope="module")
def weighted_run(data_path, tmp_path_factory):
    """Inverse-frequency class weights, no operating point: calibration alone."""
    model_dir = tmp_path_factory.mktemp("calibration_cli") / "weighted"
    result = run_cli(*_args(data_path, model_dir, "--reweighting=inverse_frequency"), timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    return str(model_dir)


def test_calibration_is_fitted_on_the_validation_split(weighted_run, test_split):
    metrics = _metrics(weighted_run)
    with open(os.path.join(weighted_run, "calibration.json")) as handle:
        saved = json.load(handle)
    validation_rows = metrics["data_splits"]["validation"]["rows"]
    test_rows = len(test_split[1])
    assert validation_rows != test_rows
    assert saved["fit_examples"] == validation_rows
    calibration = metrics["calibration"]
    assert calibration["fitted_on"].startswith("the validation split")
    assert calibration["eval"]["examples"] == test_rows == metrics["data_splits"]["eval"]["rows"]
    # The prior shift of gradient class weights w is undone by -log w.
    np.testing.assert_allclose(saved["prior_correction"], -np.log(metrics["final_class_weights"]),
                               rtol=1e-6)
    assert saved["loss_offsets"] is None


def test_served_probabilities_are_the_calibrated_softmax(weighted_run, test_split):
    features, labels = test_split
    outputs, metadata = _served(weighted_run, features)
    with open(os.path.join(weighted_run, "calibration.json")) as handle:
        saved = json.load(handle)
    assert metadata["calibration"] == saved
    logits = outputs["logits"].astype(np.float64)
    scaled = logits / saved["temperature"] + np.asarray(saved["prior_correction"])
    expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert not np.allclose(expected, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-3)
    # No operating point: the served class is still the argmax of the logits.
    np.testing.assert_array_equal(outputs["class_id"], logits.argmax(axis=1))

    calibration = _metrics(weighted_run)["calibration"]
    served = outputs["probabilities"].astype(np.float64)
    assert calibration["eval"]["ece"] == pytest.approx(_hand_ece(served, labels), abs=1e-5)
    raw = np.exp(logits - logits.max(axis=1, keepdims=True))
    raw /= raw.sum(axis=1, keepdims=True)
    assert calibration["eval_uncalibrated"]["ece"] == pytest.approx(_hand_ece(raw, labels), abs=1e-5)
    for k in range(3):  # one-vs-rest per class: the class's own probability, outcome label == k
        hand = _hand_ece_one_vs_rest(served[:, k], labels == k)
        assert calibration["eval"]["per_class_ece"][k] == pytest.approx(hand, abs=1e-5)


def _hand_ece_one_vs_rest(scores, outcomes, bins=15):
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (scores >= low) & ((scores < high) if b < bins - 1 else (scores <= high))
        if inside.any():
            total += inside.sum() / len(scores) * abs(outcomes[inside].mean() - scores[inside].mean())
    return total


def _costs():
    costs = 1.0 - np.eye(3)
    costs[COSTLY] *= 10.0  # missing class 1 costs ten times as much as any other mistake
    return costs


def test_cost_matrix_raises_the_costly_class_recall(data_path, test_split, tmp_path):
    costs = _costs()
    path = tmp_path / "costs.csv"
    path.write_text("0,1,2\n" + "\n".join(",".join(f"{c:g}" for c in row) for row in costs) + "\n")
    model_dir = tmp_path / "cost"
    result = run_cli(*_args(data_path, model_dir, f"--cost_matrix={path}"), timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = _metrics(str(model_dir))
    features, labels = test_split
    outputs, metadata = _served(str(model_dir), features)
    decided, argmax = outputs["class_id"], outputs["logits"].argmax(axis=1)
    assert metadata["operating_point"]["kind"] == "expected_cost"

    def recall(predictions):
        return np.mean(predictions[labels == COSTLY] == COSTLY)

    assert recall(decided) > recall(argmax)
    assert metrics["recall"][COSTLY] == pytest.approx(recall(decided))
    assert metrics["argmax"]["recall"][COSTLY] == pytest.approx(recall(argmax))
    point = metrics["operating_point"]
    hand_cost = sum(costs[y, d] for y, d in zip(labels, decided)) / len(labels)
    hand_argmax_cost = sum(costs[y, d] for y, d in zip(labels, argmax)) / len(labels)
    assert point["eval_cost"] == pytest.approx(hand_cost)
    assert point["argmax_eval_cost"] == pytest.approx(hand_argmax_cost)
    assert point["eval_cost"] < point["argmax_eval_cost"]
    # The expected cost under the served (calibrated) probabilities, decision by decision.
    served = outputs["probabilities"].astype(np.float64)
    assert point["eval_expected_cost"] == pytest.approx(np.mean((served @ costs).min(axis=1)), abs=1e-5)
    np.testing.assert_array_equal(decided, (served @ costs).argmin(axis=1))
    assert metrics["decision"].startswith("least expected cost")


@pytest.mark.parametrize("contents, problem", [
    ("0,1\n1,0\n", "data has 3 classes"),
    ("0,1,1\n1,0,1\n", "must be square"),
    ("0,1,1\n1,x,1\n1,1,0\n", "'x', not a finite number"),
    ("a,b,c\n0,1,1\n1,0,1\n1,1,0\n", "not the data's classes"),
    (None, "cannot be read"),
])
def test_bad_cost_matrix_files_exit_2_naming_the_flag(data_path, tmp_path, contents, problem):
    path = tmp_path / "costs.csv"
    if contents is not None:
        path.write_text(contents)
    result = run_cli(*_args(data_path, tmp_path / "run", f"--cost_matrix={path}"), timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--cost_matrix={path}" in result.stderr and problem in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_cost_matrix_refuses_a_target_recall(data_path, tmp_path):
    path = tmp_path / "costs.csv"
    path.write_text("\n".join(",".join(f"{c:g}" for c in row) for row in _costs()))
    result = run_cli(*_args(data_path, tmp_path / "run", f"--cost_matrix={path}", "--target_class=1",
                            "--target_recall=0.9"), timeout=60)
    assert result.returncode == 2
    assert "--cost_matrix" in result.stderr and "--target_recall" in result.stderr, result.stderr[-2000:]
