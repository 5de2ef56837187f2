"""Several recall targets at once: per-class logit offsets chosen jointly so each target reaches its recall.

Kind `multi_target_offsets` (`choose_multi_target_offsets`); a single target stays `TargetRecallPoint`'s.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from trainer.checks import ArgumentError, check_choice, check_integer, check_number
from trainer.decisions.base import OperatingPoint, checked_logits_and_labels
from trainer.decisions.cutoffs import (
    BOUNDS,
    RankedScores,
    binomial_intervals,
    choose_cutoffs,
    evaluate_cutoffs,
    shown_confidence,
)
from trainer.decisions.quantiles import harrell_davis_weights
from trainer.decisions.target_recall import ESTIMATORS, cutoff_rule, example_weights

KIND = "multi_target_offsets"
# What is served when the targets cannot all be met: every target scaled by the largest common fraction
# that can be met, then each class that reaches its full target alongside raised to it.
COMPROMISE = "max_min_ratio"
# Bisection steps on that common fraction (resolution 2 ** -10).
_BISECTION_STEPS = 10


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One target of a `MultiTargetPoint`: what was asked, what is served, what the choosing data show.

    Attributes:
      target_class: The class.
      target_recall: The recall asked for.
      offset: Its logit offset in the point.
      feasible: Whether the point meets `target_recall` by the cut-off rule on
        the choosing data (False: the targets conflict; see `served_recall`).
      served_recall: The recall the offset was chosen for: `target_recall`,
        or the compromise's smaller one when the targets conflict.
      validation_recall: The class's recall on the choosing data under the point.
      validation_precision: Its precision there (under `class_prior`).
      positives: The class's examples in the choosing data.
      confidence_met: Whether they can show `target_recall` at the point's
        confidence (False: too few; the cut-off is the point estimate).
      shown_confidence: The confidence at which the choosing data show
        `validation_recall` reaches `target_recall` (`cutoffs.shown_confidence`).
      recall_interval: Exact binomial interval of the recall on new data, or None.
      precision_interval: The same for precision, or None.
    """

    target_class: int
    target_recall: float
    offset: float
    feasible: bool
    served_recall: float
    validation_recall: float
    validation_precision: float
    positives: int
    confidence_met: bool
    shown_confidence: float
    recall_interval: tuple[float, float] | None = None
    precision_interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The target as a JSON-ready dict."""
        payload = dataclasses.asdict(self)
        for key in ("recall_interval", "precision_interval"):
            payload[key] = None if payload[key] is None else [float(v) for v in payload[key]]
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TargetResult:
        """The target `to_dict` described (`ValueError` for a missing or unknown key)."""
        if not isinstance(payload, dict):
            raise ValueError(f"a target must be a JSON object, got {payload!r}.")
        payload = dict(payload)
        for key in ("recall_interval", "precision_interval"):
            interval = payload.get(key)
            if interval is not None:
                if len(interval) != 2 or not 0.0 <= float(interval[0]) <= float(interval[1]) <= 1.0:
                    raise ArgumentError(key, list(interval), "must be [low, high] with 0 <= low <= high <= 1")
                payload[key] = (float(interval[0]), float(interval[1]))
        try:
            return cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error


@dataclasses.dataclass(frozen=True)
class MultiTargetPoint(OperatingPoint):
    """Decide `argmax(logits + class_offsets)`, offsets chosen so that several classes reach their recalls.

    Only the target classes have non-zero offsets. They are chosen jointly on
    the choosing logits (`choose_multi_target_offsets`): raising one class's
    offset takes examples from every other class, the other targets
    included, so each offset is the smallest that meets its class's recall
    given the others'. When the targets cannot all be met together the point
    says so (`feasible`, each target's `feasible`, `message`) and serves the
    compromise `COMPROMISE` names.

    Attributes:
      class_offsets: Per-class logit offsets `[K]` (0 for the other classes).
      num_classes: K.
      targets: One `TargetResult` per target, in the order asked.
      feasible: Whether every target is met on the choosing data.
      common_fraction: 1 when feasible; else the largest fraction of every
        target that can be met together (the compromise's).
      message: The sentence saying which targets conflict and what they
        reach, or None when all are met.
      validation_balanced_accuracy: Mean per-class recall on the choosing data.
      argmax_validation_balanced_accuracy: The same under the plain argmax.
      confidence: The cut-off rule's confidence (0.5: point estimate).
      estimator: `'harrell_davis'` or `'empirical'`.
      bound: `'exact'` or `'wilson'`.
      class_prior: The prior precision was measured under, or None.
      interval_level: Two-sided level of the targets' intervals, or None.
      sweeps: Coordinate sweeps of the solve that chose the served offsets.
      compromise: How a conflict is resolved (`COMPROMISE`).
      kind: Class attribute, `'multi_target_offsets'`.
    """

    kinds: ClassVar[tuple[str, ...]] = (KIND,)
    kind: ClassVar[str] = KIND

    class_offsets: tuple[float, ...]
    num_classes: int
    targets: tuple[TargetResult, ...]
    feasible: bool
    common_fraction: float
    message: str | None
    validation_balanced_accuracy: float
    argmax_validation_balanced_accuracy: float
    confidence: float = 0.5
    estimator: str = "harrell_davis"
    bound: str = "exact"
    class_prior: tuple[float, ...] | None = None
    interval_level: float | None = None
    sweeps: int = 0
    compromise: str = COMPROMISE

    @property
    def target_classes(self) -> tuple[int, ...]:
        """The target classes, in the order asked."""
        return tuple(target.target_class for target in self.targets)

    @property
    def target_recalls(self) -> tuple[float, ...]:
        """Their target recalls."""
        return tuple(target.target_recall for target in self.targets)

    def offsets(self) -> np.ndarray:
        """Per-class logit offsets `[num_classes]`, float32."""
        return np.asarray(self.class_offsets, np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict (the format of `operating_point.json`)."""
        payload = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        payload["kind"] = KIND
        payload["class_offsets"] = [float(o) for o in self.class_offsets]
        payload["targets"] = [target.to_dict() for target in self.targets]
        payload["class_prior"] = None if self.class_prior is None else [float(p) for p in self.class_prior]
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> MultiTargetPoint:
        """The point `to_dict` described.

        Raises:
          ValueError: for another kind, a missing or unknown key, offsets that
            are not `num_classes` finite numbers, or targets out of range
            (`ArgumentError` naming the field).
        """
        payload = dict(payload)
        kind = payload.pop("kind", None)
        if kind != KIND:
            raise ValueError(f"Not a multi-target operating point: kind {kind!r}.")
        num_classes = check_integer(payload.get("num_classes"), "num_classes", minimum=2)
        try:
            offsets = tuple(float(o) for o in payload["class_offsets"])
            targets = tuple(TargetResult.from_dict(t) for t in payload["targets"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"class_offsets and targets must be lists: {error!r}") from error
        if len(offsets) != num_classes or not np.all(np.isfinite(offsets)):
            raise ArgumentError("class_offsets", payload["class_offsets"],
                                f"must be {num_classes} finite numbers")
        classes = [target.target_class for target in targets]
        bad = [c for c in classes
               if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes]
        if not targets or bad or len(set(classes)) != len(classes):
            raise ArgumentError("targets", classes, f"must name distinct classes in [0, {num_classes})")
        for target in targets:
            check_number(target.target_recall, "target_recall", minimum=0, maximum=1, exclusive_minimum=True)
        if payload.get("class_prior") is not None:
            payload["class_prior"] = tuple(float(p) for p in payload["class_prior"])
        check_choice(payload.get("estimator", "harrell_davis"), "estimator", ESTIMATORS)
        check_choice(payload.get("bound", "exact"), "bound", BOUNDS)
        payload.update(class_offsets=offsets, targets=targets)
        try:
            return cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error


def describe_conflict(point: MultiTargetPoint, class_names: Sequence[str] | None = None) -> str | None:
    """One sentence: which targets the point cannot meet together, what each reaches; None when all are met.

    Args:
      point: A multi-target point.
      class_names: Names indexed by class (None: indices only).
    """
    if point.feasible:
        return None

    def name(k: int) -> str:
        return f"class {k}" + (f" ({class_names[k]})" if class_names and k < len(class_names) else "")

    missed = [t for t in point.targets if not t.feasible]
    met = [t for t in point.targets if t.feasible]
    at = "" if point.confidence == 0.5 else f" at confidence {point.confidence:g}"
    sentence = (f"The recall targets cannot all be met together on the choosing data{at}: "
                + "; ".join(f"{name(t.target_class)} cannot reach recall {t.target_recall:g} (it reaches "
                            f"{t.validation_recall:.3f}, served for {t.served_recall:.3f})" for t in missed)
                + f". Served: every target at {point.common_fraction:.3f} of its recall, the largest "
                  f"common fraction that can be met")
    if met:
        sentence += ", and " + ", ".join(f"{name(t.target_class)} at its full {t.target_recall:g} "
                                         f"(reaches {t.validation_recall:.3f})" for t in met)
    return sentence + "."


@dataclasses.dataclass
class _Solve:
    offsets: np.ndarray
    converged: bool
    sweeps: int


class _Problem:
    """The choosing data and the cut-off rule, with the coordinate update and the joint solve."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, classes: Sequence[int], weights: np.ndarray,
                 *, confidence: float, estimator: str, bound: str, max_sweeps: int, tolerance: float):
        self.logits, self.labels, self.classes, self.weights = logits, labels, list(classes), weights
        self.confidence, self.estimator, self.bound = confidence, estimator, bound
        self.max_sweeps = max_sweeps
        self.positive = [labels == t for t in classes]
        self.positives = [int(p.sum()) for p in self.positive]
        self._positive_logits = [logits[p] for p in self.positive]
        # The logit range: every fixed point that exists has one with all offsets in [-span, 2 span].
        self.span = float(np.max(logits.max(axis=1) - logits.min(axis=1))) + 1.0
        self.tolerance = tolerance * self.span
        self._weights_cache: dict[tuple[int, float], np.ndarray] = {}
        self._rules: dict[tuple[int, float], tuple[str, bool]] = {}

    def rule(self, i: int, recall: float) -> tuple[str, bool]:
        """`(cutoffs rule, confidence_met)` of target i at `recall` (`target_recall.cutoff_rule`)."""
        key = (self.positives[i], recall)
        if key not in self._rules:
            self._rules[key] = cutoff_rule(self.positives[i], recall, self.confidence, self.estimator,
                                           self.bound)
        return self._rules[key]

    def ranked(self, offsets: np.ndarray, i: int) -> RankedScores:
        """Target i's scores (its logit minus the best other adjusted logit: `target_scores`), ranked."""
        t = self.classes[i]
        others = self.logits + offsets
        others[:, t] = -np.inf
        scores = self.logits[:, t] - others.max(axis=1)
        # `RankedScores.of` without its stable sort: the rules see ties only as groups, in any order.
        order = np.argsort(-scores)
        return RankedScores(scores[order], self.positive[i][order], self.weights[order], self.labels[order])

    def required_offset(self, offsets: np.ndarray, i: int, recall: float) -> float:
        """The offset target i needs for `recall` given the others' offsets: `TargetRecallPoint`'s rule."""
        rule, _ = self.rule(i, recall)
        if rule == "harrell_davis":  # needs only the class's own scores: the same figure, faster
            t = self.classes[i]
            others = self._positive_logits[i] + offsets
            others[:, t] = -np.inf
            scores = self._positive_logits[i][:, t] - others.max(axis=1)
            key = (self.positives[i], recall)
            if key not in self._weights_cache:
                self._weights_cache[key] = harrell_davis_weights(self.positives[i], 1.0 - recall)
            return -float(self._weights_cache[key] @ np.sort(scores))
        ranked = self.ranked(offsets, i)
        cutoff = choose_cutoffs(ranked, np.ones((1, len(ranked.scores))), rule, recall, self.confidence,
                                self.bound)
        return -float(cutoff[0])

    def solve(self, recalls: Sequence[float], start: np.ndarray | None = None) -> _Solve:
        """Gauss-Seidel from below to the smallest offsets meeting every recall, or proof there are none.

        Starting below every fixed point (each target at -span, or `start`:
        the solution for recalls no larger), each sweep raises each target's
        offset to what its recall needs given the others'. The update is
        monotone (a larger offset of another class lowers this class's
        scores), so the offsets rise to the least fixed point, the
        componentwise smallest offsets that meet every recall, when one
        exists. Above a logit range (`span`) of every target's offset, the
        other classes never win and a common shift of the offsets changes
        nothing but their level: the least fixed point, if there is one,
        has an offset at most `span` and all within `span` of each other.
        So once every offset passes `span`, or one passes `2 span`, there
        is none.
        """
        offsets = np.zeros(self.logits.shape[1], np.float64)
        offsets[self.classes] = -self.span
        if start is not None:
            if len(self.classes) == self.logits.shape[1]:  # every class a target: only differences count
                start = start - (start[self.classes].min() + self.span)
            offsets = np.maximum(offsets, start)
        for sweep in range(1, self.max_sweeps + 1):
            change = 0.0
            for i, t in enumerate(self.classes):
                new = max(offsets[t], self.required_offset(offsets, i, recalls[i]))
                change, offsets[t] = max(change, new - offsets[t]), new
            if offsets[self.classes].min() > self.span or offsets[self.classes].max() > 2.0 * self.span:
                return _Solve(offsets, False, sweep)
            if change <= self.tolerance:
                return _Solve(offsets, True, sweep)
        return _Solve(offsets, False, self.max_sweeps)

    def meets(self, offsets: np.ndarray, i: int, recall: float) -> bool:
        return offsets[self.classes[i]] >= self.required_offset(offsets, i, recall) - 2.0 * self.tolerance


def _check_targets(target_classes: Any, target_recalls: Any, num_classes: int,
                   labels: np.ndarray) -> tuple[list[int], list[float]]:
    try:
        classes, recalls = list(target_classes), list(target_recalls)
    except TypeError:
        raise ArgumentError("target_classes", target_classes, "must be a sequence of class indices") from None
    if not classes or len(classes) != len(recalls):
        raise ArgumentError("target_recalls", recalls, f"must give one recall per target class "
                                                       f"({len(classes)} target_classes: {classes})")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, (int, np.integer))
           or not 0 <= c < num_classes]
    if bad:
        raise ArgumentError("target_classes", bad, f"must be class indices in [0, {num_classes})")
    duplicates = sorted({int(c) for c in classes if classes.count(c) > 1})
    if duplicates:
        raise ArgumentError("target_classes", duplicates, "must name each class once")
    bad = [r for r in recalls if isinstance(r, bool) or not isinstance(r, (int, float, np.floating))
           or not 0.0 < r <= 1.0]
    if bad:
        raise ArgumentError("target_recalls", bad, "must be numbers in (0, 1]")
    absent = [int(c) for c in classes if not np.any(labels == c)]
    if absent:
        raise ArgumentError("target_classes", absent, "must have examples in the calibration data")
    return [int(c) for c in classes], [float(r) for r in recalls]


def _compromise(problem: _Problem, recalls: list[float]) -> tuple[list[float], _Solve, float]:
    """`(served recalls, their solve, common fraction)` when the recalls cannot all be met.

    Max-min of recall over target: bisection on the largest fraction of every
    target that can be met together (meeting a smaller fraction is always
    easier), then each target that reaches its full recall alongside the
    others' fractions is raised to it, in the order asked. No target is given
    up for another by its place in the list. Without any feasible fraction
    (found to 2 ** -10) the plain argmax's zero offsets are served.
    """
    low, high, best = 0.0, 1.0, None
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        # A smaller fraction's solution lies below this one's: the sweeps start there.
        solved = problem.solve([middle * r for r in recalls], None if best is None else best.offsets)
        if solved.converged:
            low, best = middle, solved
        else:
            high = middle
    if best is None:
        zeros = np.zeros(problem.logits.shape[1], np.float64)
        return [0.0] * len(recalls), _Solve(zeros, False, 0), 0.0
    served = [low * r for r in recalls]
    for i, recall in enumerate(recalls):
        trial = served.copy()
        trial[i] = recall
        solved = problem.solve(trial, best.offsets)
        if solved.converged:
            served, best = trial, solved
    return served, best, low


def choose_multi_target_offsets(logits: np.ndarray, labels: np.ndarray, *, target_classes: Sequence[int],
                                target_recalls: Sequence[float],
                                class_prior: Sequence[float] | None = None, confidence: float = 0.9,
                                estimator: str = "harrell_davis", bound: str = "exact",
                                interval_level: float | None = 0.9, max_sweeps: int = 100,
                                tolerance: float = 1e-7) -> MultiTargetPoint:
    """Chooses, on held-out logits, per-class offsets that give each target class its recall.

    The rule is `argmax(logits + offsets)` with offsets on the target classes
    only. For each target, given the other offsets, the offset it needs is
    exactly `choose_operating_point(..., method='logit_offset')`'s on the
    logits plus those offsets: the same cut-off rule (`confidence`,
    `estimator`, `bound`: the Harrell-Davis quantile, the exact bound, or
    the fallback when the class has too few examples). Coordinate sweeps
    from below (`_Problem.solve`) reach the componentwise smallest offsets
    that meet every target together: each target class is predicted as
    rarely as its recall allows, and every other class keeps as many of its
    examples as it can (their recall, and so the balanced accuracy, is the
    highest any offsets meeting the targets give; the targets' precision the
    best their recalls leave). With one target the offset is
    `TargetRecallPoint`'s logit offset (the CLI serves a single target as
    that point, which may also choose a threshold).

    When the targets conflict (raising one class's offset takes the other
    target's positives, so both cannot hold), the sweeps diverge and the
    point says so: `feasible=False`, each target's `feasible`, and
    `message`, the sentence of `describe_conflict` (also warned). It then
    serves the max-min compromise (`COMPROMISE`): every target at the
    largest common fraction of its recall that can be met together, then
    each target that can reach its full recall alongside raised to it; a
    target's place in the list gives it no priority.

    Args:
      logits: `[N, K]` held-out logits (never the reporting data's).
      labels: `[N]` their labels; each target class must have examples.
      target_classes: Distinct class indices, two or more for a joint choice.
      target_recalls: One recall in (0, 1] per target class.
      class_prior: Prior to measure precision under (None: the data's).
      confidence: In [0.5, 1), as in `choose_operating_point`.
      estimator: `'harrell_davis'` or `'empirical'`, as there.
      bound: `'exact'` or `'wilson'`, as there.
      interval_level: Two-sided level of each target's exact binomial
        intervals (None: none).
      max_sweeps: Most coordinate sweeps per solve (>= 1); a solve that has
        not converged by then counts as infeasible.
      tolerance: Convergence, as a fraction of the logit range (> 0).

    Raises:
      ValueError: naming the argument that is malformed or out of range
        (`trainer.checks.ArgumentError` for a bad argument value).
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    num_classes = logits.shape[1]
    classes, recalls = _check_targets(target_classes, target_recalls, num_classes, labels)
    confidence = check_number(confidence, "confidence", minimum=0.5, maximum=1, exclusive_maximum=True)
    check_choice(estimator, "estimator", ESTIMATORS)
    check_choice(bound, "bound", BOUNDS)
    if interval_level is not None:
        interval_level = check_number(interval_level, "interval_level", minimum=0, maximum=1,
                                      exclusive_minimum=True, exclusive_maximum=True)
    max_sweeps = check_integer(max_sweeps, "max_sweeps", minimum=1)
    tolerance = check_number(tolerance, "tolerance", minimum=0, exclusive_minimum=True)
    weights = example_weights(labels, num_classes, class_prior)
    problem = _Problem(logits, labels, classes, weights, confidence=confidence, estimator=estimator,
                       bound=bound, max_sweeps=max_sweeps, tolerance=tolerance)
    few = [(t, n) for t, n, r in zip(classes, problem.positives, recalls)
           if not problem.rule(classes.index(t), r)[1]]
    if few:
        warnings.warn("Too few examples to show the target recall at confidence "
                      f"{confidence} ({bound} bound) for " + ", ".join(f"class {t} ({n} examples)"
                                                                       for t, n in few)
                      + "; their cut-offs use the point estimate (confidence_met=False).", stacklevel=2)
    solved = problem.solve(recalls)
    served, fraction = recalls, 1.0
    if not solved.converged:
        served, solved, fraction = _compromise(problem, recalls)
    offsets = solved.offsets
    decided = np.argmax(logits + offsets, axis=1)
    targets = []
    for i, (t, recall) in enumerate(zip(classes, recalls)):
        ranked = problem.ranked(offsets, i)
        cutoff = -offsets[t]
        got_recall, got_precision = (float(v[0]) for v in evaluate_cutoffs(ranked, np.array([cutoff])))
        intervals = (None, None) if interval_level is None else binomial_intervals(ranked, cutoff,
                                                                                   interval_level)
        n = problem.positives[i]
        targets.append(TargetResult(
            target_class=t, target_recall=recall, offset=float(offsets[t]),
            feasible=bool(solved.converged and problem.meets(offsets, i, recall)),
            served_recall=float(served[i]), validation_recall=got_recall,
            validation_precision=got_precision, positives=n,
            confidence_met=bool(problem.rule(i, recall)[1]),
            shown_confidence=shown_confidence(round(got_recall * n), n, recall, bound),
            recall_interval=intervals[0], precision_interval=intervals[1]))
    present = np.bincount(labels, minlength=num_classes) > 0

    def balanced(predictions: np.ndarray) -> float:
        hits = np.bincount(labels[predictions == labels], minlength=num_classes)
        return float(np.mean(hits[present] / np.bincount(labels, minlength=num_classes)[present]))

    point = MultiTargetPoint(
        class_offsets=tuple(float(o) for o in offsets), num_classes=num_classes, targets=tuple(targets),
        feasible=all(target.feasible for target in targets), common_fraction=float(fraction), message=None,
        validation_balanced_accuracy=balanced(decided),
        argmax_validation_balanced_accuracy=balanced(logits.argmax(axis=1)), confidence=confidence,
        estimator=estimator, bound=bound,
        class_prior=None if class_prior is None else tuple(float(p) for p in class_prior),
        interval_level=interval_level, sweeps=int(solved.sweeps))
    message = describe_conflict(point)
    if message is not None:
        warnings.warn(message, stacklevel=2)
        point = dataclasses.replace(point, message=message)
    return point
