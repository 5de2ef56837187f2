"""Tests of the worst-class operating point: the choice, its bounds, saving, the Trainer, the CLI."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from cli_processes import REPO, cli_env
from trainer import Trainer, decisions
from trainer.checks import ArgumentError
from trainer.decisions import FILENAME, WorstClassPoint, choose_worst_class_offsets, decision_metrics

NUM_CLASSES = 4


def skewed_logits(num_examples=2000, seed=0):
    """Logits of a model biased toward class 0: class 3 is often predicted as 0."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    logits = rng.normal(size=(num_examples, NUM_CLASSES)) + 1.5 * np.eye(NUM_CLASSES)[labels]
    logits[:, 0] += 1.0
    logits[:, 3] -= 0.5
    return logits, labels


def recalls(logits, labels, offsets):
    predictions = np.argmax(logits + offsets, axis=1)
    return np.array([np.mean(predictions[labels == k] == k) for k in range(NUM_CLASSES)])


def test_offsets_raise_the_smallest_recall_and_generalise():
    logits, labels = skewed_logits(seed=0)
    point = choose_worst_class_offsets(logits, labels)
    before = recalls(logits, labels, 0.0)
    after = recalls(logits, labels, point.offsets())
    assert point.argmax_validation_min_recall == pytest.approx(before.min())
    assert point.validation_min_recall == pytest.approx(after.min())
    assert after.min() > before.min() + 0.15
    assert point.offsets()[3] > point.offsets()[0], "the missed class gets the larger offset"
    # Close to the best any offsets can do here: the classes are symmetric but for the bias.
    assert after.max() - after.min() < 0.06
    # Chosen on one sample, it holds on another one.
    new_logits, new_labels = skewed_logits(seed=1)
    assert recalls(new_logits, new_labels, point.offsets()).min() > \
        recalls(new_logits, new_labels, 0.0).min() + 0.1
    np.testing.assert_array_equal(point.decide(logits), np.argmax(logits + point.offsets(), 1))


def test_never_worse_than_argmax_and_the_balanced_accuracy_bound_holds():
    logits, labels = skewed_logits(seed=2)
    unbounded = choose_worst_class_offsets(logits, labels, max_balanced_accuracy_drop=None)
    bounded = choose_worst_class_offsets(logits, labels)  # default: give up none
    assert bounded.max_balanced_accuracy_drop == 0.0
    assert bounded.validation_balanced_accuracy >= bounded.argmax_validation_balanced_accuracy
    assert bounded.validation_min_recall >= bounded.argmax_validation_min_recall
    assert unbounded.validation_min_recall >= bounded.validation_min_recall
    # Perfect logits: nothing to gain, the zero offsets stay.
    labels = np.arange(40) % NUM_CLASSES
    perfect = choose_worst_class_offsets(10.0 * np.eye(NUM_CLASSES)[labels], labels)
    np.testing.assert_array_equal(perfect.offsets(), np.zeros(NUM_CLASSES))
    assert perfect.validation_min_recall == 1.0


def test_absent_classes_keep_a_zero_offset():
    logits, labels = skewed_logits()
    keep = labels != 2
    point = choose_worst_class_offsets(logits[keep], labels[keep])
    assert point.offsets()[2] == 0.0
    assert np.isfinite(point.validation_min_recall)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_balanced_accuracy_drop": -0.1}, "max_balanced_accuracy_drop must be in"),
    ({"iterations": 0}, "iterations must be a positive integer"),
    ({"step_size": 0.0}, "step_size must be a positive number"),
])
def test_bad_arguments_are_named(kwargs, message):
    logits, labels = skewed_logits(100)
    with pytest.raises(ArgumentError, match=message) as raised:
        choose_worst_class_offsets(logits, labels, **kwargs)
    assert raised.value.argument == next(iter(kwargs))
    with pytest.raises(ValueError, match="labels must be in"):
        choose_worst_class_offsets(logits, labels + 1)
    with pytest.raises(ValueError, match="must match"):
        choose_worst_class_offsets(logits, labels[:-1])


def test_trainer_saves_loads_and_applies_it(tmp_path):
    logits, labels = skewed_logits(400)
    features = logits.astype(np.float32)  # an identity model: its logits are these features
    dataset = tf.data.Dataset.from_tensor_slices((features, labels.astype(np.int32))).batch(100)

    def identity_model():
        inputs = keras.Input((NUM_CLASSES,))
        return keras.Model(inputs, keras.layers.Identity()(inputs))

    trainer = Trainer(model=identity_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    collected_logits, collected_labels = trainer.collect_logits(dataset)
    np.testing.assert_allclose(collected_logits, features)
    np.testing.assert_array_equal(collected_labels, labels)
    point = decisions.calibrate("worst_class", collected_logits, collected_labels)
    assert point == choose_worst_class_offsets(logits, labels)
    trainer.operating_point = point
    point.save(trainer.model_dir)
    assert json.loads((tmp_path / FILENAME).read_text())["kind"] == "worst_class_offsets"
    reloaded = Trainer(model=identity_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    reloaded.operating_point = decisions.load(str(tmp_path))
    assert isinstance(reloaded.operating_point, WorstClassPoint)
    np.testing.assert_allclose(reloaded.operating_point.offsets(), point.offsets())
    np.testing.assert_array_equal(reloaded.predict_classes(features), point.decide(features))
    np.testing.assert_allclose(reloaded.predict(features),
                               tf.nn.softmax(point.adjust_logits(features)).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(point.decide_tensor(tf.constant(features)).numpy(),
                                  point.decide(features))
    metrics = decision_metrics(point, features, labels)
    assert metrics["min_recall"] == pytest.approx(point.validation_min_recall)
    assert "target_recall" not in metrics
    (tmp_path / FILENAME).write_text(json.dumps({**point.to_dict(), "class_offsets": [1.0]}))
    with pytest.raises(ValueError, match="class_offsets must be 4 finite numbers"):
        decisions.load(str(tmp_path))


def test_cli_worst_class_controller_with_margins_calibrates_and_exports(tmp_path):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "trainer.main", f"--model_dir={model_dir}", "--epochs=2",
         "--steps_per_loop=20", "--reweighting=recall_target", "--recall_target_mode=worst_class",
         "--recall_target_adjust=margins"],
        check=False, capture_output=True, text=True, timeout=300, cwd=REPO, env=cli_env())
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    point = metrics["operating_point"]
    assert point["kind"] == "worst_class_offsets"
    assert len(point["class_offsets"]) == len(metrics["recall"])
    assert point["validation_min_recall"] >= point["argmax_validation_min_recall"]
    assert point["eval_min_recall"] == pytest.approx(min(point["eval_recall"]))
    assert metrics["flags"]["recall_target_adjust"] == "margins"
    rule = metrics["reweighting"]
    assert rule["class_name"] == "RecallTarget"
    assert (rule["config"]["adjust"], rule["config"]["step_size"]) == ("margins", 0.5)
    assert len(metrics["final_class_weights"]) == len(metrics["recall"])
    served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
    outputs = served(features=tf.random.stateless_normal([64, 20], seed=[1, 2]))
    expected = decisions.load(str(model_dir))
    np.testing.assert_array_equal(outputs["class_id"].numpy(),
                                  expected.decide(outputs["logits"].numpy()))
    metadata = json.loads((model_dir / "export" / "assets.extra" / "metadata.json").read_text())
    assert metadata["operating_point"]["kind"] == "worst_class_offsets"
