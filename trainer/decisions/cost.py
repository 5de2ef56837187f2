"""The expected-cost operating point: the class of least expected cost under calibrated probabilities.

Kind `expected_cost`: `argmin_j sum_i p_i C[i, j]` for a K x K cost matrix C (rows: true class); cost helpers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError
from trainer.decisions.base import OperatingPoint, checked_logits_and_labels
from trainer.decisions.calibration import Calibration

KIND = "expected_cost"


def check_cost_matrix(cost_matrix: Any, num_classes: int | None = None) -> np.ndarray:
    """`cost_matrix` as float64 `[K, K]`; `ArgumentError` naming it unless square, finite (and K wide)."""
    try:
        matrix = np.asarray(cost_matrix, np.float64)
    except (TypeError, ValueError):
        raise ArgumentError("cost_matrix", cost_matrix, "must be a K x K matrix of numbers") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2 \
            or not np.all(np.isfinite(matrix)):
        raise ArgumentError("cost_matrix", cost_matrix, "must be a finite K x K matrix with K >= 2")
    if num_classes is not None and matrix.shape[0] != num_classes:
        raise ArgumentError("cost_matrix", f"{matrix.shape[0]} x {matrix.shape[1]}",
                            f"must be {num_classes} x {num_classes} (one row and column per class)")
    return matrix


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def expected_costs(probabilities: np.ndarray, cost_matrix: np.ndarray) -> np.ndarray:
    """`[N, K]`: the expected cost of deciding each class, `sum_i p_i C[i, j]` (`probabilities @ C`)."""
    probabilities = np.asarray(probabilities, np.float64)
    matrix = check_cost_matrix(cost_matrix, probabilities.shape[1])
    return probabilities @ matrix


def measured_cost(labels: np.ndarray, decisions: np.ndarray, cost_matrix: np.ndarray) -> float:
    """Mean cost `C[label, decision]` of decisions on labelled examples."""
    matrix = check_cost_matrix(cost_matrix)
    labels = np.asarray(labels, np.int64).reshape(-1)
    decisions = np.asarray(decisions, np.int64).reshape(-1)
    return float(np.mean(matrix[labels, decisions]))


@dataclasses.dataclass(frozen=True)
class CostPoint(OperatingPoint):
    """Decide `argmin_j sum_i p_i C[i, j]` with `p` the calibrated probabilities of the logits.

    Bayes' decision under a cost matrix (C[i, j]: the cost of deciding j
    when the class is i). With the probabilities of `calibration` (the
    plain softmax when None: calibrate first, and undo the training's prior
    shift there, or the decision is only as good as those probabilities).
    The rule is not one of offsets, so `offsets()` is zero: `Trainer.predict`
    returns the model's probabilities, `decide` and `decide_tensor` the
    decision. Ties go to the lowest class index.

    Attributes:
      cost_matrix: `K x K` costs, rows the true class.
      num_classes: K.
      calibration: The probabilities' calibration, or None.
      validation_expected_cost: Mean expected cost of the decisions on the
        data it was built on (under the probabilities), or None.
      validation_cost: Mean measured cost there, or None.
      argmax_validation_cost: The plain argmax's measured cost there, or None.
      kind: Class attribute, `'expected_cost'`.
    """

    kinds: ClassVar[tuple[str, ...]] = (KIND,)
    kind: ClassVar[str] = KIND

    cost_matrix: tuple[tuple[float, ...], ...]
    num_classes: int
    calibration: Calibration | None = None
    validation_expected_cost: float | None = None
    validation_cost: float | None = None
    argmax_validation_cost: float | None = None

    def offsets(self) -> np.ndarray:
        """Zeros `[num_classes]`: the decision is not a logit shift."""
        return np.zeros(self.num_classes, np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The probabilities the decision weighs, `[N, K]` float64."""
        logits = np.asarray(logits, np.float64)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape [N, {self.num_classes}], got {logits.shape}.")
        return _softmax(logits) if self.calibration is None else self.calibration.apply(logits)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Class indices `[N]`: the least expected cost."""
        return np.argmin(self.probabilities(logits) @ np.asarray(self.cost_matrix), axis=1)

    def score_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """float32 `[N, K]`: minus the expected cost of deciding each class (the rule takes the largest)."""
        logits = tf.cast(logits, tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1) if self.calibration is None \
            else self.calibration.apply_tensor(logits)
        return -tf.matmul(probabilities, tf.constant(np.asarray(self.cost_matrix), tf.float32))

    def decide_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`decide` in TensorFlow (int32 `[N]`), e.g. for a SavedModel's serving function."""
        return tf.argmax(self.score_tensor(logits), axis=-1, output_type=tf.int32)

    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict (the format of `operating_point.json`)."""
        return {"kind": KIND, "cost_matrix": [[float(c) for c in row] for row in self.cost_matrix],
                "num_classes": self.num_classes,
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
                "validation_expected_cost": self.validation_expected_cost,
                "validation_cost": self.validation_cost,
                "argmax_validation_cost": self.argmax_validation_cost}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CostPoint:
        """The point `to_dict` described.

        Raises:
          ValueError: for another kind, a missing or unknown key, or a cost
            matrix that is not `num_classes` square (`ArgumentError`).
        """
        payload = dict(payload)
        kind = payload.pop("kind", None)
        if kind != KIND:
            raise ValueError(f"Not an expected-cost operating point: kind {kind!r}.")
        if "cost_matrix" not in payload:
            raise ValueError("missing key 'cost_matrix'.")
        matrix = check_cost_matrix(payload["cost_matrix"], payload.get("num_classes"))
        payload["cost_matrix"] = tuple(tuple(float(c) for c in row) for row in matrix)
        if payload.get("calibration") is not None:
            payload["calibration"] = Calibration.from_dict(payload["calibration"])
        try:
            return cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error


def choose_cost_point(logits: np.ndarray, labels: np.ndarray, *, cost_matrix: Sequence[Sequence[float]],
                      calibration: Calibration | None = None) -> CostPoint:
    """The expected-cost decision for `cost_matrix`, with its costs on held-out logits.

    Nothing is fitted here (fit `calibration` first, e.g.
    `calibration.fit_temperature` on the same held-out data, with the
    training's prior correction); the held-out data give the figures.

    Args:
      logits: `[N, K]` held-out logits.
      labels: `[N]` held-out labels in [0, K).
      cost_matrix: `K x K` costs, rows the true class.
      calibration: The probabilities' calibration, or None (softmax).

    Raises:
      ValueError: naming the argument that is malformed (`ArgumentError`).
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    num_classes = logits.shape[1]
    matrix = check_cost_matrix(cost_matrix, num_classes)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ArgumentError("labels", (int(labels.min()), int(labels.max())),
                            f"must be in [0, {num_classes})")
    if calibration is not None and calibration.num_classes != num_classes:
        raise ArgumentError("calibration", calibration.num_classes, f"must be for {num_classes} classes")
    point = CostPoint(cost_matrix=tuple(tuple(float(c) for c in row) for row in matrix),
                      num_classes=num_classes, calibration=calibration)
    costs = expected_costs(point.probabilities(logits), matrix)
    decisions = costs.argmin(axis=1)
    return dataclasses.replace(
        point, validation_expected_cost=float(costs.min(axis=1).mean()),
        validation_cost=measured_cost(labels, decisions, matrix),
        argmax_validation_cost=measured_cost(labels, logits.argmax(axis=1), matrix))
