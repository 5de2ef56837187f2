"""What the commands report: metrics.json, the calibrated operating point and its metrics, evaluation.md.

The training report reads the evaluation logits once (`Trainer.collect_logits`); every figure comes from them.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from absl import logging

from losses.rules import serialize_rule
from trainer import decisions
from trainer.cli.config import RecallConfig

# The metrics.json keys of the evaluation metrics (per_class_metrics and its confusion matrix).
METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "min_recall", "recall", "precision", "f1",
               "support", "confusion_matrix")


def argmax_metrics(logits: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
    """The plain argmax's per-class metrics and confusion matrix on labelled logits."""
    return decisions.decision_metrics(None, logits, labels)


def training_metrics(metrics: Mapping[str, Any], *, class_names: Sequence[str], trainer: Any, rule: Any,
                     flag_values: Mapping[str, Any],
                     config_changes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The payload of `<model_dir>/metrics.json` after training.

    Args:
      metrics: Evaluation metrics (`argmax_metrics`).
      class_names: Class names indexed by class.
      trainer: The trained Trainer (its epoch and step counters).
      rule: The reweighting rule as it ran, or None.
      flag_values: Every project flag by name.
      config_changes: The changes `--allow_config_change` let through, over the run's resumes.
    """
    weights = None if rule is None else rule.class_weights()
    return {
        **{key: metrics[key] for key in METRIC_KEYS},
        "class_names": [str(name) for name in class_names],
        "epoch": int(trainer.epoch.numpy()), "step": int(trainer.global_step.numpy()),
        "flags": dict(flag_values),
        # The rule as it ran (defaults resolved) and its final per-class weights.
        "reweighting": None if rule is None else serialize_rule(rule),
        "final_class_weights": None if weights is None else [float(w) for w in np.asarray(weights)],
        "config_changes": list(config_changes),
    }


def calibrate(trainer: Any, recall: RecallConfig, logits: np.ndarray, labels: np.ndarray, *,
              save: bool) -> Any:
    """Chooses the operating point `recall.calibration_kind` names on the held-out split's logits.

    Installs it in `trainer` (applied by `predict` and the export) and, with
    `save`, writes `<model_dir>/operating_point.json`.

    Args:
      trainer: The trained Trainer.
      recall: The recall settings.
      logits: `[N, K]` logits of the held-out split.
      labels: `[N]` its labels.
      save: Whether this process writes the run's files.
    """
    kind = recall.calibration_kind
    if kind == "worst_class":
        params = {"max_balanced_accuracy_drop": recall.max_balanced_accuracy_drop}
    else:
        params = {"target_class": recall.target_class, "target_recall": recall.target_recall}
    point = decisions.calibrate(kind, logits, labels, **params)
    trainer.operating_point = point
    if save and trainer.model_dir:
        point.save(trainer.model_dir)
    return point


def operating_point_report(point: Any, recall: RecallConfig, logits: np.ndarray, labels: np.ndarray,
                           argmax: Mapping[str, Any]) -> Dict[str, Any]:
    """The point's dict plus its metrics on the evaluation logits next to the plain argmax's.

    Args:
      point: The calibrated operating point.
      recall: The recall settings it was calibrated for.
      logits: `[N, K]` evaluation logits.
      labels: `[N]` evaluation labels.
      argmax: `argmax_metrics(logits, labels)`.
    """
    calibrated = decisions.decision_metrics(point, logits, labels)
    if recall.calibration_kind == "worst_class":
        logging.info("Worst-class offsets chosen on the held-out split (its smallest recall "
                     "%.4f -> %.4f): smallest recall %.4f, balanced accuracy %.4f on the "
                     "evaluation data (argmax: %.4f, %.4f).",
                     point.argmax_validation_min_recall, point.validation_min_recall,
                     calibrated["min_recall"], calibrated["balanced_accuracy"],
                     argmax["min_recall"], argmax["balanced_accuracy"])
        return {
            **point.to_dict(),
            "eval_min_recall": calibrated["min_recall"],
            "eval_balanced_accuracy": calibrated["balanced_accuracy"],
            "eval_recall": [float(r) for r in calibrated["recall"]],
            "argmax_eval_min_recall": argmax["min_recall"],
            "argmax_eval_balanced_accuracy": argmax["balanced_accuracy"],
        }
    k = recall.target_class
    logging.info("Operating point (%s, offset %.3f) chosen on the held-out split: class %d "
                 "recall %.4f, precision %.4f on the evaluation data (argmax: %.4f, %.4f).",
                 point.kind, point.offset, k, calibrated["recall"][k], calibrated["precision"][k],
                 argmax["recall"][k], argmax["precision"][k])
    return {
        **point.to_dict(),
        "eval_recall": float(calibrated["recall"][k]),
        "eval_precision": float(calibrated["precision"][k]),
        "eval_balanced_accuracy": calibrated["balanced_accuracy"],
        "argmax_eval_recall": float(argmax["recall"][k]),
        "argmax_eval_precision": float(argmax["precision"][k]),
    }


def markdown_report(metrics: Mapping[str, Any], class_names: Sequence[str], *, source: str,
                    operating_point: Optional[Mapping[str, Any]]) -> str:
    """Renders an evaluation as Markdown: summary, per-class table, confusion matrix."""
    lines = [f"# Evaluation of {source}", "",
             f"- accuracy: {metrics['accuracy']:.4f}",
             f"- balanced accuracy: {metrics['balanced_accuracy']:.4f}",
             f"- macro-F1: {metrics['macro_f1']:.4f}",
             f"- minimum recall: {metrics['min_recall']:.4f}",
             f"- operating point: {json.dumps(operating_point) if operating_point else 'argmax'}",
             "", "| class | support | recall | precision | F1 |", "|---|---:|---:|---:|---:|"]
    for k, name in enumerate(class_names):
        lines.append(f"| {name} | {int(metrics['support'][k])} | {metrics['recall'][k]:.4f} | "
                     f"{metrics['precision'][k]:.4f} | {metrics['f1'][k]:.4f} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(class_names) + " |",
              "|---|" + "---:|" * len(class_names)]
    for k, row in enumerate(metrics["confusion_matrix"]):
        lines.append(f"| {class_names[k]} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"
