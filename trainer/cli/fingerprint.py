"""The run fingerprint: the resolved config and the data facts a run directory's checkpoints come from.

Saved as `<model_dir>/checkpoints/run_fingerprint.json` when a run starts; a resume that differs is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from trainer.json_files import read_json, to_jsonable, write_json_atomically

FILENAME = "run_fingerprint.json"
VERSION = 1
# The data facts a fingerprint holds, each a name `--allow_config_change` accepts.
DATA_NAMES = ("files", "class_names", "class_counts", "input_shape", "dtype", "feature_names")


class ChangedRunError(ValueError):
    """A resumed run differs from the run its checkpoints were trained with.

    Attributes:
      differences: The refused differences.
    """

    def __init__(self, message: str, differences: Sequence["Difference"]):
        super().__init__(message)
        self.differences = tuple(differences)


@dataclasses.dataclass(frozen=True)
class Difference:
    """One field whose value changed: `name: saved -> current`."""

    name: str
    saved: Any
    current: Any

    def __str__(self) -> str:
        return f"{self.name}: {_show(self.saved)} -> {_show(self.current)}"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "from": self.saved, "to": self.current}


def _show(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _normalised(values: Mapping[str, Any]) -> Dict[str, Any]:
    """`values` as they read back from JSON (tuples as lists, NumPy values as Python ones)."""
    return json.loads(json.dumps(to_jsonable(dict(values)), allow_nan=False))


# ------------------------------------------------------------------ making one


def file_sizes(specs: Sequence[Optional[str]]) -> Dict[str, Optional[int]]:
    """Each file a dataset spec reads (`npz:`, `csv:` paths, `tfrecord:` glob matches) with its size in bytes.

    Built-in data (`synthetic`, `fashion_mnist_lt`) reads no file named by the
    spec and adds nothing. A file that cannot be read has size None.
    """
    sizes: Dict[str, Optional[int]] = {}
    for spec in specs:
        kind, separator, path = (spec or "").partition(":")
        if not separator or kind not in ("npz", "csv", "tfrecord"):
            continue
        paths = sorted(tf.io.gfile.glob(path)) if kind == "tfrecord" else [path]
        for name in paths:
            try:
                sizes[name] = int(tf.io.gfile.stat(name).length)
            except tf.errors.OpError:
                sizes[name] = None
    return sizes


def data_facts(*, specs: Sequence[Optional[str]], class_names: Sequence[str],
               class_counts: Mapping[str, Any], input_shape: Sequence[int], dtype: str = "float32",
               feature_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The facts of the loaded data a resumed run must share (keys: `DATA_NAMES`).

    Args:
      specs: The dataset specs read (`--dataset`, `--eval_dataset`).
      class_names: Class names indexed by class.
      class_counts: Examples per class of each split, by split name.
      input_shape: Per-example feature shape.
      dtype: The features' dtype.
      feature_names: Feature names, when the data has them.
    """
    return _normalised({
        "files": file_sizes(specs), "class_names": [str(name) for name in class_names],
        "class_counts": {split: None if counts is None else [int(c) for c in counts]
                         for split, counts in class_counts.items()},
        "input_shape": [int(d) for d in input_shape], "dtype": str(dtype),
        "feature_names": None if feature_names is None else [str(name) for name in feature_names]})


def run_fingerprint(config: Any, bundle: Any) -> Dict[str, Any]:
    """The fingerprint of a run: its compared config values (`RunConfig.compared_values`) and the
    facts of its data (a `trainer.data.DataBundle`)."""
    splits = {"train": bundle.train, "eval": bundle.eval, "validation": bundle.validation}
    data = data_facts(
        specs=(config.data.dataset, config.data.eval_dataset), class_names=bundle.class_names,
        class_counts={name: None if split is None else split.class_counts
                      for name, split in splits.items()},
        input_shape=bundle.train.input_shape, feature_names=getattr(bundle, "feature_names", None))
    return make_fingerprint(config.compared_values(), data)


def make_fingerprint(config: Mapping[str, Any], data: Mapping[str, Any]) -> Dict[str, Any]:
    """A fingerprint of the compared config values (by flag name) and the data facts."""
    return {"version": VERSION, "config": _normalised(config), "data": _normalised(data),
            "changes": []}


# ------------------------------------------------------------------ comparing


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[Difference]:
    """The fields of `current` whose value differs from `saved`'s: config first, then data.

    A field only one side has (a fingerprint of another version) is not compared.
    """
    found = []
    for section in ("config", "data"):
        old, new = saved.get(section) or {}, current.get(section) or {}
        found += [Difference(name, old[name], new[name]) for name in new
                  if name in old and old[name] != new[name]]
    return found


# ------------------------------------------------------------------ the file


def checkpoint_dir(model_dir: str) -> str:
    """Where the run's checkpoints (and its fingerprint) are: `<model_dir>/checkpoints`."""
    return os.path.join(model_dir, "checkpoints")


def has_checkpoint(model_dir: str) -> bool:
    """Whether `model_dir` holds a checkpoint a run would resume from."""
    return tf.train.latest_checkpoint(checkpoint_dir(model_dir)) is not None


def read_fingerprint(model_dir: str) -> Optional[Dict[str, Any]]:
    """The saved fingerprint of the run in `model_dir`, or None when there is none.

    Raises:
      ValueError: naming the file when it is not a fingerprint.
    """
    path = os.path.join(checkpoint_dir(model_dir), FILENAME)
    if not os.path.isfile(path):
        return None
    try:
        payload = read_json(path)
    except ValueError as error:
        raise ValueError(f"{path} is not a run fingerprint: {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path} is not a run fingerprint (no \"config\" object).")
    return payload


def write_fingerprint(model_dir: str, fingerprint: Mapping[str, Any]) -> str:
    """Writes the fingerprint into `<model_dir>/checkpoints/` atomically; returns its path."""
    return write_json_atomically(os.path.join(checkpoint_dir(model_dir), FILENAME), dict(fingerprint))


# ------------------------------------------------------------------ a run's start and end


@dataclasses.dataclass(frozen=True)
class ResumeCheck:
    """What `check_resume` found.

    Attributes:
      resuming: Whether `model_dir` held a checkpoint.
      saved: The saved fingerprint (None: none, a fresh run or an old one).
      allowed: The differences `--allow_config_change` let through.
    """

    resuming: bool
    saved: Optional[Dict[str, Any]]
    allowed: Tuple[Difference, ...] = ()

    def changes(self) -> List[Dict[str, Any]]:
        """Every allowed change of the run so far, earlier resumes' first."""
        earlier = list((self.saved or {}).get("changes") or [])
        return earlier + [difference.to_dict() for difference in self.allowed]


def check_resume(model_dir: str, current: Mapping[str, Any], allowed_names: Sequence[str], *,
                 write: bool) -> ResumeCheck:
    """Compares a starting run with the one whose checkpoints `model_dir` holds.

    Without a checkpoint, a fresh run: its fingerprint is written (when
    `write`). With one, every difference must be in `allowed_names`; each
    allowed one is logged. A checkpoint without a fingerprint (written by an
    older version) is resumed with a warning.

    Args:
      model_dir: The run directory.
      current: This run's fingerprint (`make_fingerprint`).
      allowed_names: The names `--allow_config_change` gave.
      write: Whether this process writes the run's files (the chief).

    Raises:
      ChangedRunError: listing each refused difference, before anything is written.
    """
    if not has_checkpoint(model_dir):
        if write:
            write_fingerprint(model_dir, current)
        return ResumeCheck(resuming=False, saved=None)
    saved = read_fingerprint(model_dir)
    if saved is None:
        logging.warning("%s holds checkpoints without a %s (an older run): resuming without checking "
                        "that its configuration and data are the same.",
                        checkpoint_dir(model_dir), FILENAME)
        return ResumeCheck(resuming=True, saved=None)
    found = differences(saved, current)
    refused = [difference for difference in found if difference.name not in allowed_names]
    if refused:
        names = ",".join(difference.name for difference in refused)
        raise ChangedRunError(
            f"--model_dir={model_dir} holds a run with other settings; resuming it with these would "
            f"mix two runs: {'; '.join(map(str, refused))}. Use a new --model_dir, or pass "
            f"--allow_config_change={names} to continue this run with the new values.", refused)
    for difference in found:
        logging.warning("Resuming with a change allowed by --allow_config_change: %s", difference)
    return ResumeCheck(resuming=True, saved=saved, allowed=tuple(found))


def record_run(model_dir: str, current: Mapping[str, Any], check: ResumeCheck) -> None:
    """After a run that ended well: the fingerprint becomes this run's, with its change history.

    A later resume is then compared with the values this run trained with.
    """
    if check.resuming and check.saved is not None and not check.allowed:
        return
    write_fingerprint(model_dir, {**current, "changes": check.changes()})
