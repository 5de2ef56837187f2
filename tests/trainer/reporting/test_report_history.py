"""Per-class histories read back from TensorBoard event files written as the Trainer writes them."""

import numpy as np
import tensorflow as tf

from trainer.reporting.history import read_history
from trainer.summaries import SummaryWriters


def _write(directory, run, step, scalars):
    writer = tf.summary.create_file_writer(str(directory / run))
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value)
    writer.close()


def test_history_reads_the_trainers_tags_by_epoch_and_a_resume_overrides(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    recall = {10: [0.1, 0.5], 20: [0.3, 0.6], 30: [0.4, 0.7]}
    for step, values in recall.items():
        writers.write_scalars("eval", {"recall/0": values[0], "recall/1": values[1], "loss": 1.0,
                                       "precision/1": values[1] / 2}, step)
        writers.write_scalars("train", {"class_weight/0": step / 10, "class_weight/1": 1.0, "loss": 2.0},
                              step)
    writers.close()
    # A resumed run rewrites the last epoch (a later file), and tags that are not per-class histories.
    _write(tmp_path, "eval", 30, {"recall/0": 0.45, "final/recall/0": 0.99, "recall/7": 0.5})
    history = read_history(str(tmp_path), ["a", "b"])
    assert sorted(history.series["recall"]) == [0, 1]  # class 7 does not exist
    np.testing.assert_allclose(history.series["recall"][0], [[1, 0.1], [2, 0.3], [3, 0.45]])
    np.testing.assert_allclose(history.series["recall"][1], [[1, 0.5], [2, 0.6], [3, 0.7]])
    np.testing.assert_allclose(history.series["precision"][1][:, 1], [0.25, 0.3, 0.35])
    assert 0 not in history.series["precision"]
    np.testing.assert_allclose(history.series["class_weight"][0], [[1, 1.0], [2, 2.0], [3, 3.0]])


def test_weights_written_from_a_later_epoch_stay_on_their_epochs(tmp_path):
    for step in (5, 10, 15, 20):
        scalars = {"loss": 1.0}
        if step >= 15:  # a deferred rule: weights from the third epoch on
            scalars.update({"class_weight/0": 2.0, "class_weight/1": 0.5})
        _write(tmp_path, "train", step, scalars)
    history = read_history(str(tmp_path), ["a", "b"])
    np.testing.assert_allclose(history.series["class_weight"][1], [[3, 0.5], [4, 0.5]])
    assert not history.has("recall")


def test_tags_that_name_the_class_are_read_too(tmp_path):
    _write(tmp_path, "eval", 1, {"recall/cat": 0.2, "recall/1_dog": 0.3})
    history = read_history(str(tmp_path), ["cat", "dog"])
    assert history.series["recall"][0][0, 1] == np.float32(0.2)
    assert history.series["recall"][1][0, 1] == np.float32(0.3)


def test_no_event_files_is_no_history(tmp_path):
    (tmp_path / "export").mkdir()
    assert read_history(str(tmp_path), ["a", "b"]) is None
