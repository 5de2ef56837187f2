"""The training command (`python -m trainer.main`): check, build, resume or start, train, report, export.

Every check of the flags and the data happens before the first step; so does the refusal of a changed resume.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer import cross_fit, decisions, fold_ensemble, reporting
from trainer.checks import ArgumentError
from trainer.cli import (
    app,
    baseline,
    build,
    cost_matrix,
    decision_folds,
    fingerprint,
    html_report,
    multi_label_train,
    report,
    tensorboard_run,
)
from trainer.cli import config as config_lib
from trainer.cli.config import RunConfig
from trainer.cli.errors import UsageError, flags_named
from trainer.cli.flag_groups import GROUPS
from trainer.distribute import is_multi_worker
from trainer.evaluation import collect_sample_weights
from trainer.export import export_saved_model
from trainer.json_files import read_json, to_jsonable, write_json_atomically
from trainer.metrics import format_decision_table

METRICS_FILENAME = "metrics.json"
USAGE = """Train a classifier on imbalanced data and report per-class metrics.

USAGE: python -m trainer.main --dataset=csv:data.csv --label_column=fault --model_dir=runs/faults [flags]

Writes checkpoints, TensorBoard events, metrics.json, report.html and the exported model under
--model_dir (with --decision_folds, the fold models under <model_dir>/folds too); the same command on the same
--model_dir resumes (refused, before training, if its settings or data changed: see
--allow_config_change), or, on a run it finished, prints that run's summary again. Exit status:
0 done, 2 bad flags or data ("error: ..."), 3 a non-finite loss, 143 preempted after saving a checkpoint.
"""


def run(config: RunConfig) -> Dict[str, Any]:
    """Trains and evaluates as `config` says; returns the final metrics.

    Raises:
      UsageError, ArgumentError, InputDataError, ChangedRunError: before training starts.
      NonFiniteLossError, PreemptedError: during training (see `trainer.cli.errors`).
    """
    # TensorFlow's own INFO lines (saver internals) would drown the progress line.
    tf.get_logger().setLevel("WARNING")
    timeline = app.Timeline()
    timeline.mark("run")  # imports and flags done
    strategy = build.start_runtime(config)
    chief = build.chief(strategy)
    bundle = build.load_bundle(config)
    logging.info("Data: %s", bundle.description)
    if bundle.schema is not None:
        logging.info("Features: %s", bundle.schema.describe(limit=100))
    config = config.with_class_names(bundle.class_names)
    cost_matrix.check_cost_matrix_classes(config.recall, bundle.class_names)
    held_out_counts = None if bundle.validation is None else bundle.validation.class_counts
    folds_choice = decision_folds.choose_decision_folds(config.recall, held_out_counts)
    automatic_batch = config.training.batch_size is None
    config = config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                              bundle.validation is not None, held_out_class_counts=held_out_counts,
                              num_train_examples=bundle.train.num_examples,
                              per_position=bundle.label_shape is not None)
    if bundle.label_shape is not None:  # no cross-fitting over examples (`config._per_position`)
        folds_choice = decision_folds.choose_decision_folds(config.recall, held_out_counts)
    if automatic_batch:
        logging.info("Batch size %d (automatic, from %d training rows; --batch_size sets it).",
                     config.training.batch_size, bundle.train.num_examples)
    if config.recall.calibrate:
        logging.info("Operating point data (--decision_folds=%d%s): %s.",
                     config.recall.decision_folds, ", automatic" if folds_choice.automatic else "",
                     folds_choice.reason)
        if config.recall.cross_fits:
            logging.info("Served model (--decision_model=%s): %s.", config.recall.decision_model,
                         "the mean logits of the fold models, the scores the point is chosen on"
                         if config.recall.decision_model == "ensemble" else
                         "the model trained on all the training rows")
    model_dir = config.output.model_dir
    current = fingerprint.run_fingerprint(config, bundle)
    resume = fingerprint.check_resume(model_dir, current, config.output.allow_config_change,
                                      write=chief)
    finished = finished_metrics(config, strategy, resume)
    if finished is not None:
        timeline.mark("data")
        _summarize_finished(config, bundle, finished)
        timeline.mark("summary")
        logging.info("%s.", timeline.line())
        return finished

    # Cross-fitting reads the training rows into memory and refuses fold files of another
    # cross-fit now, before anything trains.
    rows = _cross_fit_rows(config, bundle) if config.recall.cross_fits else None
    changed = [difference.name for difference in resume.allowed]
    timeline.mark("data")
    parts = build.build(config, bundle, strategy, changed=changed)
    trainer = parts.trainer
    timeline.mark("built")
    trainer.callbacks.append(_FirstSteps(timeline))
    trainer.fit(parts.data.train, total_epochs=config.training.epochs,
                validation_data=parts.data.validation)
    timeline.mark("trained")

    point_report, decision_data, choosing, served_model = None, None, None, trainer.model
    if config.recall.calibrate:
        choosing, decision_data, fold_models = _choosing_logits(config, bundle, strategy, parts, changed,
                                                                folds_choice, rows)
        if fold_models:
            served_model = fold_ensemble.mean_logits_model(fold_models, bundle.train.input_shape)
    # The reporting data's logits, once, from the served model: every figure of the report comes
    # from them.
    if served_model is trainer.model:
        logits, labels = trainer.collect_logits(parts.data.eval)
    else:
        logits, labels = fold_ensemble.ensemble_logits(served_model, parts.data.eval,
                                                       decision_logits=trainer.task.decision_logits)
    # --weighted_metrics: each cell of the reported confusion matrices sums its rows' weights.
    weights = collect_sample_weights(parts.data.eval) if config.data.weighted_metrics else None
    argmax = report.argmax_metrics(logits, labels, weights)
    measured_on = report.describe_split(bundle.eval)
    calibration, calibration_facts = _calibrate_probabilities(
        config, bundle, parts, choosing, decision_data, logits, labels, measured_on, save=chief)
    if calibration is not None:
        trainer.calibration = calibration  # predict() returns what the export serves
    if config.recall.calibrate:
        point = report.calibrate(trainer, config.recall, *choosing, save=chief, calibration=calibration)
        point_report = report.operating_point_report(
            point, config.recall, logits, labels, argmax, chosen_on=decision_data["chosen_on"],
            measured_on=measured_on, class_names=bundle.class_names)
    # A resumed run serves the operating point it saved before, if any.
    decision = report.describe_decision(trainer.operating_point, bundle.class_names)
    served = report.served_metrics(trainer.operating_point, logits, labels, weights)
    metrics = report.training_metrics(
        served, class_names=bundle.class_names, trainer=trainer, rule=parts.rule,
        flag_values=config_lib.project_flag_values(), config_changes=resume.changes(),
        argmax=argmax, decision=decision, measured_on=measured_on)
    timeline.mark("evaluated")
    comparison = None
    if baseline.wanted(config):
        logging.info("Training plain cross-entropy for comparison (same data, model, epochs and seed; "
                     "under %s/%s; --compare_baseline=false skips it).", model_dir,
                     baseline.BASELINE_DIRECTORY)
        comparison = baseline.comparison(_recipe(config), served, baseline.train_baseline(
            config, bundle, strategy), bundle.class_names, measured_on)
        metrics["baseline_comparison"] = comparison
        timeline.mark("baseline")
    metrics["data_splits"] = bundle.splits_summary()
    metrics["batch_size"] = config.training.batch_size  # as resolved (`--batch_size` may be automatic)
    metrics["weighted"] = weights is not None
    metrics["calibration"] = calibration_facts
    metrics["epoch_evaluations_on"] = html_report.epoch_evaluation_data(config, bundle)
    if point_report is not None:
        metrics["operating_point"] = point_report
        metrics["decision_data"] = decision_data
    if chief:
        fingerprint.record_run(model_dir, current, resume)
        tensorboard_run.write_run_end(
            model_dir, step=int(trainer.global_step.numpy()), served=served, argmax=argmax,
            class_names=bundle.class_names, decision=decision, measured_on=measured_on,
            target_class=config.recall.single_target_class, point=trainer.operating_point,
            chosen_on=None if decision_data is None else decision_data["chosen_on"])
        _export(config, bundle, trainer, served_model, calibration)
        timeline.mark("exported")
        chosen = "" if decision_data is None else f"; chosen on {decision_data['chosen_on']}"
        print(format_decision_table(served, argmax, bundle.class_names, decision=decision,
                                    measured_on=measured_on + chosen,
                                    targets=report.served_targets(trainer.operating_point)))
        page = html_report.write_training_report(
            config, bundle, trainer, logits, labels, measured_on=measured_on + chosen, decision=decision,
            calibration=calibration, calibration_facts=calibration_facts,
            epoch_data=metrics["epoch_evaluations_on"])
        timeline.mark("report")
        # metrics.json last: with it, the export and the report of this checkpoint are there too
        # (what `finished_metrics` relies on).
        write_json_atomically(os.path.join(model_dir, METRICS_FILENAME), metrics)
        print(f"Wrote {os.path.join(model_dir, METRICS_FILENAME)}; "
              f"TensorBoard: tensorboard --logdir {model_dir}")
        if comparison is not None:
            print(baseline.format_comparison(comparison))
        print(baseline.next_steps(config, comparison, bundle.class_names, page))
    logging.info("%s.", timeline.line())
    return metrics


def finished_metrics(config: RunConfig, strategy: tf.distribute.Strategy,
                     resume: fingerprint.ResumeCheck) -> Optional[Dict[str, Any]]:
    """The run's metrics.json when the same command finished this run before, else None.

    Finished: the latest checkpoint is at `--epochs`, and metrics.json (the
    last file a run writes) was written at that checkpoint's epoch and step
    with the same flags, none of them let through by `--allow_config_change`;
    the export and report.html are there and no older than that checkpoint (a
    missing report.html counts only when matplotlib is installed). Training
    again would then train nothing and rewrite the same files. A multi-worker
    run always takes the whole path (its workers must agree).
    """
    model_dir = config.output.model_dir
    if not resume.resuming or resume.saved is None or resume.allowed or is_multi_worker(strategy):
        return None
    try:
        metrics = read_json(os.path.join(model_dir, METRICS_FILENAME))
    except (OSError, ValueError):
        return None
    flags_now = to_jsonable(config_lib.project_flag_values())
    if not isinstance(metrics, dict) or metrics.get("flags") != flags_now \
            or metrics.get("epoch") != config.training.epochs \
            or ("baseline_comparison" in metrics) != baseline.wanted(config):
        return None
    checkpoint = tf.train.latest_checkpoint(fingerprint.checkpoint_dir(model_dir))
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        trained = (int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")),
                   int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")))
        saved_at = os.path.getmtime(checkpoint + ".index")
    except (tf.errors.OpError, ValueError, OSError):
        return None
    if trained != (metrics["epoch"], metrics.get("step")):
        return None
    export_dir = config.output.resolved_export_dir
    outputs = [os.path.join(model_dir, html_report.FILENAME)]
    if export_dir is not None:
        outputs.append(os.path.join(export_dir, "saved_model.pb"))
    for path in outputs:
        if not os.path.isfile(path):
            if path == outputs[0] and not reporting.plotting_available():
                continue  # no report without matplotlib: the run skipped it too
            return None
        if os.path.getmtime(path) < saved_at:
            return None
    return metrics


def _summarize_finished(config: RunConfig, bundle: Any, metrics: Dict[str, Any]) -> None:
    """What a finished run prints again, from its metrics.json: the table, the comparison, the next steps."""
    model_dir = config.output.model_dir
    chosen_on = (metrics.get("decision_data") or {}).get("chosen_on")
    chosen = "" if chosen_on is None else f"; chosen on {chosen_on}"
    print(format_decision_table(metrics, metrics["argmax"], bundle.class_names, decision=metrics["decision"],
                                measured_on=metrics["measured_on"] + chosen,
                                targets=report.served_targets(decisions.load(model_dir))))
    page = os.path.join(model_dir, html_report.FILENAME)
    page = page if os.path.isfile(page) else None
    kept = " and ".join(name for name, there in (("the export", config.output.resolved_export_dir),
                                                  (html_report.FILENAME, page)) if there)
    print(f"Finished earlier with these flags (epoch {metrics['epoch']} of --epochs="
          f"{config.training.epochs}, step {metrics['step']}): nothing was trained, exported or drawn "
          f"again; the table is {os.path.join(model_dir, METRICS_FILENAME)}'s"
          f"{', and ' + kept + ' are as the run wrote them' if kept else ''}. A larger --epochs trains "
          f"on. TensorBoard: tensorboard --logdir {model_dir}")
    comparison = metrics.get("baseline_comparison")
    if comparison is not None:
        print(baseline.format_comparison(comparison))
    print(baseline.next_steps(config, comparison, bundle.class_names, page))


class _FirstSteps(keras.callbacks.Callback):
    """Marks on a `Timeline` when `fit` starts (`training`) and when its first compiled loop of steps
    (traced, and under `--jit_compile=auto` after the first batch's timed steps) ended (`first_loop`)."""

    def __init__(self, timeline: app.Timeline):
        super().__init__()
        self._timeline = timeline

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._timeline.mark("training")

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._timeline.mark("first_loop")


def _recipe(config: RunConfig) -> str:
    """The run's loss and rule in flag form (`--loss=logit_adjusted`), for the comparison table."""
    parts = [] if config.loss.loss == "cross_entropy" else [f"--loss={config.loss.loss}"]
    if config.loss.reweighting != "none":
        parts.append(f"--reweighting={config.loss.reweighting}")
    return " ".join(parts) or "cross-entropy"


def _cross_fit_rows(config: RunConfig, bundle: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The training rows in memory, after checking `<model_dir>/folds` against this cross-fit.

    Raises:
      UsageError: when the training split is too large to hold.
      ArgumentError: naming `--model_dir` when its folds are another cross-fit's.
    """
    recall = config.recall
    try:
        features, labels = cross_fit.training_arrays(bundle.train)
    except ArgumentError as error:
        if error.argument != "split":
            raise
        raise UsageError(f"--decision_folds={recall.decision_folds}: cross-fitting reads the training "
                         f"split into memory and {error.value} {error.requirement}. Pass "
                         f"--decision_folds=0 to choose on the held-out split.") from None
    with flags_named(num_folds="decision_folds"):
        done = cross_fit.finished_folds(features, labels, num_folds=recall.decision_folds,
                                        epochs=config.training.epochs, seed=config.training.seed,
                                        model_dir=config.output.model_dir)
    if done:
        logging.info("Cross-fit: fold(s) %s of %d finished earlier; they are not retrained.",
                     ", ".join(map(str, done)), recall.decision_folds)
    return features, labels


def _choosing_logits(config: RunConfig, bundle: Any, strategy: tf.distribute.Strategy, parts: Any,
                     changed: List[str], folds_choice: decision_folds.DecisionFolds,
                     rows: Optional[Tuple[np.ndarray, np.ndarray]]
                     ) -> Tuple[Tuple[np.ndarray, np.ndarray], Dict[str, Any], Tuple[Any, ...]]:
    """The logits and labels the operating point is chosen on, what they are (for metrics.json), and
    the fold models that serve it (`--decision_model=ensemble`; else none).

    With `--decision_folds=K`: the out-of-fold logits of every training row
    (`trainer.cross_fit`); the served model is the folds' ensemble or the one
    trained on all of them (`--decision_model`). Otherwise the validation
    split's logits (one pass more over it; the data layer never makes it the
    evaluation data).
    """
    recall = config.recall
    ensemble = recall.cross_fits and recall.decision_model == "ensemble"
    facts: Dict[str, Any] = {
        "automatic": folds_choice.automatic, "reason": folds_choice.reason,
        "decision_model": "ensemble" if ensemble else "refit",
        "served_model": (f"the mean logits of the {recall.decision_folds} fold models" if ensemble
                         else "trained on all the training rows")}
    if not recall.cross_fits:
        logits, labels = parts.trainer.collect_logits(parts.data.held_out)
        facts.update(source=f"{bundle.validation.name}_split", folds=0, rows=int(len(labels)),
                     chosen_on=report.describe_split(bundle.validation))
        return (logits, labels), facts, ()
    features, labels = rows
    # The recall callbacks of each fold read what the main model's read; without them, nothing.
    validation = parts.data.validation if config.steers_on_held_out_split else None
    with flags_named(num_folds="decision_folds"):
        out_of_fold = cross_fit.out_of_fold_logits(
            build.fold_trainer_factory(config, bundle, strategy, changed=changed), features, labels,
            num_folds=recall.decision_folds, epochs=config.training.epochs,
            batch_size=config.training.batch_size, seed=config.training.seed,
            model_dir=config.output.model_dir, validation_data=validation,
            num_classes=config.data.num_classes, keep_models=ensemble)
    facts.update(source="out_of_fold", folds=out_of_fold.num_folds, rows=out_of_fold.num_rows,
                 chosen_on=out_of_fold.describe(),
                 folds_dir=os.path.join(config.output.model_dir, cross_fit.FOLDS_DIRNAME))
    if isinstance(recall.target_class, tuple):  # several targets: the rows of each
        facts["target_class_rows"] = {str(k): int(np.sum(out_of_fold.labels == k))
                                      for k in recall.target_class}
    elif recall.target_class is not None:
        facts["target_class_rows"] = int(np.sum(out_of_fold.labels == recall.target_class))
    return (out_of_fold.logits, out_of_fold.labels), facts, out_of_fold.models


def _calibrate_probabilities(config: RunConfig, bundle: Any, parts: Any,
                             choosing: Optional[Tuple[np.ndarray, np.ndarray]],
                             decision_data: Optional[Dict[str, Any]], logits: np.ndarray,
                             labels: np.ndarray, measured_on: str, *, save: bool
                             ) -> Tuple[Any, Dict[str, Any]]:
    """`--calibrate_probabilities`: temperature scaling on the choosing data; metrics.json's `calibration`.

    The choosing data are the operating point's (`choosing`, with
    `decision_data` saying what they are) or, without an operating point, the
    validation split's logits; never the reporting split's. Without either
    (`--eval_dataset` and nothing that holds out a split) nothing is fitted,
    and the returned facts say why. A fitted calibration is saved as
    `<model_dir>/calibration.json` (with `save`).

    Returns:
      `(calibration or None, the facts for metrics.json)`.
    """
    if not config.recall.calibrate_probabilities:
        return None, {"skipped": "--calibrate_probabilities=false"}
    if choosing is None:
        if bundle.validation is None or parts.data.held_out is None:
            return None, {"skipped": "no held-out split of the training data to fit on (--eval_dataset "
                                     "holds none out, and the test split never chooses)"}
        choosing = parts.trainer.collect_logits(parts.data.held_out)
        fitted_on = report.describe_split(bundle.validation)
    else:
        fitted_on = decision_data["chosen_on"]
    calibration, shift = report.fit_calibration(parts.trainer, parts.rule, *choosing, save=save)
    facts = report.calibration_report(calibration, shift, logits, labels, fitted_on=fitted_on,
                                      measured_on=measured_on)
    if save and parts.trainer.model_dir:
        tensorboard_run.write_calibration(parts.trainer.model_dir, facts=facts,
                                          class_names=bundle.class_names,
                                          step=int(parts.trainer.global_step.numpy()))
    return calibration, facts


def _export(config: RunConfig, bundle: Any, trainer: Any, model: Any, calibration: Any = None) -> None:
    """Exports `model` (the refit, or the folds' ensemble) with the trainer's operating point."""
    export_dir = config.output.resolved_export_dir
    if export_dir is None:
        return
    point = trainer.operating_point
    export_saved_model(model, export_dir, input_shape=bundle.train.input_shape,
                       class_names=bundle.class_names, operating_point=point,
                       metadata={"num_classes": bundle.num_classes, "dataset": config.data.dataset,
                                 "label_column": config.data.label_column,
                                 **({} if bundle.label_shape is None else {
                                     "label_shape": list(bundle.label_shape),
                                     "ignore_label": bundle.ignore_label})},
                       calibration=calibration, schema=bundle.schema)
    logging.info("Exported the serving model to %s", export_dir)


def main(argv: Any = None) -> Dict[str, Any]:
    """Reads the parsed flags into a config and runs (the command `trainer.cli.app` calls)."""
    del argv  # positional arguments are refused by the flag parser
    config = config_lib.from_flags()
    if config.data.multi_label:
        return multi_label_train.run(config)
    return run(config)


COMMAND = app.Command(main=main, groups=GROUPS, usage=USAGE)
