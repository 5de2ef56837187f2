"""Exports a trained classifier as a SavedModel that serves raw features.

The serving signature returns class probabilities (calibrated when a calibration is given), the class
the operating point decides (argmax without one) and its name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import tensorflow as tf

from trainer.decisions.base import OperatingPoint
from trainer.decisions.calibration import Calibration
from trainer.json_files import read_json, write_json_atomically

SERVING_SIGNATURE = "serving_default"


class ServingModule(tf.Module):
    """Wraps a logits model with the decision rule and class names it serves.

    Args:
      model: Keras model from raw features to logits (normalisation inside).
      class_names: Name of each class, in class-index order.
      operating_point: The decision rule (its `decide_tensor`); argmax when
        None.
      calibration: The probabilities' calibration (its `apply_tensor`): the
        `probabilities` output; the plain softmax when None. It does not
        change `class_id` (the operating point's, or the argmax).
    """

    def __init__(self, model: keras.Model, class_names: Sequence[str],
                 operating_point: OperatingPoint | None = None, calibration: Calibration | None = None):
        super().__init__(name="serving")
        self.model = model
        self.class_names = tf.constant([str(name) for name in class_names])
        self._decide = None if operating_point is None else operating_point.decide_tensor
        self._calibrate = None if calibration is None else calibration.apply_tensor

    def serve(self, features: tf.Tensor):
        logits = tf.cast(self.model(features, training=False), tf.float32)
        if self._decide is None:
            class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            class_ids = tf.cast(self._decide(logits), tf.int32)
        return {
            "probabilities": (tf.nn.softmax(logits, axis=-1) if self._calibrate is None
                              else self._calibrate(logits)),
            "logits": logits,
            "class_id": class_ids,
            "class_name": tf.gather(self.class_names, class_ids),
        }


def export_saved_model(model: keras.Model, export_dir: str, *, input_shape: Sequence[int],
                       class_names: Sequence[str], operating_point: OperatingPoint | None = None,
                       metadata: dict | None = None, calibration: Calibration | None = None) -> str:
    """Writes the SavedModel to `export_dir`, replacing it atomically.

    The model is written to a sibling temporary directory first and renamed
    into place, so a failed export never leaves a half-written model.

    Args:
      model: Keras model from raw features to logits.
      export_dir: Destination directory.
      input_shape: Per-example feature shape (without the batch axis).
      class_names: One name per class.
      operating_point: The decision rule to serve (None: argmax); its
        `to_dict()` is stored as the metadata's `operating_point` (None
        without one).
      metadata: JSON-serialisable facts stored as `assets.extra/metadata.json`
        (with `class_names`, `input_shape` and `operating_point`, and
        `calibration` when one is given).
      calibration: Served as the `probabilities` output (temperature scaling,
        `trainer.decisions.calibration`); None serves the plain softmax. Its
        `to_dict()` is stored as the metadata's `calibration`.

    Returns:
      `export_dir`.
    """
    if len(class_names) != model.output_shape[-1]:
        raise ValueError(f"class_names has {len(class_names)} names but the model has "
                         f"{model.output_shape[-1]} outputs.")
    if calibration is not None and calibration.num_classes != len(class_names):
        raise ValueError(f"The calibration is for {calibration.num_classes} classes but there are "
                         f"{len(class_names)} class names.")
    module = ServingModule(model, class_names, operating_point, calibration)
    signature = tf.function(
        module.serve, input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="features")])
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures={SERVING_SIGNATURE: signature})
        write_json_atomically(os.path.join(staging, "assets.extra", "metadata.json"), {
            "class_names": [str(n) for n in class_names], "input_shape": list(input_shape),
            **(metadata or {}),
            "operating_point": None if operating_point is None else operating_point.to_dict(),
            **({} if calibration is None else {"calibration": calibration.to_dict()})})
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
        raise ValueError(f"No exported model in export_dir={export_dir!r} (expected saved_model.pb); "
                         f"train first, or give the directory the model was exported to.")
    loaded = tf.saved_model.load(export_dir)
    metadata = read_json(os.path.join(export_dir, "assets.extra", "metadata.json"))
    return loaded.signatures[SERVING_SIGNATURE], metadata
