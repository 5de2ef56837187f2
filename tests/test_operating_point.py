"""Tests of operating-point calibration: the choice, the decision rules, saving, and the Trainer."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import Trainer
from trainer.operating_point import (FILENAME, OperatingPoint, calibrate_operating_point,
                                     choose_operating_point, operating_point_metrics,
                                     recall_lower_bound, target_scores)

NUM_CLASSES = 4


def noisy_logits(num_examples=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    logits = rng.normal(size=(num_examples, NUM_CLASSES)) + 1.5 * np.eye(NUM_CLASSES)[labels]
    return logits.astype(np.float32), labels


def brute_force_best_precision(scores, is_target, target_recall):
    best = 0.0
    for cutoff in np.unique(scores):
        predicted = scores >= cutoff
        recall = (predicted & is_target).sum() / is_target.sum()
        if recall >= target_recall:
            best = max(best, (predicted & is_target).sum() / predicted.sum())
    return best


@pytest.mark.parametrize("kind", ["logit_offset", "threshold"])
def test_choice_reaches_the_recall_with_the_best_precision(kind):
    logits, labels = noisy_logits()
    point = choose_operating_point(logits, labels, target_class=1, target_recall=0.9, method=kind,
                                   confidence=0.5)
    assert point.kind == kind
    metrics = operating_point_metrics(point, logits, labels)
    assert metrics["target_recall"] >= 0.9
    assert metrics["target_recall"] == pytest.approx(point.validation_recall)
    assert metrics["target_precision"] == pytest.approx(point.validation_precision)
    expected = brute_force_best_precision(target_scores(logits, 1, kind), labels == 1, 0.9)
    assert point.validation_precision == pytest.approx(expected)
    argmax_recall = operating_point_metrics(None, logits, labels)["recall"][1]
    assert argmax_recall < 0.9 and point.offset > 0, "reaching 0.9 needs a push toward class 1"


def test_confidence_bound_asks_for_more_recall_on_few_examples():
    logits, labels = noisy_logits()
    point = choose_operating_point(logits, labels, target_class=1, target_recall=0.9)
    positives = int(np.sum(labels == 1))
    assert point.confidence == 0.9
    assert recall_lower_bound(round(point.validation_recall * positives), positives, 0.9) >= 0.9
    assert point.validation_recall > choose_operating_point(
        logits, labels, target_class=1, target_recall=0.9, confidence=0.5).validation_recall
    few = (labels != 1) | (np.cumsum(labels == 1) <= 8)
    with pytest.warns(UserWarning, match="too few to show recall"):
        fallback = choose_operating_point(logits[few], labels[few], target_class=1,
                                          target_recall=0.95)
    assert fallback.validation_recall == 1.0


def test_decision_rules_match_their_definitions():
    logits, labels = noisy_logits(200, seed=1)
    offset = OperatingPoint("logit_offset", 2, NUM_CLASSES, offset=0.7, threshold=None,
                            target_recall=0.9, validation_recall=0.0, validation_precision=0.0)
    np.testing.assert_array_equal(offset.decide(logits), (logits + [0, 0, 0.7, 0]).argmax(axis=1))
    threshold = OperatingPoint("threshold", 2, NUM_CLASSES, offset=-np.log(0.3 / 0.7), threshold=0.3,
                               target_recall=0.9, validation_recall=0.0, validation_precision=0.0)
    probabilities = tf.nn.softmax(logits.astype(np.float64)).numpy()
    decided = threshold.decide(logits)
    is_target = probabilities[:, 2] >= 0.3
    np.testing.assert_array_equal(decided == 2, is_target)
    others = probabilities.copy()
    others[:, 2] = -1
    np.testing.assert_array_equal(decided[~is_target], others.argmax(axis=1)[~is_target])
    adjusted = tf.nn.softmax(threshold.adjust_logits(logits.astype(np.float64))).numpy()
    np.testing.assert_array_equal(adjusted[:, 2] >= 0.5, is_target)
    for point in (offset, threshold):  # the TensorFlow form used by the SavedModel export
        np.testing.assert_array_equal(point.decide_tensor(tf.constant(logits)).numpy(),
                                      point.decide(logits))


def test_class_prior_reweights_precision_not_recall():
    logits, labels = noisy_logits()
    keep = (labels != 0) | (np.arange(len(labels)) % 4 == 0)  # class 0 under-represented
    logits, labels = logits[keep], labels[keep]
    plain = choose_operating_point(logits, labels, target_class=1, target_recall=0.8,
                                   method="threshold")
    balanced = choose_operating_point(logits, labels, target_class=1, target_recall=0.8,
                                      method="threshold", class_prior=[0.25] * 4)
    assert balanced.validation_recall >= 0.8
    assert balanced.validation_precision != pytest.approx(plain.validation_precision)
    assert balanced.class_prior == (0.25,) * 4


@pytest.mark.parametrize("kwargs, message", [
    ({"target_class": 7}, "out of range"),
    ({"target_recall": 0.0}, "target_recall must be in"),
    ({"method": "best"}, "method must be one of"),
])
def test_bad_arguments_are_named(kwargs, message):
    logits, labels = noisy_logits(50)
    arguments = {"target_class": 1, "target_recall": 0.9, **kwargs}
    with pytest.raises(ValueError, match=message):
        choose_operating_point(logits, labels, **arguments)
    with pytest.raises(ValueError, match="no example of target_class=3"):
        choose_operating_point(logits[labels != 3], labels[labels != 3], target_class=3,
                               target_recall=0.9)


def test_trainer_saves_loads_and_applies_the_operating_point(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, size=160).astype(np.int32)
    features = (rng.normal(size=(160, 5)) + 0.7 * np.eye(NUM_CLASSES, 5)[labels]).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(40)

    def make_model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(NUM_CLASSES)])

    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path), seed=0)
    trainer.fit(dataset, epochs=2)
    point = calibrate_operating_point(trainer, dataset, target_class=3, target_recall=0.95)
    assert trainer.operating_point is point
    saved = json.loads((tmp_path / FILENAME).read_text())
    assert saved["kind"] == point.kind and saved["target_class"] == 3

    reloaded = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    assert reloaded.operating_point == point
    logits = reloaded.predict_logits(features)
    np.testing.assert_array_equal(reloaded.predict_classes(features), point.decide(logits))
    assert np.mean(reloaded.predict_classes(features)[labels == 3] == 3) >= 0.95
    probabilities = reloaded.predict(features)
    expected = tf.nn.softmax(point.adjust_logits(logits)).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
