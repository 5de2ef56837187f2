"""Command-line wiring of recall-driven training: flags -> rule, callbacks, held-out data, calibration.

`trainer.main` calls these, so its own edits stay a few lines.

Which data each part sees (disjoint from training by construction):

- The recall-target controller and the operating-point calibration always use
  `bundle.validation`, the data layer's fixed stratified split of the training
  data (for `fashion_mnist_lt` a split of the long-tailed training pool, not the
  balanced test set). With `--eval_dataset`, the CLI asks the data layer to
  hold that split out of `--dataset` anyway (`needs_held_out_split`), so the
  evaluation data never steers training.
- `RecallEarlyStopping` / `RecallReduceLROnPlateau` follow the `val_` logs, so
  when one of them is on, the per-epoch validation (and TensorBoard's `eval/`
  run) uses that held-out split; the final metrics are still on `bundle.eval`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import keras
import tensorflow as tf
from absl import logging

from callbacks.recall_early_stopping import RecallEarlyStopping
from callbacks.recall_reduce_lr import RecallReduceLROnPlateau
from callbacks.recall_target import RecallTarget
from callbacks.tensorboard_extras import TensorBoardExtras
from trainer.operating_point import (calibrate_operating_point, labelled_logits,
                                     operating_point_metrics)
from trainer.worst_class_point import calibrate_worst_class

RECALL_TARGET_MODES = ("target_class", "worst_class")


def monitor_key(monitor: Optional[str], target_class: Optional[int]) -> str:
    """The `val_` log key that `--monitor` names (default: the target class's recall, else the worst).

    Raises:
      ValueError: naming `--monitor` when it already has the `val_` prefix.
    """
    if monitor is None:
        return f"val_recall/{target_class}" if target_class is not None else "val_min_recall"
    if monitor.startswith("val_"):
        raise ValueError(f"--monitor names a metric without the val_ prefix (e.g. recall/3, "
                         f"min_recall, balanced_accuracy), got {monitor!r}.")
    return "val_" + monitor


def calibration_kind(flags: Any) -> Optional[str]:
    """Which operating point `--calibrate` chooses: `'target_recall'`, `'worst_class'` or None.

    With `--target_class` and `--target_recall`: the rule that reaches the
    target recall with the best precision. Otherwise, with
    `--recall_target_mode=worst_class`: per-class logit offsets that raise
    the smallest recall (`trainer.worst_class_point`).
    """
    if flags.target_recall is not None and flags.target_class is not None:
        return "target_recall"
    if flags.recall_target_mode == "worst_class":
        return "worst_class"
    return None


def calibration_enabled(flags: Any) -> bool:
    """`--calibrate`, defaulting to on when a target recall is given or the
    recall-target controller raises the worst class."""
    if flags.calibrate is None:
        return flags.target_recall is not None and flags.target_class is not None or (
            flags.reweighting == "recall_target" and flags.recall_target_mode == "worst_class")
    return bool(flags.calibrate)


def check_flags(flags: Any) -> None:
    """Checks the recall flags together.

    Raises:
      ValueError: naming the flags that do not fit together.
    """
    mode = flags.recall_target_mode
    if flags.reweighting == "recall_target" and mode == "target_class":
        if flags.target_class is None or flags.target_recall is None:
            raise ValueError("--reweighting=recall_target with --recall_target_mode=target_class "
                             "needs --target_class and --target_recall.")
    if flags.target_recall is not None and not 0.0 < flags.target_recall <= 1.0:
        raise ValueError(f"--target_recall must be in (0, 1], got {flags.target_recall}.")
    if flags.calibrate and calibration_kind(flags) is None:
        raise ValueError("--calibrate needs --target_class and --target_recall (the recall to "
                         "reach), or --recall_target_mode=worst_class (raise the smallest recall).")
    step = flags.recall_target_step_size
    if step is not None and not (step > 0 and step < float("inf")):
        raise ValueError(f"--recall_target_step_size must be a positive number, got {step}.")
    drop = flags.max_balanced_accuracy_drop
    if not 0.0 <= drop <= 1.0:
        raise ValueError(f"--max_balanced_accuracy_drop must be in [0, 1], got {drop}.")
    for name in ("early_stopping_patience", "reduce_lr_patience"):
        value = getattr(flags, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name} must be >= 0, got {value}.")
    if not 0.0 < flags.reduce_lr_factor < 1.0:
        raise ValueError(f"--reduce_lr_factor must be in (0, 1), got {flags.reduce_lr_factor}.")
    if flags.monitor is not None:
        monitor_key(flags.monitor, flags.target_class)


def needs_held_out_split(flags: Any) -> bool:
    """Whether the flags turn on anything that learns from a held-out split."""
    return (flags.reweighting == "recall_target" or calibration_enabled(flags)
            or flags.early_stopping_patience is not None or flags.stop_at_recall is not None
            or flags.reduce_lr_patience is not None)


def make_recall_target(flags: Any, class_counts: Any, loss: Any = None) -> RecallTarget:
    """The `--reweighting=recall_target` rule.

    Its base weights are inverse class frequencies, or uniform when `loss`
    already corrects for the prior (`--loss=logit_adjusted` or
    `balanced_softmax`): then the rule is the weighted logit-adjusted loss
    (margins from the prior, weights from the controller) and the prior is
    not counted twice. `--recall_target_adjust` says whether the controller's
    weights scale the gradient or shift the loss's logits.
    """
    controller = dict(class_counts=class_counts, loss=loss, adjust=flags.recall_target_adjust,
                      step_size=flags.recall_target_step_size)
    if flags.recall_target_mode == "worst_class":
        return RecallTarget(mode="worst_class", **controller)
    return RecallTarget(target_class=flags.target_class, target_recall=flags.target_recall,
                        **controller)


def _hparams(flags: Any) -> Dict[str, Any]:
    names = ("dataset", "model", "epochs", "batch_size", "learning_rate", "loss", "reweighting",
             "target_class", "target_recall", "recall_target_mode", "recall_target_adjust",
             "recall_target_step_size", "monitor", "early_stopping_patience", "stop_at_recall",
             "reduce_lr_patience", "reduce_lr_factor", "imbalance_ratio", "seed")
    return {name: getattr(flags, name) for name in names if hasattr(flags, name)}


@dataclasses.dataclass
class RecallSetup:
    """What the CLI adds for recall-driven training.

    Attributes:
      callbacks: To pass to the Trainer (after the CLI's own).
      validation_data: Per-epoch validation data for `fit`: the held-out
        split when a monitoring callback is on, else the evaluation data.
      held_out_data: The held-out split (controller, calibration), or None.
      calibrate: Whether to calibrate an operating point after training.
    """

    callbacks: List[keras.callbacks.Callback]
    validation_data: Optional[tf.data.Dataset]
    held_out_data: Optional[tf.data.Dataset]
    calibrate: bool

    @classmethod
    def from_flags(cls, flags: Any, bundle: Any, rule: Any, eval_data: tf.data.Dataset, *,
                   chief: bool = True) -> "RecallSetup":
        """Builds the callbacks and picks the data they see (see the module docstring).

        Raises:
          ValueError: when an option needs a held-out split and there is none.
        """
        calibrate = calibration_enabled(flags)
        monitored = flags.early_stopping_patience is not None or flags.stop_at_recall is not None \
            or flags.reduce_lr_patience is not None
        controlled = isinstance(rule, RecallTarget)
        held_out_split = getattr(bundle, "validation", None)
        if held_out_split is None and needs_held_out_split(flags):
            raise ValueError(
                "--reweighting=recall_target, --calibrate and the recall-driven callbacks need a "
                "held-out split of the training data, and with --eval_dataset there is none (the "
                "evaluation set must not steer training). Drop --eval_dataset to hold out "
                "--validation_split of --dataset.")
        held_out_data = None if held_out_split is None else held_out_split.dataset(
            flags.batch_size, shuffle=False, seed=flags.seed)
        if held_out_split is not None and held_out_split is bundle.eval:
            held_out_data = eval_data
        validation_data = held_out_data if monitored else eval_data
        key = monitor_key(flags.monitor, flags.target_class)
        callbacks: List[keras.callbacks.Callback] = []
        if controlled:
            callbacks.append(rule.controller(validation_data=held_out_data))
        if flags.early_stopping_patience is not None or flags.stop_at_recall is not None:
            callbacks.append(RecallEarlyStopping(monitor=key, patience=flags.early_stopping_patience,
                                                 stop_at=flags.stop_at_recall, verbose=1))
        if flags.reduce_lr_patience is not None:
            callbacks.append(RecallReduceLROnPlateau(monitor=key, patience=flags.reduce_lr_patience,
                                                     factor=flags.reduce_lr_factor, verbose=1))
        if flags.model_dir:
            callbacks.append(TensorBoardExtras(
                flags.model_dir, validation_data, class_names=bundle.class_names,
                hparams=_hparams(flags), enabled=chief))
        return cls(callbacks, validation_data, held_out_data, calibrate)

    def calibrate_and_report(self, trainer: Any, flags: Any,
                             eval_data: tf.data.Dataset) -> Dict[str, Any]:
        """Calibrates on the held-out split, saves it, and measures it on `eval_data`.

        The operating point is the one `calibration_kind` names; the report is
        its dict plus its metrics on `eval_data` next to the plain argmax's.
        """
        worst_class = calibration_kind(flags) == "worst_class"
        if worst_class:
            point = calibrate_worst_class(
                trainer, self.held_out_data,
                max_balanced_accuracy_drop=flags.max_balanced_accuracy_drop)
        else:
            point = calibrate_operating_point(trainer, self.held_out_data,
                                              target_class=flags.target_class,
                                              target_recall=flags.target_recall)
        logits, labels = labelled_logits(trainer, eval_data)
        calibrated = operating_point_metrics(point, logits, labels)
        argmax = operating_point_metrics(None, logits, labels)
        if worst_class:
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
        k = flags.target_class
        logging.info("Operating point (%s, offset %.3f) chosen on the held-out split: class %d "
                     "recall %.4f, precision %.4f on the evaluation data (argmax: %.4f, %.4f).",
                     point.kind, point.offset, k, calibrated["target_recall"],
                     calibrated["target_precision"], argmax["recall"][k], argmax["precision"][k])
        return {
            **point.to_dict(),
            "eval_recall": calibrated["target_recall"], "eval_precision": calibrated["target_precision"],
            "eval_balanced_accuracy": calibrated["balanced_accuracy"],
            "argmax_eval_recall": float(argmax["recall"][k]),
            "argmax_eval_precision": float(argmax["precision"][k]),
        }
