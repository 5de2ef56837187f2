"""The training command for multi-label data (`--label_columns`): a sigmoid per label, a cut-off per label.

The flow of `trainer.cli.train` for labels that are not exclusive: the same checks before
training, resume (fingerprint), rules, controller and export, and what differs:

- the model ends in one logit per label and trains with `trainer.tasks.MultiLabelTask`
  (binary cross-entropy, `--loss=sigmoid_focal` or `--loss=asymmetric`); a per-class rule
  acts per label (`--reweighting=inverse_frequency` weighs each label's positives against its
  negatives);
- `--target_class=<label>[,<label>...] --target_recall=R[,R...]` chooses each named label's
  cut-off on the validation split (`trainer.decisions.per_label`); the other labels keep
  probability > 0.5;
- the report is per label (positives, average precision, recall, precision, F1 of the served
  cut-offs and of 0.5), on the eval split, and says what chose;
- the export serves per-label probabilities and decisions (`export_saved_model(multi_label=True)`).

Flags a multi-label run cannot honour are refused before anything runs (`config._NOT_MULTI_LABEL`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from losses.rules import serialize_rule
from trainer import data as data_lib
from trainer.cli import app, build, fingerprint, report
from trainer.cli.config import RunConfig, project_flag_values
from trainer.cli.errors import UsageError
from trainer.decisions.per_label import LabelThresholds, choose_label_thresholds
from trainer.export import export_saved_model
from trainer.json_files import write_json_atomically
from trainer.metrics import count_confusion_matrix, label_average_precision, per_label_metrics

METRICS_FILENAME = "metrics.json"
# The per-label lists of `per_label_metrics` that metrics.json and the table carry.
_PER_LABEL = ("recall", "precision", "f1")


def load_bundle(config: RunConfig) -> data_lib.DataBundle:
    """The multi-label data the config names (`trainer.data.load_multi_label_data`).

    Raises:
      InputDataError: naming the flag, file, row, column and value.
    """
    data = config.data
    return data_lib.load_multi_label_data(
        data.dataset, label_columns=data.label_columns, eval_dataset=data.eval_dataset,
        validation_split=data.validation_split, test_split=data.test_split, seed=config.training.seed,
        columns=data.column_options(), hold_out_validation=config.needs_held_out_split,
        weight_key=data.weight_key, channels_first=data.channels_first)


def with_label_targets(config: RunConfig, label_names: Sequence[str]) -> RunConfig:
    """`--target_class` (label names, or label indices 0..L-1) as the classes `2l + 1` ("with label l").

    Raises:
      UsageError: naming `--target_class` and listing the labels, for a value that is no label.
    """
    recall = config.recall
    if recall.target_class is None:
        return config
    targets = recall.target_class if isinstance(recall.target_class, tuple) else (recall.target_class,)
    names = [str(n) for n in label_names]
    classes = []
    for value in targets:
        if str(value) in names:
            label = names.index(str(value))
        elif isinstance(value, int) and 0 <= value < len(names):
            label = value
        else:
            raise UsageError(f"--target_class={value} is not a label of --label_columns "
                             f"({', '.join(names)}): give a label name or its index 0..{len(names) - 1}.")
        classes.append(2 * label + 1)
    target = tuple(classes) if isinstance(recall.target_class, tuple) else classes[0]
    return dataclasses.replace(config, recall=dataclasses.replace(recall, target_class=target))


def label_targets(config: RunConfig) -> Dict[int, float]:
    """{label index: target recall} of `--target_class`/`--target_recall` (after `with_label_targets`)."""
    return {(int(k) - 1) // 2: float(r) for k, r in config.recall.targets}


def _check_targets(targets: Dict[int, float], bundle: data_lib.DataBundle) -> None:
    """Every targeted label needs positives in the validation split that chooses its cut-off."""
    for label, _ in targets.items():
        if bundle.validation.class_counts[2 * label + 1] == 0:
            name = bundle.label_names[label]
            raise UsageError(f"--target_class={name}: label {name!r} has no positive row in the "
                             f"validation split ({bundle.validation.origin}), so no cut-off can be "
                             f"chosen for it: raise --validation_split, or drop the target.")


def label_results(logits: np.ndarray, labels: np.ndarray, decisions: np.ndarray,
                  label_names: Sequence[str]) -> Dict[str, Any]:
    """Per-label recall, precision and F1 of multi-hot `decisions` against `labels` (all `[N, L]`), and
    the aggregates of `trainer.metrics.per_label_metrics` (JSON-ready)."""
    num_labels = labels.shape[1]
    offset = 2 * np.arange(num_labels)
    matrix = count_confusion_matrix((labels + offset).ravel(), (decisions + offset).ravel(), 2 * num_labels)
    metrics = per_label_metrics(matrix, label_names)
    out: Dict[str, Any] = {key: [float(v) for v in metrics[key]] for key in _PER_LABEL}
    out["positives"] = [int(v) for v in metrics["positives"]]
    out["predicted_positives"] = [int(v) for v in decisions.sum(axis=0)]
    for key in ("hamming_accuracy", "balanced_accuracy", "macro_f1", "min_recall"):
        out[key] = float(metrics[key])
    return out


def _decide(point: Optional[LabelThresholds], logits: np.ndarray) -> np.ndarray:
    return (logits > 0).astype(np.int64) if point is None else point.decide(logits)


def describe_point(point: Optional[LabelThresholds]) -> str:
    """The served decision in words."""
    if point is None:
        return "probability > 0.5 for every label"
    chosen = [f"{name} (target recall {p.target_recall:g})"
              for name, p in zip(point.label_names, point.points) if p is not None]
    return (f"a cut-off chosen for {', '.join(chosen)}; probability > 0.5 for the other labels"
            if len(chosen) < point.num_labels else f"a cut-off chosen for {', '.join(chosen)}")


def format_label_table(served: Dict[str, Any], default: Dict[str, Any], average_precision: Sequence[float],
                       label_names: Sequence[str], *, decision: str, measured_on: str) -> str:
    """The end-of-run table: per label, positives, AP, the served decision's figures and those at 0.5."""
    width = max(8, *(len(n) for n in label_names))
    lines = [f"Per-label results, measured on {measured_on}.", f"Served: {decision}.",
             f"{'label':<{width}} {'positives':>9} {'AP':>6} {'recall':>7} {'prec.':>6} {'F1':>6}"
             f"   at p>0.5: {'recall':>6} {'prec.':>6}"]
    for j, name in enumerate(label_names):
        lines.append(f"{name:<{width}} {served['positives'][j]:>9,} {average_precision[j]:>6.3f} "
                     f"{served['recall'][j]:>7.3f} {served['precision'][j]:>6.3f} {served['f1'][j]:>6.3f}"
                     f"             {default['recall'][j]:>6.3f} {default['precision'][j]:>6.3f}")
    lines.append(f"macro F1 {served['macro_f1']:.3f} (at 0.5: {default['macro_f1']:.3f}); smallest "
                 f"recall {served['min_recall']:.3f} (at 0.5: {default['min_recall']:.3f}); Hamming "
                 f"accuracy {served['hamming_accuracy']:.3f}")
    return "\n".join(lines)


def run(config: RunConfig) -> Dict[str, Any]:
    """Trains a multi-label model as `config` says (`--label_columns`); returns the final metrics.

    Raises what `trainer.cli.train.run` raises, at the same points (every check before training).
    """
    tf.get_logger().setLevel("WARNING")  # TensorFlow's saver INFO lines would drown the progress
    timeline = app.Timeline()
    timeline.mark("run")
    strategy = build.start_runtime(config)
    chief = build.chief(strategy)
    bundle = load_bundle(config)
    logging.info("Data: %s", bundle.description)
    if bundle.schema is not None:
        logging.info("Features: %s", bundle.schema.describe(limit=100))
    config = with_label_targets(config, bundle.label_names)
    config = config.with_class_names(bundle.class_names)
    automatic_batch = config.training.batch_size is None
    config = config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                              bundle.validation is not None, num_train_examples=bundle.train.num_examples)
    if automatic_batch:
        logging.info("Batch size %d (automatic, from %d training rows; --batch_size sets it).",
                     config.training.batch_size, bundle.train.num_examples)
    targets = label_targets(config) if config.recall.calibrate else {}
    _check_targets(targets, bundle)
    logging.info("Multi-label run: %d labels (%s), a sigmoid each; no baseline comparison, report.html "
                 "or TensorBoard images (the per-label scalars are written).", len(bundle.label_names),
                 ", ".join(bundle.label_names))
    model_dir = config.output.model_dir
    current = fingerprint.run_fingerprint(config, bundle)
    resume = fingerprint.check_resume(model_dir, current, config.output.allow_config_change, write=chief)
    timeline.mark("data")
    parts = build.build(config, bundle, strategy, changed=[d.name for d in resume.allowed])
    trainer = parts.trainer
    timeline.mark("built")
    trainer.fit(parts.data.train, total_epochs=config.training.epochs,
                validation_data=parts.data.validation)
    timeline.mark("trained")

    label_names = list(bundle.label_names)
    chosen_on = None
    if targets:
        held_logits, held_labels = trainer.collect_logits(parts.data.held_out)
        trainer.operating_point = choose_label_thresholds(
            held_logits, held_labels, targets, label_names=label_names,
            confidence=config.recall.decision_confidence, estimator=config.recall.decision_estimator)
        chosen_on = report.describe_split(bundle.validation)
        if chief and model_dir:
            trainer.operating_point.save(model_dir)
    point = trainer.operating_point if isinstance(trainer.operating_point, LabelThresholds) else None
    logits, labels = trainer.collect_logits(parts.data.eval)
    measured_on = report.describe_split(bundle.eval)
    served = label_results(logits, labels, _decide(point, logits), label_names)
    default = label_results(logits, labels, _decide(None, logits), label_names)
    average_precision = [float(v) for v in label_average_precision(logits, labels)]
    decision = describe_point(point)
    metrics: Dict[str, Any] = {
        "task": "multi_label", "label_names": label_names,
        "label_columns": list(config.data.label_columns), "decision": decision,
        "measured_on": measured_on, **served, "average_precision": average_precision,
        "at_probability_0.5": default,
        "operating_point": None if point is None else {**point.to_dict(), "chosen_on": chosen_on},
        "class_names": list(bundle.class_names),
        "epoch": int(trainer.epoch.numpy()), "step": int(trainer.global_step.numpy()),
        "flags": project_flag_values(), "config_changes": resume.changes(),
        "reweighting": None if parts.rule is None else serialize_rule(parts.rule),
        "data_splits": bundle.splits_summary(), "batch_size": config.training.batch_size,
    }
    timeline.mark("evaluated")
    if chief:
        fingerprint.record_run(model_dir, current, resume)
        _export(config, bundle, trainer, point)
        timeline.mark("exported")
        print(format_label_table(served, default, average_precision, label_names, decision=decision,
                                 measured_on=measured_on + ("" if chosen_on is None else
                                                            f"; cut-offs chosen on {chosen_on}")))
        if model_dir:
            write_json_atomically(os.path.join(model_dir, METRICS_FILENAME), metrics)
            print(f"Wrote {os.path.join(model_dir, METRICS_FILENAME)}; "
                  f"TensorBoard: tensorboard --logdir {model_dir}")
    logging.info("%s.", timeline.line())
    return metrics


def _export(config: RunConfig, bundle: data_lib.DataBundle, trainer: Any,
            point: Optional[LabelThresholds]) -> None:
    export_dir = config.output.resolved_export_dir
    if export_dir is None:
        return
    export_saved_model(trainer.model, export_dir, input_shape=bundle.train.input_shape,
                       class_names=bundle.label_names, operating_point=point,
                       metadata={"num_labels": len(bundle.label_names), "dataset": config.data.dataset,
                                 "label_columns": list(config.data.label_columns)},
                       schema=bundle.schema, multi_label=True)
    logging.info("Exported the serving model to %s", export_dir)
