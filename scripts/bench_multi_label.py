"""Multi-label runs of the command line (`--label_columns`) on labels derived from a real table.

From `letter.csv` (UCI letter recognition, `../shared/data/`, 20,000 rows, 16 numeric features)
three yes/no labels are derived from the letter, which is then dropped (never a feature):
`vowel` (A E I O U), `round` (C D G O Q) and `Q` (about 4% of rows; every Q is also round). Per
seed the rows are split once, stratified by letter and seeded: 80% to `train.csv`, 20% to
`test.csv`. Each recipe then runs `python -m trainer.main --dataset=csv:train.csv
--eval_dataset=csv:test.csv --label_columns=vowel,round,Q --target_class=Q --target_recall=R`
(the trainer holds out `--validation_split` of train.csv, stratified on each row's rarest
label, and chooses Q's cut-off on it), and `python -m trainer.predict` scores test.csv with the
export, in fresh processes.

Per run, on the test rows: each label's average precision; Q's served recall and precision (the
chosen cut-off) and at probability 0.5; the "ceiling": the best precision any cut-off on that
model's test scores reaches at recall >= R (chosen on the test rows themselves, so it is a bound
for reference, never a choice). Checks: metrics.json's epoch is --epochs and its step
`epochs x ceil(train rows / batch)`; its per-label recall and precision equal NumPy's counts of
the predict command's decisions against test.csv's labels. Medians over seeds.

    python scripts/bench_multi_label.py --data_dir=../shared/data --seeds=0,1,2 --epochs=20
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ("vowel", "round", "Q")
DERIVED = {"vowel": set("AEIOU"), "round": set("CDGOQ"), "Q": {"Q"}}
RECIPES = {
    "bce": [],
    "inverse_frequency": ["--reweighting=inverse_frequency"],
    "asymmetric": ["--loss=asymmetric"],
}


def read_letter(path: str):
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    header, body = rows[0], rows[1:]
    label = header.index("label")
    features = [c for i, c in enumerate(header) if i != label]
    x = [[r[i] for i in range(len(header)) if i != label] for r in body]
    letters = [r[label] for r in body]
    return features, x, letters


def write_split(directory: str, features, x, letters, seed: int):
    """train.csv / test.csv: 80/20 per letter, seeded; returns the test labels [N, 3]."""
    rng = np.random.default_rng(seed)
    letters = np.asarray(letters)
    test = np.zeros(len(letters), bool)
    for letter in np.unique(letters):
        members = rng.permutation(np.flatnonzero(letters == letter))
        test[members[:round(0.2 * len(members))]] = True
    y = np.array([[int(c in DERIVED[n]) for n in LABELS] for c in letters])
    for name, mask in (("train", ~test), ("test", test)):
        with open(os.path.join(directory, f"{name}.csv"), "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow([*features, *LABELS])
            for i in np.flatnonzero(mask):
                writer.writerow([*x[i], *y[i]])
    return y[test], int((~test).sum())


def run(args: List[str], module: str = "trainer.main") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                            env=env, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def ceiling(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The best precision of any cut-off `score >= t` whose recall is >= target (on these rows)."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(positive[order])
    recall = hits / positive.sum()
    precision = hits / np.arange(1, len(order) + 1)
    reach = recall >= target
    return float(precision[reach].max()) if reach.any() else float("nan")


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(positive[order])
    precision = hits / np.arange(1, len(order) + 1)
    return float(np.sum(precision * positive[order]) / positive.sum())


def one_run(directory: str, recipe: str, seed: int, epochs: int, target: float, test_labels: np.ndarray,
            train_rows: int, validation_split: float) -> Dict[str, float]:
    model_dir = os.path.join(directory, f"{recipe}_{seed}")
    run([f"--dataset=csv:{directory}/train.csv", f"--eval_dataset=csv:{directory}/test.csv",
         f"--label_columns={','.join(LABELS)}", f"--model_dir={model_dir}", f"--epochs={epochs}",
         f"--seed={seed}", "--target_class=Q", f"--target_recall={target}",
         f"--validation_split={validation_split}", *RECIPES[recipe]])
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    trained_rows = metrics["data_splits"]["train"]["rows"]
    assert trained_rows + metrics["data_splits"]["validation"]["rows"] == train_rows
    assert metrics["epoch"] == epochs, metrics["epoch"]
    assert metrics["step"] == epochs * math.ceil(trained_rows / metrics["batch_size"]), metrics["step"]
    out = os.path.join(model_dir, "test_predictions.csv")
    run([f"--model_dir={model_dir}", f"--input=csv:{directory}/test.csv", f"--output={out}"],
        module="trainer.predict")
    with open(out, newline="") as stream:
        rows = list(csv.DictReader(stream))
    decided = np.array([[int(r[f"decision_{n}"]) for n in LABELS] for r in rows])
    probability = np.array([[float(r[f"probability_{n}"]) for n in LABELS] for r in rows])
    tp = (decided * test_labels).sum(0)
    np.testing.assert_allclose(metrics["recall"], tp / test_labels.sum(0), atol=1e-9)
    np.testing.assert_allclose(metrics["precision"], tp / np.maximum(decided.sum(0), 1), atol=1e-9)
    q = LABELS.index("Q")
    at_half = probability[:, q] > 0.5
    positive = test_labels[:, q] == 1
    result = {f"AP {n}": average_precision(probability[:, j], test_labels[:, j] == 1)
              for j, n in enumerate(LABELS)}
    result.update({
        "Q recall": metrics["recall"][q], "Q precision": metrics["precision"][q],
        "Q recall @0.5": float((at_half & positive).sum() / positive.sum()),
        "Q precision @0.5": float((at_half & positive).sum() / max(at_half.sum(), 1)),
        "Q ceiling": ceiling(probability[:, q], positive, target),
        "macro F1": metrics["macro_f1"],
    })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=os.path.join(REPO, "..", "shared", "data"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--validation_split", type=float, default=0.25)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--work_dir", default=None)
    options = parser.parse_args()
    features, x, letters = read_letter(os.path.join(options.data_dir, "letter.csv"))
    work = options.work_dir or tempfile.mkdtemp(prefix="bench_multi_label.")
    recipes = options.recipes.split(",")
    results: Dict[str, List[Dict[str, float]]] = {r: [] for r in recipes}
    for seed in (int(s) for s in options.seeds.split(",")):
        directory = os.path.join(work, f"seed{seed}")
        os.makedirs(directory, exist_ok=True)
        test_labels, train_rows = write_split(directory, features, x, letters, seed)
        for recipe in recipes:
            results[recipe].append(one_run(directory, recipe, seed, options.epochs, options.target_recall,
                                           test_labels, train_rows, options.validation_split))
            figures = ", ".join(f"{k} {v:.3f}" for k, v in results[recipe][-1].items())
            print(f"seed {seed} {recipe}: {figures}", flush=True)
    keys = list(next(iter(results.values()))[0])
    print(f"\nletter.csv -> labels {', '.join(LABELS)}; test positives per seed: see the runs; target recall "
          f"{options.target_recall:g} for Q (chosen on the validation split); medians over seeds "
          f"{options.seeds}, {options.epochs} epochs\n")
    print("| recipe | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for recipe in recipes:
        medians = [statistics.median(r[k] for r in results[recipe]) for k in keys]
        print(f"| {recipe} | " + " | ".join(f"{v:.3f}" for v in medians) + " |")
    print(f"\nRuns under {work}")


if __name__ == "__main__":
    main()
