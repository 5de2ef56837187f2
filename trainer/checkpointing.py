"""Checkpoints that hold everything needed to resume a run.

Wraps `tf.train.CheckpointManager`: saves keep the last few, a restore either
matches every saved object or fails with a message that says why.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Optional

import tensorflow as tf


class IncompatibleCheckpointError(ValueError):
    """The checkpoint in `model_dir` was written by a different model or set-up."""


class RunCheckpoint:
    """Saves and restores a run's trackable objects under `<directory>`.

    Args:
      directory: Where checkpoints go (created on first save).
      max_to_keep: How many recent checkpoints to keep.
      **objects: Trackables to save (model, optimizer, rule, counters, ...).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, **objects):
        self.directory = directory
        self.checkpoint = tf.train.Checkpoint(**{k: v for k, v in objects.items() if v is not None})
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
                f"The checkpoint {path} does not match this model: {str(error).splitlines()[0]} "
                f"Use a new --model_dir, or the same model, classes and optimizer as the run "
                f"that wrote it.") from error
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
