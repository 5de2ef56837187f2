"""The step's seams: a subclass overrides `reweight` or `apply_gradients` alone (docs/examples/seams.py)."""

import os
import runpy

import keras
import numpy as np
import tensorflow as tf

from small_models import batched, small_mlp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = runpy.run_path(os.path.join(REPO, "docs", "examples", "seams.py"))
NUM_FEATURES, NUM_CLASSES = 6, 3


def make_data(num_examples=48, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32) * 3.0
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype(np.int64)
    return features, labels


def make_model():
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, seed=0)


def test_reweight_override_equals_keras_fit_with_class_weight():
    features, labels = make_data()
    trainer = EXAMPLE["RareClassTrainer"](model=make_model, num_classes=NUM_CLASSES,
                                          optimizer=keras.optimizers.SGD(0.3), steps_per_loop=3)
    trainer.fit(batched(features, labels, 16), epochs=1)

    reference = make_model()
    reference.compile(optimizer=keras.optimizers.SGD(0.3), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reference.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0,
                  class_weight={0: 1.0, 1: 1.0, 2: 4.0})
    plain = make_model()
    plain.compile(optimizer=keras.optimizers.SGD(0.3), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert int(trainer.global_step.numpy()) == 3
    for ours, expected in zip(trainer.model.weights, reference.weights):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(trainer.model.weights[0].numpy(), plain.weights[0].numpy(), atol=1e-4)


def test_apply_gradients_override_equals_a_hand_written_clipped_step():
    features, labels = make_data()
    trainer = EXAMPLE["ClippedTrainer"](model=make_model, num_classes=NUM_CLASSES,
                                        optimizer=keras.optimizers.SGD(0.5))
    trainer.fit(batched(features, labels, 48), epochs=1)

    # Oracle: one plain GradientTape step, gradients clipped by hand.
    model = make_model()
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, model(features))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert max(float(tf.norm(g)) for g in gradients) > 1.0, "the clip must matter"
    for variable, gradient in zip(model.trainable_variables, gradients):
        scale = min(1.0, 1.0 / float(tf.norm(gradient)))
        variable.assign_sub(0.5 * scale * gradient)
    for ours, expected in zip(trainer.model.trainable_variables, model.trainable_variables):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
