"""Recall-target benchmark on long-tailed Fashion-MNIST (issue 4's measured goal).

Per seed, on `fashion_mnist_lt` (IR 100; training pool minus a fixed 20%
stratified held-out split; evaluated on the balanced 10k test set), the same
CNN (trainer/models.py), Adam 1e-3, batch 128, 15 epochs, three runs:

  ce            plain cross-entropy. Its shirt operating point is a post-hoc
                threshold on p(shirt) chosen on the held-out split to reach
                the target recall (what a user would do without this issue).
  target_class  `RecallTarget(target_class=6, target_recall=0.9)` driven by
                its controller on the held-out split, then the calibrated
                operating point (logit offset or threshold, chosen on the
                held-out split).
  worst_class   `RecallTarget(mode='worst_class')`, argmax decisions.

Optional (`--methods`), the weighted logit-adjusted loss of Narasimhan and
Menon (NeurIPS 2021): margins from the prior in the loss, weights from the
controller (whose base weights are then uniform, so the prior counts once):

  la               `LogitAdjustedCrossentropy(tau)` alone (the reference).
  worst_class_la   la + `RecallTarget(mode='worst_class', loss=la)`.
  target_class_la  la + `RecallTarget(target_class=6, ..., loss=la)`, then
                   the calibrated operating point.

  worst_class_margins  `RecallTarget(mode='worst_class', adjust='margins')`:
                   the controller's weights as margins in the loss (with
                   the inverse-frequency base: the logit-adjusted loss
                   plus the controller's multipliers).

Every row is also measured under the worst-class operating point
(`trainer.worst_class_point`): per-class logit offsets chosen on the
held-out split to raise its smallest recall without lowering its balanced
accuracy (the default; `*_offsets` in the JSON), and without that bound
(`*_offsets_unbounded`); `--recall_target_mode=worst_class` in the CLI
applies the default ones.

Every row also gives the held-out split's worst-class recall and balanced
accuracy (`validation_*` in the JSON): choose among configurations with
those, not with the test set.

Every run must have taken `epochs x batches per epoch` optimizer steps (the
optimizer's `iterations` and the Trainer's `global_step`; `train_steps` in
the JSON), or the script stops.

Reported on the test set: balanced accuracy, worst-class recall (and class),
shirt recall and precision (argmax and calibrated), and, for the comparison
at equal recall, the best precision any threshold or logit offset on the CE
model reaches at the recall our calibrated model reached (chosen on the test
set itself: an optimistic baseline, so the comparison is conservative).

Usage:
  TF_CPP_MIN_LOG_LEVEL=2 python scripts/bench_recall_target.py --seeds 0 1 2 \
      --json_out /tmp/bench_recall_target.json
  python scripts/bench_recall_target.py --smoke   # 1 epoch on a slice: checks it runs
  # Seeds in separate processes, one table:
  python scripts/bench_recall_target.py --merge a.json b.json

The figures measured with it are in the README ("Recall targets", "Measured").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from callbacks import RecallTarget  # noqa: E402
from callbacks.recall_target import DEFAULT_STEP_SIZE  # noqa: E402
from losses import LogitAdjustedCrossentropy, warn_if_prior_counted_twice  # noqa: E402
from trainer import Trainer  # noqa: E402
from trainer import data as data_lib  # noqa: E402
from trainer.decisions import choose_operating_point, choose_worst_class_offsets  # noqa: E402
from trainer.decisions import decision_metrics as operating_point_metrics  # noqa: E402
from trainer.determinism import seed_everything  # noqa: E402
from trainer.models import build_model  # noqa: E402

METHODS = ("ce", "target_class", "worst_class", "la", "worst_class_la", "target_class_la",
           "worst_class_margins")
DEFAULT_METHODS = ("ce", "target_class", "worst_class")
CALIBRATED = ("ce", "target_class", "target_class_la")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--imbalance_ratio", type=float, default=100.0)
    parser.add_argument("--target_class", type=int, default=6)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--confidence", type=float, default=0.9,
                        help="Calibration: one-sided confidence of the recall constraint "
                             "(0.5: point estimate). Used for CE and ours alike.")
    parser.add_argument("--step_size", type=float, default=None,
                        help="RecallTarget step size (default: the rule's, 1 with weights and "
                             "0.5 with margins).")
    parser.add_argument("--max_weight", type=float, default=10.0, help="RecallTarget cap.")
    parser.add_argument("--smoothing", type=float, default=0.5,
                        help="RecallTarget EMA factor of the measured miss rates.")
    parser.add_argument("--tau", type=float, default=1.0,
                        help="Logit-adjustment temperature of the *_la methods.")
    parser.add_argument("--adjust", choices=("weights", "margins"), default="weights",
                        help="RecallTarget: scale the gradient or shift the loss's logits "
                             "(methods named *_margins always shift).")
    parser.add_argument("--no_prior_correction", action="store_true",
                        help="RecallTarget base weights 1 instead of inverse frequency.")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--json_out", default=None)
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="Print one table from the rows of earlier --json_out files.")
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 2,000 training examples.")
    return parser.parse_args(argv)


class IncompleteTraining(RuntimeError):
    """A run took other than the expected number of steps: its row would mislead."""


def smoke_batches(args: argparse.Namespace) -> int:
    """Training batches per epoch with `--smoke` (2,000 examples)."""
    return 2000 // args.batch_size


def expected_steps(bundle: Any, args: argparse.Namespace) -> int:
    """Optimizer steps `--epochs` epochs of the training split take (the last batch may be partial)."""
    per_epoch = math.ceil(bundle.train.num_examples / args.batch_size)
    if args.smoke:
        per_epoch = min(per_epoch, smoke_batches(args))
    return args.epochs * per_epoch


def checked_steps(method: str, trainer: Trainer, bundle: Any, args: argparse.Namespace) -> int:
    """The steps `trainer` trained; raises IncompleteTraining unless they are `expected_steps`."""
    expected = expected_steps(bundle, args)
    counters = {"optimizer.iterations": int(trainer.optimizer.iterations.numpy()),
                "trainer.global_step": int(trainer.global_step.numpy())}
    wrong = {name: count for name, count in counters.items() if count != expected}
    if wrong:
        raise IncompleteTraining(f"{method}: expected {expected} training steps, but "
                                 + ", ".join(f"{name} is {count}" for name, count in wrong.items()))
    return expected


def train(method: str, bundle: Any, seed: int, args: argparse.Namespace) -> Trainer:
    held_out = bundle.validation.dataset(args.batch_size, shuffle=False, seed=seed)
    counts = None if args.no_prior_correction else bundle.train.class_counts
    rule, callbacks, loss = None, [], None
    if method.endswith("la"):
        loss = LogitAdjustedCrossentropy(bundle.train.class_counts, tau=args.tau)
    controller = dict(class_counts=counts, step_size=args.step_size, max_weight=args.max_weight,
                      smoothing=args.smoothing, loss=loss,
                      adjust="margins" if method.endswith("margins") else args.adjust)
    if method.startswith("target_class"):
        rule = RecallTarget(target_class=args.target_class, target_recall=args.target_recall,
                            **controller)
    elif method.startswith("worst_class"):
        rule = RecallTarget(mode="worst_class", **controller)
    if loss is not None and warn_if_prior_counted_twice(loss, rule):
        raise AssertionError(f"{method}: the prior is counted twice.")
    if rule is not None:
        callbacks.append(rule.controller(validation_data=held_out))

    def model():
        return build_model("cnn", bundle.train.input_shape, bundle.num_classes,
                           feature_mean=bundle.feature_mean, feature_variance=bundle.feature_variance)

    seed_everything(seed)
    trainer = Trainer(model=model, optimizer=lambda: keras.optimizers.Adam(args.learning_rate),
                      loss=loss, reweighting=rule, num_classes=bundle.num_classes,
                      steps_per_loop=100, callbacks=callbacks)
    train_data = bundle.train.dataset(args.batch_size, shuffle=True, seed=seed)
    if args.smoke:
        train_data = train_data.take(smoke_batches(args))
    trainer.fit(train_data, epochs=args.epochs)
    return trainer


def measure(method: str, trainer: Trainer, bundle: Any, seed: int,
            args: argparse.Namespace) -> Dict[str, Any]:
    t = args.target_class
    held_out = bundle.validation.dataset(args.batch_size, shuffle=False, seed=seed)
    test = bundle.eval.dataset(args.batch_size, shuffle=False, seed=seed)
    val_logits, val_labels = trainer.collect_logits(held_out)
    test_logits, test_labels = trainer.collect_logits(test)
    argmax = operating_point_metrics(None, test_logits, test_labels)
    val_argmax = operating_point_metrics(None, val_logits, val_labels)
    worst = int(np.nanargmin(argmax["recall"]))
    row: Dict[str, Any] = {
        "method": method, "seed": seed,
        "balanced_accuracy": argmax["balanced_accuracy"], "worst_recall": argmax["min_recall"],
        "worst_class": worst, "target_recall": float(argmax["recall"][t]),
        "target_precision": float(argmax["precision"][t]),
        "recall": [float(r) for r in argmax["recall"]],
        "validation_target_recall": float(val_argmax["recall"][t]),
        "validation_worst_recall": val_argmax["min_recall"],
        "validation_balanced_accuracy": val_argmax["balanced_accuracy"],
    }
    # The default (no held-out balanced accuracy given up) and unbounded offsets.
    for suffix, drop in (("_offsets", 0.0), ("_offsets_unbounded", None)):
        offsets = choose_worst_class_offsets(val_logits, val_labels,
                                             max_balanced_accuracy_drop=drop)
        offset_metrics = operating_point_metrics(offsets, test_logits, test_labels)
        row.update({"worst_recall" + suffix: offset_metrics["min_recall"],
                    "balanced_accuracy" + suffix: offset_metrics["balanced_accuracy"],
                    "recall" + suffix: [float(r) for r in offset_metrics["recall"]],
                    "validation_worst_recall" + suffix: offsets.validation_min_recall,
                    "validation_balanced_accuracy" + suffix: offsets.validation_balanced_accuracy,
                    "class" + suffix: list(offsets.class_offsets)})
    if method in CALIBRATED:
        kind = "threshold" if method == "ce" else "auto"
        point = choose_operating_point(val_logits, val_labels, target_class=t,
                                       target_recall=args.target_recall, method=kind,
                                       confidence=args.confidence)
        calibrated = operating_point_metrics(point, test_logits, test_labels)
        row.update({"calibrated_kind": point.kind,
                    "calibrated_validation_recall": point.validation_recall,
                    "calibrated_recall": calibrated["target_recall"],
                    "calibrated_precision": calibrated["target_precision"],
                    "calibrated_balanced_accuracy": calibrated["balanced_accuracy"]})
        row["test_logits"] = test_logits  # for the equal-recall comparison; dropped from JSON
        row["test_labels"] = test_labels
    return row


def equal_recall_precision(ce_row: Dict[str, Any], recall: float, target_class: int) -> float:
    """Best test precision of a threshold or logit offset on the CE model at >= `recall`."""
    point = choose_operating_point(ce_row["test_logits"], ce_row["test_labels"],
                                   target_class=target_class, target_recall=max(recall, 1e-6),
                                   confidence=0.5)
    return point.validation_precision


def summarise(rows: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    def fmt(values):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    lines = [
        f"fashion_mnist_lt IR {args.imbalance_ratio:g}, seeds {args.seeds}, {args.epochs} epochs, "
        f"batch {args.batch_size}, Adam {args.learning_rate:g}; test set (balanced); "
        f"target class {args.target_class}, target recall {args.target_recall} "
        f"(calibrated at confidence {args.confidence})",
        "",
        "| method | balanced acc. | worst-class recall | shirt recall (argmax) | shirt precision "
        "(argmax) | shirt recall (calibrated) | shirt precision (calibrated) | CE precision at "
        "the same recall | held-out worst-class recall | held-out balanced acc. | worst-class recall "
        "(worst-class offsets) | balanced acc. (worst-class offsets) | held-out worst-class recall "
        "(offsets) | held-out balanced acc. (offsets) | worst-class recall (unbounded offsets) | "
        "balanced acc. (unbounded offsets) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        equal = [r.get("ce_precision_at_same_recall") for r in mine]
        worst = ", ".join(str(r["worst_class"]) for r in mine)
        lines.append(
            f"| {method} | {fmt([r['balanced_accuracy'] for r in mine])} | "
            f"{fmt([r['worst_recall'] for r in mine])} (class {worst}) | "
            f"{fmt([r['target_recall'] for r in mine])} | {fmt([r['target_precision'] for r in mine])} | "
            f"{fmt([r.get('calibrated_recall') for r in mine])} | "
            f"{fmt([r.get('calibrated_precision') for r in mine])} | {fmt(equal)} | "
            f"{fmt([r['validation_worst_recall'] for r in mine])} | "
            f"{fmt([r['validation_balanced_accuracy'] for r in mine])} | "
            f"{fmt([r.get('worst_recall_offsets') for r in mine])} | "
            f"{fmt([r.get('balanced_accuracy_offsets') for r in mine])} | "
            f"{fmt([r.get('validation_worst_recall_offsets') for r in mine])} | "
            f"{fmt([r.get('validation_balanced_accuracy_offsets') for r in mine])} | "
            f"{fmt([r.get('worst_recall_offsets_unbounded') for r in mine])} | "
            f"{fmt([r.get('balanced_accuracy_offsets_unbounded') for r in mine])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        rows = []
        for path in args.merge:
            with open(path) as stream:
                saved = json.load(stream)
            step = saved["args"]["step_size"]
            for row in saved["rows"]:  # controllers at a non-default step get their own rows
                margins = row["method"].endswith("margins") or saved["args"]["adjust"] == "margins"
                default = DEFAULT_STEP_SIZE["margins" if margins else "weights"]
                controlled = row["method"].startswith(("target_class", "worst_class"))
                if controlled and step is not None and step != default:
                    row["method"] = f"{row['method']} (step {step:g})"
            rows.extend(saved["rows"])
        methods = list(dict.fromkeys(row["method"] for row in rows))
        args = argparse.Namespace(**{**saved["args"], "methods": methods,
                                     "seeds": sorted({row["seed"] for row in rows})})
        print(summarise(rows, args))
        return 0
    if args.smoke:
        args.epochs = 1
    rows: List[Dict[str, Any]] = []
    for seed in args.seeds:
        bundle = data_lib.load_data("fashion_mnist_lt", imbalance_ratio=args.imbalance_ratio,
                                    data_dir=args.data_dir, seed=seed)
        by_method = {}
        for method in args.methods:
            started = time.time()
            trainer = train(method, bundle, seed, args)
            row = measure(method, trainer, bundle, seed, args)
            row["train_steps"] = checked_steps(method, trainer, bundle, args)
            row["seconds"] = time.time() - started
            if method != "ce" and trainer.reweighting is not None:
                row["class_weights"] = [float(w) for w in trainer.reweighting.class_weights().numpy()]
            by_method[method] = row
            rows.append(row)
            print(f"seed {seed} {method}: balanced accuracy {row['balanced_accuracy']:.4f}, "
                  f"worst recall {row['worst_recall']:.4f} (class {row['worst_class']}), "
                  f"class {args.target_class} recall {row['target_recall']:.4f} precision "
                  f"{row['target_precision']:.4f}"
                  + (f"; calibrated ({row['calibrated_kind']}) recall {row['calibrated_recall']:.4f} "
                     f"precision {row['calibrated_precision']:.4f}" if "calibrated_recall" in row else "")
                  + f"; worst-class offsets: worst recall {row['worst_recall_offsets']:.4f}, "
                    f"balanced accuracy {row['balanced_accuracy_offsets']:.4f}"
                  + f" [{row['seconds']:.0f} s]", flush=True)
        for name in ("target_class", "target_class_la"):
            if "ce" not in by_method or name not in by_method:
                continue
            ours = by_method[name]
            ours["ce_precision_at_same_recall"] = equal_recall_precision(
                by_method["ce"], ours["calibrated_recall"], args.target_class)
            print(f"seed {seed} {name}: CE's best precision at recall >= "
                  f"{ours['calibrated_recall']:.4f}: {ours['ce_precision_at_same_recall']:.4f}",
                  flush=True)
        for row in by_method.values():
            row.pop("test_logits", None)
            row.pop("test_labels", None)
    table = summarise(rows, args)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as stream:
            json.dump({"args": vars(args), "rows": rows, "table": table}, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
