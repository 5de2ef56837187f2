"""The training command (`python -m trainer.main`): check, build, resume or start, train, report, export.

Every check of the flags and the data happens before the first step; so does the refusal of a changed resume.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import tensorflow as tf
from absl import logging

from trainer.cli import app, build, fingerprint, report
from trainer.cli import config as config_lib
from trainer.cli.config import RunConfig
from trainer.cli.flag_groups import GROUPS
from trainer.export import export_saved_model
from trainer.json_files import write_json_atomically
from trainer.metrics import format_per_class_table

METRICS_FILENAME = "metrics.json"
USAGE = """Train a classifier on imbalanced data and report per-class metrics.

USAGE: python -m trainer.main --dataset=csv:data.csv --label_column=fault --model_dir=runs/faults [flags]

Writes checkpoints, TensorBoard events, metrics.json and the exported model under --model_dir; the
same command on the same --model_dir resumes (refused, before training, if its settings or data
changed: see --allow_config_change). Exit status: 0 done, 2 bad flags or data ("error: ..."),
3 a non-finite loss, 143 preempted after saving a checkpoint.
"""


def run_fingerprint(config: RunConfig, bundle: Any) -> Dict[str, Any]:
    """The fingerprint of a run: its compared config values and the facts of its data."""
    splits = {"train": bundle.train, "eval": bundle.eval, "validation": bundle.validation}
    data = fingerprint.data_facts(
        specs=(config.data.dataset, config.data.eval_dataset), class_names=bundle.class_names,
        class_counts={name: None if split is None else split.class_counts
                      for name, split in splits.items()},
        input_shape=bundle.train.input_shape, feature_names=getattr(bundle, "feature_names", None))
    return fingerprint.make_fingerprint(config.compared_values(), data)


def run(config: RunConfig) -> Dict[str, Any]:
    """Trains and evaluates as `config` says; returns the final metrics.

    Raises:
      UsageError, ArgumentError, InputDataError, ChangedRunError: before training starts.
      NonFiniteLossError, PreemptedError: during training (see `trainer.cli.errors`).
    """
    # TensorFlow's own INFO lines (saver internals) would drown the progress line.
    tf.get_logger().setLevel("WARNING")
    strategy = build.start_runtime(config)
    chief = build.chief(strategy)
    bundle = build.load_bundle(config)
    logging.info("Data: %s", bundle.description)
    config = config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                              bundle.validation is not None)
    model_dir = config.output.model_dir
    current = run_fingerprint(config, bundle)
    resume = fingerprint.check_resume(model_dir, current, config.output.allow_config_change,
                                      write=chief)

    parts = build.build(config, bundle, strategy,
                        changed=[difference.name for difference in resume.allowed])
    trainer = parts.trainer
    trainer.fit(parts.data.train, total_epochs=config.training.epochs,
                validation_data=parts.data.validation)

    logits, labels = trainer.collect_logits(parts.data.eval)
    evaluation = report.argmax_metrics(logits, labels)
    metrics = report.training_metrics(
        evaluation, class_names=bundle.class_names, trainer=trainer, rule=parts.rule,
        flag_values=config_lib.project_flag_values(), config_changes=resume.changes())
    if config.recall.calibrate:
        # One pass more over the held-out split, unless it is the evaluation data itself.
        held_out = (logits, labels) if parts.data.held_out is parts.data.eval \
            else trainer.collect_logits(parts.data.held_out)
        point = report.calibrate(trainer, config.recall, *held_out, save=chief)
        metrics["operating_point"] = report.operating_point_report(point, config.recall, logits, labels,
                                                                   evaluation)
    if chief:
        fingerprint.record_run(model_dir, current, resume)
        write_json_atomically(os.path.join(model_dir, METRICS_FILENAME), metrics)
        _export(config, bundle, trainer)
        print(format_per_class_table(evaluation, bundle.class_names))
        print(f"Wrote {os.path.join(model_dir, METRICS_FILENAME)}; "
              f"TensorBoard: tensorboard --logdir {model_dir}")
    return metrics


def _export(config: RunConfig, bundle: Any, trainer: Any) -> None:
    export_dir = config.output.resolved_export_dir
    if export_dir is None:
        return
    point = trainer.operating_point
    export_saved_model(trainer.model, export_dir, input_shape=bundle.train.input_shape,
                       class_names=bundle.class_names, operating_point=point,
                       metadata={"num_classes": bundle.num_classes, "dataset": config.data.dataset})
    logging.info("Exported the serving model to %s", export_dir)


def main(argv: Any = None) -> Dict[str, Any]:
    """Reads the parsed flags into a config and runs (the command `trainer.cli.app` calls)."""
    del argv  # positional arguments are refused by the flag parser
    return run(config_lib.from_flags())


COMMAND = app.Command(main=main, groups=GROUPS, usage=USAGE)
