"""`RecallEarlyStopping`: stop when a class's recall stops improving or reaches a target.

Restores the weights of the best epoch at the end; its state is checkpointed.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import tensorflow as tf
from absl import logging

from callbacks.monitor import ClassId, MonitorCallback


class RecallEarlyStopping(MonitorCallback):
    """Stops training when the monitored recall stops improving, or reaches `stop_at`.

    Follows `val_recall/<k>` (or the worst class's recall, or balanced
    accuracy, or any log key). Training stops after `patience` evaluations
    without an improvement larger than `min_delta`, or as soon as the value
    reaches `stop_at`. With `restore_best_weights`, the weights of the best
    epoch are put back when training ends (also when it did not stop early).

    The best value, wait counter, stopping epoch and best weights are
    `tf.Variable`s; in a `Trainer` they are checkpointed, so a resumed run
    stops where the uninterrupted run would have, and a run resumed after
    this callback stopped it trains no further epochs.

    Works in plain `model.fit` too, where the logs carry per-class recall
    when the model is compiled with `callbacks.PerClassMetrics`.

    Args:
      class_id: `k` (follow `val_recall/<k>`), `'min'` (worst class, the
        default) or `'balanced'` (balanced accuracy).
      monitor: A log key to follow instead of `class_id`.
      patience: Evaluations without improvement before stopping; None never
        stops for that reason (only `stop_at` stops).
      min_delta: Smallest change that counts as an improvement.
      restore_best_weights: Put back the best epoch's weights at the end.
      stop_at: Stop as soon as the value reaches this (e.g. a target recall).
      mode: `'auto'`, `'max'` or `'min'`.
      verbose: Print a line when stopping and restoring.
      name: Module name.

    Example:
      >>> stop = RecallEarlyStopping(class_id=6, patience=3, stop_at=0.9)
      >>> Trainer(model=model, callbacks=[stop]).fit(train, epochs=30, validation_data=held_out)
    """

    def __init__(self, class_id: ClassId = None, *, monitor: Optional[str] = None,
                 patience: Optional[int] = 5, min_delta: float = 0.0,
                 restore_best_weights: bool = True, stop_at: Optional[float] = None,
                 mode: str = "auto", verbose: int = 0, name: Optional[str] = None):
        super().__init__(class_id=class_id, monitor=monitor, mode=mode, min_delta=min_delta,
                         name=name or "recall_early_stopping")
        if patience is not None and (isinstance(patience, bool) or int(patience) != patience
                                     or patience < 0):
            raise ValueError(f"patience must be an integer >= 0 or None, got {patience!r}.")
        if stop_at is not None and not math.isfinite(float(stop_at)):
            raise ValueError(f"stop_at must be a finite number or None, got {stop_at!r}.")
        if patience is None and stop_at is None:
            raise ValueError("patience and stop_at are both None: the callback would never stop.")
        self.patience = None if patience is None else int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.stop_at = None if stop_at is None else float(stop_at)
        self.verbose = int(verbose)
        self.stopped_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="stopped_epoch")
        self.best_weights: Optional[List[tf.Variable]] = None
        self._used = False

    def reset_state(self) -> None:
        super().reset_state()
        self.stopped_epoch.assign(-1)

    def _make_best_weights(self) -> None:
        # Created before any epoch (and, in a Trainer, before its checkpoint is
        # restored), from the current weights.
        self.best_weights = [tf.Variable(tf.convert_to_tensor(weight), trainable=False,
                                         name=f"best_weight_{index}")
                             for index, weight in enumerate(self.model.weights)]

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        # The Trainer sets the model before restoring a checkpoint, so the
        # best-weight variables exist when their saved values are looked up.
        if self.restore_best_weights and self.best_weights is None and model.weights:
            self._make_best_weights()

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.restore_best_weights and self.best_weights is None:
            self._make_best_weights()
        first_use, self._used = not self._used, True
        if int(self.stopped_epoch.numpy()) >= 0:
            if first_use:
                # State restored from a checkpoint of a run this callback had
                # stopped: the uninterrupted run is over, so train no further.
                self.model.stop_training = True
                logging.info("%s had stopped this run at epoch %d; not training further.",
                                     type(self).__name__, int(self.stopped_epoch.numpy()) + 1)
            else:
                self.stopped_epoch.assign(-1)

    def _reached(self, value: float) -> bool:
        if self.stop_at is None:
            return False
        return value >= self.stop_at if self.mode == "max" else value <= self.stop_at

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        value = self.current_value(logs)
        if value is not None:
            reached = self._reached(value)
            best = float(self.best.numpy())
            not_worse = value >= best if self.mode == "max" else value <= best
            out_of_patience = False
            if self.is_improvement(value) or (reached and not_worse):
                self.record_improvement(value, epoch)
                if self.best_weights is not None:
                    for saved, weight in zip(self.best_weights, self.model.weights):
                        saved.assign(tf.convert_to_tensor(weight))
            else:
                self.wait.assign_add(1)
                out_of_patience = (self.patience is not None
                                   and int(self.wait.numpy()) >= max(self.patience, 1))
            if reached or out_of_patience:
                self.stopped_epoch.assign(int(epoch))
                self.model.stop_training = True
                if self.verbose:
                    reason = (f"{self.monitor} reached {self.stop_at}" if reached else
                              f"{self.monitor} did not improve for {int(self.wait.numpy())} epochs")
                    print(f"Epoch {epoch + 1}: early stopping ({reason}).")
        self.mark_epoch(epoch)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        best_epoch = int(self.best_epoch.numpy())
        if self.best_weights is None or best_epoch < 0:
            return
        for weight, saved in zip(self.model.weights, self.best_weights):
            weight.assign(tf.convert_to_tensor(saved))
        if self.verbose:
            print(f"Restored the weights of epoch {best_epoch + 1} "
                  f"({self.monitor} = {float(self.best.numpy()):.4f}).")

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "patience": self.patience,
                "restore_best_weights": self.restore_best_weights, "stop_at": self.stop_at,
                "verbose": self.verbose}
