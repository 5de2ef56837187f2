"""Small built-in models for the CLI: an MLP for feature vectors, a CNN for images, an FCN per position.

Both end in a linear layer that returns logits, and may start with a Keras
`Normalization` layer holding training-split statistics. Under a mixed
precision policy both of these compute in float32 (raw features beyond
float16's range or precision, logits for the loss); the layers between
compute in 16 bits.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np

MODEL_NAMES = ("mlp", "cnn", "fcn")
FCN_FILTERS = 32
FCN_DILATIONS = (1, 2, 4)  # three 3-wide convolutions: a receptive field of 15 positions per axis
DEFAULT_HIDDEN_UNITS = (256, 256)
CNN_MIN_SIZE = 10  # height and width: conv3 -> pool2 -> conv3 -> pool2 leaves at least 1x1


def pick_model_name(input_shape: Sequence[int]) -> str:
    """`cnn` for inputs of rank 2 or 3 (images), `mlp` for flat feature vectors."""
    return "cnn" if len(input_shape) in (2, 3) else "mlp"


def _normalization(mean: Optional[np.ndarray], variance: Optional[np.ndarray]):
    if mean is None or variance is None:
        return []
    return [keras.layers.Normalization(mean=np.asarray(mean, np.float32),
                                       variance=np.asarray(variance, np.float32),
                                       name="normalization", dtype="float32")]


def build_mlp(input_shape: Sequence[int], num_classes: int, *,
              hidden_units: Sequence[int] = DEFAULT_HIDDEN_UNITS,
              dropout: float = 0.0, feature_mean: Optional[np.ndarray] = None,
              feature_variance: Optional[np.ndarray] = None) -> keras.Model:
    """A ReLU MLP returning logits."""
    layers = [keras.Input(shape=tuple(input_shape), name="features")]
    layers += _normalization(feature_mean, feature_variance)
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten())
    for width in hidden_units:
        layers.append(keras.layers.Dense(width, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(num_classes, name="logits", dtype="float32"))
    return keras.Sequential(layers, name="mlp")


def build_cnn(input_shape: Sequence[int], num_classes: int, *, dropout: float = 0.0,
              feature_mean: Optional[np.ndarray] = None,
              feature_variance: Optional[np.ndarray] = None) -> keras.Model:
    """conv32-pool-conv64-pool-dense128, the small CNN of the benchmarks (`dropout` after the dense128).

    Images of shape (height, width) get a channel axis after the normalisation, so its
    statistics are those of the input's last axis (as `load_data` computes them) either way.
    """
    shape = tuple(input_shape)
    layers = [keras.Input(shape=shape, name="features")]
    layers += _normalization(feature_mean, feature_variance)
    if len(shape) == 2:
        layers.append(keras.layers.Reshape(shape + (1,)))
    layers += [
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(num_classes, name="logits", dtype="float32"))
    return keras.Sequential(layers, name="cnn")


def build_fcn(input_shape: Sequence[int], num_classes: int, *, dropout: float = 0.0,
              feature_mean: Optional[np.ndarray] = None,
              feature_variance: Optional[np.ndarray] = None) -> keras.Model:
    """A fully-convolutional model: logits at every position (`trainer.tasks.PerPositionTask`).

    Inputs `(length, channels)` (token tags, `[batch, length]` labels) use 1-D convolutions,
    `(height, width, channels)` (segmentation masks) 2-D ones: three 3-wide 'same'
    convolutions of `FCN_FILTERS` with dilations `FCN_DILATIONS`, then a 1-wide convolution to
    the class logits, so the output keeps the input's positions: `[batch, ..., num_classes]`.
    """
    shape = tuple(input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"--model=fcn needs inputs of shape (length, channels) or (height, width, "
                         f"channels); the data has per-example shape {shape}.")
    conv = keras.layers.Conv1D if len(shape) == 2 else keras.layers.Conv2D
    layers = [keras.Input(shape=shape, name="features")]
    layers += _normalization(feature_mean, feature_variance)
    for dilation in FCN_DILATIONS:
        layers.append(conv(FCN_FILTERS, 3, padding="same", dilation_rate=dilation, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(conv(num_classes, 1, name="logits", dtype="float32"))
    return keras.Sequential(layers, name="fcn")


def build_model(name: Optional[str], input_shape: Sequence[int], num_classes: int, **kwargs) -> keras.Model:
    """Builds the model called `name` (picked from the input rank when None).

    Raises:
      ValueError: naming `--model` when the name is unknown.
    """
    name = name or pick_model_name(input_shape)
    if name == "mlp":
        return build_mlp(input_shape, num_classes, **kwargs)
    if name == "cnn":
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"--model=cnn needs image inputs of shape (height, width[, channels]); "
                f"the data has per-example shape {tuple(input_shape)}.")
        if min(input_shape[:2]) < CNN_MIN_SIZE:
            raise ValueError(
                f"--model=cnn needs images of at least {CNN_MIN_SIZE}x{CNN_MIN_SIZE} pixels (two 3x3 "
                f"convolutions, each followed by 2x2 pooling); the data has "
                f"{input_shape[0]}x{input_shape[1]}: use --model=mlp.")
        if kwargs.pop("hidden_units", None) is not None:
            raise ValueError("--hidden_units sets the MLP's hidden layers; --model=cnn has none.")
        return build_cnn(input_shape, num_classes, **kwargs)
    if name == "fcn":
        if kwargs.pop("hidden_units", None) is not None:
            raise ValueError("--hidden_units sets the MLP's hidden layers; --model=fcn has none.")
        return build_fcn(input_shape, num_classes, **kwargs)
    raise ValueError(f"--model={name!r} is not known; choose one of {', '.join(MODEL_NAMES)}.")
