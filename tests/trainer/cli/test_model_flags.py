"""--hidden_units, --dropout and --weight_decay: the model and optimiser they build, and their errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from cli_processes import write_npz
from trainer.checks import ArgumentError
from trainer.cli import build, errors
from trainer.cli import config as config_lib

FLAGS = flags.FLAGS


@pytest.fixture
def configure(tmp_path):
    """`configure(*flags)` -> (config checked against a small NPZ of shape `shape`, bundle)."""

    def make(*args, images=False):
        data = write_npz(tmp_path / "data.npz", num_examples=120, num_features=6)
        if images:
            arrays = dict(np.load(data))
            arrays["x"] = np.random.default_rng(0).random((120, 12, 12)).astype(np.float32)
            np.savez(data, **arrays)
        FLAGS.unparse_flags()
        FLAGS(["trainer.main", f"--dataset=npz:{data}", f"--model_dir={tmp_path / 'run'}",
               "--batch_size=32", "--verbosity=0", *args])
        config = config_lib.from_flags()
        bundle = build.load_bundle(config)
        return config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                                bundle.validation is not None), bundle

    yield make
    FLAGS.unparse_flags()


def _built_model(config, bundle):
    parts = build.build(config, bundle, tf.distribute.get_strategy())
    parts.trainer.fit(parts.data.train, total_epochs=1, validation_data=parts.data.validation)
    return parts.trainer.model, parts.trainer.optimizer


def test_hidden_units_and_dropout_shape_the_mlp(configure):
    config, bundle = configure("--hidden_units=16,8,4", "--dropout=0.25")
    assert config.model.hidden_units == (16, 8, 4) and config.model.dropout == 0.25
    model, optimizer = _built_model(config, bundle)
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    dropout = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dense == [16, 8, 4, bundle.num_classes] and dropout == [0.25] * 3
    assert type(optimizer) is keras.optimizers.Adam  # no --weight_decay: plain Adam


def test_defaults_are_the_documented_mlp(configure):
    config, bundle = configure()
    assert config.model.hidden_units == (256, 256) and config.model.dropout == 0.0
    assert config.training.weight_decay == 0.0
    model = build.build(config, bundle, tf.distribute.get_strategy()).trainer.model
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)][:2] == [256, 256]
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)


def test_weight_decay_is_decoupled_and_spares_biases(parse):
    """Oracle (AdamW's formula): with zero gradients Adam moves nothing, so one step scales each
    kernel by exactly (1 - lr * wd) and leaves the biases as they were."""
    config = parse("--weight_decay=0.1", "--learning_rate=0.01")
    optimizer = build.make_optimizer(config.training)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    layer.bias.assign(np.ones(3, np.float32))
    kernel, bias = layer.kernel.numpy().copy(), layer.bias.numpy().copy()
    optimizer.build(layer.trainable_variables)
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in layer.trainable_variables])
    np.testing.assert_allclose(layer.kernel.numpy(), kernel * (1 - 0.01 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)


def test_weight_decay_trains_from_the_cli(configure):
    config, bundle = configure("--weight_decay=0.05", "--hidden_units=8")
    model, optimizer = _built_model(config, bundle)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert float(optimizer.weight_decay) == pytest.approx(0.05)
    assert int(optimizer.iterations.numpy()) == 3  # ceil(72 training rows / 32)


def test_cnn_keeps_dropout_and_refuses_hidden_units(configure):
    config, bundle = configure("--dropout=0.5", images=True)
    assert config.model.model == "cnn" and config.model.hidden_units is None
    model = build.build(config, bundle, tf.distribute.get_strategy()).trainer.model
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.5]
    with pytest.raises(errors.UsageError, match=r"--hidden_units=32 sets the MLP's hidden layers"):
        configure("--hidden_units=32", images=True)


def test_cnn_refuses_images_too_small_for_its_pooling():
    from trainer.models import build_model

    with pytest.raises(ValueError, match=r"at least 10x10 pixels .* the data has 8x9: use --model=mlp"):
        build_model("cnn", (8, 9), 3)
    assert build_model("cnn", (10, 10, 1), 3).output_shape == (None, 3)


@pytest.mark.parametrize("args, flag, value", [
    (["--hidden_units=64,0"], "--hidden_units", "64,0"),
    (["--hidden_units=64,wide"], "--hidden_units", "64,wide"),
    (["--dropout=1.0"], "--dropout", 1.0),
    (["--dropout=-0.1"], "--dropout", -0.1),
    (["--weight_decay=-0.01"], "--weight_decay", -0.01),
])
def test_bad_values_name_the_flag(parse, args, flag, value):
    with pytest.raises(ArgumentError) as raised:
        parse(*args)
    assert raised.value.argument == flag and raised.value.value == value
    status, message = errors.exit_status_for(raised.value)
    assert status == 2 and flag in message


@pytest.mark.parametrize("rows, batch", [(None, 256), (130, 64), (5000, 64), (8191, 64), (8192, 128),
                                         (16383, 128), (16384, 256), (10**7, 256)])
def test_automatic_batch_size_aims_at_64_steps_per_epoch_within_64_to_256(parse, rows, batch):
    assert config_lib.automatic_batch_size(rows) == batch
    resolved = parse().with_data(3, (5,), True, num_train_examples=rows)
    assert resolved.training.batch_size == batch
    given = parse("--batch_size=32").with_data(3, (5,), True, num_train_examples=rows)
    assert given.training.batch_size == 32


def test_a_run_logs_its_automatic_batch_size(tmp_path):
    from cli_processes import run_cli

    data = write_npz(tmp_path / "data.npz", num_examples=200, num_features=4)
    result = run_cli(f"--dataset=npz:{data}", f"--model_dir={tmp_path / 'run'}", "--epochs=1",
                     "--compare_baseline=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"Batch size 64 \(automatic, from 1\d\d training rows; --batch_size sets it\)\.",
                     result.stderr), result.stderr[-3000:]
