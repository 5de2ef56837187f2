"""Tests of the recall-target rule and its controller: the update, replicas, resume, effect."""

import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from callbacks import RecallTarget, RecallTargetController
from losses import (
    BalancedSoftmaxCrossentropy,
    Compose,
    DeferredReweighting,
    LogitAdjustedCrossentropy,
    SparseFocalCrossentropy,
    make_loss,
    warn_if_prior_counted_twice,
)
from losses.rules import TrainingContext
from small_models import batched, small_mlp
from trainer import Trainer
from trainer.cli.build import make_recall_target
from trainer.distribute import new_mirrored_strategy

NUM_CLASSES = 3
NUM_FEATURES = 4


def built(rule, num_classes=NUM_CLASSES):
    rule.build(num_classes)
    return rule


def test_target_class_step_raises_the_weight_while_recall_is_short():
    rule = built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.0))
    weights = rule.update([0.8, 0.9, 0.5])
    multipliers = rule.multipliers.numpy()
    np.testing.assert_allclose(multipliers, [1.0, 1.0, np.exp(2.0 * (0.5 - 0.1))], rtol=1e-6)
    np.testing.assert_allclose(weights, multipliers * 3 / multipliers.sum(), rtol=1e-6)
    np.testing.assert_allclose(rule.class_weights().numpy(), weights)
    # Above the target, the multiplier comes back down (precision is given back).
    rule.update([0.8, 0.9, 1.0])
    assert rule.multipliers.numpy()[2] == pytest.approx(np.exp(0.8) * np.exp(-0.2), rel=1e-6)
    assert int(rule.num_updates.numpy()) == 2


def test_smoothing_floor_cap_and_missing_classes():
    rule = built(RecallTarget(target_class=0, target_recall=1.0, step_size=10.0, smoothing=0.5,
                              max_weight=4.0, min_weight=0.5))
    rule.update([0.0, np.nan, 1.0])
    np.testing.assert_allclose(rule.smoothed_miss_rate.numpy()[[0, 2]], [1.0, 0.0])
    assert np.isnan(rule.smoothed_miss_rate.numpy()[1]), "an absent class keeps no measurement"
    assert rule.multipliers.numpy()[0] == pytest.approx(4.0), "capped"
    rule.update([1.0, 0.5, 1.0])
    np.testing.assert_allclose(rule.smoothed_miss_rate.numpy(), [0.5, 0.5, 0.0])
    at_target = built(RecallTarget(target_class=0, target_recall=0.8, smoothing=0.0))
    at_target.update([0.8, 0.1, 0.1])
    assert at_target.multipliers.numpy()[0] == pytest.approx(1.0), "recall at the target: no move"
    overshoot = built(RecallTarget(target_class=0, target_recall=0.5, step_size=10.0,
                                   smoothing=0.0, min_weight=0.5))
    overshoot.update([1.0, 1.0, 1.0])
    assert overshoot.multipliers.numpy()[0] == pytest.approx(0.5), "floored"


def test_worst_class_mode_moves_weight_to_the_worst_classes():
    counts = [600, 300, 100]
    rule = built(RecallTarget(mode="worst_class", class_counts=counts, step_size=1.0,
                              smoothing=0.0))
    initial = rule.class_weights().numpy()
    np.testing.assert_allclose(initial, (1 / np.array(counts)) * 3 / (1 / np.array(counts)).sum(),
                               rtol=1e-6)
    rule.update([0.9, 0.5, 0.7])
    multipliers = rule.multipliers.numpy()
    assert multipliers[1] > multipliers[2] > multipliers[0]
    assert multipliers.mean() == pytest.approx(1.0, rel=1e-5)
    assert rule.get_config()["mode"] == "worst_class"


PRIOR_COUNTS = [600, 300, 100]


@pytest.mark.parametrize("loss", [LogitAdjustedCrossentropy(PRIOR_COUNTS, tau=1.0),
                                  BalancedSoftmaxCrossentropy(PRIOR_COUNTS)],
                         ids=["logit_adjusted", "balanced_softmax"])
@pytest.mark.parametrize("kwargs", [{"mode": "worst_class"},
                                    {"target_class": 2, "target_recall": 0.9}],
                         ids=["worst_class", "target_class"])
def test_prior_corrected_loss_starts_from_uniform_weights_without_warning(loss, kwargs):
    # The loss's margins carry the prior (weighted logit-adjusted loss of Narasimhan and
    # Menon): the base weights are uniform, only the controller's multipliers weight classes.
    rule = built(RecallTarget(class_counts=PRIOR_COUNTS, loss=loss, smoothing=0.0, **kwargs))
    assert rule.base_weights == "uniform" and rule.prior_correction is None
    np.testing.assert_allclose(rule.class_weights().numpy(), np.ones(NUM_CLASSES))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_prior_counted_twice(loss, rule)
        assert not warn_if_prior_counted_twice(loss, DeferredReweighting(rule, start_epoch=2))
    weights = rule.update([0.9, 0.9, 0.5])
    multipliers = rule.multipliers.numpy()
    np.testing.assert_allclose(weights, multipliers * NUM_CLASSES / multipliers.sum(), rtol=1e-6)
    assert weights[2] > weights[0] == pytest.approx(weights[1])
    clone = built(RecallTarget.from_config(rule.get_config()))
    assert clone.base_weights == "uniform"
    np.testing.assert_allclose(clone.class_weights().numpy(), np.ones(NUM_CLASSES))


@pytest.mark.parametrize("loss", [None, LogitAdjustedCrossentropy(PRIOR_COUNTS, tau=0.0),
                                  SparseFocalCrossentropy()],
                         ids=["none", "logit_adjusted_tau_0", "focal"])
def test_plain_loss_keeps_inverse_frequency_base(loss):
    rule = built(RecallTarget(mode="worst_class", class_counts=PRIOR_COUNTS, loss=loss))
    assert rule.base_weights == "inverse_frequency"
    inverse = 1 / np.array(PRIOR_COUNTS, np.float64)
    np.testing.assert_allclose(rule.class_weights().numpy(), inverse * NUM_CLASSES / inverse.sum(),
                               rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_prior_counted_twice(loss, rule)
    clone = RecallTarget.from_config(rule.get_config())
    assert clone.base_weights == "inverse_frequency"


def test_explicit_inverse_frequency_base_with_prior_corrected_loss_warns():
    loss = LogitAdjustedCrossentropy(PRIOR_COUNTS)
    rule = RecallTarget(mode="worst_class", class_counts=PRIOR_COUNTS, loss=loss,
                        base_weights="inverse_frequency")
    with pytest.warns(UserWarning, match="counts the prior twice"):
        assert warn_if_prior_counted_twice(loss, rule)
    with pytest.raises(ValueError, match="base_weights must be one of"):
        RecallTarget(mode="worst_class", base_weights="balanced")
    with pytest.raises(ValueError, match="needs class_counts"):
        RecallTarget(mode="worst_class", base_weights="inverse_frequency")


@pytest.mark.parametrize("loss_name, base", [("logit_adjusted", "uniform"),
                                             ("balanced_softmax", "uniform"),
                                             ("cross_entropy", "inverse_frequency")])
@pytest.mark.parametrize("mode, adjust, step, expected", [
    ("worst_class", "weights", None, ("weights", 1.0)),
    ("target_class", None, None, ("weights", 1.0)),
    ("worst_class", None, None, ("margins", 0.5)),
    ("target_class", "margins", 2.0, ("margins", 2.0))])
def test_cli_rule_follows_the_loss(loss_name, base, mode, adjust, step, expected):
    flags = types.SimpleNamespace(recall_target_mode=mode, target_class=1, target_recall=0.9,
                                  recall_target_adjust=adjust, recall_target_step_size=step)
    loss = make_loss(loss_name, class_counts=PRIOR_COUNTS)
    rule = make_recall_target(flags, PRIOR_COUNTS, loss)
    assert rule.base_weights == base
    assert (rule.adjust, rule.step_size) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_prior_counted_twice(loss, rule)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "mode must be one of"),
    ({"target_class": 1}, "target_recall must be a positive number"),
    ({"target_class": 1, "target_recall": 1.5}, "at most 1"),
    ({"mode": "worst_class", "target_class": 1}, "takes no target_class"),
    ({"target_class": 1, "target_recall": 0.9, "smoothing": 1.0}, "smoothing must be in"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecallTarget(**kwargs)


def make_data(num_examples, seed, minority=2):
    """Three overlapping classes; the minority class is rare and hard."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(NUM_CLASSES, size=num_examples, p=[0.6, 0.3, 0.1]).astype(np.int32)
    centers = np.array([[0, 0, 0, 0], [2, 0, 0, 0], [0.8, 0.8, 0, 0]], np.float32)
    features = centers[labels] + rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    return features, labels


def make_dataset(features, labels, batch_size=64):
    return batched(features, labels, batch_size)


def make_model():
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=16)


def test_controller_under_mirrored_strategy_keeps_replicas_identical():
    devices = tf.config.list_logical_devices("CPU")
    strategy = new_mirrored_strategy([d.name for d in devices[:2]])
    train = make_dataset(*make_data(256, seed=0))
    held_out = make_dataset(*make_data(128, seed=1))
    rule = RecallTarget(target_class=2, target_recall=0.9, step_size=2.0)
    history = keras.callbacks.History()  # sees the logs after the controller added to them
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, strategy=strategy,
                      reweighting=rule, callbacks=[rule.controller(), history], steps_per_loop=2)
    trainer.fit(train, epochs=2, validation_data=held_out)
    history = history.history
    assert int(rule.num_updates.numpy()) == 2
    replicas = [v.numpy() for v in rule.weights.values]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    assert history["class_weight/2"][-1] == pytest.approx(float(replicas[0][2]))
    assert history["class_weight/2"][-1] > 1.0, "the target class is short of 0.9 recall"
    # The step uses the moved weights on every replica.
    context = TrainingContext(epoch=tf.constant(0, tf.int64), step=tf.constant(0, tf.int64))
    grads = strategy.run(lambda: rule(tf.constant([2, 0]), tf.zeros([2, 3]), tf.ones([2, 3]), context))
    for replica_grads in strategy.experimental_local_results(grads):
        np.testing.assert_allclose(replica_grads.numpy()[0], replicas[0][2])


@pytest.mark.parametrize("adjust", ["weights", "margins"])
def test_controller_state_is_checkpointed_and_resumed(tmp_path, adjust):
    train = make_dataset(*make_data(192, seed=0))
    held_out = make_dataset(*make_data(96, seed=1))

    def run(directory, epochs):
        rule = RecallTarget(target_class=2, target_recall=0.9, adjust=adjust)
        trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=rule,
                          model_dir=str(directory),
                          callbacks=[rule.controller(validation_data=held_out)])
        trainer.fit(train, total_epochs=epochs)
        return rule, trainer

    straight, straight_trainer = run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    resumed, resumed_trainer = run(tmp_path / "resumed", 4)
    assert int(resumed.num_updates.numpy()) == int(straight.num_updates.numpy()) == 4
    for name in ("multipliers", "smoothed_miss_rate", "weights"):
        np.testing.assert_allclose(getattr(resumed, name).numpy(), getattr(straight, name).numpy(),
                                   rtol=1e-5, err_msg=name)
    for a, b in zip(straight_trainer.model.weights, resumed_trainer.model.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5)


def test_update_every_steps_and_missing_held_out_recall():
    train = make_dataset(*make_data(256, seed=0), batch_size=32)  # 8 steps per epoch
    held_out = make_dataset(*make_data(96, seed=1))
    rule = RecallTarget(target_class=2, target_recall=0.9)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=rule,
                      steps_per_loop=2,
                      callbacks=[rule.controller(validation_data=held_out, update_every=4)])
    trainer.fit(train, epochs=2)
    assert int(rule.num_updates.numpy()) == 4
    assert int(rule.last_update_step.numpy()) == 16

    other = RecallTarget(target_class=2, target_recall=0.9)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=other,
                      callbacks=[RecallTargetController(other)])
    with pytest.raises(ValueError, match="needs held-out per-class recall"):
        trainer.fit(train, epochs=1)
    with pytest.raises(ValueError, match="update_every needs validation_data"):
        RecallTargetController(other, update_every=5)


def test_controller_raises_the_target_class_recall():
    train = make_dataset(*make_data(1200, seed=0))
    features, labels = make_data(600, seed=1)
    held_out = make_dataset(features, labels)

    def target_recall(rule):
        callbacks = [rule.controller(validation_data=held_out)] if rule is not None else []
        trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=rule,
                          optimizer=lambda: keras.optimizers.Adam(0.01), callbacks=callbacks)
        trainer.fit(train, epochs=6)
        return trainer.evaluate(held_out)["recall/2"]

    plain = target_recall(None)
    controlled = target_recall(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0))
    assert plain < 0.6
    assert controlled > plain + 0.2


# ------------------------------------------------------------------ margins


def train_weights(rule=None, loss=None, epochs=2, strategy=None):
    train = make_dataset(*make_data(256, seed=0))
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=rule,
                      loss=loss, strategy=strategy, optimizer=lambda: keras.optimizers.Adam(0.01))
    trainer.fit(train, epochs=epochs)
    return [w.numpy() for w in trainer.model.weights]


def test_margins_start_as_the_logit_adjusted_loss():
    counts = [600.0, 300.0, 100.0]
    rule = RecallTarget(mode="worst_class", class_counts=counts, adjust="margins")
    adjusted = train_weights(loss=LogitAdjustedCrossentropy(counts, tau=1.0))
    for ours, reference in zip(train_weights(rule), adjusted):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    assert rule.prior_correction == "inverse_frequency"
    # With the logit-adjusted loss the base is uniform: the offsets are 0 and the prior counts once.
    with_loss = RecallTarget(mode="worst_class", class_counts=counts, adjust="margins",
                             loss=LogitAdjustedCrossentropy(counts))
    for ours, reference in zip(train_weights(with_loss, loss=LogitAdjustedCrossentropy(counts)),
                               adjusted):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


class ShiftedCrossentropy(keras.losses.Loss):
    """CE of logits + a fixed shift: the reference for a rule's offsets."""

    def __init__(self, shift):
        super().__init__()
        self.shift = np.asarray(shift, np.float32)

    def call(self, y_true, y_pred):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(tf.reshape(y_true, [-1]), tf.int32), logits=y_pred + self.shift)


def test_moved_margins_shift_the_training_loss_and_leave_the_gradient_alone():
    rule = built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.0,
                              adjust="margins"))
    weights = rule.update([0.9, 0.9, 0.4])
    assert weights[2] > 1.0
    context = TrainingContext(epoch=tf.constant(0, tf.int64), step=tf.constant(0, tf.int64))
    offsets = rule.logit_offsets(context).numpy()
    np.testing.assert_allclose(offsets, -np.log(weights), rtol=1e-6)
    assert offsets[2] < offsets[0], "the controlled class gets the larger margin"
    gradient = tf.ones([2, NUM_CLASSES])
    np.testing.assert_array_equal(rule(tf.constant([2, 0]), tf.zeros([2, 3]), gradient, context),
                                  gradient)
    # Training with the rule == training with CE on the shifted logits.
    fresh = built(RecallTarget(target_class=2, target_recall=0.9, adjust="margins"))
    fresh.weights.assign(weights)
    for ours, reference in zip(train_weights(fresh), train_weights(loss=ShiftedCrossentropy(offsets))):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    # Prediction and evaluation see the model's own logits (no offsets).
    assert RecallTarget(target_class=2, target_recall=0.9).logit_offsets(context) is None


def test_margins_under_mirrored_strategy_match_one_replica(mirrored):
    def rule():
        moved = built(RecallTarget(mode="worst_class", class_counts=[600.0, 300.0, 100.0],
                                   adjust="margins", smoothing=0.0))
        return moved

    single = rule()
    single.update([0.9, 0.8, 0.3])
    with mirrored.scope():
        replicated = rule()
    replicated.update([0.9, 0.8, 0.3])
    for ours, reference in zip(train_weights(replicated, strategy=mirrored), train_weights(single)):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_compose_and_deferred_pass_the_offsets_on():
    margins = built(RecallTarget(mode="worst_class", class_counts=[600.0, 300.0, 100.0],
                                 adjust="margins"))
    weights = built(RecallTarget(mode="worst_class", class_counts=[600.0, 300.0, 100.0],
                                 adjust="weights"))
    context = TrainingContext(epoch=tf.constant(1, tf.int64), step=tf.constant(0, tf.int64))
    expected = margins.logit_offsets(context).numpy()
    composed = Compose(weights, margins)
    composed.build(NUM_CLASSES)
    np.testing.assert_allclose(composed.logit_offsets(context), expected)
    assert Compose(weights).logit_offsets(context) is None
    deferred = DeferredReweighting(margins, start_epoch=2)
    np.testing.assert_array_equal(deferred.logit_offsets(context), np.zeros(NUM_CLASSES))
    later = TrainingContext(epoch=tf.constant(2, tf.int64), step=tf.constant(0, tf.int64))
    np.testing.assert_allclose(deferred.logit_offsets(later), expected)


def test_adjust_is_checked_and_round_trips():
    with pytest.raises(ValueError, match="adjust must be one of"):
        RecallTarget(mode="worst_class", adjust="logits")
    rule = RecallTarget(mode="worst_class", adjust="margins")
    assert RecallTarget.from_config(rule.get_config()).adjust == "margins"
