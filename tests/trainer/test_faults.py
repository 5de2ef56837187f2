"""Faults: NaN/Inf steps, SIGTERM and SIGKILL mid-run, a disk that fills, incompatible checkpoints.

In-process tests use the `Trainer`; the crash tests run `python -m trainer.main`
in real processes (bounded in time, always reaped) and check that a resumed
`--deterministic` run ends exactly like an uninterrupted one.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from cli_processes import (
    REPO,
    checkpoint_values,
    cli_env,
    model_weights,
    read_log,
    reap,
    start_cli,
    wait_all,
    write_npz,
)
from losses.rules import ClassWeights
from trainer import Trainer
from trainer.checkpointing import IncompatibleCheckpointError
from trainer.distribute import new_mirrored_strategy
from trainer.nonfinite import NonFiniteLossError
from trainer.preemption import EXIT_PREEMPTED, PreemptedError

NUM_FEATURES = 6
NUM_CLASSES = 3


def _data(num_examples=64, seed=0, nan_rows=()):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype(np.int32)
    features[list(nan_rows)] = np.nan
    return features, labels


def _dataset(features, labels, batch_size=16, shuffle_seed=None):
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def _model(hidden=16, depth=1, num_classes=NUM_CLASSES):
    def build():
        keras.utils.set_random_seed(0)
        layers = [keras.Input((NUM_FEATURES,))]
        layers += [keras.layers.Dense(hidden, activation="relu") for _ in range(depth)]
        return keras.Sequential(layers + [keras.layers.Dense(num_classes)])
    return build


def _strategy(name):
    if name == "default":
        return tf.distribute.get_strategy()
    return new_mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]])


# ------------------------------------------------------------------ NaN / Inf


def test_nonfinite_loss_stops_naming_step_and_loss_and_keeps_the_checkpoint(tmp_path):
    # A linear model: NaN features give NaN logits and a NaN loss (behind a ReLU,
    # only the gradients would be NaN; the skip test below covers that case).
    trainer = Trainer(model=_model(depth=0), num_classes=NUM_CLASSES, model_dir=str(tmp_path),
                      steps_per_loop=2)
    trainer.fit(_dataset(*_data()), epochs=1)  # 4 good steps, checkpoint ckpt-1
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    before = checkpoint_values(tmp_path / "checkpoints")

    poisoned = _dataset(*_data(nan_rows=[40]))  # the 3rd batch of the epoch
    expected = r"not finite at step 7 \(epoch 2\): loss=nan, gradient norm=nan"
    with pytest.raises(NonFiniteLossError, match=expected) as caught:
        trainer.fit(poisoned, epochs=2)
    assert caught.value.step == 7 and np.isnan(caught.value.loss)
    assert "ckpt-1" in str(caught.value) and "--skip_nonfinite_steps" in str(caught.value)
    # The bad update was not applied; the loop stopped right after it.
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.variables)
    assert int(trainer.optimizer.iterations.numpy()) == 6 and int(trainer.global_step.numpy()) == 7
    # The last good checkpoint is still the latest, unchanged and loadable.
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) == latest
    after = checkpoint_values(tmp_path / "checkpoints")
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    # The checkpoint still restores into a fresh trainer (evaluate builds and restores).
    Trainer(model=_model(depth=0), num_classes=NUM_CLASSES, model_dir=str(tmp_path)).evaluate(poisoned)


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_skip_nonfinite_steps_skips_counts_and_finishes(strategy_name):
    # Behind a ReLU, NaN features leave the loss finite but make the gradients NaN.
    poisoned = _dataset(*_data(nan_rows=[5, 40]))  # batches 1 and 3 of every epoch
    trainer = Trainer(model=_model(), num_classes=NUM_CLASSES, steps_per_loop=3,
                      strategy=_strategy(strategy_name), skip_nonfinite_steps=True,
                      reweighting=ClassWeights([1.0, 2.0, 1.0]))
    history = trainer.fit(poisoned, epochs=2)
    assert trainer.nonfinite_guard.total_skipped == 4
    assert int(trainer.global_step.numpy()) == 8
    assert int(trainer.optimizer.iterations.numpy()) == 4  # Adam's state saw only good steps
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.variables)
    assert np.isfinite(history["loss"]).all()  # skipped steps are left out of the mean loss

    # Equal to training on the good batches alone.
    good = _data()
    keep = np.r_[16:32, 48:64]
    reference = Trainer(model=_model(), num_classes=NUM_CLASSES, steps_per_loop=3,
                        strategy=_strategy(strategy_name), reweighting=ClassWeights([1.0, 2.0, 1.0]))
    reference.fit(_dataset(good[0][keep], good[1][keep]), epochs=2)
    for got, want in zip(trainer.model.trainable_variables, reference.model.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------- SIGTERM in process


class _SigtermAt(keras.callbacks.Callback):
    """Sends SIGTERM to this process at the end of one compiled loop."""

    def __init__(self, epoch, batch):
        super().__init__()
        self._at = (epoch, batch)
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self._epoch, batch) == self._at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_mid_epoch_and_the_resumed_run_matches(tmp_path):
    features, labels = _data(96)

    def trainer_for(directory, callbacks=()):
        return Trainer(model=_model(), num_classes=NUM_CLASSES, steps_per_loop=2,
                       model_dir=str(directory), callbacks=list(callbacks))

    def dataset():  # fresh per "process", as a restarted run builds it
        return _dataset(features, labels, shuffle_seed=7)

    straight = trainer_for(tmp_path / "straight")
    history = straight.fit(dataset(), epochs=3)

    first = trainer_for(tmp_path / "preempted", [_SigtermAt(epoch=1, batch=1)])
    previous_handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(PreemptedError) as caught:
        first.fit(dataset(), epochs=3)
    assert signal.getsignal(signal.SIGTERM) is previous_handler, "the handler must be put back"
    # SIGTERM came after loop 1 of epoch 2; the loop after it finished, then the save.
    saved = checkpoint_values(tmp_path / "preempted" / "checkpoints")
    assert caught.value.checkpoint == tf.train.latest_checkpoint(str(tmp_path / "preempted" / "checkpoints"))
    assert int(saved["epoch/.ATTRIBUTES/VARIABLE_VALUE"]) == 1
    assert int(saved["epoch_step/.ATTRIBUTES/VARIABLE_VALUE"]) == 4
    assert int(saved["global_step/.ATTRIBUTES/VARIABLE_VALUE"]) == 6 + 4

    resumed = trainer_for(tmp_path / "preempted")
    resumed_history = resumed.fit(dataset(), total_epochs=3)
    assert int(resumed.global_step.numpy()) == int(straight.global_step.numpy()) == 18
    for got, want in zip(resumed.model.trainable_variables, straight.model.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    # The interrupted epoch's training metrics include the steps before SIGTERM.
    assert resumed_history["loss"][0] == pytest.approx(history["loss"][1], rel=1e-5)
    assert resumed_history["balanced_accuracy"] == pytest.approx(history["balanced_accuracy"][1:], rel=1e-5)


# ------------------------------------------------------ incompatible checkpoints


@pytest.mark.parametrize("model, num_classes, what, difference", [
    (_model(num_classes=4), 4, "more classes", "[16, 3] in the checkpoint, [16, 4] in this run"),
    (_model(depth=2), NUM_CLASSES, "a deeper model", "variable(s) the checkpoint lacks"),
    (_model(hidden=32), NUM_CLASSES, "wider layers", "[6, 16] in the checkpoint, [6, 32] in this run"),
])
def test_incompatible_checkpoint_is_a_clear_error(tmp_path, model, num_classes, what, difference):
    features, labels = _data()
    Trainer(model=_model(), num_classes=NUM_CLASSES, model_dir=str(tmp_path)).fit(
        _dataset(features, labels), epochs=1)
    trainer = Trainer(model=model, num_classes=num_classes, model_dir=str(tmp_path))
    with pytest.raises(IncompatibleCheckpointError, match="does not match this run") as caught:
        trainer.fit(_dataset(features, labels % num_classes), epochs=2)
    assert "'model' differs" in str(caught.value) and difference in str(caught.value), what


def test_shallower_model_is_not_restored_partially(tmp_path):
    features, labels = _data()
    Trainer(model=_model(depth=2), num_classes=NUM_CLASSES, model_dir=str(tmp_path)).fit(
        _dataset(features, labels), epochs=1)
    trainer = Trainer(model=_model(depth=1), num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    with pytest.raises(IncompatibleCheckpointError, match="does not match this run") as caught:
        trainer.fit(_dataset(features, labels), epochs=2)
    assert "saved variable(s) this run lacks" in str(caught.value)


# -------------------------------------------------- crashes of real processes

TIME_LIMIT_S = 150
EPOCHS = 6


class _ReferenceRun:
    """An uninterrupted --deterministic run, started at once and awaited when needed."""

    def __init__(self, root, args):
        self.dir = root / "reference"
        self.log = root / "reference.log"
        self.process = start_cli(args(self.dir), log_path=self.log)

    def result_dir(self):
        try:
            (code,) = wait_all([self.process], time.monotonic() + TIME_LIMIT_S)
        finally:
            reap([self.process])
        assert code == 0, read_log(self.log)[-3000:]
        return self.dir


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory):
    """The data, the command line, and the reference run (running alongside the tests)."""
    root = tmp_path_factory.mktemp("crash")
    data = write_npz(root / "data.npz", num_examples=2400, num_features=8)

    def args(model_dir):
        return [f"--dataset=npz:{data}", f"--epochs={EPOCHS}", "--batch_size=8",
                "--steps_per_loop=1", "--deterministic", "--seed=5", "--export_dir=none",
                "--verbosity=1", f"--model_dir={model_dir}"]

    reference = _ReferenceRun(root, args)
    try:
        yield root, args, reference
    finally:
        reap([reference.process])


def _latest_number(directory):
    latest = tf.train.latest_checkpoint(str(directory / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _wait_for_checkpoint(directory, process, deadline, min_number, log_path=None, log_text=None):
    """Waits for checkpoint `min_number` (and, if given, for `log_text` in the run's log)."""
    while time.monotonic() < deadline:
        if (directory / "checkpoints" / "checkpoint").exists() and _latest_number(directory) >= min_number \
                and (log_text is None or log_text in read_log(log_path)):
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before it could be interrupted")
        time.sleep(0.02)
    pytest.fail("no checkpoint before the time limit")


def _assert_same_result(run_dir, reference_dir):
    got, want = checkpoint_values(run_dir / "checkpoints"), checkpoint_values(reference_dir / "checkpoints")
    step_key = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
    assert int(got[step_key]) == int(want[step_key])
    for key, value in model_weights(want).items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    got_metrics = json.loads((run_dir / "metrics.json").read_text())
    want_metrics = json.loads((reference_dir / "metrics.json").read_text())
    got_metrics["flags"].pop("model_dir"), want_metrics["flags"].pop("model_dir")
    assert got_metrics == want_metrics


def _interrupt(args, log_path, run_dir, signal_number, min_number, log_text=None):
    process = start_cli(args, log_path=log_path)
    try:
        _wait_for_checkpoint(run_dir, process, time.monotonic() + TIME_LIMIT_S, min_number,
                             log_path, log_text)
        process.send_signal(signal_number)
        process.wait(timeout=60)
    finally:
        reap([process])
    return process.returncode, read_log(log_path)


def test_sigterm_then_sigkill_then_rerun_matches_an_uninterrupted_deterministic_run(crash_setup):
    root, args, reference = crash_setup
    run_dir = root / "interrupted"

    # SIGTERM after the first epoch: a checkpoint in the middle of epoch 2, status 143.
    # Signalled once a loop of epoch 2 has run (its progress line is logged), so the
    # checkpoint falls mid-epoch however slow the machine is: one step per loop (180 loops per
    # epoch) leaves the poller a wide window (with 10 steps per loop an epoch took 80 ms, and
    # under load the signal once arrived after its last loop).
    code, log = _interrupt(args(run_dir), root / "sigterm.log", run_dir, signal.SIGTERM, min_number=1,
                           log_text="epoch 2 step")
    assert code == EXIT_PREEMPTED, log[-3000:]
    assert "preempted: Stopped by SIGTERM after saving the checkpoint" in log and "Traceback" not in log
    saved = checkpoint_values(run_dir / "checkpoints")
    assert int(saved["epoch_step/.ATTRIBUTES/VARIABLE_VALUE"]) > 0, "expected a mid-epoch checkpoint"
    assert not (run_dir / "metrics.json").exists()

    # The same command resumes (mid-epoch); SIGKILL it two checkpoints later.
    after_sigterm = _latest_number(run_dir)
    code, log = _interrupt(args(run_dir), root / "sigkill.log", run_dir, signal.SIGKILL,
                           min_number=after_sigterm + 2)
    assert code == -signal.SIGKILL
    assert "Resuming epoch 2 at step" in log
    killed_at = _latest_number(run_dir)
    assert not (run_dir / "metrics.json").exists(), "killed before the end"

    # Once more: it resumes from the latest complete checkpoint and finishes.
    process = start_cli(args(run_dir), log_path=root / "rerun.log")
    try:
        (code,) = wait_all([process], time.monotonic() + TIME_LIMIT_S)
    finally:
        reap([process])
    assert code == 0, read_log(root / "rerun.log")[-3000:]
    assert _latest_number(run_dir) > killed_at
    _assert_same_result(run_dir, reference.result_dir())


def _limit_file_size():
    limit = 64 * 1024  # smaller than a checkpoint of the default MLP, larger than the rest
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_full_during_save_is_a_clear_error_and_the_previous_checkpoint_stays(crash_setup):
    root, args, reference = crash_setup
    run_dir = root / "disk_full"
    shutil.copytree(reference.result_dir(), run_dir)
    before = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    command = [a for a in args(run_dir) if not a.startswith("--epochs")] + [f"--epochs={EPOCHS + 1}"]
    # A file size limit makes writes past it fail with EFBIG, as a full disk fails with ENOSPC.
    result = subprocess.run([sys.executable, "-m", "trainer.main", *command], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=TIME_LIMIT_S,
                            preexec_fn=_limit_file_size)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "error: Could not write a checkpoint under" in result.stderr
    assert "too large" in result.stderr.lower()
    # The previous checkpoint is still the latest and loads; no partial files are left.
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")) == before
    values = checkpoint_values(run_dir / "checkpoints")
    assert int(values["epoch/.ATTRIBUTES/VARIABLE_VALUE"]) == EPOCHS
    number = int(before.rsplit("-", 1)[1])
    leftovers = [name for name in os.listdir(run_dir / "checkpoints")
                 if name.startswith(f"ckpt-{number + 1}")]
    assert leftovers == []
