"""scripts/bench_tabular.py: a quick run on a generated CSV, and its parts against oracles of their own.

The run (one seed, 3 epochs of ours) must report both sides with figures in [0, 1], the figures
of its JSON records, and a HGB balanced accuracy above 0.9 on well-separated classes. The parts:
the split is a disjoint per-class cover, the long tail has the asked geometric sizes, the encoder
codes categories from the training rows only, and the recall figures match a hand count.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "bench_tabular.py")


def load_script():
    spec = importlib.util.spec_from_file_location("bench_tabular", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_script()


def separable_csv(path, counts=(120, 60, 30), seed=0):
    """Three Gaussian blobs 10 standard deviations apart in 4 numeric features."""
    rng = np.random.default_rng(seed)
    lines = ["f0,f1,f2,f3,label"]
    for k, n in enumerate(counts):
        for row in rng.normal(size=(n, 4)) + 10.0 * k:
            lines.append(",".join(f"{v:.4f}" for v in row) + f",c{k}")
    body = lines[1:]
    rng.shuffle(body)
    path.write_text("\n".join([lines[0]] + body) + "\n")


def test_quick_run_reports_both_sides_with_sane_figures(tmp_path):
    data = tmp_path / "blobs.csv"
    separable_csv(data)
    out, records = tmp_path / "table.md", tmp_path / "runs.json"
    completed = subprocess.run(
        [sys.executable, SCRIPT, "--quick", f"--datasets=blobs={data}", f"--out={out}",
         f"--json_out={records}", f"--work_dir={tmp_path / 'work'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert completed.returncode == 0, completed.stderr[-4000:]
    runs = json.loads(records.read_text())
    by_side = {r["side"]: r for r in runs}
    assert sorted(by_side) == ["hgb", "ours"] and len(runs) == 2
    ours, hgb = by_side["ours"], by_side["hgb"]
    assert ours["error"] is None, ours["error"]
    assert ours["extra"]["epochs"] == 3 and ours["extra"]["decision"] == "argmax"
    # 210 rows -> 168 train+validation rows (134 after a held-out split, if the run makes one);
    # the automatic batch size is 64 below 8,192 rows: 3 steps per epoch either way.
    assert ours["extra"]["steps"] == 3 * 3
    assert hgb["extra"]["n_iter"] > 0
    for side in (ours, hgb):
        assert 0.0 <= side["worst_recall"] <= side["balanced_accuracy"] <= 1.0
        assert side["wall_s"] > 0 and side["cpu_s"] > 0
    assert hgb["balanced_accuracy"] > 0.9
    table = out.read_text()
    row = next(line for line in table.splitlines() if line.startswith("| blobs |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["blobs", "210", "3", "4.0"]
    assert [float(c) for c in cells[4:8]] == pytest.approx(
        [ours["balanced_accuracy"], hgb["balanced_accuracy"], ours["worst_recall"], hgb["worst_recall"]],
        abs=6e-4)
    difference = re.search(r"ours BA - HGB BA = (-?[0-9.]+)", table)
    assert float(difference.group(1)) == pytest.approx(
        ours["balanced_accuracy"] - hgb["balanced_accuracy"], abs=6e-5)


def test_split_is_a_disjoint_per_class_cover_with_every_class_held_out():
    labels = ["a"] * 50 + ["b"] * 9 + ["c"] * 3
    train, validation, test = bench.stratified_split(labels, seed=1)
    everything = np.concatenate([train, validation, test])
    assert sorted(everything.tolist()) == list(range(len(labels)))
    for name, n, (n_val, n_test) in (("a", 50, (10, 10)), ("b", 9, (2, 2)), ("c", 3, (1, 1))):
        assert sum(labels[i] == name for i in validation) == n_val
        assert sum(labels[i] == name for i in test) == n_test
        assert sum(labels[i] == name for i in train) == n - n_val - n_test
    again = bench.stratified_split(labels, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(again, (train, validation, test)))
    other = bench.stratified_split(labels, seed=2)
    assert not np.array_equal(other[2], test)


def test_long_tail_sizes_fall_geometrically():
    rows = [[str(i), f"k{i % 5}"] for i in range(5 * 100)]
    kept = bench.long_tail_subsample(rows, 1, largest=80, smallest=5, seed=0)
    sizes = sorted((sum(r[1] == f"k{k}" for r in kept) for k in range(5)), reverse=True)
    assert sizes == [round(80 * (5 / 80) ** (r / 4)) for r in range(5)] == [80, 40, 20, 10, 5]
    assert len({r[0] for r in kept}) == len(kept)


def test_encoder_codes_categories_from_training_rows_and_missing_as_nan():
    header = ["colour", "size", "label"]
    train = [["red", "1.5", "x"], ["blue", "", "y"], ["red", "2", "x"]]
    mask = bench.categorical_mask(header, train, forced=())
    assert mask == [True, False]
    assert bench.categorical_mask(header, train, forced="all") == [True, True]
    encode = bench.Encoder(header, train, mask)
    got = encode(train + [["green", "3", "x"], ["", "NA", "y"]])
    expected = np.array([[1, 1.5], [0, np.nan], [1, 2.0], [np.nan, 3.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(got, expected)


def test_hgb_uses_the_categorical_mask():
    # The label is a function of a 12-level category whose codes are not monotone in it: with the
    # mask, HGB separates it exactly.
    rng = np.random.default_rng(0)
    levels = [f"v{i}" for i in range(12)]
    rows = [[levels[i], f"{rng.normal():.3f}", "pos" if i % 3 == 0 else "neg"]
            for i in rng.integers(0, 12, 600)]
    header = ["level", "noise", "label"]
    mask = bench.categorical_mask(header, rows, forced=())
    encode = bench.Encoder(header, rows[:400], mask)
    result = bench.run_hgb(encode(rows[:400]), [r[2] for r in rows[:400]], encode(rows[400:]),
                           [r[2] for r in rows[400:]], mask, seed=0)
    assert result.balanced_accuracy == 1.0 and result.worst_recall == 1.0


def test_recall_figures_count_only_classes_with_support():
    confusion = [[8, 2, 0], [1, 3, 0], [0, 0, 0]]
    ba, worst, recalls = bench.recall_figures(confusion)
    assert recalls == [0.8, 0.75]
    assert ba == pytest.approx(0.775) and worst == 0.75
    assert math.isclose(bench.recall_figures(bench.confusion_of(["a", "b", "b"], ["a", "a", "b"],
                                                               ["a", "b"]))[0], 0.75)
