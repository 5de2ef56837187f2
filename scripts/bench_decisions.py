"""Served test recall and precision of target-recall decisions against the model's own ceiling.

For long-tailed subsamples of a real data set (one class of `satellite.csv` cut to N rows), each
case trains the CLI's default recipe and two variants at `--target_recall=0.9`, then measures, on
the test split that no choice ever saw, the exported model's served recall and precision and the
best precision any cut-off on that same model reaches at the served recall (the "ceiling", chosen
on the test split itself, so only a reference). Runs are cached under --work_dir (a rerun only
re-measures). Results: README, "Rare-class decisions".

    python scripts/bench_decisions.py --data=../shared/data/satellite.csv --seeds=0,1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import tensorflow as tf

from trainer.data import load_data
from trainer.decisions.target_recall import target_scores

# (file stem, class to subsample, rows kept, its class index after sorting the names).
CASES = (("sat_cotton100", "cotton crop", 100, 0), ("sat_damp100", "damp grey soil", 100, 1),
         ("sat_cotton60", "cotton crop", 60, 0), ("sat_stubble60", "vegetation stubble", 60, 4))
RECIPES = {
    "default": [],
    "validation_hd": ["--decision_folds=0"],
    "validation_bound": ["--decision_folds=0", "--decision_confidence=0.9",
                         "--decision_estimator=empirical"],
}


def subsample(source: str, klass: str, keep: int, seed: int, out: str) -> None:
    """Writes `source` with class `klass` cut to `keep` seeded rows, all rows shuffled."""
    with open(source) as stream:
        rows = list(csv.reader(stream))
    header, body = rows[0], rows[1:]
    rng = random.Random(seed)
    chosen = [row for row in body if row[-1] == klass]
    rest = [row for row in body if row[-1] != klass]
    body = rest + rng.sample(chosen, keep)
    rng.shuffle(body)
    with open(out, "w", newline="") as stream:
        csv.writer(stream).writerows([header] + body)


def ceiling(logits: np.ndarray, labels: np.ndarray, k: int, recall_at: float) -> float:
    """The best precision of any cut-off (offset or threshold) whose recall of class k >= recall_at."""
    best, positive = 0.0, labels == k
    for kind in ("logit_offset", "threshold"):
        scores = target_scores(logits, k, kind)
        order = np.argsort(-scores, kind="stable")
        sorted_scores, hits = scores[order], positive[order]
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        ends = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
        recall, precision = tp / positive.sum(), tp / (tp + fp)
        ok = ends & (recall >= recall_at - 1e-12)
        if ok.any():
            best = max(best, float(precision[ok].max()))
    return best


def measure(run_dir: str, features: np.ndarray, labels: np.ndarray, k: int) -> dict:
    serve = tf.saved_model.load(os.path.join(run_dir, "export")).signatures["serving_default"]
    out = serve(features=tf.constant(features))
    logits, decided = out["logits"].numpy(), out["class_id"].numpy()
    hits = int(np.sum((decided == k) & (labels == k)))
    recall, precision = hits / int(np.sum(labels == k)), hits / max(int(np.sum(decided == k)), 1)
    top = ceiling(logits, labels, k, recall)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    return dict(test_positives=int(np.sum(labels == k)), recall=recall, precision=precision,
                ceiling=top, ratio=precision / top if top else float("nan"),
                reported=[metrics["operating_point"]["eval_recall"],
                          metrics["operating_point"]["eval_precision"]],
                chosen_on=metrics["operating_point"]["chosen_on"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "satellite.csv"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--work_dir", default="runs/bench_decisions")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    rows = []
    for stem, klass, keep, k in CASES:
        path = os.path.join(args.work_dir, stem + ".csv")
        if not os.path.exists(path):
            subsample(args.data, klass, keep, 0, path)
        for seed in (int(s) for s in args.seeds.split(",")):
            bundle = load_data(f"csv:{path}", seed=seed)
            batches = list(bundle.eval.dataset(512, shuffle=False, seed=0))
            features = np.concatenate([x.numpy() for x, _ in batches])
            labels = np.concatenate([y.numpy().reshape(-1) for _, y in batches])
            for recipe, extra in RECIPES.items():
                run_dir = os.path.join(args.work_dir, "runs", f"{stem}_s{seed}_{recipe}")
                if not os.path.exists(os.path.join(run_dir, "metrics.json")):
                    subprocess.run([sys.executable, "-m", "trainer.main", f"--dataset=csv:{path}",
                                    f"--model_dir={run_dir}", f"--epochs={args.epochs}", "--batch_size=64",
                                    f"--target_class={k}", "--target_recall=0.9", f"--seed={seed}",
                                    "--verbosity=0", *extra], check=True, stdout=subprocess.DEVNULL)
                row = dict(case=stem, seed=seed, recipe=recipe, **measure(run_dir, features, labels, k))
                if not np.allclose(row["reported"], [row["recall"], row["precision"]]):
                    raise SystemExit(f"{run_dir}: metrics.json reports {row['reported']}, the export "
                                     f"serves {row['recall']:.4f} / {row['precision']:.4f}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| case | seed | recipe | test positives | served recall | served precision | "
          "ceiling at that recall | precision / ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['seed']} | {r['recipe']} | {r['test_positives']} | {r['recall']:.3f} | "
              f"{r['precision']:.3f} | {r['ceiling']:.3f} | {r['ratio']:.2f} |")
    for recipe in RECIPES:
        chosen = [r for r in rows if r["recipe"] == recipe]
        print(f"{recipe}: served recall >= 0.85 in {sum(r['recall'] >= 0.85 for r in chosen)}/{len(chosen)}"
              f"; median precision / ceiling {np.median([r['ratio'] for r in chosen]):.2f}")


if __name__ == "__main__":
    main()
