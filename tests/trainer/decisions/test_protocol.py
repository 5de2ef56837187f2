"""Tests of the operating-point protocol: JSON round trips, the registry, NumPy vs TensorFlow decisions.

Every kind goes through the same checks; old `operating_point.json` files must still load.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from trainer import decisions
from trainer.checks import ArgumentError
from trainer.decisions import (
    FILENAME,
    KINDS,
    CostPoint,
    MultiTargetPoint,
    OperatingPoint,
    TargetRecallPoint,
    WorstClassPoint,
    choose_cost_point,
    choose_multi_target_offsets,
    choose_operating_point,
    choose_worst_class_offsets,
    fit_temperature,
)
from trainer.decisions.per_label import LabelThresholds

NUM_CLASSES = 4


def random_logits(num_examples=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    logits = rng.normal(size=(num_examples, NUM_CLASSES)) * 2.0 + 1.0 * np.eye(NUM_CLASSES)[labels]
    logits[:, 0] += 0.8  # a bias the worst-class offsets correct
    return logits.astype(np.float32), labels


def one_point_of_each_kind():
    logits, labels = random_logits()
    return [
        choose_operating_point(logits, labels, target_class=2, target_recall=0.9, method="logit_offset"),
        choose_operating_point(logits, labels, target_class=1, target_recall=0.8, method="threshold",
                               class_prior=[0.1, 0.2, 0.3, 0.4], confidence=0.95),
        choose_worst_class_offsets(logits, labels, max_balanced_accuracy_drop=None),
        choose_cost_point(logits, labels, cost_matrix=COSTS, calibration=fit_temperature(
            logits, labels, prior_correction=[0.0, 0.1, 0.0, -0.2])),
        choose_multi_target_offsets(logits, labels, target_classes=[1, 2], target_recalls=[0.5, 0.5]),
    ]


# Missing class 3 costs 5, any other error 1.
COSTS = [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [5, 5, 5, 0]]


# Files as the previous modules (trainer/operating_point.py, trainer/worst_class_point.py) wrote them.
OLD_TARGET_RECALL_FILE = """{
  "kind": "threshold",
  "target_class": 3,
  "num_classes": 4,
  "offset": 1.25,
  "threshold": 0.22270013882530884,
  "target_recall": 0.95,
  "validation_recall": 0.975,
  "validation_precision": 0.4875,
  "class_prior": [0.25, 0.25, 0.25, 0.25],
  "confidence": 0.9
}"""
OLD_WORST_CLASS_FILE = """{
  "class_offsets": [-0.5, 0.125, 0.0, 0.375],
  "num_classes": 4,
  "validation_min_recall": 0.7,
  "validation_balanced_accuracy": 0.8,
  "argmax_validation_min_recall": 0.5,
  "argmax_validation_balanced_accuracy": 0.81,
  "max_balanced_accuracy_drop": 0.0,
  "kind": "worst_class_offsets"
}"""


def test_the_registry_names_every_kind_once():
    assert dict(KINDS) == {"logit_offset": TargetRecallPoint, "threshold": TargetRecallPoint,
                           "worst_class_offsets": WorstClassPoint, "expected_cost": CostPoint,
                           "multi_target_offsets": MultiTargetPoint, "label_thresholds": LabelThresholds}
    # A multi-label model's per-label cut-offs decide [N, L] logits (tests/trainer/test_multi_label.py);
    # every other kind is a point of this protocol over [N, K] logits.
    assert [point.kind for point in one_point_of_each_kind()] == [k for k in KINDS if k != "label_thresholds"]
    with pytest.raises(TypeError):
        OperatingPoint()  # the protocol itself is abstract


@pytest.mark.parametrize("index", range(5))
def test_every_kind_round_trips_through_dict_json_and_file(index, tmp_path):
    point = one_point_of_each_kind()[index]
    payload = point.to_dict()
    assert payload["kind"] == point.kind and payload["num_classes"] == NUM_CLASSES
    assert decisions.from_dict(payload) == point
    assert type(point).from_dict(payload) == point
    assert decisions.from_dict(json.loads(json.dumps(payload, allow_nan=False))) == point
    path = point.save(str(tmp_path / "run"))  # creates the directory
    assert path == str(tmp_path / "run" / FILENAME)
    assert json.loads((tmp_path / "run" / FILENAME).read_text()) == payload
    loaded = decisions.load(str(tmp_path / "run"))
    assert loaded == point and type(loaded) is type(point)
    np.testing.assert_array_equal(loaded.offsets(), point.offsets())
    assert loaded.offsets().dtype == np.float32 and loaded.offsets().shape == (NUM_CLASSES,)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [FILENAME], "no temporary file left"


@pytest.mark.parametrize("index", range(5))
def test_numpy_and_tensorflow_decisions_agree(index):
    point = one_point_of_each_kind()[index]
    logits, _ = random_logits(5000, seed=7)
    decided = point.decide(logits)
    assert decided.shape == (5000,)
    served = point.decide_tensor(tf.constant(logits))
    assert served.dtype == tf.int32
    np.testing.assert_array_equal(served.numpy(), decided)
    compiled = tf.function(point.decide_tensor, input_signature=[tf.TensorSpec([None, NUM_CLASSES])])
    np.testing.assert_array_equal(compiled(tf.constant(logits)).numpy(), decided)
    assert len(np.unique(decided)) == NUM_CLASSES
    assert np.mean(decided != logits.argmax(axis=1)) > 0.01, "the point moves some decisions"


def test_old_files_still_load(tmp_path):
    (tmp_path / FILENAME).write_text(OLD_TARGET_RECALL_FILE)
    point = decisions.load(str(tmp_path))
    assert point == TargetRecallPoint(
        kind="threshold", target_class=3, num_classes=4, offset=1.25, threshold=0.22270013882530884,
        target_recall=0.95, validation_recall=0.975, validation_precision=0.4875,
        class_prior=(0.25, 0.25, 0.25, 0.25), confidence=0.9)
    np.testing.assert_array_equal(point.offsets(), [0, 0, 0, 1.25])
    # Threshold 0.2227 = sigmoid(-1.25): class 3 wins iff its probability is at least that.
    logits = np.array([[0.0, 0.0, 0.1, -0.1], [2.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
    probabilities = tf.nn.softmax(logits).numpy()  # p3 = 0.2257, 0.096, 0.110
    np.testing.assert_array_equal(probabilities[:, 3] >= 0.2227, [True, False, False])
    np.testing.assert_array_equal(point.decide(logits), [3, 0, 1])

    (tmp_path / FILENAME).write_text(OLD_WORST_CLASS_FILE)
    point = decisions.load(str(tmp_path))
    assert point == WorstClassPoint(
        class_offsets=(-0.5, 0.125, 0.0, 0.375), num_classes=4, validation_min_recall=0.7,
        validation_balanced_accuracy=0.8, argmax_validation_min_recall=0.5,
        argmax_validation_balanced_accuracy=0.81, max_balanced_accuracy_drop=0.0)
    assert point.to_dict() == json.loads(OLD_WORST_CLASS_FILE)
    logits = np.array([[0.3, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # Offset logits: [-0.2, 0.125, 0, 0.375], [-0.5, 0.625, 0, 0.375], [0.5, 0.125, 0, 0.375].
    np.testing.assert_array_equal(point.decide(logits), [3, 1, 0])


def test_no_file_is_no_point(tmp_path):
    assert decisions.load(str(tmp_path)) is None
    assert decisions.load(str(tmp_path / "missing")) is None
    assert decisions.load(None) is None
    assert decisions.load("") is None


@pytest.mark.parametrize("text, message", [
    ('{"kind": "cost_matrix", "num_classes": 4}',
     "Unknown operating point kind 'cost_matrix'; expected one of logit_offset, threshold, worst_class"),
    ('{"num_classes": 4}', "Unknown operating point kind None"),
    ('[1, 2]', "must be a JSON object, got list"),
    ('{"kind": "threshold"', "Expecting"),  # truncated JSON
    ('{"kind": "logit_offset", "target_class": 1}', "missing"),
    (OLD_TARGET_RECALL_FILE.replace('"target_class": 3', '"target_class": 4'),
     "target_class must be a class index in 0..3"),
    (OLD_TARGET_RECALL_FILE.replace('"confidence": 0.9', '"confidence": 0.9, "colour": "red"'),
     "colour"),
    (OLD_WORST_CLASS_FILE.replace("[-0.5, 0.125, 0.0, 0.375]", "[1.0]"),
     "class_offsets must be 4 finite numbers"),
])
def test_a_bad_file_is_a_clear_error_naming_it(text, message, tmp_path):
    (tmp_path / FILENAME).write_text(text)
    with pytest.raises(ValueError) as raised:
        decisions.load(str(tmp_path))
    assert str(raised.value).startswith(f"{tmp_path / FILENAME} is not a valid operating point: ")
    assert message in str(raised.value)


def test_calibrate_dispatches_by_kind():
    logits, labels = random_logits()
    assert decisions.calibrate("target_recall", logits, labels, target_class=1, target_recall=0.85,
                               method="threshold", confidence=0.8) == choose_operating_point(
        logits, labels, target_class=1, target_recall=0.85, method="threshold", confidence=0.8)
    assert decisions.calibrate("worst_class", logits, labels, iterations=50) == \
        choose_worst_class_offsets(logits, labels, iterations=50)
    with pytest.raises(ArgumentError, match="kind must be one of target_recall, worst_class") as raised:
        decisions.calibrate("best", logits, labels)
    assert raised.value.argument == "kind"
    with pytest.raises(TypeError, match="target_recall"):
        decisions.calibrate("worst_class", logits, labels, target_recall=0.9)


def test_decision_metrics_count_the_decisions():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 1.5], [0.5, 0.0, 0.0],
                       [0.0, 0.0, 3.0]])
    labels = np.array([0, 1, 1, 2, 2])
    argmax = decisions.decision_metrics(None, logits, labels)  # decides 0, 1, 2, 0, 2
    np.testing.assert_array_equal(argmax["confusion_matrix"], [[1, 0, 0], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_allclose(argmax["recall"], [1.0, 0.5, 0.5])
    assert "target_recall" not in argmax
    point = TargetRecallPoint("logit_offset", 1, 3, offset=1.0, threshold=None, target_recall=0.9,
                              validation_recall=1.0, validation_precision=1.0)
    pushed = decisions.decision_metrics(point, logits, labels)  # decides 0, 1, 1, 1, 2
    np.testing.assert_array_equal(pushed["confusion_matrix"], [[1, 0, 0], [0, 2, 0], [0, 1, 1]])
    assert pushed["target_recall"] == 1.0 and pushed["target_precision"] == pytest.approx(2 / 3)
    offsets = WorstClassPoint(class_offsets=(0.0, 0.0, 1.0), num_classes=3, validation_min_recall=0.0,
                              validation_balanced_accuracy=0.0, argmax_validation_min_recall=0.0,
                              argmax_validation_balanced_accuracy=0.0)
    shifted = decisions.decision_metrics(offsets, logits, labels)  # decides 0, 1, 2, 2, 2
    np.testing.assert_array_equal(shifted["confusion_matrix"], [[1, 0, 0], [0, 1, 1], [0, 0, 2]])
    assert shifted["min_recall"] == 0.5 and "target_recall" not in shifted


def test_a_new_kind_needs_only_offsets_and_its_dict(tmp_path):
    class Bias(OperatingPoint):  # the protocol's defaults: argmax(logits + offsets), save
        kind = "bias"
        num_classes = 3

        def offsets(self):
            return np.array([0.0, 0.0, 1.0], np.float32)

        def to_dict(self):
            return {"kind": self.kind, "num_classes": self.num_classes}

        @classmethod
        def from_dict(cls, payload):
            return cls()

    point = Bias()
    logits = np.array([[0.0, 0.5, 0.0], [0.0, 1.5, 0.0]], np.float32)
    np.testing.assert_array_equal(point.decide(logits), [2, 1])
    np.testing.assert_array_equal(point.decide_tensor(tf.constant(logits)).numpy(), [2, 1])
    point.save(str(tmp_path))
    assert json.loads((tmp_path / FILENAME).read_text()) == {"kind": "bias", "num_classes": 3}
