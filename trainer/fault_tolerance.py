"""How `Trainer.fit` survives faults: preemption, crashes, non-finite steps, failed saves.

`FaultTolerance` is the part of the loop that deals with them; `Trainer.fit`
calls it at these points, in this order:

- `watching(...)` (a context manager around the epochs): SIGTERM watch on,
  off; a worker's temporary checkpoint directory removed at the end.
- `epoch_iterator`: after a restore, puts the input where the interrupted run
  was (same shuffling, same position in the epoch), for an exact resume.
- `after_train_loop`: after each compiled call, raises on a non-finite step
  (or logs skipped ones), then saves and exits after SIGTERM.
- `after_epoch`: the end-of-epoch checkpoint, then the exit if SIGTERM arrived.

Exit statuses of `python -m trainer.main`: 0 done, 2 bad input or a failed
write (`error: ...`), 3 non-finite loss, 143 (`EXIT_PREEMPTED`) saved after SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional, Sequence, Tuple

import tensorflow as tf
from absl import logging

from trainer.checkpointing import RunCheckpoint
from trainer.distribute import (
    check_restored_consistently,
    is_multi_worker,
    remove_worker_directory,
    weights_fingerprint,
    worker_directory,
)
from trainer.nonfinite import NonFiniteGuard
from trainer.preemption import PreemptionWatcher


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
    """The fault handling of one run (see the module docstring).

    It is given what it acts on, and reads nothing else: the strategy and run
    directory (SIGTERM watch, worker directories), the step counters it
    positions the input by and saves, the non-finite guard it checks, and the
    checkpoint once the Trainer has built one (`attach_checkpoint`).

    Args:
      strategy: The run's `tf.distribute` strategy.
      model_dir: The run directory, or None (nothing is saved).
      global_step: The global step counter.
      epoch_step: Steps of the current epoch done when a checkpoint was written.
      nonfinite_guard: The compiled step's guard against NaN/Inf.
    """

    def __init__(self, *, strategy: tf.distribute.Strategy, model_dir: Optional[str],
                 global_step: tf.Variable, epoch_step: tf.Variable,
                 nonfinite_guard: NonFiniteGuard):
        self._strategy = strategy
        self._model_dir = model_dir
        self._global_step = global_step
        self._epoch_step = epoch_step
        self._guard = nonfinite_guard
        self._checkpoint: Optional[RunCheckpoint] = None
        self._watcher = PreemptionWatcher(strategy)
        self._restored = False
        self._fitting = 0
        self._last_saved_step: Optional[int] = None
        self._steps_in_epoch = 0

    # -------------------------------------------------------------- restore

    def attach_checkpoint(self, checkpoint: Optional[RunCheckpoint]) -> None:
        """The checkpoint that `save` writes (None: the run keeps no checkpoints)."""
        self._checkpoint = checkpoint

    def restored(self, path: Optional[str]) -> None:
        """Notes a restore (the next epoch iterator is then repositioned) and checks workers agree."""
        check_restored_consistently(self._strategy, self._global_step)
        if path:
            self._restored = True
            self._last_saved_step = int(self._global_step.numpy())

    # ------------------------------------------------------------ fit scope

    @contextlib.contextmanager
    def watching(self, model_variables: Sequence[tf.Variable]) -> Iterator[None]:
        """The scope of one `fit`: SIGTERM watched, worker files removed at the end.

        Args:
          model_variables: Fingerprinted in the log at the end of a
            multi-worker run (equal fingerprints: equal models).
        """
        self._fitting += 1
        if self._fitting == 1 and self._model_dir:
            # Without a model_dir there is nothing to save: SIGTERM keeps its default.
            self._watcher.start(self._save_mid_epoch)
        completed = False
        try:
            yield
            completed = True
        finally:
            self._fitting -= 1
            if self._fitting == 0:
                self._end_fit(completed, model_variables)

    def _end_fit(self, completed: bool, model_variables: Sequence[tf.Variable]) -> None:
        self._watcher.stop()
        if self._model_dir:
            remove_worker_directory(self._model_dir, self._strategy)
        if completed and is_multi_worker(self._strategy):
            logging.info("Worker finished at step %d; weights fingerprint %s",
                         int(self._global_step.numpy()), weights_fingerprint(model_variables))

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
        steps_done = int(self._epoch_step.numpy())
        if not self._restored:
            return persistent_iterator or iter(distributed_data), 0
        self._restored = False
        if persistent_iterator is not None:
            iterator, skip = persistent_iterator, int(self._global_step.numpy())
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
        return self._restored and int(self._epoch_step.numpy()) > 0

    # ----------------------------------------------------- between loops

    def after_train_loop(self, epoch: int, steps_in_epoch: int) -> None:
        """Checks for non-finite steps, then SIGTERM, after a compiled call.

        Raises:
          NonFiniteLossError: A step was not finite (unless skipping is on).
          PreemptedError: SIGTERM arrived; a checkpoint was saved first.
        """
        self._guard.check(epoch=epoch, last_checkpoint=self.latest)
        self._steps_in_epoch = steps_in_epoch
        self._watcher.after_train_loop()

    def after_epoch(self) -> None:
        """At an epoch's end: writes the checkpoint, then exits if SIGTERM arrived meanwhile."""
        self.save()
        self._watcher.after_epoch(self.latest)

    # --------------------------------------------------------------- saving

    @property
    def latest(self) -> Optional[str]:
        """Path of the latest checkpoint, or None."""
        return self._checkpoint.latest if self._checkpoint is not None else None

    def save(self, steps_in_epoch: int = 0) -> Optional[str]:
        """Writes a checkpoint (`ckpt-<n>`, n counting the saves of the run).

        Args:
          steps_in_epoch: Steps of the current epoch done (0 at an epoch's end).

        Returns:
          The checkpoint path, or None without a `model_dir`.
        """
        if self._checkpoint is None:
            return None
        step = int(self._global_step.numpy())
        if step == self._last_saved_step and int(self._epoch_step.numpy()) == steps_in_epoch:
            return self._checkpoint.latest
        self._epoch_step.assign(steps_in_epoch)
        # Numbered by the checkpoint's own save counter: always past the latest
        # one, so a save never overwrites the checkpoint a resume would read.
        path = self._checkpoint.save()
        self._last_saved_step = step
        return path

    def _save_mid_epoch(self) -> Optional[str]:
        path = self.save(steps_in_epoch=self._steps_in_epoch)
        if path and worker_directory(self._model_dir, self._strategy):
            # This worker's copy is temporary; the chief's, same name, is the one to resume from.
            path = os.path.join(self._model_dir, "checkpoints", os.path.basename(path))
        logging.warning("Saved %s after SIGTERM.", path)
        return path
