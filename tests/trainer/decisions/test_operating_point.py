"""Tests of the target-recall operating point: the choice against independent oracles, the rules, the Trainer.

Oracles: a brute-force search over every cut-off, the score-test form of the Wilson bound, exact binomial
coverage of the chosen cut-off, and a Monte Carlo check on fresh samples.
"""

import json
import math
import statistics
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import Trainer, decisions
from trainer.checks import ArgumentError
from trainer.decisions import FILENAME, TargetRecallPoint, choose_operating_point, decision_metrics
from trainer.decisions.target_recall import target_scores

NUM_CLASSES = 4


def noisy_logits(num_examples=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    logits = rng.normal(size=(num_examples, NUM_CLASSES)) + 1.5 * np.eye(NUM_CLASSES)[labels]
    return logits.astype(np.float32), labels


def shows_recall(hits, positives, target_recall, confidence):
    """The one-sided score test: `hits / positives` shows recall > `target_recall` at `confidence`.

    Equivalent to "the Wilson lower bound reaches the target", written from the test's definition
    instead of the bound's closed form.
    """
    z = statistics.NormalDist().inv_cdf(confidence)
    return hits / positives - target_recall >= max(z, 0.0) * math.sqrt(
        target_recall * (1.0 - target_recall) / positives)


def brute_force_best_precision(scores, is_target, target_recall, confidence=0.5, weights=None):
    """The best (weighted) precision over every cut-off whose recall passes the score test."""
    weights = np.ones(len(scores)) if weights is None else weights
    positives = int(is_target.sum())
    best = 0.0
    for cutoff in np.unique(scores):
        predicted = scores >= cutoff
        hits = int((predicted & is_target).sum())
        if shows_recall(hits, positives, target_recall, confidence):
            best = max(best, weights[predicted & is_target].sum() / weights[predicted].sum())
    return best


def binomial_cdf(k, n, p):
    """P(Binomial(n, p) <= k), summed exactly."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("kind", ["logit_offset", "threshold"])
def test_choice_reaches_the_recall_with_the_best_precision(kind):
    logits, labels = noisy_logits()
    point = choose_operating_point(logits, labels, target_class=1, target_recall=0.9, method=kind,
                                   confidence=0.5, estimator="empirical")
    assert point.kind == kind
    metrics = decision_metrics(point, logits, labels)
    assert metrics["target_recall"] >= 0.9
    assert metrics["target_recall"] == pytest.approx(point.validation_recall)
    assert metrics["target_precision"] == pytest.approx(point.validation_precision)
    expected = brute_force_best_precision(target_scores(logits, 1, kind), labels == 1, 0.9)
    assert point.validation_precision == pytest.approx(expected)
    argmax_recall = decision_metrics(None, logits, labels)["recall"][1]
    assert argmax_recall < 0.9 and point.offset > 0, "reaching 0.9 needs a push toward class 1"


@pytest.mark.parametrize("kind", ["logit_offset", "threshold"])
@pytest.mark.parametrize("target_recall", [0.8, 0.9])
def test_choice_with_confidence_and_prior_is_the_brute_force_optimum(kind, target_recall):
    logits, labels = noisy_logits(600, seed=3)
    keep = (labels != 0) | (np.arange(len(labels)) % 3 == 0)  # class 0 under-represented
    logits, labels = logits[keep], labels[keep]
    prior = np.array([0.4, 0.1, 0.2, 0.3])
    point = choose_operating_point(logits, labels, target_class=1, target_recall=target_recall,
                                   method=kind, class_prior=prior, confidence=0.9, bound="wilson")
    # Precision under the prior: each example weighs prior[y] / (its class's share of the data).
    share = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    weights = (prior / share)[labels]
    expected = brute_force_best_precision(target_scores(logits, 1, kind), labels == 1, target_recall,
                                          confidence=0.9, weights=weights)
    assert point.validation_precision == pytest.approx(expected)
    # The rule it returns, applied to the logits, has the recall and precision it reports.
    decided = point.decide(logits) == 1
    positives = labels == 1
    assert decided[positives].mean() == pytest.approx(point.validation_recall)
    assert weights[decided & positives].sum() / weights[decided].sum() == pytest.approx(
        point.validation_precision)
    assert shows_recall(int(decided[positives].sum()), int(positives.sum()), target_recall, 0.9)


def test_confidence_bound_asks_for_more_recall_on_few_examples():
    logits, labels = noisy_logits()
    point = choose_operating_point(logits, labels, target_class=1, target_recall=0.9, bound="wilson")
    positives = int(np.sum(labels == 1))
    assert point.confidence == 0.9
    assert shows_recall(round(point.validation_recall * positives), positives, 0.9, 0.9)
    assert point.validation_recall > choose_operating_point(
        logits, labels, target_class=1, target_recall=0.9, confidence=0.5,
        estimator="empirical").validation_recall
    few = (labels != 1) | (np.cumsum(labels == 1) <= 8)
    with pytest.warns(UserWarning, match="too few to show recall"):
        fallback = choose_operating_point(logits[few], labels[few], target_class=1,
                                          target_recall=0.95, estimator="empirical")
    assert fallback.validation_recall == 1.0


def chosen_hits(positives, confidence, target_recall=0.9, bound="wilson"):
    """How many of `positives` target-class examples (distinct scores, nothing else) the choice catches."""
    logits = np.zeros((positives, 3))
    logits[:, 1] = np.linspace(3.0, -3.0, positives)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: a feasible cut-off exists
        point = choose_operating_point(logits, np.ones(positives, np.int64), target_class=1,
                                       target_recall=target_recall, confidence=confidence,
                                       estimator="empirical", bound=bound)
    return round(point.validation_recall * positives)


@pytest.mark.parametrize("confidence, worst, mean", [(0.9, 0.84, 0.895), (0.95, 0.92, 0.95)])
def test_chosen_cutoff_reaches_the_recall_with_the_confidence_exact_binomial(confidence, worst, mean):
    # With only target-class examples every cut-off has precision 1, so the choice is the highest
    # feasible cut-off: the fewest hits h that pass the score test.
    # Its recall on new data is at least that of the h-th highest of n positive scores, which reaches
    # t exactly when fewer than h of n new draws fall below it: P(Binomial(n, t) <= h - 1).
    coverages = []
    for n in range(30, 301, 9):
        hits = chosen_hits(n, confidence)
        assert hits == min(h for h in range(n + 1) if shows_recall(h, n, 0.9, confidence))
        coverages.append(binomial_cdf(hits - 1, n, 0.9))
    assert min(coverages) >= worst  # the Wilson bound is approximate: close to, not always above
    assert np.mean(coverages) >= mean


def test_point_estimate_reaches_the_recall_only_about_half_the_time_exact_binomial():
    coverages = [binomial_cdf(chosen_hits(n, 0.5) - 1, n, 0.9) for n in range(30, 301, 9)]
    assert 0.35 <= np.mean(coverages) <= 0.55


def _fresh_sample_coverage(**choice):
    """How often a rule chosen on 60 target-class and 180 other examples (3 classes) reaches recall
    0.9 on 50,000 fresh target-class examples of the same distribution, over 250 repetitions, at
    confidence 0.5 and 0.9."""
    def sample(rng, positives, others):
        labels = np.r_[np.ones(positives, np.int64), rng.choice([0, 2], size=others)]
        return rng.normal(size=(len(labels), 3)) + 1.5 * np.eye(3)[labels], labels

    fresh_logits, _ = sample(np.random.default_rng(0), 50_000, 0)
    met = {}
    for confidence in (0.5, 0.9):
        rng = np.random.default_rng(1)
        recalls = []
        for _ in range(250):
            point = choose_operating_point(*sample(rng, 60, 180), target_class=1, target_recall=0.9,
                                           confidence=confidence, interval_level=None, **choice)
            recalls.append(np.mean(point.decide(fresh_logits) == 1))
        met[confidence] = np.mean(np.array(recalls) >= 0.9)
    return met


def test_recall_holds_on_fresh_samples_monte_carlo():
    met = _fresh_sample_coverage(estimator="empirical", bound="wilson")
    assert met[0.9] >= 0.8, met
    assert met[0.5] <= 0.5, met


def test_new_defaults_on_fresh_samples_monte_carlo():
    # With the defaults: the exact bound reaches 0.9 at least 90% of the time (up to Monte Carlo
    # error), the Harrell-Davis point estimate about half the time.
    met = _fresh_sample_coverage()
    assert met[0.9] >= 0.87, met  # >= 0.9 in expectation; 250 draws: standard error 0.019
    assert 0.4 <= met[0.5] <= 0.65, met


def test_decision_rules_match_their_definitions():
    logits, _ = noisy_logits(200, seed=1)
    offset = TargetRecallPoint("logit_offset", 2, NUM_CLASSES, offset=0.7, threshold=None,
                               target_recall=0.9, validation_recall=0.0, validation_precision=0.0)
    np.testing.assert_array_equal(offset.decide(logits), (logits + [0, 0, 0.7, 0]).argmax(axis=1))
    threshold = TargetRecallPoint("threshold", 2, NUM_CLASSES, offset=-np.log(0.3 / 0.7), threshold=0.3,
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


@pytest.mark.parametrize("kwargs, argument, message", [
    ({"target_class": 7}, "target_class", "target_class must be a class index in 0..3"),
    ({"target_recall": 0.0}, "target_recall", "target_recall must be in"),
    ({"method": "best"}, "method", "method must be one of"),
    ({"confidence": 1.0}, "confidence", r"confidence must be in \[0.5, 1\)"),
    ({"class_prior": [1.0, -1.0, 1.0, 1.0]}, "class_prior", "class_prior must be 4 non-negative"),
])
def test_bad_arguments_are_named(kwargs, argument, message):
    logits, labels = noisy_logits(50)
    arguments = {"target_class": 1, "target_recall": 0.9, **kwargs}
    with pytest.raises(ArgumentError, match=message) as raised:
        choose_operating_point(logits, labels, **arguments)
    assert raised.value.argument == argument
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

    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    trainer.fit(dataset, epochs=2)
    logits, collected_labels = trainer.collect_logits(dataset)
    np.testing.assert_array_equal(collected_labels, labels)
    point = decisions.calibrate("target_recall", logits, collected_labels, target_class=3,
                                target_recall=0.95)
    trainer.operating_point = point
    point.save(trainer.model_dir)
    saved = json.loads((tmp_path / FILENAME).read_text())
    assert saved["kind"] == point.kind and saved["target_class"] == 3
    # The trainer decides as the point does, with the recall the choice measured on these examples.
    predicted = trainer.predict_classes(features)
    np.testing.assert_array_equal(predicted, point.decide(trainer.predict_logits(features)))
    assert np.mean(predicted[labels == 3] == 3) == pytest.approx(point.validation_recall)

    reloaded = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path))
    reloaded.operating_point = decisions.load(str(tmp_path))
    assert reloaded.operating_point == point
    logits = reloaded.predict_logits(features)
    np.testing.assert_array_equal(reloaded.predict_classes(features), point.decide(logits))
    probabilities = reloaded.predict(features)
    expected = tf.nn.softmax(point.adjust_logits(logits)).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
