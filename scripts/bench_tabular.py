"""Our default tabular recipe against scikit-learn's HistGradientBoostingClassifier, same splits and seeds.

For each data set (`--datasets`, the CSV files of `../shared/data/`, see its README) and each seed
(`--seeds`), the rows are split once per class, seeded: 60% train, 20% validation, 20% test (a class
of at least 3 rows keeps at least one row in validation and in test). Both sides then see the same
rows:

- ours: `python -m trainer.main --dataset=csv:<train+validation> --eval_dataset=csv:<test>
  --epochs=... --seed=<seed>` plus the recipe's flags, in a subprocess; figures from
  `<model_dir>/metrics.json`, recomputed from its confusion matrix (the served decision's, which
  is argmax unless the recipe chooses an operating point: the table says which) and checked
  against its own `balanced_accuracy` / `min_recall`; the run must have trained the epochs asked
  and `epochs x ceil(train rows / batch)` steps, and must have evaluated every test row.
- HGB: `HistGradientBoostingClassifier(class_weight='balanced', categorical_features=<mask>,
  early_stopping=True, random_state=seed)` fitted in this process on the same train+validation
  rows (its own stratified early-stopping split comes out of them), missing cells as NaN,
  categorical columns ordinal-coded from the training rows (an unseen or missing category: NaN);
  `n_iter_` must be > 0.

Reported on the test rows: balanced accuracy (mean over classes with test support of their
recall) and worst-class recall (the smallest of those recalls), medians over seeds; wall and CPU
seconds of one run (median over seeds): our CPU is the subprocess's user+system time
(`resource.getrusage(RUSAGE_CHILDREN)` deltas, TensorFlow's start-up included), HGB's
`time.process_time()` around fit and predict. Then the median over data sets of the
differences. Every data set is reported; a side that fails says so in its row.

Recipes (`--recipes`, names of `RECIPES`): with more than one, each recipe first trains on the
train rows and is scored on the validation rows (`--eval_dataset=<validation>`), never on test;
the recipe with the best mean over data sets of (balanced accuracy + worst recall) / 2 on
validation is chosen, and only then are it and `default` run on the test rows. The validation
table of every recipe is printed and written too. `--test_only` skips the search and reports
every recipe named on the test rows (for recipes chosen beforehand on validation rows).

    python scripts/bench_tabular.py --out=runs/bench_tabular/table.md
    python scripts/bench_tabular.py --datasets=glass,vehicle --seeds=0 --recipes=default,inv_freq
    python scripts/bench_tabular.py --quick --datasets=mine=path/to/file.csv
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data")
LABEL = "label"
MISSING = ("", "NA", "nan", "NaN", "?")


@dataclass(frozen=True)
class DataSet:
    """One benchmark data set: a CSV file and how it is prepared.

    Attributes:
      name: The name in the table and in `--datasets`.
      file: The CSV file (relative to `--data_dir` unless absolute).
      categorical: Integer-coded columns that are categories ("all": every feature column).
      long_tail: (largest, smallest) class sizes of a seeded geometric subsample, or None.
    """

    name: str
    file: str
    categorical: object = ()
    long_tail: Optional[Tuple[int, int]] = None


DATASETS: Dict[str, DataSet] = {d.name: d for d in (
    DataSet("satellite", "satellite.csv"),
    DataSet("glass", "glass.csv"),
    DataSet("vehicle", "vehicle.csv"),
    DataSet("letter_tail", "letter.csv", long_tail=(734, 30)),
    DataSet("dna", "dna.csv"),
    DataSet("house_votes", "house_votes.csv"),
    DataSet("soybean", "soybean.csv", categorical="all"),
    DataSet("pima", "pima.csv"),
    DataSet("breast_cancer", "breast_cancer.csv"),
)}

# Our recipes: CLI flags on top of `--epochs=<E> --seed=<seed>`; "{E3}" is 3 x E, "{E10}" 10 x E.
# "default" is whatever the checkout's CLI defaults are (since --loss=auto: logit_adjusted, batch 256).
RECIPES: Dict[str, List[str]] = {
    "default": [],
    "cross_entropy": ["--loss=cross_entropy"],
    "inv_freq": ["--reweighting=inverse_frequency"],
    "logit_adjusted": ["--loss=logit_adjusted"],
    "bs64": ["--batch_size=64"],
    "bs64_inv_freq": ["--batch_size=64", "--reweighting=inverse_frequency"],
    "bs64_logit_adjusted": ["--batch_size=64", "--loss=logit_adjusted"],
    "bs64_inv_freq_x3": ["--batch_size=64", "--reweighting=inverse_frequency", "--epochs={E3}"],
    "bs64_inv_freq_x3_es": ["--batch_size=64", "--reweighting=inverse_frequency", "--epochs={E3}",
                            "--early_stopping_patience=10", "--monitor=balanced_accuracy"],
    "bs64_inv_freq_x10_es": ["--batch_size=64", "--reweighting=inverse_frequency", "--epochs={E10}",
                             "--early_stopping_patience=20", "--monitor=balanced_accuracy"],
    "bs64_la_dropout": ["--batch_size=64", "--loss=logit_adjusted", "--dropout=0.2"],
    "bs64_la_wd": ["--batch_size=64", "--loss=logit_adjusted", "--weight_decay=0.1"],
    "bs64_la_dropout_wd": ["--batch_size=64", "--loss=logit_adjusted", "--dropout=0.2",
                           "--weight_decay=0.1"],
    "bs64_la_dropout_x3": ["--batch_size=64", "--loss=logit_adjusted", "--dropout=0.2", "--epochs={E3}"],
    "bs64_inv_freq_worst": ["--batch_size=64", "--reweighting=inverse_frequency",
                            "--recall_target_mode=worst_class", "--calibrate",
                            "--max_balanced_accuracy_drop=0.01"],
}


# ------------------------------------------------------------------------------ data


def read_csv(path: str) -> Tuple[List[str], List[List[str]]]:
    """The header and the rows of a CSV file whose label column is `label`."""
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    header, body = rows[0], [row for row in rows[1:] if row]
    if LABEL not in header:
        raise SystemExit(f"{path}: no column {LABEL!r} (header: {header})")
    return header, body


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows([list(header)] + [list(r) for r in rows])


def long_tail_subsample(rows: List[List[str]], label_index: int, largest: int, smallest: int,
                        seed: int) -> List[List[str]]:
    """Rows subsampled so class sizes fall geometrically from `largest` to `smallest` (seeded order)."""
    by_class: Dict[str, List[List[str]]] = {}
    for row in rows:
        by_class.setdefault(row[label_index], []).append(row)
    rng = random.Random(seed)
    names = sorted(by_class)
    rng.shuffle(names)
    last = max(len(names) - 1, 1)
    kept: List[List[str]] = []
    for rank, name in enumerate(names):
        size = round(largest * (smallest / largest) ** (rank / last))
        if size > len(by_class[name]):
            raise SystemExit(f"class {name!r} has {len(by_class[name])} rows, the tail asks {size}")
        kept += rng.sample(by_class[name], size)
    rng.shuffle(kept)
    return kept


def stratified_split(labels: Sequence[str], seed: int, fractions=(0.6, 0.2, 0.2)) -> List[np.ndarray]:
    """Row indices of train, validation and test: per class, seeded; each held-out part >= 1 row
    of every class that has at least 3."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts: List[List[int]] = [[], [], []]
    for name in sorted(set(labels.tolist())):
        index = rng.permutation(np.flatnonzero(labels == name))
        n = len(index)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        parts[1] += index[:n_val].tolist()
        parts[2] += index[n_val:n_val + n_test].tolist()
        parts[0] += index[n_val + n_test:].tolist()
    return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def categorical_mask(header: Sequence[str], rows: Sequence[Sequence[str]], forced) -> List[bool]:
    """Per feature column (header order, label left out): categorical or not.

    A column is categorical when a non-missing cell is not a number, or when `forced` names it
    ("all": every column).
    """
    features = [i for i, name in enumerate(header) if name != LABEL]
    mask = []
    for i in features:
        if forced == "all" or header[i] in forced:
            mask.append(True)
        else:
            mask.append(any(row[i] not in MISSING and not is_number(row[i]) for row in rows))
    return mask


class Encoder:
    """CSV cells -> a float matrix for HGB: numbers as floats, categories as codes from the
    training rows (sorted), a missing cell or an unseen category as NaN."""

    def __init__(self, header: Sequence[str], train_rows: Sequence[Sequence[str]], mask: Sequence[bool]):
        self.columns = [i for i, name in enumerate(header) if name != LABEL]
        self.mask = list(mask)
        self.vocab: Dict[int, Dict[str, int]] = {}
        for column, categorical in zip(self.columns, self.mask):
            if categorical:
                values = sorted({row[column] for row in train_rows if row[column] not in MISSING})
                self.vocab[column] = {v: code for code, v in enumerate(values)}

    def __call__(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.full((len(rows), len(self.columns)), np.nan)
        for j, column in enumerate(self.columns):
            codes = self.vocab.get(column)
            for r, row in enumerate(rows):
                cell = row[column]
                if cell in MISSING:
                    continue
                if codes is None:
                    out[r, j] = float(cell)
                elif cell in codes:
                    out[r, j] = codes[cell]
        return out


# ------------------------------------------------------------------------------ figures


def recall_figures(confusion: np.ndarray) -> Tuple[float, float, List[float]]:
    """Balanced accuracy and worst recall over the classes with support (rows: true classes)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    recalls = [float(confusion[k, k] / support[k]) for k in range(len(support)) if support[k] > 0]
    return float(np.mean(recalls)), float(min(recalls)), recalls


def confusion_of(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    index = {c: k for k, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, predicted):
        matrix[index[t], index[p]] += 1
    return matrix


@dataclass
class Result:
    """One side's figures on one data set, seed and evaluation split."""

    balanced_accuracy: float = math.nan
    worst_recall: float = math.nan
    wall_s: float = math.nan
    cpu_s: float = math.nan
    note: str = ""
    error: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)


def run_hgb(x_train: np.ndarray, y_train: Sequence[str], x_eval: np.ndarray, y_eval: Sequence[str],
            mask: Sequence[bool], seed: int) -> Result:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(class_weight="balanced", categorical_features=np.asarray(mask),
                                           early_stopping=True, random_state=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x_train, np.asarray(y_train))
    predicted = model.predict(x_eval)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if model.n_iter_ <= 0:
        raise SystemExit(f"HGB did no boosting iteration (n_iter_={model.n_iter_})")
    classes = sorted(set(y_train) | set(y_eval))
    ba, worst, _ = recall_figures(confusion_of(y_eval, predicted.tolist(), classes))
    return Result(ba, worst, wall, cpu, note=f"{model.n_iter_} iter", extra=dict(n_iter=int(model.n_iter_)))


def warm_up_hgb() -> None:
    """One small fit, so HGB's one-off start-up costs (imports, thread pool) land on no data set."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=200), rng.integers(0, 3, 200)])
    y = (x[:, 0] > 0).astype(int).astype(str).tolist()
    run_hgb(x, y, x, y, [False, True], 0)


def expand(flags: Sequence[str], epochs: int) -> List[str]:
    return [f.replace("{E3}", str(3 * epochs)).replace("{E10}", str(10 * epochs)) for f in flags]


def flag_value(flags: Sequence[str], name: str, default):
    """The value of `--name` in `flags` (the last one wins, as with absl), else `default`."""
    value = default
    for f in flags:
        if f.startswith(f"--{name}="):
            value = type(default)(f.split("=", 1)[1])
    return value


def run_ours(train_csv: str, eval_csv: str, model_dir: str, flags: Sequence[str], seed: int,
             train_rows: int, eval_rows: int, project_root: str = ROOT) -> Result:
    """One CLI run (from `project_root`); its metrics.json checked against the rows and steps asked."""
    command = [sys.executable, "-m", "trainer.main", f"--dataset=csv:{train_csv}",
               f"--eval_dataset=csv:{eval_csv}", f"--model_dir={model_dir}", "--export_dir=none",
               f"--seed={seed}", "--verbosity=-1", *flags]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env,
                               cwd=project_root)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if completed.returncode != 0:
        lines = [line for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
        message = next((line for line in reversed(lines) if "error" in line.lower()),
                       lines[-1] if lines else "")
        return Result(wall_s=wall, cpu_s=cpu, error=f"exit {completed.returncode}: {message.strip()[:300]}")
    with open(os.path.join(model_dir, "metrics.json")) as stream:
        metrics = json.load(stream)
    splits = metrics["data_splits"]
    trained = splits["train"]["rows"]
    held = (splits.get("validation") or {}).get("rows", 0)
    epochs = flag_value(flags, "epochs", 10)
    batch = metrics.get("batch_size") or flag_value(flags, "batch_size", 256)  # older runs: the flag
    problems = []
    if trained + held != train_rows:
        problems.append(f"trained on {trained} + held out {held} rows, the file has {train_rows}")
    if splits["eval"]["rows"] != eval_rows or int(np.sum(metrics["support"])) != eval_rows:
        problems.append(f"evaluated {splits['eval']['rows']} rows, the file has {eval_rows}")
    stops_early = any(f.startswith("--early_stopping_patience=") for f in flags)
    steps = metrics["epoch"] * math.ceil(trained / batch)
    if (metrics["epoch"] > epochs or (not stops_early and metrics["epoch"] != epochs)
            or metrics["step"] != steps):
        problems.append(f"ran {metrics['epoch']} epochs / {metrics['step']} steps; asked {epochs} epochs "
                        f"of {math.ceil(trained / batch)} steps")
    ba, worst, _ = recall_figures(metrics["confusion_matrix"])
    if abs(ba - metrics["balanced_accuracy"]) > 1e-9 or abs(worst - metrics["min_recall"]) > 1e-9:
        problems.append(f"metrics.json says BA {metrics['balanced_accuracy']}, min recall "
                        f"{metrics['min_recall']}; its confusion matrix gives {ba}, {worst}")
    if problems:
        raise SystemExit(f"{model_dir}: " + "; ".join(problems))
    note = metrics["decision"] + ("" if metrics["epoch"] == epochs else f", stopped at {metrics['epoch']}")
    return Result(ba, worst, wall, cpu, note=note,
                  extra=dict(decision=metrics["decision"], epochs=metrics["epoch"], steps=metrics["step"],
                             argmax_balanced_accuracy=metrics.get("argmax", {}).get("balanced_accuracy")))


# ------------------------------------------------------------------------------ the benchmark


@dataclass
class Prepared:
    """A data set's rows and facts, after the optional long-tail subsample."""

    name: str
    header: List[str]
    rows: List[List[str]]
    mask: List[bool]
    categorical_names: List[str]

    @property
    def labels(self) -> List[str]:
        i = self.header.index(LABEL)
        return [row[i] for row in self.rows]

    def facts(self) -> Tuple[int, int, float]:
        counts = [self.labels.count(c) for c in sorted(set(self.labels))]
        return len(self.rows), len(counts), max(counts) / min(counts)


def prepare(spec: DataSet, data_dir: str) -> Prepared:
    path = spec.file if os.path.isabs(spec.file) else os.path.join(data_dir, spec.file)
    header, rows = read_csv(path)
    if spec.long_tail:
        rows = long_tail_subsample(rows, header.index(LABEL), *spec.long_tail, seed=0)
    mask = categorical_mask(header, rows, spec.categorical)
    features = [name for name in header if name != LABEL]
    forced = features if spec.categorical == "all" else list(spec.categorical)
    return Prepared(spec.name, header, rows, mask, [n for n in forced if n in features])


_HGB_RESULTS: Dict[Tuple[str, int, str], Result] = {}
CACHE_FILE = "bench_result.json"


def file_digest(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def code_version(project_root: str) -> str:
    """The checkout's commit, with '+dirty' and a digest of the diff when it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project_root, capture_output=True, text=True).stdout

    head = git("rev-parse", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD")
    return head if not diff else f"{head}+dirty-{hashlib.sha256(diff.encode()).hexdigest()[:12]}"


def cached_result(model_dir: str, key: Dict[str, object]) -> Optional[Result]:
    """The result stored by an earlier run of the same command on the same rows and code, else None.

    Only successful runs are stored, so a failure always reruns.
    """
    try:
        with open(os.path.join(model_dir, CACHE_FILE)) as stream:
            stored = json.load(stream)
    except (OSError, ValueError):
        return None
    return Result(**stored["result"]) if stored.get("key") == key else None


def store_result(model_dir: str, key: Dict[str, object], result: Result) -> None:
    if result.error is None:
        with open(os.path.join(model_dir, CACHE_FILE), "w") as stream:
            json.dump({"key": key, "result": dataclasses.asdict(result)}, stream)


def run_case(data: Prepared, seed: int, recipe: str, epochs: int, work: str, *, on: str,
             extra_flags: Sequence[str], project_root: str = ROOT) -> Tuple[Result, Result]:
    """Ours (`recipe`) and HGB on one data set and seed; `on` is 'validation' (train rows ->
    validation rows) or 'test' (train + validation rows -> test rows)."""
    train, validation, test = stratified_split(data.labels, seed)
    fit_index = train if on == "validation" else np.concatenate([train, validation])
    eval_index = validation if on == "validation" else test
    fit_rows = [data.rows[i] for i in fit_index]
    eval_rows = [data.rows[i] for i in eval_index]
    case = os.path.join(work, f"{data.name}_s{seed}_{on}")
    os.makedirs(case, exist_ok=True)
    fit_csv, eval_csv = os.path.join(case, "fit.csv"), os.path.join(case, "eval.csv")
    write_csv(fit_csv, data.header, fit_rows)
    write_csv(eval_csv, data.header, eval_rows)
    flags = [f"--epochs={epochs}"] + expand(RECIPES[recipe], epochs) + list(extra_flags)
    if data.categorical_names:
        flags.append("--categorical_columns=" + ",".join(data.categorical_names))
    model_dir = os.path.join(case, "runs", recipe)
    cache_key = dict(flags=flags, seed=seed, fit=file_digest(fit_csv), eval=file_digest(eval_csv),
                     code=code_version(project_root))
    ours = cached_result(model_dir, cache_key)
    if ours is None:
        shutil.rmtree(model_dir, ignore_errors=True)  # a run directory left from before would resume
        ours = run_ours(fit_csv, eval_csv, model_dir, flags, seed, len(fit_rows), len(eval_rows),
                        project_root)
        store_result(model_dir, cache_key, ours)
    key = (data.name, seed, on)
    if key not in _HGB_RESULTS:  # the same rows and seed give the same model: fit once per split
        label = data.header.index(LABEL)
        encode = Encoder(data.header, fit_rows, data.mask)
        _HGB_RESULTS[key] = run_hgb(encode(fit_rows), [r[label] for r in fit_rows], encode(eval_rows),
                                    [r[label] for r in eval_rows], data.mask, seed)
    return ours, _HGB_RESULTS[key]


def median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def fmt(value: float, digits: int = 3) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def summarise(data: Prepared, ours: List[Result], hgb: List[Result]) -> Dict[str, object]:
    rows, classes, imbalance = data.facts()
    errors = sorted({r.error for r in ours if r.error})
    good = [r for r in ours if not r.error]
    return dict(dataset=data.name, rows=rows, classes=classes, imbalance=imbalance,
                ours_ba=median([r.balanced_accuracy for r in good]),
                hgb_ba=median([r.balanced_accuracy for r in hgb]),
                ours_worst=median([r.worst_recall for r in good]),
                hgb_worst=median([r.worst_recall for r in hgb]),
                ours_wall=median([r.wall_s for r in ours]), hgb_wall=median([r.wall_s for r in hgb]),
                ours_cpu=median([r.cpu_s for r in ours]), hgb_cpu=median([r.cpu_s for r in hgb]),
                ours_seeds=len(good), seeds=len(ours),
                ours_note=", ".join(sorted({r.note for r in good})) or "; ".join(errors),
                hgb_note=", ".join(r.note for r in hgb))


def table(title: str, summaries: List[Dict[str, object]]) -> str:
    lines = [f"### {title}", "",
             "| data set | rows | classes | imbalance | ours BA | HGB BA | ours worst recall | "
             "HGB worst recall | ours wall s | HGB wall s | ours CPU s | HGB CPU s | ours (decision) | HGB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in summaries:
        seeds = "" if s["ours_seeds"] == s["seeds"] else f" ({s['ours_seeds']}/{s['seeds']} seeds)"
        lines.append(
            f"| {s['dataset']} | {s['rows']} | {s['classes']} | {s['imbalance']:.1f} | "
            f"{fmt(s['ours_ba'])}{seeds} | {fmt(s['hgb_ba'])} | "
            f"{fmt(s['ours_worst'])} | {fmt(s['hgb_worst'])} | "
            f"{fmt(s['ours_wall'], 1)} | {fmt(s['hgb_wall'], 1)} | {fmt(s['ours_cpu'], 1)} | "
            f"{fmt(s['hgb_cpu'], 1)} | {s['ours_note']} | {s['hgb_note']} |")
    both = [s for s in summaries if not math.isnan(s["ours_ba"])]
    ba = [s["ours_ba"] - s["hgb_ba"] for s in both]
    worst = [s["ours_worst"] - s["hgb_worst"] for s in both]
    lines += ["", f"Median over the {len(both)} data sets both sides ran (of {len(summaries)}): "
              f"ours BA - HGB BA = {fmt(median(ba), 4)} (ours ahead on {sum(d > 0 for d in ba)}, behind on "
              f"{sum(d < 0 for d in ba)}); ours worst recall - HGB worst recall = {fmt(median(worst), 4)} "
              f"(ahead on {sum(d > 0 for d in worst)}, behind on {sum(d < 0 for d in worst)})."]
    failed = [s["dataset"] for s in summaries if math.isnan(s["ours_ba"])]
    if failed:
        lines.append(f"Ours failed on: {', '.join(failed)} (see the row's last-but-one column).")
    return "\n".join(lines) + "\n"


def score(summary: Dict[str, object]) -> float:
    return (summary["ours_ba"] + summary["ours_worst"]) / 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="Comma-separated names of DATASETS, or NAME=PATH.csv for another file.")
    parser.add_argument("--data_dir", default=DATA_DIR)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30, help="Our epochs (E of the recipes).")
    parser.add_argument("--recipes", default="default",
                        help=f"Comma-separated recipes of ours ({', '.join(RECIPES)}); with more than one, "
                             "the choice is made on the validation rows.")
    parser.add_argument("--test_only", action="store_true",
                        help="No search: run every recipe of --recipes on the test rows (for recipes "
                             "chosen beforehand on validation rows, e.g. by an earlier run).")
    parser.add_argument("--our_flags", default="", help="Space-separated extra flags of every run of ours.")
    parser.add_argument("--out", default=None, help="Markdown file for the tables.")
    parser.add_argument("--json_out", default=None, help="JSON file with every run's figures.")
    parser.add_argument("--work_dir", default=None, help="Where splits and runs go (default: a temp dir).")
    parser.add_argument("--project_root", default=ROOT,
                        help="Checkout whose `python -m trainer.main` runs (default: this script's).")
    parser.add_argument("--quick", action="store_true", help="One seed, 3 epochs, the default recipe.")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.recipes = "0", 3, "default"
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    specs = []
    for item in args.datasets.split(","):
        name, _, path = item.partition("=")
        if path:
            specs.append(DataSet(name, os.path.abspath(path)))
        elif name in DATASETS:
            specs.append(DATASETS[name])
        else:
            unknown.append(name)
    if unknown:
        parser.error(f"unknown recipes or data sets: {', '.join(unknown)} "
                     f"(recipes: {', '.join(RECIPES)}; data sets: {', '.join(DATASETS)} or NAME=PATH)")
    extra = args.our_flags.split()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_tabular_")
    started = time.perf_counter()
    prepared = [prepare(spec, args.data_dir) for spec in specs]
    warm_up_hgb()
    records: List[Dict[str, object]] = []
    command = " ".join(argv if argv is not None else sys.argv[1:])
    report = [f"Command: `python scripts/bench_tabular.py {command}`"
              f" — seeds {seeds}, E = {args.epochs} epochs; figures on test are medians over seeds.\n"]

    def run_all(recipe: str, on: str) -> List[Dict[str, object]]:
        summaries = []
        for data in prepared:
            ours, hgb = [], []
            for seed in seeds:
                o, h = run_case(data, seed, recipe, args.epochs, work, on=on, extra_flags=extra,
                                    project_root=args.project_root)
                ours.append(o)
                hgb.append(h)
                for side, r in (("ours", o), ("hgb", h)):
                    records.append(dict(dataset=data.name, seed=seed, recipe=recipe, on=on, side=side,
                                        **{k: v for k, v in r.__dict__.items()}))
                print(f"[{time.perf_counter() - started:7.1f}s] {on} {recipe} {data.name} seed {seed}: ours "
                      f"{fmt(o.balanced_accuracy)}/{fmt(o.worst_recall)} {o.error or o.note} "
                      f"({o.wall_s:.1f} s), HGB {fmt(h.balanced_accuracy)}/{fmt(h.worst_recall)} "
                      f"({h.wall_s:.1f} s)", file=sys.stderr, flush=True)
            summaries.append(summarise(data, ours, hgb))
        return summaries

    chosen = recipes[0]
    if len(recipes) > 1 and not args.test_only:
        search = {recipe: run_all(recipe, "validation") for recipe in recipes}
        ran = [i for i in range(len(prepared))
               if all(not math.isnan(search[r][i]["ours_ba"]) for r in recipes)]
        means = {r: (statistics.mean(score(search[r][i]) for i in ran) if ran else math.nan) for r in recipes}
        chosen = max(recipes, key=lambda r: -math.inf if math.isnan(means[r]) else means[r])
        lines = ["### Recipe search on the validation rows (train rows -> validation rows)", "",
                 "| recipe | flags | mean (BA + worst)/2 | median BA | median worst | median BA - HGB | "
                 "median worst - HGB |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in recipes:
            rows = [search[r][i] for i in ran]
            recipe_flags = " ".join(expand(RECIPES[r], args.epochs)) or "(CLI defaults)"
            lines.append(
                f"| {r} | `{recipe_flags}` | {fmt(means[r])} | "
                f"{fmt(median([s['ours_ba'] for s in rows]))} | "
                f"{fmt(median([s['ours_worst'] for s in rows]))} | "
                f"{fmt(median([s['ours_ba'] - s['hgb_ba'] for s in rows]), 4)} | "
                f"{fmt(median([s['ours_worst'] - s['hgb_worst'] for s in rows]), 4)} |")
        lines.append(f"\nScored on the {len(ran)} data sets every recipe ran; chosen: **{chosen}**.\n")
        report.append("\n".join(lines))
        for r in recipes:
            report.append(table(f"Validation rows, recipe {r}", search[r]))
    final = [chosen] + (["default"] if chosen != "default" and "default" in recipes else [])
    if args.test_only:
        final = recipes
    for position, recipe in enumerate(final, start=1):
        flags = " ".join([f"--epochs={args.epochs}"] + expand(RECIPES[recipe], args.epochs) + extra)
        title = f"Test rows: ours = recipe {recipe} (`{flags}`) vs HGB"
        report.insert(position, table(title, run_all(recipe, "test")))
    report.append(f"Total wall time {time.perf_counter() - started:.0f} s.\n")
    text = "\n".join(report)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as stream:
            stream.write(text)
    if args.json_out:
        with open(args.json_out, "w") as stream:
            json.dump(records, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
