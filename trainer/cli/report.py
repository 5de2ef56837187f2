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


def describe_split(split: Any) -> str:
    """`'the <name> split (N rows: how it was made)'` of a `trainer.data.DataSplit`, for reports."""
    origin = getattr(split, "origin", "")
    return f"the {split.name} split ({int(split.num_examples):,} rows{': ' + origin if origin else ''})"


def describe_decision(point: Any, class_names: Sequence[str]) -> str:
    """What the served decision is, in words: argmax, a threshold or offsets on which class."""
    if point is None:
        return "argmax"
    target = getattr(point, "target_class", None)
    if target is not None:
        name = class_names[target] if target < len(class_names) else str(target)
        if getattr(point, "threshold", None) is not None:
            return f"threshold {point.threshold:.4g} on the probability of class {target} ({name})"
        return f"logit offset {point.offset:+.4g} on class {target} ({name})"
    return f"per-class logit offsets ({point.kind})"


def served_metrics(point: Any, logits: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
    """The metrics of the decisions the export serves (`point`, or the argmax when None)."""
    return decisions.decision_metrics(point, logits, labels)


def training_metrics(metrics: Mapping[str, Any], *, class_names: Sequence[str], trainer: Any, rule: Any,
                     flag_values: Mapping[str, Any],
                     config_changes: List[Dict[str, Any]],
                     argmax: Optional[Mapping[str, Any]] = None, decision: str = "argmax",
                     measured_on: str = "") -> Dict[str, Any]:
    """The payload of `<model_dir>/metrics.json` after training.

    The top-level metrics are those of the served decision (what the export
    does); `argmax` holds the plain argmax's on the same data, `decision`
    says what is served and `measured_on` which data every figure comes from.

    Args:
      metrics: Evaluation metrics of the served decision (`served_metrics`).
      class_names: Class names indexed by class.
      trainer: The trained Trainer (its epoch and step counters).
      rule: The reweighting rule as it ran, or None.
      flag_values: Every project flag by name.
      config_changes: The changes `--allow_config_change` let through, over the run's resumes.
      argmax: The argmax's metrics on the same data (None: the served decision is the argmax).
      decision: `describe_decision` of the served decision.
      measured_on: Which data the metrics were measured on (`describe_split`).
    """
    weights = None if rule is None else rule.class_weights()
    argmax = metrics if argmax is None else argmax
    return {
        **{key: metrics[key] for key in METRIC_KEYS},
        "decision": decision,
        "measured_on": measured_on,
        "argmax": {key: argmax[key] for key in METRIC_KEYS},
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

    The logits are the choosing data's: the validation split's, or the
    out-of-fold logits of the training rows (`--decision_folds`), never the
    reporting data's. Installs it in `trainer` (applied by `predict` and the export) and, with
    `save`, writes `<model_dir>/operating_point.json`.

    Args:
      trainer: The trained Trainer.
      recall: The recall settings.
      logits: `[N, K]` logits of the choosing data.
      labels: `[N]` its labels.
      save: Whether this process writes the run's files.
    """
    kind = recall.calibration_kind
    if kind == "worst_class":
        params = {"max_balanced_accuracy_drop": recall.max_balanced_accuracy_drop}
    else:
        params = {"target_class": recall.target_class, "target_recall": recall.target_recall,
                  "confidence": recall.decision_confidence, "estimator": recall.decision_estimator}
    point = decisions.calibrate(kind, logits, labels, **params)
    trainer.operating_point = point
    if save and trainer.model_dir:
        point.save(trainer.model_dir)
    return point


def operating_point_report(point: Any, recall: RecallConfig, logits: np.ndarray, labels: np.ndarray,
                           argmax: Mapping[str, Any], *, chosen_on: str = "the held-out split",
                           measured_on: str = "the evaluation data") -> Dict[str, Any]:
    """The point's dict plus its metrics on the evaluation logits next to the plain argmax's.

    Args:
      point: The calibrated operating point.
      recall: The recall settings it was calibrated for.
      logits: `[N, K]` evaluation logits.
      labels: `[N]` evaluation labels.
      argmax: `argmax_metrics(logits, labels)`.
      chosen_on: Which data chose the point (its `validation_*` figures come from it).
      measured_on: Which data the `eval_*` figures come from.
    """
    calibrated = decisions.decision_metrics(point, logits, labels)
    where = {"chosen_on": chosen_on, "measured_on": measured_on}
    if recall.calibration_kind == "worst_class":
        logging.info("Worst-class offsets chosen on %s (its smallest recall %.4f -> %.4f): "
                     "smallest recall %.4f, balanced accuracy %.4f on %s (argmax: %.4f, %.4f).",
                     chosen_on, point.argmax_validation_min_recall, point.validation_min_recall,
                     calibrated["min_recall"], calibrated["balanced_accuracy"], measured_on,
                     argmax["min_recall"], argmax["balanced_accuracy"])
        return {
            **point.to_dict(), **where,
            "eval_min_recall": calibrated["min_recall"],
            "eval_balanced_accuracy": calibrated["balanced_accuracy"],
            "eval_recall": [float(r) for r in calibrated["recall"]],
            "argmax_eval_min_recall": argmax["min_recall"],
            "argmax_eval_balanced_accuracy": argmax["balanced_accuracy"],
        }
    k = recall.target_class
    logging.info("Operating point (%s, offset %.3f) chosen on %s: class %d recall %.4f, "
                 "precision %.4f on %s (argmax: %.4f, %.4f).", point.kind, point.offset, chosen_on,
                 k, calibrated["recall"][k], calibrated["precision"][k], measured_on,
                 argmax["recall"][k], argmax["precision"][k])
    return {
        **point.to_dict(), **where,
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
