"""`PerPositionTask`: a label per position (segmentation masks), against Keras `fit` and hand counts.

Oracles: with no ignored position, SGD and Adam steps of the Trainer with `ClassWeights(w)` equal
Keras `fit` with a per-position `sample_weight = w[y]` (default strategy and MirroredStrategy on two
logical CPUs); with ignored positions, one step equals Keras `fit` with `sample_weight = mask *
positions / counted` (Keras divides by every position, the Trainer by the counted ones); the
confusion matrix and the collected logits are a NumPy count over the counted positions.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from losses import ClassWeights
from trainer import Trainer
from trainer.checks import ArgumentError
from trainer.tasks import PerPositionTask

NUM_CLASSES, SIZE, CHANNELS, IGNORE = 3, 6, 2, 255


def _fcn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((SIZE, SIZE, CHANNELS)),
                             keras.layers.Conv2D(5, 3, padding="same", activation="tanh"),
                             keras.layers.Conv2D(NUM_CLASSES, 1)])


def _data(n=8, seed=0, ignored=0.0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, SIZE, SIZE, CHANNELS)).astype(np.float32)
    labels = rng.choice(NUM_CLASSES, size=(n, SIZE, SIZE), p=[0.7, 0.2, 0.1]).astype(np.int32)
    if ignored:
        labels[rng.random(labels.shape) < ignored] = IGNORE
    return features, labels


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def _keras_fit(features, labels, sample_weight, optimizer, batch_size, epochs=1):
    model = _fcn()
    model.compile(optimizer=optimizer, jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(features, np.where(labels == IGNORE, 0, labels), sample_weight=sample_weight,
              batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("optimizer, epochs", [(lambda: keras.optimizers.SGD(0.5), 1),
                                               (lambda: keras.optimizers.Adam(0.01), 3)])
def test_class_weighted_steps_equal_keras_fit_with_per_position_sample_weights(optimizer, epochs):
    features, labels = _data()
    w = np.array([0.5, 2.0, 4.0], np.float32)
    trainer = Trainer(model=_fcn, optimizer=optimizer(), reweighting=ClassWeights(w),
                      task=PerPositionTask(), num_classes=NUM_CLASSES, steps_per_loop=2)
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(4), epochs=epochs)
    model = _keras_fit(features, labels, w[labels], optimizer(), batch_size=4, epochs=epochs)
    for ours, theirs in zip(_weights(trainer.model), _weights(model)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)
    assert not np.allclose(_weights(trainer.model)[0], _weights(_fcn())[0], atol=1e-3)  # it trained


def test_under_a_mirrored_strategy_the_step_is_the_same(mirrored):
    features, labels = _data()
    w = np.array([0.5, 2.0, 4.0], np.float32)
    with mirrored.scope():
        trainer = Trainer(model=_fcn, optimizer=keras.optimizers.SGD(0.5), reweighting=ClassWeights(w),
                          task=PerPositionTask(), num_classes=NUM_CLASSES, strategy=mirrored,
                          steps_per_loop=2)
    trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(4), epochs=1)
    model = _keras_fit(features, labels, w[labels], keras.optimizers.SGD(0.5), batch_size=4)
    for ours, theirs in zip(_weights(trainer.model), _weights(model)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


def test_ignored_positions_leave_the_loss_and_its_divisor(mirrored):
    features, labels = _data(ignored=0.3)
    mask = (labels != IGNORE).astype(np.float32)
    counted = mask.sum()
    assert 0 < counted < mask.size
    # One step on the whole batch: the Trainer divides by the counted positions, Keras by all.
    oracle = _keras_fit(features, labels, mask * mask.size / counted, keras.optimizers.SGD(0.5),
                        batch_size=len(features))
    for strategy in (None, mirrored):
        scope = strategy.scope() if strategy is not None else tf.init_scope()
        with scope:
            trainer = Trainer(model=_fcn, optimizer=keras.optimizers.SGD(0.5),
                              task=PerPositionTask(ignore_label=IGNORE), num_classes=NUM_CLASSES,
                              strategy=strategy, jit_compile="auto")
        trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(len(features)), epochs=1)
        for ours, theirs in zip(_weights(trainer.model), _weights(oracle)):
            np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)
        assert trainer.jit_choice.jit_compile is False


def test_the_confusion_matrix_and_collected_logits_count_the_counted_positions():
    features, labels = _data(ignored=0.25)
    trainer = Trainer(model=_fcn, task=PerPositionTask(ignore_label=IGNORE), num_classes=NUM_CLASSES)
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(3)
    logits, got = trainer.collect_logits(data)
    raw = np.asarray(trainer.model(features))  # [N, H, W, K]: the NumPy oracle's positions
    keep = labels != IGNORE
    np.testing.assert_allclose(logits, raw[keep], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got, labels[keep])
    want = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(want, (labels[keep], raw[keep].argmax(-1)), 1)
    np.testing.assert_array_equal(trainer.evaluate(data)["confusion_matrix"], want)
    assert trainer.predict_logits(features).shape == (len(features), SIZE, SIZE, NUM_CLASSES)


def test_per_example_sample_weights_spread_over_the_positions():
    features, labels = _data()
    per_example = np.linspace(0.5, 2.0, len(features)).astype(np.float32)
    results = []
    for weights in (per_example, np.broadcast_to(per_example[:, None, None], labels.shape).copy()):
        trainer = Trainer(model=_fcn, optimizer=keras.optimizers.SGD(0.5), task=PerPositionTask(),
                          num_classes=NUM_CLASSES)
        trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels, weights)).batch(4), epochs=1)
        results.append(_weights(trainer.model))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bad_settings_name_their_argument():
    with pytest.raises(ArgumentError, match="must not be a class index") as caught:
        Trainer(model=_fcn, task=PerPositionTask(ignore_label=1), num_classes=NUM_CLASSES)
    assert caught.value.argument == "ignore_label"
    with pytest.raises(ArgumentError) as caught:
        Trainer(model=_fcn, task=PerPositionTask(ignore_label=IGNORE), jit_compile=True)
    assert caught.value.argument == "jit_compile"
    features, labels = _data()
    trainer = Trainer(model=_fcn, task=PerPositionTask(), num_classes=NUM_CLASSES)
    with pytest.raises(ArgumentError, match="one label per position of the model") as caught:
        trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels[:, :4])).batch(4), epochs=1)
    assert caught.value.argument == "labels"
