"""Mixed precision: float16 (dynamic loss scaling) and bfloat16 policies, their skips, resume, CLI.

Tolerances against float32, stated once: after 5 epochs of a small MLP on 256
rows, the training loss of each epoch within `LOSS_TOLERANCE` (absolute) and
the evaluation accuracy within `ACCURACY_TOLERANCE` of the float32 run's.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from cli_processes import REPO, checkpoint_values, cli_env, run_cli, write_npz
from trainer import Trainer
from trainer.checkpointing import IncompatibleCheckpointError
from trainer.cli.build import dtype_policy
from trainer.nonfinite import NonFiniteLossError

NUM_FEATURES = 8
NUM_CLASSES = 3
LOSS_TOLERANCE = 0.01
ACCURACY_TOLERANCE = 0.03
SCALE_KEY = "optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE"


def _data(num_examples=256, seed=0, nan_rows=()):
    """A noisy linear 3-class problem (the same one for every seed; `seed` draws the rows)."""
    weights = np.random.default_rng(0).normal(size=(NUM_FEATURES, NUM_CLASSES))
    rng = np.random.default_rng(seed + 1)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    scores = features @ weights + 0.5 * rng.normal(size=(num_examples, NUM_CLASSES))
    features[list(nan_rows)] = np.nan
    return features, np.argmax(scores, axis=1).astype(np.int32)


def _dataset(features, labels, batch_size=32):
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)


def _model(activation="relu"):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((NUM_FEATURES,)),
                             keras.layers.Dense(32, activation=activation),
                             keras.layers.Dense(NUM_CLASSES, dtype="float32")])


def _model_with_infinite_gradients():
    """Finite logits, non-finite gradients at any scale: sqrt'(0) is inf, and ReLU makes zeros."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Lambda(tf.sqrt),
                             keras.layers.Dense(NUM_CLASSES, dtype="float32")])


def _trainer(policy="float32", model=_model, **kwargs):
    """A Trainer whose model is built under `policy` (the global policy is float32 again after)."""
    kwargs.setdefault("steps_per_loop", 4)
    with dtype_policy(policy):
        return Trainer(model=model, num_classes=NUM_CLASSES, **kwargs)


def _scaled_sgd(initial_scale, growth_steps=10_000):
    return lambda: keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.1), initial_scale=initial_scale, dynamic_growth_steps=growth_steps)


def _weights(trainer):
    return [v.numpy() for v in trainer.model.trainable_variables]


class _SkipsPerStep(keras.callbacks.Callback):
    """Whether each step was a loss-scale skip (the Trainer must run one step per loop)."""

    def __init__(self, guard):
        super().__init__()
        self._guard = guard
        self.skipped = []

    def on_train_batch_end(self, batch, logs=None):
        total = self._guard.total_loss_scale_skips
        self.skipped.append(total > sum(self.skipped))


def _fit_recording_skips(trainer, features, labels, batch_size):
    """Fits one epoch; returns the rows of the batches that were applied (not skipped)."""
    assert trainer.steps_per_loop == 1
    recorder = _SkipsPerStep(trainer.nonfinite_guard)
    trainer.callbacks.append(recorder)
    history = trainer.fit(_dataset(features, labels, batch_size=batch_size), epochs=1)
    assert np.isfinite(history["loss"]).all()
    rows = np.arange(len(labels)).reshape(len(recorder.skipped), batch_size)
    return recorder.skipped, rows[~np.asarray(recorder.skipped)].ravel()


def _assert_equals_training_on(trainer, features, labels, rows, batch_size, atol):
    """Oracle: equal to one device without XLA, at a scale that never overflows, on `rows`."""
    reference = _trainer("mixed_float16", optimizer=_scaled_sgd(2.0**10))
    reference.fit(_dataset(features[rows], labels[rows], batch_size=batch_size), epochs=1)
    assert reference.nonfinite_guard.total_loss_scale_skips == 0
    for got, want in zip(_weights(trainer), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_policy_trains_within_tolerance_of_float32(policy):
    features, labels = _data()
    eval_data = _dataset(*_data(seed=1))
    runs = {}
    for name in ("float32", policy):
        trainer = _trainer(name, optimizer=lambda: keras.optimizers.Adam(1e-2))
        history = trainer.fit(_dataset(features, labels), epochs=5)
        runs[name] = trainer, history, trainer.evaluate(eval_data)
    assert keras.mixed_precision.global_policy().name == "float32", "the policy must not leak"
    trainer, history, metrics = runs[policy]
    assert trainer.model.layers[0].compute_dtype == policy.split("_")[1]
    assert trainer.model.layers[-1].compute_dtype == "float32"
    # float16 gets dynamic loss scaling; bfloat16 has float32's range and needs none.
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    assert all(np.isfinite(w).all() for w in _weights(trainer))
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0] - 0.1
    reference_history, reference_metrics = runs["float32"][1], runs["float32"][2]
    np.testing.assert_allclose(history["loss"], reference_history["loss"], rtol=0, atol=LOSS_TOLERANCE)
    assert abs(metrics["accuracy"] - reference_metrics["accuracy"]) <= ACCURACY_TOLERANCE
    assert abs(metrics["loss"] - reference_metrics["loss"]) <= LOSS_TOLERANCE
    assert trainer.nonfinite_guard.total_skipped == 0


def test_a_float32_model_keeps_its_optimizer_and_a_given_loss_scale_optimizer_is_used():
    assert type(_trainer().optimizer) is keras.optimizers.Adam
    given = _trainer("mixed_float16", optimizer=_scaled_sgd(8.0))
    assert given.optimizer.initial_scale == 8.0 and isinstance(given.optimizer.inner_optimizer,
                                                               keras.optimizers.SGD)


def test_an_overflow_is_skipped_and_halves_the_scale_without_a_nonfinite_error():
    """Oracle: a skipped step changes nothing but the scale, so the run equals one on the batches
    that were applied (power-of-two scales are exact in floating point)."""
    features, labels = _data(128)
    trainer = _trainer("mixed_float16", optimizer=_scaled_sgd(2.0**24), steps_per_loop=1)
    before = _weights(trainer)
    trainer.fit(_dataset(features[:32], labels[:32]), epochs=1)  # 2**24 x dL/dlogits overflows float16
    assert trainer.nonfinite_guard.total_loss_scale_skips == 1 and trainer.nonfinite_guard.total_skipped == 0
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0**23
    assert int(trainer.optimizer.iterations.numpy()) == 0
    assert int(trainer.global_step.numpy()) == 1  # the batch was read: the data position counts it
    for got, want in zip(_weights(trainer), before):
        np.testing.assert_array_equal(got, want)

    trainer = _trainer("mixed_float16", optimizer=_scaled_sgd(2.0**24), steps_per_loop=1)
    skipped, applied_rows = _fit_recording_skips(trainer, features, labels, batch_size=8)  # 16 steps
    count = sum(skipped)
    assert skipped[0] and 1 <= count < 16 and trainer.nonfinite_guard.total_skipped == 0
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** (24 - count)
    assert int(trainer.optimizer.iterations.numpy()) == 16 - count
    assert int(trainer.global_step.numpy()) == 16
    _assert_equals_training_on(trainer, features, labels, applied_rows, 8, atol=1e-6)


def test_the_scale_doubles_after_dynamic_growth_steps_good_steps(mirrored):
    features, labels = _data(64)
    runs = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            trainer = _trainer("mixed_float16", optimizer=_scaled_sgd(2.0**10, growth_steps=3),
                               strategy=strategy)
        trainer.fit(_dataset(features, labels, batch_size=8), epochs=1)  # 8 good steps: 2 doublings
        assert trainer.nonfinite_guard.total_loss_scale_skips == 0
        assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0**12
        assert int(trainer.optimizer.step_counter.numpy()) == 2
        runs.append(trainer)
    # float16 sums over each replica's half of the batch: rounding differs, hence 1e-4.
    for got, want in zip(_weights(runs[1]), _weights(runs[0])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_a_nonfinite_loss_under_loss_scaling_is_a_nonfinite_error_and_keeps_the_scale():
    # No ReLU: NaN features give NaN logits and a NaN loss, which no loss scale explains.
    trainer = _trainer("mixed_float16", optimizer=_scaled_sgd(2.0**10), steps_per_loop=1)
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 2 .*loss=nan"):
        trainer.fit(_dataset(*_data(64, nan_rows=[40]), batch_size=32), epochs=1)
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0**10
    assert trainer.nonfinite_guard.total_loss_scale_skips == 0


def test_gradients_that_overflow_at_a_scale_of_one_are_a_nonfinite_error():
    """A finite loss with non-finite gradients looks like an overflow: the scale halves, until at
    1 the unscaled gradients are not finite either, and that step is a non-finite error."""
    trainer = _trainer("mixed_float16", model=_model_with_infinite_gradients,
                       optimizer=_scaled_sgd(4.0), steps_per_loop=1)
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 3 .*loss=\d"):
        trainer.fit(_dataset(*_data(128), batch_size=32), epochs=1)
    assert trainer.nonfinite_guard.total_loss_scale_skips == 2
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 1.0
    assert int(trainer.optimizer.iterations.numpy()) == 0


def test_the_loss_scale_is_checkpointed_and_a_resume_is_exact(tmp_path):
    """Starts with overflows and grows every 3 good steps, so the scale at the resume differs from
    the initial one: only a restored scale makes the resumed run equal the uninterrupted one."""
    features, labels = _data(128)

    def trainer_for(directory):
        return _trainer("mixed_float16", model_dir=str(directory), steps_per_loop=3,
                        optimizer=lambda: keras.optimizers.LossScaleOptimizer(
                            keras.optimizers.Adam(1e-2), initial_scale=2.0**30, dynamic_growth_steps=3))

    straight = trainer_for(tmp_path / "straight")
    straight.fit(_dataset(features, labels, batch_size=16), epochs=3)

    first = trainer_for(tmp_path / "resumed")
    first.fit(_dataset(features, labels, batch_size=16), epochs=1)
    saved = checkpoint_values(tmp_path / "resumed" / "checkpoints")
    assert float(saved[SCALE_KEY]) == float(first.optimizer.dynamic_scale.numpy()) != 2.0**30
    assert first.nonfinite_guard.total_loss_scale_skips > 0

    resumed = trainer_for(tmp_path / "resumed")
    resumed.fit(_dataset(features, labels, batch_size=16), total_epochs=3)
    assert int(resumed.global_step.numpy()) == int(straight.global_step.numpy()) == 24
    for name in ("dynamic_scale", "step_counter", "iterations"):
        assert float(getattr(resumed.optimizer, name).numpy()) == float(
            getattr(straight.optimizer, name).numpy()), name
    for got, want in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_array_equal(got, want)


def test_a_float32_checkpoint_resumed_under_float16_says_the_policy_differs(tmp_path):
    features, labels = _data(64)
    _trainer("float32", model_dir=str(tmp_path)).fit(_dataset(features, labels), epochs=1)
    with pytest.raises(IncompatibleCheckpointError,
                       match=r"this run's optimizer alone has float16 loss scaling"):
        _trainer("mixed_float16", model_dir=str(tmp_path)).fit(_dataset(features, labels), epochs=2)


@pytest.mark.parametrize("where", ["mirrored", "mirrored_xla", "xla"])
def test_overflows_under_mirrored_and_xla_skip_only_those_steps(mirrored, where):
    """Two logical CPUs and/or XLA on the step, float16 with overflows: the oracle above. (Each
    replica backpropagates its share of the batch in float16, so two replicas may overflow at a
    scale one device does not: the skipped steps may differ from one device's.)"""
    features, labels = _data(128)
    strategy = mirrored if where.startswith("mirrored") else tf.distribute.get_strategy()
    with strategy.scope():
        trainer = _trainer("mixed_float16", optimizer=_scaled_sgd(2.0**20), strategy=strategy,
                           jit_compile=where.endswith("xla"), steps_per_loop=1)
    skipped, applied_rows = _fit_recording_skips(trainer, features, labels, batch_size=16)
    assert trainer.jit_choice.jit_compile == where.endswith("xla")
    count = sum(skipped)
    assert skipped[0] and count < 8 and trainer.nonfinite_guard.total_skipped == 0
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** (20 - count)
    assert int(trainer.optimizer.iterations.numpy()) == 8 - count
    _assert_equals_training_on(trainer, features, labels, applied_rows, 16, atol=1e-4)


# ------------------------------------------------------------------ the command line


def test_flag_parses_and_a_bad_value_names_the_flag(parse):
    assert parse().training.mixed_precision == "float32"
    assert parse("--mixed_precision=mixed_bfloat16").training.mixed_precision == "mixed_bfloat16"
    with pytest.raises(flags.IllegalFlagValueError, match=r"--mixed_precision=float16.*mixed_float16"):
        parse("--mixed_precision=float16")


def test_the_cli_builds_a_float16_model_with_loss_scaling_and_no_policy_leaks(parse, tmp_path):
    from trainer.cli import build

    data = write_npz(tmp_path / "data.npz", num_examples=120, num_features=6)
    for policy in ("mixed_float16", "float32"):
        config = parse(f"--dataset=npz:{data}", f"--model_dir={tmp_path / policy}", "--hidden_units=8",
                       f"--mixed_precision={policy}", "--batch_size=32")
        bundle = build.load_bundle(config)
        config = config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                                  bundle.validation is not None)
        run = build.build(config, bundle, tf.distribute.get_strategy())
        assert keras.mixed_precision.global_policy().name == "float32"
        hidden = "float16" if policy == "mixed_float16" else "float32"
        dtypes = [(type(layer).__name__, layer.compute_dtype) for layer in run.trainer.model.layers]
        assert dtypes == [("Normalization", "float32"), ("Dense", hidden), ("Dense", "float32")]
        assert isinstance(run.trainer.optimizer,
                          keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
        run.trainer.fit(run.data.train, total_epochs=1, validation_data=run.data.validation)
        assert all(np.isfinite(v.numpy()).all() for v in run.trainer.model.variables)


def test_a_bfloat16_cli_run_exports_a_float32_model_a_fresh_process_serves(parse, tmp_path):
    data = write_npz(tmp_path / "data.npz", num_examples=240)
    model_dir = tmp_path / "run"
    args = (f"--dataset=npz:{data}", f"--model_dir={model_dir}", "--epochs=2",
            "--mixed_precision=mixed_bfloat16", "--hidden_units=16", "--batch_size=32",
            "--compare_baseline=false", "--jit_compile=false")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"serve = tf.saved_model.load({str(model_dir / 'export')!r}).signatures['serving_default']\n"
        "spec = list(serve.structured_input_signature[1].values())[0]\n"
        f"out = serve(tf.constant(np.load({data!r})['x'][:16]))\n"
        "print(json.dumps({'input': spec.dtype.name, 'dtypes': {k: v.dtype.name for k, v in out.items()},"
        " 'p': out['probabilities'].numpy().tolist(), 'z': out['logits'].numpy().tolist()}))\n")
    served = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=cli_env(), cwd=REPO)
    assert served.returncode == 0, served.stderr[-3000:]
    out = json.loads(served.stdout.strip().splitlines()[-1])
    assert out["input"] == "float32"
    assert out["dtypes"]["probabilities"] == out["dtypes"]["logits"] == "float32"
    probabilities, logits = np.asarray(out["p"]), np.asarray(out["z"])
    assert np.isfinite(logits).all() and probabilities.shape == (16, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["flags"]["mixed_precision"] == "mixed_bfloat16"

    # The same command's Trainer, built in this process, restores the checkpoint into a bfloat16
    # model whose logits are the ones served.
    from trainer.cli import build

    config = parse(*args)
    bundle = build.load_bundle(config)
    config = config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                              bundle.validation is not None)
    restored = build.build(config, bundle, tf.distribute.get_strategy()).trainer
    assert restored.model.layers[1].compute_dtype == "bfloat16"
    np.testing.assert_allclose(restored.predict_logits(np.load(data)["x"][:16]), logits,
                               rtol=1e-5, atol=1e-5)
