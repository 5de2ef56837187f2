"""The epoch's progress line: the loss, the worst class, the monitored class's recall and weight."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from callbacks import RecallTarget
from small_models import small_mlp
from trainer import Trainer
from trainer.progress import ProgressLogger, epoch_summary

NAMES = ["ant", "bee", "cat"]


def test_the_summary_names_the_worst_and_the_target_class():
    logs = {"loss": 0.51234, "val_balanced_accuracy": 0.7, "val_recall/0": 0.9, "val_recall/1": 0.25,
            "val_recall/2": 0.5, "class_weight/2": 2.3456}
    assert epoch_summary(logs, class_names=NAMES, target_class=2, target_recall=0.8,
                         evaluated_on="validation") == (
        "loss 0.5123 | validation: balanced accuracy 0.7000, worst class 1 (bee) recall 0.2500 "
        "| class 2 (cat) recall 0.5000 (target 0.8), weight 2.35")
    # Without a target: the worst class, and its weight when a controller set one.
    logs["class_weight/1"] = 4.0
    assert epoch_summary(logs) == ("loss 0.5123 | val: balanced accuracy 0.7000, worst class 1 recall "
                                   "0.2500, weight 4")
    # Without an evaluation: the training figures.
    training_only = epoch_summary({"loss": 1.0, "balanced_accuracy": 0.4})
    assert training_only == "loss 1.0000 train balanced accuracy 0.4000"


def test_a_multi_label_summary_names_the_worst_label_not_a_negative_class():
    # Classes 2l / 2l + 1: without / with label l. "not b" (0.1) is no label's recall.
    logs = {"loss": 0.5, "val_recall/0": 0.9, "val_recall/1": 0.6, "val_recall/2": 0.1,
            "val_recall/3": 0.8}
    line = epoch_summary(logs, class_names=["not a", "a", "not b", "b"], target_class=3,
                         target_recall=0.9, evaluated_on="validation", multi_label=True)
    assert line == ("loss 0.5000 | validation: worst label a recall 0.6000 "
                    "| label b recall 0.8000 (target 0.9)")


def test_the_line_shows_the_weight_the_controller_set_that_epoch(capsys):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=128).astype(np.int32)
    features = (rng.normal(size=(128, 4)) + np.eye(3, 4)[labels]).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(32)
    rule = RecallTarget(target_class=2, target_recall=0.99, step_size=2.0)
    logged = keras.callbacks.History()
    progress = ProgressLogger(32, 4, use_progress_bar=True, class_names=NAMES, target_class=2,
                              target_recall=0.99, evaluated_on="validation")
    trainer = Trainer(model=lambda: small_mlp(4, 3, hidden=8), num_classes=3, reweighting=rule,
                      callbacks=[rule.controller(), logged, progress], steps_per_loop=2)
    trainer.fit(data, epochs=2, validation_data=data)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    for line, weight, recall in zip(lines, logged.history["class_weight/2"], logged.history["val_recall/2"]):
        assert f"class 2 (cat) recall {recall:.4f} (target 0.99), weight {weight:.3g}" in line
        assert "examples/s" in line
    assert logged.history["class_weight/2"][0] != pytest.approx(logged.history["class_weight/2"][1])
