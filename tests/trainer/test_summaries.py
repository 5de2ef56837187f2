"""The Trainer's TensorBoard tags, descriptions and custom-scalars layout (`trainer.summaries`), read back."""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

from trainer.summaries import SummaryWriters, class_tag, class_title, scalar_tag

NAMES = ["T-shirt/top", "Trouser", "5", "a very long class name that goes on and on"]


def _events(directory):
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    events.Reload()
    return events


def test_tags_group_overall_figures_and_name_the_classes():
    assert class_tag(0, NAMES) == "0_T-shirt_top"
    assert class_tag(2, NAMES) == "2_5"  # a name that is another class's index stays explicit
    assert class_tag(2, ["0", "1", "2"]) == "2"
    assert class_tag(3, NAMES) == "3_" + "a_very_long_class_name_t"[:24]
    assert class_tag(5, ["0", "1", "2", "3", "4", "5"]) == "5"
    assert class_title(1, NAMES) == "class 1 (Trouser)" and class_title(1, None) == "class 1"
    assert scalar_tag("loss") == "overall/loss" and scalar_tag("min_recall") == "overall/min_recall"
    assert scalar_tag("recall/1", NAMES) == "recall/1_Trouser"
    assert scalar_tag("f1/1", NAMES) == "f1/1_Trouser"
    assert scalar_tag("support/1", NAMES) == "support/1_Trouser"
    assert scalar_tag("class_weight/0", NAMES) == "class_weight/0_T-shirt_top"
    assert scalar_tag("ece/calibrated") == "ece/calibrated"


def test_writers_describe_runs_and_lay_out_every_class(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    writers.describe(class_names=NAMES, runs={"eval": "the validation split (40 rows)"}, target_class=1)
    for step in (5, 10):
        writers.write_scalars("eval", {"loss": 1.0 / step, "balanced_accuracy": 0.5, "min_recall": 0.1,
                                       "precision/3": float("nan"),
                                       **{f"recall/{k}": k / 10 + step / 100 for k in range(4)}}, step)
        writers.write_scalars("train", {f"class_weight/{k}": 1.0 + k for k in range(4)}, step)
    writers.close()
    evaluation = _events(tmp_path / "eval")
    tags = evaluation.Tags()["tensors"]
    assert "precision/3_" + class_tag(3, NAMES)[2:] not in tags, "NaN is skipped"
    recall = evaluation.Tensors("recall/1_Trouser")
    assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in recall] == [
        (5, pytest.approx(0.15)), (10, pytest.approx(0.2))]
    assert "class 1 (Trouser)" in evaluation.SummaryMetadata("recall/1_Trouser").summary_description
    assert "the validation split (40 rows)" in evaluation.SummaryMetadata("overall/loss").summary_description
    descriptions = evaluation.Tensors("run_description")
    assert len(descriptions) == 1 and b"the validation split (40 rows)" in tf.make_ndarray(
        descriptions[0].tensor_proto).item()

    root = _events(tmp_path)
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(
        root.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto).item())
    charts = {c.title: list(c.multiline.tag) for category in layout.category for c in category.chart}
    train_tags = _events(tmp_path / "train").Tags()["tensors"]

    def matched(title, names):
        return sorted(t for t in names if any(re.search(p, t) for p in charts[title]))

    assert matched("recall of every class", tags) == sorted(f"recall/{class_tag(k, NAMES)}" for k in range(4))
    assert matched("class weights (after each epoch's update)", train_tags) == sorted(
        f"class_weight/{class_tag(k, NAMES)}" for k in range(4))
    assert matched("recall and precision of class 1 (Trouser)", tags) == ["recall/1_Trouser"]
    assert matched("loss (train and eval)", tags) == ["overall/loss"]


def test_disabled_writers_write_nothing(tmp_path):
    writers = SummaryWriters(str(tmp_path), enabled=False)
    writers.write_scalars("train", {"loss": np.float32(1.0)}, 1)
    assert list(tmp_path.iterdir()) == []
