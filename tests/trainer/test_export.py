"""Tests of the SavedModel export: it serves the operating point's decision, and argmax without one."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.decisions import TargetRecallPoint, WorstClassPoint
from trainer.export import export_saved_model, load_serving_function

NUM_CLASSES = 3


def linear_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(NUM_CLASSES)])


THRESHOLD = TargetRecallPoint("threshold", 1, NUM_CLASSES, offset=1.5, threshold=float(1 / (1 + np.exp(1.5))),
                              target_recall=0.9, validation_recall=0.92, validation_precision=0.5)
OFFSETS = WorstClassPoint(class_offsets=(-0.5, 0.0, 0.5), num_classes=NUM_CLASSES, validation_min_recall=0.6,
                          validation_balanced_accuracy=0.7, argmax_validation_min_recall=0.5,
                          argmax_validation_balanced_accuracy=0.7)


@pytest.mark.parametrize("point", [None, THRESHOLD, OFFSETS], ids=["argmax", "threshold", "offsets"])
def test_the_export_serves_the_decision_and_records_it(point, tmp_path):
    model = linear_model()
    export_dir = str(tmp_path / "export")
    assert export_saved_model(model, export_dir, input_shape=[5], class_names=["a", "b", "c"],
                              operating_point=point, metadata={"dataset": "synthetic"}) == export_dir
    serve, metadata = load_serving_function(export_dir)
    features = np.random.default_rng(0).normal(size=(256, 5)).astype(np.float32) * 3.0
    outputs = serve(features=tf.constant(features))
    logits = model(features).numpy()
    np.testing.assert_allclose(outputs["logits"].numpy(), logits, rtol=1e-5, atol=1e-5)
    expected = logits.argmax(axis=1) if point is None else point.decide(outputs["logits"].numpy())
    np.testing.assert_array_equal(outputs["class_id"].numpy(), expected)
    np.testing.assert_array_equal(outputs["class_name"].numpy(), np.array([b"a", b"b", b"c"])[expected])
    np.testing.assert_allclose(outputs["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-6)
    if point is not None:
        assert np.mean(expected != logits.argmax(axis=1)) > 0.02, "the point changes some decisions"
    assert metadata == {"class_names": ["a", "b", "c"], "input_shape": [5], "dataset": "synthetic",
                        "operating_point": None if point is None else point.to_dict(),
                        "signatures": {"serving_default": "features", "serve_features": "features"}}
    assert json.loads(json.dumps(metadata, allow_nan=False)) == metadata


def test_loading_without_an_export_names_the_directory(tmp_path):
    with pytest.raises(ValueError, match="No exported model in export_dir="):
        load_serving_function(str(tmp_path))
