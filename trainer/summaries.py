"""TensorBoard summaries of a run: one writer for `train/`, one for `eval/`.

Writes nothing on workers other than the chief (pass `enabled=False`).
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf


class SummaryWriters:
    """Scalar writers under `<model_dir>/train` and `<model_dir>/eval`.

    Args:
      model_dir: Run directory; None disables writing.
      enabled: False on non-chief workers.
    """

    def __init__(self, model_dir: Optional[str], *, enabled: bool = True):
        self._writers: Dict[str, tf.summary.SummaryWriter] = {}
        self._model_dir = model_dir if enabled else None

    def writer(self, run: str) -> Optional[tf.summary.SummaryWriter]:
        """The writer of `run` ("train" or "eval"), created on first use."""
        if self._model_dir is None:
            return None
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self._model_dir, run))
        return self._writers[run]

    def write_scalars(self, run: str, scalars: Mapping[str, float], step: int) -> None:
        """Writes finite scalars; NaN values (e.g. a class with no support) are skipped."""
        writer = self.writer(run)
        if writer is None:
            return
        with writer.as_default(step=int(step)):
            for name, value in scalars.items():
                if value is not None and np.isfinite(value):
                    tf.summary.scalar(name, float(value))
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
