"""Per-label thresholds of a multi-label model, each chosen for that label's recall target.

A multi-label model (`trainer.tasks.MultiLabelTask`) decides each label on its own logit, so its
operating point is one cut-off per label. A label with a recall target gets the cut-off
`choose_operating_point` picks for the positive class of its two-class logits `[0, z_l]` (the
same small-sample rules, bound and intervals as a single-label target: the best precision among
cut-offs whose recall reaches the target with the stated confidence); a label without one keeps
`z_l > 0` (probability above 0.5).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError
from trainer.decisions.base import FILENAME
from trainer.decisions.target_recall import TargetRecallPoint, choose_operating_point
from trainer.json_files import write_json_atomically


def _two_class(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64).reshape(-1, 1)
    return np.concatenate([np.zeros_like(z), z], axis=1)


@dataclasses.dataclass(frozen=True)
class LabelThresholds:
    """One decision per label: label l is predicted when its target-recall point (or `z_l > 0`) says so.

    Attributes:
      points: Per label, the `TargetRecallPoint` chosen on its two-class logits `[0, z_l]`
        (target class 1), or None for a label without a recall target (`z_l > 0`).
      label_names: The labels' names.
    """

    kind: ClassVar[str] = "label_thresholds"
    kinds: ClassVar[tuple[str, ...]] = ("label_thresholds",)

    points: tuple[TargetRecallPoint | None, ...]
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.points)

    def offsets(self) -> None:
        """None: per-label cut-offs decide, they do not change the probabilities (`Trainer.predict`)."""
        return None

    def cutoffs(self) -> np.ndarray:
        """`[L]` logit cut-offs: label l is predicted when `z_l` exceeds entry l (0: no target)."""
        return np.array([0.0 if p is None else -p.offset for p in self.points], np.float64)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Multi-hot int64 decisions `[N, L]` for `[N, L]` logits."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != self.num_labels:
            raise ValueError(f"logits must have shape [N, {self.num_labels}], got {logits.shape}.")
        columns = [(logits[:, j] > 0) if p is None else (p.decide(_two_class(logits[:, j])) == 1)
                   for j, p in enumerate(self.points)]
        return np.stack(columns, axis=1).astype(np.int64)

    def decide_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`decide` in TensorFlow (int32 `[N, L]`), e.g. for a SavedModel's serving function."""
        logits = tf.cast(logits, tf.float32)
        columns = []
        for j, point in enumerate(self.points):
            z = logits[:, j:j + 1]
            if point is None:
                columns.append(tf.cast(z[:, 0] > 0, tf.int32))
            else:
                two_class = tf.concat([tf.zeros_like(z), z], axis=1)
                columns.append(tf.cast(tf.equal(point.decide_tensor(two_class), 1), tf.int32))
        return tf.stack(columns, axis=1)

    def score_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """float32 `[N, L]`: each label's logit minus its cut-off (decided when positive)."""
        return tf.cast(logits, tf.float32) - tf.constant(self.cutoffs(), tf.float32)

    def save(self, directory: str) -> str:
        """Writes `<directory>/operating_point.json` atomically (`trainer.decisions.load` reads it)."""
        return write_json_atomically(os.path.join(directory, FILENAME), self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The thresholds as a JSON-ready dict."""
        return {"kind": self.kind, "label_names": list(self.label_names),
                "cutoffs": self.cutoffs().tolist(),
                "points": [None if p is None else p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> LabelThresholds:
        """The thresholds `to_dict` described.

        Raises:
          ValueError: for another kind or a malformed entry.
        """
        if payload.get("kind") != cls.kind:
            raise ValueError(f"Not label thresholds: kind {payload.get('kind')!r}.")
        points = tuple(None if p is None else TargetRecallPoint.from_dict(p) for p in payload["points"])
        names = tuple(str(n) for n in payload["label_names"])
        if len(names) != len(points):
            raise ValueError(f"label_names has {len(names)} names for {len(points)} labels.")
        return cls(points=points, label_names=names)


def _targets_by_label(target_recalls: Mapping[Any, float] | Sequence[float | None], num_labels: int,
                      label_names: Sequence[str]) -> list:
    """`[L]` targets (None: no target) from a per-label list or a {label index or name: target} map."""
    if isinstance(target_recalls, Mapping):
        targets: list = [None] * num_labels
        for key, value in target_recalls.items():
            if isinstance(key, str) and key in label_names:
                index = list(label_names).index(key)
            elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < num_labels:
                index = int(key)
            else:
                raise ArgumentError("target_recalls", dict(target_recalls),
                                    f"has the key {key!r}, which is neither a label index "
                                    f"(0..{num_labels - 1}) nor a label name ({', '.join(label_names)})")
            targets[index] = value
        return targets
    targets = list(target_recalls)
    if len(targets) != num_labels:
        raise ArgumentError("target_recalls", targets,
                            f"has {len(targets)} entries but there are {num_labels} labels")
    return targets


def choose_label_thresholds(logits: np.ndarray, labels: np.ndarray,
                            target_recalls: Mapping[Any, float] | Sequence[float | None], *,
                            label_names: Sequence[str] | None = None, **options: Any) -> LabelThresholds:
    """Chooses, on held-out `[N, L]` logits and multi-hot labels, a cut-off per targeted label.

    Args:
      logits: `[N, L]` held-out logits (`Trainer.collect_logits` of a multi-label run).
      labels: `[N, L]` multi-hot labels.
      target_recalls: Per label a target recall or None (a list of L), or a mapping from label
        index or name to target.
      label_names: The labels' names (default `label 0`, ...).
      **options: Passed to `choose_operating_point` for every targeted label (`confidence`,
        `estimator`, `bound`, `interval_level`, ...); `method` is `logit_offset` (both kinds
        are the same cut-off on one logit).

    Raises:
      ArgumentError: naming `logits`, `labels`, `target_recalls` or `label_names`.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape or logits.shape[0] == 0:
        raise ArgumentError("labels", f"an array of shape {labels.shape}",
                            f"must be multi-hot with the logits' shape (non-empty [N, L]); the logits "
                            f"have shape {logits.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ArgumentError("labels", "values " + str(sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]),
                            "must be 0 or 1 (multi-hot)")
    num_labels = logits.shape[1]
    names = tuple(label_names) if label_names is not None else tuple(f"label {j}" for j in range(num_labels))
    if len(names) != num_labels:
        raise ArgumentError("label_names", list(names), f"has {len(names)} names for {num_labels} labels")
    points = []
    for j, target in enumerate(_targets_by_label(target_recalls, num_labels, names)):
        if target is None:
            points.append(None)
            continue
        if not labels[:, j].any():
            raise ArgumentError("target_recalls", {names[j]: target},
                                f"targets label {names[j]!r}, which has no positive example in the "
                                f"calibration data")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            points.append(choose_operating_point(_two_class(logits[:, j]), labels[:, j], target_class=1,
                                                 target_recall=target, method="logit_offset", **options))
        for warning in caught:  # the single-label wording ("the target class") names the label here
            warnings.warn(f"label {names[j]!r}: " + str(warning.message).replace(
                "examples of the target class", "positives"), warning.category, stacklevel=2)
    return LabelThresholds(points=tuple(points), label_names=names)
