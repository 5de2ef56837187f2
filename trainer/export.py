"""Exports a trained classifier as a SavedModel that serves raw features.

The serving signature returns class probabilities, the predicted class under
the calibrated operating point (plain argmax when there is none) and its name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

SERVING_SIGNATURE = "serving_default"


class ServingModule(tf.Module):
    """Wraps a logits model with the decision rule and class names it serves.

    Args:
      model: Keras model from raw features to logits (normalisation inside).
      class_names: Name of each class, in class-index order.
      decide: TF function from logits `[N, K]` to class ids `[N]`; argmax
        when None.
    """

    def __init__(self, model: keras.Model, class_names: Sequence[str],
                 decide: Optional[Callable[[tf.Tensor], tf.Tensor]] = None):
        super().__init__(name="serving")
        self.model = model
        self.class_names = tf.constant([str(name) for name in class_names])
        self._decide = decide

    def serve(self, features: tf.Tensor):
        logits = tf.cast(self.model(features, training=False), tf.float32)
        if self._decide is None:
            class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            class_ids = tf.cast(self._decide(logits), tf.int32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "logits": logits,
            "class_id": class_ids,
            "class_name": tf.gather(self.class_names, class_ids),
        }


def export_saved_model(model: keras.Model, export_dir: str, *, input_shape: Sequence[int],
                       class_names: Sequence[str],
                       decide: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
                       metadata: Optional[dict] = None) -> str:
    """Writes the SavedModel to `export_dir`, replacing it atomically.

    The model is written to a sibling temporary directory first and renamed
    into place, so a failed export never leaves a half-written model.

    Args:
      model: Keras model from raw features to logits.
      export_dir: Destination directory.
      input_shape: Per-example feature shape (without the batch axis).
      class_names: One name per class.
      decide: Optional decision rule from logits to class ids.
      metadata: JSON-serialisable facts stored as `assets.extra/metadata.json`.

    Returns:
      `export_dir`.
    """
    if len(class_names) != model.output_shape[-1]:
        raise ValueError(f"class_names has {len(class_names)} names but the model has "
                         f"{model.output_shape[-1]} outputs.")
    module = ServingModule(model, class_names, decide)
    signature = tf.function(
        module.serve, input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="features")])
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures={SERVING_SIGNATURE: signature})
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, "metadata.json"), "w") as stream:
            json.dump({"class_names": [str(n) for n in class_names],
                       "input_shape": list(input_shape), **(metadata or {})}, stream, indent=2)
        if os.path.exists(export_dir):
            retired = staging + ".old"
            os.replace(export_dir, retired)
            os.replace(staging, export_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir


def load_serving_function(export_dir: str):
    """Loads the serving signature of an exported model.

    Returns:
      `(serve, metadata)`: `serve(features=...)` returns the dict of tensors.

    Raises:
      ValueError: naming `export_dir` when it holds no exported model.
    """
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise ValueError(f"No exported model in {export_dir!r} (expected saved_model.pb); "
                         f"train first, or pass --export_dir.")
    loaded = tf.saved_model.load(export_dir)
    with open(os.path.join(export_dir, "assets.extra", "metadata.json")) as stream:
        metadata = json.load(stream)
    return loaded.signatures[SERVING_SIGNATURE], metadata
