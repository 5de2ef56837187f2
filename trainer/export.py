"""Exports a trained classifier as a SavedModel that serves raw features.

The serving signature returns class probabilities (calibrated when a calibration is given), the class
the operating point decides (argmax without one), its name, and the scores the rule compared. A model
trained on a table serves its raw named columns (`serving_default`: numeric columns float32 with NaN
for missing, categorical columns strings) through the training's `FeatureEncoder`; `serve_features`
takes the encoded inputs. A one-logit binary model (`BinaryTask`, output width 1) serves the two-class
logits `[0, z]` and the probabilities `(sigmoid(-z), sigmoid(z))`; its decisions are the same as the
Trainer's on those logits. A multi-label model (`MultiLabelTask`, `multi_label=True`) serves per-label
`probabilities` (sigmoids), `decisions` (multi-hot, the `LabelThresholds`' or `z > 0`) and the names of
the labels it decides, joined by `;`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import tensorflow as tf

from trainer.data.encoding import FeatureEncoder
from trainer.data.schema import NUMERIC, TabularSchema
from trainer.decisions.base import OperatingPoint
from trainer.decisions.calibration import Calibration
from trainer.json_files import read_json, write_json_atomically

SERVING_SIGNATURE = "serving_default"
# The signature on encoded inputs `[N, width]` (the same as `serving_default` without a schema).
FEATURES_SIGNATURE = "serve_features"


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
      schema: A table's column schema: `serve_columns` then takes its raw named
        columns through a `FeatureEncoder`.
      one_logit: Whether the model returns one logit `z` per example (a binary
        sigmoid model): the outputs are then those of the two-class logits `[0, z]`.
      multi_label: Whether the model's logits are `L` independent labels
        (`class_names` are the label names; `operating_point` a
        `trainer.decisions.per_label.LabelThresholds` or None).
    """

    def __init__(self, model: keras.Model, class_names: Sequence[str],
                 operating_point: OperatingPoint | None = None, calibration: Calibration | None = None,
                 schema: TabularSchema | None = None, one_logit: bool = False,
                 multi_label: bool = False):
        super().__init__(name="serving")
        self.model = model
        self.one_logit = bool(one_logit)
        self.multi_label = bool(multi_label)
        self.class_names = tf.constant([str(name) for name in class_names])
        self._point = operating_point
        self._calibrate = None if calibration is None else calibration.apply_tensor
        self.encoder = None if schema is None else FeatureEncoder(schema)
        self._inputs = [] if schema is None else schema.serving_inputs()

    def serve(self, features: tf.Tensor):
        """Encoded inputs `[N, width]` -> the outputs (see the module doc)."""
        logits = tf.cast(self.model(features, training=False), tf.float32)
        if self.multi_label:
            return self._serve_labels(logits)
        if logits.shape.rank is not None and logits.shape.rank > 2:
            # Logits per position `[N, d1, ..., dk, K]`: each position decided as a row.
            shape = tf.shape(logits)
            rows = self._serve_rows(tf.reshape(logits, [-1, shape[-1]]))
            return {key: tf.reshape(value, tf.concat([shape[:-1], tf.shape(value)[1:]], axis=0))
                    for key, value in rows.items()}
        return self._serve_rows(logits)

    def _serve_rows(self, logits: tf.Tensor) -> dict:
        """The outputs of `[N, K]` logits (one logit `[N, 1]` for a binary sigmoid model)."""
        if self.one_logit:  # `BinaryTask.decision_logits`: [0, z]
            z = tf.reshape(logits, [-1, 1])
            logits = tf.concat([tf.zeros_like(z), z], axis=-1)
            probabilities = tf.concat([tf.sigmoid(-z), tf.sigmoid(z)], axis=-1)
        else:
            probabilities = tf.nn.softmax(logits, axis=-1)
        if self._point is None:
            class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
            scores = logits
        else:
            class_ids = tf.cast(self._point.decide_tensor(logits), tf.int32)
            scores = self._point.score_tensor(logits)
        return {
            "probabilities": probabilities if self._calibrate is None else self._calibrate(logits),
            "logits": logits,
            "decision_scores": scores,
            "class_id": class_ids,
            "class_name": tf.gather(self.class_names, class_ids),
        }

    def _serve_labels(self, logits: tf.Tensor) -> dict:
        """A multi-label model's outputs for its `[N, L]` logits."""
        if self._point is None:
            decisions, scores = tf.cast(logits > 0, tf.int32), logits
        else:
            decisions, scores = self._point.decide_tensor(logits), self._point.score_tensor(logits)
        names = tf.broadcast_to(self.class_names, tf.shape(decisions))
        return {
            "probabilities": tf.sigmoid(logits),
            "logits": logits,
            "decision_scores": scores,
            "decisions": decisions,
            "labels": tf.strings.reduce_join(tf.ragged.boolean_mask(names, tf.equal(decisions, 1)),
                                             axis=1, separator=";"),
        }

    def serve_columns(self, columns: dict):
        """Raw named columns (by signature input name) -> the outputs."""
        typed = {spec["column"]: columns[spec["input"]] for spec in self._inputs}
        return self.serve(self.encoder(typed))

    def column_signature(self) -> list:
        """The input signature of `serve_columns`: one `[None]` tensor per column."""
        return [{spec["input"]: tf.TensorSpec([None], tf.float32 if spec["kind"] == NUMERIC
                                              else tf.string, name=spec["input"])
                 for spec in self._inputs}]


def export_saved_model(model: keras.Model, export_dir: str, *, input_shape: Sequence[int],
                       class_names: Sequence[str], operating_point: OperatingPoint | None = None,
                       metadata: dict | None = None, calibration: Calibration | None = None,
                       schema: TabularSchema | None = None, multi_label: bool = False) -> str:
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
      schema: The table's column schema when the model was trained on one: the
        `serving_default` signature then takes its raw named columns (metadata
        `features`: column, input name, kind, dtype, vocabulary size; and
        `schema`), `serve_features` the encoded inputs.

    A model whose logits are per position (`[N, d1, ..., dk, K]`, `trainer.tasks.PerPositionTask`)
    serves every output per position: `class_id` `[N, d1, ..., dk]`, `probabilities`
    `[N, d1, ..., dk, K]`, each position decided as a row by the operating point.

    A model with one output and two class names is a one-logit binary model
    (`trainer.tasks.BinaryTask`): it serves `logits` `[0, z]`, `probabilities`
    `(sigmoid(-z), sigmoid(z))` and the decisions on them (metadata `head`:
    `sigmoid`; absent for a softmax model). With `multi_label` the model's `L`
    logits are independent labels named by `class_names`: it serves
    `probabilities` (per-label sigmoids), `logits`, `decision_scores`,
    `decisions` (int32 multi-hot `[N, L]`) and `labels` (the decided labels'
    names joined by `;`); metadata `head`: `multi_label`, `operating_point` the
    `LabelThresholds`' dict.

    Returns:
      `export_dir`.
    """
    width = model.output_shape[-1]
    one_logit = width == 1 and len(class_names) == 2 and not multi_label
    if multi_label and calibration is not None:
        raise ValueError("A multi-label model serves its sigmoids: calibration must be None.")
    if len(class_names) != width and not one_logit:
        raise ValueError(f"class_names has {len(class_names)} names but the model has "
                         f"{width} outputs.")
    if calibration is not None and calibration.num_classes != len(class_names):
        raise ValueError(f"The calibration is for {calibration.num_classes} classes but there are "
                         f"{len(class_names)} class names.")
    module = ServingModule(model, class_names, operating_point, calibration, schema, one_logit,
                           multi_label)
    features = tf.function(
        module.serve, input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="features")])
    signatures = {FEATURES_SIGNATURE: features}
    signatures[SERVING_SIGNATURE] = features if schema is None else tf.function(
        module.serve_columns, input_signature=module.column_signature())
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures=signatures)
        write_json_atomically(os.path.join(staging, "assets.extra", "metadata.json"), {
            "class_names": [str(n) for n in class_names], "input_shape": list(input_shape),
            "signatures": {SERVING_SIGNATURE: "named columns" if schema is not None else "features",
                           FEATURES_SIGNATURE: "features"},
            **({"head": "sigmoid"} if one_logit else {}),
            **({"head": "multi_label"} if multi_label else {}),
            **({} if schema is None else {"features": schema.serving_inputs(),
                                          "schema": schema.to_json()}),
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


def load_serving_function(export_dir: str, signature: str = SERVING_SIGNATURE):
    """Loads a serving signature of an exported model.

    Args:
      export_dir: The exported model.
      signature: `SERVING_SIGNATURE` (raw inputs: named columns for a table) or
        `FEATURES_SIGNATURE` (encoded inputs, `features=`).

    Returns:
      `(serve, metadata)`: `serve(...)` returns the dict of tensors.

    Raises:
      ValueError: naming `export_dir` when it holds no exported model.
    """
    if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        raise ValueError(f"No exported model in export_dir={export_dir!r} (expected saved_model.pb); "
                         f"train first, or give the directory the model was exported to.")
    loaded = tf.saved_model.load(export_dir)
    metadata = read_json(os.path.join(export_dir, "assets.extra", "metadata.json"))
    if signature not in loaded.signatures:  # exported before `serve_features` existed
        signature = SERVING_SIGNATURE
    return loaded.signatures[signature], metadata
