"""A progress line per compiled loop: step, epoch, loss, examples/s and ETA.

Uses a Keras `Progbar` on a terminal and absl logging otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

import keras
from absl import logging


class ProgressLogger(keras.callbacks.Callback):
    """Reports training progress after every compiled loop.

    Args:
      global_batch_size: Examples per step, for the examples/s figure.
      steps_per_epoch: Steps per epoch when known (for the ETA).
      verbosity: 0 silent, 1 one line per loop.
      use_progress_bar: Force (True) or forbid (False) the Keras progress
        bar; default: only when stdout is a terminal.
    """

    def __init__(self, global_batch_size: int, steps_per_epoch: Optional[int] = None, *,
                 verbosity: int = 1, use_progress_bar: Optional[bool] = None):
        super().__init__()
        self.global_batch_size = int(global_batch_size)
        self.steps_per_epoch = steps_per_epoch
        self.verbosity = int(verbosity)
        self.use_progress_bar = sys.stdout.isatty() if use_progress_bar is None else use_progress_bar
        self._epoch = 0
        self._epochs = None
        self._bar: Optional[keras.utils.Progbar] = None
        self._started = 0.0
        self._last_time = 0.0
        self._last_step = -1

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs") if self.params else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._started = self._last_time = time.perf_counter()
        self._last_step = -1
        if self.verbosity and self.use_progress_bar:
            print(f"Epoch {epoch + 1}/{self._epochs or '?'}")
            self._bar = keras.utils.Progbar(self.steps_per_epoch, unit_name="step")

    def on_train_batch_end(self, batch, logs=None):
        if not self.verbosity:
            return
        now = time.perf_counter()
        steps = batch - self._last_step
        rate = steps * self.global_batch_size / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, batch
        loss = (logs or {}).get("loss", float("nan"))
        if self._bar is not None:
            self._bar.update(batch + 1, values=[("loss", loss), ("examples/s", rate)])
            return
        eta = ""
        if self.steps_per_epoch:
            elapsed = now - self._started
            remaining = elapsed / (batch + 1) * (self.steps_per_epoch - batch - 1)
            eta = f" eta {remaining:.0f}s"
        logging.info("epoch %d step %d%s loss %.4f %.0f examples/s%s", self._epoch + 1, batch + 1,
                     f"/{self.steps_per_epoch}" if self.steps_per_epoch else "", loss, rate, eta)

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbosity:
            return
        logs = logs or {}
        summary = " ".join(f"{key} {logs[key]:.4f}" for key in
                           ("loss", "balanced_accuracy", "val_loss", "val_balanced_accuracy",
                            "val_min_recall") if key in logs)
        line = f"epoch {epoch + 1} done in {time.perf_counter() - self._started:.1f}s: {summary}"
        if self.use_progress_bar:
            print(line)
        else:
            logging.info(line)
