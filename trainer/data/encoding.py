"""From raw table cells to model inputs, the same ops in the input pipeline and in the export.

Two steps, both TensorFlow graphs built from a `TabularSchema`:

1. `parse_cells`: the cells of each feature column (strings, as a CSV holds them) -> typed
   columns: numeric float32 (NaN where the cell is missing), categorical strings (stripped;
   `MISSING_TOKEN` where missing). A numeric cell that is not a number fails here.
2. `FeatureEncoder`: typed columns -> the float32 vector the model reads: a numeric column
   (through sign(x) log(1 + |x|) when the pass found it heavy-tailed, `ColumnSchema.transform`)
   with its missing cells imputed by the training mean (plus a 0/1 missing input when the
   training rows had missing cells), a categorical column one-hot through Keras
   `StringLookup` (index 0: categories not in the vocabulary).

The exported SavedModel takes typed named columns and runs step 2 inside it
(`trainer.export`), so its answers equal training-time preprocessing.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import keras
import tensorflow as tf

from .schema import CATEGORICAL, MISSING_TOKEN, NUMERIC, TabularSchema

# A number as a cell may spell it (no inf/nan: 'nan' is a missing-value spelling).
NUMBER_PATTERN = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"


def is_missing(cells: tf.Tensor, missing_values: Sequence[str]) -> tf.Tensor:
    """bool, same shape: whether each stripped, lower-cased cell spells a missing value."""
    lowered = tf.strings.lower(tf.strings.strip(cells))
    hit = tf.zeros(tf.shape(cells), tf.bool)
    for token in missing_values:
        hit = tf.logical_or(hit, tf.equal(lowered, token))
    return hit


def parse_numeric(cells: tf.Tensor, missing_values: Sequence[str]) -> tf.Tensor:
    """Numeric cells (strings) -> float32, NaN where missing; raises on a cell that is not a number."""
    stripped = tf.strings.strip(cells)
    missing = is_missing(stripped, missing_values)
    safe = tf.where(missing, tf.fill(tf.shape(stripped), "0"), stripped)
    values = tf.strings.to_number(safe, tf.float32)
    return tf.where(missing, tf.fill(tf.shape(values), float("nan")), values)


def parse_categorical(cells: tf.Tensor, missing_values: Sequence[str]) -> tf.Tensor:
    """Categorical cells -> stripped strings, `MISSING_TOKEN` where missing."""
    stripped = tf.strings.strip(cells)
    return tf.where(is_missing(stripped, missing_values),
                    tf.fill(tf.shape(stripped), MISSING_TOKEN), stripped)


def parse_cells(schema: TabularSchema, cells: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Cells of each feature column (string tensors, by column name) -> typed columns."""
    out = {}
    for column in schema.columns:
        if column.kind == NUMERIC:
            out[column.name] = parse_numeric(cells[column.name], schema.missing_values)
        else:
            out[column.name] = parse_categorical(cells[column.name], schema.missing_values)
    return out


class FeatureEncoder(tf.Module):
    """Typed feature columns -> float32 model inputs `[B, schema.width]` (see the module doc).

    Args:
      schema: The training schema (vocabularies, means).
    """

    def __init__(self, schema: TabularSchema) -> None:
        super().__init__(name="feature_encoder")
        self.schema = schema
        self.lookups = {}
        for column in schema.columns:
            if column.kind == CATEGORICAL and column.vocabulary:
                self.lookups[column.name] = keras.layers.StringLookup(
                    vocabulary=list(column.vocabulary), num_oov_indices=1, output_mode="one_hot",
                    name=f"lookup_{len(self.lookups)}")

    def __call__(self, columns: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Encodes typed columns (each `[B]`, by column name) into `[B, width]` float32."""
        parts = []
        for column in self.schema.columns:
            values = columns[column.name]
            if column.kind == NUMERIC:
                values = tf.cast(values, tf.float32)
                missing = tf.math.is_nan(values)
                if column.transform == "signed_log1p":
                    values = tf.sign(values) * tf.math.log1p(tf.abs(values))
                parts.append(tf.where(missing, tf.constant(column.mean, tf.float32), values)[:, None])
                if column.missing_indicator:
                    parts.append(tf.cast(missing, tf.float32)[:, None])
            elif column.name in self.lookups:
                parts.append(tf.cast(self.lookups[column.name](values), tf.float32))
            else:  # every training category was rare: only the 'other' input
                parts.append(tf.ones([tf.shape(values)[0], 1], tf.float32))
        return tf.concat(parts, axis=1)
