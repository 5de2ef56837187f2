"""`RecallReduceLROnPlateau`: lower the learning rate when a class's recall stops improving.

Its wait and cooldown counters are checkpointed; the learning rate itself lives
in the optimizer, which the Trainer checkpoints too.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from callbacks.monitor import ClassId, MonitorCallback


def _settable_learning_rate(optimizer: Any) -> None:
    """Raises ValueError unless `optimizer` has a learning rate this callback can set."""
    if optimizer is None:
        raise ValueError("RecallReduceLROnPlateau needs a model with an optimizer "
                         "(model.compile(...) or a Trainer).")
    learning_rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) or (
            callable(learning_rate) and not hasattr(learning_rate, "assign")):
        raise ValueError(
            f"RecallReduceLROnPlateau cannot change the learning rate of {type(optimizer).__name__}: "
            f"it is a schedule ({type(learning_rate).__name__}), which sets the rate itself at "
            f"every step. Give the optimizer a float learning rate, or drop this callback.")


class RecallReduceLROnPlateau(MonitorCallback):
    """Multiplies the learning rate by `factor` when the monitored recall plateaus.

    After `patience` evaluations without an improvement larger than
    `min_delta`, the learning rate becomes `max(lr * factor, min_lr)`, and
    the callback then waits `cooldown` evaluations before counting again
    (the rule of `keras.callbacks.ReduceLROnPlateau`, following a class).

    Args:
      class_id: `k` (follow `val_recall/<k>`), `'min'` (worst class, the
        default) or `'balanced'`.
      monitor: A log key to follow instead of `class_id`.
      factor: In (0, 1).
      patience: Evaluations without improvement before reducing (>= 0).
      cooldown: Evaluations to wait after a reduction.
      min_lr: Lower bound of the learning rate.
      min_delta: Smallest change that counts as an improvement.
      mode: `'auto'`, `'max'` or `'min'`.
      verbose: Print a line at each reduction.
      name: Module name.

    Raises:
      ValueError: at the start of training when the optimizer's learning rate
        is a `LearningRateSchedule`.

    Example:
      >>> reduce = RecallReduceLROnPlateau(class_id=6, factor=0.5, patience=2)
      >>> model.fit(x, y, validation_data=(vx, vy), callbacks=[reduce])
    """

    def __init__(self, class_id: ClassId = None, *, monitor: Optional[str] = None,
                 factor: float = 0.5, patience: int = 2, cooldown: int = 0, min_lr: float = 0.0,
                 min_delta: float = 0.0, mode: str = "auto", verbose: int = 0,
                 name: Optional[str] = None):
        super().__init__(class_id=class_id, monitor=monitor, mode=mode, min_delta=min_delta,
                         name=name or "recall_reduce_lr_on_plateau")
        if not (isinstance(factor, (int, float)) and 0.0 < factor < 1.0):
            raise ValueError(f"factor must be in (0, 1), got {factor!r}.")
        for argument, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{argument} must be an integer >= 0, got {value!r}.")
        if not (isinstance(min_lr, (int, float)) and math.isfinite(min_lr) and min_lr >= 0):
            raise ValueError(f"min_lr must be a finite number >= 0, got {min_lr!r}.")
        self.factor = float(factor)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.verbose = int(verbose)
        self.cooldown_counter = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="cooldown_counter")

    def reset_state(self) -> None:
        super().reset_state()
        self.cooldown_counter.assign(0)

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        _settable_learning_rate(getattr(self.model, "optimizer", None))

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        value = self.current_value(logs)
        if value is not None:
            in_cooldown = int(self.cooldown_counter.numpy()) > 0
            if in_cooldown:
                self.cooldown_counter.assign_sub(1)
                self.wait.assign(0)
            if self.is_improvement(value):
                self.record_improvement(value, epoch)
            elif not in_cooldown:
                self.wait.assign_add(1)
                if int(self.wait.numpy()) >= max(self.patience, 1):
                    self._reduce(epoch)
        self.mark_epoch(epoch)

    def _reduce(self, epoch: int) -> None:
        optimizer = self.model.optimizer
        old = float(np.asarray(optimizer.learning_rate))
        if old > self.min_lr:
            new = max(old * self.factor, self.min_lr)
            optimizer.learning_rate = new
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} has not improved for "
                      f"{int(self.wait.numpy())} epochs; learning rate {old:.3g} -> {new:.3g}.")
        self.cooldown_counter.assign(self.cooldown)
        self.wait.assign(0)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "patience": self.patience,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "verbose": self.verbose}
