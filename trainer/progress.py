"""The progress lines of training: one per compiled loop, and one per epoch that says what matters.

The epoch line reads, e.g.:

    epoch 3/10 0.4s 61,200 examples/s loss 0.4390 | validation: balanced accuracy 0.7005,
    worst class 8 (bag) recall 0.2500 | class 9 (boot) recall 0.5050 (target 0.80), weight 2.31

the loss and speed, the per-epoch evaluation's balanced accuracy, its worst class and that
class's recall, and the monitored (target) class's recall next to the controller's weight of it
(`class_weight/<k>` in the logs, which the recall-target controller adds: put this callback after
it). Uses a Keras `Progbar` on a terminal and absl logging otherwise.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Dict, Mapping, Optional, Sequence

import keras
import numpy as np
from absl import logging

_RECALL = re.compile(r"^val_recall/(\d+)$")


def _class(k: int, class_names: Optional[Sequence[str]]) -> str:
    if class_names and k < len(class_names) and str(class_names[k]) != str(k):
        return f"class {k} ({class_names[k]})"
    return f"class {k}"


def epoch_summary(logs: Mapping[str, Any], *, class_names: Optional[Sequence[str]] = None,
                  target_class: Optional[int] = None, target_recall: Optional[float] = None,
                  evaluated_on: str = "val", multi_label: bool = False) -> str:
    """What an epoch's logs say that matters, in one line (after the loss and speed).

    Args:
      logs: The epoch's logs (`loss`, `val_balanced_accuracy`, `val_recall/<k>`, `class_weight/<k>`).
      class_names: Names by class index.
      target_class: The monitored class: its recall (and weight, when the logs have it) is shown.
      target_recall: Its target, shown next to it.
      evaluated_on: What the `val_` figures are measured on, one word (e.g. "validation").
      multi_label: The classes are a multi-label task's label values (`trainer.tasks.MultiLabelTask`):
        the worst is the label of smallest recall (classes `2l + 1`), not "without label l".
    """
    parts = [f"loss {logs['loss']:.4f}"] if "loss" in logs else []
    recalls = {int(m.group(1)): float(v) for key, v in logs.items() if (m := _RECALL.match(key))}
    figures = []
    if "val_balanced_accuracy" in logs:
        figures.append(f"balanced accuracy {logs['val_balanced_accuracy']:.4f}")
    finite = {k: r for k, r in recalls.items() if np.isfinite(r) and (k % 2 or not multi_label)}
    if finite:
        worst = min(finite, key=lambda k: (finite[k], k))
        weight = logs.get(f"class_weight/{worst}") if target_class is None else None
        which = (f"label {class_names[worst]}" if multi_label and class_names
                 else _class(worst, class_names))
        figures.append(f"worst {which} recall {finite[worst]:.4f}"
                       + (f", weight {weight:.3g}" if weight is not None else ""))
    elif "val_min_recall" in logs:
        figures.append(f"worst-class recall {logs['val_min_recall']:.4f}")
    if figures:
        parts.append(f"| {evaluated_on}: " + ", ".join(figures))
    if target_class is not None and target_class in recalls:
        which = (f"label {class_names[target_class]}" if multi_label and class_names
                 else _class(target_class, class_names))
        text = f"| {which} recall {recalls[target_class]:.4f}"
        if target_recall is not None:
            text += f" (target {target_recall:g})"
        weight = logs.get(f"class_weight/{target_class}")
        if weight is not None:
            text += f", weight {weight:.3g}"
        parts.append(text)
    if not figures and "balanced_accuracy" in logs:
        parts.append(f"train balanced accuracy {logs['balanced_accuracy']:.4f}")
    return " ".join(parts)


class ProgressLogger(keras.callbacks.Callback):
    """Reports training progress after every compiled loop and at the end of every epoch.

    Args:
      global_batch_size: Examples per step, for the examples/s figure.
      steps_per_epoch: Steps per epoch when known (for the ETA).
      verbosity: 0 silent, 1 one line per loop and per epoch.
      use_progress_bar: Force (True) or forbid (False) the Keras progress
        bar; default: only when stdout is a terminal.
      class_names: Names by class index, for the epoch line.
      target_class: The monitored class (its recall and weight in the epoch line).
      target_recall: Its target recall.
      evaluated_on: What the per-epoch evaluation is, one word ("validation", "eval").
      multi_label: The classes are label values of a multi-label task (`epoch_summary`).
    """

    def __init__(self, global_batch_size: int, steps_per_epoch: Optional[int] = None, *,
                 verbosity: int = 1, use_progress_bar: Optional[bool] = None,
                 class_names: Optional[Sequence[str]] = None, target_class: Optional[int] = None,
                 target_recall: Optional[float] = None, evaluated_on: str = "val",
                 multi_label: bool = False):
        super().__init__()
        self.multi_label = bool(multi_label)
        self.global_batch_size = int(global_batch_size)
        self.steps_per_epoch = steps_per_epoch
        self.verbosity = int(verbosity)
        self.use_progress_bar = sys.stdout.isatty() if use_progress_bar is None else use_progress_bar
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.target_class = None if target_class is None else int(target_class)
        self.target_recall = target_recall
        self.evaluated_on = evaluated_on
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
        now = time.perf_counter()
        steps = batch - self._last_step
        rate = steps * self.global_batch_size / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, batch
        if not self.verbosity:
            return
        loss = (logs or {}).get("loss", float("nan"))
        if self._bar is not None:
            self._bar.update(batch + 1, values=[("loss", loss), ("examples/s", rate)])
            return
        if self.steps_per_epoch and batch + 1 >= self.steps_per_epoch:
            return  # the epoch's line follows
        eta = ""
        if self.steps_per_epoch:
            elapsed = now - self._started
            remaining = elapsed / (batch + 1) * (self.steps_per_epoch - batch - 1)
            eta = f" eta {remaining:.0f}s"
        logging.info("epoch %d step %d%s loss %.4f %.0f examples/s%s", self._epoch + 1, batch + 1,
                     f"/{self.steps_per_epoch}" if self.steps_per_epoch else "", loss, rate, eta)

    def epoch_line(self, epoch: int, logs: Dict[str, Any]) -> str:
        """The epoch's line: number, time, training speed, then `epoch_summary`."""
        elapsed = time.perf_counter() - self._started
        training = max(self._last_time - self._started, 1e-9)
        examples = (self._last_step + 1) * self.global_batch_size
        speed = f" {examples / training:,.0f} examples/s" if self._last_step >= 0 else ""
        summary = epoch_summary(logs, class_names=self.class_names, target_class=self.target_class,
                                target_recall=self.target_recall, evaluated_on=self.evaluated_on,
                                multi_label=self.multi_label)
        return f"epoch {epoch + 1}/{self._epochs or '?'} {elapsed:.1f}s{speed} {summary}"

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbosity:
            return
        line = self.epoch_line(epoch, dict(logs or {}))
        if self.use_progress_bar:
            print(line)
        else:
            logging.info(line)
