"""Recall-driven callbacks, the recall-target controller, and TensorBoard extras.

All work in the `Trainer` loop and in plain `model.fit` (compile with
`PerClassMetrics` there so the logs carry `recall/<k>`).
"""

from callbacks.keras_metrics import PerClassMetrics
from callbacks.monitor import MonitorCallback, resolve_monitor
from callbacks.recall_early_stopping import RecallEarlyStopping
from callbacks.recall_reduce_lr import RecallReduceLROnPlateau
from callbacks.recall_target import RecallTarget, RecallTargetController
from callbacks.tensorboard_extras import TensorBoardExtras, render_confusion_matrix

__all__ = [
    "MonitorCallback",
    "PerClassMetrics",
    "RecallEarlyStopping",
    "RecallReduceLROnPlateau",
    "RecallTarget",
    "RecallTargetController",
    "TensorBoardExtras",
    "render_confusion_matrix",
    "resolve_monitor",
]
