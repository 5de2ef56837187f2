"""Operating points: decision rules calibrated on held-out logits after training, behind one protocol.

Kinds: target recall (`TargetRecallPoint`), several recall targets (`MultiTargetPoint`), worst-class offsets
(`WorstClassPoint`), cost (`CostPoint`).
"""

from trainer.decisions.base import (
    FILENAME,
    OperatingPoint,
    add_offsets,
    checked_logits_and_labels,
    decision_metrics,
)
from trainer.decisions.calibration import (
    Calibration,
    calibration_metrics,
    class_weight_correction,
    expected_calibration_error,
    fit_temperature,
    load_calibration,
    logit_adjustment_correction,
)
from trainer.decisions.cost import CostPoint, choose_cost_point, expected_costs, measured_cost
from trainer.decisions.multi_target import (
    MultiTargetPoint,
    TargetResult,
    choose_multi_target_offsets,
    describe_conflict,
)
from trainer.decisions.registry import CALIBRATIONS, KINDS, calibrate, from_dict, load
from trainer.decisions.target_recall import TargetRecallPoint, choose_operating_point
from trainer.decisions.worst_class import WorstClassPoint, choose_worst_class_offsets

__all__ = [
    "CALIBRATIONS", "FILENAME", "KINDS", "Calibration", "CostPoint", "MultiTargetPoint", "OperatingPoint",
    "TargetRecallPoint", "TargetResult", "WorstClassPoint", "add_offsets", "calibrate", "calibration_metrics",
    "checked_logits_and_labels", "choose_cost_point", "choose_multi_target_offsets", "choose_operating_point",
    "choose_worst_class_offsets", "class_weight_correction", "decision_metrics", "describe_conflict",
    "expected_calibration_error", "expected_costs", "fit_temperature", "from_dict", "load",
    "load_calibration", "logit_adjustment_correction", "measured_cost",
]
