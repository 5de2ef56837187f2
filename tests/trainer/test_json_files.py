"""Tests of the one JSON writer: atomic replacement, NumPy values, strict JSON, the directory it makes."""

import json
import os

import numpy as np
import pytest

from trainer.json_files import read_json, write_json_atomically


def test_writes_numpy_values_as_strict_json(tmp_path):
    path = str(tmp_path / "new" / "dir" / "metrics.json")  # the directories do not exist yet
    payload = {"matrix": np.array([[1, 2], [3, 4]], np.int64), "recall": np.float32(0.5),
               "count": np.int64(7), "flag": np.bool_(True), "missing": float("nan"),
               "ratio": np.float64(np.inf), "rows": (np.array([0.25]), [np.float64(-np.inf)]),
               "by_class": {np.int64(3): "three"}, "name": "run"}
    assert write_json_atomically(path, payload) == path
    with open(path) as stream:
        text = stream.read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"matrix": [[1, 2], [3, 4]], "recall": 0.5, "count": 7, "flag": True,
                                "missing": None, "ratio": None, "rows": [[0.25], [None]],
                                "by_class": {"3": "three"}, "name": "run"}
    assert read_json(path) == json.loads(text)
    assert text.startswith('{\n  "matrix"'), "indented"


def test_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "point.json")
    write_json_atomically(path, {"version": 1})
    write_json_atomically(path, {"version": 2})
    assert read_json(path) == {"version": 2}
    assert os.listdir(tmp_path) == ["point.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "point.json")
    write_json_atomically(path, {"version": 1})
    with pytest.raises(TypeError):
        write_json_atomically(path, {"version": 2, "model": object()})
    assert read_json(path) == {"version": 1}
    assert os.listdir(tmp_path) == ["point.json"]


def test_read_json_errors(tmp_path):
    with pytest.raises(OSError):
        read_json(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError):
        read_json(str(tmp_path / "bad.json"))
