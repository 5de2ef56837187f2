"""SIGTERM becomes a checkpoint and a clean exit between compiled loops (status 143).

One worker: a signal handler sets a flag; several: TensorFlow's handler saves every worker at one step.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from typing import Callable, Optional

import tensorflow as tf
from absl import logging

from trainer.distribute.cluster import is_multi_worker

# Exit status of a run that saved a checkpoint after SIGTERM: 128 + SIGTERM, the
# status a scheduler already reads as "terminated, restart me", and the one
# TensorFlow's own handler uses on Google Cloud.
EXIT_PREEMPTED = 143


class PreemptedError(Exception):
    """Training was stopped by SIGTERM after saving a checkpoint.

    Attributes:
      checkpoint: The checkpoint written (or the latest one), to resume from.
    """

    def __init__(self, checkpoint: Optional[str]):
        super().__init__(
            f"Stopped by SIGTERM after saving the checkpoint {checkpoint}; run the same command "
            f"again to resume.")
        self.checkpoint = checkpoint


class PreemptionWatcher:
    """Watches for SIGTERM while `fit` runs; saves and raises `PreemptedError`.

    One worker: a signal handler sets a flag that the loop checks after each
    compiled call. Several workers (MultiWorkerMirroredStrategy): TensorFlow's
    `tf.distribute.experimental.PreemptionCheckpointHandler` makes every worker
    save at the same step, whichever of them got the signal.

    Args:
      strategy: The run's strategy; a multi-worker one uses TensorFlow's
        `PreemptionCheckpointHandler` so all workers save at the same step.
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        self._strategy = strategy
        self._requested = threading.Event()
        self._previous_handler = None
        self._installed = False
        self._handler = None
        self._handler_dir: Optional[str] = None
        self._save_fn: Optional[Callable[[], Optional[str]]] = None
        self._last_saved: Optional[str] = None

    @property
    def requested(self) -> bool:
        """Whether SIGTERM arrived (single-worker mode)."""
        return self._requested.is_set()

    def start(self, save_fn: Callable[[], Optional[str]]) -> None:
        """Starts watching; `save_fn()` writes a checkpoint and returns its path."""
        self._save_fn = save_fn
        self._requested.clear()
        if threading.current_thread() is not threading.main_thread():
            logging.warning("fit() is not running in the main thread: SIGTERM is not handled.")
            return
        self._previous_handler = signal.getsignal(signal.SIGTERM)
        if is_multi_worker(self._strategy):
            if self._handler is None:
                try:
                    self._handler = self._make_handler()
                except Exception as error:  # noqa: BLE001 - degrade to the default behaviour.
                    # Saving alone would hang the other workers: keep SIGTERM's default.
                    logging.warning("SIGTERM will not be caught: TensorFlow's preemption handler "
                                    "could not start (%s).", error)
                    return
            # The handler installs its own SIGTERM handler when created; put it
            # back for a later fit() in the same process.
            signal.signal(signal.SIGTERM, self._handler._sigterm_handler_fn)  # pylint: disable=protected-access
        else:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _make_handler(self):
        # One handler per process: it agrees on the step to save through keys of
        # the coordination service, which can be set only once. It restores and
        # numbers through its own manager; ours does the real work in `save_fn`,
        # so its manager (in a temporary directory) holds only its run counter.
        self._handler_dir = tempfile.mkdtemp(prefix="preemption_handler_")
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(), self._handler_dir, max_to_keep=1)
        config = tf.distribute.experimental.TerminationConfig(
            exit_fn=self._exit_after_save, save_fn=lambda *args, **kwargs: self._save())
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            self._strategy.cluster_resolver, manager, termination_config=config)

    def _on_sigterm(self, signum, frame) -> None:
        if self._requested.is_set():
            # A second SIGTERM: stop now, the default way.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        logging.warning("SIGTERM received: saving a checkpoint after the current loop, then exiting.")
        self._requested.set()

    def _save(self) -> Optional[str]:
        self._last_saved = self._save_fn()
        return self._last_saved

    def _exit_after_save(self) -> None:
        raise PreemptedError(self._last_saved)

    def after_train_loop(self) -> None:
        """Call after each compiled call; saves and raises once SIGTERM arrived.

        Raises:
          PreemptedError: After the checkpoint was written.
        """
        if self._handler is not None:
            self._handler.save_checkpoint_if_preempted()
        elif self._requested.is_set():
            raise PreemptedError(self._save())

    def after_epoch(self, latest: Optional[str]) -> None:
        """Call after the end-of-epoch checkpoint; exits if SIGTERM arrived meanwhile."""
        if self._handler is None and self._requested.is_set():
            raise PreemptedError(latest)

    def stop(self) -> None:
        """Stops watching and puts the previous SIGTERM handler back."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._installed = False
        if self._handler_dir:
            # The handler never writes there (our save_fn does the saving).
            shutil.rmtree(self._handler_dir, ignore_errors=True)
            self._handler_dir = None
