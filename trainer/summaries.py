"""TensorBoard summaries of a run: the writers of `train/` and `eval/`, their tags, descriptions and layout.

Tags are grouped so that TensorBoard's Time Series shows a few groups of several charts each:

    overall/<metric>             loss, accuracy, balanced_accuracy, macro_f1, min_recall (worst-class
                                 recall), learning_rate
    recall/<k>[_<name>]          per class, with the class name in the tag when the data name their
    precision/..., f1/...        classes (`recall/3_shirt`; `recall/3` when the name is the index)
    class_weight/<k>[_<name>]    the rule's weights after each epoch's callbacks (`train/` only)

Each run's first summary says what data it is (a text summary `run_description` and each tag's
description), and the root run gets a custom-scalars layout: multi-line charts of every class's
recall, precision and weight, and of the loss and the overall metrics.

Writes nothing on workers other than the chief (pass `enabled=False`).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

# Scalars of the whole model (not of one class): grouped under `overall/`.
OVERALL_METRICS = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "min_recall", "learning_rate")
# Per-class scalars: `<metric>/<k>` in the logs, `<metric>/<k>[_<name>]` in TensorBoard.
PER_CLASS_METRICS = ("recall", "precision", "f1", "support", "class_weight")
OVERALL_GROUP = "overall"
RUN_DESCRIPTION_TAG = "run_description"
_NAME_CHARS = 24
_UNSAFE = re.compile(r"[^\w.-]+")
_PER_CLASS_KEY = re.compile(r"^(?P<metric>[a-z][a-z0-9_]*)/(?P<k>\d+)$")

_WHAT = {
    "loss": "Mean per-example loss",
    "accuracy": "Share of rows whose argmax is their class",
    "balanced_accuracy": "Balanced accuracy: the mean of the per-class recalls (argmax)",
    "macro_f1": "Macro-F1: the mean of the per-class F1 scores (argmax)",
    "min_recall": "Worst-class recall: the smallest per-class recall (argmax)",
    "learning_rate": "The optimizer's learning rate at the end of the epoch",
    "recall": "Recall of {cls}: the share of its rows whose argmax is {cls}",
    "precision": "Precision of {cls}: the share of rows predicted {cls} (argmax) that are",
    "f1": "F1 score of {cls} (argmax)",
    "support": "Rows of {cls}",
    "class_weight": ("Weight of {cls} in the reweighting rule after the epoch's callbacks (a "
                     "recall-target controller's update of this epoch included): what the next epoch "
                     "trains with"),
}
_DEFAULT_RUNS = {
    "train": ("the training batches of each epoch (the figures accumulate over the epoch while the "
              "model changes)"),
    "eval": "the data given to `fit` as `validation_data`, evaluated once after each epoch",
}


def class_tag(k: int, class_names: Optional[Sequence[str]] = None) -> str:
    """`'3'`, or `'3_shirt'` when the class has a name other than its index (tag-safe, 24 characters)."""
    k = int(k)
    if not class_names or k >= len(class_names) or str(class_names[k]) == str(k):
        return str(k)
    name = _UNSAFE.sub("_", str(class_names[k]).strip()).strip("_")[:_NAME_CHARS]
    return f"{k}_{name}" if name else str(k)


def class_title(k: int, class_names: Optional[Sequence[str]] = None) -> str:
    """`'class 3 (shirt)'`, or `'class 3'` when the class has no name but its index."""
    k = int(k)
    if not class_names or k >= len(class_names) or str(class_names[k]) == str(k):
        return f"class {k}"
    return f"class {k} ({class_names[k]})"


def scalar_tag(name: str, class_names: Optional[Sequence[str]] = None) -> str:
    """The TensorBoard tag of a log name: `loss` -> `overall/loss`, `recall/3` -> `recall/3_shirt`.

    Other names are kept as they are.
    """
    if name in OVERALL_METRICS:
        return f"{OVERALL_GROUP}/{name}"
    match = _PER_CLASS_KEY.match(name)
    if match and match.group("metric") in PER_CLASS_METRICS:
        return f"{match.group('metric')}/{class_tag(int(match.group('k')), class_names)}"
    return name


def scalar_description(name: str, run_description: str = "",
                       class_names: Optional[Sequence[str]] = None) -> str:
    """A tag's description: what the number is, and (`run_description`) which data it comes from."""
    match = _PER_CLASS_KEY.match(name)
    if match and match.group("metric") in _WHAT:
        cls = class_title(int(match.group("k")), class_names)
        what = _WHAT[match.group("metric")].format(cls=cls)
        if match.group("metric") == "precision":
            what = f"{what} {cls}"
    else:
        what = _WHAT.get(name, "")
    if not run_description:
        return what + ("." if what else "")
    return f"{what}. Measured on {run_description}." if what else f"Measured on {run_description}."


def custom_scalars_layout(class_names: Optional[Sequence[str]] = None,
                          target_class: Optional[int] = None) -> layout_pb2.Layout:
    """The custom-scalars layout: multi-line charts of every class's recall, precision and weight.

    Lines are drawn for each run that has the tags (`train` and `eval`: toggle
    runs in the run selector). With `target_class`, a chart of that class's
    recall and precision as well.
    """
    def chart(title: str, pattern: str) -> layout_pb2.Chart:
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[pattern]))

    per_class = [chart("recall of every class", r"^recall/\d+"),
                 chart("precision of every class", r"^precision/\d+"),
                 chart("class weights (after each epoch's update)", r"^class_weight/\d+")]
    categories = []
    if target_class is not None:
        suffix = re.escape(class_tag(target_class, class_names))
        title = class_title(target_class, class_names)
        categories.append(layout_pb2.Category(title=f"target: {title}", chart=[
            chart(f"recall and precision of {title}", rf"^(recall|precision)/{suffix}$"),
            chart(f"weight of {title}", rf"^class_weight/{suffix}$")]))
    categories.append(layout_pb2.Category(title="every class", chart=per_class))
    categories.append(layout_pb2.Category(title="overall", chart=[
        chart("loss (train and eval)", rf"^{OVERALL_GROUP}/loss$"),
        chart("balanced accuracy and worst-class recall",
              rf"^{OVERALL_GROUP}/(balanced_accuracy|min_recall)$")]))
    return layout_pb2.Layout(category=categories)


def write_custom_scalars_layout(writer: tf.summary.SummaryWriter, layout: layout_pb2.Layout,
                                step: int = 0) -> None:
    """Writes `layout` for TensorBoard's Custom Scalars dashboard (its layouts of all runs are merged)."""
    metadata = custom_scalar_metadata.create_summary_metadata()
    with writer.as_default():
        tf.summary.write(custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                         tf.constant(layout.SerializeToString()), step=int(step),
                         metadata=metadata.SerializeToString())


_SCALAR_SHAPE = tensor_shape_pb2.TensorShapeProto()


def _scalar_metadata(description: str = "") -> summary_pb2.SummaryMetadata:
    """The metadata `tf.summary.scalar` writes (the scalars plugin's, with the description)."""
    return scalar_metadata.create_summary_metadata(display_name=None, description=description)


class SummaryWriters:
    """Writers of `<model_dir>/<run>` (`train`, `eval`, ...), with the tags of this module.

    Args:
      model_dir: Run directory; None disables writing.
      enabled: False on non-chief workers.
      class_names: Class names, for the tags and descriptions (None: indices).
    """

    def __init__(self, model_dir: Optional[str], *, enabled: bool = True,
                 class_names: Optional[Sequence[str]] = None):
        self._writers: Dict[str, tf.summary.SummaryWriter] = {}
        self._model_dir = model_dir if enabled else None
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.target_class: Optional[int] = None
        self.run_descriptions: Dict[str, str] = dict(_DEFAULT_RUNS)
        self._described: Set[Tuple[str, str]] = set()
        self._layout_written = False

    def describe(self, *, class_names: Optional[Sequence[str]] = None,
                 runs: Optional[Mapping[str, str]] = None, target_class: Optional[int] = None) -> None:
        """Says what the runs are before the first write: class names, each run's data, the target class.

        Args:
          class_names: Names by class index (tags `recall/3_shirt`, descriptions).
          runs: Run -> which data it measures, a phrase (e.g. "the validation
            split (992 rows: ...)"); written as the run's `run_description`
            text and into every tag's description.
          target_class: A class the layout gives charts of its own.
        """
        if class_names is not None:
            self.class_names = [str(n) for n in class_names]
        if runs:
            self.run_descriptions.update({run: str(text) for run, text in runs.items()})
        if target_class is not None:
            self.target_class = int(target_class)

    def writer(self, run: str) -> Optional[tf.summary.SummaryWriter]:
        """The writer of `run` ("train", "eval"; "" the run directory itself), created on first use."""
        if self._model_dir is None:
            return None
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self._model_dir, run))
        return self._writers[run]

    def _first_write(self, run: str, step: int) -> None:
        if not self._layout_written:
            self._layout_written = True
            write_custom_scalars_layout(self.writer(""), custom_scalars_layout(
                self.class_names, self.target_class), step)
            self.writer("").flush()
        description = self.run_descriptions.get(run)
        if description and (run, RUN_DESCRIPTION_TAG) not in self._described:
            self._described.add((run, RUN_DESCRIPTION_TAG))
            tf.summary.text(RUN_DESCRIPTION_TAG, f"`{run}`: {description}", step=step,
                            description="Which data this run's figures are measured on.")

    def write_scalars(self, run: str, scalars: Mapping[str, float], step: int) -> None:
        """Writes finite scalars under their tags (`scalar_tag`); NaN (a class without rows) is skipped.

        All of them go into one `Summary` (what `tf.summary.scalar` writes for
        each, in one write instead of one per value: a 200-class epoch has
        over a thousand).
        """
        writer = self.writer(run)
        if writer is None:
            return
        summary = summary_pb2.Summary()
        for name, value in scalars.items():
            if value is None or not np.isfinite(value):
                continue
            tag = scalar_tag(name, self.class_names)
            description = ""
            if (run, tag) not in self._described:  # TensorBoard keeps a tag's first metadata
                self._described.add((run, tag))
                description = scalar_description(name, self.run_descriptions.get(run, ""), self.class_names)
            summary.value.add(tag=tag, metadata=_scalar_metadata(description), tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_shape=_SCALAR_SHAPE, float_val=[float(value)]))
        with writer.as_default(step=int(step)):
            self._first_write(run, int(step))
            if summary.value:
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(step))
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
