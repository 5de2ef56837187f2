"""What `load_data` returns: the train and eval splits with their class counts and statistics.

A `DataSplit` knows its size and class counts and builds batched `tf.data` pipelines on demand.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Protocol

import numpy as np
import tensorflow as tf

from trainer.checks import check_positive_integer

from .errors import checked


class Pipeline(Protocol):
    """Builds the batched dataset of one split (implemented per source kind)."""

    def batched(self, batch_size: int, *, shuffle: bool, seed: int, repeat: bool,
                drop_remainder: bool,
                input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
        """Returns a dataset of (float32 features, int32 labels) batches."""


@dataclasses.dataclass
class DataSplit:
    """One split of the data.

    Attributes:
      name: 'train', 'validation' or 'eval'.
      input_shape: Per-example feature shape, e.g. (20,) or (28, 28, 1).
      class_counts: int64 array [num_classes]: examples per class in this split.
      num_examples: Number of examples in this split.
      pipeline: Builds the tf.data pipelines (see `dataset`).
    """

    name: str
    input_shape: tuple
    class_counts: np.ndarray
    num_examples: int
    pipeline: Pipeline = dataclasses.field(repr=False, compare=False, default=None)

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
          A `tf.data.Dataset` of (float32 features [B, *input_shape], int32 labels [B]).

        Raises:
          DataArgumentError: If `batch_size` is not a positive integer.
        """
        batch_size = checked(check_positive_integer, batch_size, "batch_size")
        return self.pipeline.batched(batch_size, shuffle=bool(shuffle), seed=int(seed),
                                     repeat=bool(repeat), drop_remainder=bool(drop_remainder),
                                     input_context=input_context)


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
      description: One line for logs.
      validation: A held-out split of the training distribution for calibration
        and recall-driven control: the stratified split when `eval` is a separate
        test set (synthetic, fashion_mnist_lt); the same object as `eval` when
        `eval` is itself the held-out split; None when `load_data` got an `eval_dataset`
        (unless `hold_out_validation`).
    """

    train: DataSplit
    eval: DataSplit
    num_classes: int
    class_names: List[str]
    feature_mean: Optional[np.ndarray]
    feature_variance: Optional[np.ndarray]
    description: str
    validation: Optional[DataSplit] = None
