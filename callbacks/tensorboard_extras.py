"""TensorBoard beyond scalars: a confusion-matrix image and per-class PR curves per evaluation, and hparams.

Rendering uses NumPy only (a 3x5 pixel digit font), so no plotting library is needed.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from trainer.evaluation import EvaluationResult, ModelLogits

# 3x5 bitmaps of the digits 0-9, one string of 15 bits per digit (rows top to bottom).
_DIGITS = ("111101101101111", "010110010010111", "111001111100111", "111001111001111",
           "101101111001001", "111100111001111", "111100111101111", "111001001001001",
           "111101111101111", "111101111001111")
_LIGHT = np.array([255, 255, 255], np.float64)
_DARK = np.array([8, 48, 107], np.float64)

FINAL_METRICS = ("balanced_accuracy", "macro_f1", "min_recall", "accuracy", "loss")


def _digit_mask(text: str, scale: int) -> np.ndarray:
    glyphs = [np.array([int(b) for b in _DIGITS[int(c)]], bool).reshape(5, 3) for c in text]
    spaced = []
    for index, glyph in enumerate(glyphs):
        if index:
            spaced.append(np.zeros((5, 1), bool))
        spaced.append(glyph)
    mask = np.concatenate(spaced, axis=1)
    return np.kron(mask, np.ones((scale, scale), bool))


def render_confusion_matrix(matrix: np.ndarray, *, cell_size: int = 28) -> np.ndarray:
    """Renders a confusion matrix as an RGB image (uint8 `[K * cell, K * cell, 3]`).

    Rows are true classes, columns predicted classes (top-left is class 0).
    Each cell is shaded by its row-normalised value (white 0 to dark blue 1:
    the diagonal reads as per-class recall) and shows it as a whole
    percentage.

    Args:
      matrix: `[K, K]` counts.
      cell_size: Pixels per cell (>= 16 to fit "100").
    """
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square [K, K], got shape {matrix.shape}.")
    if cell_size < 16:
        raise ValueError(f"cell_size must be at least 16, got {cell_size}.")
    k = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    image = np.zeros((k * cell_size, k * cell_size, 3), np.uint8)
    scale = 2 if cell_size >= 26 else 1
    for row in range(k):
        for column in range(k):
            value = normalised[row, column]
            top, left = row * cell_size, column * cell_size
            cell = image[top:top + cell_size, left:left + cell_size]
            cell[...] = np.round(_LIGHT + value * (_DARK - _LIGHT)).astype(np.uint8)
            cell[-1, :] = cell[:, -1] = 200  # grid lines
            mask = _digit_mask(str(int(round(100 * value))), scale)
            y = (cell_size - mask.shape[0]) // 2
            x = (cell_size - mask.shape[1]) // 2
            ink = 255 if value > 0.5 else 0
            cell[y:y + mask.shape[0], x:x + mask.shape[1]][mask] = ink
    return image


def pr_curve_summaries(labels: np.ndarray, probabilities: np.ndarray, *, num_thresholds: int = 51,
                       class_names: Optional[Sequence[str]] = None) -> list:
    """One PR-curve `Summary` protobuf per class (one-vs-rest on the class's probability)."""
    labels = np.asarray(labels, np.int64)
    summaries = []
    for class_id in range(probabilities.shape[1]):
        name = class_names[class_id] if class_names else str(class_id)
        summaries.append(pr_curve_summary.pb(
            f"pr_curve/{class_id}", labels == class_id,
            np.clip(probabilities[:, class_id], 0.0, 1.0), num_thresholds=num_thresholds,
            display_name=f"PR curve of class {class_id} ({name})"))
    return summaries


def _hparam_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return str(value)


def write_hparams(writer: tf.summary.SummaryWriter, hparams: Mapping[str, Any],
                  metric_tags: Sequence[str]) -> None:
    """Writes the hparams plugin's experiment config and session start (None values left out)."""
    values = {name: _hparam_value(value) for name, value in hparams.items() if value is not None}
    with writer.as_default():
        hparams_api.hparams_config(
            hparams=[hparams_api.HParam(name) for name in sorted(values)],
            metrics=[hparams_api.Metric(tag) for tag in metric_tags])
        hparams_api.hparams(values, start_time_secs=int(time.time()))
    writer.flush()


class TensorBoardExtras(keras.callbacks.Callback):
    """Writes, per evaluation, a confusion-matrix image and PR curves; the run's hparams and final metrics.

    At the end of each epoch it takes the logits of the epoch's evaluation
    (in a `Trainer`: the `EvaluationResult` of its one pass over
    `validation_data`, so no second pass; in `model.fit`: one pass of its own
    over the `validation_data` given here) and writes, under `<log_dir>/<run>`
    at the optimizer's step (the step the Trainer writes its scalars at): the
    image `confusion_matrix` (rows true class, row-normalised) and the PR
    curves `pr_curve/<k>` (one-vs-rest on class k's probability). With
    `hparams`, it writes the hparams plugin's config and session start under
    `<log_dir>` when training begins, and the final values `final/<name>`
    (balanced accuracy, macro-F1, minimum recall, accuracy, loss, and
    `recall/<k>`, from the last epoch's `val_` logs) when
    it ends, so each run is one row of the hparams table.

    Args:
      log_dir: The run directory (the Trainer's `model_dir`).
      validation_data: Batched `(features, labels)` data to render in
        `model.fit`; None in a `Trainer`, which hands over its evaluation.
      class_names: Names shown in the PR curves' display names.
      hparams: Hyperparameters to record (name -> bool/int/float/str).
      run: Sub-directory of the per-evaluation summaries.
      num_thresholds: Points per PR curve.
      enabled: False on workers other than the chief.
    """

    needs_validation_logits = True  # The Trainer's evaluation then carries logits.

    def __init__(self, log_dir: str, validation_data: Optional[tf.data.Dataset] = None, *,
                 class_names: Optional[Sequence[str]] = None,
                 hparams: Optional[Mapping[str, Any]] = None, run: str = "eval",
                 num_thresholds: int = 51, enabled: bool = True):
        super().__init__()
        if not log_dir:
            raise ValueError("log_dir must be a directory path, got an empty value.")
        if int(num_thresholds) < 2:
            raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds!r}.")
        self.log_dir = log_dir
        self.class_names = list(class_names) if class_names else None
        self.hparams = dict(hparams) if hparams else None
        self.run = run
        self.num_thresholds = int(num_thresholds)
        self.enabled = bool(enabled)
        self._collector = None if validation_data is None else ModelLogits(validation_data)
        self._evaluation: Optional[EvaluationResult] = None
        self._writers: Dict[str, tf.summary.SummaryWriter] = {}
        self._last_logs: Dict[str, Any] = {}

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def _step(self) -> int:
        return int(np.asarray(self.model.optimizer.iterations))

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.enabled and self.hparams is not None:
            k = self._num_classes()
            tags = [f"final/{name}" for name in FINAL_METRICS] + [f"final/recall/{j}" for j in range(k)]
            write_hparams(self._writer(""), self.hparams, tags)

    def _num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        try:
            return int(self.model.output_shape[-1])
        except (AttributeError, ValueError, RuntimeError, TypeError):
            return 0

    def on_evaluation(self, result: EvaluationResult) -> None:
        """The Trainer's evaluation of this epoch (with logits): what `on_epoch_end` renders."""
        self._evaluation = result

    def _epoch_evaluation(self) -> EvaluationResult:
        result, self._evaluation = self._evaluation, None
        if result is not None and result.logits is not None:
            return result
        if self._collector is None:
            raise ValueError("TensorBoardExtras has nothing to render: pass validation_data to "
                             "Trainer.fit (or, in model.fit, to TensorBoardExtras).")
        logits, labels = self._collector(self.model)
        return EvaluationResult.from_logits(logits, labels)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._last_logs = dict(logs or {})
        if not self.enabled:
            self._evaluation = None
            return
        result = self._epoch_evaluation()
        logits, labels, matrix = result.logits, result.labels, result.confusion_matrix
        shifted = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        step = self._step()
        with self._writer(self.run).as_default(step=step):
            tf.summary.image("confusion_matrix", render_confusion_matrix(matrix)[np.newaxis],
                             description="Rows: true class; columns: predicted; row-normalised %.")
            for summary in pr_curve_summaries(labels, probabilities,
                                              num_thresholds=self.num_thresholds,
                                              class_names=self.class_names):
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
        self._writer(self.run).flush()

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.enabled and self.hparams is not None and self._last_logs:
            logs = self._last_logs
            prefix = "val_" if any(key.startswith("val_") for key in logs) else ""
            names = list(FINAL_METRICS) + [key[len(prefix):] for key in logs
                                           if key.startswith(prefix + "recall/")]
            with self._writer("").as_default(step=self._step()):
                for name in names:
                    value = logs.get(prefix + name)
                    if value is not None and np.isfinite(float(value)):
                        tf.summary.scalar(f"final/{name}", float(value))
        for writer in self._writers.values():
            writer.flush()
