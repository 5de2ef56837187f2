"""A compiled TensorFlow 2 training loop for classifiers on imbalanced data.

`Trainer` is the loop; `trainer.main` is the command line.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) buries our
# messages; an explicit TF_CPP_MIN_LOG_LEVEL in the environment still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.metrics import ConfusionMatrix, per_class_metrics
from trainer.trainer import Trainer

__all__ = ["Trainer", "ConfusionMatrix", "per_class_metrics"]
