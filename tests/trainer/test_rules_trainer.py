"""The reweighting rules and losses inside `trainer.Trainer`: Keras parity, distribution, resume.

Tiny MLPs on random data; MirroredStrategy runs over the two logical CPUs that conftest.py creates.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from losses import (
    ClassWeights,
    Compose,
    DeferredReweighting,
    EqualizationV2,
    TargetClassWeight,
    WeightedRecallCrossentropy,
)
from small_models import batched, small_mlp
from trainer import Trainer

NUM_CLASSES = 4
NUM_FEATURES = 6
COUNTS = [40.0, 14.0, 7.0, 3.0]


def make_data(num_examples=64, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    labels = rng.choice(NUM_CLASSES, size=num_examples, p=np.array(COUNTS) / sum(COUNTS))
    return features, labels.astype(np.int32)


def make_dataset(features, labels, batch_size=16):
    return batched(features, labels, batch_size)


def make_model(seed=0):
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, activation="tanh", seed=seed)


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def _rule_state(rule):
    return [v.numpy() for v in sorted(rule.variables, key=lambda v: v.name)]


def test_class_weights_step_equals_keras_fit_class_weight():
    features, labels = make_data(64)
    weights = [0.5, 1.0, 3.0, 6.0]
    trainer = Trainer(model=make_model, optimizer=keras.optimizers.SGD(0.5),
                      reweighting=ClassWeights(weights), num_classes=NUM_CLASSES,
                      steps_per_loop=4)
    trainer.fit(make_dataset(features, labels, batch_size=16), epochs=1)

    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0,
              class_weight=dict(enumerate(weights)))
    assert int(trainer.global_step.numpy()) == 4
    for ours, reference in zip(_weights(trainer.model), _weights(model)):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    # The weighting changed the step (the test would be vacuous otherwise).
    plain = make_model()
    plain.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert not np.allclose(_weights(plain)[0], _weights(model)[0], atol=1e-4)


def test_weighted_recall_loss_equals_target_class_rule():
    features, labels = make_data(48)
    dataset = make_dataset(features, labels)

    def train(**kwargs):
        trainer = Trainer(model=make_model, optimizer=keras.optimizers.SGD(0.3),
                          num_classes=NUM_CLASSES, steps_per_loop=3, **kwargs)
        trainer.fit(dataset, epochs=2)
        return _weights(trainer.model)

    by_loss = train(loss=WeightedRecallCrossentropy(target_class=3, recall_weight=5.0))
    by_rule = train(reweighting=TargetClassWeight(3, 5.0))
    for a, b in zip(by_loss, by_rule):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ClassWeights.effective_number / inverse_frequency are ClassWeights; DRW of static weights is
# covered by the resume test below.
RULES = {
    "class_weights": lambda: ClassWeights([1.0, 2.0, 0.5, 4.0]),
    "target_class": lambda: TargetClassWeight(3, 5.0),
    "eqlv2": lambda: EqualizationV2(),
    "drw_eqlv2": lambda: DeferredReweighting(EqualizationV2(), start_epoch=1),
    "compose": lambda: Compose(ClassWeights.inverse_frequency(COUNTS), EqualizationV2()),
}




@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_under_mirrored_strategy_equals_default(name, mirrored):
    features, labels = make_data(64, seed=1)
    dataset = make_dataset(features, labels, batch_size=16)

    def train(strategy):
        rule = RULES[name]()
        trainer = Trainer(model=make_model, optimizer=lambda: keras.optimizers.SGD(0.2, momentum=0.9),
                          reweighting=rule, num_classes=NUM_CLASSES, strategy=strategy,
                          steps_per_loop=4)
        trainer.fit(dataset, epochs=2)
        return trainer, rule

    single, single_rule = train(tf.distribute.get_strategy())
    distributed, distributed_rule = train(mirrored)
    assert distributed.strategy.num_replicas_in_sync == 2
    for a, b in zip(_weights(single.model), _weights(distributed.model)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(_rule_state(single_rule), _rule_state(distributed_rule)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_every_loss_trains_in_the_trainer(name):
    features, labels = make_data(64, seed=2)
    loss = losses.make_loss(name, class_counts=COUNTS, num_classes=NUM_CLASSES, scale=1.0)
    trainer = Trainer(model=make_model, optimizer=keras.optimizers.SGD(0.1), loss=loss,
                      num_classes=NUM_CLASSES, steps_per_loop=4)
    history = trainer.fit(make_dataset(features, labels), epochs=2)
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][1] < history["loss"][0]


def test_rule_state_survives_checkpoint_and_resume(tmp_path):
    """Two epochs straight equal one epoch, a restart from the checkpoint, and one more."""
    features, labels = make_data(64, seed=3)
    dataset = make_dataset(features, labels)

    def trainer_for(directory):
        rule = DeferredReweighting(Compose(ClassWeights.effective_number(COUNTS, beta=0.99),
                                           EqualizationV2()), start_epoch=1)
        return Trainer(model=make_model, optimizer=lambda: keras.optimizers.SGD(0.2, momentum=0.9),
                       reweighting=rule, num_classes=NUM_CLASSES, steps_per_loop=4,
                       model_dir=str(directory)), rule

    straight, straight_rule = trainer_for(tmp_path / "straight")
    straight.fit(dataset, epochs=2)

    first, first_rule = trainer_for(tmp_path / "resumed")
    first.fit(dataset, epochs=1)
    after_one_epoch = _rule_state(first_rule)
    second, second_rule = trainer_for(tmp_path / "resumed")
    second.fit(dataset, total_epochs=2)  # restores, then trains epoch 1 (where DRW switches on)

    assert int(second.global_step.numpy()) == int(straight.global_step.numpy()) == 8
    assert any(np.any(v > 0) for v in after_one_epoch)
    for a, b in zip(_rule_state(straight_rule), _rule_state(second_rule)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)
    for a, b in zip(_weights(straight.model), _weights(second.model)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
