"""Quality benchmark on long-tailed Fashion-MNIST (issue 3, "Quality benchmark").

Data: `fashion_mnist_lt` — the Fashion-MNIST training set subsampled per class
to `int(6000 * IR ** (-c / 9))` images (seeded by the run's seed), evaluated
on the balanced 10k test set. Training uses the WHOLE long-tailed pool: the
data is loaded with `load_data('fashion_mnist_lt', eval_dataset='fashion_mnist_lt')`,
which trains on the entire subsample (no held-out validation split is carved
out of it, so the 60 images of the rarest class at IR 100 all train) and
evaluates on the balanced test set. Nothing is tuned on the test set; it is
only reported. Data is loaded once per (IR, seed).

Every method trains the same CNN (`trainer.models.build_cnn`:
conv32-pool-conv64-pool-dense128, with a `Normalization` layer holding the
training pool's mean/variance), Adam 1e-3, batch 128, `--epochs` epochs, on the
same shuffled pipeline (seeded by the run's seed), in this process, after
`keras.backend.clear_session()` and `trainer.determinism.seed_everything(seed)`.
Every run must have taken `epochs x batches per epoch` optimizer steps (the
optimizer's `iterations`, and the Trainer's `global_step`), or the script stops;
the count is recorded as `train_steps`.

Methods (`--methods`):
  keras_ce            Keras `model.fit`, SparseCategoricalCrossentropy(from_logits=True).
  keras_class_weight  Keras `model.fit(class_weight=...)`, inverse class frequency
                      normalised to mean 1 over classes (w_c = (1/n_c) / mean_k(1/n_k)).
  keras_focal         Keras `model.fit`, CategoricalFocalCrossentropy(from_logits=True)
                      with one-hot labels and Keras's defaults (alpha=0.25, gamma=2).
  cross_entropy       Trainer, cross-entropy.
  posthoc_la          The `cross_entropy` model's test logits plus the post-hoc logit
                      adjustment `logit_adjustment_offsets(counts, tau=1)` (-tau log
                      prior). No extra training: computed from the cross_entropy run.
  focal               Trainer, SparseFocalCrossentropy(gamma=2, alpha=None).
  sigmoid_focal       Trainer, SigmoidFocalCrossentropy(gamma=2, alpha=None), one-vs-all.
  logit_adjusted      Trainer, LogitAdjustedCrossentropy(counts, tau=1).
  balanced_softmax    Trainer, BalancedSoftmaxCrossentropy(counts).
  ldam                Trainer, LDAMCrossentropy(counts, max_margin=0.5, scale=1):
                      scale 1 because the CNN has an ordinary (unnormalised) dense head;
                      the paper's scale 30 assumes cosine logits (see the loss docstring).
                      Plain LDAM, without DRW.
  inverse_frequency   Trainer, cross-entropy + ClassWeights.inverse_frequency (mean 1).
  effective_number    Trainer, cross-entropy + ClassWeights.effective_number(beta=0.9999).
  drw                 Trainer, cross-entropy + DeferredReweighting(effective_number
                      beta 0.9999, start_epoch = round(2/3 * epochs), zero-based;
                      10 of 15); `--drw_rule` picks the rule.
  eqlv2               Trainer, sigmoid cross-entropy (SigmoidFocalCrossentropy with gamma 0,
                      alpha None: one-vs-all BCE summed over classes, the loss EQL v2 is
                      defined for) + EqualizationV2(gamma=12, mu=0.8, alpha=4). On softmax
                      cross-entropy the rule suppresses the head classes' negative
                      gradients and training collapses (the README has the figure).

Reported on the test set (argmax decisions): balanced accuracy (mean over classes
of the per-class recall; mean ± population std over seeds), worst-class recall
(mean over seeds), recall of the rarest class 9 (mean over seeds), seeds.

Each finished run is appended as one JSON line to `--results`; a rerun skips runs
whose key (method, IR, seed, epochs, max_train_examples, max_eval_examples) is
already there, so an interrupted benchmark resumes. The table is printed from
all results in the file (`--table_only`: without training).

Usage:
  python scripts/bench_quality.py --imbalance_ratios=100 --seeds=0,1,2 \
      --markdown_out=runs/bench_quality/table.md
  python scripts/bench_quality.py --table_only --markdown_out=runs/bench_quality/table.md

The figures measured with it are in the README ("Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# TensorFlow, Keras and the framework are imported on first use (`_tf`), so that
# `--table_only` and a rerun with nothing left to train start in a fraction of a second.
keras = tf = losses = Trainer = data_lib = build_cnn = seed_everything = None


def _tf() -> None:
    global keras, tf, losses, Trainer, data_lib, build_cnn, seed_everything
    if keras is not None:
        return
    import keras as keras_module
    import tensorflow as tf_module

    import losses as losses_module
    from trainer import Trainer as trainer_class
    from trainer import data as data_module
    from trainer.determinism import seed_everything as seed_function
    from trainer.models import build_cnn as build_cnn_function
    keras, tf, losses, Trainer = keras_module, tf_module, losses_module, trainer_class
    data_lib, build_cnn, seed_everything = data_module, build_cnn_function, seed_function

RAREST_CLASS = 9
KERAS_METHODS = ("keras_ce", "keras_class_weight", "keras_focal")
OUR_METHODS = ("cross_entropy", "posthoc_la", "focal", "sigmoid_focal", "logit_adjusted",
               "balanced_softmax", "ldam", "inverse_frequency", "effective_number", "drw",
               "eqlv2")
METHODS = KERAS_METHODS + OUR_METHODS
LABELS = {
    "keras_ce": "Keras `fit`, cross-entropy",
    "keras_class_weight": "Keras `fit`, `class_weight` (inverse freq., mean 1)",
    "keras_focal": "Keras `fit`, `CategoricalFocalCrossentropy`",
    "cross_entropy": "Trainer, cross_entropy",
    "posthoc_la": "Trainer, cross_entropy + post-hoc logit adjustment (tau 1)",
    "focal": "Trainer, focal (gamma 2)",
    "sigmoid_focal": "Trainer, sigmoid_focal (gamma 2)",
    "logit_adjusted": "Trainer, logit_adjusted (tau 1)",
    "balanced_softmax": "Trainer, balanced_softmax",
    "ldam": "Trainer, ldam (max margin 0.5, scale 1)",
    "inverse_frequency": "Trainer, inverse_frequency",
    "effective_number": "Trainer, effective_number (beta 0.9999)",
    "drw": "Trainer, drw",
    "eqlv2": "Trainer, eqlv2 (sigmoid cross-entropy)",
}


def _csv(kind):
    def parse(text: str):
        return [kind(v) for v in text.split(",") if v.strip()]
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imbalance_ratios", type=_csv(float), default=[100.0, 10.0],
                        help="Comma-separated imbalance ratios (default 100,10).")
    parser.add_argument("--seeds", type=_csv(int), default=[0, 1, 2],
                        help="Comma-separated seeds (default 0,1,2).")
    parser.add_argument("--methods", type=_csv(str), default=list(METHODS),
                        help=f"Comma-separated subset of: {','.join(METHODS)}.")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=1.0,
                        help="logit_adjusted and posthoc_la temperature.")
    parser.add_argument("--beta", type=float, default=0.9999, help="effective_number / drw beta.")
    parser.add_argument("--drw_start_epoch", type=int, default=None,
                        help="Zero-based; default round(2/3 * epochs).")
    parser.add_argument("--drw_rule", default="effective_number",
                        choices=("effective_number", "inverse_frequency"))
    parser.add_argument("--max_train_examples", type=int, default=None,
                        help="Train on only the first ceil(N / batch) batches of each shuffled "
                             "epoch (smoke tests; the loss priors still use the full pool's counts).")
    parser.add_argument("--max_eval_examples", type=int, default=None,
                        help="Evaluate on only the first N test examples (smoke tests).")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--results", default="runs/bench_quality/results.jsonl")
    parser.add_argument("--markdown_out", default=None)
    parser.add_argument("--table_only", action="store_true",
                        help="Print the table from --results without training.")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    if args.drw_start_epoch is None:
        args.drw_start_epoch = int(round(2 * args.epochs / 3))
    return args


# ----------------------------------------------------------------------------- results file

def run_key(method: str, imbalance_ratio: float, seed: int, args_or_row) -> Tuple:
    get = (args_or_row.get if isinstance(args_or_row, dict)
           else lambda k: getattr(args_or_row, k))
    return (method, float(imbalance_ratio), int(seed), int(get("epochs")),
            get("max_train_examples"), get("max_eval_examples"))


def read_results(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption
    return rows


def append_result(path: str, row: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- metrics

def metrics_from_logits(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> Dict[str, Any]:
    predictions = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels).astype(np.int64)
    recall = []
    for c in range(num_classes):
        members = labels == c
        recall.append(float((predictions[members] == c).mean()) if members.any() else float("nan"))
    recall = np.asarray(recall)
    return {"balanced_accuracy": float(np.nanmean(recall)),
            "accuracy": float((predictions == labels).mean()),
            "worst_recall": float(np.nanmin(recall)),
            "worst_class": int(np.nanargmin(recall)),
            "rarest_recall": float(recall[RAREST_CLASS]),
            "recall": [round(float(r), 4) for r in recall]}


# ----------------------------------------------------------------------------- training

class Data:
    """One (IR, seed): the long-tailed pool (train) and the balanced test set (eval)."""

    def __init__(self, imbalance_ratio: float, seed: int, args: argparse.Namespace):
        _tf()
        self.bundle = data_lib.load_data("fashion_mnist_lt", eval_dataset="fashion_mnist_lt",
                                         imbalance_ratio=imbalance_ratio, data_dir=args.data_dir,
                                         seed=seed)
        self.counts = np.asarray(self.bundle.train.class_counts, np.int64)
        self.num_classes = self.bundle.num_classes
        self.seed = seed
        self.args = args
        test = self.bundle.eval.dataset(1024, shuffle=False, seed=0)
        if args.max_eval_examples:
            test = test.unbatch().take(args.max_eval_examples).batch(1024)
        self.test = test
        self.test_features = test.map(lambda x, y: x)
        self.test_labels = np.concatenate([y.numpy() for _, y in test])

    def train_dataset(self) -> "tf.data.Dataset":
        ds = self.bundle.train.dataset(self.args.batch_size, shuffle=True, seed=self.seed)
        if self.args.max_train_examples:
            ds = ds.take(math.ceil(self.args.max_train_examples / self.args.batch_size))
        return ds

    def expected_steps(self) -> int:
        """Optimizer steps `--epochs` epochs of `train_dataset()` take (the last batch may be partial)."""
        per_epoch = math.ceil(self.bundle.train.num_examples / self.args.batch_size)
        if self.args.max_train_examples:
            per_epoch = min(per_epoch, math.ceil(self.args.max_train_examples / self.args.batch_size))
        return self.args.epochs * per_epoch

    def model(self) -> "keras.Model":
        return build_cnn(self.bundle.train.input_shape, self.num_classes,
                         feature_mean=self.bundle.feature_mean,
                         feature_variance=self.bundle.feature_variance)


class IncompleteTraining(RuntimeError):
    """A run took other than the expected number of steps: its row would mislead."""


def check_steps(method: str, counters: Dict[str, int], expected: int) -> int:
    """Returns `expected` if every counter in `counters` equals it; raises IncompleteTraining if not."""
    wrong = {name: count for name, count in counters.items() if count != expected}
    if wrong:
        raise IncompleteTraining(f"{method}: expected {expected} training steps, but "
                                 + ", ".join(f"{name} is {count}" for name, count in wrong.items()))
    return expected


def inverse_frequency_mean_one(counts: np.ndarray) -> np.ndarray:
    inverse = 1.0 / counts.astype(np.float64)
    return inverse / inverse.mean()


def train_keras(method: str, data: Data, args: argparse.Namespace) -> Tuple[np.ndarray, int]:
    """Plain `model.fit`; returns the test logits and the steps it trained."""
    keras.backend.clear_session()
    seed_everything(data.seed)
    model = data.model()
    train = data.train_dataset()
    class_weight = None
    if method == "keras_focal":
        k = data.num_classes
        train = train.map(lambda x, y: (x, tf.one_hot(y, k)))
        loss = keras.losses.CategoricalFocalCrossentropy(from_logits=True)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if method == "keras_class_weight":
            class_weight = {c: float(w) for c, w in
                            enumerate(inverse_frequency_mean_one(data.counts))}
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss)
    model.fit(train, epochs=args.epochs, class_weight=class_weight, verbose=0)
    steps = check_steps(method, {"optimizer.iterations": int(model.optimizer.iterations.numpy())},
                        data.expected_steps())
    return model.predict(data.test_features, verbose=0), steps


def our_loss_and_rule(method: str, data: Data, args: argparse.Namespace):
    counts, k = data.counts, data.num_classes
    loss_name = method if method in losses.LOSS_NAMES else "cross_entropy"
    loss = losses.make_loss(loss_name, class_counts=counts, num_classes=k, gamma=2.0,
                            tau=args.tau, alpha=None, max_margin=0.5, scale=1.0, reduction=None)
    if method == "eqlv2":  # EQL v2 is a one-vs-all (sigmoid) method.
        loss = losses.make_loss("sigmoid_focal", class_counts=counts, num_classes=k, gamma=0.0,
                                alpha=None, reduction=None)
    rule = None
    if method in ("inverse_frequency", "effective_number", "drw", "eqlv2"):
        rule = losses.make_rule(method, num_classes=k, class_counts=counts, beta=args.beta,
                                drw_start_epoch=args.drw_start_epoch, drw_rule=args.drw_rule)
    return loss, rule


def train_ours(method: str, data: Data, args: argparse.Namespace) -> Tuple["Trainer", int]:
    """Trains with the Trainer; returns it and the steps it trained."""
    keras.backend.clear_session()
    seed_everything(data.seed)
    loss, rule = our_loss_and_rule(method, data, args)
    trainer = Trainer(model=data.model, optimizer=lambda: keras.optimizers.Adam(args.learning_rate),
                      loss=loss, reweighting=rule, num_classes=data.num_classes,
                      steps_per_loop=1000)
    trainer.fit(data.train_dataset(), epochs=args.epochs)
    steps = check_steps(method, {"optimizer.iterations": int(trainer.optimizer.iterations.numpy()),
                                 "trainer.global_step": int(trainer.global_step.numpy())},
                        data.expected_steps())
    return trainer, steps


def collect_test_logits(trainer: "Trainer", data: Data) -> np.ndarray:
    """The trained model's test logits, in the order of `data.test_labels`."""
    logits, labels = trainer.collect_logits(data.test)
    if not np.array_equal(labels, data.test_labels):
        raise AssertionError("collect_logits returned the test labels in another order.")
    return logits


def run_one(method: str, data: Data,
            args: argparse.Namespace) -> Tuple[List[Tuple[str, np.ndarray]], int]:
    """Trains `method`.

    Returns:
      [(row method, test logits)] (cross_entropy also gives posthoc_la), and
      the steps trained.
    """
    if method in KERAS_METHODS:
        logits, steps = train_keras(method, data, args)
        return [(method, logits)], steps
    trainer, steps = train_ours("cross_entropy" if method == "posthoc_la" else method, data, args)
    logits = collect_test_logits(trainer, data)
    if method in ("cross_entropy", "posthoc_la"):
        offsets = losses.logit_adjustment_offsets(data.counts, tau=args.tau)
        return [("cross_entropy", logits), ("posthoc_la", logits + offsets)], steps
    return [(method, logits)], steps


def benchmark(args: argparse.Namespace) -> None:
    done = {run_key(r["method"], r["imbalance_ratio"], r["seed"], r)
            for r in read_results(args.results)}
    for imbalance_ratio in args.imbalance_ratios:
        for seed in args.seeds:
            todo = [m for m in args.methods
                    if run_key(m, imbalance_ratio, seed, args) not in done]
            # posthoc_la comes from the cross_entropy run: train it once for both.
            if "posthoc_la" in todo and "cross_entropy" in todo:
                todo.remove("posthoc_la")
            if not todo:
                continue
            data = Data(imbalance_ratio, seed, args)
            print(f"# IR {imbalance_ratio:g} seed {seed}: {data.bundle.description}", flush=True)
            for method in todo:
                started = time.time()
                outputs, steps = run_one(method, data, args)
                seconds = time.time() - started
                for row_method, logits in outputs:
                    key = run_key(row_method, imbalance_ratio, seed, args)
                    if key in done or row_method not in args.methods:
                        continue
                    row = {"method": row_method, "imbalance_ratio": float(imbalance_ratio),
                           "seed": int(seed), "epochs": args.epochs,
                           "max_train_examples": args.max_train_examples,
                           "max_eval_examples": args.max_eval_examples,
                           "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                           "train_examples": int(data.counts.sum()),
                           "class_counts": data.counts.tolist(), "train_steps": steps,
                           "seconds": round(seconds if row_method != "posthoc_la" else 0.0, 1),
                           **metrics_from_logits(logits, data.test_labels, data.num_classes)}
                    if row_method == "drw":
                        row.update(drw_start_epoch=args.drw_start_epoch, drw_rule=args.drw_rule)
                    append_result(args.results, row)
                    done.add(key)
                    print(f"IR {imbalance_ratio:g} seed {seed} {row_method}: balanced accuracy "
                          f"{row['balanced_accuracy']:.4f}, worst recall {row['worst_recall']:.4f} "
                          f"(class {row['worst_class']}), class {RAREST_CLASS} recall "
                          f"{row['rarest_recall']:.4f}, {seconds:.0f} s", flush=True)


# ----------------------------------------------------------------------------- table

def table(rows: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    lines: List[str] = []
    ratios = sorted({r["imbalance_ratio"] for r in rows}, reverse=True)
    for ratio in ratios:
        for epochs in sorted({r["epochs"] for r in rows if r["imbalance_ratio"] == ratio}):
            mine = [r for r in rows if r["imbalance_ratio"] == ratio and r["epochs"] == epochs]
            limits = sorted({(r.get("max_train_examples"), r.get("max_eval_examples"))
                             for r in mine}, key=str)
            for max_train, max_eval in limits:
                group = [r for r in mine if (r.get("max_train_examples"),
                                             r.get("max_eval_examples")) == (max_train, max_eval)]
                seeds = sorted({r["seed"] for r in group})
                subsample = ""
                if max_train or max_eval:
                    subsample = f"; SUBSAMPLED (train <= {max_train}, eval <= {max_eval})"
                lines += [
                    f"### fashion_mnist_lt, IR {ratio:g}, {epochs} epochs, seeds "
                    f"{','.join(map(str, seeds))}{subsample}",
                    "",
                    f"Training: the whole long-tailed pool ({group[0]['train_examples']:,} "
                    f"images); test: balanced 10k test set. CNN conv32-pool-conv64-pool-dense128, "
                    f"Adam {group[0]['learning_rate']:g}, batch {group[0]['batch_size']}. "
                    "Mean ± population std over seeds.",
                    "",
                    "| method | balanced accuracy | worst-class recall | class 9 recall | seeds |",
                    "|---|---|---|---|---|",
                ]
                for method in METHODS:
                    runs = [r for r in group if r["method"] == method]
                    if not runs:
                        continue
                    bal = np.array([r["balanced_accuracy"] for r in runs])
                    worst = np.mean([r["worst_recall"] for r in runs])
                    rare = np.mean([r["rarest_recall"] for r in runs])
                    lines.append(f"| {LABELS[method]} | {bal.mean():.3f} ± {bal.std():.3f} | "
                                 f"{worst:.3f} | {rare:.3f} | {len(runs)} |")
                lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.table_only:
        benchmark(args)
    markdown = table(read_results(args.results), args)
    print(markdown)
    if args.markdown_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown_out)), exist_ok=True)
        with open(args.markdown_out, "w") as f:
            f.write(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
