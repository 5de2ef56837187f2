"""The command line on multi-label data (`--label_columns`): train, report, export, predict, evaluate.

Oracles: per-label recall and precision counted by NumPy from `python -m trainer.predict`'s
decisions (a fresh process loading the export) against the test file's label columns; the served
decision of a label without a target is probability > 0.5, a targeted label's its cut-off; the
evaluation command (another fresh process) gives the training report's figures; a finished run
run again trains nothing. Bad flags are refused before training, naming the flag.
"""

import csv
import json
import os

import numpy as np
import pytest

from cli_processes import run_cli
from trainer.cli import multi_label_train
from trainer.cli.errors import UsageError
from trainer.data import InputDataError

LABELS = ("fault", "leak", "wear")


def make_rows(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    site = rng.choice(["north", "south", "east"], size=n)
    y = np.stack([x[:, 0] > 0.4, (x[:, 1] > 0.9) | ((site == "east") & (x[:, 2] > 0)),
                  x[:, 0] + x[:, 2] > 1.9], axis=1).astype(np.int64)
    return x, site, y


def write_csv(path, x, site, y):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["machine", "t0", "t1", "t2", "site", *LABELS])
        for i in range(len(x)):
            writer.writerow([f"m{i}", *(f"{v:.5f}" for v in x[i]), site[i], *(str(v) for v in y[i])])
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run: inverse-frequency weights per label, a recall target for `leak`, a separate test file."""
    root = tmp_path_factory.mktemp("multi_label")
    train = write_csv(root / "train.csv", *make_rows(900, 0))
    test_rows = make_rows(400, 1)
    test = write_csv(root / "test.csv", *test_rows)
    model_dir = root / "run"
    args = [f"--dataset=csv:{train}", f"--eval_dataset=csv:{test}", f"--label_columns={','.join(LABELS)}",
            "--exclude_columns=machine", f"--model_dir={model_dir}", "--epochs=6",
            "--reweighting=inverse_frequency", "--target_class=leak", "--target_recall=0.85",
            "--validation_split=0.25", "--seed=2"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "args": args, "model_dir": model_dir, "test": test, "test_rows": test_rows,
            "result": result, "metrics": json.loads((model_dir / "metrics.json").read_text())}


def read_predictions(path):
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return rows


def test_reported_figures_are_the_exports_decisions_on_the_test_file(trained):
    metrics, (_, _, y) = trained["metrics"], trained["test_rows"]
    out = trained["root"] / "pred.csv"
    result = run_cli(f"--model_dir={trained['model_dir']}", f"--input=csv:{trained['test']}",
                     f"--output={out}", "--keep_columns=machine", module="trainer.predict")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_predictions(out)
    assert [r["machine"] for r in rows] == [f"m{i}" for i in range(len(y))]
    decided = np.array([[int(r[f"decision_{n}"]) for n in LABELS] for r in rows])
    probability = np.array([[float(r[f"probability_{n}"]) for n in LABELS] for r in rows])
    score = np.array([[float(r[f"score_{n}"]) for n in LABELS] for r in rows])
    # Labels without a target: probability > 0.5; every label: its score (logit - cut-off) > 0.
    np.testing.assert_array_equal(decided[:, [0, 2]], (probability[:, [0, 2]] > 0.5).astype(int))
    np.testing.assert_array_equal(decided, (score > 0).astype(int))
    cutoffs = metrics["operating_point"]["cutoffs"]
    assert cutoffs[0] == 0.0 and cutoffs[2] == 0.0 and cutoffs[1] != 0.0
    assert [r["labels"] for r in rows] == [";".join(n for n, d in zip(LABELS, row) if d) for row in decided]
    # NumPy's per-label recall and precision == metrics.json's.
    tp = (decided * y).sum(0)
    np.testing.assert_allclose(metrics["recall"], tp / y.sum(0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(metrics["precision"], tp / decided.sum(0), rtol=0, atol=1e-9)
    assert metrics["positives"] == y.sum(0).tolist()
    assert metrics["measured_on"].startswith("the eval split (400 rows")
    assert metrics["operating_point"]["chosen_on"].startswith("the validation split")
    assert metrics["data_splits"]["validation"]["rows"] + metrics["data_splits"]["train"]["rows"] == 900
    # The table the run printed names the served decision and each label.
    printed = trained["result"].stdout
    assert "a cut-off chosen for leak (target recall 0.85)" in printed
    for name in LABELS:
        assert f"\n{name}" in printed


def test_evaluate_command_gives_the_training_report(trained):
    report_dir = trained["root"] / "evaluation"
    result = run_cli(f"--model_dir={trained['model_dir']}", f"--report_dir={report_dir}",
                     module="trainer.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((report_dir / "evaluation.json").read_text())
    for key in ("recall", "precision", "f1", "positives", "average_precision"):
        np.testing.assert_allclose(evaluation[key], trained["metrics"][key], rtol=1e-6, atol=1e-9)


def test_a_finished_run_trains_no_more(trained):
    result = run_cli(*trained["args"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((trained["model_dir"] / "metrics.json").read_text())
    assert (metrics["epoch"], metrics["step"]) == (trained["metrics"]["epoch"], trained["metrics"]["step"])
    assert metrics["recall"] == trained["metrics"]["recall"]
    # The saved cut-offs (operating_point.json, read back by kind) serve again.
    assert metrics["operating_point"]["cutoffs"] == trained["metrics"]["operating_point"]["cutoffs"]


def test_npz_under_mirrored_on_two_cpus(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 5)).astype(np.float32)
    y = np.stack([x[:, 0] > 0.5, x[:, 1] + x[:, 2] > 1.5], 1).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    result = run_cli(f"--dataset=npz:{tmp_path / 'd.npz'}", "--label_columns=p,q", "--strategy=mirrored",
                     "--num_cpu_devices=2", "--epochs=3", f"--model_dir={tmp_path / 'run'}",
                     "--loss=asymmetric", "--asl_gamma_neg=2")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "multi_label" and metrics["label_names"] == ["p", "q"]
    assert metrics["operating_point"] is None and metrics["epoch"] == 3
    assert metrics["recall"][0] > 0.5  # it learned the easy label


@pytest.mark.parametrize("flags, named", [
    (["--cost_matrix=0,1;1,0"], "--cost_matrix"),
    (["--num_classes=6"], "--num_classes"),
    (["--loss=logit_adjusted"], "--loss=logit_adjusted"),
    (["--reweighting=recall_target", "--recall_target_mode=worst_class"], "--recall_target_mode"),
    (["--decision_folds=3"], "--decision_folds"),
    (["--reweighting=eqlv2", "--loss=sigmoid_focal"], "--reweighting=eqlv2"),
    (["--label_column=fault"], "--label_column"),
])
def test_flags_a_multi_label_run_cannot_honour_are_refused(parse, flags, named):
    with pytest.raises(UsageError, match=named):
        parse("--dataset=csv:x.csv", "--label_columns=a,b", *flags)


def test_a_label_column_that_is_not_there_fails_before_training(tmp_path):
    data = write_csv(tmp_path / "d.csv", *make_rows(200, 3))
    model_dir = tmp_path / "run"
    result = run_cli(f"--dataset=csv:{data}", f"--model_dir={model_dir}", "--epochs=1",
                     "--label_columns=fault,nope")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--label_columns" in result.stderr and "'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(model_dir / "checkpoints") or not os.listdir(model_dir / "checkpoints")


def test_data_flags_that_do_not_fit_are_named(parse, tmp_path):
    data = write_csv(tmp_path / "d.csv", *make_rows(200, 3))
    config = parse(f"--dataset=csv:{data}", "--label_columns=fault,leak", "--target_class=wear",
                   "--target_recall=0.9")
    bundle = multi_label_train.load_bundle(config)
    with pytest.raises(UsageError, match="--target_class=wear is not a label"):
        multi_label_train.with_label_targets(config, bundle.label_names)
    with pytest.raises(InputDataError, match="'leak' is a label column") as caught:
        multi_label_train.load_bundle(parse(f"--dataset=csv:{data}", "--label_columns=fault,leak",
                                            "--feature_columns=t0,leak"))
    assert caught.value.argument == "feature_columns"
