"""End-to-end tests of `python -m trainer.main` as a user runs it (real subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cli_processes import REPO, cli_env, run_cli


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli(f"--model_dir={model_dir}", "--epochs=2", "--steps_per_loop=20")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def test_default_run_prints_table_and_writes_metrics(synthetic_run):
    model_dir, result = synthetic_run
    assert "support" in result.stdout and "recall" in result.stdout and "precision" in result.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "recall", "precision", "f1", "support",
                "confusion_matrix", "epoch", "step", "flags"):
        assert key in metrics, key
    num_classes = len(metrics["support"])
    assert len(metrics["recall"]) == len(metrics["precision"]) == num_classes
    assert np.asarray(metrics["confusion_matrix"]).shape == (num_classes, num_classes)
    assert sum(metrics["support"]) == int(np.asarray(metrics["confusion_matrix"]).sum())
    assert metrics["epoch"] == 2 and metrics["step"] > 0
    assert metrics["flags"]["epochs"] == 2
    # Better than chance on the built-in data after two epochs.
    assert metrics["balanced_accuracy"] > 1.5 / num_classes
    assert (model_dir / "train").is_dir() and (model_dir / "eval").is_dir()
    assert (model_dir / "checkpoints" / "checkpoint").is_file()


def test_exported_model_matches_in_a_fresh_process(synthetic_run):
    model_dir, _ = synthetic_run
    export_dir = model_dir / "export"
    assert (export_dir / "saved_model.pb").is_file()
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        "from trainer import data\n"
        "bundle = data.load_data('synthetic', seed=0)\n"
        "x, y = next(iter(bundle.eval.dataset(64, shuffle=False, seed=0)))\n"
        f"serve = tf.saved_model.load({str(export_dir)!r}).signatures['serving_default']\n"
        "out = serve(features=x)\n"
        "print(json.dumps({'p': out['probabilities'].numpy().tolist(), 'x': x.numpy().tolist(),"
        " 'z': out['logits'].numpy().tolist(),"
        " 'c': out['class_id'].numpy().tolist(), 'n': [s.decode() for s in out['class_name'].numpy()]}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=cli_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    probabilities = np.asarray(served["p"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The default loss (logit-adjusted) makes the logits balanced scores: the served class is
    # their argmax, while the calibrated probabilities estimate P(class | x) at the training
    # data's class frequencies (temperature fitted after undoing the loss's prior shift).
    assert served["c"] == np.asarray(served["z"]).argmax(axis=1).tolist()

    import keras

    from trainer import Trainer
    from trainer.models import build_model
    metrics = json.loads((model_dir / "metrics.json").read_text())
    num_classes = len(metrics["support"])
    assert served["n"] == [metrics["class_names"][c] for c in served["c"]]
    features = np.asarray(served["x"], np.float32)
    # The checkpoint restored into a Trainer predicts what the SavedModel serves.
    from trainer import data
    bundle = data.load_data("synthetic", seed=0)
    trainer = Trainer(model=lambda: build_model(None, bundle.train.input_shape, num_classes,
                                                feature_mean=bundle.feature_mean,
                                                feature_variance=bundle.feature_variance),
                      optimizer=lambda: keras.optimizers.Adam(1e-3), num_classes=num_classes,
                      model_dir=str(model_dir))
    # The run's calibrated probabilities (calibration.json), as the export serves them.
    from trainer import decisions
    trainer.calibration = decisions.load_calibration(str(model_dir))
    assert trainer.calibration is not None
    np.testing.assert_allclose(trainer.predict(features), probabilities, rtol=1e-4, atol=1e-5)


def test_rerun_resumes_from_checkpoint(synthetic_run, tmp_path):
    model_dir, _ = synthetic_run
    first = json.loads((model_dir / "metrics.json").read_text())
    result = run_cli(f"--model_dir={model_dir}", "--epochs=3", "--steps_per_loop=20", "--export_dir=none")
    assert result.returncode == 0, result.stderr[-3000:]
    second = json.loads((model_dir / "metrics.json").read_text())
    assert second["epoch"] == 3
    assert second["step"] == first["step"] * 3 // 2


@pytest.mark.parametrize("args, message", [
    (["--reweighting=manual", "--class_weights=1,2"], "--class_weights"),
    (["--reweighting=target_class", "--target_class=99"], "--target_class=99"),
    (["--reweighting=manual"], "needs --class_weights"),
    (["--loss=hinge"], "--loss"),
    (["--dataset=parquet:x"], "--dataset"),
    (["--reweighting=eqlv2", "--loss=cross_entropy"], "needs a sigmoid (one-vs-all) loss"),
])
def test_bad_flags_exit_nonzero_without_traceback(args, message, tmp_path):
    result = run_cli(f"--model_dir={tmp_path / 'bad'}", "--epochs=1", *args, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_evaluate_command_writes_report_for_csv_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array(["fault", "normal", "warning"])
    counts = {"normal": 300, "warning": 60, "fault": 20}
    rows = []
    for index, (name, count) in enumerate(counts.items()):
        centre = np.array([2.0 * index, -1.0 * index, 0.5])
        rows += [(name, *(centre + rng.normal(scale=0.6, size=3))) for _ in range(count)]
    rng.shuffle(rows)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("a,status,b,c\n" + "".join(
        f"{r[1]:.4f},{r[0]},{r[2]:.4f},{r[3]:.4f}\n" for r in rows))
    model_dir = tmp_path / "run"
    result = run_cli(f"--model_dir={model_dir}", f"--dataset=csv:{csv_path}", "--label_column=status",
                     "--epochs=3", "--batch_size=32", "--reweighting=inverse_frequency")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((model_dir / "metrics.json").read_text())
    assert trained["class_names"] == sorted(names.tolist())

    evaluation = run_cli(f"--model_dir={model_dir}", f"--eval_dataset=csv:{csv_path}",
                         "--label_column=status", module="trainer.evaluate", timeout=180)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    report = json.loads((model_dir / "evaluation.json").read_text())
    assert report["class_names"] == ["fault", "normal", "warning"]
    assert report["support"] == [20, 300, 60]
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.sum() == 380 and matrix.shape == (3, 3)
    np.testing.assert_allclose(report["recall"], np.diag(matrix) / matrix.sum(axis=1))
    markdown = (model_dir / "evaluation.md").read_text()
    assert "| fault | 20 |" in markdown and "balanced accuracy" in markdown
    assert "fault" in evaluation.stdout


def test_evaluate_command_without_an_export_is_a_clear_error(tmp_path):
    result = run_cli(f"--model_dir={tmp_path}", module="trainer.evaluate", timeout=120)
    assert result.returncode == 2
    assert "No exported model" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ discovering the command line

GROUP_TITLES = ["Data:", "Model:", "Loss and reweighting:", "Recall targets and decisions:", "Training:",
                "Distribution:", "Outputs:"]


@pytest.fixture(scope="module")
def helps():
    """`--help` and `--helpfull` of both commands, and a few bad command lines, run in parallel."""
    from concurrent.futures import ThreadPoolExecutor
    commands = {
        "help": ("trainer.main", ["--help"]), "helpfull": ("trainer.main", ["--helpfull"]),
        "evaluate_help": ("trainer.evaluate", ["--help"]),
        "not_an_integer": ("trainer.main", ["--num_classes=fraud"]),
        "unknown_flag": ("trainer.main", ["--epochz=3"]),
        "bad_number": ("trainer.main", ["--epochs=abc"]),
        "positional": ("trainer.main", ["train"]),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = pool.map(lambda item: (item[0], run_cli(*item[1][1], module=item[1][0], timeout=120)),
                           commands.items())
        return dict(results)


def test_help_lists_the_project_flags_by_topic_with_defaults(helps):
    result = helps["help"]
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    positions = [out.index(f"\n{title}\n") for title in GROUP_TITLES]
    assert positions == sorted(positions), "groups in the documented order"
    training = out[positions[4]:positions[5]]
    assert "--learning_rate: Adam learning rate.\n    (default: '0.001')" in training
    assert "--epochs:" in training and "(default: '10')" in training
    assert "--allow_config_change:" in out[positions[6]:] and "--verbosity" in out[positions[6]:]
    assert "--reweighting: <none|manual|" in out[positions[2]:positions[3]]
    assert "logtostderr" not in out and "--tpu:" in out  # absl's flags only in --helpfull
    evaluate = helps["evaluate_help"]
    assert evaluate.returncode == 0 and "Evaluation report:" in evaluate.stdout
    assert "--report_dir:" in evaluate.stdout and "--learning_rate" not in evaluate.stdout


def test_helpfull_keeps_absl_flags_after_the_project_ones(helps):
    result = helps["helpfull"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.index("--learning_rate:") < result.stdout.index("--[no]logtostderr")


@pytest.mark.parametrize("name, message", [
    ("not_an_integer", "error: flag --num_classes=fraud: invalid literal for int() with base 10: 'fraud'"),
    ("unknown_flag", "error: Unknown command line flag 'epochz'"),
    ("bad_number", "error: flag --epochs=abc:"),
    ("positional", "error: unexpected arguments 'train'"),
])
def test_a_flag_absl_cannot_parse_exits_2_with_one_error_line(helps, name, message):
    result = helps[name]
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "FATAL" not in result.stderr
