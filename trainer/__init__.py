"""A compiled TensorFlow 2 training loop for classifiers on imbalanced data.

`Trainer` is the loop; `trainer.main` is the command line.
"""

from trainer.metrics import ConfusionMatrix, per_class_metrics
from trainer.trainer import Trainer

__all__ = ["Trainer", "ConfusionMatrix", "per_class_metrics"]
