"""The command line on labels per position (NPZ masks `y` [N, H, W], `--ignore_label`), under Mirrored.

Oracles: the confusion matrix of metrics.json == NumPy's count, over the test file's counted
positions, of `python -m trainer.predict`'s per-position class ids (a fresh process loading the
export); `python -m trainer.evaluate` (another) gives the same matrix; the served decision of a
recall target is the export's argmax of the offset logits at every position. Bad flags fail
before training, naming the flag.
"""

import json
import os

import numpy as np
import pytest

from cli_processes import run_cli
from trainer.cli import build
from trainer.cli.errors import UsageError
from trainer.data import InputDataError

IGNORE = 255


def write_masks(path, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 12)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blur = sum(padded[:, i:i + 12, j:j + 12] for i in range(3) for j in range(3)) / 9
    y = np.zeros(x.shape, np.int64)
    y[blur > 0.35] = 1
    y[blur > 0.75] = 2
    y[:, 0, :] = IGNORE  # a border nobody labelled
    np.savez(path, x=x, y=y)
    return str(path), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("per_position")
    train, _ = write_masks(root / "train.npz", 200, 0)
    test, test_labels = write_masks(root / "test.npz", 60, 1)
    model_dir = root / "run"
    result = run_cli(f"--dataset=npz:{train}", f"--eval_dataset=npz:{test}", f"--ignore_label={IGNORE}",
                     f"--model_dir={model_dir}", "--epochs=5", "--learning_rate=0.01",
                     "--target_class=2", "--target_recall=0.9", "--strategy=mirrored", "--num_cpu_devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "model_dir": model_dir, "test": test, "labels": test_labels, "result": result,
            "metrics": json.loads((model_dir / "metrics.json").read_text())}


def test_reported_matrix_is_the_exports_decisions_at_the_counted_positions(trained):
    out = trained["root"] / "pred.npz"
    result = run_cli(f"--model_dir={trained['model_dir']}", f"--input=npz:{trained['test']}",
                     f"--output={out}", module="trainer.predict")
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = np.load(out)
    labels = trained["labels"]
    assert predicted["class_id"].shape == labels.shape
    assert predicted["probabilities"].shape == labels.shape + (3,)
    counted = labels != IGNORE
    matrix = np.zeros((3, 3), np.int64)
    np.add.at(matrix, (labels[counted], predicted["class_id"][counted]), 1)
    np.testing.assert_array_equal(np.asarray(trained["metrics"]["confusion_matrix"]), matrix)
    # At every position, the target recall's rule on its scores: class 2 where its log-odds after
    # the offset are >= 0, else the larger of the other two.
    scores = predicted["decision_scores"]
    expected = np.where(scores[..., 2] >= 0, 2, scores[..., :2].argmax(-1))
    np.testing.assert_array_equal(predicted["class_id"], expected)
    assert trained["metrics"]["operating_point"]["target_class"] == 2
    assert trained["metrics"]["operating_point"]["kind"] == "threshold"
    assert "positions" in trained["result"].stderr  # the run said what it counts


def test_evaluate_command_gives_the_same_matrix(trained):
    report_dir = trained["root"] / "evaluation"
    result = run_cli(f"--model_dir={trained['model_dir']}", f"--report_dir={report_dir}",
                     module="trainer.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((report_dir / "evaluation.json").read_text())
    assert evaluation["confusion_matrix"] == trained["metrics"]["confusion_matrix"]


def test_csv_output_is_refused_for_masks(trained):
    result = run_cli(f"--model_dir={trained['model_dir']}", f"--input=npz:{trained['test']}",
                     f"--output={trained['root'] / 'pred.csv'}", module="trainer.predict")
    assert result.returncode == 2 and "--output" in result.stderr and ".npz" in result.stderr


@pytest.mark.parametrize("flags, named", [
    (["--model=mlp"], "--model=mlp"),
    (["--decision_folds=3", "--target_class=2", "--target_recall=0.9"], "--decision_folds=3"),
    (["--hidden_units=64"], "--hidden_units=64"),
])
def test_flags_without_meaning_per_position_are_refused_before_training(parse, tmp_path, flags, named):
    data, _ = write_masks(tmp_path / "m.npz", 40, 2)
    config = parse(f"--dataset=npz:{data}", f"--ignore_label={IGNORE}", *flags)
    bundle = build.load_bundle(config)
    with pytest.raises(UsageError, match=named):
        config.with_data(bundle.num_classes, tuple(bundle.train.input_shape), True,
                         per_position=bundle.label_shape is not None)


def test_ignore_label_refusals_name_the_flag(parse, tmp_path):
    data, _ = write_masks(tmp_path / "m.npz", 40, 2)
    with pytest.raises(InputDataError, match="ignore_label=1 is a class index") as caught:
        build.load_bundle(parse(f"--dataset=npz:{data}", "--ignore_label=1"))
    assert caught.value.argument == "ignore_label"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 3)).astype(np.float32), y=rng.integers(0, 2, 60))
    with pytest.raises(UsageError, match="--ignore_label=255"):
        build.load_bundle(parse(f"--dataset=npz:{tmp_path / 'd.npz'}", "--ignore_label=255"))


def test_a_border_label_without_ignore_label_fails_before_training(tmp_path):
    data, _ = write_masks(tmp_path / "m.npz", 40, 2)  # 255 in the masks: not 256 classes
    model_dir = tmp_path / "run"
    result = run_cli(f"--dataset=npz:{data}", f"--model_dir={model_dir}", "--epochs=1")
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr[result.stderr.index("error: --"):]
    assert error.startswith("error: --ignore_label") and "ignore_label=255" in error, error
    assert "Traceback" not in result.stderr
    assert not os.path.exists(model_dir / "checkpoints") or not os.listdir(model_dir / "checkpoints")
