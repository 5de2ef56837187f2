"""The plain cross-entropy baseline a run is compared with (`--compare_baseline`).

Same data, model, epochs, batch size, learning rate and seed; no reweighting, no recall control,
no operating point. It trains under `<model_dir>/baseline` (its own checkpoints and TensorBoard
events, so a resumed run does not train it again, and TensorBoard shows the two side by side).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer.cli import build, report, tensorboard_run
from trainer.cli.config import RunConfig
from trainer.evaluation import collect_sample_weights

BASELINE_DIRECTORY = "baseline"


def wanted(config: RunConfig) -> bool:
    """Whether the run trains the baseline: as `--compare_baseline` says; by default only for the
    built-in `synthetic` data (seconds), and never when the run is itself the baseline."""
    plain = config.loss.loss == "cross_entropy" and config.loss.reweighting == "none"
    if config.output.compare_baseline is not None:
        return bool(config.output.compare_baseline) and not plain
    return config.data.dataset == "synthetic" and not plain


def baseline_config(config: RunConfig) -> RunConfig:
    """`config` with plain cross-entropy, nothing recall-driven, under `<model_dir>/baseline`."""
    loss = dataclasses.replace(config.loss, loss="cross_entropy", reweighting="none", class_weights=None)
    recall = dataclasses.replace(
        config.recall, target_class=None, target_recall=None, monitor=None,
        early_stopping_patience=None, stop_at_recall=None, reduce_lr_patience=None, calibrate=False,
        decision_folds=0, calibrate_probabilities=False, cost_matrix=None)
    output = dataclasses.replace(config.output,
                                 model_dir=os.path.join(config.output.model_dir, BASELINE_DIRECTORY),
                                 export_dir="none", verbosity=0, compare_baseline=False)
    return dataclasses.replace(config, loss=loss, recall=recall, output=output)


def train_baseline(config: RunConfig, bundle: Any, strategy: tf.distribute.Strategy) -> Dict[str, Any]:
    """Trains (or resumes) the baseline and returns its argmax metrics on the evaluation data."""
    plain = baseline_config(config)
    parts = build.build(plain, bundle, strategy)
    parts.trainer.fit(parts.data.train, total_epochs=config.training.epochs,
                      validation_data=parts.data.validation)
    logits, labels = parts.trainer.collect_logits(parts.data.eval)
    weights = collect_sample_weights(parts.data.eval) if plain.data.weighted_metrics else None
    metrics = report.argmax_metrics(logits, labels, weights)
    if parts.chief:
        tensorboard_run.write_run_end(
            plain.output.model_dir, step=int(parts.trainer.global_step.numpy()), served=metrics,
            argmax=metrics, class_names=bundle.class_names, decision="argmax",
            measured_on=report.describe_split(bundle.eval))
    return metrics


def _worst(metrics: Dict[str, Any], class_names: Sequence[str]) -> tuple:
    recall = np.asarray(metrics["recall"], np.float64)
    support = np.asarray(metrics["support"])
    scored = np.where(support > 0, recall, np.inf)
    k = int(np.argmin(scored))
    return float(recall[k]), str(class_names[k])


def comparison(recipe: str, ours: Dict[str, Any], baseline: Dict[str, Any],
               class_names: Sequence[str], measured_on: str) -> Dict[str, Any]:
    """The facts of the comparison (for metrics.json): each side's worst class and balanced accuracy."""
    out = {"measured_on": measured_on}
    for name, metrics in (("run", ours), ("cross_entropy", baseline)):
        recall, worst = _worst(metrics, class_names)
        out[name] = {"recipe": recipe if name == "run" else "plain cross-entropy",
                     "worst_class": worst, "worst_class_recall": recall,
                     "balanced_accuracy": float(metrics["balanced_accuracy"])}
    return out


def format_comparison(facts: Dict[str, Any]) -> str:
    """A short table a newcomer reads: worst-class recall and balanced accuracy, both sides."""
    rows = [("", "worst-class recall", "balanced accuracy")]
    for key in ("run", "cross_entropy"):
        side = facts[key]
        name = side["worst_class"]
        shown = f"class {name}" if name.isdigit() else name
        rows.append((side["recipe"], f"{side['worst_class_recall']:.2f} ({shown})",
                     f"{side['balanced_accuracy']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"Compared with plain cross-entropy on the same data, model, epochs and seed "
             f"({facts['measured_on']}):"]
    lines += ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines)


def next_steps(config: RunConfig, facts: Optional[Dict[str, Any]], class_names: Sequence[str],
               report_path: Optional[str]) -> str:
    """The commands to try next: a recall target on the worst class, TensorBoard, the report."""
    model_dir = config.output.model_dir
    worst = facts["run"]["worst_class"] if facts else class_names[-1]
    parent = os.path.dirname(os.path.abspath(model_dir)) or "."
    lines = ["Next:"]
    if config.recall.target_recall is None:
        data = config.data
        read = "".join(f" --{name}={value}" for name, value, default in (
            ("label_column", data.label_column, "label"), ("ignore_label", data.ignore_label, None),
            ("exclude_columns", ",".join(data.exclude_columns or ()), "")) if value != default)
        lines.append(f"  catch one class at a recall you choose: python -m trainer.main "
                     f"--dataset={data.dataset}{read} --target_class={worst} --target_recall=0.9 "
                     f"--reweighting=recall_target --model_dir={os.path.join(parent, 'target')}")
    lines.append(f"  compare runs in TensorBoard: tensorboard --logdir {parent}")
    if report_path:
        lines.append(f"  open the report: {report_path}")
    return "\n".join(lines)
