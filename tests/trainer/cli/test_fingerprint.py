"""The run fingerprint on plain dicts and files: differences, data facts, the resume check and its record."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.cli import fingerprint as fp


def _fingerprint(**config):
    values = {"learning_rate": 0.001, "reweighting": "none", "class_weights": None, "batch_size": 256}
    values.update(config)
    data = {"files": {"a.csv": 120}, "class_names": ["fault", "normal"],
            "class_counts": {"train": [3, 9], "eval": [1, 2]}, "input_shape": [3], "dtype": "float32",
            "feature_names": None}
    return fp.make_fingerprint(values, data)


def test_differences_name_each_field_with_both_values():
    saved = _fingerprint()
    current = _fingerprint(learning_rate=0.1, reweighting="inverse_frequency")
    current["data"]["class_names"] = ["alarm", "normal"]
    found = fp.differences(saved, current)
    assert [str(d) for d in found] == ["learning_rate: 0.001 -> 0.1",
                                       "reweighting: none -> inverse_frequency",
                                       'class_names: ["fault", "normal"] -> ["alarm", "normal"]']
    assert found[0].to_dict() == {"name": "learning_rate", "from": 0.001, "to": 0.1}
    assert fp.differences(saved, _fingerprint()) == []


def test_fields_only_one_side_has_are_not_compared():
    saved, current = _fingerprint(), _fingerprint(new_flag=3)
    del saved["data"]["feature_names"]
    current["data"]["feature_names"] = ["x", "y", "z"]
    assert fp.differences(saved, current) == []


def test_values_compare_as_they_read_back_from_json():
    current = fp.make_fingerprint({"class_weights": (1.0, 2.5), "seed": np.int64(3)},
                                  {"input_shape": (28, 28, 1), "class_counts": {"train": np.array([4, 5])}})
    saved = json.loads(json.dumps(current))
    assert saved == current and fp.differences(saved, current) == []
    assert current["config"]["class_weights"] == [1.0, 2.5] and current["data"]["input_shape"] == [28, 28, 1]


def test_data_facts_read_file_sizes(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"x" * 37)
    for index, size in enumerate((11, 13)):
        (tmp_path / f"part-{index}.tfrecord").write_bytes(b"y" * size)
    facts = fp.data_facts(
        specs=(f"csv:{tmp_path / 'train.csv'}", f"tfrecord:{tmp_path / 'part-*.tfrecord'}", None),
        class_names=[0, 1], class_counts={"train": np.array([5, 2]), "validation": None},
        input_shape=(4,))
    assert facts["files"] == {str(tmp_path / "train.csv"): 37, str(tmp_path / "part-0.tfrecord"): 11,
                              str(tmp_path / "part-1.tfrecord"): 13}
    assert facts["class_names"] == ["0", "1"] and facts["dtype"] == "float32"
    assert facts["class_counts"] == {"train": [5, 2], "validation": None}
    assert set(facts) == set(fp.DATA_NAMES)
    assert fp.file_sizes(["synthetic", "fashion_mnist_lt"]) == {}
    assert fp.file_sizes([f"npz:{tmp_path / 'missing.npz'}"]) == {str(tmp_path / "missing.npz"): None}


def _checkpoint(model_dir):
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(os.path.join(fp.checkpoint_dir(str(model_dir)), "ckpt"))


def _bytes(model_dir):
    with open(os.path.join(fp.checkpoint_dir(str(model_dir)), fp.FILENAME), "rb") as stream:
        return stream.read()


def test_a_fresh_run_writes_its_fingerprint(tmp_path):
    check = fp.check_resume(str(tmp_path), _fingerprint(), (), write=True)
    assert not check.resuming and check.changes() == []
    assert fp.read_fingerprint(str(tmp_path)) == _fingerprint()
    other = tmp_path / "worker"
    fp.check_resume(str(other), _fingerprint(), (), write=False)
    assert fp.read_fingerprint(str(other)) is None


def test_a_resume_refuses_a_change_and_leaves_the_file(tmp_path):
    fp.check_resume(str(tmp_path), _fingerprint(), (), write=True)
    _checkpoint(tmp_path)
    before = _bytes(tmp_path)
    assert fp.check_resume(str(tmp_path), _fingerprint(), (), write=True).allowed == ()
    with pytest.raises(fp.ChangedRunError) as caught:
        fp.check_resume(str(tmp_path), _fingerprint(learning_rate=0.1, batch_size=64), ("batch_size",),
                        write=True)
    message = str(caught.value)
    assert "learning_rate: 0.001 -> 0.1" in message and "batch_size" not in message  # allowed
    assert "--allow_config_change=learning_rate " in message
    assert [d.name for d in caught.value.differences] == ["learning_rate"]
    assert _bytes(tmp_path) == before


def test_an_allowed_change_is_recorded_and_becomes_the_runs_value(tmp_path):
    fp.check_resume(str(tmp_path), _fingerprint(), (), write=True)
    _checkpoint(tmp_path)
    changed = _fingerprint(learning_rate=0.1)
    check = fp.check_resume(str(tmp_path), changed, ("learning_rate",), write=True)
    assert [str(d) for d in check.allowed] == ["learning_rate: 0.001 -> 0.1"]
    fp.record_run(str(tmp_path), changed, check)
    saved = fp.read_fingerprint(str(tmp_path))
    assert saved["config"]["learning_rate"] == 0.1
    assert saved["changes"] == [{"name": "learning_rate", "from": 0.001, "to": 0.1}]
    # The next resume compares with 0.1 and keeps the history.
    again = fp.check_resume(str(tmp_path), changed, (), write=True)
    assert again.allowed == () and again.changes() == saved["changes"]
    with pytest.raises(fp.ChangedRunError, match=r"learning_rate: 0\.1 -> 0\.001"):
        fp.check_resume(str(tmp_path), _fingerprint(), (), write=True)


def test_an_old_checkpoint_without_fingerprint_resumes_with_a_warning(tmp_path, caplog):
    _checkpoint(tmp_path)
    with caplog.at_level("WARNING"):
        check = fp.check_resume(str(tmp_path), _fingerprint(learning_rate=0.5), (), write=True)
    assert check.resuming and check.saved is None
    assert "without a run_fingerprint.json" in caplog.text
    assert fp.read_fingerprint(str(tmp_path)) is None  # nothing written before the run ends well
    fp.record_run(str(tmp_path), _fingerprint(learning_rate=0.5), check)
    assert fp.read_fingerprint(str(tmp_path))["config"]["learning_rate"] == 0.5


def test_a_file_that_is_not_a_fingerprint_is_named(tmp_path):
    os.makedirs(fp.checkpoint_dir(str(tmp_path)))
    path = os.path.join(fp.checkpoint_dir(str(tmp_path)), fp.FILENAME)
    with open(path, "w") as stream:
        stream.write("[1, 2")
    with pytest.raises(ValueError, match="is not a run fingerprint"):
        fp.read_fingerprint(str(tmp_path))
