"""How `Trainer.fit` survives faults: preemption, crashes, non-finite steps, failed saves.

`FaultTolerance` is the part of the loop that deals with them, so `trainer.py`
only calls it at a few points:

- `begin_fit`/`end_fit` (the `fault_tolerant_fit` decorator): SIGTERM watch on,
  off; a worker's temporary checkpoint directory removed at the end.
- `epoch_iterator`: after a restore, puts the input where the interrupted run
  was (same shuffling, same position in the epoch), for an exact resume.
- `after_train_loop`: after each compiled call, raises on a non-finite step
  (or logs skipped ones) and saves then exits after SIGTERM.
- `save`: every checkpoint, with its position in the epoch.

Exit statuses of `python -m trainer.main`: 0 done, 2 bad input or a failed
write (`error: ...`), 3 non-finite loss, 143 (`EXIT_PREEMPTED`) saved after SIGTERM.
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

import tensorflow as tf
from absl import logging

from trainer import distributed
from trainer.nonfinite import NonFiniteLossError
from trainer.preemption import EXIT_PREEMPTED, PreemptedError, PreemptionWatcher, is_multi_worker

if TYPE_CHECKING:
    from trainer.trainer import Trainer

EXIT_USAGE = 2
EXIT_NONFINITE = 3


class TrainMetricsState(tf.Module):
    """The variables of the running training metrics, so a mid-epoch checkpoint resumes them too."""

    def __init__(self, *metrics):
        super().__init__(name="train_metrics")
        self.metric_variables = [variable for metric in metrics for variable in metric.variables]


@tf.function
def _skip_batches(iterator, count):
    for _ in tf.range(count):
        if not iterator.get_next_as_optional().has_value():
            break


class FaultTolerance:
    """The fault handling of one `Trainer` (see the module docstring).

    Args:
      trainer: The trainer it serves.
    """

    def __init__(self, trainer: "Trainer"):
        self._trainer = trainer
        self._watcher = PreemptionWatcher(trainer.strategy)
        self._restored = False
        self._fitting = 0
        self._last_saved_step: Optional[int] = None
        self._steps_in_epoch = 0

    # -------------------------------------------------------------- restore

    def restored(self, path: Optional[str]) -> None:
        """Notes a restore (the next epoch iterator is then repositioned) and checks workers agree."""
        trainer = self._trainer
        distributed.check_restored_consistently(trainer.strategy, trainer.global_step)
        if path:
            self._restored = True
            self._last_saved_step = int(trainer.global_step.numpy())

    # ------------------------------------------------------------ fit scope

    def begin_fit(self) -> None:
        self._fitting += 1
        if self._fitting == 1 and self._trainer.model_dir:
            # Without a model_dir there is nothing to save: SIGTERM keeps its default.
            self._watcher.start(self._save_mid_epoch)

    def end_fit(self, completed: bool) -> None:
        self._fitting -= 1
        if self._fitting == 0:
            self._watcher.stop()
            trainer = self._trainer
            if trainer.model_dir:
                distributed.remove_worker_directory(trainer.model_dir, trainer.strategy)
            if completed and is_multi_worker(trainer.strategy):
                # Every worker logs it: equal fingerprints mean equal models.
                logging.info("Worker finished at step %d; weights fingerprint %s",
                             int(trainer.global_step.numpy()),
                             distributed.weights_fingerprint(trainer.model.variables))

    # ------------------------------------------------------------ positions

    def epoch_iterator(self, distributed_data, epoch: int, persistent_iterator) -> Tuple[Any, int]:
        """The iterator for `epoch` and the steps of it already done.

        After a restore, the input continues exactly where the interrupted run
        was: for one pass per epoch, the iterators of the epochs done are made
        and dropped (each new iterator of a seeded `shuffle` reshuffles, so
        this replays the shuffling), then the batches already trained in this
        epoch are skipped. With `steps_per_epoch` (one iterator for the whole
        run), all batches trained so far are skipped. This assumes the
        dataset object is fresh in this process, as when a run is restarted.

        Args:
          distributed_data: The distributed training dataset.
          epoch: The epoch about to run (0-based).
          persistent_iterator: The iterator carried across epochs, or None.
        """
        trainer = self._trainer
        steps_done = int(trainer.epoch_step.numpy())
        if not self._restored:
            return persistent_iterator or iter(distributed_data), 0
        self._restored = False
        if persistent_iterator is not None:
            iterator, skip = persistent_iterator, int(trainer.global_step.numpy())
        else:
            for _ in range(epoch):
                iter(distributed_data)
            iterator, skip = iter(distributed_data), steps_done
        if skip:
            logging.info("Resuming epoch %d at step %d: skipping %d batch(es) already trained.",
                         epoch + 1, steps_done, skip)
            _skip_batches(iterator, tf.constant(skip, tf.int64))
        return iterator, steps_done

    def resuming_mid_epoch(self) -> bool:
        """True when the restored checkpoint was written in the middle of an epoch."""
        return self._restored and int(self._trainer.epoch_step.numpy()) > 0

    # ----------------------------------------------------- between loops

    def after_train_loop(self, epoch: int, steps_in_epoch: int) -> None:
        """Checks for non-finite steps and SIGTERM after a compiled call.

        Raises:
          NonFiniteLossError: A step was not finite (unless skipping is on).
          PreemptedError: SIGTERM arrived; a checkpoint was saved first.
        """
        trainer = self._trainer
        trainer.nonfinite_guard.check(epoch=epoch, last_checkpoint=self.latest)
        self._steps_in_epoch = steps_in_epoch
        self._watcher.after_train_loop()

    def after_epoch(self) -> None:
        """After the end-of-epoch checkpoint: exits if SIGTERM arrived meanwhile."""
        self._watcher.after_epoch(self.latest)

    # --------------------------------------------------------------- saving

    @property
    def latest(self) -> Optional[str]:
        checkpoint = self._trainer._checkpoint  # pylint: disable=protected-access
        return checkpoint.latest if checkpoint is not None else None

    def save(self, steps_in_epoch: int = 0) -> Optional[str]:
        """Writes a checkpoint (`ckpt-<n>`, n counting the saves of the run).

        Args:
          steps_in_epoch: Steps of the current epoch done (0 at an epoch's end).

        Returns:
          The checkpoint path, or None without a `model_dir`.
        """
        trainer = self._trainer
        checkpoint = trainer._checkpoint  # pylint: disable=protected-access
        if checkpoint is None:
            return None
        step = int(trainer.global_step.numpy())
        if step == self._last_saved_step and int(trainer.epoch_step.numpy()) == steps_in_epoch:
            return checkpoint.latest
        trainer.epoch_step.assign(steps_in_epoch)
        # Numbered by the checkpoint's own save counter: always past the latest
        # one, so a save never overwrites the checkpoint a resume would read.
        path = checkpoint.save()
        self._last_saved_step = step
        return path

    def _save_mid_epoch(self) -> Optional[str]:
        path = self.save(steps_in_epoch=self._steps_in_epoch)
        trainer = self._trainer
        if path and distributed.worker_directory(trainer.model_dir, trainer.strategy):
            # This worker's copy is temporary; the chief's, same name, is the one to resume from.
            path = os.path.join(trainer.model_dir, "checkpoints", os.path.basename(path))
        logging.warning("Saved %s after SIGTERM.", path)
        return path


def fault_tolerant_fit(fit: Callable) -> Callable:
    """Decorates `Trainer.fit`: SIGTERM is watched while it runs, worker files removed after."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        self._fault_tolerance.begin_fit()  # pylint: disable=protected-access
        completed = False
        try:
            history = fit(self, *args, **kwargs)
            completed = True
            return history
        finally:
            self._fault_tolerance.end_fit(completed)  # pylint: disable=protected-access

    return wrapper


def describe_op_error(error: tf.errors.OpError) -> str:
    """The useful lines of a TensorFlow runtime error, without graph node dumps."""
    lines = []
    for line in str(getattr(error, "message", error)).splitlines():
        line = line.strip()
        if not line or line.startswith(("[[", "Encountered when executing", "Traceback", "File ",
                                        "Graph execution error", "Detected at node")):
            continue
        if line.startswith("Function call stack") or line.startswith("Stack trace"):
            break
        line = re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]", "", line)
        if line:
            lines.append(line)
    text = " ".join(lines[:4]) or type(error).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def exit_status_for(error: BaseException) -> Tuple[Optional[int], str]:
    """The exit status and `error: ...` line for an error that ends a CLI run.

    Returns:
      `(status, message)`; status None for an unexpected error (a bug, to be
      shown with its traceback).
    """
    if isinstance(error, PreemptedError):
        return EXIT_PREEMPTED, f"preempted: {error}"
    if isinstance(error, NonFiniteLossError):
        return EXIT_NONFINITE, f"error: {error}"
    if isinstance(error, tf.errors.OpError):
        # E.g. a label assertion of the compiled step, or a file that cannot be written.
        return EXIT_USAGE, f"error: {describe_op_error(error)}"
    if isinstance(error, (ValueError, OSError)):
        return EXIT_USAGE, f"error: {error}"
    return None, ""
