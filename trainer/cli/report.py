"""What the commands report: metrics.json, the calibrated operating point and its metrics, evaluation.md.

The training report reads the evaluation logits once (`Trainer.collect_logits`); every figure comes from them.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from losses.compose import Compose
from losses.deferred import DeferredReweighting
from losses.equalization import EqualizationV2
from losses.rules import ClassWeights, TrainingContext, serialize_rule
from trainer import decisions
from trainer.cli.config import RecallConfig

# The metrics.json keys of the evaluation metrics (per_class_metrics and its confusion matrix).
METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "min_recall", "recall", "precision", "f1",
               "support", "confusion_matrix")


def argmax_metrics(logits: np.ndarray, labels: np.ndarray,
                   sample_weight: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """The plain argmax's per-class metrics and confusion matrix on labelled logits (cells sum
    `sample_weight` when given: `--weighted_metrics`)."""
    return decisions.decision_metrics(None, logits, labels, sample_weight)


def describe_split(split: Any) -> str:
    """`'the <name> split (N rows: how it was made)'` of a `trainer.data.DataSplit`, for reports."""
    origin = getattr(split, "origin", "")
    return f"the {split.name} split ({int(split.num_examples):,} rows{': ' + origin if origin else ''})"


def describe_decision(point: Any, class_names: Sequence[str]) -> str:
    """What the served decision is, in words: argmax, a threshold or offsets on which class."""
    if point is None:
        return "argmax"
    if getattr(point, "kind", None) == decisions.CostPoint.kind:
        probabilities = "the plain softmax" if point.calibration is None else "calibrated probabilities"
        return f"least expected cost under --cost_matrix ({probabilities})"
    if getattr(point, "kind", None) == decisions.MultiTargetPoint.kind:
        parts = []
        for target in point.targets:
            words = _class_words(target.target_class, class_names)
            parts.append(f"{target.offset:+.4g} on {words} for recall {target.target_recall:g}"
                         + ("" if target.feasible else f", served for {target.served_recall:.3f}"))
        conflict = "" if point.feasible else " (targets in conflict: metrics.json operating_point.conflict)"
        return "logit offsets " + "; ".join(parts) + conflict
    target = getattr(point, "target_class", None)
    if target is not None:
        words = _class_words(target, class_names)
        if getattr(point, "threshold", None) is not None:
            return f"threshold {point.threshold:.4g} on the probability of {words}"
        return f"logit offset {point.offset:+.4g} on {words}"
    return f"per-class logit offsets ({point.kind})"


def _class_words(k: int, class_names: Sequence[str]) -> str:
    """`'class k (name)'`, or `'class k'` when the name is the index itself (`'9'`)."""
    name = str(class_names[k]) if k < len(class_names) else str(k)
    return f"class {k}" if name == str(k) else f"class {k} ({name})"


def served_targets(point: Any) -> Optional[Dict[int, float]]:
    """Target recall by class of a point with several recall targets (the table's column), else None."""
    if getattr(point, "kind", None) != decisions.MultiTargetPoint.kind:
        return None
    return {target.target_class: target.target_recall for target in point.targets}


def served_metrics(point: Any, logits: np.ndarray, labels: np.ndarray,
                   sample_weight: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """The metrics of the decisions the export serves (`point`, or the argmax when None; cells
    sum `sample_weight` when given)."""
    return decisions.decision_metrics(point, logits, labels, sample_weight)


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
              save: bool, calibration: Optional[decisions.Calibration] = None) -> Any:
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
      calibration: The probabilities' calibration (fitted on the same logits),
        which the expected-cost decision (`--cost_matrix`) weighs; None: the
        plain softmax.
    """
    kind = recall.calibration_kind
    if kind == decisions.CostPoint.kind:
        point = decisions.choose_cost_point(logits, labels, cost_matrix=recall.cost_matrix.values,
                                            calibration=calibration)
        trainer.operating_point = point
        if save and trainer.model_dir:
            point.save(trainer.model_dir)
        return point
    if kind == "worst_class":
        params = {"max_balanced_accuracy_drop": recall.max_balanced_accuracy_drop}
    elif kind == "multi_target":
        params = {"target_classes": [k for k, _ in recall.targets],
                  "target_recalls": [r for _, r in recall.targets],
                  "confidence": recall.decision_confidence, "estimator": recall.decision_estimator}
    else:
        params = {"target_class": recall.target_class, "target_recall": recall.target_recall,
                  "confidence": recall.decision_confidence, "estimator": recall.decision_estimator}
        if getattr(getattr(trainer, "task", None), "name", None) == "binary":
            # One logit z: both kinds are the same cut-off on z; served as a threshold on the
            # probability sigmoid(z) of the target class.
            params["method"] = "threshold"
    point = decisions.calibrate(kind, logits, labels, **params)
    trainer.operating_point = point
    if save and trainer.model_dir:
        point.save(trainer.model_dir)
    return point


def operating_point_report(point: Any, recall: RecallConfig, logits: np.ndarray, labels: np.ndarray,
                           argmax: Mapping[str, Any], *, chosen_on: str = "the held-out split",
                           measured_on: str = "the evaluation data",
                           class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The point's dict plus its metrics on the evaluation logits next to the plain argmax's.

    Args:
      point: The calibrated operating point.
      recall: The recall settings it was calibrated for.
      logits: `[N, K]` evaluation logits.
      labels: `[N]` evaluation labels.
      argmax: `argmax_metrics(logits, labels)`.
      chosen_on: Which data chose the point (its `validation_*` figures come from it).
      measured_on: Which data the `eval_*` figures come from.
      class_names: Names indexed by class, for the sentences (None: indices).
    """
    calibrated = decisions.decision_metrics(point, logits, labels)
    where = {"chosen_on": chosen_on, "measured_on": measured_on}
    if recall.calibration_kind == "multi_target":
        return _multi_target_report(point, calibrated, argmax, where, class_names)
    if recall.calibration_kind == decisions.CostPoint.kind:
        matrix = np.asarray(point.cost_matrix)
        decided = point.decide(logits)
        report = {
            **point.to_dict(), **where,
            "eval_cost": decisions.measured_cost(labels, decided, matrix),
            "eval_expected_cost": float(np.mean(np.min(
                decisions.expected_costs(point.probabilities(logits), matrix), axis=1))),
            "argmax_eval_cost": decisions.measured_cost(labels, np.asarray(logits).argmax(axis=1), matrix),
            "eval_recall": [float(r) for r in calibrated["recall"]],
            "eval_balanced_accuracy": calibrated["balanced_accuracy"],
            "argmax_eval_recall": [float(r) for r in argmax["recall"]],
        }
        logging.info("Expected-cost decision (costs chosen on %s): mean cost %.4g (expected %.4g) on %s; "
                     "argmax %.4g.", chosen_on, report["eval_cost"], report["eval_expected_cost"],
                     measured_on, report["argmax_eval_cost"])
        return report
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


def _multi_target_report(point: Any, calibrated: Mapping[str, Any], argmax: Mapping[str, Any],
                         where: Mapping[str, str], class_names: Optional[Sequence[str]]) -> Dict[str, Any]:
    """metrics.json's `operating_point` for several targets: each target's figures, the conflict if any."""
    payload = {**point.to_dict(), **where}
    targets = []
    for target in payload["targets"]:
        k = target["target_class"]
        targets.append({**target, "eval_recall": float(calibrated["recall"][k]),
                        "eval_precision": float(calibrated["precision"][k]),
                        "argmax_eval_recall": float(argmax["recall"][k]),
                        "argmax_eval_precision": float(argmax["precision"][k])})
        logging.info("Target class %d: recall %.4f, precision %.4f on %s (target %g; chosen on %s: recall "
                     "%.4f, precision %.4f; argmax: %.4f, %.4f).", k, calibrated["recall"][k],
                     calibrated["precision"][k], where["measured_on"], target["target_recall"],
                     where["chosen_on"], target["validation_recall"], target["validation_precision"],
                     argmax["recall"][k], argmax["precision"][k])
    conflict = decisions.describe_conflict(point, class_names)
    if conflict is not None:
        logging.warning("%s", conflict)
    return {**payload, "targets": targets, "conflict": conflict,
            "eval_balanced_accuracy": calibrated["balanced_accuracy"],
            "argmax_eval_balanced_accuracy": argmax["balanced_accuracy"]}


def _final_context(trainer: Any) -> TrainingContext:
    """The training context of the last epoch trained (the rule's state then)."""
    epoch = max(int(trainer.epoch.numpy()) - 1, 0)
    return TrainingContext(epoch=tf.constant(epoch, tf.int64), step=tf.constant(
        int(trainer.global_step.numpy()), tf.int64))


def _gradient_weights(rule: Any, epoch: int) -> Optional[np.ndarray]:
    """The per-class weights `rule` scaled the gradient by at `epoch` (None: it scales none by class).

    Class weights (`ClassWeights` and its subclasses, the recall-target controller
    with `adjust='weights'`: its final weights), their product under `Compose`,
    a deferred rule's once active. Not EQL v2 (its weights are one-vs-all
    gradient magnitudes, no prior shift), not a rule that acts through logit
    offsets (margins: `prior_shift` reads those).
    """
    if rule is None or isinstance(rule, EqualizationV2):
        return None
    if isinstance(rule, DeferredReweighting):
        return _gradient_weights(rule.rule, epoch) if epoch >= rule.start_epoch else None
    if isinstance(rule, Compose):
        product = None
        for inner in rule.rules:
            weights = _gradient_weights(inner, epoch)
            if weights is not None:
                product = weights if product is None else product * weights
        return product
    if isinstance(rule, ClassWeights) and getattr(rule, "adjust", "weights") == "weights":
        weights = rule.class_weights()
        return None if weights is None else np.asarray(weights, np.float64)
    return None


def prior_shift(trainer: Any, rule: Any) -> Dict[str, Any]:
    """The prior shift the training introduced, as `fit_temperature`'s arguments, and what it is.

    - `loss_offsets`: the logit shift the training loss saw, added before the
      temperature: a logit-adjusted or balanced-softmax loss's `logit_shift()`
      (`tau log prior`, `log n`) plus the rule's training `logit_offsets` at the
      last epoch (recall-target margins, `-log w`).
    - `prior_correction`: `-log w` of the per-class weights the rule scaled the
      gradient by (`_gradient_weights`; a moving controller's final weights, an
      approximation).
    No correction for other losses (focal, LDAM, weighted recall, sigmoid): they
    shift no known prior; the temperature alone is fitted.

    Returns:
      `{'loss_offsets', 'prior_correction', 'undoes'}` (lists or None; `undoes`
      in words).
    """
    undone: List[str] = []
    offsets = None
    shift = getattr(trainer.loss, "logit_shift", None)
    if callable(shift):
        offsets = np.asarray(shift(), np.float64)
        undone.append(f"the logit shift of the loss ({type(trainer.loss).__name__})")
    context = _final_context(trainer)
    margins = None if rule is None else rule.logit_offsets(context)
    if margins is not None:
        margins = np.asarray(margins, np.float64)
        offsets = margins if offsets is None else offsets + margins
        undone.append("the rule's training logit offsets (margins)")
    weights = _gradient_weights(rule, int(context.epoch.numpy()))
    correction = None if weights is None else decisions.class_weight_correction(weights)
    if correction is not None:
        undone.append("the rule's class weights on the gradient (-log w)")
    return {"loss_offsets": None if offsets is None else [float(v) for v in offsets],
            "prior_correction": None if correction is None else [float(v) for v in correction],
            "undoes": "; ".join(undone) if undone else "nothing (no known prior shift in the training)"}


def fit_calibration(trainer: Any, rule: Any, logits: np.ndarray, labels: np.ndarray, *,
                    save: bool) -> Tuple[decisions.Calibration, Dict[str, Any]]:
    """Temperature scaling on the choosing data's logits after undoing the training's prior shift.

    Args:
      trainer: The trained Trainer (its loss, and `model_dir` to save in).
      rule: The reweighting rule as it ran, or None.
      logits: `[N, K]` logits of the choosing data (never the reporting data).
      labels: `[N]` its labels.
      save: Whether to write `<model_dir>/calibration.json`.

    Returns:
      The calibration and `prior_shift(trainer, rule)`.
    """
    shift = prior_shift(trainer, rule)
    calibration = decisions.fit_temperature(logits, labels, loss_offsets=shift["loss_offsets"],
                                            prior_correction=shift["prior_correction"])
    if save and trainer.model_dir:
        calibration.save(trainer.model_dir)
    return calibration, shift


def calibration_report(calibration: decisions.Calibration, shift: Mapping[str, Any], logits: np.ndarray,
                       labels: np.ndarray, *, fitted_on: str, measured_on: str) -> Dict[str, Any]:
    """metrics.json's `calibration`: the fit, and NLL / ECEs on the evaluation logits with and without it."""
    calibrated = decisions.calibration_metrics(logits, labels, calibration)
    raw = decisions.calibration_metrics(logits, labels)
    logging.info("Temperature %.4g fitted on %s (undoing %s): ECE %.4f (uncalibrated %.4f) on %s.",
                 calibration.temperature, fitted_on, shift["undoes"], calibrated["ece"], raw["ece"],
                 measured_on)
    return {**calibration.to_dict(), "undoes": shift["undoes"], "eval": calibrated,
            "eval_uncalibrated": raw, "fitted_on": fitted_on, "measured_on": measured_on}


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
        support = float(metrics['support'][k])
        shown = f"{int(support)}" if support == int(support) else f"{support:.6g}"  # weighted: a sum
        lines.append(f"| {name} | {shown} | {metrics['recall'][k]:.4f} | "
                     f"{metrics['precision'][k]:.4f} | {metrics['f1'][k]:.4f} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(class_names) + " |",
              "|---|" + "---:|" * len(class_names)]
    for k, row in enumerate(metrics["confusion_matrix"]):
        lines.append(f"| {class_names[k]} | " + " | ".join(
            str(int(v)) if float(v) == int(v) else f"{float(v):.6g}" for v in row) + " |")
    return "\n".join(lines) + "\n"
