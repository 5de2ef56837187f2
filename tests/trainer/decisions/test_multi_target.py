"""Tests of the multi-target operating point: the joint choice against independent oracles, conflicts.

Oracles: the single-target point (one target), a Harrell-Davis quantile by numerical integration of the Beta
density and a brute-force grid of offsets (the least offsets meeting every target), recall counted by NumPy
on fresh samples (Monte Carlo), and a grid search showing that conflicting targets cannot be met together.
"""

import functools
import json
import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

from trainer import decisions
from trainer.checks import ArgumentError
from trainer.decisions import (
    FILENAME,
    MultiTargetPoint,
    choose_multi_target_offsets,
    choose_operating_point,
    describe_conflict,
)
from trainer.decisions.monte_carlo import multi_target_study, multi_target_table

K = 4
# Class 3's mean leans towards class 2: raising one class's offset takes the other's examples.
MEANS = 3.0 * np.eye(K)
MEANS[3] = 3.0 * (0.8 * np.eye(K)[3] + 0.4 * np.eye(K)[2])


def sample(rng, counts, means=MEANS):
    labels = np.repeat(np.arange(len(counts)), counts)
    return rng.normal(size=(len(labels), means.shape[1])) + means[labels], labels


def fresh_recalls(offsets, logits, labels, classes):
    """Recall of each class under argmax(logits + offsets), counted by NumPy."""
    decided = np.argmax(logits + np.asarray(offsets, np.float64), axis=1)
    return [float(np.mean(decided[labels == c] == c)) for c in classes]


def quiet_choice(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return choose_multi_target_offsets(*args, **kwargs)


# --- one target: the single-target rule ------------------------------------------------------------

@pytest.mark.parametrize("confidence, estimator", [(0.5, "harrell_davis"), (0.9, "harrell_davis"),
                                                   (0.5, "empirical"), (0.9, "empirical")])
def test_one_target_is_the_single_target_logit_offset(confidence, estimator):
    rng = np.random.default_rng(0)
    logits, labels = sample(rng, [200, 150, 40, 30])
    logits = np.round(logits, 1)  # ties: the cut-off rules see them as groups
    point = quiet_choice(logits, labels, target_classes=[3], target_recalls=[0.85], confidence=confidence,
                         estimator=estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        single = choose_operating_point(logits, labels, target_class=3, target_recall=0.85,
                                        method="logit_offset", confidence=confidence, estimator=estimator)
    target = point.targets[0]
    assert target.offset == pytest.approx(single.offset, abs=1e-12)
    np.testing.assert_allclose(point.offsets(), single.offsets())
    assert (target.validation_recall, target.validation_precision) == pytest.approx(
        (single.validation_recall, single.validation_precision))
    assert target.recall_interval == pytest.approx(single.recall_interval)
    assert target.precision_interval == pytest.approx(single.precision_interval)
    assert (target.confidence_met, target.positives) == (single.confidence_met, single.positives)
    assert target.shown_confidence == pytest.approx(single.shown_confidence)
    assert point.feasible and target.feasible and point.common_fraction == 1.0 and point.message is None


# --- the joint choice: the least offsets meeting every target ---------------------------------------

def beta_log_density(t, a, b):
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (a - 1) * np.log(t) + (b - 1) * np.log1p(-t) - log_beta


@functools.lru_cache(maxsize=None)
def beta_slice_masses(n, q, nodes=64):
    """The Beta(q(n+1), (1-q)(n+1)) mass of each [(i-1)/n, i/n] (Gauss-Legendre per slice)."""
    a, b = q * (n + 1), (1 - q) * (n + 1)
    points, weights = np.polynomial.legendre.leggauss(nodes)
    t = (np.arange(n)[:, None] + (points[None, :] + 1) / 2) / n
    return np.sum(weights * np.exp(beta_log_density(t, a, b)), axis=1) / (2 * n)


def harrell_davis_by_integration(values, q):
    """sum_i x_(i) * the Beta mass of the i-th slice: the Harrell-Davis quantile, from its definition."""
    return float(beta_slice_masses(len(values), q) @ np.sort(values))


def required_offset(logits, labels, offsets, target, recall):
    """The offset `target` needs for `recall` given the others' offsets, from the definition."""
    others = logits + offsets
    others[:, target] = -np.inf
    scores = logits[labels == target, target] - others[labels == target].max(axis=1)
    return -harrell_davis_by_integration(scores, 1 - recall)


def test_joint_offsets_are_the_least_meeting_every_target_brute_force():
    rng = np.random.default_rng(1)
    logits, labels = sample(rng, [120, 120, 40, 40])
    targets, recalls = [2, 3], [0.9, 0.8]
    point = quiet_choice(logits, labels, target_classes=targets, target_recalls=recalls, confidence=0.5)
    assert point.feasible and all(t.feasible for t in point.targets)
    offsets = np.asarray(point.class_offsets)
    assert offsets[0] == offsets[1] == 0.0
    for target, recall in zip(targets, recalls):  # a fixed point of the definition
        assert offsets[target] == pytest.approx(required_offset(logits, labels, offsets, target, recall),
                                                abs=1e-5)
    # Every offset pair on a grid that meets both targets lies above the chosen one (componentwise).
    grid = np.linspace(-3.0, 3.0, 61)
    feasible = []
    for a in grid:
        for b in grid:
            trial = np.array([0.0, 0.0, a, b])
            if all(trial[t] >= required_offset(logits, labels, trial, t, r)
                   for t, r in zip(targets, recalls)):
                feasible.append((a, b))
    feasible = np.array(feasible)
    assert len(feasible) > 100
    assert np.all(feasible >= offsets[targets] - 1e-6)
    # ...and the grid points next to it do: it is the corner of the feasible set.
    assert np.min(np.abs(feasible - offsets[targets]).max(axis=1)) < 0.15


def test_both_targets_hold_on_fresh_data_in_most_draws_monte_carlo():
    # Choose on 60 + 60 target-class and 300 other examples; count each class's recall on 20,000 fresh
    # ones per class with NumPy. At confidence 0.9 (the exact bound) both targets hold in most draws;
    # at 0.5 (the Harrell-Davis point estimate) each holds about half the time, its median on target.
    rng = np.random.default_rng(2)
    fresh_logits, fresh_labels = sample(rng, [20_000] * K)
    targets, recalls = [2, 3], [0.9, 0.8]
    figures = {0.5: [], 0.9: []}
    for _ in range(60):
        logits, labels = sample(rng, [150, 150, 60, 60])
        for confidence, rows in figures.items():
            point = quiet_choice(logits, labels, target_classes=targets, target_recalls=recalls,
                                 confidence=confidence, interval_level=None)
            rows.append(fresh_recalls(point.offsets(), fresh_logits, fresh_labels, targets))
    strict, point_estimate = np.array(figures[0.9]), np.array(figures[0.5])
    both = np.mean(np.all(strict >= recalls, axis=1))
    assert both >= 0.75, both  # measured 0.87 over 100 draws
    assert np.all(np.mean(point_estimate >= recalls, axis=0) >= 0.3)
    assert np.all(np.mean(point_estimate >= recalls, axis=0) <= 0.7)
    np.testing.assert_allclose(np.median(point_estimate, axis=0), recalls, atol=0.03)


def test_the_intervals_of_each_target_are_its_own_cut_offs():
    rng = np.random.default_rng(3)
    logits, labels = sample(rng, [150, 150, 60, 60])
    point = quiet_choice(logits, labels, target_classes=[2, 3], target_recalls=[0.9, 0.8], confidence=0.5)
    decided = point.decide(logits)
    for target in point.targets:
        positives = labels == target.target_class
        predicted = decided == target.target_class
        assert target.positives == positives.sum()
        assert target.validation_recall == pytest.approx(np.mean(predicted[positives]))
        assert target.validation_precision == pytest.approx(np.mean(positives[predicted]))
        low, high = target.recall_interval
        assert low < target.validation_recall < high
        assert target.precision_interval[0] < target.validation_precision < target.precision_interval[1]
    hits = np.bincount(labels[decided == labels], minlength=K) / np.bincount(labels, minlength=K)
    assert point.validation_balanced_accuracy == pytest.approx(hits.mean())


# --- conflicting targets ---------------------------------------------------------------------------

def conflicting(seed=4):
    """Classes 2 and 3 nearly indistinguishable, class 1 well apart."""
    means = 3.0 * np.eye(K)
    means[3] = 3.0 * (0.2 * np.eye(K)[3] + 0.95 * np.eye(K)[2])
    return sample(np.random.default_rng(seed), [300, 200, 150, 150], means)


def best_min_ratio_on_a_grid(logits, labels, targets, recalls):
    grid = np.linspace(-4.0, 4.0, 81)
    best = 0.0
    for a in grid:
        for b in grid:
            offsets = np.zeros(K)
            offsets[targets] = a, b
            got = fresh_recalls(offsets, logits, labels, targets)
            best = max(best, min(g / r for g, r in zip(got, recalls)))
    return best


def test_conflicting_targets_are_reported_and_the_max_min_compromise_served():
    logits, labels = conflicting()
    targets, recalls = [2, 3], [0.9, 0.9]
    # The oracle: no offsets on a grid give both classes 0.9 (recall counted by NumPy).
    best = best_min_ratio_on_a_grid(logits, labels, targets, recalls)
    assert best < 0.75
    with pytest.warns(UserWarning, match="cannot all be met together"):
        point = choose_multi_target_offsets(logits, labels, target_classes=targets, target_recalls=recalls,
                                            confidence=0.5)
    assert not point.feasible and not any(t.feasible for t in point.targets)
    assert 0.0 < point.common_fraction < 1.0
    for target in point.targets:
        assert target.served_recall == pytest.approx(point.common_fraction * target.target_recall)
        assert target.validation_recall < target.target_recall
    # Max-min: its smallest recall-to-target ratio is about the grid's best (both are sample figures).
    ratio = min(t.validation_recall / t.target_recall for t in point.targets)
    assert ratio == pytest.approx(best, abs=0.03)
    message = describe_conflict(point, ["a", "b", "c", "d"])
    assert message == point.message.replace("class 2", "class 2 (c)").replace("class 3", "class 3 (d)")
    for target in point.targets:
        assert f"cannot reach recall 0.9 (it reaches {target.validation_recall:.3f}" in point.message
    assert "class 2 (c) cannot reach recall 0.9" in message and "class 3 (d)" in message


def test_a_target_apart_from_the_conflict_keeps_its_full_recall():
    # Class 1 far from the rest: giving it its full target takes nothing from classes 2 and 3. (A class
    # whose examples the conflict's large offsets take as well shares the common fraction: max-min.)
    logits, labels = conflicting(seed=5)
    logits[:, 1] += 6.0 * (labels == 1)
    point = quiet_choice(logits, labels, target_classes=[2, 3, 1], target_recalls=[0.9, 0.9, 0.95],
                         confidence=0.5)
    by_class = {t.target_class: t for t in point.targets}
    assert not point.feasible and not by_class[2].feasible and not by_class[3].feasible
    assert by_class[1].feasible and by_class[1].served_recall == 0.95
    assert by_class[1].validation_recall >= 0.94
    assert "class 1 at its full 0.95" in point.message


def test_feasible_targets_say_nothing(recwarn):
    rng = np.random.default_rng(6)
    logits, labels = sample(rng, [300, 300, 300, 300])  # 300 each: enough to show 0.8 at 0.9
    point = choose_multi_target_offsets(logits, labels, target_classes=[2, 3], target_recalls=[0.8, 0.8])
    assert point.feasible and point.message is None and describe_conflict(point) is None
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


# --- the protocol --------------------------------------------------------------------------------

def test_round_trip_through_dict_json_file_and_registry(tmp_path):
    point = quiet_choice(*conflicting(), target_classes=[2, 3], target_recalls=[0.9, 0.7], confidence=0.5,
                         class_prior=[0.25] * K)
    payload = point.to_dict()
    assert payload["kind"] == "multi_target_offsets" and len(payload["targets"]) == 2
    assert MultiTargetPoint.from_dict(payload) == point
    assert decisions.from_dict(json.loads(json.dumps(payload, allow_nan=False))) == point
    point.save(str(tmp_path))
    assert decisions.load(str(tmp_path)) == point
    assert json.loads((tmp_path / FILENAME).read_text()) == payload
    assert point.target_classes == (2, 3) and point.target_recalls == (0.9, 0.7)
    with pytest.warns(UserWarning, match="cannot all be met together"):
        chosen = decisions.calibrate("multi_target", *conflicting(), target_classes=[2, 3],
                                     target_recalls=[0.9, 0.7], confidence=0.5, class_prior=[0.25] * K)
    assert chosen == point


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(kind="logit_offset"), "Not a multi-target operating point"),
    (lambda p: p.update(class_offsets=[0.0, 1.0]), "class_offsets must be 4 finite numbers"),
    (lambda p: p["targets"][1].update(target_class=2), "targets must name distinct classes"),
    (lambda p: p["targets"][0].update(target_class=7), "targets must name distinct classes in [0, 4)"),
    (lambda p: p["targets"][0].update(target_recall=1.5), "target_recall must be in"),
    (lambda p: p["targets"][0].pop("offset"), "offset"),
    (lambda p: p.update(colour="red"), "colour"),
])
def test_a_bad_payload_is_refused(change, message):
    rng = np.random.default_rng(7)
    payload = quiet_choice(*sample(rng, [100, 100, 50, 50]), target_classes=[2, 3],
                           target_recalls=[0.8, 0.8]).to_dict()
    change(payload)
    with pytest.raises(ValueError) as raised:
        MultiTargetPoint.from_dict(payload)
    assert message in str(raised.value)


def test_numpy_and_tensorflow_decisions_agree():
    rng = np.random.default_rng(8)
    point = quiet_choice(*sample(rng, [150, 150, 60, 60]), target_classes=[2, 3], target_recalls=[0.9, 0.8],
                         confidence=0.5)
    logits, _ = sample(rng, [500] * K)
    logits = logits.astype(np.float32)
    decided = point.decide(logits)
    np.testing.assert_array_equal(point.decide_tensor(tf.constant(logits)).numpy(), decided)
    np.testing.assert_array_equal(tf.argmax(point.score_tensor(tf.constant(logits)), axis=-1).numpy(),
                                  decided)
    np.testing.assert_array_equal(decided, np.argmax(logits + np.asarray(point.class_offsets), axis=1))
    assert np.mean(decided != logits.argmax(axis=1)) > 0.01, "the offsets move some decisions"


@pytest.mark.parametrize("kwargs, argument, message", [
    ({"target_recalls": [0.9]}, "target_recalls", "one recall per target class (2 target_classes"),
    ({"target_classes": [2, 2]}, "target_classes", "must name each class once, got [2]"),
    ({"target_classes": [5, -1]}, "target_classes", "class indices in [0, 4), got [5, -1]"),
    ({"target_recalls": [0.0, 1.5]}, "target_recalls", "numbers in (0, 1], got [0.0, 1.5]"),
    ({"confidence": 1.0}, "confidence", "confidence must be in"),
    ({"max_sweeps": 0}, "max_sweeps", "max_sweeps must be"),
])
def test_bad_arguments_are_named_with_every_offending_value(kwargs, argument, message):
    rng = np.random.default_rng(9)
    logits, labels = sample(rng, [50, 50, 20, 20])
    arguments = {"target_classes": [2, 3], "target_recalls": [0.9, 0.8], **kwargs}
    with pytest.raises(ArgumentError) as raised:
        choose_multi_target_offsets(logits, labels, **arguments)
    assert raised.value.argument == argument and message in str(raised.value)
    with pytest.raises(ArgumentError, match=r"must have examples in the calibration data, got \[3\]"):
        choose_multi_target_offsets(logits[labels != 3], labels[labels != 3], target_classes=[2, 3],
                                    target_recalls=[0.9, 0.8])


def test_the_monte_carlo_study_runs_and_reports_both_choices():
    rows = multi_target_study(draws=3, confidences=(0.5,), fresh_per_class=2000)
    assert [row["confidence"] for row in rows] == [0.5]
    row = rows[0]
    assert 0.0 <= row["joint_both"] <= 1.0 and len(row["joint_each"]) == len(row["separate_median"]) == 2
    assert multi_target_table(rows).count("\n") == 2
