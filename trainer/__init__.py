"""A compiled TensorFlow 2 training loop for classifiers on imbalanced data.

`Trainer` is the loop; `python -m trainer.main` is the command line. The
package imports its parts lazily, so a leaf such as `trainer.checks` can be
used by the layers below the loop (`losses`, `trainer.data`) without loading it.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) buries our
# messages; an explicit TF_CPP_MIN_LOG_LEVEL in the environment still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_EXPORTS = {
    "Trainer": "trainer.trainer",
    "ConfusionMatrix": "trainer.metrics",
    "per_class_metrics": "trainer.metrics",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
