"""The automatic `--decision_folds`: cross-fit when the validation split cannot show the target recall.

`choose_decision_folds` resolves the flag from the recall settings and the validation split's counts;
`resolve_decision_model` the model that serves a cross-fitted point (`--decision_model`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from trainer.cli.errors import UsageError
from trainer.decisions.cutoffs import can_show_recall, shown_confidence

# The folds the automatic --decision_folds turns on.
AUTOMATIC_DECISION_FOLDS = 5
# The confidence at which the validation split must be able to show the target recall, or the
# automatic --decision_folds cross-fits (independent of --decision_confidence, which sets how the
# cut-off is placed: a split too small to show the target is too small to place it well).
SHOWABLE_CONFIDENCE = 0.9
# The model that serves a cross-fitted operating point when --decision_model is not given. Measured
# (scripts/bench_decision_transfer.py, README "Rare-class decisions"): on hundreds of new positives
# per case the folds' ensemble and the refit served the same recall and precision (a tie), so the
# default is the refit: one model per prediction instead of K, and the export it always was.
DEFAULT_DECISION_MODEL = "refit"


@dataclasses.dataclass(frozen=True)
class DecisionFolds:
    """The resolved `--decision_folds` and why.

    Attributes:
      folds: 0 (choose on the held-out split) or K >= 2 (on out-of-fold logits).
      automatic: Whether the flag was left to its default.
      reason: One sentence for the log and metrics.json.
    """

    folds: int
    automatic: bool
    reason: str


def choose_decision_folds(recall: Any,
                          held_out_class_counts: Optional[Sequence[int]]) -> DecisionFolds:
    """Resolves `--decision_folds`: as given, or automatic.

    Automatic: `AUTOMATIC_DECISION_FOLDS` for a target-recall calibration whose
    held-out split cannot show the target, i.e. when even catching all `n` of
    its target-class examples gives a one-sided lower confidence bound below
    `--target_recall` at `SHOWABLE_CONFIDENCE` (the exact bound,
    `trainer.decisions.cutoffs.can_show_recall`: exact, so `t ** n > 1 -
    confidence`; 0.9 at 0.9 needs 22 examples; with several targets, when
    any one of them cannot be shown); otherwise off (also for worst-class
    offsets and without a calibration).

    Args:
      recall: The recall settings (`trainer.cli.config.RecallConfig`; `decision_folds` None for
        automatic).
      held_out_class_counts: Examples per class of the held-out split, or None.
    """
    given = recall.decision_folds
    if given is not None:
        if not recall.calibrate:
            return DecisionFolds(0, False, "no operating point is calibrated")
        if given == 0:
            return DecisionFolds(0, False, "--decision_folds=0: the held-out split chooses")
        return DecisionFolds(given, False, f"--decision_folds={given} given")
    if not recall.calibrate:
        return DecisionFolds(0, True, "no operating point is calibrated")
    if recall.calibration_kind not in ("target_recall", "multi_target"):
        return DecisionFolds(0, True, "automatic cross-fitting is for --target_recall only; the "
                                      "held-out split chooses the worst-class offsets (pass "
                                      "--decision_folds=K to cross-fit them)")
    if held_out_class_counts is None:
        return DecisionFolds(0, True, "the held-out class counts are unknown")
    facts, short = [], False
    for k, target in recall.targets:  # several targets: cross-fit when any one cannot be shown
        n = int(held_out_class_counts[k]) if k < len(held_out_class_counts) else 0
        shown = shown_confidence(n, n, target) if n else 0.0
        facts.append(f"the held-out split has {n} example(s) of class {k}: catching all of them shows "
                     f"recall >= {target:g} at {shown:.1%} confidence")
        short = short or n == 0 or not can_show_recall(n, target, SHOWABLE_CONFIDENCE)
    facts = "; ".join(facts)
    if short:
        return DecisionFolds(AUTOMATIC_DECISION_FOLDS, True,
                             f"{facts}, below {SHOWABLE_CONFIDENCE:.0%}: "
                             f"cross-fitting with {AUTOMATIC_DECISION_FOLDS} folds (--decision_folds=0 "
                             f"turns it off)")
    return DecisionFolds(0, True, f"{facts}, enough for {SHOWABLE_CONFIDENCE:.0%}: no "
                                  f"cross-fitting (--decision_folds=K turns it on)")


def resolve_decision_model(given: Optional[str], folds: DecisionFolds) -> str:
    """`--decision_model` resolved: 'ensemble' (the fold models' mean logits) or 'refit'.

    Without cross-fitting only the refit (the model trained on all the
    training rows) exists; asking for the ensemble then is an error.

    Raises:
      UsageError: `--decision_model=ensemble` on a run that does not cross-fit.
    """
    if not folds.folds:
        if given == "ensemble":
            raise UsageError(f"--decision_model=ensemble serves the fold models of a cross-fit, and this "
                             f"run does not cross-fit ({folds.reason}); give --decision_folds=K, or "
                             f"drop --decision_model.")
        return "refit"
    return given or DEFAULT_DECISION_MODEL
