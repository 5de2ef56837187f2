"""Tests of the streaming confusion matrix and the metrics derived from it."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer.distribute import new_mirrored_strategy
from trainer.metrics import ConfusionMatrix, flatten_metrics, per_class_metrics


def test_derived_metrics_match_hand_computation():
    matrix = np.array([[8, 2, 0],
                       [1, 3, 0],
                       [0, 0, 0]])  # class 2 has no support and is never predicted
    metrics = per_class_metrics(matrix)
    np.testing.assert_allclose(metrics["recall"][:2], [0.8, 0.75])
    np.testing.assert_allclose(metrics["precision"][:2], [8 / 9, 3 / 5])
    f1_0 = 2 * 0.8 * (8 / 9) / (0.8 + 8 / 9)
    f1_1 = 2 * 0.75 * 0.6 / (0.75 + 0.6)
    np.testing.assert_allclose(metrics["f1"][:2], [f1_0, f1_1])
    assert math.isnan(metrics["recall"][2]) and math.isnan(metrics["f1"][2])
    assert metrics["balanced_accuracy"] == pytest.approx((0.8 + 0.75) / 2)
    assert metrics["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)
    assert metrics["min_recall"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(11 / 14)
    logs = flatten_metrics(metrics, prefix="val_")
    assert logs["val_recall/1"] == pytest.approx(0.75)
    assert math.isnan(logs["val_recall/2"])


def test_missed_class_has_zero_f1_and_nan_precision():
    metrics = per_class_metrics(np.array([[5, 0], [3, 0]]))
    assert metrics["recall"][1] == 0.0
    assert math.isnan(metrics["precision"][1])
    assert metrics["f1"][1] == 0.0
    assert metrics["macro_f1"] == pytest.approx((2 * 5 / 13 + 0) / 2)


def test_confusion_matrix_streams_and_resets():
    metric = ConfusionMatrix(3)
    metric.update_state([0, 1, 2, 2], tf.one_hot([0, 2, 2, 1], 3))
    metric.update_state(np.array([[1]]), np.array([[0.1, 0.9, 0.0]]))
    expected = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(metric.result().numpy(), expected)
    metric.reset_state()
    assert metric.result().numpy().sum() == 0


def test_confusion_matrix_sums_across_replicas():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    strategy = new_mirrored_strategy(devices)
    with strategy.scope():
        metric = ConfusionMatrix(2)
    labels = np.array([0, 1, 1, 0, 1, 1, 1, 0], np.int32)
    logits = tf.one_hot([0, 1, 0, 0, 1, 1, 0, 1], 2)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((labels, logits)).batch(4))

    @tf.function
    def update(batch):
        strategy.run(metric.update_state, args=batch)

    for batch in dataset:
        update(batch)
    np.testing.assert_array_equal(metric.result().numpy(), [[2, 1], [2, 3]])


def test_confusion_matrix_works_in_model_fit():
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    metric = ConfusionMatrix(2)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[metric])
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model.evaluate(x, y, batch_size=8, verbose=0)  # three batches, the last one partial
    # Oracle: a hand count of the model's argmax decisions (NumPy, not the metric).
    predictions = model.predict(x, verbose=0).argmax(axis=1)
    expected = np.zeros((2, 2), np.int64)
    for label, prediction in zip(y, predictions):
        expected[label, prediction] += 1
    assert expected[0, 1] + expected[1, 0] > 0, "an untrained model errs: the test is not vacuous"
    np.testing.assert_array_equal(metric.result().numpy(), expected)
