"""Checkpoints that hold everything needed to resume a run.

Wraps `tf.train.CheckpointManager`: saves keep the last few, a restore either
matches every saved object or fails with a message that says why.
"""

from __future__ import annotations

import collections
import glob
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2


class IncompatibleCheckpointError(ValueError):
    """The checkpoint in `model_dir` was written by a different model or set-up."""


def _variables_by_object(path: str) -> Dict[str, Dict[str, Tuple[int, ...]]]:
    """For each top-level object of the checkpoint at `path`: `{variable path: shape}`.

    Read from the checkpoint's object graph, so a variable shared by two
    objects (the model's, tracked by the optimizer too) counts for both.
    Paths are the shortest from the object, e.g. `model/layer_with_weights-0/kernel`.
    """
    reader = tf.train.load_checkpoint(path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    shapes = reader.get_variable_to_shape_map()
    objects = {}
    for root in graph.nodes[0].children:
        found: Dict[str, Tuple[int, ...]] = {}
        queue, seen = collections.deque([(root.node_id, root.local_name)]), set()
        while queue:
            node_id, node_path = queue.popleft()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = graph.nodes[node_id]
            for attribute in node.attributes:
                if attribute.checkpoint_key in shapes:
                    found[node_path] = tuple(shapes[attribute.checkpoint_key])
            # Through the model's own `optimizer` attribute the model would list the
            # optimizer's slots as its variables; the optimizer is an object of its own.
            queue.extend((child.node_id, f"{node_path}/{child.local_name}") for child in node.children
                         if child.local_name != "optimizer" or node_id == 0)
        objects[root.local_name] = found
    return objects


def _run_variables(objects: Dict[str, Any]) -> Dict[str, Dict[str, Tuple[int, ...]]]:
    """`_variables_by_object` of this run's objects (written to a scratch checkpoint)."""
    scratch = tempfile.mkdtemp(prefix="checkpoint-compare-")
    try:
        return _variables_by_object(tf.train.Checkpoint(**objects).write(os.path.join(scratch, "run")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _listing(items: List[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def describe_mismatch(path: str, objects: Dict[str, Any]) -> str:
    """Which objects of the checkpoint at `path` differ from this run's, and how, in full.

    Names the objects only one side has, and for shared objects the variables
    missing, extra or of another shape.
    """
    saved, run = _variables_by_object(path), _run_variables(objects)
    saved.pop("save_counter", None)
    run.pop("save_counter", None)
    lines = [f"'{name}' is in the checkpoint ({len(saved[name])} variable(s)) but not in this run"
             for name in sorted(set(saved) - set(run))]
    lines += [f"'{name}' is in this run ({len(run[name])} variable(s)) but not in the checkpoint"
              for name in sorted(set(run) - set(saved))]
    for name in sorted(set(saved) & set(run)):
        old, new = saved[name], run[name]
        missing = sorted(set(old) - set(new))
        extra = sorted(set(new) - set(old))
        reshaped = [f"{key}: {list(old[key])} in the checkpoint, {list(new[key])} in this run"
                    for key in sorted(set(old) & set(new)) if old[key] != new[key]]
        parts = []
        if reshaped:
            parts.append(f"{len(reshaped)} variable(s) of another shape ({_listing(reshaped, 3)})")
        if missing:
            parts.append(f"{len(missing)} saved variable(s) this run lacks ({_listing(missing)})")
        if extra:
            parts.append(f"{len(extra)} variable(s) the checkpoint lacks ({_listing(extra)})")
        if parts:
            lines.append(f"'{name}' differs: " + "; ".join(parts) + _loss_scaling_hint(old, new))
    return "; ".join(lines) + "." if lines else ""


def _loss_scaling_hint(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """Says so when one side's optimizer has float16 loss scaling and the other's not."""
    saved, here = (any(key.endswith("/dynamic_scale") for key in side) for side in (old, new))
    if saved == here:
        return ""
    which = "the checkpoint's" if saved else "this run's"
    return (f" ({which} optimizer alone has float16 loss scaling: the mixed precision policy "
            f"differs, float16 against float32 or bfloat16)")


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:600]


class RunCheckpoint:
    """Saves and restores a run's trackable objects under `<directory>`.

    Args:
      directory: Where checkpoints go (created on first save).
      max_to_keep: How many recent checkpoints to keep.
      **objects: Trackables to save (model, optimizer, rule, counters, ...).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, **objects):
        self.directory = directory
        self.objects = {k: v for k, v in objects.items() if v is not None}
        self.checkpoint = tf.train.Checkpoint(**self.objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)

    @property
    def latest(self) -> Optional[str]:
        return self.manager.latest_checkpoint

    def restore_latest(self, directory: Optional[str] = None) -> Optional[str]:
        """Restores the latest checkpoint, if any; returns its path.

        Every value of the checkpoint must find its object and every object its
        value: a model with fewer layers than the checkpoint's fails too (no
        silent partial restore).

        Args:
          directory: Where to look (default: this manager's directory). Workers
            other than the chief restore from the chief's directory.

        Raises:
          IncompatibleCheckpointError: when the checkpoint's variables do not
            match this run's (different classes, architecture or optimizer).
        """
        path = self.latest if directory is None else tf.train.latest_checkpoint(directory)
        if path is None:
            return None
        status = None
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
            status.assert_consumed()
        except (AssertionError, ValueError, tf.errors.InvalidArgumentError,
                tf.errors.NotFoundError) as error:
            if status is not None:
                status.expect_partial()  # Reported below; no warnings at exit.
            raise IncompatibleCheckpointError(
                f"The checkpoint {path} does not match this run. "
                f"{describe_mismatch(path, self.objects) or _first_line(error)} Use a new "
                f"model_dir, or the "
                f"same model, classes, optimizer and reweighting rule as the run that wrote it.") \
                from error
        return path

    def save(self, checkpoint_number: Optional[int] = None) -> str:
        """Writes a checkpoint; the previous ones stay loadable if this fails.

        Raises:
          OSError: with the directory named, when it cannot be written.
        """
        try:
            return self.manager.save(checkpoint_number=checkpoint_number)
        except (tf.errors.OpError, OSError) as error:
            number = checkpoint_number if checkpoint_number is not None else int(
                self.checkpoint.save_counter.numpy())
            self._remove_partial(f"{os.path.join(self.directory, 'ckpt')}-{int(number)}")
            raise OSError(
                f"Could not write a checkpoint under {os.path.abspath(self.directory)}: "
                f"{getattr(error, 'message', str(error))}") from error

    def _remove_partial(self, prefix: str) -> None:
        """Deletes what a failed save left of `prefix` (never the latest checkpoint)."""
        if prefix == self.latest:
            return
        for path in glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp*"):
            try:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
            except OSError:
                pass  # Best effort: the state file still names the previous checkpoint.
