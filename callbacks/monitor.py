"""The shared base of the recall-driven callbacks: which log value to follow, and checkpointed state.

`MonitorCallback` is both a Keras callback and a `tf.Module`, so the Trainer's
checkpoints save its best value and wait counters and a resumed run goes on as
an uninterrupted one would.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Optional, Union

import keras
import numpy as np
import tensorflow as tf

ClassId = Union[int, str, None]

_MODES = ("auto", "min", "max")


def resolve_monitor(class_id: ClassId = None, monitor: Optional[str] = None) -> str:
    """The log key a callback follows.

    Args:
      class_id: An integer `k` (follow `val_recall/<k>`), `'min'` (follow
        `val_min_recall`, the worst class) or `'balanced'` (follow
        `val_balanced_accuracy`).
      monitor: Any log key instead, e.g. `'val_macro_f1'` or `'recall/3'`
        (the training value). Give `class_id` or `monitor`, not both.

    Returns:
      The log key, e.g. `'val_recall/6'`.

    Raises:
      ValueError: naming `class_id` or `monitor` when neither, both, or a bad
        value is given.
    """
    if (class_id is None) == (monitor is None):
        raise ValueError(
            f"Give exactly one of class_id (an int, 'min' or 'balanced') and monitor (a log key); "
            f"got class_id={class_id!r}, monitor={monitor!r}.")
    if monitor is not None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a non-empty log key such as 'val_recall/3', got {monitor!r}.")
        return monitor
    if class_id == "min":
        return "val_min_recall"
    if class_id == "balanced":
        return "val_balanced_accuracy"
    if isinstance(class_id, (int, np.integer)) and not isinstance(class_id, bool) and class_id >= 0:
        return f"val_recall/{int(class_id)}"
    raise ValueError(f"class_id must be a non-negative int, 'min' or 'balanced', got {class_id!r}.")


def resolve_mode(mode: str, monitor: str) -> str:
    """`'min'` or `'max'`; `'auto'` is `'min'` for losses and `'max'` otherwise.

    Raises:
      ValueError: naming `mode` when it is not 'auto', 'min' or 'max'.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}.")
    if mode != "auto":
        return mode
    return "min" if monitor.rsplit("/", 1)[0].endswith("loss") else "max"


class MonitorCallback(keras.callbacks.Callback, tf.Module):
    """Base of callbacks that follow one logged value (by default a class's recall).

    Keeps the best value seen, the epoch it was seen, the number of epochs
    without improvement and the last epoch seen in `tf.Variable`s. Because the
    callback is a `tf.Module`, `Trainer.checkpoint_items()` saves them, so a
    run resumed from a checkpoint carries on with the same counters.

    The state starts afresh when a new training run begins, which the
    callback recognises by the epoch number starting again at or below the
    last epoch it saw (a second `model.fit` call); a resumed run continues
    the epoch numbering, so it keeps the state.

    Subclasses implement `on_epoch_end` with `current_value(logs)` and
    `is_improvement(value)`, and extend `reset_state()` for their own state.

    Args:
      class_id: `k`, `'min'` or `'balanced'` (see `resolve_monitor`).
      monitor: A log key instead of `class_id`.
      mode: `'auto'`, `'min'` or `'max'` (`'auto'`: max unless a loss).
      min_delta: Smallest change that counts as an improvement (>= 0).
      name: Module name.
    """

    # Keras sets these; the model and the params dict must not become
    # checkpoint dependencies of the callback.
    _UNTRACKED_ATTRIBUTES = ("_model", "params")
    _TF_MODULE_IGNORED_PROPERTIES = tf.Module._TF_MODULE_IGNORED_PROPERTIES.union(
        _UNTRACKED_ATTRIBUTES)

    def __init__(self, *, class_id: ClassId = None, monitor: Optional[str] = None,
                 mode: str = "auto", min_delta: float = 0.0, name: Optional[str] = None):
        tf.Module.__init__(self, name=name)
        keras.callbacks.Callback.__init__(self)
        if class_id is None and monitor is None:
            class_id = "min"
        self.class_id = class_id
        self.monitor = resolve_monitor(class_id, monitor)
        self.mode = resolve_mode(mode, self.monitor)
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}.")
        self.min_delta = float(min_delta)
        self._user_mode = mode
        self.best = tf.Variable(self._worst_value(), dtype=tf.float64, trainable=False, name="best")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self.last_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="last_epoch")
        self._warned_missing = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._UNTRACKED_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _worst_value(self) -> float:
        return -np.inf if self.mode == "max" else np.inf

    # ----------------------------------------------------------------- state

    def reset_state(self) -> None:
        """Forgets the best value and counters (a new training run begins)."""
        self.best.assign(self._worst_value())
        self.best_epoch.assign(-1)
        self.wait.assign(0)
        self.last_epoch.assign(-1)

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if epoch <= int(self.last_epoch.numpy()):
            self.reset_state()

    def mark_epoch(self, epoch: int) -> None:
        """Records that `epoch` has been seen (call at the end of `on_epoch_end`)."""
        self.last_epoch.assign(int(epoch))

    # ------------------------------------------------------------ monitoring

    def current_value(self, logs: Optional[Dict[str, Any]]) -> Optional[float]:
        """The monitored value in `logs`, or None (with one warning) when absent or NaN."""
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(float(value)):
            if not self._warned_missing:
                available = ", ".join(sorted((logs or {}).keys())) or "none"
                reason = "is not in the logs" if value is None else f"is {value}"
                warnings.warn(
                    f"{type(self).__name__} follows {self.monitor!r}, which {reason}; skipping. "
                    f"Available: {available}. (Validation values need validation data; in "
                    f"model.fit, per-class values need callbacks.PerClassMetrics.)", stacklevel=3)
                self._warned_missing = True
            return None
        return float(value)

    def is_improvement(self, value: float) -> bool:
        """Whether `value` beats the best by more than `min_delta`."""
        best = float(self.best.numpy())
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta

    def record_improvement(self, value: float, epoch: int) -> None:
        self.best.assign(value)
        self.best_epoch.assign(int(epoch))
        self.wait.assign(0)

    def get_config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"mode": self._user_mode, "min_delta": self.min_delta}
        if self.class_id is not None:
            config["class_id"] = self.class_id
        else:
            config["monitor"] = self.monitor
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "MonitorCallback":
        return cls(**config)
