"""report.html after training, after `trainer.evaluate` of a copied export, and without matplotlib."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cli_processes import REPO, cli_env, run_cli
from report_pages import ReportPage, check_figures
from trainer.cli import html_report, report
from trainer.decisions import TargetRecallPoint

NAMES = ["fault", "normal", "warning"]
SECTIONS = ["summary", "per-class", "confusion-matrix", "pr-curves", "reliability", "history"]


def _write_csv(path):
    rng = np.random.default_rng(0)
    rows = []
    for index, (name, count) in enumerate({"normal": 300, "warning": 60, "fault": 24}.items()):
        centre = np.array([2.0 * index, -1.0 * index, 0.5])
        rows += [(name, *(centre + rng.normal(scale=0.8, size=3))) for _ in range(count)]
    rng.shuffle(rows)
    path.write_text("a,status,b,c\n" + "".join(f"{r[1]:.4f},{r[0]},{r[2]:.4f},{r[3]:.4f}\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("html_report")
    csv_path = _write_csv(root / "train.csv")
    model_dir = root / "run"
    result = run_cli(f"--model_dir={model_dir}", f"--dataset=csv:{csv_path}", "--label_column=status",
                     "--epochs=2", "--batch_size=32", "--reweighting=inverse_frequency")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, csv_path, model_dir, result


def _supports(parsed):
    return {row[1].split(" (")[0]: int(row[2]) for row in parsed.tables[1][1:]}


def test_training_writes_a_report_with_names_supports_and_the_run_history(trained):
    _, _, model_dir, result = trained
    path = model_dir / "report.html"
    assert f"Wrote {path}" in result.stdout
    parsed = ReportPage(path.read_text())
    assert parsed.sections == SECTIONS
    check_figures(parsed, minimum=6)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # The table's supports are metrics.json's (the test split), by name.
    assert _supports(parsed) == dict(zip(metrics["class_names"], metrics["support"]))
    assert metrics["class_names"] == NAMES
    for text in (str(model_dir), metrics["measured_on"], metrics["epoch_evaluations_on"]):
        assert text in parsed.text
    # Two epochs of history: recall and precision of the per-epoch evaluation, the class weights.
    assert [image["alt"] for image in parsed.images][3:] == [
        "recall per class over the epochs", "precision per class over the epochs",
        "class_weight per class over the epochs"]


def test_evaluate_writes_a_report_and_without_matplotlib_says_it_skipped(trained, tmp_path):
    _, csv_path, model_dir, _ = trained
    copied = tmp_path / "copied"
    shutil.copytree(model_dir / "export", copied / "export")  # no metrics.json, no event files
    blocked = tmp_path / "blocked"
    shutil.copytree(model_dir / "export", blocked / "export")
    hide = tmp_path / "no_matplotlib"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    data = [f"--dataset=csv:{csv_path}", "--label_column=status"]
    with ThreadPoolExecutor(2) as pool:
        with_plots = pool.submit(run_cli, f"--model_dir={copied}", *data, module="trainer.evaluate",
                                 timeout=180)
        without = pool.submit(run_cli, f"--model_dir={blocked}", *data, module="trainer.evaluate",
                              timeout=180, env=cli_env(PYTHONPATH=f"{hide}:{REPO}"))
        with_plots, without = with_plots.result(), without.result()

    assert with_plots.returncode == 0, with_plots.stderr[-3000:]
    parsed = ReportPage((copied / "evaluation.html").read_text())
    assert parsed.sections == SECTIONS
    check_figures(parsed, minimum=3)
    assert len(parsed.images) == 3  # no history next to a copied export, and the page says why
    assert "No per-epoch figures: no TensorBoard event files under" in parsed.text
    evaluation = json.loads((copied / "evaluation.json").read_text())
    assert _supports(parsed) == dict(zip(evaluation["class_names"], evaluation["support"]))
    assert "Evaluation report" in parsed.text and str(copied / "export") in parsed.text

    assert without.returncode == 0, without.stderr[-3000:]
    assert (blocked / "evaluation.json").is_file() and not (blocked / "evaluation.html").exists()
    skipped = [line for line in without.stdout.splitlines() if "evaluation.html" in line]
    assert skipped == [html_report.skipped_message("evaluation.html")]
    assert "pip install matplotlib" in skipped[0]


def test_the_decision_names_a_class_once_when_its_name_is_its_index():
    def point(kind, threshold):
        return TargetRecallPoint(kind, 2, 3, offset=0.9748, threshold=threshold, target_recall=0.9,
                                 validation_recall=0.0, validation_precision=0.0)
    offset, threshold = point("logit_offset", None), point("threshold", 0.03147)
    assert report.describe_decision(offset, ["0", "1", "2"]) == "logit offset +0.9748 on class 2"
    assert report.describe_decision(offset, NAMES) == "logit offset +0.9748 on class 2 (warning)"
    assert report.describe_decision(threshold, ["0", "1", "2"]) == (
        "threshold 0.03147 on the probability of class 2")
    assert report.describe_decision(threshold, NAMES) == (
        "threshold 0.03147 on the probability of class 2 (warning)")
