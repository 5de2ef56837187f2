"""Operating points by kind: read one back from its JSON, or calibrate one on held-out logits.

`KINDS` maps an `operating_point.json` kind to its class; `CALIBRATIONS` a calibration to its chooser.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from trainer.checks import check_choice
from trainer.decisions.base import FILENAME, OperatingPoint
from trainer.decisions.cost import CostPoint, choose_cost_point
from trainer.decisions.multi_target import MultiTargetPoint, choose_multi_target_offsets
from trainer.decisions.per_label import LabelThresholds
from trainer.decisions.target_recall import TargetRecallPoint, choose_operating_point
from trainer.decisions.worst_class import WorstClassPoint, choose_worst_class_offsets
from trainer.json_files import read_json

KINDS: Mapping[str, type] = types.MappingProxyType(
    {kind: cls for cls in (TargetRecallPoint, WorstClassPoint, CostPoint, MultiTargetPoint, LabelThresholds)
     for kind in cls.kinds})

CALIBRATIONS: Mapping[str, Callable[..., OperatingPoint]] = types.MappingProxyType({
    "target_recall": choose_operating_point,
    "worst_class": choose_worst_class_offsets,
    "expected_cost": choose_cost_point,
    "multi_target": choose_multi_target_offsets,
})


def from_dict(payload: dict[str, Any]) -> OperatingPoint:
    """The operating point a dict describes, of the class its `kind` names.

    Raises:
      TypeError: when `payload` is not a dict.
      ValueError: when its `kind` is not one of `KINDS`, or it is not a valid
        point of that kind.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"An operating point must be a JSON object, got {type(payload).__name__}.")
    kind = payload.get("kind")
    if kind not in KINDS:
        raise ValueError(f"Unknown operating point kind {kind!r}; expected one of {', '.join(KINDS)}.")
    return KINDS[kind].from_dict(payload)


def load(directory: str | None) -> OperatingPoint | None:
    """The operating point saved in `<directory>/operating_point.json`, or None when there is none.

    Args:
      directory: A run directory; None or empty reads nothing.

    Raises:
      ValueError: naming the file when it is not valid JSON or not a valid
        operating point.
    """
    if not directory:
        return None
    path = os.path.join(directory, FILENAME)
    if not os.path.isfile(path):
        return None
    try:
        return from_dict(read_json(path))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a valid operating point: {error}") from error


def calibrate(kind: str, logits: np.ndarray, labels: np.ndarray, **params: Any) -> OperatingPoint:
    """Chooses an operating point of `kind` on held-out `[N, K]` logits and `[N]` labels.

    Use held-out data of the training distribution, never the test set. The
    caller installs and saves it: `trainer.operating_point = point`,
    `point.save(model_dir)`.

    Args:
      kind: `'target_recall'` (`choose_operating_point`: params
        `target_class`, `target_recall`, `method`, `class_prior`,
        `confidence`, `estimator`, `bound`, `interval_level`,
        `interval_method`, `bootstrap_resamples`, `seed`), `'worst_class'`
        (`choose_worst_class_offsets`: params `max_balanced_accuracy_drop`,
        `iterations`, `step_size`), `'expected_cost'`
        (`choose_cost_point`: params `cost_matrix`, `calibration`) or
        `'multi_target'` (`choose_multi_target_offsets`: params
        `target_classes`, `target_recalls`, `class_prior`, `confidence`,
        `estimator`, `bound`, `interval_level`, `max_sweeps`, `tolerance`).
      logits: `[N, K]` held-out logits.
      labels: `[N]` held-out labels.
      **params: The chooser's keyword arguments.

    Raises:
      ValueError: naming the argument that is out of range
        (`trainer.checks.ArgumentError` for a bad `kind` or parameter value).
      TypeError: for a parameter the chooser does not take.
    """
    check_choice(kind, "kind", tuple(CALIBRATIONS))
    return CALIBRATIONS[kind](logits, labels, **params)
