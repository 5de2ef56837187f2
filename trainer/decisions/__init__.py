"""Operating points: decision rules calibrated on held-out logits after training, behind one protocol.

Two kinds: the target-recall point (`TargetRecallPoint`) and the worst-class offsets (`WorstClassPoint`).
"""

from trainer.decisions.base import (
    FILENAME,
    OperatingPoint,
    add_offsets,
    checked_logits_and_labels,
    decision_metrics,
)
from trainer.decisions.registry import CALIBRATIONS, KINDS, calibrate, from_dict, load
from trainer.decisions.target_recall import TargetRecallPoint, choose_operating_point
from trainer.decisions.worst_class import WorstClassPoint, choose_worst_class_offsets

__all__ = [
    "CALIBRATIONS", "FILENAME", "KINDS", "OperatingPoint", "TargetRecallPoint", "WorstClassPoint",
    "add_offsets", "calibrate", "checked_logits_and_labels", "choose_operating_point",
    "choose_worst_class_offsets", "decision_metrics", "from_dict", "load",
]
