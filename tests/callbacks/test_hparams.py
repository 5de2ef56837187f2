"""The HParams records (`callbacks.hparams`), read back with TensorBoard's reader and the plugin's parsing."""

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from callbacks.hparams import Session, hparam_info, hparam_value, metric_info, write_session_end


def _hparams_content(directory):
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: events.SummaryMetadata(tag).plugin_data.content for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME}


def test_values_keep_their_kind_and_integers_their_digits():
    assert hparam_value(True) is True and hparam_value(np.bool_(False)) is False
    assert hparam_value(256) == "256" and hparam_value(np.int64(3)) == "3"
    assert hparam_value(0.5) == 0.5 and hparam_value(np.float32(0.25)) == 0.25
    assert hparam_value((1.0, 2.5)) == "1.0,2.5" and hparam_value("none") == "none"


def test_session_start_and_end_round_trip(tmp_path):
    session = Session(
        values={"epochs": 8, "learning_rate": 0.01, "deterministic": False, "loss": "focal", "gamma": None},
        hparam_infos=[hparam_info("epochs", "int"), hparam_info("learning_rate", "float"),
                      hparam_info("deterministic", "bool"),
                      hparam_info("loss", "str", values=["cross_entropy", "focal"], differs=True),
                      hparam_info("gamma", "float", description="focal only")],
        metric_infos=[metric_info("final/min_recall", "worst-class recall")], trial_id="runs/focal")
    writer = tf.summary.create_file_writer(str(tmp_path))
    session.write_start(writer, step=0)
    write_session_end(writer, "success", step=40)
    writer.close()
    content = _hparams_content(tmp_path)
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert infos["epochs"].type == api_pb2.DATA_TYPE_STRING
    assert infos["learning_rate"].type == api_pb2.DATA_TYPE_FLOAT64
    assert [v.bool_value for v in infos["deterministic"].domain_discrete.values] == [False, True]
    assert [v.string_value for v in infos["loss"].domain_discrete.values] == ["cross_entropy", "focal"]
    assert infos["loss"].differs and not infos["epochs"].differs
    assert infos["gamma"].description == "focal only"
    assert [(m.name.tag, m.display_name) for m in experiment.metric_infos] == [
        ("final/min_recall", "worst-class recall")]
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.group_name == "runs/focal"
    assert start.hparams["epochs"].string_value == "8"
    assert start.hparams["learning_rate"].number_value == pytest.approx(0.01)
    deterministic = start.hparams["deterministic"]
    assert deterministic.HasField("bool_value") and not deterministic.bool_value
    assert "gamma" not in start.hparams, "None: the feature is off, the cell stays empty"
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS and end.end_time_secs > start.start_time_secs - 1


def test_a_session_without_a_schema_types_its_values(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    Session(values={"batch_size": 32, "rate": 0.1, "name": "x"}).write_start(writer)
    writer.close()
    experiment = hparams_metadata.parse_experiment_plugin_data(
        _hparams_content(tmp_path)[hparams_metadata.EXPERIMENT_TAG])
    assert {i.name: i.type for i in experiment.hparam_infos} == {
        "batch_size": api_pb2.DATA_TYPE_STRING, "rate": api_pb2.DATA_TYPE_FLOAT64,
        "name": api_pb2.DATA_TYPE_STRING}
    assert [m.name.tag for m in experiment.metric_infos] == [
        "final/balanced_accuracy", "final/min_recall", "final/macro_f1", "final/accuracy"]


def test_bad_kinds_and_statuses_are_refused(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        hparam_info("x", "integer")
    with pytest.raises(ValueError, match="status must be one of"):
        write_session_end(tf.summary.create_file_writer(str(tmp_path)), "done")
