"""Absent and tiny classes in the prior-based losses and rules: pseudo-counts, capped weights, warnings.

Oracles are hand-computed fractions and the papers' formulas on the pseudo-counted or capped counts.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from losses import (
    ABSENT_CLASS_PSEUDO_COUNT,
    TINY_CLASS_SIZE,
    BalancedSoftmaxCrossentropy,
    ClassWeights,
    LDAMCrossentropy,
    LogitAdjustedCrossentropy,
    SmallClassWarning,
    logit_adjustment_offsets,
)

NAMES = ["ant", "bee", "cat", "dog"]


def _caught(make):
    """Runs `make()`; returns (result, the SmallClassWarning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = make()
    return result, [str(w.message) for w in caught if issubclass(w.category, SmallClassWarning)]


def test_documented_constants():
    assert ABSENT_CLASS_PSEUDO_COUNT == 0.5 and TINY_CLASS_SIZE == 5


def test_inverse_frequency_pseudo_counts_absent_and_caps_tiny_classes():
    # counts 100, 0, 20, 3 -> used 100, max(0.5, 5), 20, max(3, 5) -> 1/n = .01, .2, .05, .2;
    # averaged to 1 over the three present classes (ant, cat, dog): sum .26 -> x 3 / .26.
    rule, messages = _caught(lambda: ClassWeights.inverse_frequency([100, 0, 20, 3], class_names=NAMES))
    np.testing.assert_allclose(rule.get_config()["weights"], [3 / 26, 60 / 26, 15 / 26, 60 / 26], rtol=1e-6)
    assert len(messages) == 2, messages
    absent, tiny = messages
    assert "class 1 ('bee') has no training example" in absent and "0.5 examples (pseudo-count)" in absent
    assert "inverse-frequency weights" in absent
    # dog: capped 0.2 / 0.01 = 20x the most common class (ant); uncapped 100 / 3 = 33.33x.
    assert "class 3 ('dog') has only 3 training examples (fewer than 5)" in tiny
    assert "20x the most common class instead of 33.33x" in tiny


def test_singleton_weight_is_capped_at_a_five_example_class():
    rule, messages = _caught(lambda: ClassWeights.inverse_frequency([3900, 1]))
    weights = np.asarray(rule.get_config()["weights"])
    assert weights[1] / weights[0] == pytest.approx(3900 / 5)  # not 3900
    np.testing.assert_allclose(weights, [2 * 1 / 781, 2 * 780 / 781], rtol=1e-6)
    assert len(messages) == 1 and "class 1 has only 1 training example " in messages[0]
    assert "780x the most common class instead of 3900x" in messages[0]


def test_an_absent_class_does_not_change_the_other_weights():
    with_absent, _ = _caught(lambda: ClassWeights.inverse_frequency([400, 0, 40]))
    without, _ = _caught(lambda: ClassWeights.inverse_frequency([400, 40]))
    np.testing.assert_allclose(np.asarray(with_absent.get_config()["weights"])[[0, 2]],
                               without.get_config()["weights"], rtol=1e-6)


def test_classes_of_five_or_more_are_unchanged_and_quiet():
    counts = [500, 60, 5]
    rule, messages = _caught(lambda: ClassWeights.inverse_frequency(counts))
    expected = 1.0 / np.array(counts, float)
    np.testing.assert_allclose(rule.get_config()["weights"], expected * 3 / expected.sum(), rtol=1e-6)
    assert messages == []


@pytest.mark.parametrize("beta", [0.9, 0.999])
def test_effective_number_caps_tiny_and_pseudo_counts_absent(beta):
    rule, messages = _caught(lambda: ClassWeights.effective_number([300, 2, 0, 30], beta=beta,
                                                                   class_names=NAMES))
    used = np.array([300, 5, 5, 30], float)  # 2 -> 5 (tiny), 0 -> 0.5 -> 5 (absent)
    cui = (1 - beta) / (1 - beta ** used)
    present = np.array([True, True, False, True])
    np.testing.assert_allclose(rule.get_config()["weights"], cui * 3 / cui[present].sum(), rtol=1e-6)
    assert any("class 2 ('cat') has no training example" in m for m in messages)
    assert any("class 1 ('bee') has only 2 training examples" in m and "effective-number" in m
               for m in messages)


def test_logit_adjusted_and_balanced_softmax_use_the_pseudo_count():
    loss, messages = _caught(lambda: LogitAdjustedCrossentropy([10, 0, 3], tau=1.0,
                                                               class_names=["a", "b", "c"]))
    prior = np.array([10, 0.5, 3]) / 13.5
    np.testing.assert_allclose(loss.logit_shift(), np.log(prior), rtol=1e-12)
    assert len(messages) == 1 and "class 1 ('b') has no training example" in messages[0]
    assert "LogitAdjustedCrossentropy" in messages[0]
    logits = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]], np.float32)
    labels = np.array([2, 0])
    shifted = logits + np.log(prior)
    want = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(2), labels]
    np.testing.assert_allclose(_per_example(loss)(labels, logits).numpy(), want, rtol=1e-5)
    assert loss.get_config()["class_counts"] == [10.0, 0.0, 3.0]  # what was observed
    balanced, _ = _caught(lambda: BalancedSoftmaxCrossentropy([10, 0, 3]))
    np.testing.assert_allclose(balanced.logit_shift(), np.log([10, 0.5, 3]), rtol=1e-12)


def _per_example(loss):
    config = loss.get_config()
    config["reduction"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        return type(loss).from_config(config)


def test_ldam_margins_follow_the_present_classes():
    loss, messages = _caught(lambda: LDAMCrossentropy([100, 0, 16], max_margin=0.5, scale=1.0))
    # Rarest present class (16) gets 0.5; 100 gets 0.5 * (16 / 100) ** 0.25; absent gets 0.5.
    np.testing.assert_allclose(loss.margins, [0.5 * 0.16 ** 0.25, 0.5, 0.5], rtol=1e-12)
    assert len(messages) == 1 and "class 1 has no training example" in messages[0]
    quiet, _ = _caught(lambda: LDAMCrossentropy([100, 16], max_margin=0.5, scale=1.0))
    np.testing.assert_allclose(loss.margins[[0, 2]], quiet.margins, rtol=1e-12)


def test_posthoc_offsets_use_the_pseudo_count():
    offsets, messages = _caught(lambda: logit_adjustment_offsets([10, 0, 3], tau=2.0))
    np.testing.assert_allclose(offsets, -2.0 * np.log(np.array([10, 0.5, 3]) / 13.5), rtol=1e-6)
    assert len(messages) == 1 and "class 1" in messages[0]


@pytest.mark.parametrize("name", ["logit_adjusted", "balanced_softmax", "ldam"])
def test_make_loss_accepts_absent_classes_and_names_them(name):
    loss, messages = _caught(lambda: losses.make_loss(name, class_counts=[40, 0, 9, 3], num_classes=4,
                                                      class_names=NAMES, scale=1.0))
    assert len(messages) == 1, messages  # one warning, not one per layer
    assert "class 1 ('bee') has no training example" in messages[0]
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = np.random.default_rng(1).choice([0, 2, 3], size=32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("name", ["inverse_frequency", "effective_number"])
def test_make_rule_caps_and_names_tiny_and_absent_classes(name):
    rule, messages = _caught(lambda: losses.make_rule(name, num_classes=4, class_counts=[200, 1, 0, 50],
                                                      class_names=NAMES, beta=0.9999))
    assert len(messages) == 2, messages
    assert any("class 2 ('cat') has no training example" in m for m in messages)
    assert any("class 1 ('bee') has only 1 training example " in m for m in messages)
    weights = np.asarray(rule.get_config()["weights"])
    assert weights[1] / weights[0] == pytest.approx(
        1 / 5 / (1 / 200) if name == "inverse_frequency" else (1 - 0.9999 ** 200) / (1 - 0.9999 ** 5),
        rel=1e-5)
    tf.debugging.assert_all_finite(tf.constant(weights), "weights")
    assert np.mean(weights[[0, 1, 3]]) == pytest.approx(1.0)
