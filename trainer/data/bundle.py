"""What `load_data` returns: the train, validation (chooses) and eval (reports) splits, and their facts.

A `DataSplit` knows its size, class counts and origin, builds `tf.data` pipelines and K folds on demand.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.checks import check_positive_integer

from . import splits
from .errors import DataWarning, checked

# What each split of a bundle is for (`DataBundle.splits_summary`).
ROLES = {"train": "trains the model",
         "validation": "chooses: recall-target controller, calibration, early stopping, LR schedule",
         "eval": "reports: the final metrics"}


class Pipeline(Protocol):
    """Builds the batched dataset of one split (implemented per source kind)."""

    def batched(self, batch_size: int, *, shuffle: bool, seed: int, repeat: bool,
                drop_remainder: bool,
                input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
        """Returns a dataset of (float32 features, int32 labels) batches."""

    def folds(self, k: int, seed: int, fold_counts: np.ndarray) -> List[Tuple["Pipeline", "Pipeline"]]:
        """(training side, held-out side) pipelines of each of `k` folds; `fold_counts` [k, K]."""


@dataclasses.dataclass
class DataSplit:
    """One split of the data.

    Attributes:
      name: 'train', 'validation' or 'eval' (folds: 'train_fold<j>', 'held_fold<j>').
      input_shape: Per-example feature shape, e.g. (20,) or (28, 28, 1).
      class_counts: int64 array [num_classes]: examples per class in this split.
      num_examples: Number of examples in this split.
      pipeline: Builds the tf.data pipelines (see `dataset`).
      origin: How the split was made, a phrase for reports (e.g. "a 0.2 stratified
        held-out test split of csv:data.csv").
      weighted: Whether its batches carry per-example sample weights, `(x, y, w)`.
    """

    name: str
    input_shape: tuple
    class_counts: np.ndarray
    num_examples: int
    pipeline: Pipeline = dataclasses.field(repr=False, compare=False, default=None)
    origin: str = ""
    weighted: bool = False

    def dataset(self, batch_size: int, *, shuffle: bool, seed: int, repeat: bool = False,
                drop_remainder: bool = False,
                input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
        """Builds a batched, prefetched pipeline over this split.

        Args:
          batch_size: Examples per batch (per input pipeline).
          shuffle: Whether to shuffle; seeded, reshuffled each epoch.
          seed: Shuffle seed.
          repeat: Whether to repeat forever.
          drop_remainder: Whether to drop the last partial batch (static batch dim).
          input_context: When given (from `distribute_datasets_from_function`),
            each input pipeline reads its own shard of the split.

        Returns:
          A `tf.data.Dataset` of (float32 features [B, *input_shape], int32 labels [B]), and
          float32 sample weights [B] third when the split is `weighted`.

        Raises:
          DataArgumentError: If `batch_size` is not a positive integer.
        """
        batch_size = checked(check_positive_integer, batch_size, "batch_size")
        return self.pipeline.batched(batch_size, shuffle=bool(shuffle), seed=int(seed),
                                     repeat=bool(repeat), drop_remainder=bool(drop_remainder),
                                     input_context=input_context)

    def folds(self, k: int, seed: int = 0,
              class_names: Optional[Sequence[str]] = None) -> List[Tuple["DataSplit", "DataSplit"]]:
        """K stratified folds of this split, for cross-fitting: each row is held out exactly once.

        Fold j holds out `splits.fold_class_counts(class_counts, k, seed)[j, c]` rows of class
        c (floor or ceil of n_c / k) and trains on the rest. Arrays assign rows to folds by a
        seeded permutation per class; streamed sources (CSV, TFRecord) round-robin along each
        class's rows in file order (no index list is kept), so their pipelines re-read the
        file and filter it. Deterministic given `seed`. A fold's datasets have the features
        of its rows only; normalisation statistics (`DataBundle.feature_mean`) are the whole
        split's (label-free, so no choice leaks labels across folds).

        Args:
          k: Number of folds, 2 <= k <= num_examples.
          seed: Fold seed.
          class_names: Names for the warnings (default: class indices).

        Returns:
          k pairs (training side, held-out side) of `DataSplit`s named 'train_fold<j>' and
          'held_fold<j>'.

        Raises:
          DataArgumentError: Naming `k`.
        """
        k = splits.check_folds(k, self.num_examples)
        counts = np.asarray(self.class_counts, np.int64)
        names = list(class_names) if class_names is not None else [str(c) for c in range(len(counts))]
        singletons = [c for c in range(len(counts)) if counts[c] == 1]
        if singletons:
            listed = ", ".join(f"{c} ({names[c]!r})" for c in singletons)
            warnings.warn(f"class {listed} has a single row in the {self.name} split: the fold that "
                          f"holds it out trains without any example of it", DataWarning, stacklevel=2)
        fold_counts = splits.fold_class_counts(counts, k, seed)
        out = []
        for j, (train_pipe, held_pipe) in enumerate(self.pipeline.folds(k, int(seed), fold_counts)):
            held = fold_counts[j]
            rest = counts - held
            origin = f"fold {j + 1} of {k} (seed {int(seed)}) of the {self.name} split"
            out.append((DataSplit(f"train_fold{j}", self.input_shape, rest, int(rest.sum()),
                                  train_pipe, f"{self.name} split minus {origin}", self.weighted),
                        DataSplit(f"held_fold{j}", self.input_shape, held, int(held.sum()),
                                  held_pipe, origin, self.weighted)))
        return out

    def summary(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """JSON-ready facts: rows, per-class counts (by name when given), origin, and `weighted`."""
        counts = [int(c) for c in self.class_counts]
        names = list(class_names) if class_names is not None else [str(c) for c in range(len(counts))]
        return {"name": self.name, "rows": int(self.num_examples), "origin": self.origin,
                "class_counts": dict(zip(names, counts)), "weighted": bool(self.weighted)}


@dataclasses.dataclass
class DataBundle:
    """Everything the Trainer and CLI need to know about the data.

    Attributes:
      train: The training split.
      eval: The split that is evaluated and reported.
      num_classes: Number of classes.
      class_names: Class names indexed by class (e.g. ['0', '1'], CSV string
        labels in sorted order, or Fashion-MNIST names).
      feature_mean: Training-split mean over all axes but the last (shape
        `(input_shape[-1],)`), for a Keras `Normalization(axis=-1)` layer.
      feature_variance: Training-split population variance, same shape.
      description: One line for logs: each split with its size and what it is.
      validation: The data that chooses (recall-target controller, calibration,
        early stopping): a stratified split of the training data, never the same
        rows as `eval` (`validation is not eval` always); None when `load_data`
        got an `eval_dataset` (unless `hold_out_validation`).
      notes: Warnings about the data (absent and tiny classes, classes missing
        from a split), each also emitted as a `DataWarning`.
      schema: A CSV file's column schema (`trainer.data.schema.TabularSchema`: the feature
        columns, their kinds, vocabularies and statistics), None for other sources.
      sample_weights: Where the training rows' sample weights come from, a phrase (e.g.
        "array 'w' of data.npz"), or None without weights.
      label_names: Multi-label data (`trainer.data.multi_label`): the `L` labels, whose values
        are the `2L` classes (`class_names` 'not a', 'a', ...); None for one label per example.
      label_shape: Labels per position (`trainer.data.per_position`): each example's label shape,
        e.g. `(H, W)` (class counts then count positions); None for one label per example.
      ignore_label: With `label_shape`: the label of positions left out, or None.
    """

    train: DataSplit
    eval: DataSplit
    num_classes: int
    class_names: List[str]
    feature_mean: Optional[np.ndarray]
    feature_variance: Optional[np.ndarray]
    description: str
    validation: Optional[DataSplit] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    schema: Optional[Any] = None
    sample_weights: Optional[str] = None
    label_names: Optional[List[str]] = None
    label_shape: Optional[Tuple[int, ...]] = None
    ignore_label: Optional[int] = None

    @property
    def feature_names(self) -> Optional[List[str]]:
        """The feature columns of a table, in order (None for arrays, images, TFRecord)."""
        return None if self.schema is None else list(self.schema.feature_names)

    def splits_summary(self) -> Dict[str, Any]:
        """Which split is which, for metrics.json and reports.

        Returns:
          {"train"/"validation"/"eval": {"name", "rows", "origin", "class_counts" (by class
          name), "weighted", "role"} (validation: None when absent), "validation_is_eval": False
          unless a caller built such a bundle, "sample_weights": `sample_weights`, "notes": [...],
          "sentence": `measured_on()`}.
        """
        out: Dict[str, Any] = {}
        for name, split in (("train", self.train), ("validation", self.validation),
                            ("eval", self.eval)):
            out[name] = None if split is None else {**split.summary(self.class_names),
                                                    "role": ROLES[name]}
        out["validation_is_eval"] = self.validation is not None and self.validation is self.eval
        out["sample_weights"] = self.sample_weights
        out["notes"] = list(self.notes)
        out["sentence"] = self.measured_on()
        return out

    def measured_on(self) -> str:
        """One sentence for reports: what the figures are measured on and what chose.

        E.g. "measured on the eval split (1,200 rows: a 0.2 stratified held-out test split
        of csv:data.csv); chosen on the validation split (1,200 rows: a 0.2 stratified
        validation split of csv:data.csv)".
        """
        text = f"measured on the eval split ({self.eval.num_examples:,} rows: {self.eval.origin})"
        if self.validation is None:
            return text + "; nothing was chosen on held-out data (no validation split)"
        if self.validation is self.eval:
            return text + "; chosen on the same rows (the figures are not independent of the choice)"
        return (text + f"; chosen on the validation split ({self.validation.num_examples:,} rows: "
                f"{self.validation.origin})")
