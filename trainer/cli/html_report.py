"""The commands' pages: `report.html` after training, `evaluation.html` after `trainer.evaluate`.

Gathers what each command has (the reporting data's logits, the served decision, calibration, the run's
TensorBoard history) into `trainer.reporting.page.ReportInputs`. Without matplotlib the command still
finishes, and says in one line that the report was skipped and how to install it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from trainer import decisions, reporting
from trainer.cli import report

FILENAME = "report.html"
# trainer.evaluate's page, next to evaluation.json (so it never replaces the training run's page).
EVALUATION_FILENAME = "evaluation.html"


def skipped_message(filename: str = FILENAME) -> str:
    """The one line a command prints when matplotlib is missing."""
    return f"Skipped {filename}: matplotlib is not installed ({reporting.INSTALL_HINT})."


def _write(path: str, **inputs: Any) -> Optional[str]:
    """Writes the page (None, after printing why, without matplotlib); prints where it went."""
    if not reporting.plotting_available():
        print(skipped_message(os.path.basename(path)))
        return None
    from trainer.reporting import page  # matplotlib is there: the figures can be imported
    written, seconds = page.write_report(path, page.ReportInputs(**inputs))
    print(f"Wrote {written} ({seconds:.1f}s)")
    return written


def _history(model_dir: str, class_names: Sequence[str]) -> Any:
    from trainer.reporting.history import read_history
    return read_history(model_dir, class_names)


def _target(point: Any, target_class: Optional[int], target_recall: Optional[float]
            ) -> Tuple[Optional[int], Optional[float]]:
    """The served point's target class and recall, else the flags' (a controller without a point).

    Several targets (`--target_class=3,4`): none, the page draws one target.
    """
    if point is not None and getattr(point, "target_class", None) is not None:
        return int(point.target_class), getattr(point, "target_recall", None)
    if target_class is not None and not isinstance(target_class, tuple):
        return int(target_class), target_recall
    return None, None


def epoch_evaluation_data(config: Any, bundle: Any) -> str:
    """Which split `fit` evaluated each epoch (the TensorBoard `eval` run), as `report.describe_split` says.

    The held-out validation split when something steers or calibrates on it
    (`RunConfig.needs_held_out_split`), else the reporting split (`trainer.cli.build.make_datasets`).
    """
    held_out = config.needs_held_out_split and bundle.validation is not None
    split = bundle.validation if held_out else bundle.eval
    return report.describe_split(split)


def _calibration_note(facts: Optional[Mapping[str, Any]]) -> str:
    if not facts:
        return ""
    if "skipped" in facts:
        return f"none ({facts['skipped']})"
    return f"temperature {facts['temperature']:.4g} fitted on {facts.get('fitted_on', 'held-out data')}"


def write_training_report(config: Any, bundle: Any, trainer: Any, logits: np.ndarray, labels: np.ndarray, *,
                          measured_on: str, decision: str, calibration: Any = None,
                          calibration_facts: Optional[Mapping[str, Any]] = None,
                          epoch_data: str = "") -> Optional[str]:
    """`<model_dir>/report.html` at the end of training; its path, or None when matplotlib is missing.

    Args:
      config: The run's `RunConfig`.
      bundle: The `DataBundle`.
      trainer: The trained Trainer (its served `operating_point`, `calibration`, `model_dir`).
      logits: `[N, K]` logits of the reporting split.
      labels: `[N]` its labels.
      measured_on: Which data they are (and what chose the decision), one sentence.
      decision: `report.describe_decision` of the served decision.
      calibration: The fitted calibration, or None (then `trainer.calibration`).
      calibration_facts: metrics.json's `calibration`.
      epoch_data: Which data the per-epoch figures were measured on (`epoch_evaluation_data`).
    """
    model_dir = config.output.model_dir
    point = trainer.operating_point
    calibration = calibration if calibration is not None else getattr(trainer, "calibration", None)
    predictions = np.asarray(logits).argmax(axis=1) if point is None else point.decide(logits)
    target_class, target_recall = _target(point, config.recall.target_class, config.recall.target_recall)
    facts: List[Tuple[str, str]] = [("epochs trained", str(int(trainer.epoch.numpy())))]
    if config.output.resolved_export_dir:
        facts.append(("export", config.output.resolved_export_dir))
    return _write(
        os.path.join(model_dir, FILENAME), heading="Training report", model_dir=model_dir,
        dataset=_dataset(config.data.dataset, config.data.eval_dataset), class_names=list(bundle.class_names),
        labels=labels, logits=logits, predictions=predictions, measured_on=measured_on, decision=decision,
        probabilities=None if calibration is None else calibration.apply(logits),
        calibration_note=_calibration_note(calibration_facts), target_class=target_class,
        target_recall=target_recall, history=_history(model_dir, bundle.class_names),
        history_note=epoch_data, facts=facts)


def _dataset(dataset: str, eval_dataset: Optional[str]) -> str:
    return dataset if not eval_dataset else f"{dataset} (evaluation data: {eval_dataset})"


def write_evaluation_report(config: Any, bundle: Any, metadata: Mapping[str, Any],
                            outputs: Dict[str, np.ndarray], trained: Mapping[str, Any]) -> Optional[str]:
    """`<report_dir>/evaluation.html` of `trainer.evaluate`; its path, or None when matplotlib is missing.

    Args:
      config: The `EvaluateConfig`.
      bundle: The evaluation `DataBundle`.
      metadata: The export's metadata (class names, operating point, calibration).
      outputs: The serving function's outputs over the evaluation split: `labels`,
        `class_id`, `logits`, `probabilities` (calibrated when the export has a calibration).
      trained: The training run's `metrics.json` ({} when absent).
    """
    class_names = list(metadata["class_names"])
    payload = metadata.get("operating_point")
    point = None if not payload else decisions.from_dict(dict(payload))
    target_class, target_recall = _target(point, None, None)
    calibration = metadata.get("calibration")
    chosen = (trained.get("operating_point") or {}).get("chosen_on")
    measured_on = report.describe_split(bundle.eval) + (f"; the decision was chosen on {chosen}" if chosen
                                                         else "")
    history = _history(config.model_dir, class_names)
    absent = (f"no TensorBoard event files under {os.path.join(config.model_dir, 'train')} or "
              f"{os.path.join(config.model_dir, 'eval')} (an export evaluated away from its training run)")
    history_note = trained.get("epoch_evaluations_on") or "the training run's per-epoch evaluation data"
    return _write(
        os.path.join(config.report_dir, EVALUATION_FILENAME), heading="Evaluation report",
        model_dir=config.model_dir,
        dataset=_dataset(config.data.dataset, config.data.eval_dataset), class_names=class_names,
        labels=outputs["labels"], logits=outputs["logits"], predictions=outputs["class_id"],
        measured_on=measured_on, decision=report.describe_decision(point, class_names),
        probabilities=None if calibration is None else outputs["probabilities"],
        calibration_note="" if calibration is None else
        f"temperature {calibration['temperature']:.4g} (the export serves calibrated probabilities)",
        target_class=target_class, target_recall=target_recall, history=history, history_note=history_note,
        history_absent=absent, facts=[("export", config.export_dir)])
