"""The first run's comparison with plain cross-entropy (`--compare_baseline`).

Oracle: a separate plain cross-entropy run of the same data, model, epochs and seed (deterministic)
must report the baseline's figures exactly.
"""

import json

import numpy as np

from tests.cli_processes import run_cli

COMMON = ("--dataset=synthetic", "--epochs=2", "--deterministic", "--seed=3", "--export_dir=none")


def test_the_comparison_is_a_real_plain_cross_entropy_run(tmp_path):
    run = run_cli(f"--model_dir={tmp_path / 'la'}", "--loss=logit_adjusted", *COMMON)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Compared with plain cross-entropy on the same data" in run.stdout
    assert "--loss=logit_adjusted" in run.stdout and "Next:" in run.stdout
    assert "--target_recall=0.9" in run.stdout and "tensorboard --logdir" in run.stdout
    facts = json.loads((tmp_path / "la" / "metrics.json").read_text())["baseline_comparison"]
    assert (tmp_path / "la" / "baseline" / "checkpoints").is_dir()

    plain = run_cli(f"--model_dir={tmp_path / 'ce'}", "--loss=cross_entropy", *COMMON)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "Compared with" not in plain.stdout
    oracle = json.loads((tmp_path / "ce" / "metrics.json").read_text())
    np.testing.assert_allclose(facts["cross_entropy"]["balanced_accuracy"], oracle["balanced_accuracy"],
                               atol=1e-6)
    support = np.asarray(oracle["support"])
    recall = np.where(support > 0, np.asarray(oracle["recall"], float), np.inf)
    np.testing.assert_allclose(facts["cross_entropy"]["worst_class_recall"], recall.min(), atol=1e-6)
    assert facts["cross_entropy"]["worst_class"] == oracle["class_names"][int(np.argmin(recall))]
    ours = json.loads((tmp_path / "la" / "metrics.json").read_text())
    np.testing.assert_allclose(facts["run"]["balanced_accuracy"], ours["balanced_accuracy"], atol=1e-9)
