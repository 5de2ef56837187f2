"""`Trainer(jit_compile=...)`: XLA on the step gives the plain graph's updates; `auto` measures honestly.

The plain graph is the oracle of the XLA step (the plain step itself is checked against Keras
`fit` in test_rules_trainer.py and test_seams.py): same weights, rule state and metrics, to float
tolerance, for every reweighting rule, under the default strategy and MirroredStrategy over the
two logical CPUs of conftest.py. `auto` is checked with an injected clock (each way made to win),
on one real case built so that XLA wins by far, and against a run of the chosen way: bit for bit
the same weights, step counts and checkpoint.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from losses import ClassWeights, registry
from small_models import batched, small_mlp
from trainer import Trainer
from trainer.checks import ArgumentError
from trainer.jit import (
    FILENAME,
    JitChoice,
    Measurement,
    VariableSnapshot,
    check_jit_compile,
    measure,
    probe,
    xla_scope,
)
from trainer.nonfinite import NonFiniteLossError

NUM_CLASSES = 3
NUM_FEATURES = 6
COUNTS = [60, 25, 11]


def make_data(num_examples=96, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(NUM_CLASSES, size=num_examples, p=np.array(COUNTS) / sum(COUNTS))
    features = rng.normal(size=(num_examples, NUM_FEATURES)) + 0.7 * labels[:, None]
    return features.astype(np.float32), labels.astype(np.int32)


def make_model():
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, activation="tanh", seed=3)


def rule_for(name):
    return registry.make_rule(name, num_classes=NUM_CLASSES, class_counts=COUNTS,
                              class_weights=[0.5, 1.0, 4.0], target_class=2, target_weight=3.0,
                              drw_start_epoch=1)


def train(jit_compile, *, strategy=None, rule=None, loss=None, epochs=2, data=None, **kwargs):
    features, labels = data or make_data()
    trainer = Trainer(model=make_model, optimizer=lambda: keras.optimizers.Adam(0.05),
                      reweighting=rule, loss=loss, num_classes=NUM_CLASSES, strategy=strategy,
                      steps_per_loop=2, jit_compile=jit_compile, **kwargs)
    trainer.fit(batched(features, labels, 24), epochs=epochs)
    return trainer


def state(trainer):
    """Weights, optimizer slots, rule variables and training metrics, as NumPy arrays."""
    values = [v.numpy() for v in trainer.model.variables]
    values += [np.asarray(v.numpy()) for v in trainer.optimizer.variables]
    if trainer.reweighting is not None:
        values += [v.numpy() for v in sorted(trainer.reweighting.variables, key=lambda v: v.name)]
    values += [trainer.train_confusion.result().numpy(), trainer.train_loss.result().numpy()]
    return values


def assert_close(first, second, rtol=2e-5, atol=2e-6):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ------------------------------------------------------------ same updates


@pytest.mark.parametrize("rule_name", registry.RULE_NAMES)
@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_xla_step_gives_the_plain_steps_updates_for_every_rule(rule_name, strategy_name, request):
    strategy = request.getfixturevalue("mirrored") if strategy_name == "mirrored" else None
    plain = train(False, strategy=strategy, rule=rule_for(rule_name))
    xla = train(True, strategy=strategy, rule=rule_for(rule_name))
    assert xla.jit_choice.jit_compile and not plain.jit_choice.jit_compile
    assert xla.jit_choice.scope == ("replica" if strategy_name == "mirrored" else "step")
    assert int(xla.global_step.numpy()) == int(plain.global_step.numpy()) == 8
    assert_close(state(xla), state(plain))
    # It trained at all: the weights moved from where they started.
    assert not np.allclose(xla.model.variables[0].numpy(), make_model().variables[0].numpy())


@pytest.mark.parametrize("loss_name", [n for n in registry.LOSS_NAMES if n != "cross_entropy"])
def test_xla_step_gives_the_plain_steps_updates_for_every_loss(loss_name):
    def loss():
        return registry.make_loss(loss_name, class_counts=COUNTS, num_classes=NUM_CLASSES,
                                  scale=1.0, reduction=None)

    assert_close(state(train(True, loss=loss())), state(train(False, loss=loss())))


def regularized_model(dropout=0.0):
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((NUM_FEATURES,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Dropout(dropout, seed=1),
        keras.layers.Dense(NUM_CLASSES)])


def dropout_model():
    return regularized_model(dropout=0.3)


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_xla_step_keeps_regularization_and_sample_weights(strategy_name, request):
    # (Not Dropout: TensorFlow's stateless random ops draw other numbers under XLA.)
    strategy = request.getfixturevalue("mirrored") if strategy_name == "mirrored" else None
    features, labels = make_data()
    weights = np.linspace(0.2, 2.0, len(labels)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((features, labels, weights)).batch(24)
    results = []
    for jit in (False, True):
        trainer = Trainer(model=regularized_model, optimizer=lambda: keras.optimizers.SGD(0.1),
                          num_classes=NUM_CLASSES, strategy=strategy, jit_compile=jit)
        trainer.fit(data, epochs=2)
        results.append(state(trainer))
    assert_close(results[1], results[0])


# ------------------------------------------------------------ what XLA would drop


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_nonfinite_guard_skips_a_nan_step_under_xla(strategy_name, request):
    strategy = request.getfixturevalue("mirrored") if strategy_name == "mirrored" else None
    features, labels = make_data()
    features[30] = np.nan  # the second batch of each epoch
    runs = {jit: train(jit, strategy=strategy, data=(features, labels), skip_nonfinite_steps=True)
            for jit in (False, True)}
    for trainer in runs.values():
        assert trainer.nonfinite_guard.total_skipped == 2
        assert int(trainer.global_step.numpy()) == 8
        assert int(trainer.optimizer.iterations.numpy()) == 6  # skipped steps leave Adam alone
        assert all(np.isfinite(v.numpy()).all() for v in trainer.model.variables)
    xla, plain = state(runs[True]), state(runs[False])
    # The confusion matrix (second last) counts the NaN row's prediction too, whose argmax over
    # NaN logits is the implementation's choice: at most that one example (of the last epoch) moves.
    assert_close(xla[:-2] + xla[-1:], plain[:-2] + plain[-1:])
    assert xla[-2].sum() == plain[-2].sum() == len(labels)
    assert np.abs(xla[-2] - plain[-2]).sum() <= 2


def test_nonfinite_step_stops_training_under_xla():
    features, labels = make_data()
    features[30] = np.nan
    with pytest.raises(NonFiniteLossError, match="not finite at step 2") as caught:
        train(True, data=(features, labels))
    assert caught.value.step == 2


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_bad_labels_still_stop_the_xla_step(strategy_name, request):
    # The label checks are asserts, which XLA would drop: they run before the compiled update.
    strategy = request.getfixturevalue("mirrored") if strategy_name == "mirrored" else None
    features, labels = make_data()
    labels[40] = NUM_CLASSES
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be < num_classes=3"):
        train(True, strategy=strategy, data=(features, labels))


# ------------------------------------------------------------ auto


def fixed_clock(xla_seconds, plain_seconds):
    """A `Measurement.timer` that runs the steps and reports fixed seconds per way."""
    def timer(jit, run):
        run()
        return xla_seconds if jit else plain_seconds
    return timer


def auto_trainer(model_dir=None, timer=None, model=make_model, **kwargs):
    trainer = Trainer(model=model, optimizer=lambda: keras.optimizers.Adam(0.05),
                      num_classes=NUM_CLASSES, steps_per_loop=2, jit_compile="auto",
                      model_dir=model_dir, reweighting=ClassWeights([0.5, 1.0, 4.0]), **kwargs)
    if timer is not None:
        trainer.jit_measurement = Measurement(rounds=3, steps=2, timer=timer, min_run_seconds=0)
    return trainer


def checkpoint_values(model_dir):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(
        os.path.join(model_dir, "checkpoints")) if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.mark.parametrize("xla_wins", [True, False])
def test_auto_keeps_the_faster_way_and_trains_exactly_as_that_way(tmp_path, xla_wins):
    features, labels = make_data()
    data = batched(features, labels, 24)
    timer = fixed_clock(1.0, 3.0) if xla_wins else fixed_clock(3.0, 1.0)
    auto = auto_trainer(str(tmp_path / "auto"), timer, model=dropout_model)
    auto.fit(data, epochs=2)
    assert auto.jit_choice.jit_compile == xla_wins and auto.jit_choice.how == "measured"
    measured = auto.jit_choice.measured
    assert measured["rounds"] == 2  # 3x apart in every round: decisive after two (of 3)
    # 2 steps per round at a fixed 1 or 3 seconds: those seconds over 2 per step.
    assert (measured["xla_seconds_per_step"], measured["plain_seconds_per_step"]) == \
        ((0.5, 1.5) if xla_wins else (1.5, 0.5))

    fixed = Trainer(model=dropout_model, optimizer=lambda: keras.optimizers.Adam(0.05),
                    num_classes=NUM_CLASSES, steps_per_loop=2, jit_compile=xla_wins,
                    model_dir=str(tmp_path / "fixed"), reweighting=ClassWeights([0.5, 1.0, 4.0]))
    fixed.fit(data, epochs=2)
    # The timed steps left no trace: same step counts, bit-for-bit the same state and checkpoint
    # (Dropout's seed state included) as a run told which way to train.
    assert int(auto.global_step.numpy()) == int(fixed.global_step.numpy()) == 8
    assert int(auto.optimizer.iterations.numpy()) == 8
    for a, b in zip(state(auto), state(fixed)):
        np.testing.assert_array_equal(a, b)
    saved_auto, saved_fixed = checkpoint_values(auto.model_dir), checkpoint_values(fixed.model_dir)
    assert saved_auto.keys() == saved_fixed.keys()
    for name in saved_auto:
        np.testing.assert_array_equal(saved_auto[name], saved_fixed[name], err_msg=name)

    with open(tmp_path / "auto" / "checkpoints" / FILENAME) as stream:
        remembered = json.load(stream)
    assert remembered["jit_compile"] == xla_wins and remembered["measured"] == measured


def test_auto_under_mirrored_trains_as_the_chosen_way(mirrored):
    # Two replicas: the first batch is distributed, so its steps run in a function of their own.
    features, labels = make_data()
    data = batched(features, labels, 24)
    auto = auto_trainer(timer=fixed_clock(1.0, 3.0), model=dropout_model, strategy=mirrored)
    auto.fit(data, epochs=2)
    assert auto.jit_choice.jit_compile and auto.jit_choice.scope == "replica"
    fixed = Trainer(model=dropout_model, optimizer=lambda: keras.optimizers.Adam(0.05),
                    num_classes=NUM_CLASSES, steps_per_loop=2, jit_compile=True, strategy=mirrored,
                    reweighting=ClassWeights([0.5, 1.0, 4.0]))
    fixed.fit(data, epochs=2)
    assert int(auto.global_step.numpy()) == int(fixed.global_step.numpy()) == 8
    assert int(auto.optimizer.iterations.numpy()) == 8
    for a, b in zip(state(auto), state(fixed)):
        np.testing.assert_array_equal(a, b)


def test_resume_reads_the_choice_back_and_does_not_measure(tmp_path):
    features, labels = make_data()
    data = batched(features, labels, 24)
    first = auto_trainer(str(tmp_path), fixed_clock(1.0, 3.0))
    first.fit(data, epochs=1)

    def must_not_time(jit, run):
        raise AssertionError("a resumed run measured again")

    resumed = auto_trainer(str(tmp_path), must_not_time)
    resumed.fit(data, total_epochs=2)
    assert resumed.jit_choice.jit_compile and resumed.jit_choice.how == "remembered"
    assert resumed.jit_choice.measured == first.jit_choice.measured
    assert int(resumed.global_step.numpy()) == 8

    # A choice measured under another strategy does not hold: measured again.
    path = tmp_path / "checkpoints" / FILENAME
    payload = json.loads(path.read_text())
    payload["facts"]["num_replicas"] = 8
    path.write_text(json.dumps(payload))
    again = auto_trainer(str(tmp_path), fixed_clock(3.0, 1.0))
    again.fit(data, total_epochs=3)
    assert again.jit_choice.how == "measured" and not again.jit_choice.jit_compile


class RunningSums(keras.layers.Layer):
    """Adds a scaled running sum along the features (TensorFlow's CPU `Cumsum` is slow, XLA's not)."""

    def call(self, x):
        return x + 0.01 * tf.math.cumsum(x, axis=-1)


def test_auto_picks_xla_by_real_timing_where_it_is_clearly_faster():
    # On this CPU, 1024 running sums per example take 2-3x longer in the plain graph.
    def cumsum_model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(1024), RunningSums(),
                                 keras.layers.Dense(NUM_CLASSES)])

    features, labels = make_data(64 * 3)
    trainer = auto_trainer(model=cumsum_model)
    trainer.jit_measurement = Measurement(min_run_seconds=0)  # the real clock: CPU time on CPUs
    trainer.fit(batched(features, labels, 64), epochs=1)
    measured = trainer.jit_choice.measured
    assert trainer.jit_choice.how == "measured" and trainer.jit_choice.jit_compile, \
        trainer.jit_choice.reason
    assert 0 < measured["xla_seconds_per_step"] < measured["plain_seconds_per_step"]
    assert measured["clock"] == "cpu_timer"
    assert int(trainer.global_step.numpy()) == 3  # the timed steps were not counted


class HostLoss(keras.losses.Loss):
    """Cross-entropy through `tf.numpy_function`: fine in a graph, not compilable by XLA."""

    def call(self, y_true, y_pred):
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return ce + tf.numpy_function(lambda v: np.zeros_like(v), [ce], tf.float32)


def test_auto_falls_back_to_the_plain_graph_when_xla_cannot_compile(tmp_path):
    features, labels = make_data()
    trainer = auto_trainer(str(tmp_path), fixed_clock(1.0, 3.0), loss=HostLoss())
    trainer.fit(batched(features, labels, 24), epochs=1)
    assert trainer.jit_choice.how == "fallback" and not trainer.jit_choice.jit_compile
    assert "XLA could not compile" in trainer.jit_choice.reason
    assert int(trainer.global_step.numpy()) == 4
    with pytest.raises(tf.errors.OpError):
        train(True, loss=HostLoss())


# ------------------------------------------------------------ parts


def test_jit_compile_argument_is_checked():
    assert [check_jit_compile(v) for v in (True, False, "auto", "TRUE", "false")] == \
        [True, False, "auto", True, False]
    with pytest.raises(ArgumentError, match="jit_compile") as caught:
        Trainer(model=make_model, num_classes=NUM_CLASSES, jit_compile="yes")
    assert caught.value.argument == "jit_compile"


def test_xla_scope_by_strategy(mirrored):
    assert xla_scope(tf.distribute.get_strategy()) == "step"
    assert xla_scope(tf.distribute.OneDeviceStrategy("/cpu:0")) == "step"
    assert xla_scope(mirrored) == "replica"


def test_snapshot_restores_every_replica_copy(mirrored):
    with mirrored.scope():
        mirrored_variable = tf.Variable([1.0, 2.0])
        on_read = tf.Variable(3.0, synchronization=tf.VariableSynchronization.ON_READ,
                              aggregation=tf.VariableAggregation.SUM)
    plain = keras.Variable(np.ones(2, np.float32))
    snapshot = VariableSnapshot([mirrored_variable, on_read, plain, plain])
    assert len(snapshot) == 2 + 2 + 1
    mirrored_variable.assign([5.0, 6.0])
    mirrored.run(lambda: on_read.assign_add(tf.cast(
        tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32) + 1.0))
    plain.assign(np.zeros(2, np.float32))
    snapshot.restore()
    np.testing.assert_array_equal([c.numpy() for c in mirrored_variable.values], [[1.0, 2.0]] * 2)
    np.testing.assert_array_equal([c.numpy() for c in on_read.values], [3.0, 3.0])
    np.testing.assert_array_equal(plain.numpy(), [1.0, 1.0])


def test_probe_then_measure_alternate_scale_steps_and_take_medians():
    calls = []
    seconds = {True: iter([0.30, 0.10, 0.20]), False: iter([0.01, 0.40, 0.20, 0.30])}

    def timer(jit, run):
        run()
        return next(seconds[jit])

    def run(jit, steps):
        calls.append((jit, steps))

    settings = Measurement(rounds=3, steps=2, min_seconds=0.04, timer=timer)
    strategy = tf.distribute.get_strategy()
    steps, plain_seconds = probe(run, settings, strategy)
    # The probe (plain, 0.01 s for 2 steps) is under 0.04 s: 8 steps a round from then on.
    assert (steps, plain_seconds) == (8, pytest.approx(0.005))
    figures = measure(run, settings, strategy, steps)
    assert calls == [(False, 2), (False, 8), (True, 8), (True, 8), (False, 8), (False, 8), (True, 8)]
    assert figures["steps_per_round"] == 8 and figures["rounds"] == 3
    assert figures["xla_seconds_per_step"] == pytest.approx(0.20 / 8)
    assert figures["plain_seconds_per_step"] == pytest.approx(0.30 / 8)
    choice = JitChoice.from_measurement(figures, {"xla_scope": "step"})
    assert choice.jit_compile and "1.50x faster" in choice.reason


def test_a_run_too_short_to_pay_for_xla_is_not_compiled(tmp_path):
    # 1 s per plain step by the clock (2 s for the 2 probe steps), 8 planned: under 30 s.
    features, labels = make_data()
    trainer = auto_trainer(str(tmp_path), fixed_clock(0.1, 2.0))
    trainer.jit_measurement.min_run_seconds = Measurement().min_run_seconds
    trainer.fit(batched(features, labels, 24), epochs=2)
    choice = trainer.jit_choice
    assert choice.how == "short_run" and not choice.jit_compile
    assert choice.measured == {"plain_seconds_per_step": 1.0, "planned_steps": 8}
    assert trainer._xla_update_fn is None  # never traced, never compiled
    assert trainer._train_loop_fn.experimental_get_tracing_count() == 1  # timing and training
    assert int(trainer.global_step.numpy()) == 8


# ------------------------------------------------------------ command line


def test_jit_compile_flag_reaches_the_trainer_and_may_change_on_resume(parse):
    from absl import flags

    from trainer.cli import config as config_lib

    assert parse().training.jit_compile == "auto"
    assert parse("--jit_compile=false").training.jit_compile == "false"
    assert check_jit_compile(parse("--jit_compile=true").training.jit_compile) is True
    assert "jit_compile" in config_lib.UNCOMPARED  # how the step runs, not what it computes
    with pytest.raises(flags.IllegalFlagValueError, match=r"jit_compile=yes.*<auto\|true\|false>"):
        parse("--jit_compile=yes")


def test_cli_run_logs_and_remembers_its_choice(tmp_path):
    from cli_processes import run_cli, write_npz

    data = write_npz(tmp_path / "data.npz", num_examples=200)
    result = run_cli(f"--dataset=npz:{data}", f"--model_dir={tmp_path / 'run'}", "--epochs=2",
                     "--export_dir=none", "--compare_baseline=false", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    remembered = json.loads((tmp_path / "run" / "checkpoints" / FILENAME).read_text())
    # A few dozen steps of a tiny MLP: far too short for XLA's compile to pay.
    assert remembered["how"] == "short_run" and remembered["jit_compile"] is False
    assert "Training step: the plain graph (jit_compile short_run" in result.stderr
