"""Tasks: a one-logit binary model trains through the same loop as Keras `fit` with binary cross-entropy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from losses import ClassWeights, SigmoidFocalCrossentropy
from small_models import batched
from trainer import Trainer
from trainer.decisions import calibrate
from trainer.tasks import BinaryTask

NUM_FEATURES = 5


def make_data(num_examples=96, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=num_examples) < 0.2).astype(np.int64)
    features = (rng.normal(size=(num_examples, NUM_FEATURES)) + 1.5 * labels[:, None]).astype(np.float32)
    return features, labels


def one_logit_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


@pytest.mark.parametrize("class_weights, loss", [
    (None, None),
    ([1.0, 5.0], None),
    (None, SigmoidFocalCrossentropy(gamma=2.0, alpha=0.25, reduction=None)),
])
def test_binary_task_equals_keras_fit(class_weights, loss):
    features, labels = make_data()
    trainer = Trainer(model=one_logit_model, task=BinaryTask(), loss=loss, steps_per_loop=3,
                      optimizer=keras.optimizers.SGD(0.5),
                      reweighting=None if class_weights is None else ClassWeights(class_weights))
    assert trainer.num_classes == 2
    trainer.fit(batched(features, labels, 32), epochs=2)

    reference = one_logit_model()
    keras_loss = keras.losses.BinaryCrossentropy(from_logits=True) if loss is None else \
        SigmoidFocalCrossentropy(gamma=2.0, alpha=0.25)
    reference.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras_loss, jit_compile=False)
    reference.fit(features, labels.astype(np.float32), batch_size=32, epochs=2, shuffle=False,
                  verbose=0, class_weight=None if class_weights is None else dict(enumerate(class_weights)))
    for ours, expected in zip(trainer.model.weights, reference.weights):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_binary_decisions_see_two_class_logits():
    features, labels = make_data(200, seed=1)
    trainer = Trainer(model=one_logit_model, task=BinaryTask(), steps_per_loop=5)
    trainer.fit(batched(features, labels, 32), epochs=3)
    z = trainer.model(features).numpy()[:, 0]
    # Evaluation: the confusion matrix of the decision z > 0, counted by hand.
    expected = np.zeros((2, 2), np.int64)
    for label, decided in zip(labels, (z > 0).astype(int)):
        expected[label, decided] += 1
    np.testing.assert_array_equal(trainer.evaluate(batched(features, labels, 64))["confusion_matrix"],
                                  expected)
    # Probabilities are sigmoid(z); a threshold point decides on sigmoid(z).
    probabilities = trainer.predict(features)
    np.testing.assert_allclose(probabilities[:, 1], 1.0 / (1.0 + np.exp(-z)), rtol=1e-5, atol=1e-6)
    logits, collected = trainer.collect_logits(batched(features, labels, 64))
    point = calibrate("target_recall", logits, collected, target_class=1, target_recall=0.9,
                      method="threshold")
    trainer.operating_point = point
    np.testing.assert_array_equal(trainer.predict_classes(features),
                                  (1.0 / (1.0 + np.exp(-z)) >= point.threshold).astype(int))


def test_binary_task_refuses_a_two_logit_model():
    model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="one logit per example"):
        Trainer(model=model, task=BinaryTask())
    with pytest.raises(ValueError, match="num_classes must be 2"):
        Trainer(model=one_logit_model, task=BinaryTask(), num_classes=3)


def test_binary_margins_shift_the_one_logit():
    task = BinaryTask()
    shifted = task.shift_logits(tf.constant([[0.5], [-1.0]]), tf.constant([0.2, -0.3]))
    np.testing.assert_allclose(shifted.numpy(), [[0.0], [-1.5]], atol=1e-7)
