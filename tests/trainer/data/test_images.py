"""NPZ images: (N, H, W) and (N, H, W, C), uint8 or float, train with the CNN; channels-first input.

The statistics are checked against numpy per channel, and the normalisation layer of the
built CNN must bring each channel of the training images to mean 0 and variance 1.
"""

import keras
import numpy as np
import pytest

from losses import registry
from trainer.data import InputDataError, load_data
from trainer.models import build_model
from trainer.trainer import Trainer


def images(shape, seed=0):
    """uint8 images whose class (0/1) sets the brightness of the top-left quarter."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    y = np.arange(n) % 2
    x = rng.integers(0, 120, size=shape).astype(np.uint8)
    x[y == 1, :shape[1] // 2, :shape[2] // 2] += 120
    return x, y


def collect(split):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in split.dataset(64, shuffle=False, seed=0)])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("shape", [(64, 12, 12), (64, 12, 12, 3)])
def test_uint8_images_train_with_the_cnn(shape, tmp_path):
    x, y = images(shape)
    np.savez(tmp_path / "img.npz", x=x, y=y)
    spec = f"npz:{tmp_path / 'img.npz'}"
    bundle = load_data(spec, eval_dataset=spec)  # trains on every image, in file order
    channels = shape[3] if len(shape) == 4 else 1
    assert bundle.train.input_shape == (12, 12, channels)
    pixels = x.reshape(-1, channels).astype(np.float64)
    np.testing.assert_allclose(bundle.feature_mean, pixels.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bundle.feature_variance, pixels.var(0), rtol=1e-5)
    np.testing.assert_array_equal(collect(bundle.train)[0], x.reshape(bundle.train.num_examples,
                                                                      12, 12, channels))

    model = build_model(None, bundle.train.input_shape, bundle.num_classes,
                        feature_mean=bundle.feature_mean, feature_variance=bundle.feature_variance)
    assert model.name == "cnn"
    normalised = model.get_layer("normalization")(x.reshape(-1, 12, 12, channels).astype(np.float32))
    flat = np.asarray(normalised).reshape(-1, channels)
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(flat.var(0), 1.0, atol=1e-3)

    trainer = Trainer(model=model, optimizer=keras.optimizers.Adam(1e-3),
                      loss=registry.make_loss("cross_entropy", class_counts=bundle.train.class_counts),
                      num_classes=bundle.num_classes, steps_per_loop=2)
    history = trainer.fit(bundle.train.dataset(16, shuffle=True, seed=0, repeat=True), epochs=1,
                          steps_per_epoch=2)
    assert int(trainer.global_step.numpy()) == 2
    assert np.isfinite(history["loss"]).all() and len(history["loss"]) == 1


def test_channels_first_images_are_refused_with_the_transpose_or_accepted(tmp_path):
    x, y = images((40, 12, 12, 3))
    first = np.transpose(x, (0, 3, 1, 2))  # (N, 3, 12, 12)
    np.savez(tmp_path / "last.npz", x=x, y=y)
    np.savez(tmp_path / "first.npz", x=first, y=y)
    with pytest.raises(InputDataError) as caught:
        load_data(f"npz:{tmp_path / 'first.npz'}")
    message = str(caught.value)
    assert caught.value.argument == "channels_first" and message.startswith("channels_first")
    for fragment in ("(40, 3, 12, 12)", "looks channels-first", "np.transpose(x, (0, 2, 3, 1))"):
        assert fragment in message, message

    transposed = load_data(f"npz:{tmp_path / 'first.npz'}", channels_first=True)
    reference = load_data(f"npz:{tmp_path / 'last.npz'}")
    assert transposed.train.input_shape == reference.train.input_shape == (12, 12, 3)
    for split in ("train", "validation", "eval"):
        got, want = collect(getattr(transposed, split)), collect(getattr(reference, split))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(transposed.feature_mean, reference.feature_mean)
    # False: taken as given (12 x 12 images of 3 rows would be odd, but it is the user's call).
    assert load_data(f"npz:{tmp_path / 'first.npz'}", channels_first=False).train.input_shape == (3, 12, 12)
    with pytest.raises(InputDataError, match=r"^channels_first=True needs images 'x' of shape \(N, C, H, W"):
        load_data(_write(tmp_path / "gray.npz", x[..., 0], y), channels_first=True)
    with pytest.raises(InputDataError, match=r"^channels_first=True applies to npz"):
        load_data("synthetic", channels_first=True)


def _write(path, x, y):
    np.savez(path, x=x, y=y)
    return f"npz:{path}"


def test_a_cnn_on_height_width_inputs_normalises_before_adding_the_channel():
    """A (H, W) input with per-last-axis statistics (shape (W,)) builds and runs (it used to fail)."""
    mean, variance = np.arange(12, dtype=np.float32), np.full(12, 4.0, np.float32)
    model = build_model("cnn", (12, 12), 2, feature_mean=mean, feature_variance=variance)
    x = np.random.default_rng(0).normal(size=(3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.get_layer("normalization")(x)), (x - mean) / 2.0,
                               rtol=1e-5, atol=1e-5)
    assert tuple(model(x).shape) == (3, 2)
