"""What a training run writes to TensorBoard beyond the Trainer's scalars: HParams, final figures, decision.

- `session(config, class_names)`: the run's row of the HParams table. Every run
  writes the same experiment config (`experiment_hparams`: every setting of
  `SETTINGS`, typed from its flag, with its choices where the flag has them), so
  the runs of a directory tree share one config whichever TensorBoard picks;
  settings of features that are off are left out of the row (an empty cell).
  The loss, the rule, the target and the served decision are ticked by default.
- `describe_summaries(trainer, config, bundle)`: class names in the Trainer's tags
  (`recall/3_shirt`) and what data each run is (`train`, `eval`).
- `write_run_end(...)`: the served decision's final figures on the evaluation
  data (`final/*`, the HParams metrics), the operating point as scalars and text,
  a per-class table, and the session's end.
- `write_calibration(...)`: the expected calibration errors (`calibration/`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import flags

from callbacks.hparams import Session, hparam_info, metric_info, write_session_end
from trainer import reporting
from trainer.cli import html_report, report
from trainer.cli.config import RunConfig  # (importing it defines the flags whose types are read here)
from trainer.summaries import class_title

FLAGS = flags.FLAGS
# Flag values resolved before a run starts (the session records the resolved value instead).
_PLACEHOLDERS = ("auto",)
DECISIONS = ("argmax", "target_recall", "worst_class", "expected_cost", "multi_target")


def _rule_uses(config: RunConfig, *rules: str) -> bool:
    loss = config.loss
    return loss.reweighting in rules or (loss.reweighting == "drw" and loss.drw_rule in rules)


def decision_kind(config: RunConfig) -> str:
    """The decision the run serves: `'argmax'`, or the calibrated operating point's kind."""
    return (config.recall.calibration_kind or "argmax") if config.recall.calibrate else "argmax"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One HParams column: a config field (its flag's name), and when its feature is on."""

    name: str
    used: Callable[[RunConfig], bool] = lambda config: True


SETTINGS = (
    Setting("dataset"),
    Setting("eval_dataset"),
    Setting("imbalance_ratio", lambda c: c.data.dataset in ("synthetic", "fashion_mnist_lt")),
    Setting("validation_split"),
    Setting("test_split", lambda c: ":" in c.data.dataset and c.data.eval_dataset is None),
    Setting("model"),
    Setting("hidden_units", lambda c: c.model.model == "mlp"),
    Setting("dropout"),
    Setting("weight_decay"),
    Setting("mixed_precision"),
    Setting("epochs"),
    Setting("batch_size"),
    Setting("learning_rate"),
    Setting("seed"),
    Setting("loss"),
    Setting("gamma", lambda c: c.loss.loss in ("focal", "sigmoid_focal")),
    Setting("tau", lambda c: c.loss.loss == "logit_adjusted"),
    Setting("ldam_scale", lambda c: c.loss.loss == "ldam"),
    Setting("reweighting"),
    Setting("class_weights", lambda c: _rule_uses(c, "manual")),
    Setting("target_weight", lambda c: _rule_uses(c, "target_class")),
    Setting("beta", lambda c: _rule_uses(c, "effective_number")),
    Setting("drw_start_epoch", lambda c: c.loss.reweighting == "drw"),
    Setting("drw_rule", lambda c: c.loss.reweighting == "drw"),
    Setting("target_class"),
    Setting("target_recall"),
    Setting("recall_target_mode", lambda c: c.uses_controller),
    Setting("recall_target_adjust", lambda c: c.uses_controller),
    Setting("recall_target_step_size", lambda c: c.uses_controller),
    Setting("monitor", lambda c: c.recall.stops_early or c.recall.reduces_lr),
    Setting("early_stopping_patience"),
    Setting("stop_at_recall"),
    Setting("reduce_lr_patience"),
    Setting("reduce_lr_factor", lambda c: c.recall.reduces_lr),
    Setting("decision"),
    Setting("decision_folds", lambda c: decision_kind(c) != "argmax"),
    Setting("decision_confidence", lambda c: decision_kind(c) in ("target_recall", "multi_target")),
    Setting("decision_estimator", lambda c: decision_kind(c) in ("target_recall", "multi_target")),
    Setting("max_balanced_accuracy_drop", lambda c: decision_kind(c) == "worst_class"),
    Setting("cost_matrix", lambda c: decision_kind(c) == "expected_cost"),
    Setting("calibrate_probabilities"),
)
# Ticked in TensorBoard's HParams view by default (it ticks the first five that differ, by name).
HEADLINE = ("decision", "loss", "reweighting", "target_class", "target_recall")
_DECISION_HELP = ("The served decision: argmax, or the operating point calibrated after training "
                  "(target_recall: --target_class at --target_recall; worst_class: per-class offsets; "
                  "expected_cost: --cost_matrix; multi_target: several --target_class at their "
                  "--target_recall, per-class offsets chosen jointly).")


def experiment_hparams(flag_values: flags.FlagValues = FLAGS) -> List[Any]:
    """The experiment config's setting columns: one per `SETTINGS` entry, typed from its flag.

    Integer flags are text columns (their values are written as digits, see
    `callbacks.hparams`), enum flags list their choices, booleans are booleans.
    """
    infos = []
    for setting in SETTINGS:
        headline = setting.name in HEADLINE
        if setting.name == "decision":
            infos.append(hparam_info("decision", "str", values=DECISIONS, description=_DECISION_HELP,
                                     differs=headline))
            continue
        flag = flag_values[setting.name]
        choices = getattr(flag.parser, "enum_values", None)
        kind = {"int": "int", "float": "float", "bool": "bool"}.get(flag.flag_type(), "str")
        if setting.name == "target_class":
            kind = "str"  # an index and its name, `3 (shirt)`
        values = None if choices is None else [v for v in choices if v not in _PLACEHOLDERS]
        infos.append(hparam_info(setting.name, kind, values=values, description=flag.help,
                                 differs=headline))
    return infos


def experiment_metrics() -> List[Any]:
    """The experiment config's metric columns, in the order TensorBoard shows them (the first five)."""
    on = "of the served decision on the evaluation data (metrics.json's measured_on)"
    return [
        metric_info("final/balanced_accuracy", "balanced accuracy", f"Mean per-class recall {on}."),
        metric_info("final/min_recall", "worst-class recall", f"Smallest per-class recall {on}."),
        metric_info("final/target_recall", "target recall", f"Recall of --target_class {on}."),
        metric_info("final/target_precision", "target precision", f"Precision of --target_class {on}."),
        metric_info("final/macro_f1", "macro-F1", f"Mean per-class F1 {on}."),
        metric_info("final/accuracy", "accuracy", f"Share of rows decided correctly {on}."),
    ]


def _class_value(k: Any, class_names: Sequence[str]) -> Optional[str]:
    if k is None:
        return None
    if isinstance(k, tuple):  # several recall targets
        return ",".join(_class_value(one, class_names) for one in k)
    k = int(k)
    name = str(class_names[k]) if k < len(class_names) else str(k)
    return str(k) if name == str(k) else f"{k} ({name})"


def session_values(config: RunConfig, class_names: Sequence[str], rule: Any = None) -> Dict[str, Any]:
    """The run's settings by name; None (left out of the row) for the settings of features that are off.

    Settings whose flag default is resolved by the rule (the recall-target
    controller's `adjust` and `step_size`) take the `rule`'s values.
    """
    values = config.values()
    for name, attribute in (("recall_target_adjust", "adjust"), ("recall_target_step_size", "step_size")):
        if values.get(name) is None and getattr(rule, attribute, None) is not None:
            values[name] = getattr(rule, attribute)
    values["decision"] = decision_kind(config)
    values["target_class"] = _class_value(config.recall.target_class, class_names)
    values["monitor"] = config.recall.monitor_key[len("val_"):]
    if values.get("hidden_units") is not None:
        values["hidden_units"] = ",".join(map(str, values["hidden_units"]))
    cost = values.get("cost_matrix")
    if cost is not None:
        values["cost_matrix"] = getattr(cost, "path", str(cost))
    return {setting.name: values.get(setting.name) if setting.used(config) else None
            for setting in SETTINGS}


def session(config: RunConfig, class_names: Sequence[str], rule: Any = None) -> Session:
    """The run's HParams session: its settings, the shared experiment config, named by its run directory."""
    return Session(values=session_values(config, class_names, rule), hparam_infos=experiment_hparams(),
                   metric_infos=experiment_metrics(), trial_id=os.path.normpath(config.output.model_dir))


def matrix_renderer() -> Optional[Callable]:
    """The report's confusion-matrix renderer when matplotlib is installed, else None (the NumPy one)."""
    if not reporting.plotting_available():
        return None
    from trainer.reporting import figures  # matplotlib is there
    return figures.confusion_matrix_png


def run_descriptions(config: RunConfig, bundle: Any) -> Dict[str, str]:
    """Which data each TensorBoard run of the Trainer measures (`train`, `eval`)."""
    return {"train": (f"the training batches of each epoch, {report.describe_split(bundle.train)}; "
                      f"the figures accumulate over the epoch while the model changes"),
            "eval": f"{html_report.epoch_evaluation_data(config, bundle)}, evaluated after each epoch"}


def describe_summaries(trainer: Any, config: RunConfig, bundle: Any) -> None:
    """Class names, the target class and each run's data, for the Trainer's TensorBoard scalars."""
    trainer.summaries.describe(class_names=bundle.class_names, runs=run_descriptions(config, bundle),
                               target_class=config.recall.single_target_class)


# ------------------------------------------------------------------ after training


def _number(value: Any) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _cell(value: Any, digits: int = 4) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


def _interval(point: Any, key: str) -> str:
    bounds = getattr(point, key, None)
    level = getattr(point, "interval_level", None)
    if not bounds:
        return ""
    return f" ({f'{level:.0%} ' if level else ''}interval {bounds[0]:.3f} to {bounds[1]:.3f})"


def decision_text(*, decision: str, measured_on: str, served: Mapping[str, Any],
                  argmax: Mapping[str, Any], class_names: Sequence[str], target_class: Optional[int],
                  point: Any = None, chosen_on: Optional[str] = None) -> str:
    """Markdown: the served decision, where it was chosen and measured, its figures next to argmax's."""
    lines = [f"**Served decision:** {decision}.", "", f"**Measured on** {measured_on}."]
    if chosen_on:
        lines += ["", f"**Chosen on** {chosen_on}."]
    columns = ["balanced accuracy", "worst-class recall"]
    if target_class is not None:
        title = class_title(target_class, class_names)
        columns = [f"recall of {title}", f"precision of {title}"] + columns
    lines += ["", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, metrics in (("served decision", served), ("plain argmax", argmax)):
        cells = [_cell(metrics["balanced_accuracy"]), _cell(metrics["min_recall"])]
        if target_class is not None:
            cells = [_cell(metrics["recall"][target_class]),
                     _cell(metrics["precision"][target_class])] + cells
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    chose = point is not None and getattr(point, "validation_recall", None) is not None
    if chose and target_class is not None:
        lines += ["", f"On the choosing data the point gave recall {point.validation_recall:.4f}"
                      f"{_interval(point, 'recall_interval')} and precision "
                      f"{_cell(point.validation_precision)}{_interval(point, 'precision_interval')} "
                      f"(target recall {point.target_recall:g})."]
    return "\n".join(lines)


def per_class_text(served: Mapping[str, Any], argmax: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """Markdown table per class: support; the served decision's recall, precision, F1; argmax's recall."""
    lines = ["| class | support | recall | precision | F1 | argmax recall |", "|---|---|---|---|---|---|"]
    for k in range(len(served["recall"])):
        lines.append(f"| {class_title(k, class_names)} | {int(served['support'][k])} | "
                     f"{_cell(served['recall'][k])} | {_cell(served['precision'][k])} | "
                     f"{_cell(served['f1'][k])} | {_cell(argmax['recall'][k])} |")
    return "\n".join(lines)


def final_scalars(served: Mapping[str, Any], target_class: Optional[int],
                  point: Any = None) -> Dict[str, float]:
    """`final/<name>` -> value: the served decision's overall figures, the target's, the point's cut-off."""
    scalars = {f"final/{key}": served[key] for key in ("balanced_accuracy", "min_recall", "macro_f1",
                                                         "accuracy")}
    if target_class is not None:
        scalars["final/target_recall"] = served["recall"][target_class]
        scalars["final/target_precision"] = served["precision"][target_class]
    if point is not None and getattr(point, "target_class", None) is not None:
        if getattr(point, "threshold", None) is not None:
            scalars["final/threshold"] = point.threshold
        elif getattr(point, "offset", None) is not None:
            scalars["final/logit_offset"] = point.offset
    return {tag: float(value) for tag, value in scalars.items() if _number(value) is not None}


def write_run_end(model_dir: str, *, step: int, served: Mapping[str, Any], argmax: Mapping[str, Any],
                  class_names: Sequence[str], decision: str, measured_on: str,
                  target_class: Optional[int] = None, point: Any = None, chosen_on: Optional[str] = None,
                  status: str = "success") -> None:
    """Writes, under `<model_dir>` at `step`: `final/*` (scalars and text) and the HParams session's end.

    Args:
      model_dir: The run directory (the HParams session's run).
      step: The last training step.
      served: `decisions.decision_metrics` of the served decision on the evaluation data.
      argmax: The same of the plain argmax.
      class_names: The class names.
      decision: `report.describe_decision` of the served decision.
      measured_on: Which data `served` comes from.
      target_class: The class whose recall and precision are HParams metrics (`final/target_*`).
      point: The served operating point, or None.
      chosen_on: Which data chose it.
      status: The session's end (`callbacks.hparams.STATUSES`).
    """
    writer = tf.summary.create_file_writer(model_dir)
    on = f"The served decision ({decision}) on {measured_on}."
    target = "" if target_class is None else f" Target: {class_title(target_class, class_names)}."
    with writer.as_default(step=int(step)):
        for tag, value in final_scalars(served, target_class, point).items():
            tf.summary.scalar(tag, value, description=on + target)
        tf.summary.text("final/decision", decision_text(
            decision=decision, measured_on=measured_on, served=served, argmax=argmax,
            class_names=class_names, target_class=target_class, point=point, chosen_on=chosen_on),
            description="What is served, where it was chosen and measured, and its figures.")
        tf.summary.text("final/per_class", per_class_text(served, argmax, class_names), description=on)
    write_session_end(writer, status, step=int(step))
    writer.close()


def write_calibration(model_dir: str, *, step: int, facts: Mapping[str, Any],
                      class_names: Sequence[str]) -> None:
    """Writes `<model_dir>/calibration`: the ECE after and before, the temperature, a per-class table."""
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "calibration"))
    where = facts.get("measured_on") or "the evaluation data"
    with writer.as_default(step=int(step)):
        tf.summary.scalar("calibration/ece", facts["eval"]["ece"],
                          description=f"Expected calibration error of the served probabilities on {where}.")
        tf.summary.scalar("calibration/ece_uncalibrated", facts["eval_uncalibrated"]["ece"],
                          description=f"The same before temperature scaling, on {where}.")
        tf.summary.scalar("calibration/temperature", facts["temperature"],
                          description=f"Fitted on {facts.get('fitted_on', 'the choosing data')}.")
        rows = ["| class | ECE calibrated | ECE uncalibrated |", "|---|---|---|"]
        for k, (after, before) in enumerate(zip(facts["eval"]["per_class_ece"],
                                                facts["eval_uncalibrated"]["per_class_ece"])):
            rows.append(f"| {class_title(k, class_names)} | {_cell(after)} | {_cell(before)} |")
        tf.summary.text("calibration/per_class_ece", "\n".join(rows), description=f"On {where}.")
    writer.close()
