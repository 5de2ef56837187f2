"""TensorBoard beyond scalars: a confusion-matrix image and per-class PR curves per evaluation, and hparams.

The image is drawn by a renderer the caller passes (the command line passes the
report's, `trainer.reporting.figures.confusion_matrix_png`: counts and row
percentages, class names on both axes, a colour scale), else by a small NumPy
renderer here (row percentages in a 3x5 pixel font, class indices along the
edges), so no plotting library is needed. Past `max_matrix_classes` classes only
those of lowest recall (and the target class) are drawn, so the image stays
readable and its cost bounded.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.pr_curve import metadata as pr_curve_metadata

from callbacks.hparams import FINAL_METRICS, Session, write_session_end
from trainer.checks import check_integer
from trainer.evaluation import EvaluationResult, ModelLogits
from trainer.summaries import OVERALL_GROUP, class_tag, class_title

# A renderer: (counts [K, K], class names, the classes to draw or None for all) -> PNG bytes.
MatrixRenderer = Callable[[np.ndarray, Sequence[str], Optional[Sequence[int]]], bytes]
CONFUSION_MATRIX_TAG = f"{OVERALL_GROUP}/confusion_matrix"
MAX_MATRIX_CLASSES = 30

# 3x5 bitmaps of the digits 0-9, one string of 15 bits per digit (rows top to bottom).
_DIGITS = ("111101101101111", "010110010010111", "111001111100111", "111001111001111",
           "101101111001001", "111100111001111", "111100111101111", "111001001001001",
           "111101111101111", "111101111001111")
_LIGHT = np.array([255, 255, 255], np.float64)
_DARK = np.array([8, 48, 107], np.float64)
_HEADER = np.array([236, 236, 236], np.uint8)


def _digit_mask(text: str, scale: int) -> np.ndarray:
    glyphs = [np.array([int(b) for b in _DIGITS[int(c)]], bool).reshape(5, 3) for c in text]
    spaced = []
    for index, glyph in enumerate(glyphs):
        if index:
            spaced.append(np.zeros((5, 1), bool))
        spaced.append(glyph)
    mask = np.concatenate(spaced, axis=1)
    return np.kron(mask, np.ones((scale, scale), bool))


def row_percentages(matrix: np.ndarray, totals: Optional[np.ndarray] = None) -> np.ndarray:
    """Whole percentages of each row's total that add up to 100 (largest remainder); 0 for empty rows.

    Args:
      matrix: `[R, C]` counts.
      totals: `[R]` row totals (default: the row sums; larger when columns are left out,
        and then the row adds up to its drawn share).
    """
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1) if totals is None else np.asarray(totals, np.float64)
    exact = np.divide(100.0 * matrix, totals[:, None], out=np.zeros_like(matrix), where=totals[:, None] > 0)
    floors = np.floor(exact)
    target = np.round(exact.sum(axis=1))
    missing = (target - floors.sum(axis=1)).astype(np.int64)
    order = np.argsort(-(exact - floors), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(matrix.shape[1])[None, :].repeat(matrix.shape[0], 0), axis=1)
    return (floors + (ranks < missing[:, None])).astype(np.int64)


def render_confusion_matrix(matrix: np.ndarray, *, cell_size: int = 28,
                            class_ids: Optional[Sequence[int]] = None,
                            totals: Optional[np.ndarray] = None) -> np.ndarray:
    """Renders a confusion matrix as an RGB image (uint8 `[(K + 1) * cell, (K + 1) * cell, 3]`).

    Rows are true classes, columns predicted classes; the first row and
    column hold the class indices (grey). Each cell is shaded by its share
    of the true class's rows (white 0 to dark blue 1: the diagonal reads as
    per-class recall) and shows it as a whole percentage (rows add up to 100),
    in ink that contrasts with the shade.

    Args:
      matrix: `[K, K]` counts.
      cell_size: Pixels per cell (>= 16 to fit "100").
      class_ids: The class index of each row and column (default 0..K-1).
      totals: `[K]` row totals when `matrix` is a subset of a larger matrix's
        rows and columns (the percentages are then of the whole row).
    """
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square [K, K], got shape {matrix.shape}.")
    if cell_size < 16:
        raise ValueError(f"cell_size must be at least 16, got {cell_size}.")
    k = matrix.shape[0]
    ids = list(range(k)) if class_ids is None else [int(c) for c in class_ids]
    percent = row_percentages(matrix, totals)
    shares = percent / 100.0
    colours = np.round(_LIGHT + shares[..., None] * (_DARK - _LIGHT)).astype(np.uint8)
    size = (k + 1) * cell_size
    image = np.empty((size, size, 3), np.uint8)
    image[...] = _HEADER
    image[cell_size:, cell_size:] = np.repeat(np.repeat(colours, cell_size, axis=0), cell_size, axis=1)
    image[cell_size - 1::cell_size, :] = 200  # grid lines
    image[:, cell_size - 1::cell_size] = 200
    scale = 2 if cell_size >= 26 else 1
    masks: Dict[str, np.ndarray] = {}

    def stamp(text: str, row: int, column: int, ink: int) -> None:
        mask = masks.setdefault(text, _digit_mask(text, scale))
        if mask.shape[1] > cell_size - 2:
            mask = masks.setdefault(text + "/1", _digit_mask(text, 1))
        top = row * cell_size + (cell_size - mask.shape[0]) // 2
        left = column * cell_size + (cell_size - mask.shape[1]) // 2
        image[top:top + mask.shape[0], left:left + mask.shape[1]][mask] = ink

    for index, class_id in enumerate(ids):
        stamp(str(class_id), 0, index + 1, 60)
        stamp(str(class_id), index + 1, 0, 60)
    # Ink by luminance (white on dark cells only), one stamp per cell.
    dark = colours.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722]) < 128
    for row in range(k):
        for column in range(k):
            stamp(str(int(percent[row, column])), row + 1, column + 1, 255 if dark[row, column] else 0)
    return image


def matrix_classes(matrix: np.ndarray, limit: int, keep: Optional[int] = None) -> Optional[np.ndarray]:
    """The classes an image of `matrix` shows: None (all) up to `limit`, else the `limit` of lowest recall.

    `keep` (e.g. the target class) is always among them; classes without rows come last.
    """
    matrix = np.asarray(matrix, np.float64)
    k = matrix.shape[0]
    if k <= limit:
        return None
    totals = matrix.sum(axis=1)
    recall = np.divide(np.diag(matrix), totals, out=np.full(k, np.inf), where=totals > 0)
    ranked = [int(c) for c in np.argsort(recall, kind="stable")]
    chosen = [] if keep is None else [int(keep)]
    chosen += [c for c in ranked if c not in chosen][:limit - len(chosen)]
    return np.array(sorted(chosen), np.int64)


def numpy_matrix_png(matrix: np.ndarray, class_names: Sequence[str],
                     classes: Optional[Sequence[int]] = None) -> bytes:
    """`render_confusion_matrix` as PNG bytes (a `MatrixRenderer` that needs no plotting library)."""
    del class_names  # the NumPy font has digits only: the edges show class indices
    matrix = np.asarray(matrix, np.int64)
    chosen = np.arange(matrix.shape[0]) if classes is None else np.asarray(classes, np.int64)
    cell = 28 if len(chosen) <= 12 else (22 if len(chosen) <= 20 else 18)
    image = render_confusion_matrix(matrix[np.ix_(chosen, chosen)], cell_size=cell, class_ids=chosen,
                                    totals=matrix[chosen].sum(axis=1))
    return tf.io.encode_png(image).numpy()


def png_size(png: bytes) -> tuple:
    """`(width, height)` of a PNG, from its header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def write_png(tag: str, png: bytes, step: int, *, description: str = "") -> None:
    """Writes encoded PNG bytes as an image summary (as `tf.summary.image` would, without decoding)."""
    width, height = png_size(png)
    metadata = image_metadata.create_summary_metadata(display_name=None, description=description)
    tf.summary.write(tag, tf.constant([str(width).encode(), str(height).encode(), png]), step=step,
                     metadata=metadata.SerializeToString())


def pr_curve_counts(labels: np.ndarray, probabilities: np.ndarray, num_thresholds: int) -> np.ndarray:
    """float32 `[K, 6, T]`: per class, TP, FP, TN, FN, precision and recall at T evenly spaced thresholds.

    The PR-curve plugin's data, as `tensorboard.plugins.pr_curve.summary.pb`
    computes it for one class (one-vs-rest on the class's probability), for
    all classes at once.
    """
    labels = np.asarray(labels, np.int64)
    n, k = probabilities.shape
    t = int(num_thresholds)
    buckets = np.floor(np.clip(probabilities, 0.0, 1.0) * (t - 1)).astype(np.int64)
    cells = np.arange(k)[None, :] * t + buckets  # [N, K]: (class, bucket) of each row's probability
    everything = np.bincount(cells.ravel(), minlength=k * t).reshape(k, t)
    positives = np.bincount(cells[np.arange(n), labels], minlength=k * t).reshape(k, t)
    tp = np.cumsum(positives[:, ::-1], axis=1)[:, ::-1].astype(np.float64)
    fp = np.cumsum((everything - positives)[:, ::-1], axis=1)[:, ::-1].astype(np.float64)
    tn, fn = fp[:, :1] - fp, tp[:, :1] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall], axis=1).astype(np.float32)


def pr_curve_summary(labels: np.ndarray, probabilities: np.ndarray, *, num_thresholds: int = 51,
                     class_names: Optional[Sequence[str]] = None,
                     description: str = "") -> summary_pb2.Summary:
    """One `Summary` of a PR curve per class (one-vs-rest on its probability), tag `pr_curve/<k>[_<name>]`."""
    data = pr_curve_counts(labels, probabilities, num_thresholds)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size)
                                                   for size in data.shape[1:]])
    summary = summary_pb2.Summary()
    for class_id in range(data.shape[0]):
        title = class_title(class_id, class_names)
        metadata = pr_curve_metadata.create_summary_metadata(
            display_name=f"PR curve of {title}", num_thresholds=int(num_thresholds),
            description=f"One-vs-rest on the softmax probability of {title}"
                        + (f"; {description}" if description else "") + ".")
        summary.value.add(tag=f"pr_curve/{class_tag(class_id, class_names)}", metadata=metadata,
                          tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape,
                                                        tensor_content=data[class_id].tobytes()))
    return summary


class TensorBoardExtras(keras.callbacks.Callback):
    """Writes, per evaluation, a confusion-matrix image and PR curves; the run's hparams and final metrics.

    At the end of each epoch it takes the logits of the epoch's evaluation
    (in a `Trainer`: the `EvaluationResult` of its one pass over
    `validation_data`, so no second pass; in `model.fit`: one pass of its own
    over the `validation_data` given here) and writes, under `<log_dir>/<run>`
    at the optimizer's step (the step the Trainer writes its scalars at): the
    PR curves `pr_curve/<k>[_<name>]` (one-vs-rest on class k's probability)
    and, every `confusion_matrix_every` epochs and after the last one, the
    image `overall/confusion_matrix` of the argmax decisions. With `hparams`,
    it writes the HParams experiment config and session start under
    `<log_dir>` when training begins; with `final_metrics` too, the final
    values `final/<name>` (balanced accuracy, worst-class recall, macro-F1,
    accuracy: the last epoch's `val_` logs) and the session's end when it
    ends, so each run is one row of the HParams table. (The command line
    writes those itself, from the evaluation data: `final_metrics=False`.)

    Args:
      log_dir: The run directory (the Trainer's `model_dir`).
      validation_data: Batched `(features, labels)` data to render in
        `model.fit`; None in a `Trainer`, which hands over its evaluation.
      class_names: Names in titles, tags and the image.
      hparams: The run's settings (name -> value), or a `callbacks.hparams.Session`.
      run: Sub-directory of the per-evaluation summaries.
      num_thresholds: Points per PR curve.
      enabled: False on workers other than the chief.
      matrix_renderer: Draws the image (`MatrixRenderer`); default `numpy_matrix_png`.
      confusion_matrix_every: Draw the image after every this many epochs
        (and after the last one); 0: only after the last one.
      max_matrix_classes: Past this many classes the image shows only the
        classes of lowest recall (and `target_class`).
      target_class: A class the image always shows.
      final_metrics: Write `final/*` and the session end at the end of training.
      data_description: Which data the evaluation is, for the descriptions.
    """

    needs_validation_logits = True  # The Trainer's evaluation then carries logits.

    def __init__(self, log_dir: str, validation_data: Optional[tf.data.Dataset] = None, *,
                 class_names: Optional[Sequence[str]] = None,
                 hparams: Union[Mapping[str, Any], Session, None] = None, run: str = "eval",
                 num_thresholds: int = 51, enabled: bool = True,
                 matrix_renderer: Optional[MatrixRenderer] = None, confusion_matrix_every: int = 1,
                 max_matrix_classes: int = MAX_MATRIX_CLASSES, target_class: Optional[int] = None,
                 final_metrics: bool = True, data_description: str = ""):
        super().__init__()
        if not log_dir:
            raise ValueError("log_dir must be a directory path, got an empty value.")
        if int(num_thresholds) < 2:
            raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds!r}.")
        self.confusion_matrix_every = check_integer(confusion_matrix_every, "confusion_matrix_every",
                                                    minimum=0)
        self.max_matrix_classes = check_integer(max_matrix_classes, "max_matrix_classes", minimum=2)
        self.log_dir = log_dir
        self.class_names = [str(n) for n in class_names] if class_names else None
        if hparams is None or isinstance(hparams, Session):
            self.session = hparams
        else:
            self.session = Session(values=dict(hparams))
        self.run = run
        self.num_thresholds = int(num_thresholds)
        self.enabled = bool(enabled)
        self.matrix_renderer = matrix_renderer or numpy_matrix_png
        self.target_class = None if target_class is None else int(target_class)
        self.final_metrics = bool(final_metrics)
        self.data_description = data_description
        self._collector = None if validation_data is None else ModelLogits(validation_data)
        self._evaluation: Optional[EvaluationResult] = None
        self._writers: Dict[str, tf.summary.SummaryWriter] = {}
        self._last_logs: Dict[str, Any] = {}
        self._undrawn: Optional[tuple] = None  # (matrix, step) of the last epoch, when not drawn

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def _step(self) -> int:
        return int(np.asarray(self.model.optimizer.iterations))

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._undrawn = None
        if self.enabled and self.session is not None:
            self.session.write_start(self._writer(""), step=self._step())

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

    def _names(self, k: int) -> list:
        return self.class_names if self.class_names and len(self.class_names) == k else [
            str(j) for j in range(k)]

    def draw_confusion_matrix(self, matrix: np.ndarray, step: int) -> None:
        """Writes the image of `matrix` (counts) at `step` under `<log_dir>/<run>`."""
        matrix = np.asarray(matrix, np.int64)
        classes = matrix_classes(matrix, self.max_matrix_classes, self.target_class)
        png = self.matrix_renderer(matrix, self._names(matrix.shape[0]), classes)
        subset = "" if classes is None else (
            f" Only the {len(classes)} classes of lowest recall of {matrix.shape[0]} are drawn"
            + (" (and the target class)" if self.target_class is not None else "") + ".")
        on = f" on {self.data_description}" if self.data_description else ""
        with self._writer(self.run).as_default():
            write_png(CONFUSION_MATRIX_TAG, png, step, description=(
                f"Confusion matrix of the argmax decisions{on} after the epoch: rows are the true "
                f"class, columns the predicted one; counts and row percentages.{subset}"))
        self._writer(self.run).flush()

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
        curves = pr_curve_summary(labels, probabilities, num_thresholds=self.num_thresholds,
                                  class_names=self.class_names,
                                  description=f"measured on {self.data_description}" if self.data_description
                                  else "")
        with self._writer(self.run).as_default(step=step):
            tf.summary.experimental.write_raw_pb(curves.SerializeToString(), step=step)
        self._writer(self.run).flush()
        every = self.confusion_matrix_every
        if every and (epoch + 1) % every == 0:
            self.draw_confusion_matrix(matrix, step)
            self._undrawn = None
        else:
            self._undrawn = (np.array(matrix), step)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.enabled and self._undrawn is not None:
            self.draw_confusion_matrix(*self._undrawn)  # the last epoch's image, always
        self._undrawn = None
        if self.enabled and self.session is not None and self.final_metrics and self._last_logs:
            logs = self._last_logs
            prefix = "val_" if any(key.startswith("val_") for key in logs) else ""
            with self._writer("").as_default(step=self._step()):
                for tag, _, description in FINAL_METRICS:
                    value = logs.get(prefix + tag[len("final/"):])
                    if value is not None and np.isfinite(float(value)):
                        tf.summary.scalar(tag, float(value), description=description)
            write_session_end(self._writer(""), "success", step=self._step())
        for writer in self._writers.values():
            writer.flush()
