"""The worst-class operating point: per-class logit offsets that raise the smallest recall.

Chosen on held-out logits after training (`choose_worst_class_offsets`), kind `worst_class_offsets`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from trainer.checks import ArgumentError, check_number, check_positive, check_positive_integer
from trainer.decisions.base import OperatingPoint, checked_logits_and_labels
from trainer.metrics import count_confusion_matrix, per_class_metrics

KIND = "worst_class_offsets"


def _offset_metrics(logits: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> dict[str, Any]:
    """`per_class_metrics` of `argmax(logits + offsets)`: recall NaN where a class is absent."""
    predictions = np.argmax(logits + offsets, axis=1)
    return per_class_metrics(count_confusion_matrix(labels, predictions, logits.shape[1]))


@dataclasses.dataclass(frozen=True)
class WorstClassPoint(OperatingPoint):
    """Decide `argmax(logits + class_offsets)`.

    The post-hoc counterpart of `RecallTarget(mode='worst_class')`: offsets
    chosen on held-out data after training so that the smallest per-class
    recall is as large as it gets. Adding `o` to the logits is the plug-in
    form of a cost-sensitive decision `argmax_y exp(o_y) p(y|x)` (Narasimhan
    and Menon, NeurIPS 2021; Menon et al., ICLR 2021 for the balanced case),
    so the offsets move the decision boundaries without retraining.

    Attributes:
      class_offsets: Per-class logit offsets `[K]`.
      num_classes: K.
      validation_min_recall: Smallest per-class recall on the calibration
        data under the offsets.
      validation_balanced_accuracy: Mean per-class recall there under them.
      argmax_validation_min_recall: The same two without offsets (plain
        argmax), for comparison.
      argmax_validation_balanced_accuracy: See above.
      max_balanced_accuracy_drop: The bound on the balanced-accuracy loss the
        offsets were chosen under (None: unbounded).
      kind: Class attribute, always `'worst_class_offsets'`.
    """

    kinds: ClassVar[tuple[str, ...]] = (KIND,)
    kind: ClassVar[str] = KIND

    class_offsets: tuple[float, ...]
    num_classes: int
    validation_min_recall: float
    validation_balanced_accuracy: float
    argmax_validation_min_recall: float
    argmax_validation_balanced_accuracy: float
    max_balanced_accuracy_drop: float | None = None

    def offsets(self) -> np.ndarray:
        """Per-class logit offsets `[num_classes]`, float32."""
        return np.asarray(self.class_offsets, np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict (the format of `operating_point.json`)."""
        payload = dataclasses.asdict(self)
        payload["class_offsets"] = [float(o) for o in self.class_offsets]
        payload["kind"] = KIND
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> WorstClassPoint:
        """The point `to_dict` described.

        Raises:
          ValueError: for another kind, a missing or unknown key, or
            `class_offsets` that are not `num_classes` finite numbers.
        """
        payload = dict(payload)
        kind = payload.pop("kind", None)
        if kind != KIND:
            raise ValueError(f"Not a worst-class operating point: kind {kind!r}.")
        try:
            offsets = tuple(float(o) for o in payload["class_offsets"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"class_offsets must be a list of numbers: {error!r}") from error
        if len(offsets) != payload.get("num_classes") or not np.all(np.isfinite(offsets)):
            raise ValueError(f"class_offsets must be {payload.get('num_classes')} finite numbers, "
                             f"got {payload['class_offsets']!r}.")
        payload["class_offsets"] = offsets
        try:
            return cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error


def _check_max_drop(max_balanced_accuracy_drop: float | None) -> float | None:
    if max_balanced_accuracy_drop is None:
        return None
    try:
        return check_number(max_balanced_accuracy_drop, "max_balanced_accuracy_drop", minimum=0, maximum=1)
    except ArgumentError as error:
        raise ArgumentError(error.argument, error.value, "must be in [0, 1] or None") from None


def choose_worst_class_offsets(logits: np.ndarray, labels: np.ndarray, *,
                               max_balanced_accuracy_drop: float | None = 0.0,
                               iterations: int = 300,
                               step_size: float = 0.5) -> WorstClassPoint:
    """Chooses per-class logit offsets that maximise the smallest recall on these examples.

    A subgradient ascent on the offsets: each iteration raises the offset of
    every class by `step_size / sqrt(t + 1)` times how much its miss rate
    exceeds the mean miss rate (the update of the dual weights of the
    max-min problem, in log space). The best iterate is kept: the largest
    smallest recall, ties going to the higher balanced accuracy, among the
    iterates whose balanced accuracy is within `max_balanced_accuracy_drop`
    of the plain argmax's (the zero offsets always qualify, so the result is
    never worse than argmax on these examples). Cost: `iterations` argmax
    passes over `[N, K]`.

    The README's long-tailed Fashion-MNIST benchmark measures what it gains
    on a test set. The smallest recall of a class with few held-out
    examples is noisy (with 10 examples it moves in steps of 0.1), and the
    ascent follows it: hold out enough of every class, or expect the offsets
    to chase noise.

    Args:
      logits: `[N, K]` held-out logits.
      labels: `[N]` held-out labels. Classes without examples keep offset 0
        and are left out of the smallest recall.
      max_balanced_accuracy_drop: Largest loss of balanced accuracy (mean
        per-class recall, on these examples) to accept; None: no bound. The
        default 0 takes only offsets that give up no balanced accuracy on
        the held-out data: raising the worst class there is then not paid
        for with the others.
      iterations: Number of ascent steps (>= 1).
      step_size: Initial step in logit units (> 0).

    Raises:
      ValueError: naming the argument that is malformed or out of range
        (`trainer.checks.ArgumentError` for a bad argument value).
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    k = logits.shape[1]
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be in [0, {k}), got values from {labels.min()} to "
                         f"{labels.max()}.")
    max_balanced_accuracy_drop = _check_max_drop(max_balanced_accuracy_drop)
    iterations = check_positive_integer(iterations, "iterations")
    step_size = check_positive(step_size, "step_size")
    present = np.bincount(labels, minlength=k) > 0
    offsets = np.zeros(k, np.float64)
    argmax = _offset_metrics(logits, labels, offsets)
    argmax_min, argmax_balanced = argmax["min_recall"], argmax["balanced_accuracy"]
    floor = -np.inf if max_balanced_accuracy_drop is None \
        else argmax_balanced - max_balanced_accuracy_drop - 1e-12
    best = (argmax_min, argmax_balanced, offsets.copy())
    for t in range(iterations):
        metrics = _offset_metrics(logits, labels, offsets)
        recall, smallest, balanced = (metrics["recall"], metrics["min_recall"],
                                      metrics["balanced_accuracy"])
        if balanced >= floor and (smallest, balanced) > best[:2]:
            best = (smallest, balanced, offsets.copy())
        miss = np.where(present, 1.0 - recall, 0.0)
        excess = np.where(present, miss - miss[present].mean(), 0.0)
        offsets = offsets + step_size / np.sqrt(t + 1.0) * excess
    smallest, balanced, chosen = best
    chosen = chosen - chosen[present].mean()  # a common shift changes no decision
    chosen[~present] = 0.0
    return WorstClassPoint(
        class_offsets=tuple(float(o) for o in chosen), num_classes=k,
        validation_min_recall=smallest, validation_balanced_accuracy=balanced,
        argmax_validation_min_recall=argmax_min,
        argmax_validation_balanced_accuracy=argmax_balanced,
        max_balanced_accuracy_drop=max_balanced_accuracy_drop)
