"""Tests of the TensorBoard extras, read back with TensorBoard's own EventAccumulator."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.pr_curve import metadata as pr_curve_metadata

from callbacks import RecallTarget, TensorBoardExtras, render_confusion_matrix
from callbacks.tensorboard_extras import matrix_classes, numpy_matrix_png, png_size, row_percentages
from trainer import Trainer
from trainer.evaluation import EvaluationResult

NUM_CLASSES = 3
NUM_FEATURES = 5


def accumulator(directory):
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("seed", range(5))
def test_row_percentages_add_up_to_100_and_stay_within_one_of_the_exact_share(seed):
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 7, size=(6, 6)) * (rng.random((6, 6)) < 0.7)
    matrix[3] = 0  # an empty row
    percent = row_percentages(matrix)
    totals = matrix.sum(axis=1)
    for row in range(6):
        if totals[row] == 0:
            assert (percent[row] == 0).all()
            continue
        assert percent[row].sum() == 100
        exact = 100.0 * matrix[row] / totals[row]
        assert (np.abs(percent[row] - exact) < 1.0).all()
        assert (percent[row][matrix[row] == 0] == 0).all()


def test_confusion_matrix_rendering():
    image = render_confusion_matrix(np.array([[5, 0], [1, 3]]), cell_size=20)
    assert image.shape == (60, 60, 3) and image.dtype == np.uint8
    assert tuple(image[2, 2]) == (236, 236, 236), "the top-left corner is the grey header"
    full, empty = image[22, 22], image[22, 42]  # corners of cells (0, 0) = 100% and (0, 1) = 0%
    assert tuple(full) == (8, 48, 107) and tuple(empty) == (255, 255, 255)
    assert (image[20:40, 20:40] == 255).all(axis=-1).any(), "the '100' is drawn in white ink"
    assert (image[20:40, 40:60] == 0).all(axis=-1).any(), "the '0' is drawn in black ink"
    with pytest.raises(ValueError, match="square"):
        render_confusion_matrix(np.zeros((2, 3)))


def test_matrix_classes_are_the_worst_recalls_plus_the_target():
    rng = np.random.default_rng(0)
    k = 40
    matrix = rng.integers(1, 20, size=(k, k)) + np.diag(rng.integers(0, 400, size=k))
    matrix[7] = 0  # no rows: last
    assert matrix_classes(matrix, limit=40) is None
    recall = np.array([matrix[j, j] / matrix[j].sum() if matrix[j].sum() else np.inf for j in range(k)])
    by_recall = sorted(range(k), key=lambda j: (recall[j], j))
    assert by_recall[-1] == 7
    best = by_recall[-2]  # the best recall of the classes with rows
    chosen = matrix_classes(matrix, limit=10, keep=best)
    assert chosen.tolist() == sorted(by_recall[:9] + [best])
    assert 7 not in chosen


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
                                        "target_class": 1, "unused": None},
                               confusion_matrix_every=2)
    logged = keras.callbacks.History()  # sees the logs after the controller added its weights
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, model_dir=str(tmp_path),
                      steps_per_loop=2, reweighting=rule,
                      callbacks=[rule.controller(), extras, logged])
    trainer.summaries.describe(class_names=["a", "b", "c"])  # the Trainer's own scalars by name too
    history = trainer.fit(dataset, epochs=3, validation_data=dataset)

    train = accumulator(tmp_path / "train")
    weights = [float(tf.make_ndarray(e.tensor_proto)) for e in train.Tensors("class_weight/1_b")]
    assert [e.step for e in train.Tensors("class_weight/1_b")] == [3, 6, 9]
    assert weights == pytest.approx(logged.history["class_weight/1"], rel=1e-6), \
        "each epoch's weights after its controller update, the last one included"
    assert weights[0] != pytest.approx(1.0)

    evaluation = accumulator(tmp_path / "eval")
    assert [e.step for e in evaluation.Tensors("recall/1_b")] == [3, 6, 9]
    images = evaluation.Tensors("overall/confusion_matrix")
    assert [e.step for e in images] == [6, 9], "every second epoch, and the last"
    png = tf.make_ndarray(images[-1].tensor_proto)[2]
    matrix = trainer.evaluate(dataset)["confusion_matrix"]
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(),
                                  tf.io.decode_png(numpy_matrix_png(matrix, None)).numpy())
    for k, name in enumerate("abc"):
        tag = f"pr_curve/{k}_{name}"
        curves = evaluation.Tensors(tag)
        assert [e.step for e in curves] == [3, 6, 9]
        metadata = evaluation.SummaryMetadata(tag)
        assert metadata.plugin_data.plugin_name == pr_curve_metadata.PLUGIN_NAME
        assert metadata.display_name == f"PR curve of class {k} ({name})"
        data = tf.make_ndarray(curves[-1].tensor_proto)  # rows: TP, FP, TN, FN, precision, recall
        assert data.shape == (6, 51)
        assert data[0, 0] + data[3, 0] == np.sum(labels == k)  # every positive counted at t=0

    root = accumulator(tmp_path)
    content = {tag: root.SummaryMetadata(tag).plugin_data.content for tag in root.Tags()["tensors"]
               if tag.startswith("_hparams_/")}
    session = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    assert session.hparams["reweighting"].string_value == "recall_target"
    assert session.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert session.hparams["target_class"].string_value == "1"  # an integer, shown as one
    assert "unused" not in session.hparams
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    types = {info.name: info.type for info in experiment.hparam_infos}
    assert types == {"learning_rate": api_pb2.DATA_TYPE_FLOAT64, "reweighting": api_pb2.DATA_TYPE_STRING,
                     "target_class": api_pb2.DATA_TYPE_STRING}
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics[:2] == ["final/balanced_accuracy", "final/min_recall"]
    final = root.Tensors("final/balanced_accuracy")
    assert [e.step for e in final] == [9]
    assert float(tf.make_ndarray(final[0].tensor_proto)) == pytest.approx(
        history["val_balanced_accuracy"][-1], rel=1e-6)
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS


def test_many_classes_draw_the_worst_ones_with_the_renderer_given(tmp_path):
    rng = np.random.default_rng(1)
    k, n = 45, 2000
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    hits = rng.random((n, 1)) < 0.6
    logits = (rng.normal(size=(n, k)) + 2.5 * np.eye(k)[labels] * hits).astype(np.float32)
    calls = []

    def renderer(matrix, class_names, classes):
        calls.append((np.array(matrix), list(class_names), None if classes is None else list(classes)))
        return numpy_matrix_png(matrix, class_names, classes)

    extras = TensorBoardExtras(str(tmp_path), class_names=[f"c{j}" for j in range(k)],
                               matrix_renderer=renderer, target_class=3, confusion_matrix_every=1)
    extras._step = lambda: 11  # no model: the evaluation is handed over as a Trainer would
    result = EvaluationResult.from_logits(logits, labels)
    extras.on_evaluation(result)
    extras.on_epoch_end(0, {})
    assert len(calls) == 1
    matrix, names, classes = calls[0]
    np.testing.assert_array_equal(matrix, result.confusion_matrix)
    assert names == [f"c{j}" for j in range(k)]
    recall = np.diag(matrix) / matrix.sum(axis=1)
    others = [j for j in np.argsort(recall, kind="stable") if j != 3][:29]
    assert classes == sorted([3, *map(int, others)])
    image = accumulator(tmp_path / "eval").Tensors("overall/confusion_matrix")[0]
    width, height, png = tf.make_ndarray(image.tensor_proto)
    assert (int(width), int(height)) == png_size(png) == (31 * 18, 31 * 18), "30 classes and the header"
    extras.on_train_end({})
    assert len(calls) == 1, "the last epoch was drawn already"


def test_confusion_matrix_every_is_checked():
    with pytest.raises(ValueError, match="confusion_matrix_every"):
        TensorBoardExtras("/tmp/x", confusion_matrix_every=-1)


@pytest.mark.parametrize("seed", range(3))
def test_pr_curves_of_all_classes_at_once_match_the_plugins_own_summary(seed):
    from tensorboard.plugins.pr_curve import summary as pr_curve_summary

    from callbacks.tensorboard_extras import pr_curve_counts
    rng = np.random.default_rng(seed)
    k, n = 7, 500
    labels = rng.integers(0, k, size=n)
    probabilities = rng.dirichlet(np.ones(k), size=n)
    probabilities[:5] = np.eye(k)[labels[:5]]  # probabilities of exactly 0 and 1
    data = pr_curve_counts(labels, probabilities, 21)
    for j in range(k):
        expected = tf.make_ndarray(pr_curve_summary.pb(
            "x", labels == j, probabilities[:, j], num_thresholds=21).value[0].tensor)
        np.testing.assert_allclose(data[j], expected, rtol=1e-6)
