"""Tests of the TensorBoard output, read back with TensorBoard's own EventAccumulator."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.pr_curve import metadata as pr_curve_metadata

from callbacks import RecallTarget, TensorBoardExtras, render_confusion_matrix
from trainer import Trainer

NUM_CLASSES = 3
NUM_FEATURES = 5


def accumulator(directory):
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    return events


def test_confusion_matrix_rendering():
    image = render_confusion_matrix(np.array([[5, 0], [1, 3]]), cell_size=20)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    full, empty = image[2, 2], image[2, 22]  # corners of cells (0, 0) = 100% and (0, 1) = 0%
    assert tuple(full) == (8, 48, 107) and tuple(empty) == (255, 255, 255)
    assert (image[:20, :20] == 255).all(axis=-1).any(), "the '100' is drawn in white ink"
    assert (image[:20, 20:40] == 0).all(axis=-1).any(), "the '0' is drawn in black ink"
    with pytest.raises(ValueError, match="square"):
        render_confusion_matrix(np.zeros((2, 3)))


def test_trainer_run_writes_scalars_images_pr_curves_and_hparams(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, size=96).astype(np.int32)
    features = (rng.normal(size=(96, NUM_FEATURES)) + np.eye(NUM_CLASSES, NUM_FEATURES)[labels])
    dataset = tf.data.Dataset.from_tensor_slices((features.astype(np.float32), labels)).batch(32)

    def make_model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)])

    rule = RecallTarget(target_class=1, target_recall=0.95)
    extras = TensorBoardExtras(str(tmp_path), dataset, class_names=["a", "b", "c"],
                               hparams={"learning_rate": 1e-3, "reweighting": "recall_target",
                                        "target_class": 1, "unused": None})
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path),
                      steps_per_loop=2, reweighting=rule,
                      callbacks=[rule.controller(), extras])
    history = trainer.fit(dataset, epochs=2, validation_data=dataset)

    train = accumulator(tmp_path / "train")
    weights = [float(tf.make_ndarray(e.tensor_proto)) for e in train.Tensors("class_weight/1")]
    assert [e.step for e in train.Tensors("class_weight/1")] == [3, 6]
    assert weights[0] == pytest.approx(1.0) and weights[1] != pytest.approx(1.0), \
        "the controller moved the weights after the first evaluation"

    evaluation = accumulator(tmp_path / "eval")
    assert [e.step for e in evaluation.Tensors("recall/1")] == [3, 6]
    images = evaluation.Tensors("confusion_matrix")
    assert [e.step for e in images] == [3, 6]
    png = tf.make_ndarray(images[-1].tensor_proto)[2]
    matrix = trainer.evaluate(dataset)["confusion_matrix"]
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), render_confusion_matrix(matrix))
    for k in range(NUM_CLASSES):
        curves = evaluation.Tensors(f"pr_curve/{k}/pr_curves")
        assert [e.step for e in curves] == [3, 6]
        assert evaluation.SummaryMetadata(f"pr_curve/{k}/pr_curves").plugin_data.plugin_name == \
            pr_curve_metadata.PLUGIN_NAME
        data = tf.make_ndarray(curves[-1].tensor_proto)  # rows: TP, FP, TN, FN, precision, recall
        assert data.shape == (6, 51)
        assert data[0, 0] + data[3, 0] == np.sum(labels == k)  # every positive counted at t=0

    root = accumulator(tmp_path)
    tags = root.Tags()["tensors"]
    assert "_hparams_/experiment" in tags and "_hparams_/session_start_info" in tags
    content = root.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.hparams["reweighting"].string_value == "recall_target"
    assert session.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert "unused" not in session.hparams
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        root.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    assert "final/balanced_accuracy" in [m.name.tag for m in experiment.metric_infos]
    final = root.Tensors("final/balanced_accuracy")
    assert [e.step for e in final] == [6]
    assert float(tf.make_ndarray(final[0].tensor_proto)) == pytest.approx(
        history["val_balanced_accuracy"][-1], rel=1e-6)
