"""Tests of the recall-driven callbacks: Keras's callbacks in our loop, ours in model.fit, resume."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from callbacks import PerClassMetrics, RecallEarlyStopping, RecallReduceLROnPlateau, resolve_monitor
from small_models import batched, small_mlp
from trainer import Trainer
from trainer.metrics import per_class_metrics

NUM_CLASSES = 3
NUM_FEATURES = 6


def make_data(num_examples=96, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype(np.int32)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    features[:, 0] += labels  # learnable
    return features, labels


def make_dataset(features, labels, batch_size=32):
    return batched(features, labels, batch_size)


def make_model(seed=0):
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, seed=seed)


def compiled_model():
    """`make_model()` compiled for `model.fit` with per-class metrics in its logs."""
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[PerClassMetrics(NUM_CLASSES)])
    return model


class ScriptedLogs(keras.callbacks.Callback):
    """Puts scripted values under `key` in each epoch's logs (runs before the callbacks after it)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, values
        self.weights_by_epoch = {}

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights_by_epoch[epoch] = [w.numpy().copy() for w in self.model.weights]


def test_monitor_names_resolve():
    assert resolve_monitor(6) == "val_recall/6"
    assert resolve_monitor("min") == "val_min_recall"
    assert resolve_monitor("balanced") == "val_balanced_accuracy"
    assert resolve_monitor(monitor="recall/2") == "recall/2"
    assert RecallEarlyStopping(monitor="val_loss").mode == "min"
    assert RecallEarlyStopping().monitor == "val_min_recall"
    with pytest.raises(ValueError, match="class_id must be"):
        resolve_monitor("worst")
    with pytest.raises(ValueError, match="exactly one of class_id"):
        RecallEarlyStopping(class_id=1, monitor="val_loss")
    with pytest.raises(ValueError, match="factor must be in"):
        RecallReduceLROnPlateau(class_id=1, factor=1.5)


def test_keras_callbacks_work_unchanged_in_the_trainer(tmp_path):
    features, labels = make_data()
    dataset = make_dataset(features, labels)
    script = ScriptedLogs("val_recall/1", [0.5, 0.6, 0.6, 0.6, 0.6, 0.6])
    log_path = tmp_path / "log.csv"
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, callbacks=[
        script,
        keras.callbacks.EarlyStopping(monitor="val_recall/1", mode="max", patience=1),
        keras.callbacks.ReduceLROnPlateau(monitor="val_recall/1", mode="max", patience=1,
                                          factor=0.5),
        keras.callbacks.CSVLogger(str(log_path)),
    ])
    history = trainer.fit(dataset, epochs=6, validation_data=dataset)
    assert len(history["loss"]) == 3, "EarlyStopping stops after one epoch without improvement"
    assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    with open(log_path) as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert float(rows[1]["val_recall/1"]) == pytest.approx(0.6)
    assert float(rows[2]["val_balanced_accuracy"]) == pytest.approx(history["val_balanced_accuracy"][2])


def test_per_class_metrics_fill_model_fit_logs():
    features, labels = make_data(90)
    model = compiled_model()
    history = model.fit(features, labels, batch_size=30, epochs=2, verbose=0,
                        validation_data=(features[:60], labels[:60]))
    predictions = model.predict(features[:60], verbose=0).argmax(axis=1)
    matrix = np.bincount(labels[:60] * NUM_CLASSES + predictions,
                         minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    expected = per_class_metrics(matrix)
    for k in range(NUM_CLASSES):
        assert history.history[f"val_recall/{k}"][-1] == pytest.approx(expected["recall"][k], abs=1e-6)
        assert f"precision/{k}" in history.history and f"f1/{k}" in history.history
    for key in ("balanced_accuracy", "macro_f1", "min_recall"):
        assert history.history[f"val_{key}"][-1] == pytest.approx(expected[key], abs=1e-6)


def test_our_callbacks_work_in_model_fit():
    features, labels = make_data(64)
    model = compiled_model()
    script = ScriptedLogs("val_recall/2", [0.2, 0.7, 0.5, 0.6, 0.65, 0.9])
    stop = RecallEarlyStopping(class_id=2, patience=2)
    reduce = RecallReduceLROnPlateau(class_id=2, patience=1, factor=0.1)
    history = model.fit(features, labels, batch_size=32, epochs=6, verbose=0,
                        validation_data=(features, labels), callbacks=[script, stop, reduce])
    assert len(history.history["loss"]) == 4, "two epochs without improvement after epoch 1"
    assert int(stop.stopped_epoch.numpy()) == 3 and int(stop.best_epoch.numpy()) == 1
    for restored, best in zip(model.weights, script.weights_by_epoch[1]):
        np.testing.assert_array_equal(restored.numpy(), best)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)  # cut twice: epochs 2 and 3
    # A second fit() starts afresh (epoch numbering restarts), as Keras's callbacks do.
    script.values = [0.1, 0.2, 0.3]
    history = model.fit(features, labels, epochs=3, verbose=0, validation_data=(features, labels),
                        callbacks=[script, stop])
    assert len(history.history["loss"]) == 3
    assert float(stop.best.numpy()) == pytest.approx(0.3)


def test_stop_at_stops_as_soon_as_the_recall_is_reached():
    features, labels = make_data(64)
    script = ScriptedLogs("val_min_recall", [0.3, 0.5, 0.92, 0.95, 0.97])
    stop = RecallEarlyStopping("min", patience=None, stop_at=0.9)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, callbacks=[script, stop])
    history = trainer.fit(make_dataset(features, labels), epochs=5)
    assert len(history["loss"]) == 3
    assert int(stop.best_epoch.numpy()) == 2


def test_reduce_lr_rejects_a_learning_rate_schedule():
    features, labels = make_data(32)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=10, decay_rate=0.9)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES,
                      optimizer=lambda: keras.optimizers.Adam(schedule),
                      callbacks=[RecallReduceLROnPlateau(class_id=0)])
    with pytest.raises(ValueError, match="schedule \\(ExponentialDecay\\)"):
        trainer.fit(make_dataset(features, labels), epochs=1)


def test_resumed_run_behaves_as_an_uninterrupted_one(tmp_path):
    features, labels = make_data(64)
    dataset = make_dataset(features, labels)
    values = [0.3, 0.5, 0.4, 0.45, 0.4, 0.6]  # best at epoch 1; the 2nd miss (epoch 3) stops.

    def trainer_for(directory):
        script = ScriptedLogs("val_recall/1", values)
        stop = RecallEarlyStopping(class_id=1, patience=2)
        reduce = RecallReduceLROnPlateau(class_id=1, patience=1, factor=0.5)
        trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(directory),
                          callbacks=[script, stop, reduce])
        return trainer, stop, reduce

    straight, straight_stop, _ = trainer_for(tmp_path / "straight")
    straight_history = straight.fit(dataset, epochs=6)
    assert len(straight_history["loss"]) == 4

    first, _, _ = trainer_for(tmp_path / "resumed")
    first.fit(dataset, epochs=3)  # interrupted after epoch 2: best 0.5, wait 1
    second, second_stop, second_reduce = trainer_for(tmp_path / "resumed")
    history = second.fit(dataset, epochs=6)
    assert len(history["loss"]) == 1, "the resumed run stops at epoch 3, like the uninterrupted one"
    assert int(second_stop.stopped_epoch.numpy()) == int(straight_stop.stopped_epoch.numpy()) == 3
    assert float(second_reduce.best.numpy()) == pytest.approx(0.5)
    assert float(second.optimizer.learning_rate.numpy()) == pytest.approx(
        float(straight.optimizer.learning_rate.numpy())) == pytest.approx(2.5e-4)
    for a, b in zip(straight.model.weights, second.model.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)

    # Relaunching the finished run trains nothing more and ends with the best weights again.
    again, _, _ = trainer_for(tmp_path / "straight")
    assert again.fit(dataset, epochs=6) == {}
    for a, b in zip(straight.model.weights, again.model.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def run_cli(*args):
    import subprocess
    import sys

    from cli_processes import REPO, cli_env
    return subprocess.run([sys.executable, "-m", "trainer.main", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=cli_env())


def test_cli_recall_target_with_callbacks_and_calibration(tmp_path):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    model_dir = tmp_path / "run"
    result = run_cli(f"--model_dir={model_dir}", "--epochs=2", "--steps_per_loop=20",
                     "--reweighting=recall_target", "--target_class=2", "--target_recall=0.9",
                     "--early_stopping_patience=3", "--reduce_lr_patience=1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    point = metrics["operating_point"]
    assert point["target_class"] == 2
    assert json.loads((model_dir / "operating_point.json").read_text())["kind"] == point["kind"]
    # The exported model serves the calibrated decision rule.
    from trainer import decisions
    served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
    expected = decisions.load(str(model_dir))
    outputs = served(features=tf.random.stateless_normal([64, 20], seed=[1, 2]))
    np.testing.assert_array_equal(outputs["class_id"].numpy(),
                                  expected.decide(outputs["logits"].numpy()))
    # Oracle: hand counts of the served decisions on the same data the run used. The reported
    # recall and precision are what the model does on each split, and the two are apart.
    from trainer.data import load_data
    bundle = load_data("synthetic", seed=0, hold_out_validation=True)

    def recall_and_precision(split):
        hits = predicted = positives = 0
        for features, labels in split.dataset(256, shuffle=False, seed=0):
            decided = served(features=features)["class_id"].numpy()
            truth = labels.numpy().reshape(-1)
            hits += int(np.sum((decided == 2) & (truth == 2)))
            predicted += int(np.sum(decided == 2))
            positives += int(np.sum(truth == 2))
        return hits / positives, hits / predicted

    held_out_recall, held_out_precision = recall_and_precision(bundle.validation)
    eval_recall, eval_precision = recall_and_precision(bundle.eval)
    assert point["validation_recall"] == pytest.approx(held_out_recall, abs=1e-9)
    assert point["validation_precision"] == pytest.approx(held_out_precision, abs=1e-9)
    assert point["eval_recall"] == pytest.approx(eval_recall, abs=1e-9)
    assert point["eval_precision"] == pytest.approx(eval_precision, abs=1e-9)
    train = EventAccumulator(str(model_dir / "train"))
    train.Reload()
    assert "class_weight/2" in train.Tags()["tensors"]
    evaluation = EventAccumulator(str(model_dir / "eval"))
    evaluation.Reload()
    tags = evaluation.Tags()["tensors"]
    assert "overall/confusion_matrix" in tags and "pr_curve/2" in tags and "recall/2" in tags
