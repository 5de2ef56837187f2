"""A faster start and end for the command-line programs (trainer.main, .evaluate, .predict).

`prepare_program()`, called first thing in a program's `__main__` block, before TensorFlow is imported:

- Keras imports scikit-learn (for its scikit-learn wrappers, and with it much
  of SciPy) and matplotlib.pyplot (for its image gallery) whenever they are
  installed; the commands use neither through Keras, so they are hidden while
  TensorFlow and Keras load and importable again afterwards (the reports import
  matplotlib themselves, when they draw).
- Once the command has returned its exit status and every other exit handler
  has run, the process ends with `os._exit`: the interpreter's teardown (garbage
  collection passes over the hundreds of thousands of objects TensorFlow
  leaves) has nothing left to do, since every file the command writes is closed
  or flushed by then. An uncaught exception ends the normal way.

`scripts/bench_startup.py` measures it (README "Start-up time"). This module imports nothing
heavy itself.
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


def prepare_program() -> None:
    """Registers the teardown-free exit (first, so it runs last) and imports Keras without its extras."""
    atexit.register(_exit_without_teardown)
    _import_keras_without()
