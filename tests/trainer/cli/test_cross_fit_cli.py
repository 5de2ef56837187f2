"""`--decision_folds`: the point chosen on out-of-fold logits, served by the folds' ensemble or the refit;
its default; resumes."""

import glob
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from cli_processes import read_log, reap, run_cli, start_cli
from trainer import cross_fit
from trainer.cli import build, decision_folds
from trainer.cli import config as config_lib
from trainer.cli.errors import UsageError
from trainer.models import build_model

FLAGS = flags.FLAGS
RARE = 2
COUNTS = (300, 200, 40)


def _write_rare_npz(path, seed=0):
    """Three classes of 300, 200 and 40 rows, six features, class means 0.9 apart."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), COUNTS)
    features = rng.normal(size=(len(labels), 6)) + 0.9 * labels[:, None]
    order = rng.permutation(len(labels))
    np.savez(path, x=features[order].astype(np.float32), y=labels[order].astype(np.int64))
    return str(path)


def _args(data, model_dir, *extra):
    return (f"--dataset=npz:{data}", f"--model_dir={model_dir}", "--epochs=6", "--batch_size=32",
            "--steps_per_loop=4", f"--target_class={RARE}", "--target_recall=0.9", "--decision_folds=3",
            "--deterministic", "--seed=3", *extra)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return _write_rare_npz(tmp_path_factory.mktemp("cross_fit_data") / "rare.npz")


@pytest.fixture(scope="module")
def cross_fitted(data_path, tmp_path_factory):
    """A --decision_folds=3 --decision_model=ensemble run (uninterrupted), its model_dir and output."""
    model_dir = tmp_path_factory.mktemp("cross_fit_cli") / "run"
    result = run_cli(*_args(data_path, model_dir, "--decision_model=ensemble"), timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return model_dir, result


def _training_rows(data_path):
    """The training split's rows as the run reads them (same spec and seed)."""
    FLAGS.unparse_flags()
    try:
        FLAGS(["trainer.main", *_args(data_path, "/tmp/unused")])
        config = config_lib.from_flags()
        bundle = build.load_bundle(config)
    finally:
        FLAGS.unparse_flags()
    return bundle, cross_fit.training_arrays(bundle.train)


def _out_of_fold_files(model_dir, num_folds):
    logits, labels, rows = [], [], []
    for number in range(1, num_folds + 1):
        with np.load(os.path.join(cross_fit.fold_directory(str(model_dir), number),
                                  cross_fit.OUT_OF_FOLD_FILENAME)) as saved:
            logits.append(saved["logits"])
            labels.append(saved["labels"])
            rows.append(saved["indices"])
    return np.concatenate(logits), np.concatenate(labels), np.concatenate(rows)


def _decide(point, logits):
    """The point's decisions in NumPy, from its definition (offset on the target logit / threshold)."""
    logits = np.asarray(logits, np.float64)
    t = point["target_class"]
    if point["kind"] == "logit_offset":
        shifted = logits.copy()
        shifted[:, t] += point["offset"]
        return shifted.argmax(axis=1)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    others = probabilities.copy()
    others[:, t] = -1.0
    return np.where(probabilities[:, t] >= point["threshold"], t, others.argmax(axis=1))


def _recall_precision(labels, predictions, k):
    hits = np.sum((predictions == k) & (labels == k))
    return hits / np.sum(labels == k), hits / max(np.sum(predictions == k), 1)


def test_decision_folds_chooses_on_the_out_of_fold_logits_of_every_training_row(cross_fitted, data_path):
    model_dir, result = cross_fitted
    log = result.stderr
    for number in (1, 2, 3):
        assert f"Fold {number}/3: training on" in log and f"Fold {number}/3: done" in log
    bundle, (features, labels) = _training_rows(data_path)
    rows = bundle.train.num_examples
    metrics = json.loads((model_dir / "metrics.json").read_text())
    point = json.loads((model_dir / "operating_point.json").read_text())
    assert metrics["operating_point"]["chosen_on"] == f"out-of-fold logits of {rows:,} training rows, 3 folds"
    assert metrics["decision_data"]["source"] == "out_of_fold"
    assert metrics["decision_data"]["rows"] == rows == len(labels)
    assert metrics["decision_data"]["target_class_rows"] == int(np.sum(labels == RARE))
    # The fold files hold every training row once, with its label ...
    oof_logits, oof_labels, oof_rows = _out_of_fold_files(model_dir, 3)
    np.testing.assert_array_equal(np.sort(oof_rows), np.arange(rows))
    np.testing.assert_array_equal(oof_labels, labels[oof_rows])
    # ... and the point's own figures are those of its decisions on them (not on the held-out split).
    recall, precision = _recall_precision(oof_labels, _decide(point, oof_logits), RARE)
    assert point["validation_recall"] == pytest.approx(recall, abs=1e-9)
    assert point["validation_precision"] == pytest.approx(precision, abs=1e-9)


def _fold_models(model_dir, features, labels, num_classes, num_folds=3, seed=3):
    """Each fold's model rebuilt as the CLI builds it (normalised with its training rows' moments, which
    are constants of the model, not weights) and loaded from its saved weights."""
    models = []
    fold_ids = cross_fit.stratified_fold_ids(labels, num_folds, seed)
    for number in range(1, num_folds + 1):
        rows = features[fold_ids != number - 1].astype(np.float64)
        model = build_model(None, features.shape[1:], num_classes, feature_mean=rows.mean(axis=0),
                            feature_variance=rows.var(axis=0))
        model.load_weights(os.path.join(cross_fit.fold_directory(str(model_dir), number),
                                        cross_fit.FOLD_WEIGHTS_FILENAME))
        models.append(model)
    return models


def _served(export_dir, features):
    out = tf.saved_model.load(str(export_dir)).signatures["serving_default"](features=tf.constant(features))
    return out["logits"].numpy(), out["class_id"].numpy()


def test_the_export_serves_the_fold_models_mean_logits_with_the_cross_fitted_point(cross_fitted, data_path):
    model_dir, result = cross_fitted
    assert "Served model (--decision_model=ensemble): the mean logits of the fold models" in result.stderr
    bundle, (features, labels) = _training_rows(data_path)
    point = json.loads((model_dir / "operating_point.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["decision_data"]["decision_model"] == "ensemble"
    assert metrics["decision_data"]["served_model"] == "the mean logits of the 3 fold models"
    metadata = json.loads((model_dir / "export" / "assets.extra" / "metadata.json").read_text())
    assert metadata["operating_point"] == point
    served_logits, class_id = _served(model_dir / "export", features[:64])
    np.testing.assert_array_equal(class_id, _decide(point, served_logits))
    # The oracle: the three fold models, rebuilt from their weights, averaged in NumPy.
    models = _fold_models(model_dir, features, labels, 3)
    mean = np.mean([np.asarray(m(features[:64], training=False)) for m in models], axis=0)
    np.testing.assert_allclose(served_logits, mean, rtol=1e-4, atol=1e-4)
    # metrics.json's served figures are the export's decisions on the test split.
    test_x, test_y = cross_fit.training_arrays(bundle.eval)
    _, test_decided = _served(model_dir / "export", test_x)
    recall, precision = _recall_precision(test_y, test_decided, RARE)
    assert metrics["operating_point"]["eval_recall"] == pytest.approx(recall, abs=1e-9)
    assert metrics["operating_point"]["eval_precision"] == pytest.approx(precision, abs=1e-9)


def test_decision_model_refit_serves_the_model_trained_on_all_rows_without_training_again(
        cross_fitted, data_path, tmp_path):
    reference_dir, _ = cross_fitted
    model_dir = tmp_path / "refit"
    shutil.copytree(reference_dir, model_dir)
    result = run_cli(*_args(data_path, model_dir, "--decision_model=refit"), timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Fold 1/3: training on" not in result.stderr and "Resumed from" in result.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["decision_data"]["decision_model"] == "refit"
    assert json.loads((model_dir / "operating_point.json").read_text()) == \
        json.loads((reference_dir / "operating_point.json").read_text())
    bundle, (features, _) = _training_rows(data_path)
    refit_logits, _ = _served(model_dir / "export", features[:64])
    ensemble_logits, _ = _served(reference_dir / "export", features[:64])
    assert not np.allclose(refit_logits, ensemble_logits, atol=1e-3)
    assert (model_dir / "checkpoints" / "checkpoint").is_file()


def test_the_default_decision_model_is_the_refit_and_ensemble_needs_a_cross_fit():
    folds = decision_folds.DecisionFolds(5, True, "too few")
    assert decision_folds.resolve_decision_model(None, folds) == "refit"
    assert decision_folds.resolve_decision_model("ensemble", folds) == "ensemble"
    off = decision_folds.DecisionFolds(0, True, "the validation split shows it")
    assert decision_folds.resolve_decision_model(None, off) == "refit"
    assert decision_folds.resolve_decision_model("refit", off) == "refit"
    with pytest.raises(UsageError, match="the validation split shows it"):
        decision_folds.resolve_decision_model("ensemble", off)


def test_decision_model_ensemble_without_a_cross_fit_is_refused(data_path, tmp_path):
    result = run_cli(*_args(data_path, tmp_path / "run", "--decision_folds=0", "--decision_model=ensemble"),
                     timeout=120)
    assert result.returncode != 0
    assert "--decision_model=ensemble serves the fold models of a cross-fit" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def _tree_digest(directory):
    found = {}
    for path in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as stream:
                found[os.path.relpath(path, directory)] = (hashlib.sha256(stream.read()).hexdigest(),
                                                           os.stat(path).st_mtime_ns)
    return found


def test_a_run_killed_in_fold_2_resumes_there_and_ends_like_an_uninterrupted_one(cross_fitted, data_path,
                                                                                  tmp_path):
    reference_dir, _ = cross_fitted
    model_dir = tmp_path / "killed"
    fold_2 = cross_fit.fold_directory(str(model_dir), 2)
    flags_used = _args(data_path, model_dir, "--export_dir=none", "--decision_model=ensemble")
    process = start_cli(flags_used, log_path=tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 120
        while not os.path.isfile(os.path.join(fold_2, "checkpoints", "checkpoint")):
            assert process.poll() is None, read_log(tmp_path / "first.log")[-3000:]
            assert time.monotonic() < deadline, "fold 2 never checkpointed"
            time.sleep(0.01)
    finally:
        reap([process])  # SIGKILL
    assert not os.path.exists(os.path.join(fold_2, cross_fit.OUT_OF_FOLD_FILENAME)), \
        "fold 2 finished before the kill: the test did not interrupt it"
    fold_1 = cross_fit.fold_directory(str(model_dir), 1)
    before = _tree_digest(fold_1)

    result = run_cli(*flags_used, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Fold 1/3: finished earlier" in result.stderr and "Fold 1/3: training on" not in result.stderr
    assert "Fold 1/3: model restored from" in result.stderr  # its saved weights, to serve the ensemble
    assert "Fold 2/3: training on" in result.stderr
    assert _tree_digest(fold_1) == before, "fold 1 was not retrained or rewritten"
    got, want = _out_of_fold_files(model_dir, 3), _out_of_fold_files(reference_dir, 3)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert json.loads((model_dir / "operating_point.json").read_text()) == \
        json.loads((reference_dir / "operating_point.json").read_text())


# ------------------------------------------------------------------ the automatic default


def _all_caught_shows(n, target_recall, confidence=0.9):
    """Whether n of n caught shows the recall at the confidence, exactly: P(all n caught | recall t) = t^n."""
    return n > 0 and target_recall ** n <= 1 - confidence


@pytest.mark.parametrize("target_recall", [0.8, 0.9, 0.95])
def test_automatic_folds_turn_on_exactly_when_the_held_out_split_cannot_show_the_target(target_recall):
    recall = config_lib.RecallConfig(
        target_class=1, target_recall=target_recall, recall_target_mode="target_class",
        recall_target_adjust=None, recall_target_step_size=None, monitor=None,
        early_stopping_patience=None, stop_at_recall=None, reduce_lr_patience=None,
        reduce_lr_factor=0.5, calibrate=True, max_balanced_accuracy_drop=0.0)
    for n in range(0, 80):
        choice = decision_folds.choose_decision_folds(recall, [500, n])
        cannot = not _all_caught_shows(n, target_recall)
        assert choice.automatic and choice.folds == (5 if cannot else 0), (n, choice)
    assert decision_folds.choose_decision_folds(recall, [500, 3]).reason.startswith(
        "the held-out split has 3 example(s) of class 1")


@pytest.fixture
def configure(data_path, tmp_path):
    def make(*args):
        FLAGS.unparse_flags()
        FLAGS(["trainer.main", f"--dataset=npz:{data_path}", f"--model_dir={tmp_path / 'run'}", *args])
        config = config_lib.from_flags()
        bundle = build.load_bundle(config)
        counts = bundle.validation.class_counts
        return (decision_folds.choose_decision_folds(config.recall, counts),
                config.with_data(bundle.num_classes, tuple(bundle.train.input_shape), True,
                                 held_out_class_counts=counts), counts)

    yield make
    FLAGS.unparse_flags()


def test_the_default_cross_fits_for_the_rare_class_and_not_for_a_common_one(configure):
    choice, config, counts = configure(f"--target_class={RARE}", "--target_recall=0.9")
    assert not _all_caught_shows(counts[RARE], 0.9) and choice.automatic and choice.folds == 5
    assert config.recall.decision_folds == 5 and config.recall.cross_fits
    choice, config, counts = configure("--target_class=0", "--target_recall=0.9")
    assert _all_caught_shows(counts[0], 0.9) and choice.automatic and choice.folds == 0
    assert config.recall.decision_folds == 0 and not config.recall.cross_fits
    choice, config, _ = configure(f"--target_class={RARE}", "--target_recall=0.9", "--decision_folds=0")
    assert not choice.automatic and config.recall.decision_folds == 0


@pytest.mark.parametrize("args, message", [
    (["--decision_folds=1"], "--decision_folds=1 is no cross-fit"),
    (["--decision_folds=-2"], "--decision_folds must be a non-negative integer"),
    (["--decision_folds=3"], "no operating point is calibrated"),
])
def test_bad_decision_folds_are_refused_naming_the_flag(args, message):
    FLAGS.unparse_flags()
    try:
        FLAGS(["trainer.main", *args])
        with pytest.raises((UsageError, ValueError), match=message):
            config_lib.from_flags()
    finally:
        FLAGS.unparse_flags()
