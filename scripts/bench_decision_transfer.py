"""Does a cross-fitted operating point carry over to new data? Served model 'ensemble' vs 'refit', measured
on hundreds of new positives per case.

`scripts/bench_decisions.py` measures each case on its 10-30 test positives, too few to tell two
ways of serving apart (one positive moves the recall by 0.03-0.1). Here each class's rows not used
for training form a pool of new rows, and the served decision is measured on all of them:

- Data: letter and satellite (`../shared/data/`) with bench_decisions' long-tailed profiles
  (letter_lt: class i keeps round(734 * 50^(-i/25)) rows; satellite_lt: cotton crop, damp grey
  soil, vegetation stubble cut to 150, 100, 60), except that a class the profile keeps whole keeps
  70% (so that every class has new rows). The kept rows are the CLI's `--dataset` (it holds out its
  validation split and trains on the rest); the others are `--eval_dataset`, which no choice sees.
- Cases: every class with at most `--max_share` (15%) of the largest class's training rows and
  at least `--min_train_rows` of them (letter: P, Q, R; satellite: cotton crop, damp grey soil,
  vegetation stubble), seeds `--seeds`, `--target_recall` (the CLI default decision:
  Harrell-Davis cut-off on out-of-fold logits, 5 folds).
- Recipes: `--decision_folds=5` with `--decision_model=ensemble` or `--decision_model=refit`
  (everything else the CLI's defaults; `--epochs`, `--batch_size`). The refit recipe is the
  ensemble run's directory copied and rerun with `--decision_model=refit`, which trains nothing
  (checked): the two serve the same trained models, so the comparison is paired. Not run by
  default: `inverse_frequency` (`--reweighting=inverse_frequency`, served on its refit).
- Figures, from the export's decisions on the pool: the recall of the class (TPR, on hundreds of
  positives), and the precision it would have at the class's training prevalence pi: pi TPR /
  (pi TPR + sum_j pi_j FPR_j), FPR_j the share of class j's new rows decided k (the pool's class
  mix is not the training mix, so each negative class counts by its training share); the ceiling:
  the best such precision of any cut-off (logit offset or threshold) on the same model at that
  recall, picked on the pool itself (a reference).

    nice -n 19 python scripts/bench_decision_transfer.py --seeds=0,1,2 --json_out=transfer.json
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import bench_decisions as bench  # scripts/ is on sys.path when this script runs
import numpy as np
import tensorflow as tf

# Both cross-fit (5 folds, as the automatic default does for a class the validation split cannot show).
RECIPES = {"ensemble": ("--decision_folds=5", "--decision_model=ensemble"),
           "refit": ("--decision_folds=5", "--decision_model=refit"),
           # Another training recipe (not the default's logit-adjusted loss), served on its refit.
           "inverse_frequency": ("--decision_folds=5", "--decision_model=refit",
                                 "--reweighting=inverse_frequency")}
WHOLE_CLASS_SHARE = 0.7
SOURCES = {name: bench.SUBSAMPLES[name] for name in ("letter_lt", "satellite_lt")}  # the same profiles


def split_pool(source: str, keep: Optional[Dict[str, int]], seed: int, train_out: str,
               pool_out: str) -> None:
    """Writes the kept rows (the profile; 70% of a class it keeps whole) and the pool (the rest)."""
    header, by_class = bench.rows_by_class(source)
    keep = bench.letter_counts(list(by_class)) if keep is None else keep
    rng = random.Random(seed)
    kept, pool = [], []
    for name in sorted(by_class):
        members = list(by_class[name])
        rng.shuffle(members)
        wanted = min(keep.get(name, len(members)), int(WHOLE_CLASS_SHARE * len(members)))
        kept += members[:wanted]
        pool += members[wanted:]
    for rows_out, path in ((kept, train_out), (pool, pool_out)):
        rng.shuffle(rows_out)
        with open(path, "w", newline="") as stream:
            csv.writer(stream).writerows([header] + rows_out)


def read_pool(path: str) -> Tuple[List[str], Dict[str, np.ndarray], np.ndarray]:
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    header, body = rows[0], rows[1:]
    columns = {name: np.array([float(r[i]) for r in body], np.float32) for i, name in enumerate(header[:-1])}
    return header, columns, np.array([r[-1] for r in body])


def served(run_dir: str, columns: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """The export's logits and class_id of the pool's rows (its `serving_default`, raw named columns)."""
    export = os.path.join(run_dir, "export")
    with open(os.path.join(export, "assets.extra", "metadata.json")) as stream:
        metadata = json.load(stream)
    signature = tf.saved_model.load(export).signatures["serving_default"]
    inputs = {spec["input"]: tf.constant(columns[spec["column"]]) for spec in metadata["features"]}
    out = signature(**inputs)
    return out["logits"].numpy(), out["class_id"].numpy().astype(np.int64), list(metadata["class_names"])


def prior_precision(decided_k: np.ndarray, labels: np.ndarray, k: int,
                    prior: np.ndarray) -> Tuple[float, float]:
    """(TPR, precision at the training prevalence) of deciding class k on rows of known labels."""
    tpr = float(np.mean(decided_k[labels == k]))
    false = sum(prior[j] * float(np.mean(decided_k[labels == j])) for j in range(len(prior))
                if j != k and np.any(labels == j))
    hit = prior[k] * tpr
    return tpr, hit / (hit + false) if hit + false > 0 else 0.0


def prior_ceiling(logits: np.ndarray, labels: np.ndarray, k: int, prior: np.ndarray,
                  recall_at: float) -> float:
    """The best precision at the training prevalence of any cut-off on class k (a logit offset or a
    threshold on its probability, as `bench_decisions.ceiling`) with TPR >= recall_at."""
    best = 0.0
    for kind in ("logit_offset", "threshold"):
        scores = bench.target_scores(logits, k, kind)
        for cut in np.unique(scores[labels == k]):
            tpr, precision = prior_precision(scores >= cut, labels, k, prior)
            if tpr >= recall_at - 1e-12:
                best = max(best, precision)
    return best


def refit_of(trained: Dict[str, Any]) -> Dict[str, Any]:
    """The same run served on its refit: a copy of the run directory rerun with --decision_model=refit.

    The flag changes no model, so the rerun trains nothing (the log must say it resumed and retrained
    no fold): both recipes serve the same trained models, the folds' ensemble or the refit.
    """
    run_dir = trained["run_dir"] + "-refit"
    record_path = os.path.join(run_dir, "bench_run.json")
    if os.path.exists(record_path):
        with open(record_path) as stream:
            return json.load(stream)
    if trained["error"] is not None:
        return dict(trained, run_dir=run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(trained["run_dir"], run_dir)
    command = shlex.split(trained["command"])
    command = [f"--model_dir={run_dir}" if a.startswith("--model_dir=") else
               "--decision_model=refit" if a == "--decision_model=ensemble" else a for a in command]
    folds = sorted(glob.glob(os.path.join(run_dir, "folds", "*", "out_of_fold.npz")))
    before = [os.path.getmtime(path) for path in folds]
    with bench.Timer() as timer:
        done = subprocess.run(command, cwd=bench.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    error = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-600:]}"
    retrained = not folds or [os.path.getmtime(path) for path in folds] != before
    if error is None and (retrained or "Nothing to train" not in done.stderr):
        error = "the refit rerun trained again: " + done.stderr.strip()[-600:]
    record = dict(trained, run_dir=run_dir, command=shlex.join(command), error=error,
                  cpu_s=trained["cpu_s"] + timer.cpu_s, wall_s=trained["wall_s"] + timer.wall_s)
    with open(record_path, "w") as stream:
        json.dump(record, stream, indent=1)
    return record


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="letter_lt,satellite_lt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default="ensemble,refit")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--min_train_rows", type=int, default=30)
    parser.add_argument("--max_share", type=float, default=0.15)
    parser.add_argument("--work_dir", default=os.path.join("runs", "bench_decision_transfer"))
    parser.add_argument("--data_dir", default=bench.DATA_DIR)
    parser.add_argument("--json_out", default="")
    parser.add_argument("--source_commit", default="",
                        help="the commit a copy of the tree without .git was made from (as bench_decisions)")
    args = parser.parse_args(argv)
    bench.SOURCE_COMMIT = args.source_commit or None
    args.retry_failed = False
    rows: List[Dict[str, Any]] = []
    for name in args.datasets.split(","):
        source, keep = SOURCES[name]
        directory = os.path.join(args.work_dir, "data")
        os.makedirs(directory, exist_ok=True)
        train_csv, pool_csv = (os.path.join(directory, f"{name}_{part}.csv") for part in ("train", "pool"))
        split_pool(os.path.join(args.data_dir, source), keep, bench.SUBSAMPLE_SEED, train_csv, pool_csv)
        _, columns, pool_names = read_pool(pool_csv)
        for seed in (int(s) for s in args.seeds.split(",")):
            data = bench.DataSet(name, f"csv:{train_csv}", bench.file_digest([train_csv, pool_csv]))
            splits = bench.load_splits(bench.DataSet(name, f"csv:{train_csv}", data.digest), seed, "")
            class_names = splits.class_names
            train_labels = np.concatenate([splits.train[1], splits.validation[1], splits.test[1]])
            counts = np.bincount(splits.train[1], minlength=len(class_names))
            prior = np.bincount(train_labels, minlength=len(class_names)) / len(train_labels)
            labels = np.array([class_names.index(n) for n in pool_names])
            for k in range(len(class_names)):
                if not (args.min_train_rows <= counts[k] <= args.max_share * counts.max()):
                    continue
                bench.CLI_RECIPES["transfer_ensemble"] = (
                    *RECIPES["ensemble"], f"--eval_dataset=csv:{pool_csv}", "--target_class={k}",
                    "--target_recall={recall}")
                trained = bench.train_cli("transfer_ensemble", k, data, seed, args, "")
                for recipe in args.recipes.split(","):
                    if recipe in ("ensemble", "refit"):
                        record = trained if recipe == "ensemble" else refit_of(trained)
                    else:
                        bench.CLI_RECIPES[f"transfer_{recipe}"] = (
                            *RECIPES[recipe], f"--eval_dataset=csv:{pool_csv}", "--target_class={k}",
                            "--target_recall={recall}")
                        record = bench.train_cli(f"transfer_{recipe}", k, data, seed, args, "")
                    row = {"dataset": name, "class": class_names[k], "seed": seed, "recipe": recipe,
                           "train_rows": int(counts[k]), "pool_rows": int(np.sum(labels == k)),
                           "command": record["command"], "commit": record["commit"],
                           "cpu_s": record["cpu_s"], "error": record["error"]}
                    if record["error"] is None:
                        logits, decided, served_names = served(record["run_dir"], columns)
                        if served_names != class_names:
                            raise SystemExit(f"{record['run_dir']}: classes {served_names} != {class_names}")
                        tpr, precision = prior_precision(decided == k, labels, k, prior)
                        top = prior_ceiling(logits, labels, k, prior, tpr)
                        row.update(recall=tpr, precision=precision, ceiling=top,
                                   ratio=precision / top if top else float("nan"),
                                   ceiling_at_target=prior_ceiling(logits, labels, k, prior,
                                                                   args.target_recall))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as stream:
            json.dump(rows, stream, indent=1)
    print(table(rows, args.target_recall))


def table(rows: List[Dict[str, Any]], target: float) -> str:
    lines = ["| recipe | cases | median recall on new rows | mean abs(recall - target) | "
             "recall >= target - 0.05 | median precision at the training prevalence | "
             "median precision / ceiling | "
             "median ceiling at the target |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        ok = [r for r in rows if r["recipe"] == recipe and r.get("error") is None]
        if not ok:
            continue
        recall = np.array([r["recall"] for r in ok])
        lines.append(f"| {recipe} | {len(ok)} | {np.median(recall):.3f} | "
                     f"{np.mean(np.abs(recall - target)):.3f} | "
                     f"{int(np.sum(recall >= target - 0.05))}/{len(ok)} | "
                     f"{np.median([r['precision'] for r in ok]):.3f} | "
                     f"{np.median([r['ratio'] for r in ok]):.2f} | "
                     f"{np.median([r['ceiling_at_target'] for r in ok]):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
