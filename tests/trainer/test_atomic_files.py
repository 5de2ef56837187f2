"""atomic_write: the target is replaced whole on success and untouched (no temporary left) on failure."""

import os

import pytest

from trainer.atomic_files import atomic_write


def test_a_clean_write_replaces_the_file_and_creates_its_directory(tmp_path):
    path = tmp_path / "new" / "dir" / "out.txt"
    with atomic_write(str(path)) as stream:
        stream.write("first")
    with atomic_write(str(path), "wb", durable=True) as stream:
        stream.write(b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(str(path)) as stream:
            stream.write("half of the new")
            raise RuntimeError("disk on fire")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_other_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_write(str(tmp_path / "x"), "a"):
            pass
