"""Per-class histories of a run, read back from its TensorBoard event files with TensorBoard's own reader.

The Trainer writes, at the step each epoch ends, `recall/<k>[_<name>]` and
`precision/<k>[_<name>]` of the epoch's evaluation under `<model_dir>/eval` and the
rule's `class_weight/<k>[_<name>]` (after the epoch's callbacks) under `<model_dir>/train`
(`trainer.summaries`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

# Which run directory holds which per-class history.
SOURCES = {"recall": "eval", "precision": "eval", "class_weight": "train"}
_TAG = re.compile(r"^(?:(?P<group>[\w.-]+)/)?(?P<metric>recall|precision|class_weight)/(?P<rest>.+)$")
_IGNORED_GROUPS = ("final",)


@dataclasses.dataclass(frozen=True)
class EpochHistory:
    """Per-class series over the epochs of a run.

    Attributes:
      series: metric (`'recall'`, `'precision'`, `'class_weight'`) -> class
        index -> `[E, 2]` array of `(epoch, value)` rows, epochs ascending
        (1 = the first epoch written; a resumed run's epochs continue).
      model_dir: The run directory they were read from.
    """

    series: Mapping[str, Mapping[int, np.ndarray]]
    model_dir: str

    def has(self, metric: str) -> bool:
        """Whether any class has a series of `metric`."""
        return bool(self.series.get(metric))


def _event_files(directory: str) -> list:
    return sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*")))


def _class_index(rest: str, class_names: Sequence[str]) -> Optional[int]:
    """`'3'`, `'3_cat'`, `'3 (cat)'` or `'cat'` -> the class index (None: not a class)."""
    match = re.match(r"^(\d+)(?:\D.*)?$", rest)
    if match:
        return int(match.group(1))
    names = [str(name) for name in class_names]
    return names.index(rest) if rest in names else None


def _scalar(value) -> Optional[float]:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        array = tensor_util.make_ndarray(value.tensor)
        return float(array) if array.size == 1 and array.dtype.kind in "fiu" else None
    return None


def _read_run(directory: str, metrics: Sequence[str], class_names: Sequence[str]
              ) -> tuple[Dict[str, Dict[int, Dict[int, float]]], set]:
    """metric -> class -> step -> value, and every step seen.

    Values are applied in the order they were written (wall time), so a
    resumed run's rewrite of a step overrides the first one.
    """
    written = []
    steps: set = set()
    for path in _event_files(directory):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name not in ("", "scalars"):
                    continue
                number = _scalar(value)
                if number is None:
                    continue
                steps.add(int(event.step))
                match = _TAG.match(value.tag)
                if (not match or match.group("metric") not in metrics
                        or match.group("group") in _IGNORED_GROUPS):
                    continue
                k = _class_index(match.group("rest"), class_names)
                if k is not None and 0 <= k < len(class_names):
                    written.append((event.wall_time, len(written), match.group("metric"), k, int(event.step),
                                    number))
    found: Dict[str, Dict[int, Dict[int, float]]] = {metric: {} for metric in metrics}
    for _, _, metric, k, step, number in sorted(written):
        found[metric].setdefault(k, {})[step] = number
    return found, steps


def read_history(model_dir: str, class_names: Sequence[str]) -> Optional[EpochHistory]:
    """The run's per-class recall, precision (its per-epoch evaluation) and class weights, by epoch.

    Epoch numbers are the ranks of the steps at which the run wrote any
    scalar (each epoch ends at a step of its own), so series written only in
    some epochs (a deferred rule's weights) stay aligned with the others.

    Args:
      model_dir: The run directory (`<model_dir>/train`, `<model_dir>/eval`).
      class_names: The class names (tags may name classes by index or name).

    Returns:
      The history, or None when the run directory holds no event files of
      those runs (an export copied elsewhere).
    """
    runs = sorted(set(SOURCES.values()))
    if not any(_event_files(os.path.join(model_dir, run)) for run in runs):
        return None
    raw: Dict[str, Dict[int, Dict[int, float]]] = {}
    steps: set = set()
    for run in runs:
        metrics = [metric for metric, source in SOURCES.items() if source == run]
        found, seen = _read_run(os.path.join(model_dir, run), metrics, class_names)
        raw.update(found)
        steps |= seen
    epoch_of = {step: rank + 1 for rank, step in enumerate(sorted(steps))}
    series = {metric: {k: np.array([(epoch_of[step], values[step]) for step in sorted(values)], np.float64)
                       for k, values in sorted(by_class.items())}
              for metric, by_class in raw.items()}
    return EpochHistory(series=series, model_dir=model_dir)
