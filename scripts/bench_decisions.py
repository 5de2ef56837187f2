"""Rare-class decisions on real data: served test recall and precision of each recipe against the ceiling.

Issue 13's measured goal. For each data set (`--datasets`), each seed (`--seeds`) and each rare
class (at most `--rare_share` of the largest class's training rows and at least
`--min_train_rows` of them), every recipe (`--recipes`) trains on the training split, and the
test split, which no choice ever sees, measures the served decision's recall and precision of
that class at `--target_recall`:

- `ce_argmax`: the CLI with `--loss=cross_entropy`, argmax (one model per data set and seed).
- `keras_cw`: a plain Keras `model.fit` with `class_weight` = n / (K n_k) (scikit-learn's
  'balanced'), the CLI's MLP (`trainer.models.build_model`, same normalisation), Adam at the
  CLI's default learning rate, same epochs and batch, then our decision procedure: the
  target-recall point (`trainer.decisions.calibrate` with the CLI's default
  `--decision_confidence` and `--decision_estimator`) chosen on the validation split when it can
  show the target, else on out-of-fold logits of 5 Keras fold models (the CLI's folds and fold
  seeds, `trainer.cross_fit`), served on the model trained on all training rows (or, with
  `--keras_served_model=ensemble`, on the fold models' mean logits, as `--decision_model=ensemble`).
- `la_argmax`: the CLI with `--loss=logit_adjusted`, argmax.
- `default`: the CLI with `--target_class=K --target_recall=R` and its defaults otherwise
  (`--loss=auto`, automatic `--decision_folds`).
- `controller`: the CLI with `--reweighting=recall_target --target_class=K --target_recall=R`.
- not run by default: `ce_target` (`--loss=cross_entropy` with our target-recall decision),
  `validation_hd` (`--decision_folds=0`: the cut-off chosen on the validation split) and
  `validation_bound` (that, with `--decision_confidence=0.9 --decision_estimator=empirical`).

Measured per case on the test split: the served recall and precision of the class (the CLI's
export's `class_id`, checked against its metrics.json), the ceiling (the best precision any
cut-off, a logit offset or a threshold on the class's probability, reaches on that same model at
the served recall, picked on the test split itself, so only a reference), and the optimistic
baseline: the `keras_cw` model's ceiling at the same recall (thresholded on the test set).

Data (`../shared/data/`, subsampled with a fixed seed, written under `--work_dir/data`):
`satellite_lt` (cotton crop, damp grey soil, vegetation stubble cut to 150, 100, 60 rows),
`letter_lt` (class i of the 26, sorted, keeps round(734 * 50 ** (-i / 25)) rows: 734 down to
15), `pima_lt` (pos cut to 50 rows), `fashion_mnist_lt` (the CLI's built-in, imbalance ratio
100), or `NAME=PATH` for a CSV as is. glass and soybean have no rare class with 30 training rows
(their classes that have are their largest), and breast_cancer cannot have one: 10% of its 275
training rows of benign is 27.

To measure committed code while others edit the tree, run a copy (`git archive HEAD | tar -x -C
DIR`) with `PYTHONPATH=DIR`, `--data_dir=<this tree>/../shared/data` and `--source_commit=<HEAD>`.

Every run is cached under `--work_dir`, keyed on every setting (recipe and its arguments, the data
file's SHA-256, class, seed, epochs, batch size, target recall); a rerun only re-measures. Each
row records the commit that trained it (`git rev-parse --short HEAD`, `+dirty` when tracked files
differ) and the command. Results: README, "Rare-class decisions".

    nice -n 19 python scripts/bench_decisions.py --seeds=0,1,2 --json_out=rows.json
    python scripts/bench_decisions.py --merge rows.json more_rows.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import resource
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import flags

import trainer.cli.flag_groups.recall  # noqa: F401  (defines --decision_confidence, --decision_estimator)
import trainer.cli.flag_groups.training  # noqa: F401  (defines --learning_rate)
from trainer import cross_fit, decisions
from trainer.cli.decision_folds import AUTOMATIC_DECISION_FOLDS, SHOWABLE_CONFIDENCE
from trainer.data import load_data
from trainer.decisions.cutoffs import can_show_recall
from trainer.decisions.target_recall import target_scores
from trainer.determinism import seed_everything
from trainer.export import FEATURES_SIGNATURE
from trainer.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "..", "shared", "data")
FASHION_MNIST = "fashion_mnist_lt"
# name -> (source file, {class: rows kept}); letter_lt's profile is computed (letter_counts).
SUBSAMPLES = {
    "satellite_lt": ("satellite.csv", {"cotton crop": 150, "damp grey soil": 100, "vegetation stubble": 60}),
    "letter_lt": ("letter.csv", None),
    "pima_lt": ("pima.csv", {"pos": 50}),
}
SUBSAMPLE_SEED = 0
KERAS = "keras_cw"
# Recipe -> CLI flags; '{k}' (the class index) and '{recall}' make a recipe per class.
CLI_RECIPES = {
    "ce_argmax": ("--loss=cross_entropy",),
    "la_argmax": ("--loss=logit_adjusted",),
    "default": ("--target_class={k}", "--target_recall={recall}"),
    "default_refit": ("--decision_model=refit", "--target_class={k}", "--target_recall={recall}"),
    "iw_target": ("--reweighting=inverse_frequency", "--target_class={k}", "--target_recall={recall}"),
    "controller": ("--reweighting=recall_target", "--target_class={k}", "--target_recall={recall}"),
    "ce_target": ("--loss=cross_entropy", "--target_class={k}", "--target_recall={recall}"),
    "validation_hd": ("--decision_folds=0", "--target_class={k}", "--target_recall={recall}"),
    "validation_bound": ("--decision_folds=0", "--decision_confidence=0.9", "--decision_estimator=empirical",
                         "--target_class={k}", "--target_recall={recall}"),
}
DEFAULT_RECIPES = ("ce_argmax", KERAS, "la_argmax", "default", "controller")
RECALL_GOAL, RATIO_GOAL, CASE_SHARE_GOAL = 0.85, 0.85, 0.8
SERVE_BATCH = 1024


# ------------------------------------------------------------------ the data


def letter_counts(names: Sequence[str], largest: int = 734, ratio: float = 50.0) -> Dict[str, int]:
    """letter_lt's profile: class i of the n sorted names keeps round(largest * ratio ** (-i / (n - 1))).

    734 is the smallest class of letter.csv, so every class has the rows its place asks for.
    """
    names = sorted(names)
    last = max(len(names) - 1, 1)
    return {name: int(round(largest * ratio ** (-i / last))) for i, name in enumerate(names)}


def rows_by_class(source: str) -> Tuple[List[str], Dict[str, List[List[str]]]]:
    """`(header, {label: rows in file order})` of a CSV whose last column is the label."""
    with open(source, newline="") as stream:
        rows = list(csv.reader(stream))
    by_class: Dict[str, List[List[str]]] = {}
    for row in rows[1:]:
        by_class.setdefault(row[-1], []).append(row)
    return rows[0], by_class


def subsample(source: str, keep: Optional[Dict[str, int]], seed: int, out: str) -> None:
    """Writes `source` with each class of `keep` cut to its seeded rows (letter_lt: its profile), shuffled."""
    header, by_class = rows_by_class(source)
    if keep is None:
        keep = letter_counts(list(by_class))
    rng = random.Random(seed)
    kept: List[List[str]] = []
    for name in sorted(by_class):
        members = by_class[name]
        wanted = keep.get(name, len(members))
        if wanted > len(members):
            raise SystemExit(f"{source}: class {name!r} has {len(members)} rows, fewer than {wanted}")
        kept += members if wanted == len(members) else rng.sample(members, wanted)
    rng.shuffle(kept)
    with open(out, "w", newline="") as stream:
        csv.writer(stream).writerows([header] + kept)


def file_digest(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class DataSet:
    """One data set: its name, the `--dataset` value the CLI gets, and the digest of its files."""

    name: str
    dataset: str
    digest: str


def prepare_data(spec: str, work_dir: str, fashion_dir: str, data_dir: str = DATA_DIR) -> DataSet:
    """`spec`: a name of SUBSAMPLES, `fashion_mnist_lt`, or NAME=PATH (a CSV used as is)."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        path = os.path.abspath(path)
        return DataSet(name, f"csv:{path}", file_digest([path]))
    if spec == FASHION_MNIST:
        files = sorted(os.path.join(fashion_dir, f) for f in os.listdir(fashion_dir) if f.endswith(".gz"))
        return DataSet(spec, FASHION_MNIST, file_digest(files))
    if spec not in SUBSAMPLES:
        raise SystemExit(f"--datasets: unknown data set {spec!r}; known: "
                         f"{', '.join(list(SUBSAMPLES) + [FASHION_MNIST])}, or NAME=PATH")
    source, keep = SUBSAMPLES[spec]
    out = os.path.join(work_dir, "data", spec + ".csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subsample(os.path.join(data_dir, source), keep, SUBSAMPLE_SEED, out)  # cheap; always rewritten
    return DataSet(spec, f"csv:{out}", file_digest([out]))


@dataclasses.dataclass
class Splits:
    """The splits of one data set and seed as the CLI makes them (`trainer.data.load_data`)."""

    class_names: List[str]
    train: Tuple[np.ndarray, np.ndarray]
    validation: Tuple[np.ndarray, np.ndarray]
    test: Tuple[np.ndarray, np.ndarray]
    feature_mean: np.ndarray
    feature_variance: np.ndarray


def load_splits(data: DataSet, seed: int, fashion_dir: str) -> Splits:
    kwargs = {"data_dir": fashion_dir} if data.dataset == FASHION_MNIST else {}
    bundle = load_data(data.dataset, seed=seed, **kwargs)
    parts = [cross_fit.training_arrays(split) for split in (bundle.train, bundle.validation, bundle.eval)]
    return Splits(list(bundle.class_names), *parts, feature_mean=np.asarray(bundle.feature_mean),
                  feature_variance=np.asarray(bundle.feature_variance))


def rare_classes(train_labels: np.ndarray, num_classes: int, share: float, minimum: int
                 ) -> Tuple[List[int], List[int]]:
    """(benchmarked, left out): classes with at most `share` of the largest class's training rows,
    split by whether they have at least `minimum` training rows."""
    counts = np.bincount(train_labels, minlength=num_classes)
    rare = [k for k in range(num_classes) if 0 < counts[k] <= share * counts.max()]
    return [k for k in rare if counts[k] >= minimum], [k for k in rare if counts[k] < minimum]


# ------------------------------------------------------------------ the figures


def ceiling(logits: np.ndarray, labels: np.ndarray, k: int, recall_at: float) -> float:
    """The best precision of any cut-off (offset or threshold) whose recall of class k >= recall_at."""
    best, positive = 0.0, labels == k
    if not positive.any():
        return float("nan")
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


def recall_precision(decided: np.ndarray, labels: np.ndarray, k: int) -> Tuple[float, float]:
    """Recall and precision of class k; precision 0 when the class is never decided."""
    hits = int(np.sum((decided == k) & (labels == k)))
    return hits / max(int(np.sum(labels == k)), 1), hits / max(int(np.sum(decided == k)), 1)


# Set by --source_commit: the commit a copy of the tree without .git (git archive) was made from.
SOURCE_COMMIT: Optional[str] = None


def commit() -> str:
    """`git rev-parse --short HEAD` of this tree, `+dirty` when tracked files differ (or --source_commit)."""
    if SOURCE_COMMIT:
        return SOURCE_COMMIT

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def settings_key(settings: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def cli_decision_defaults() -> Dict[str, Any]:
    """The CLI's defaults of the target-recall calibration (what `default` passes to calibrate)."""
    return {"confidence": flags.FLAGS["decision_confidence"].default,
            "estimator": flags.FLAGS["decision_estimator"].default}


class Timer:
    """Wall and CPU seconds (this process's and its children's) of a block."""

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), self._cpu_now()
        return self

    @staticmethod
    def _cpu_now() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __exit__(self, *exc: Any) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = self._cpu_now() - self._cpu


# ------------------------------------------------------------------ CLI recipes


def cli_args(recipe: str, k: Optional[int], target_recall: float) -> List[str]:
    return [arg.format(k=k, recall=f"{target_recall:g}") for arg in CLI_RECIPES[recipe]]


def per_class(recipe: str) -> bool:
    return recipe != KERAS and any("{k}" in arg for arg in CLI_RECIPES[recipe])


def train_cli(recipe: str, k: Optional[int], data: DataSet, seed: int, args: argparse.Namespace,
              fashion_dir: str) -> Dict[str, Any]:
    """Trains (or finds cached) one CLI run; returns its bench_run.json record (error set on failure)."""
    extra = cli_args(recipe, k, args.target_recall)
    settings = {"runner": "cli", "recipe": recipe, "args": extra, "dataset": data.name,
                "data": data.dataset if data.dataset == FASHION_MNIST else os.path.basename(data.dataset),
                "data_sha256": data.digest, "class": k, "seed": seed, "epochs": args.epochs,
                "batch_size": args.batch_size, "target_recall": args.target_recall}
    key = settings_key(settings)
    run_dir = os.path.join(args.work_dir, "runs", f"{recipe}-{data.name}-{'all' if k is None else k}"
                                                  f"-s{seed}-{key}")
    record_path = os.path.join(run_dir, "bench_run.json")
    if os.path.exists(record_path):
        with open(record_path) as stream:
            record = json.load(stream)
        if record.get("error") is None or not args.retry_failed:
            return record
    command = [sys.executable, "-m", "trainer.main", f"--dataset={data.dataset}", f"--model_dir={run_dir}",
               f"--epochs={args.epochs}", f"--batch_size={args.batch_size}", f"--seed={seed}",
               "--verbosity=0", *extra]
    if data.dataset == FASHION_MNIST:
        command.insert(4, f"--data_dir={fashion_dir}")
    os.makedirs(run_dir, exist_ok=True)
    print(f"[train] {recipe} {data.name} class {k} seed {seed}: {shlex.join(command)}", file=sys.stderr,
          flush=True)
    made_by = commit()
    with Timer() as timer:
        completed = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    record = {"settings": settings, "key": key, "run_dir": run_dir, "commit": made_by,
              "command": shlex.join(command), "wall_s": timer.wall_s, "cpu_s": timer.cpu_s,
              "error": None if completed.returncode == 0 else
              f"exit {completed.returncode}: {completed.stderr.strip()[-600:]}"}
    with open(record_path, "w") as stream:
        json.dump(record, stream, indent=1)
    print(f"[train] done in {timer.wall_s:.0f} s wall, {timer.cpu_s:.0f} s CPU"
          + ("" if record["error"] is None else f"; FAILED {record['error']}"), file=sys.stderr, flush=True)
    return record


def serve(run_dir: str, features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The export's logits and class_id of `features` (encoded inputs: its `serve_features` signature)."""
    signature = tf.saved_model.load(os.path.join(run_dir, "export")).signatures[FEATURES_SIGNATURE]
    logits, decided = [], []
    for start in range(0, len(features), SERVE_BATCH):
        out = signature(features=tf.constant(features[start:start + SERVE_BATCH]))
        logits.append(out["logits"].numpy())
        decided.append(out["class_id"].numpy())
    return np.concatenate(logits), np.concatenate(decided).astype(np.int64)


def measure_cli(record: Dict[str, Any], k: int, splits: Splits, args: argparse.Namespace,
                served_cache: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, Any]:
    """The served figures of class k of a finished CLI run, checked against its metrics.json."""
    run_dir = record["run_dir"]
    features, labels = splits.test
    if run_dir not in served_cache:
        served_cache[run_dir] = serve(run_dir, features)
    logits, decided = served_cache[run_dir]
    recall, precision = recall_precision(decided, labels, k)
    with open(os.path.join(run_dir, "metrics.json")) as stream:
        metrics = json.load(stream)
    if metrics["epoch"] != args.epochs:
        raise SystemExit(f"{run_dir}: trained {metrics['epoch']} epochs, not {args.epochs}")
    point = metrics.get("operating_point")
    if point is not None:
        if point["target_class"] != k:
            raise SystemExit(f"{run_dir}: the operating point is for class {point['target_class']}, not {k}")
        reported = [point["eval_recall"], point["eval_precision"]]
        decision, chosen_on = point["kind"], metrics["decision_data"]["source"]
        if point["confidence"] != cli_decision_defaults()["confidence"] or \
                point["estimator"] != cli_decision_defaults()["estimator"]:
            raise SystemExit(f"{run_dir}: calibrated with confidence {point['confidence']}, estimator "
                             f"{point['estimator']}, not the CLI defaults keras_cw uses")
    else:
        reported = [metrics["recall"][k], metrics["precision"][k]]
        decision, chosen_on = "argmax", None
    reported = [0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else value
                for value in reported]
    if len(labels) != sum(metrics["support"]) or not np.allclose(reported, [recall, precision]):
        raise SystemExit(f"{run_dir}: metrics.json reports recall/precision {reported} on "
                         f"{sum(metrics['support'])} rows, the export serves {recall:.4f} / "
                         f"{precision:.4f} on {len(labels)}")
    return {"recall": recall, "precision": precision, "decision": decision, "chosen_on": chosen_on,
            "logits": logits}


# ------------------------------------------------------------------ Keras class_weight


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> Dict[int, float]:
    """scikit-learn's 'balanced': n / (classes present * n_k)."""
    counts = np.bincount(labels, minlength=num_classes)
    present = int(np.sum(counts > 0))
    return {k: len(labels) / (present * counts[k]) for k in range(num_classes) if counts[k]}


def keras_fit(features: np.ndarray, labels: np.ndarray, num_classes: int, mean: np.ndarray,
              variance: np.ndarray, seed: int, args: argparse.Namespace) -> keras.Model:
    """The CLI's model, Adam at the CLI's learning rate, `class_weight`, plain `model.fit`."""
    seed_everything(seed)
    model = build_model(None, features.shape[1:], num_classes, feature_mean=mean, feature_variance=variance)
    model.compile(optimizer=keras.optimizers.Adam(flags.FLAGS["learning_rate"].default),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(features, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0,
              class_weight=balanced_class_weight(labels, num_classes))
    steps = args.epochs * math.ceil(len(labels) / args.batch_size)
    if int(model.optimizer.iterations.numpy()) != steps:
        raise SystemExit(f"keras_cw: {int(model.optimizer.iterations.numpy())} steps, not {steps}")
    return model


def keras_logits(data: DataSet, seed: int, splits: Splits, need_out_of_fold: bool,
                 args: argparse.Namespace) -> Dict[str, Any]:
    """The keras_cw model's test and validation logits, and out-of-fold logits of its training rows."""
    settings = {"runner": "keras", "recipe": KERAS, "dataset": data.name, "data_sha256": data.digest,
                "seed": seed, "epochs": args.epochs, "batch_size": args.batch_size,
                "learning_rate": flags.FLAGS["learning_rate"].default, "class_weight": "balanced",
                "folds": AUTOMATIC_DECISION_FOLDS, "out_of_fold": need_out_of_fold,
                "fold_models_on_test": True}
    key = settings_key(settings)
    directory = os.path.join(args.work_dir, "keras", f"{data.name}-s{seed}-{key}")
    path = os.path.join(directory, "logits.npz")
    if not os.path.exists(path):
        print(f"[train] keras_cw {data.name} seed {seed} (+{AUTOMATIC_DECISION_FOLDS} folds: "
              f"{need_out_of_fold})", file=sys.stderr, flush=True)
        made_by = commit()
        (x, y), num_classes = splits.train, len(splits.class_names)
        with Timer() as timer:
            model = keras_fit(x, y, num_classes, splits.feature_mean, splits.feature_variance, seed, args)
            test = model.predict(splits.test[0], batch_size=SERVE_BATCH, verbose=0)
            validation = model.predict(splits.validation[0], batch_size=SERVE_BATCH, verbose=0)
            out_of_fold = np.zeros((0, num_classes), np.float32)
            ensemble_test = np.zeros((0, num_classes), np.float32)
            if need_out_of_fold:
                ensemble_test = np.zeros_like(test)
                out_of_fold = np.zeros((len(y), num_classes), np.float32)
                fold_ids = cross_fit.stratified_fold_ids(y, AUTOMATIC_DECISION_FOLDS, seed)
                for index in range(AUTOMATIC_DECISION_FOLDS):
                    train, held = np.flatnonzero(fold_ids != index), np.flatnonzero(fold_ids == index)
                    flat = x[train].reshape(-1, x.shape[-1]).astype(np.float64)
                    fold_model = keras_fit(x[train], y[train], num_classes, flat.mean(axis=0),
                                           flat.var(axis=0), cross_fit.fold_seed(seed, index + 1), args)
                    out_of_fold[held] = fold_model.predict(x[held], batch_size=SERVE_BATCH, verbose=0)
                    ensemble_test += fold_model.predict(splits.test[0], batch_size=SERVE_BATCH,
                                                        verbose=0) / AUTOMATIC_DECISION_FOLDS
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "bench_run.json"), "w") as stream:
            json.dump({"settings": settings, "key": key, "commit": made_by, "wall_s": timer.wall_s,
                       "cpu_s": timer.cpu_s, "command": f"{KERAS} in scripts/bench_decisions.py "
                       f"(model.fit, epochs {args.epochs}, batch {args.batch_size}, seed {seed})"},
                      stream, indent=1)
        np.savez(path + ".tmp.npz", test=test, validation=validation, out_of_fold=out_of_fold,
                 ensemble_test=ensemble_test,
                 test_labels=splits.test[1], validation_labels=splits.validation[1], train_labels=y)
        os.replace(path + ".tmp.npz", path)
    with open(os.path.join(directory, "bench_run.json")) as stream:
        record = json.load(stream)
    saved = dict(np.load(path))
    for name, labels in (("test", splits.test[1]), ("validation", splits.validation[1]),
                         ("train", splits.train[1])):
        if not np.array_equal(saved[f"{name}_labels"], labels):
            raise SystemExit(f"{path}: its {name} labels are not this split's")
    return {**record, **saved}


def keras_decision(saved: Dict[str, Any], k: int, splits: Splits, target_recall: float,
                   served_model: str = "refit") -> Dict[str, Any]:
    """Our decision procedure on the keras_cw model: the point chosen as the CLI would, served on test
    by the model the CLI would serve: the model trained on all training rows, or with
    `served_model="ensemble"` (`--decision_model=ensemble`) the fold models' mean logits when the
    point was cross-fitted."""
    positives = int(np.sum(splits.validation[1] == k))
    if can_show_recall(positives, target_recall, SHOWABLE_CONFIDENCE):
        choosing, labels, chosen_on = saved["validation"], splits.validation[1], "validation_split"
        served = saved["test"]
    else:
        choosing, labels, chosen_on = saved["out_of_fold"], splits.train[1], "out_of_fold"
        served = saved["ensemble_test"] if served_model == "ensemble" else saved["test"]
        if len(choosing) != len(labels) or len(served) != len(splits.test[1]):
            raise SystemExit("keras_cw: out-of-fold logits needed but not computed")
    point = decisions.calibrate("target_recall", choosing, labels, target_class=k,
                                target_recall=target_recall, **cli_decision_defaults())
    recall, precision = recall_precision(point.decide(served), splits.test[1], k)
    return {"recall": recall, "precision": precision, "decision": point.kind, "chosen_on": chosen_on,
            "logits": served}


# ------------------------------------------------------------------ the run and the tables


def run_cases(args: argparse.Namespace) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for spec in args.datasets.split(","):
        data = prepare_data(spec, args.work_dir, args.fashion_dir, args.data_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            splits = load_splits(data, seed, args.fashion_dir)
            num_classes = len(splits.class_names)
            chosen, left_out = rare_classes(splits.train[1], num_classes, args.rare_share,
                                            args.min_train_rows)
            if args.classes:
                chosen = [k for k in chosen if splits.class_names[k] in args.classes.split(",")]
            for k in left_out:
                print(f"[left out] {data.name} seed {seed}: class {splits.class_names[k]!r} has "
                      f"{int(np.sum(splits.train[1] == k))} training rows (< {args.min_train_rows})",
                      file=sys.stderr)
            keras_saved = None
            if KERAS in args.recipes and chosen:
                need = any(not can_show_recall(int(np.sum(splits.validation[1] == k)), args.target_recall,
                                               SHOWABLE_CONFIDENCE) for k in chosen)
                keras_saved = keras_logits(data, seed, splits, need, args)
            served_cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
            for k in chosen:
                rows += case_rows(data, seed, k, splits, keras_saved, served_cache, args)
    return rows


def case_rows(data: DataSet, seed: int, k: int, splits: Splits, keras_saved: Optional[Dict[str, Any]],
              served_cache: Dict[str, Tuple[np.ndarray, np.ndarray]],
              args: argparse.Namespace) -> List[Dict[str, Any]]:
    """One row per recipe of the case (data set, class k, seed); a failed run is a row with its error."""
    labels = splits.test[1]
    case = {"dataset": data.name, "class": splits.class_names[k], "k": k, "seed": seed,
            "train_rows": int(np.sum(splits.train[1] == k)),
            "validation_rows": int(np.sum(splits.validation[1] == k)),
            "test_rows": int(np.sum(labels == k)), "epochs": args.epochs,
            "batch_size": args.batch_size, "target_recall": args.target_recall}
    rows = []
    for recipe in args.recipes:
        if recipe == KERAS:
            record, served = keras_saved, keras_decision(keras_saved, k, splits, args.target_recall,
                                                         args.keras_served_model)
        else:
            record = train_cli(recipe, k if per_class(recipe) else None, data, seed, args, args.fashion_dir)
            served = None if record["error"] else measure_cli(record, k, splits, args, served_cache)
        row = dict(case, recipe=recipe, commit=record["commit"], command=record["command"],
                   wall_s=record["wall_s"], cpu_s=record["cpu_s"], run_key=record["key"],
                   shared_by_classes=recipe == KERAS or not per_class(recipe), error=record.get("error"))
        if served is not None:
            logits = served.pop("logits")
            top = ceiling(logits, labels, k, served["recall"])
            row.update(served, ceiling=top, ratio=served["precision"] / top if top else float("nan"),
                       ceiling_at_target=ceiling(logits, labels, k, args.target_recall))
            if keras_saved is not None:
                row["keras_cw_test_thresholded"] = ceiling(keras_saved["test"], labels, k, served["recall"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summarise(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per recipe: the three goals' figures over its (data set, class, seed) cases."""
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        cases = [r for r in rows if r["recipe"] == recipe]
        ok = [r for r in cases if r.get("error") is None]
        compared = [r for r in ok if "keras_cw_test_thresholded" in r and recipe != KERAS]
        runs = {r["run_key"]: r for r in cases}.values()
        out.append({
            "recipe": recipe, "cases": len(cases), "failed": len(cases) - len(ok),
            "recall_ok": sum(r["recall"] >= RECALL_GOAL for r in ok),
            "median_ratio": float(np.median([r["ratio"] for r in ok])) if ok else float("nan"),
            "median_recall": float(np.median([r["recall"] for r in ok])) if ok else float("nan"),
            "median_precision": float(np.median([r["precision"] for r in ok])) if ok else float("nan"),
            "beats_keras": sum(r["precision"] > r["keras_cw_test_thresholded"] for r in compared),
            "ties_keras": sum(r["precision"] == r["keras_cw_test_thresholded"] for r in compared),
            "compared": len(compared),
            "median_wall_s": float(np.median([r["wall_s"] for r in runs])),
            "median_cpu_s": float(np.median([r["cpu_s"] for r in runs])), "runs": len(runs)})
    return out


def tables(rows: List[Dict[str, Any]]) -> str:
    lines = ["| recipe | served test recall >= 0.85 | median precision / ceiling | precision above "
             "keras_cw thresholded on test at the same recall | median served recall / precision | failed | "
             "runs | median wall s / CPU s per run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summarise(rows):
        share = f"{s['recall_ok']}/{s['cases']} ({s['recall_ok'] / s['cases']:.0%})"
        beats = "-"
        if s["compared"]:
            share_beats = s["beats_keras"] / s["compared"]
            beats = f"{s['beats_keras']}/{s['compared']} ({share_beats:.0%}; {s['ties_keras']} tied)"
        lines.append(f"| {s['recipe']} | {share} | {s['median_ratio']:.2f} | {beats} | "
                     f"{s['median_recall']:.2f} / {s['median_precision']:.2f} | {s['failed']} | "
                     f"{s['runs']} | {s['median_wall_s']:.0f} / {s['median_cpu_s']:.0f} |")
    lines += ["", "| data set | class (train / val / test rows) | seed | recipe | decision (chosen on) | "
              "served recall | served precision | ceiling at that recall | precision / ceiling | "
              "ceiling at the target | keras_cw thresholded on test | commit |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        head = (f"| {r['dataset']} | {r['class']} ({r['train_rows']} / {r['validation_rows']} / "
                f"{r['test_rows']}) | {r['seed']} | {r['recipe']} | ")
        if r.get("error") is not None:
            lines.append(head + f"FAILED: {r['error'][:120]} | | | | | | | {r['commit']} |")
            continue
        chosen = "" if r["chosen_on"] is None else f" ({r['chosen_on']})"
        keras_ref = r.get("keras_cw_test_thresholded")
        lines.append(head + f"{r['decision']}{chosen} | {r['recall']:.3f} | {r['precision']:.3f} | "
                     f"{r['ceiling']:.3f} | {r['ratio']:.2f} | {r['ceiling_at_target']:.3f} | "
                     f"{'-' if keras_ref is None else f'{keras_ref:.3f}'} | {r['commit']} |")
    lines += ["", "Commands (one per run; argmax and keras_cw runs serve every class of their data set "
              "and seed):"]
    lines += [f"- {command}" for command in dict.fromkeys(r["command"] for r in rows)]
    return "\n".join(lines)


def case_table(rows: List[Dict[str, Any]]) -> str:
    """One row per (data set, class, seed): each recipe's served recall / precision (ceiling at that
    recall), and the keras_cw model thresholded on test at the recall of `default` and `controller`."""
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    references = [r for r in ("default", "controller") if r in recipes]
    cases: Dict[Tuple[Any, ...], Dict[str, Dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault((r["dataset"], r["class"], r["train_rows"], r["validation_rows"], r["test_rows"],
                          r["seed"]), {})[r["recipe"]] = r
    header = recipes + [f"keras_cw on test at {r}'s recall" for r in references] + ["commit"]
    lines = ["| data set | class (train / val / test rows) | seed | " + " | ".join(header) + " |",
             "|---|---|---|" + "---|" * len(header)]
    for (dataset, klass, train, validation, test, seed), by_recipe in cases.items():
        cells = []
        for recipe in recipes:
            r = by_recipe.get(recipe)
            if r is None:
                cells.append("not run")
            elif r.get("error") is not None:
                cells.append("FAILED")
            else:
                cells.append(f"{r['recall']:.2f} / {r['precision']:.2f} ({r['ceiling']:.2f})")
        for recipe in references:
            r = by_recipe.get(recipe)
            ok = r is not None and r.get("error") is None and "keras_cw_test_thresholded" in r
            cells.append(f"{r['keras_cw_test_thresholded']:.2f}" if ok else "-")
        commits = ", ".join(sorted({r["commit"] for r in by_recipe.values()}))
        lines.append(f"| {dataset} | {klass} ({train} / {validation} / {test}) | {seed} | "
                     + " | ".join(cells) + f" | {commits} |")
    return "\n".join(lines)


def goals(rows: List[Dict[str, Any]], recipe: str = "default") -> str:
    s = next((s for s in summarise(rows) if s["recipe"] == recipe), None)
    if s is None:
        return f"no {recipe} rows"
    share = s["recall_ok"] / s["cases"]
    beats = s["beats_keras"] / s["compared"] if s["compared"] else float("nan")
    return (f"{recipe}: served recall >= {RECALL_GOAL} in {share:.0%} of cases (goal >= "
            f"{CASE_SHARE_GOAL:.0%}: {'met' if share >= CASE_SHARE_GOAL else 'NOT met'}); median precision "
            f"/ ceiling {s['median_ratio']:.2f} (goal >= {RATIO_GOAL}: "
            f"{'met' if s['median_ratio'] >= RATIO_GOAL else 'NOT met'}); beats keras_cw thresholded on "
            f"test in {beats:.0%} (goal > 50%: {'met' if beats > 0.5 else 'NOT met'})")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="satellite_lt,letter_lt,pima_lt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES))
    parser.add_argument("--classes", default="", help="only these class names (comma-separated)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--rare_share", type=float, default=0.1)
    parser.add_argument("--min_train_rows", type=int, default=30)
    parser.add_argument("--work_dir", default=os.path.join("runs", "bench_decisions"))
    parser.add_argument("--fashion_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--data_dir", default=DATA_DIR, help="the directory of satellite.csv, ...")
    parser.add_argument("--source_commit", default="",
                        help="the commit to record when this tree is a copy without .git (git archive)")
    parser.add_argument("--json_out", default="")
    parser.add_argument("--keras_served_model", choices=["refit", "ensemble"], default="refit",
                        help="what keras_cw serves a cross-fitted point on (as the CLI's --decision_model)")
    parser.add_argument("--retry_failed", action="store_true", help="rerun CLI runs that failed before")
    parser.add_argument("--merge", nargs="+", default=None, help="JSON row files to tabulate (no runs)")
    args = parser.parse_args(argv)
    global SOURCE_COMMIT
    SOURCE_COMMIT = args.source_commit or None
    if args.merge:  # a case's recipe given twice (keras_cw rows in several files): the last one counts
        merged: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
        for path in args.merge:
            with open(path) as stream:
                for row in json.load(stream):
                    merged[(row["dataset"], row["class"], row["seed"], row["recipe"])] = row
        order = {recipe: i for i, recipe in enumerate(dict.fromkeys([*DEFAULT_RECIPES, *CLI_RECIPES]))}
        rows = sorted(merged.values(), key=lambda r: (r["dataset"], r["class"], r["seed"],
                                                      order.get(r["recipe"], len(order))))
    else:
        args.recipes = args.recipes.split(",")
        unknown = [r for r in args.recipes if r != KERAS and r not in CLI_RECIPES]
        if unknown:
            raise SystemExit(f"--recipes: unknown {unknown}; known: {[KERAS, *CLI_RECIPES]}")
        args.work_dir = os.path.abspath(args.work_dir)
        rows = run_cases(args)
        if args.json_out:
            with open(args.json_out, "w") as stream:
                json.dump(rows, stream, indent=1)
    print(f"measured at {commit()}")
    print(tables(rows))
    print()
    print(case_table(rows))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        print(goals(rows, recipe))


if __name__ == "__main__":
    main()
