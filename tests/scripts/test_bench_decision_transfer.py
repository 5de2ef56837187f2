"""scripts/bench_decision_transfer.py: the pool split and the prevalence-corrected figures vs formulas."""

import csv
import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))  # it imports bench_decisions as the script does
    try:
        path = os.path.join(ROOT, "scripts", "bench_decision_transfer.py")
        spec = importlib.util.spec_from_file_location("bench_decision_transfer", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


transfer = load_script()


def test_the_pool_holds_every_row_not_kept_and_the_profile_is_kept(tmp_path):
    source = tmp_path / "source.csv"
    rows = [["a", "b", "label"]] + [[str(i), str(i % 7), name] for name, n in (("big", 50), ("rare", 30))
                                    for i in range(n)]
    with open(source, "w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    train, pool = tmp_path / "train.csv", tmp_path / "pool.csv"
    transfer.split_pool(str(source), {"rare": 6}, 0, str(train), str(pool))
    read = [list(csv.reader(open(path)))[1:] for path in (train, pool)]
    kept = {name: sum(r[-1] == name for r in read[0]) for name in ("big", "rare")}
    assert kept == {"big": 35, "rare": 6}  # a class kept whole keeps 70%
    assert sorted(map(tuple, read[0] + read[1])) == sorted(map(tuple, rows[1:]))


def test_precision_at_the_training_prevalence_is_the_formula():
    labels = np.array([0] * 10 + [1] * 40 + [2] * 50)
    decided = np.zeros(100, bool)
    decided[:8] = True      # TPR 0.8 of class 0
    decided[10:14] = True   # FPR 0.1 of class 1
    decided[50:55] = True   # FPR 0.1 of class 2
    prior = np.array([0.05, 0.55, 0.40])
    tpr, precision = transfer.prior_precision(decided, labels, 0, prior)
    assert tpr == pytest.approx(0.8)
    assert precision == pytest.approx(0.05 * 0.8 / (0.05 * 0.8 + 0.55 * 0.1 + 0.40 * 0.1))
    # With the pool's own mix as the prior it is the plain precision.
    assert transfer.prior_precision(decided, labels, 0, np.bincount(labels) / 100)[1] == pytest.approx(8 / 17)


def test_the_ceiling_is_the_best_cut_off_and_the_served_point_never_beats_it():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    logits = rng.normal(size=(300, 3)) + 1.2 * np.eye(3)[labels]
    prior = np.array([0.1, 0.45, 0.45])
    for cut in np.linspace(-2, 2, 9):
        decided = transfer.bench.target_scores(logits, 0, "logit_offset") >= cut
        tpr, precision = transfer.prior_precision(decided, labels, 0, prior)
        assert precision <= transfer.prior_ceiling(logits, labels, 0, prior, tpr) + 1e-12
