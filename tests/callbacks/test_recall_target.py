"""Tests of the recall-target rule and its controller: the update, replicas, resume, effect."""

import math
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
from trainer.evaluation import EvaluationResult

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
    for name in ("multipliers", "smoothed_miss_rate", "deadband_direction", "weights"):
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


# ----------------------------------------------------------------- deadband


def binomial_tail_outside(successes, trials, p, level):
    """Oracle: p is outside the two-sided Clopper-Pearson interval of successes/trials at level
    iff one exact binomial tail at p is below (1 - level) / 2 (the interval's defining duality),
    computed from the binomial probabilities directly."""
    alpha = (1.0 - level) / 2.0
    pmf = [math.comb(trials, i) * p ** i * (1 - p) ** (trials - i) for i in range(trials + 1)]
    return sum(pmf[:successes + 1]) < alpha or sum(pmf[successes:]) < alpha


@pytest.mark.parametrize("level", [0.9, 0.5])
def test_deadband_moves_only_outside_the_exact_binomial_interval(level):
    step, target, n = 2.0, 0.9, 15
    moved = []
    for successes in range(n + 1):
        rule = built(RecallTarget(target_class=2, target_recall=target, step_size=step,
                                  smoothing=0.0, deadband_level=level))
        assert rule.deadband == "binomial", "the deadband is on by default"
        rule.update([0.5, 0.5, successes / n], support=[40, 40, n])
        multiplier = rule.multipliers.numpy()[2]
        if binomial_tail_outside(successes, n, target, level):
            # Outside: today's formula, by hand.
            assert multiplier == pytest.approx(np.exp(step * ((1 - successes / n) - (1 - target))),
                                               rel=1e-6), successes
            moved.append(successes)
        else:
            assert multiplier == pytest.approx(1.0), f"{successes}/{n} is within noise of {target}"
        np.testing.assert_allclose(rule.multipliers.numpy()[:2], [1.0, 1.0])
    # At 90%, 15 examples show a shortfall only at 10/15 or below; at 50%, at 12/15 or below,
    # and 15/15 shows a surplus (the weight comes down).
    assert moved == (list(range(11)) if level == 0.9 else list(range(13)) + [15])
    # The same recall on many examples is outside: the move is today's.
    rule = built(RecallTarget(target_class=2, target_recall=target, step_size=step, smoothing=0.0))
    rule.update([0.5, 0.5, 13 / 15], support=[40, 40, 1500])
    assert rule.multipliers.numpy()[2] == pytest.approx(np.exp(step * (2 / 15 - 0.1)), rel=1e-6)


def test_deadband_off_or_supports_unknown_is_todays_step():
    for rule in (built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.0,
                                    deadband=None)),
                 built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.0))):
        support = [40, 40, 15] if rule.deadband is None else None
        rule.update([0.5, 0.5, 13 / 15], support=support)
        assert rule.multipliers.numpy()[2] == pytest.approx(np.exp(2.0 * (2 / 15 - 0.1)), rel=1e-6)
    # Support 0 (no held-out example of the class now): the interval is [0, 1], no move.
    rule = built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.5))
    rule.update([0.5, 0.5, 0.2], support=[40, 40, 1500])
    before = rule.multipliers.numpy()[2]
    assert before > 1.0
    rule.update([0.5, 0.5, np.nan], support=[40, 40, 0])
    assert rule.multipliers.numpy()[2] == pytest.approx(before)


def test_deadband_worst_class_steps_by_the_balanced_miss_rate_within_noise():
    step = 1.0
    # All three within noise of the mean recall on 15 examples each: nothing moves.
    rule = built(RecallTarget(mode="worst_class", step_size=step, smoothing=0.0))
    rule.update([12 / 15, 13 / 15, 14 / 15], support=[15, 15, 15])
    np.testing.assert_allclose(rule.multipliers.numpy(), np.ones(3), rtol=1e-6)
    # Classes 0 and 1 within noise of the balanced recall, class 2 far below it on 1500 examples.
    rule = built(RecallTarget(mode="worst_class", step_size=step, smoothing=0.0))
    recall = np.array([0.9, 0.9, 0.5])
    rule.update(recall, support=[15, 15, 1500])
    reference = np.mean(1 - recall)  # 0.2333: balanced recall 0.767, inside 13.5/15's interval
    log_c = step * np.array([reference, reference, 0.5])
    log_c -= np.log(np.mean(np.exp(log_c)))
    np.testing.assert_allclose(rule.multipliers.numpy(), np.exp(log_c), rtol=1e-6)
    # On many examples every class is outside: today's step.
    plain = built(RecallTarget(mode="worst_class", step_size=step, smoothing=0.0, deadband=None))
    banded = built(RecallTarget(mode="worst_class", step_size=step, smoothing=0.0))
    plain.update(recall)
    banded.update(recall, support=[1500, 1500, 1500])
    np.testing.assert_allclose(banded.multipliers.numpy(), plain.multipliers.numpy(), rtol=1e-6)


def test_deadband_keeps_approaching_until_the_target_is_crossed_then_settles():
    step, n = 1.0, 15
    rule = built(RecallTarget(target_class=2, target_recall=0.9, step_size=step, smoothing=0.0))
    support = [40, 40, n]
    expected = 0.0
    # (successes of 15, moves?): 8/15 is outside (raise); 12/15 and 13/15 are inside but still
    # short of 0.9 after a raise (keep raising); 14/15 crosses the target (settle); 13/15 then
    # is within noise (hold); 15/15 is inside too (hold); 8/15 is outside again (raise).
    for successes, moves, direction in [(8, True, 1), (12, True, 1), (13, True, 1), (14, False, 0),
                                        (13, False, 0), (15, False, 0), (8, True, 1)]:
        rule.update([0.5, 0.5, successes / n], support=support)
        if moves:
            expected += step * ((1 - successes / n) - 0.1)  # today's formula, by hand
        assert np.log(rule.multipliers.numpy()[2]) == pytest.approx(expected, abs=1e-6), successes
        assert rule.deadband_direction.numpy()[2] == direction, successes
    # A class absent from this measurement (support 0) neither moves nor forgets its direction.
    rule.update([0.5, 0.5, np.nan], support=[40, 40, 0])
    assert np.log(rule.multipliers.numpy()[2]) == pytest.approx(expected, abs=1e-6)
    assert rule.deadband_direction.numpy()[2] == 1


def monte_carlo_log_multipliers(p, deadband, repetitions, n=15, updates=30, seed=0):
    """Final log multiplier of the target class fed Binomial(n, p) / n recalls (fixed seed)."""
    rng = np.random.default_rng(seed)
    finals = []
    for _ in range(repetitions):
        rule = built(RecallTarget(target_class=0, target_recall=0.9, deadband=deadband))
        for successes in rng.binomial(n, p, size=updates):
            rule.update([successes / n, 0.9, 0.9], support=[n, 60, 60])
        finals.append(float(np.log(rule.multipliers.numpy()[0])))
    return np.array(finals)


def test_deadband_ignores_sampling_noise_monte_carlo():
    # True recall = target: each measurement on 15 examples is noise around it.
    plain = np.abs(monte_carlo_log_multipliers(0.9, None, 50)).mean()
    banded = np.abs(monte_carlo_log_multipliers(0.9, "binomial", 50)).mean()
    assert plain > 0.2, plain  # measured 0.340: the undamped controller chases the noise
    assert banded * 3 <= plain, (banded, plain)  # measured 0.000


def test_deadband_still_raises_a_real_shortfall_monte_carlo():
    # True recall 0.6, target 0.9: both raise the weight (measured: both reach the cap, log 10).
    plain = monte_carlo_log_multipliers(0.6, None, 10, seed=1)
    banded = monte_carlo_log_multipliers(0.6, "binomial", 10, seed=1)
    assert np.all(plain > 1.0) and np.all(banded > 1.0), (plain, banded)
    assert banded.mean() >= 0.9 * plain.mean()


def test_controller_passes_held_out_supports_to_the_deadband():
    model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)])
    model.compile(optimizer="adam", loss="mse")
    labels = np.array([0] * 20 + [1] * 20 + [2] * 15)
    predicted = labels.copy()
    predicted[-2:] = 0  # class 2: 13 of 15, within noise of 0.9
    result = EvaluationResult.from_logits(np.eye(NUM_CLASSES)[predicted], labels)
    for deadband, expected in (("binomial", 1.0), (None, np.exp(2.0 * (2 / 15 - 0.1)))):
        rule = built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.0,
                                  deadband=deadband))
        controller = rule.controller()
        controller.set_model(model)
        controller.on_evaluation(result)
        controller.on_epoch_end(0, {})
        assert rule.multipliers.numpy()[2] == pytest.approx(expected, rel=1e-6), deadband
    # model.fit logs: supports used when every val_support/<k> is there, else undamped.
    logs = {"val_recall/0": 1.0, "val_recall/1": 1.0, "val_recall/2": 13 / 15}
    for extra, expected in (({}, np.exp(2.0 * (2 / 15 - 0.1))),
                            ({f"val_support/{k}": n for k, n in enumerate([20, 20, 15])}, 1.0)):
        rule = built(RecallTarget(target_class=2, target_recall=0.9, step_size=2.0, smoothing=0.0))
        controller = RecallTargetController(rule)
        controller.set_model(model)
        controller.on_epoch_end(0, {**logs, **extra})
        assert rule.multipliers.numpy()[2] == pytest.approx(expected, rel=1e-6), extra


def test_deadband_arguments_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="deadband must be one of binomial or None, got 'wilson'"):
        RecallTarget(target_class=1, target_recall=0.9, deadband="wilson")
    for level in (0.0, 1.0, True):
        with pytest.raises(ValueError, match="deadband_level must be in"):
            RecallTarget(target_class=1, target_recall=0.9, deadband_level=level)
    rule = built(RecallTarget(target_class=1, target_recall=0.9, deadband=None, deadband_level=0.8))
    clone = RecallTarget.from_config(rule.get_config())
    assert (clone.deadband, clone.deadband_level) == (None, 0.8)
    assert RecallTarget(mode="worst_class").get_config()["deadband"] == "binomial"
    with pytest.raises(ValueError, match="support must have 3 values"):
        rule.update([0.9, 0.9, 0.9], support=[10, 10])
    with pytest.raises(ValueError, match="support must be finite and non-negative"):
        rule.update([0.9, 0.9, 0.9], support=[10, -1, 10])
