"""How much a command logs: `--verbosity` given as 0 or lower keeps warnings only.

At the default verbosity the progress line and our INFO lines stay; TensorFlow's and Keras's INFO lines go.
"""

from __future__ import annotations

import logging as pylogging
import os

import keras
import tensorflow as tf
from absl import logging


class LibraryInfoFilter(pylogging.Filter):
    """Drops TensorFlow's and Keras's INFO lines (saver internals), keeps ours and every warning."""

    def __init__(self):
        super().__init__()
        roots = {os.path.dirname(os.path.dirname(module.__file__)) for module in (tf, keras)}
        self._library_dirs = tuple(os.path.join(root, name) + os.sep for root in roots
                                   for name in ("tensorflow", "keras"))

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not record.pathname.startswith(self._library_dirs)


def configure_logging(verbosity: int) -> None:
    """Sets what a command logs for its `verbosity` (see `trainer.cli.config.OutputConfig`)."""
    if verbosity <= 0:
        logging.set_verbosity(logging.WARNING)
    elif verbosity == 1:
        logging.get_absl_handler().addFilter(LibraryInfoFilter())
