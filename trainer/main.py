"""Command line: train a classifier on imbalanced data and report per-class metrics.

The `python -m trainer.main` entry point; the command, its flags and its help live in `trainer.cli`.

Run as a program, it starts and ends faster than a plain import and exit would
(`scripts/bench_startup.py` measures both; README "Start-up time"):

- Keras imports scikit-learn (for its scikit-learn wrappers, and with it much
  of SciPy) and matplotlib.pyplot (for its image gallery) whenever they are
  installed; the command uses neither through Keras, so they are hidden while
  TensorFlow and Keras load and importable again afterwards (the report imports
  matplotlib itself, when it draws).
- Once the command has returned its exit status and every other exit handler
  has run, the process ends with `os._exit`: the interpreter's teardown (garbage
  collection passes over the hundreds of thousands of objects TensorFlow
  leaves) has nothing left to do, since every file the command writes is closed
  or flushed by then. An uncaught exception ends the normal way.
"""

import atexit
import os
import sys

# Optional packages Keras imports when installed and the command never uses through Keras.
_HIDDEN_WHILE_KERAS_LOADS = ("sklearn", "matplotlib")


def _import_keras_without(hidden=_HIDDEN_WHILE_KERAS_LOADS) -> None:
    """Imports TensorFlow and Keras with `hidden` unimportable, then makes those importable again."""
    blocked = [name for name in hidden if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # `import name` raises ImportError, which Keras expects
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _exit_without_teardown() -> None:
    """The last exit handler: ends the process with the command's status, skipping the teardown."""
    app = sys.modules.get("trainer.cli.app")
    if app is None or app.exit_status is None:  # no status: an uncaught exception, or no command ran
        return
    if "logging" in sys.modules:  # its own exit handler ran already unless imported before this module
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(app.exit_status)


if __name__ == "__main__":
    atexit.register(_exit_without_teardown)  # registered first: runs after every other exit handler
    _import_keras_without()

from trainer.cli import app, train  # noqa: E402

if __name__ == "__main__":
    app.run_program(train.COMMAND)
