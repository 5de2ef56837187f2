"""scripts/bench_decisions.py: its figures against oracles of their own, and one short run.

The ceiling must equal a brute-force search over every cut-off of both score kinds; the data
profiles, the rare-class rule and the balanced class weights their formulas; the keras_cw decision
must choose where the CLI would (validation split when it can show the target, else out-of-fold
logits) and serve what a hand count gives. The run (one CLI recipe and keras_cw, 1 epoch) must
give one row per recipe with figures that follow from each other and a cache keyed on every setting.
"""

import csv
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "bench_decisions.py")


def load_script():
    spec = importlib.util.spec_from_file_location("bench_decisions", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_script()


def brute_force_ceiling(logits, labels, k, recall_at):
    """Every cut-off t of both scores: predict k iff score >= t; best precision at recall >= recall_at."""
    logits = np.asarray(logits, np.float64)
    others = np.delete(logits, k, axis=1)
    scores = (logits[:, k] - others.max(axis=1),
              logits[:, k] - np.log(np.exp(others).sum(axis=1)))
    best, positive = 0.0, labels == k
    for score in scores:
        for t in np.unique(score):
            chosen = score >= t
            tp = np.sum(chosen & positive)
            if tp / positive.sum() >= recall_at - 1e-12:
                best = max(best, tp / chosen.sum())
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ceiling_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=60)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[labels]
    logits[:10] = np.round(logits[:10])  # ties
    for k in range(3):
        for recall_at in (0.0, 0.5, 0.85, 0.9, 1.0):
            assert bench.ceiling(logits, labels, k, recall_at) == pytest.approx(
                brute_force_ceiling(logits, labels, k, recall_at), abs=1e-12)


def test_letter_profile_and_subsample_keep_the_asked_rows(tmp_path):
    names = [chr(ord("A") + i) for i in range(26)]
    counts = bench.letter_counts(names)
    assert counts["A"] == 734 and counts["Z"] == round(734 / 50)
    assert all(counts[a] >= counts[b] for a, b in zip(names, names[1:]))
    source = tmp_path / "source.csv"
    with open(source, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["x", "label"])
        writer.writerows([[i, name] for name in ("a", "b", "c") for i in range(40)])
    out = tmp_path / "out.csv"
    bench.subsample(str(source), {"b": 10, "c": 3}, 0, str(out))
    with open(out, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["x", "label"]
    got = {name: sum(row[1] == name for row in rows[1:]) for name in "abc"}
    assert got == {"a": 40, "b": 10, "c": 3}
    assert len({tuple(row) for row in rows[1:]}) == 53  # distinct source rows


def test_rare_classes_and_balanced_weights_follow_their_formulas():
    labels = np.repeat([0, 1, 2, 3], [300, 30, 29, 100])
    chosen, left_out = bench.rare_classes(labels, 5, share=0.1, minimum=30)
    assert chosen == [1] and left_out == [2]  # class 3 is 1/3 of the largest; class 4 is absent
    weights = bench.balanced_class_weight(labels, 5)
    assert set(weights) == {0, 1, 2, 3}
    for k, n in zip(range(4), (300, 30, 29, 100)):
        assert weights[k] == pytest.approx(len(labels) / (4 * n))


def test_keras_decision_chooses_where_the_cli_would_and_serves_a_hand_count():
    rng = np.random.default_rng(0)

    def split(n_per_class):
        y = np.repeat(np.arange(3), n_per_class)
        return rng.normal(size=(len(y), 3)) + 2.0 * np.eye(3)[y], y

    test_logits, test_labels = split([200, 200, 40])
    for positives, expected in ((40, "validation_split"), (10, "out_of_fold")):
        validation, validation_labels = split([100, 100, positives])
        out_of_fold, train_labels = split([300, 300, 50])
        splits = bench.Splits(["a", "b", "c"], train=(None, train_labels),
                              validation=(None, validation_labels), test=(None, test_labels),
                              feature_mean=None, feature_variance=None)
        ensemble_test = test_logits + rng.normal(scale=0.5, size=test_logits.shape)
        saved = {"test": test_logits, "validation": validation, "out_of_fold": out_of_fold,
                 "ensemble_test": ensemble_test}
        for served_model in ("refit", "ensemble"):
            served = bench.keras_decision(saved, 2, splits, 0.9, served_model)
            assert served["chosen_on"] == expected
            choosing = validation if expected == "validation_split" else out_of_fold
            labels = validation_labels if expected == "validation_split" else train_labels
            point = bench.decisions.calibrate("target_recall", choosing, labels, target_class=2,
                                              target_recall=0.9, confidence=0.5, estimator="harrell_davis")
            # The ensemble's logits only where the point was cross-fitted (as the CLI serves it).
            cross_fitted = expected == "out_of_fold"
            logits = ensemble_test if served_model == "ensemble" and cross_fitted else test_logits
            decided = point.decide(logits)
            hits = np.sum((decided == 2) & (test_labels == 2))
            assert served["recall"] == pytest.approx(hits / 40)
            assert served["precision"] == pytest.approx(hits / np.sum(decided == 2))
            np.testing.assert_array_equal(served["logits"], logits)


def test_summary_counts_the_goals_per_recipe():
    case = dict(dataset="d", k=0, seed=0, train_rows=30, validation_rows=10, test_rows=10, recipe="default",
                wall_s=1.0, cpu_s=1.0, commit="abc", command="python -m trainer.main ...")
    figures = [(0.9, 0.5, 0.9, 0.4), (0.8, 0.5, 0.7, 0.6), (1.0, 0.2, 0.95, 0.1)]
    rows = [dict(case, recall=r, precision=p, ratio=q, keras_cw_test_thresholded=c, run_key=str(i),
                 error=None, decision="threshold", chosen_on="out_of_fold", ceiling=p / q,
                 ceiling_at_target=0.5) for i, (r, p, q, c) in enumerate(figures)]
    rows.append(dict(case, run_key="x", error="exit 2: boom"))
    for i, row in enumerate(rows):
        row["class"] = f"c{i}"
    (s,) = bench.summarise(rows)
    assert (s["cases"], s["failed"], s["recall_ok"], s["beats_keras"], s["compared"]) == (4, 1, 2, 2, 3)
    assert s["ties_keras"] == 0
    assert s["median_ratio"] == pytest.approx(0.9)
    assert "FAILED: exit 2: boom" in bench.tables(rows)
    table = bench.case_table(rows).splitlines()
    assert len(table) == 2 + 4  # one line per (data set, class, seed)
    assert table[2] == "| d | c0 (30 / 10 / 10) | 0 | 0.90 / 0.50 (0.56) | 0.40 | abc |"
    assert "FAILED" in table[5]


def separable_csv(path, counts=(200, 100, 20), seed=0):
    rng = np.random.default_rng(seed)
    lines = ["f0,f1,f2,label"]
    for k, n in enumerate(counts):
        for row in rng.normal(size=(n, 3)) + 2.0 * k:
            lines.append(",".join(f"{v:.4f}" for v in row) + f",c{k}")
    body = lines[1:]
    rng.shuffle(body)
    path.write_text("\n".join([lines[0]] + body) + "\n")


def run_args(tmp_path):
    return [f"--datasets=blobs={tmp_path / 'blobs.csv'}", "--seeds=0", "--epochs=1", "--min_train_rows=10",
            "--recipes=ce_argmax,keras_cw", f"--work_dir={tmp_path / 'work'}",
            f"--json_out={tmp_path / 'rows.json'}"]


def test_a_short_run_gives_consistent_rows_and_a_cache_keyed_on_every_setting(tmp_path, capsys):
    separable_csv(tmp_path / "blobs.csv")
    bench.main(run_args(tmp_path))  # keras_cw here, the CLI recipe in a subprocess
    assert "[train] ce_argmax" in capsys.readouterr().err
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["recipe"] for r in rows] == ["ce_argmax", "keras_cw"]
    for r in rows:
        assert (r["class"], r["train_rows"], r["validation_rows"], r["test_rows"]) == ("c2", 12, 4, 4)
        assert r["error"] is None and 0 <= r["recall"] <= 1 and 0 <= r["precision"] <= 1
        assert r["ratio"] == pytest.approx(r["precision"] / r["ceiling"])
        assert r["commit"] and r["command"]
    ce, keras_cw = rows
    assert ce["decision"] == "argmax" and "--loss=cross_entropy" in ce["command"]
    assert keras_cw["chosen_on"] == "out_of_fold"  # 4 validation rows cannot show 0.9
    (saved_dir,) = os.listdir(tmp_path / "work" / "keras")
    saved = np.load(tmp_path / "work" / "keras" / saved_dir / "logits.npz")
    assert saved["out_of_fold"].shape == (len(saved["train_labels"]), 3)
    assert keras_cw["keras_cw_test_thresholded"] == pytest.approx(
        brute_force_ceiling(saved["test"], saved["test_labels"], 2, keras_cw["recall"]))
    (run_dir,) = [d for d in os.listdir(tmp_path / "work" / "runs")]
    record = json.loads((tmp_path / "work" / "runs" / run_dir / "bench_run.json").read_text())
    settings = record["settings"]
    assert {"recipe", "args", "data_sha256", "class", "seed", "epochs", "batch_size",
            "target_recall"} <= set(settings)
    assert record["key"] == bench.settings_key(settings) and run_dir.endswith(record["key"])

    # Cached: re-measured in this process, not retrained, same figures; then tabulated from the file.
    capsys.readouterr()
    bench.main(run_args(tmp_path))
    assert "[train]" not in capsys.readouterr().err
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    bench.main(["--merge", str(tmp_path / "rows.json")])
    assert "| blobs | c2 (12 / 4 / 4) | 0 | keras_cw |" in capsys.readouterr().out


def test_unknown_recipe_is_refused_by_name():
    with pytest.raises(SystemExit, match="--recipes: unknown"):
        bench.main(["--recipes=nope"])
