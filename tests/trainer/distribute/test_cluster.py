"""Cluster facts without a cluster: TF_CONFIG's checks, chief detection, worker directories, strategies.

Everything here runs in this process: TF_CONFIG texts are checked as given, roles are read from them
and from TensorFlow's own `TFConfigClusterResolver`; nothing connects to another process.
"""

import json
import os

import pytest
import tensorflow as tf

from trainer.checks import ArgumentError
from trainer.distribute import (
    ClusterRole,
    ModelDirError,
    TFConfigError,
    check_model_dir_writable,
    check_tf_config,
    is_chief,
    is_multi_worker,
    make_strategy,
    split_cpu_into_logical_devices,
    worker_directory,
)

WORKERS = ["h1:2222", "h2:2222"]


def _config(cluster, task_type="worker", index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


# --- TF_CONFIG: every error names the field and its value -------------------------------------

@pytest.mark.parametrize("text, field, value, fragments", [
    ('{"cluster": ', "", '{"cluster": ', ["not valid JSON", repr('{"cluster": ')]),
    ("[1, 2]", "cluster", None, ['no "cluster"', "cluster=None"]),
    ('{"task": {"type": "worker", "index": 0}}', "cluster", None, ['no "cluster"', "cluster=None"]),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "cluster", {}, ["cluster={}"]),
    ('{"cluster": {"worker": ["h:1"]}}', "task", None, ['no "task"', "task=None"]),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker"}}', "task", {"type": "worker"},
     ['no "task" with "type" and "index"', "task={'type': 'worker'}"]),
    (_config({"worker": ["h:1"]}, "chief"), "task.type", "chief",
     ["task type 'chief' is not a job", "['worker']"]),
    (_config({"worker": ["h:1"]}, 7), "task.type", 7, ["task type 7 is not a job"]),
    (_config({"worker": ["h:1"]}, "worker", 3), "task.index", 3,
     ["task index 3 is out of range", "job 'worker' has 1 task(s)"]),
    (_config({"worker": ["h:1"]}, "worker", "0"), "task.index", "0", ["task index '0' is out of range"]),
    (_config({"worker": ["h:1"]}, "worker", True), "task.index", True, ["task index True"]),
    (_config({"worker": ["h:1"], "ps": ["h:2"]}), "cluster", ["ps"], ["jobs ['ps'] are not used"]),
    (_config({"worker": "h:1"}), "cluster.worker", "h:1",
     ["cluster.worker must be a list of 'host:port' strings, got 'h:1'"]),
    (_config({"worker": ["h:1", 5]}), "cluster.worker", ["h:1", 5], ["got ['h:1', 5]"]),
    (_config({"chief": ["c:1", "c:2"], "worker": ["h:1"]}), "cluster.chief", ["c:1", "c:2"],
     ["cluster.chief has 2 tasks ['c:1', 'c:2']", "at most one chief"]),
])
def test_bad_tf_config_names_the_field_and_value(text, field, value, fragments):
    with pytest.raises(TFConfigError) as caught:
        check_tf_config({"TF_CONFIG": text})
    error = caught.value
    assert (error.field, error.value) == (field, value)
    message = str(error)
    assert message.startswith("TF_CONFIG"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_good_tf_config_is_returned_and_absence_is_one_worker():
    text = _config({"chief": ["c:1"], "worker": WORKERS, "evaluator": ["e:1"]}, "worker", 1)
    assert check_tf_config({"TF_CONFIG": text}) == json.loads(text)
    assert check_tf_config({}) is None
    assert check_tf_config({"TF_CONFIG": ""}) is None


# --- the chief, the workers, their directories ------------------------------------------------

@pytest.mark.parametrize("cluster, task_type, index, chief", [
    ({"worker": WORKERS}, "worker", 0, True),
    ({"worker": WORKERS}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": WORKERS}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": WORKERS}, "worker", 0, False),  # a chief job takes the role
    ({"chief": ["c:1"], "worker": WORKERS}, "worker", 1, False),
    ({"worker": WORKERS, "evaluator": ["e:1"]}, "evaluator", 0, False),
])
def test_chief_detection_from_tf_config_agrees_with_tensorflows_resolver(
        monkeypatch, cluster, task_type, index, chief):
    text = _config(cluster, task_type, index)
    role = ClusterRole.from_tf_config(check_tf_config({"TF_CONFIG": text}))
    assert role.is_chief is chief
    assert role.num_workers == len(cluster.get("chief", [])) + len(WORKERS)
    assert role.name == f"{task_type}_{index}"
    monkeypatch.setenv("TF_CONFIG", text)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert ClusterRole.from_resolver(resolver) == role


def test_a_process_outside_a_cluster_is_its_own_chief(tmp_path):
    for strategy in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")):
        assert is_chief(strategy)
        assert not is_multi_worker(strategy)
        assert worker_directory(str(tmp_path), strategy) is None
    role = ClusterRole.from_tf_config(None)
    assert (role.is_chief, role.num_workers, role.name) == (True, 1, None)


def test_unwritable_model_dir_names_the_argument_and_the_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    target = str(blocker / "run")
    with pytest.raises(ModelDirError) as caught:
        check_model_dir_writable(target)
    error = caught.value
    assert isinstance(error, OSError)
    assert (error.argument, error.value) == ("model_dir", target)
    assert str(error).startswith(f"model_dir={target} cannot be written: "), str(error)
    assert str(error.renamed("--model_dir")) == "--" + str(error)
    check_model_dir_writable(str(tmp_path / "fresh" / "run"))  # created, and writable
    assert os.path.isdir(tmp_path / "fresh" / "run") and not os.listdir(tmp_path / "fresh" / "run")


# --- strategies by name -----------------------------------------------------------------------

def test_strategy_arguments_are_named(monkeypatch):
    with pytest.raises(ArgumentError, match=r"^name must be one of default, one_device, mirrored, "
                                            r"multi_worker, tpu, got 'bogus'\.$") as caught:
        make_strategy("bogus")
    assert caught.value.argument == "name"
    monkeypatch.setenv("TF_CONFIG", '{"cluster": ')
    with pytest.raises(TFConfigError, match="not valid JSON"):
        make_strategy("multi_worker")  # checked before TensorFlow reads it
    assert isinstance(make_strategy("one_device"), tf.distribute.OneDeviceStrategy)


def test_split_cpu_names_num_devices():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ArgumentError, match=rf"^num_devices must be a positive integer, got {bad!r}"):
            split_cpu_into_logical_devices(bad)
    existing = len(tf.config.list_logical_devices("CPU"))
    split_cpu_into_logical_devices(existing)  # TensorFlow already runs with this split: accepted
    with pytest.raises(ArgumentError, match=rf"^num_devices cannot be applied: TensorFlow is already "
                                            rf"initialised with {existing} logical CPU device\(s\), "
                                            rf"got {existing + 1}\.$"):
        split_cpu_into_logical_devices(existing + 1)
