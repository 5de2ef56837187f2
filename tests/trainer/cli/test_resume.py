"""Resumes through `python -m trainer.main`: a changed run is refused before training, an allowed one kept.

One run directory, a sequence of real CLI processes on a small CSV: the first run, then reruns that change it.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from cli_processes import checkpoint_values, run_cli

TIME_LIMIT_S = 180


def _write_csv(path, names, seed=0):
    """A small learnable CSV with string labels (`names` in order of frequency)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, (name, count) in enumerate(zip(names, (200, 60, 30))):
        centre = np.array([2.0 * index, -1.0 * index, 0.5])
        rows += [(name, *(centre + rng.normal(scale=0.6, size=3))) for _ in range(count)]
    rng.shuffle(rows)
    path.write_text("a,status,b,c\n" + "".join(f"{r[1]:.4f},{r[0]},{r[2]:.4f},{r[3]:.4f}\n" for r in rows))


def _files(directory):
    digests = {}
    for root, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(root, name), "rb") as stream:
                digests[os.path.relpath(os.path.join(root, name), directory)] = \
                    hashlib.sha256(stream.read()).hexdigest()
    return digests


def _refused(result):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`run(*changed_args)` runs the first run's command with some flags replaced."""
    root = tmp_path_factory.mktemp("resume")
    csv_path = root / "train.csv"
    _write_csv(csv_path, ["normal", "warning", "fault"])
    model_dir = root / "run"
    base = {"--model_dir": str(model_dir), "--dataset": f"csv:{csv_path}", "--label_column": "status",
            "--epochs": "2", "--batch_size": "32", "--reweighting": "inverse_frequency",
            "--export_dir": "none"}

    def run_with(*args, drop=()):
        flags = {key: value for key, value in base.items() if key not in drop}
        flags.update(arg.split("=", 1) for arg in args if "=" in arg)
        return run_cli(*(f"{key}={value}" for key, value in flags.items()), timeout=TIME_LIMIT_S)

    first = run_with()
    assert first.returncode == 0, first.stderr[-3000:]
    return run_with, model_dir, csv_path


def _metrics(model_dir):
    return json.loads((model_dir / "metrics.json").read_text())


def _saved(model_dir):
    return json.loads((model_dir / "checkpoints" / "run_fingerprint.json").read_text())


def test_the_first_run_saves_its_fingerprint(run):
    _, model_dir, csv_path = run
    saved = _saved(model_dir)
    assert saved["config"]["learning_rate"] in (0.001, 0.1)  # 0.1 once the allowed change ran
    assert saved["config"]["reweighting"] == "inverse_frequency"
    assert "epochs" not in saved["config"] and "model_dir" not in saved["config"]
    assert saved["data"]["class_names"] == ["fault", "normal", "warning"]
    assert saved["data"]["files"] == {str(csv_path): os.path.getsize(csv_path)}
    counts = saved["data"]["class_counts"]
    assert sum(counts["train"]) + sum(counts["validation"]) + sum(counts["eval"]) == 290


def test_a_changed_learning_rate_is_refused_and_the_checkpoint_untouched(run):
    run_with, model_dir, _ = run
    before = _files(model_dir)
    saved = _saved(model_dir)["config"]["learning_rate"]
    line = _refused(run_with("--learning_rate=0.05", "--epochs=7"))
    assert f"learning_rate: {saved} -> 0.05" in line and "--allow_config_change=learning_rate" in line
    assert "epochs" not in line.split("mix two runs:")[1]  # a larger --epochs is no change
    assert _files(model_dir) == before


def test_dropping_the_reweighting_is_refused_naming_it(run):
    run_with, model_dir, _ = run
    before = _files(model_dir)
    line = _refused(run_with(drop=("--reweighting",)))
    assert "reweighting: inverse_frequency -> none" in line and "Unresolved object" not in line
    assert _files(model_dir) == before


def test_an_allowed_change_trains_with_the_new_value_and_is_recorded(run):
    run_with, model_dir, _ = run
    first = _metrics(model_dir)
    assert first["epoch"] == 2 and first["config_changes"] == []
    result = run_with("--learning_rate=0.1", "--allow_config_change=learning_rate", "--epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "learning_rate: 0.001 -> 0.1" in result.stderr  # logged
    metrics = _metrics(model_dir)
    assert metrics["config_changes"] == [{"name": "learning_rate", "from": 0.001, "to": 0.1}]
    assert metrics["epoch"] == 3 and metrics["step"] == first["step"] * 3 // 2
    # The optimizer trained with the new rate, not the checkpoint's.
    values = checkpoint_values(model_dir / "checkpoints")
    assert values["optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"] == np.float32(0.1)

    # The run now is the 0.1 run: the same command without the override continues it.
    result = run_with("--learning_rate=0.1", "--epochs=4")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _metrics(model_dir)
    assert metrics["epoch"] == 4 and metrics["step"] == first["step"] * 2
    assert metrics["config_changes"] == [{"name": "learning_rate", "from": 0.001, "to": 0.1}]


def test_a_different_csv_with_other_classes_is_refused_naming_the_data(run):
    run_with, model_dir, csv_path = run
    checkpoints = _files(model_dir / "checkpoints")
    _write_csv(csv_path, ["normal", "warning", "alarm"], seed=1)  # same path, other class mapping
    learning_rate = _saved(model_dir)["config"]["learning_rate"]
    line = _refused(run_with(f"--learning_rate={learning_rate}", "--epochs=5"))
    assert 'class_names: ["fault", "normal", "warning"] -> ["alarm", "normal", "warning"]' in line
    assert "files: " in line and "learning_rate" not in line
    assert _files(model_dir / "checkpoints") == checkpoints
