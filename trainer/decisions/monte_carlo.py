"""Monte Carlo study of the target-recall cut-off on few positives: coverage and precision on new data.

Run `python -m trainer.decisions.monte_carlo` for the table (Gaussian scores, exact population figures).
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.checks import check_integer, check_number
from trainer.decisions.multi_target import choose_multi_target_offsets
from trainer.decisions.target_recall import choose_operating_point

# (estimator, bound, confidence) compared: the rule before the options existed (empirical, Wilson), the
# new default (Harrell-Davis, exact), each change alone, and both point estimates (confidence 0.5).
DEFAULT_VARIANTS = (("empirical", "wilson", 0.9), ("harrell_davis", "exact", 0.9),
                    ("empirical", "exact", 0.9), ("harrell_davis", "wilson", 0.9),
                    ("empirical", "wilson", 0.5), ("harrell_davis", "exact", 0.5))


def _normal_tail(x: float) -> float:
    """P(Z >= x) for a standard normal Z."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def _population(separation: float, contamination: float, prevalence: float):
    """`recall(c)` and `precision(c)` of the cut-off `c` on the scores' population, exactly."""
    def recall(cutoff: float) -> float:
        return ((1.0 - contamination) * _normal_tail(cutoff - separation)
                + contamination * _normal_tail(cutoff))

    def precision(cutoff: float) -> float:
        caught = prevalence * recall(cutoff)
        false_alarms = (1.0 - prevalence) * _normal_tail(cutoff)
        return caught / (caught + false_alarms) if caught + false_alarms > 0 else 0.0

    return recall, precision


def _oracle_cutoff(recall, target_recall: float) -> float:
    """The cut-off whose population recall is exactly `target_recall` (bisection; recall decreases)."""
    low, high = -50.0, 50.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if recall(middle) >= target_recall else (low, middle)
    return low


def small_sample_study(positives: Sequence[int] = (12, 16, 30, 60), *, target_recall: float = 0.9,
                       trials: int = 1000, negatives_per_positive: int = 24, separation: float = 3.0,
                       contamination: float = 0.0, seed: int = 0,
                       variants: Sequence[tuple[str, str, float]] = DEFAULT_VARIANTS) -> list[dict[str, Any]]:
    """How the chosen cut-off does on new data, by number of calibration positives and rule.

    Each trial draws calibration scores: `n` positives from N(separation, 1)
    (a fraction `contamination` of them from the negatives' N(0, 1) instead:
    positives that look like negatives, the left tail real data have) and
    `negatives_per_positive * n` negatives from N(0, 1); every variant
    (`choose_operating_point(..., method='threshold', estimator=...,
    bound=..., confidence=...)` on the logits `[0, score]`) chooses a cut-off on the
    same draw, and its recall and precision on the population are computed
    exactly from the normal CDF (no test sample). The oracle is the
    population cut-off whose recall is exactly `target_recall`.

    Args:
      positives: Numbers of calibration positives to study.
      target_recall: The recall asked for, in (0, 1).
      trials: Calibration draws per number of positives.
      negatives_per_positive: Class ratio (prevalence 1 / (1 + this)).
      separation: Mean positive score, in negative standard deviations.
      contamination: Share of positives drawn from the negatives' distribution.
      seed: Of the draws.
      variants: `(estimator, bound, confidence)` triples to compare.

    Returns:
      One row per (positives, variant): `positives`, `estimator`, `bound`,
      `confidence`, `share_confidence_met` (trials where the bound chose),
      `coverage_085` and `coverage_090` (share of trials whose new-data
      recall is >= 0.85 / >= 0.9), `mean_recall`, `mean_precision`,
      `oracle_precision`, `precision_ratio` (mean precision / oracle's) and
      `median_precision_ratio`.
    """
    trials = check_integer(trials, "trials", minimum=1)
    target_recall = check_number(target_recall, "target_recall", minimum=0, maximum=1,
                                 exclusive_minimum=True, exclusive_maximum=True)
    contamination = check_number(contamination, "contamination", minimum=0, maximum=1,
                                 exclusive_maximum=True)
    prevalence = 1.0 / (1.0 + negatives_per_positive)
    recall_of, precision_of = _population(separation, contamination, prevalence)
    oracle_precision = precision_of(_oracle_cutoff(recall_of, target_recall))
    rng = np.random.default_rng(seed)
    rows = []
    for n in positives:
        n = check_integer(n, "positives", minimum=1)
        figures = {variant: [] for variant in variants}
        for _ in range(trials):
            from_negatives = rng.random(n) < contamination
            scores = np.r_[rng.normal(size=n) + np.where(from_negatives, 0.0, separation),
                           rng.normal(size=n * negatives_per_positive)]
            labels = np.r_[np.ones(n, np.int64), np.zeros(n * negatives_per_positive, np.int64)]
            logits = np.c_[np.zeros_like(scores), scores]
            for estimator, bound, confidence in variants:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # the too-few warning: counted below
                    point = choose_operating_point(
                        logits, labels, target_class=1, target_recall=target_recall, method="threshold",
                        confidence=confidence, estimator=estimator, bound=bound, interval_level=None)
                cutoff = -point.offset
                figures[(estimator, bound, confidence)].append(
                    (recall_of(cutoff), precision_of(cutoff), bool(point.confidence_met)))
        for (estimator, bound, confidence), values in figures.items():
            recall, precision, met = (np.array(column) for column in zip(*values))
            rows.append({
                "positives": n, "estimator": estimator, "bound": bound, "confidence": confidence,
                "share_confidence_met": float(met.mean()),
                "coverage_085": float(np.mean(recall >= 0.85)),
                "coverage_090": float(np.mean(recall >= 0.9)),
                "mean_recall": float(recall.mean()), "mean_precision": float(precision.mean()),
                "oracle_precision": float(oracle_precision),
                "precision_ratio": float(precision.mean() / oracle_precision),
                "median_precision_ratio": float(np.median(precision) / oracle_precision),
            })
    return rows


def interval_coverage_study(positives: Sequence[int] = (12, 16, 30, 60, 200), *, target_recall: float = 0.9,
                            level: float = 0.9, trials: int = 300, negatives_per_positive: int = 24,
                            separation: float = 3.0, resamples: int = 300, seed: int = 1,
                            methods: Sequence[str] = ("binomial", "bootstrap")) -> list[dict[str, Any]]:
    """How often the point's intervals hold the recall and precision its cut-off has on the population.

    Draws as in `small_sample_study` (no contamination); the default choice
    (`choose_operating_point` with `method='threshold'`) on each draw, with
    each interval method; the truth is the chosen cut-off's exact
    population recall and precision.

    Returns:
      One row per (positives, method): `positives`, `method`, `level`,
      `recall_coverage`, `precision_coverage` (share of trials whose
      interval holds the truth), `recall_width`, `precision_width` (mean).
    """
    trials = check_integer(trials, "trials", minimum=1)
    prevalence = 1.0 / (1.0 + negatives_per_positive)
    recall_of, precision_of = _population(separation, 0.0, prevalence)
    rng = np.random.default_rng(seed)
    rows = []
    for n in positives:
        n = check_integer(n, "positives", minimum=1)
        figures = {method: [] for method in methods}
        for _ in range(trials):
            scores = np.r_[rng.normal(size=n) + separation, rng.normal(size=n * negatives_per_positive)]
            labels = np.r_[np.ones(n, np.int64), np.zeros(n * negatives_per_positive, np.int64)]
            logits = np.c_[np.zeros_like(scores), scores]
            for method in methods:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    point = choose_operating_point(
                        logits, labels, target_class=1, target_recall=target_recall, method="threshold",
                        interval_level=level, interval_method=method, bootstrap_resamples=resamples)
                recall, precision = recall_of(-point.offset), precision_of(-point.offset)
                (recall_low, recall_high), (precision_low, precision_high) = (
                    point.recall_interval, point.precision_interval)
                figures[method].append((recall_low <= recall <= recall_high,
                                        precision_low <= precision <= precision_high,
                                        recall_high - recall_low, precision_high - precision_low))
        for method, values in figures.items():
            recall_in, precision_in, recall_width, precision_width = (np.array(c) for c in zip(*values))
            rows.append({"positives": n, "method": method, "level": level,
                         "recall_coverage": float(recall_in.mean()),
                         "precision_coverage": float(precision_in.mean()),
                         "recall_width": float(recall_width.mean()),
                         "precision_width": float(precision_width.mean())})
    return rows


def multi_target_study(*, draws: int = 100, confidences: Sequence[float] = (0.9, 0.5),
                       target_recalls: Sequence[float] = (0.9, 0.8), positives: int = 60,
                       fresh_per_class: int = 20_000, seed: int = 5) -> list[dict[str, Any]]:
    """How often two conflicting targets both hold on fresh data: joint offsets against separate ones.

    Four classes with Gaussian logits (unit noise, class c's mean 3 on logit
    c); the targets are classes 2 and 3, and class 3's mean leans towards
    class 2 (0.8 and 0.4 of 3 on logits 3 and 2), so raising either offset
    takes the other's examples. Each draw chooses on `positives` examples of
    each target class and 150 of each other class, once with
    `choose_multi_target_offsets` and once with two separate
    `choose_operating_point(method='logit_offset')` offsets added together;
    recall is counted on `fresh_per_class` fresh examples per class.

    Returns:
      One row per confidence: `confidence`, `joint_both` / `separate_both`
      (share of draws where both targets hold), `joint_each` /
      `separate_each` (per target), `joint_median` / `separate_median` (the
      median fresh recall per target), `joint_feasible` (share of draws the
      joint choice found feasible on its own data).
    """
    draws = check_integer(draws, "draws", minimum=1)
    k = 4
    means = 3.0 * np.eye(k)
    means[3] = 3.0 * (0.8 * np.eye(k)[3] + 0.4 * np.eye(k)[2])
    targets, recalls = [2, 3], [float(r) for r in target_recalls]
    rng = np.random.default_rng(seed)

    def sample(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(k), counts)
        return rng.normal(size=(len(labels), k)) + means[labels], labels

    fresh, fresh_labels = sample([fresh_per_class] * k)

    def fresh_recalls(offsets: np.ndarray) -> list[float]:
        decided = np.argmax(fresh + offsets, axis=1)
        return [float(np.mean(decided[fresh_labels == c] == c)) for c in targets]

    rows = []
    for confidence in confidences:
        joint, separate, feasible = [], [], []
        for _ in range(draws):
            logits, labels = sample([150, 150, positives, positives])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # too few examples, conflicts: counted here
                point = choose_multi_target_offsets(logits, labels, target_classes=targets,
                                                    target_recalls=recalls, confidence=confidence,
                                                    interval_level=None)
                offsets = np.zeros(k)
                for c, recall in zip(targets, recalls):
                    offsets[c] = choose_operating_point(
                        logits, labels, target_class=c, target_recall=recall, method="logit_offset",
                        confidence=confidence, interval_level=None).offset
            joint.append(fresh_recalls(point.offsets()))
            separate.append(fresh_recalls(offsets))
            feasible.append(point.feasible)
        joint, separate = np.array(joint), np.array(separate)
        rows.append({"confidence": confidence, "joint_feasible": float(np.mean(feasible)),
                     **{f"{name}_both": float(np.mean(np.all(values >= recalls, axis=1)))
                        for name, values in (("joint", joint), ("separate", separate))},
                     **{f"{name}_each": [float(v) for v in np.mean(values >= recalls, axis=0)]
                        for name, values in (("joint", joint), ("separate", separate))},
                     **{f"{name}_median": [float(v) for v in np.median(values, axis=0)]
                        for name, values in (("joint", joint), ("separate", separate))}})
    return rows


def multi_target_table(rows: Sequence[dict[str, Any]]) -> str:
    """The multi-target study's rows as a Markdown table."""
    lines = ["| confidence | both targets hold: joint | separate | each (joint) | each (separate) | "
             "median recall (joint) | median recall (separate) | joint feasible on its data |",
             "|---:|---:|---:|---|---|---|---|---:|"]

    def pair(values: Sequence[float]) -> str:
        return " / ".join(f"{v:.3f}" for v in values)

    for row in rows:
        lines.append(f"| {row['confidence']:g} | {row['joint_both']:.2f} | {row['separate_both']:.2f} | "
                     f"{pair(row['joint_each'])} | {pair(row['separate_each'])} | "
                     f"{pair(row['joint_median'])} | {pair(row['separate_median'])} | "
                     f"{row['joint_feasible']:.2f} |")
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The study's rows as a Markdown table."""
    lines = ["| positives | estimator | bound | confidence | bound chose | recall >= 0.85 | recall >= 0.9 | "
             "mean recall | mean precision / oracle | median precision / oracle |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['positives']} | {row['estimator']} | {row['bound']} | {row['confidence']:g} | "
            f"{row['share_confidence_met']:.2f} | {row['coverage_085']:.3f} | {row['coverage_090']:.3f} | "
            f"{row['mean_recall']:.3f} | {row['precision_ratio']:.3f} | "
            f"{row['median_precision_ratio']:.3f} |")
    return "\n".join(lines)


def interval_table(rows: Sequence[dict[str, Any]]) -> str:
    """The interval study's rows as a Markdown table."""
    lines = ["| positives | interval | level | recall coverage | precision coverage | recall width | "
             "precision width |", "|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['positives']} | {row['method']} | {row['level']:g} | "
                     f"{row['recall_coverage']:.3f} | {row['precision_coverage']:.3f} | "
                     f"{row['recall_width']:.3f} | {row['precision_width']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the study's table (flags: see `--help`)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--intervals", action="store_true",
                        help="the interval coverage study instead of the cut-off study")
    parser.add_argument("--multi_target", action="store_true",
                        help="two conflicting targets (0.9, 0.8): joint offsets against separate ones")
    parser.add_argument("--positives", default=None, help="default 12,16,30,60 (intervals: 12,16,30,60,200)")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--target_recall", type=float, default=0.9)
    parser.add_argument("--separation", type=float, default=3.0)
    parser.add_argument("--contamination", type=float, default=0.0)
    parser.add_argument("--negatives_per_positive", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.multi_target:
        trials = args.trials if args.trials != 1000 else 100
        print(f"Two targets (recall 0.9 and 0.8), 60 examples of each to choose on, {trials} draws, "
              f"seed 5")
        print(multi_target_table(multi_target_study(draws=trials)))
        return
    if args.intervals:
        positives = [int(n) for n in (args.positives or "12,16,30,60,200").split(",")]
        rows = interval_coverage_study(positives, trials=args.trials, target_recall=args.target_recall,
                                       separation=args.separation,
                                       negatives_per_positive=args.negatives_per_positive, seed=args.seed)
        print(f"Interval coverage (separation {args.separation}, {args.negatives_per_positive} negatives "
              f"per positive, {args.trials} trials, seed {args.seed})")
        print(interval_table(rows))
        return
    positives = [int(n) for n in (args.positives or "12,16,30,60").split(",")]
    rows = small_sample_study(positives, trials=args.trials,
                              target_recall=args.target_recall, separation=args.separation,
                              contamination=args.contamination,
                              negatives_per_positive=args.negatives_per_positive, seed=args.seed)
    print(f"Oracle precision at recall {args.target_recall}: {rows[0]['oracle_precision']:.3f} "
          f"(separation {args.separation}, contamination {args.contamination}, "
          f"{args.negatives_per_positive} negatives per positive, {args.trials} trials, seed {args.seed})")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
