"""Recall-target control: class weights moved by measured recall on a held-out split.

`RecallTarget` is a `ReweightingRule` (per-class weights on dL/dlogits, kept in
variables); `RecallTargetController` is the callback that measures per-class
recall on held-out data and moves the weights by an exponentiated-gradient step
(after Narasimhan and Menon, NeurIPS 2021).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from losses.prior_warnings import loss_corrects_prior
from losses.rules import ClassWeights, ReweightingRule, inverse_frequency_weights, observed_class_counts
from trainer.decisions.quantiles import binomial_interval
from trainer.evaluation import EvaluationResult, ModelLogits
from trainer.metrics import count_confusion_matrix, per_class_metrics

MODES = ("target_class", "worst_class")
BASE_WEIGHTS = ("inverse_frequency", "uniform")
ADJUSTMENTS = ("weights", "margins")
DEADBANDS = ("binomial",)
# The deadband's default level: a two-sided 90% Clopper-Pearson interval. Measured by Monte
# Carlo on synthetic binomial measurements (issue 13, item 4; the `test_deadband_*` tests in
# tests/callbacks/test_recall_target.py check the effect), 15 held-out examples of the target
# class, target 0.9, 30 updates, 50 repetitions, step 1, smoothing 0.5, mean final
# |log multiplier|: at true recall 0.9 (pure noise) 0.340 without the deadband, 0.264 at level
# 0.5, 0.042 at 0.8, 0.000 at 0.9; at true recall 0.8 (a shortfall 15 examples can hardly show)
# 2.264 without, 1.632 at 0.9, 1.096 at 0.95; at true recall 0.6 every level reaches the cap
# (log 10) as without. With 50 examples: noise 0.193 vs 0.007, shortfall 0.8: 2.298 vs 2.292.
DEFAULT_DEADBAND_LEVEL = 0.9
# Defaults chosen on the held-out split of long-tailed Fashion-MNIST (README,
# "Recall targets"): the target-class weights reach the shirt target; for the
# worst class, margins at step 0.5 gave the best held-out smallest recall and
# balanced accuracy. A margin step moves a decision boundary directly (in
# logit units), hence the smaller step.
DEFAULT_ADJUST = {"target_class": "weights", "worst_class": "margins"}
DEFAULT_STEP_SIZE = {"weights": 1.0, "margins": 0.5}


def _check_positive(argument: str, value: float, upper: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise ValueError(f"{argument} must be a positive number{bound}, got {value!r}.")
    return float(value)


class RecallTarget(ClassWeights):
    """Class weights that a controller moves toward a recall target.

    The gradient of each example is scaled by `w[label]` (as `ClassWeights`).
    The weights are `w = normalise(c * q)`: `q` is a fixed base, `c` are
    multipliers the controller moves, and `normalise` makes the weights
    average 1 over the classes. Given `class_counts`, the base makes the
    starting point the balanced objective (each class counts equally):

    - with a plain loss (cross-entropy, focal, ...) and `class_counts`, `q`
      is the inverse class frequency;
    - with a loss that already corrects for the prior (`loss` a
      `LogitAdjustedCrossentropy` with tau > 0 or a
      `BalancedSoftmaxCrossentropy`), `q` is uniform: the margins
      `tau * log prior` already make the loss target the balanced error, so
      inverse-frequency weights on top would count the prior twice. The rule
      is then the weighted logit-adjusted loss of Narasimhan and Menon
      (NeurIPS 2021): margins from the prior, weights from the controller;
    - without `class_counts`, `q` is uniform (the plain, prior-weighted
      objective to start).

    At each update the controller passes the per-class recall measured on a
    held-out split. The rule smooths the miss rates `m_j = 1 - recall_j`
    with an exponential moving average (`smoothing`) and takes an
    exponentiated-gradient step of size `step_size`:

    - `mode='target_class'` (constraint `recall_t >= target_recall`): the
      Lagrange multiplier of the constraint,
      `c_t <- c_t * exp(step_size * (m_t - (1 - target_recall)))`; it grows
      while the recall is short of the target and shrinks (giving back
      precision) while it is above. The other multipliers stay 1.
    - `mode='worst_class'` (maximise the smallest recall): the multipliers
      are the dual weights of the min-max problem on the simplex,
      `c_j <- c_j * exp(step_size * m_j)`, renormalised to average 1.

    How the weights act (`adjust`):

    - `'weights'`: each example's gradient at the logits is scaled by
      `w[label]` (a cost-sensitive loss).
    - `'margins'`: the training loss sees the logits shifted by `-log w`
      (`logit_offsets`); the gradient is left alone. With softmax
      cross-entropy this is the logit-adjusted form of the same
      cost-sensitive objective (Narasimhan and Menon, NeurIPS 2021): its
      minimiser predicts `argmax_y w_y p(y|x)`, and it keeps moving the
      decision boundary once a network fits its training data, where
      weights lose their effect (a weight scales a loss that is already
      near 0). With a plain loss and `class_counts` the inverse-frequency
      base makes the offsets `log prior - log c`: the logit-adjusted loss
      plus the controller's multipliers.

    Deadband (`deadband='binomial'`, the default): a recall measured on `n`
    held-out examples is a binomial proportion, so on 15 examples a class at
    exactly the target recall 0.9 reads anywhere from about 0.73 to 1.0. The
    controller does not chase that noise: when `update` is given the
    held-out support `n_j` of each class, the smoothed recall
    `r_j = 1 - m_j` is read as `r_j * n_j` successes of `n_j` and its
    two-sided Clopper-Pearson interval at `deadband_level`
    (`trainer.decisions.quantiles.binomial_interval`) is taken:

    - `mode='target_class'`: outside the interval, the step is the one
      above. Inside it, the controller keeps stepping only while it is still
      approaching the target from the side of its last move (the error has
      the sign of that move); once the target is crossed, or from rest, the
      error is 0 (no move) and the class is settled until a measurement
      leaves the interval. Without this hysteresis a pure deadband stops as
      soon as the target enters the interval, i.e. at its far edge: on the
      tests' data (13-15 held-out positives, target 0.7) that served test
      recall 0.58/0.56/0.51 on three seeds vs 0.59/0.65/0.72 undamped; with
      it, 0.68/0.68/0.72. The sign of the last move lives in the variable
      `deadband_direction` (+1, -1, 0).
    - `mode='worst_class'`: the reference is the balanced miss rate (the
      mean of the measured `m_j`), and the same rule applies to each class's
      error `m_j - reference`: a class not moving steps by the reference
      instead of its own `m_j`, so after renormalisation it keeps its place.
      When every class is settled within noise of the mean, nothing moves.

    The interval uses the held-out support, not an effective sample size of
    the moving average: the held-out split is the same examples at every
    update, so averaging over updates adds no independent examples. A class
    with support 0 at an update (absent from the held-out data) does not
    move (and keeps its direction). Without supports (`update(recall)`
    with `support=None`, e.g. a controller reading `val_recall/<k>` from
    `model.fit` logs without `val_support/<k>`), the step is today's
    undamped one; `deadband=None` always uses it.

    Multipliers are kept in `[min_weight, max_weight]`, so no class weight
    collapses to 0 or explodes. All state (multipliers, smoothed miss rates,
    deadband directions, update count, the weights) lives in variables created by `build` inside
    the strategy scope: checkpointed with the rule and, being assigned in
    cross-replica context by the controller, identical on every replica.

    Args:
      target_class: The class whose recall must reach `target_recall`
        (`mode='target_class'`).
      target_recall: In (0, 1].
      mode: `'target_class'` (default when `target_class` is given) or
        `'worst_class'`.
      class_counts: Training examples per class; when given (and `loss`
        does not correct for the prior), the base weights are inverse class
        frequencies.
      step_size: Exponentiated-gradient step size (> 0); None: 1 with
        `adjust='weights'`, 0.5 with `'margins'`.
      smoothing: EMA factor of the measured miss rates, in [0, 1); 0 uses
        each measurement as it is.
      min_weight: Floor of the multipliers (> 0).
      max_weight: Cap of the multipliers (>= 1).
      loss: The training loss, or None. When it already corrects for the
        prior (`losses.loss_corrects_prior`), the base weights are uniform
        whatever `class_counts` says (and `warn_if_prior_counted_twice` has
        nothing to warn about).
      base_weights: `'inverse_frequency'` (needs `class_counts`) or
        `'uniform'` to choose the base explicitly; None (default) chooses as
        above from `class_counts` and `loss`. Choosing `'inverse_frequency'`
        with a prior-corrected loss counts the prior twice (and
        `warn_if_prior_counted_twice` says so).
      adjust: `'weights'` (scale the gradient) or `'margins'` (shift the
        logits inside the training loss by `-log w`); None: `'weights'` for
        `mode='target_class'`, `'margins'` for `'worst_class'`.
      deadband: `'binomial'` (default): no move while the target (or, in
        worst-class mode, the balanced recall) lies inside the sampling
        interval of the measured recall (see above); None: move on every
        measurement, as before.
      deadband_level: Two-sided level of the Clopper-Pearson interval, in
        (0, 1); default 0.9.
      name: Module name.

    Example:
      >>> rule = RecallTarget(target_class=6, target_recall=0.9,
      ...                     class_counts=bundle.train.class_counts)
      >>> trainer = Trainer(model=model, reweighting=rule,
      ...                   callbacks=[rule.controller(validation_data=held_out)])
      >>> # Weighted logit-adjusted loss: margins from the prior, uniform base.
      >>> loss = LogitAdjustedCrossentropy(bundle.train.class_counts)
      >>> rule = RecallTarget(mode='worst_class', class_counts=bundle.train.class_counts,
      ...                     loss=loss)
    """

    def __init__(self, target_class: Optional[int] = None, target_recall: Optional[float] = None,
                 *, mode: Optional[str] = None, class_counts: Optional[Sequence[float]] = None,
                 step_size: Optional[float] = None, smoothing: float = 0.5,
                 min_weight: float = 0.1, max_weight: float = 10.0, loss: Any = None,
                 base_weights: Optional[str] = None, adjust: Optional[str] = None,
                 deadband: Optional[str] = "binomial",
                 deadband_level: float = DEFAULT_DEADBAND_LEVEL, name: Optional[str] = None):
        ReweightingRule.__init__(self, name=name or "recall_target")
        mode = mode or ("target_class" if target_class is not None else None)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (or target_class given), "
                             f"got mode={mode!r}, target_class={target_class!r}.")
        if mode == "target_class":
            if isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)) \
                    or target_class < 0:
                raise ValueError(f"target_class must be a non-negative integer for "
                                 f"mode='target_class', got {target_class!r}.")
            target_recall = _check_positive("target_recall", target_recall, upper=1.0)
            target_class = int(target_class)
        elif target_class is not None or target_recall is not None:
            raise ValueError(f"mode='worst_class' raises the smallest recall and takes no "
                             f"target_class or target_recall (got {target_class!r}, {target_recall!r}).")
        if not (isinstance(smoothing, (int, float)) and 0.0 <= smoothing < 1.0):
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}.")
        if adjust is None:
            adjust = DEFAULT_ADJUST[mode]
        if adjust not in ADJUSTMENTS:
            raise ValueError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, got {adjust!r}.")
        self.adjust = adjust
        if deadband is not None and deadband not in DEADBANDS:
            raise ValueError(f"deadband must be one of {', '.join(DEADBANDS)} or None, "
                             f"got {deadband!r}.")
        if isinstance(deadband_level, bool) or not isinstance(deadband_level, (int, float, np.floating)) \
                or not 0.0 < deadband_level < 1.0:
            raise ValueError(f"deadband_level must be in (0, 1), got {deadband_level!r}.")
        self.deadband = deadband
        self.deadband_level = float(deadband_level)
        self.mode = mode
        self.target_class = target_class
        self.target_recall = target_recall
        self.class_counts = None if class_counts is None else observed_class_counts(class_counts)
        self._inverse_frequency: Optional[np.ndarray] = None
        self.step_size = _check_positive(
            "step_size", DEFAULT_STEP_SIZE[adjust] if step_size is None else step_size)
        self.smoothing = float(smoothing)
        self.min_weight = _check_positive("min_weight", min_weight, upper=1.0)
        self.max_weight = _check_positive("max_weight", max_weight)
        if self.max_weight < 1.0:
            raise ValueError(f"max_weight must be >= 1, got {max_weight!r}.")
        # The base weights: "inverse_frequency" or "uniform" (see the class docstring).
        if base_weights is None:
            base_weights = "inverse_frequency" \
                if class_counts is not None and not loss_corrects_prior(loss) else "uniform"
        if base_weights not in BASE_WEIGHTS:
            raise ValueError(f"base_weights must be one of {', '.join(BASE_WEIGHTS)} or None, "
                             f"got {base_weights!r}.")
        if base_weights == "inverse_frequency" and class_counts is None:
            raise ValueError("base_weights='inverse_frequency' needs class_counts.")
        self.base_weights = base_weights
        # Read by `warn_if_prior_counted_twice`: only an inverse-frequency base corrects the prior.
        self.prior_correction = "inverse_frequency" \
            if self.base_weights == "inverse_frequency" else None
        self.weights: Optional[tf.Variable] = None
        self.multipliers: Optional[tf.Variable] = None
        self.smoothed_miss_rate: Optional[tf.Variable] = None
        self.deadband_direction: Optional[tf.Variable] = None
        self.num_updates: Optional[tf.Variable] = None
        self.last_update_step: Optional[tf.Variable] = None

    # --------------------------------------------------------------- state

    def _base_weights(self, num_classes: int) -> np.ndarray:
        if self.class_counts is not None and self.class_counts.shape[0] != num_classes:
            raise ValueError(f"class_counts has {self.class_counts.shape[0]} values but there are "
                             f"{num_classes} classes.")
        if self.base_weights == "uniform":
            return np.ones(num_classes, np.float64)
        if self._inverse_frequency is None:
            # The losses' inverse frequency: absent classes pseudo-counted, tiny ones capped
            # (both with a warning naming the class); computed once, so it warns once.
            self._inverse_frequency = inverse_frequency_weights(self.class_counts)
        return np.asarray(self._inverse_frequency, np.float64)

    def _effective_weights(self, multipliers: np.ndarray) -> np.ndarray:
        weights = multipliers * self._base_weights(len(multipliers))
        return (weights * (len(weights) / weights.sum())).astype(np.float32)

    def build(self, num_classes: int) -> None:
        if self.mode == "target_class" and self.target_class >= num_classes:
            raise ValueError(f"target_class={self.target_class} is out of range for {num_classes} "
                             f"classes (valid: 0..{num_classes - 1}).")
        ones = np.ones(num_classes, np.float32)
        self._initial_weights = self._effective_weights(ones.astype(np.float64))
        ClassWeights.build(self, num_classes)
        self.multipliers = tf.Variable(ones, trainable=False, name="multipliers")
        self.smoothed_miss_rate = tf.Variable(np.full(num_classes, np.nan, np.float32),
                                              trainable=False, name="smoothed_miss_rate")
        self.deadband_direction = tf.Variable(np.zeros(num_classes, np.float32), trainable=False,
                                              name="deadband_direction")
        self.num_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_updates")
        self.last_update_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                            name="last_update_step")

    def __call__(self, labels, logits, grad_logits, context):
        if self.adjust == "margins":
            return grad_logits
        return ClassWeights.__call__(self, labels, logits, grad_logits, context)

    def logit_offsets(self, context) -> Optional[tf.Tensor]:
        """`-log w` with `adjust='margins'` (see the class docstring), else None."""
        if self.adjust != "margins":
            return None
        return -tf.math.log(tf.convert_to_tensor(self.weights))

    # -------------------------------------------------------------- update

    def _inside_interval(self, recall: float, support: float, reference: float) -> bool:
        """Whether `reference` lies in the Clopper-Pearson interval of `recall` measured on `support`."""
        successes = min(max(recall, 0.0), 1.0) * support
        if successes > support / 2.0:
            # By symmetry, from the interval of the miss rate: `binomial_interval` fails
            # (math domain error) for a fractional count within ~0.01 of `trials`, which a
            # smoothed recall near 1 gives.
            low_miss, high_miss = binomial_interval(support - successes, support, self.deadband_level)
            low, high = 1.0 - high_miss, 1.0 - low_miss
        else:
            low, high = binomial_interval(successes, support, self.deadband_level)
        return low <= reference <= high

    def next_multipliers(self, recall: np.ndarray, multipliers: np.ndarray,
                         smoothed: np.ndarray, support: Optional[np.ndarray] = None,
                         direction: Optional[np.ndarray] = None) -> tuple:
        """One controller step in NumPy: returns `(multipliers, smoothed_miss_rate, direction)`.

        Args:
          recall: `[K]` measured recall; NaN for classes absent from the
            held-out data (they keep their state).
          multipliers: `[K]` current multipliers.
          smoothed: `[K]` current smoothed miss rates (NaN before the first
            measurement of a class).
          support: `[K]` held-out examples per class behind `recall`, or
            None (unknown: no deadband). Used only with `deadband` set.
          direction: `[K]` sign of each class's last move that is still
            approaching (+1 raising, -1 lowering, 0 settled); None: all 0.
        """
        miss = 1.0 - np.asarray(recall, np.float64)
        measured = np.isfinite(miss)
        smoothed = np.asarray(smoothed, np.float64)
        fresh = measured & ~np.isfinite(smoothed)
        ema = self.smoothing * smoothed + (1.0 - self.smoothing) * miss
        smoothed = np.where(fresh, miss, np.where(measured, ema, smoothed))
        direction = np.zeros(len(smoothed), np.float64) if direction is None \
            else np.asarray(direction, np.float64).copy()
        damp = self.deadband is not None and support is not None
        log_multipliers = np.log(np.asarray(multipliers, np.float64))
        if self.mode == "target_class":
            t = self.target_class
            if np.isfinite(smoothed[t]):
                error = smoothed[t] - (1.0 - self.target_recall)
                if damp and support[t] <= 0:
                    error = 0.0  # no held-out example now: nothing new to act on
                elif damp:
                    inside = self._inside_interval(1.0 - smoothed[t], float(support[t]),
                                                   self.target_recall)
                    error, direction[t] = self._banded(error, inside, direction[t])
                log_multipliers[t] += self.step_size * error
        else:
            known = np.isfinite(smoothed)
            step = np.where(known, smoothed, 0.0)
            if damp and known.any():
                reference = float(np.mean(smoothed[known]))
                for j in np.flatnonzero(known):
                    if support[j] <= 0:
                        step[j] = reference  # no held-out example now: keeps its place
                        continue
                    inside = self._inside_interval(1.0 - smoothed[j], float(support[j]), 1.0 - reference)
                    error, direction[j] = self._banded(smoothed[j] - reference, inside, direction[j])
                    step[j] = reference + error
            log_multipliers += self.step_size * step
            log_multipliers -= np.log(np.mean(np.exp(log_multipliers)))
        updated = np.clip(np.exp(log_multipliers), self.min_weight, self.max_weight)
        return updated.astype(np.float32), smoothed.astype(np.float32), direction.astype(np.float32)

    @staticmethod
    def _banded(error: float, inside: bool, direction: float) -> tuple:
        """The deadband with hysteresis: `(error to step by, new direction)`.

        Outside the interval: the full error, and its sign becomes the
        direction. Inside: keep stepping while still approaching from the
        side of the last move (the same sign); once the error changes sign
        (the reference was crossed) or from rest, no move and the class is
        settled (direction 0) until a measurement leaves the interval.
        """
        sign = float(np.sign(error))
        if not inside:
            return error, sign
        if direction != 0.0 and sign == direction:
            return error, direction
        return 0.0, 0.0

    def update(self, recall: Sequence[float], step: Optional[int] = None,
               support: Optional[Sequence[float]] = None) -> np.ndarray:
        """Moves the weights given held-out per-class recall; returns the new weights.

        Call from cross-replica context (a callback): the assignments then
        reach every replica's copy. The step is a function of the numbers
        passed and the rule's variables only, so every replica and worker
        given the same numbers applies the same update.

        Args:
          recall: `[K]` held-out recall per class (NaN: no held-out example).
          step: The optimizer step of the measurement, or None.
          support: `[K]` held-out examples per class behind `recall` (the
            confusion matrix's row sums), or None when unknown: then no
            deadband applies (see the class docstring).

        Raises:
          ValueError: when `recall` or `support` does not have one value per
            class, or `support` has a negative or non-finite value.
        """
        recall = np.asarray(recall, np.float64)
        if recall.shape != (self.num_classes,):
            raise ValueError(f"recall must have {self.num_classes} values, got shape {recall.shape}.")
        if support is not None:
            support = np.asarray(support, np.float64)
            if support.shape != (self.num_classes,):
                raise ValueError(f"support must have {self.num_classes} values, got shape "
                                 f"{support.shape}.")
            if not np.all(np.isfinite(support)) or np.any(support < 0):
                raise ValueError(f"support must be finite and non-negative, got {support.tolist()}.")
        multipliers, smoothed, direction = self.next_multipliers(
            recall, self.multipliers.numpy(), self.smoothed_miss_rate.numpy(), support,
            self.deadband_direction.numpy())
        weights = self._effective_weights(multipliers.astype(np.float64))
        self.multipliers.assign(multipliers)
        self.smoothed_miss_rate.assign(smoothed)
        self.deadband_direction.assign(direction)
        self.weights.assign(weights)
        self.num_updates.assign_add(1)
        if step is not None:
            self.last_update_step.assign(int(step))
        return weights

    def controller(self, validation_data: Optional[tf.data.Dataset] = None,
                   update_every: Optional[int] = None) -> "RecallTargetController":
        """The callback that drives this rule (see `RecallTargetController`)."""
        return RecallTargetController(self, validation_data=validation_data,
                                      update_every=update_every)

    def get_config(self) -> Dict[str, Any]:
        return {"target_class": self.target_class, "target_recall": self.target_recall,
                "mode": self.mode,
                "class_counts": None if self.class_counts is None else self.class_counts.tolist(),
                "step_size": self.step_size, "smoothing": self.smoothing,
                "min_weight": self.min_weight, "max_weight": self.max_weight,
                "base_weights": self.base_weights, "adjust": self.adjust,
                "deadband": self.deadband, "deadband_level": self.deadband_level}


class RecallTargetController(keras.callbacks.Callback):
    """Measures held-out per-class recall and moves a `RecallTarget` rule's weights.

    The held-out data must be disjoint from the training data (the CLI uses
    the data layer's fixed stratified split of the training data, never the
    test set). Ways to measure:

    - `validation_data=None` in a `Trainer`: at the end of each epoch, read
      the recall of the epoch's one evaluation (`on_evaluation`), i.e. the
      Trainer's `validation_data` is the held-out split. In `model.fit`:
      read `val_recall/<k>` from the logs.
    - `validation_data=dataset`: evaluate on it at the end of each epoch, or
      every `update_every` optimizer steps (checked when the Trainer reports
      a finished loop of steps).

    With each recall the controller passes the held-out support of every
    class to the rule's deadband (`RecallTarget(deadband=...)`): the row sums
    of the evaluation's confusion matrix (`on_evaluation`, or its own pass
    over `validation_data`). Read from `model.fit` logs, the supports are
    known only when the logs carry `val_support/<k>` for every class
    (`PerClassMetrics` does not log them today); otherwise the update is the
    undamped one, as without a deadband.

    After each update the new weights are added to the epoch's logs as
    `class_weight/<k>` (the Trainer writes the same weights to TensorBoard,
    `train/class_weight/<k>`, after the epoch's callbacks). All state lives in the rule,
    so it is checkpointed with it. Under multi-worker training each worker
    runs the callback on the same numbers (the Trainer's evaluation is summed
    across replicas; `validation_data` is read whole by every worker from the
    same weights), so every worker applies the same update.

    Args:
      rule: The `RecallTarget` to drive.
      validation_data: Batched `(features, labels)` held-out data, or None.
      update_every: Steps between updates (needs `validation_data`); None
        updates once per epoch.
    """

    def __init__(self, rule: RecallTarget, *, validation_data: Optional[tf.data.Dataset] = None,
                 update_every: Optional[int] = None):
        super().__init__()
        if not isinstance(rule, RecallTarget):
            raise ValueError(f"rule must be a RecallTarget, got {type(rule).__name__}.")
        if update_every is not None:
            if isinstance(update_every, bool) or int(update_every) != update_every or update_every < 1:
                raise ValueError(f"update_every must be a positive integer or None, got {update_every!r}.")
            if validation_data is None:
                raise ValueError("update_every needs validation_data (the held-out split) to "
                                 "measure recall between epochs.")
        self.rule = rule
        self.update_every = None if update_every is None else int(update_every)
        self._collector = None if validation_data is None else ModelLogits(validation_data)
        self._evaluation: Optional[EvaluationResult] = None

    def on_evaluation(self, result: EvaluationResult) -> None:
        """The Trainer's evaluation of this epoch: its recall drives the end-of-epoch update."""
        self._evaluation = result

    def _measured_recall(self, logs: Optional[Dict[str, Any]]) -> tuple:
        """`(recall, support)` of the held-out split; support None when the logs do not carry it."""
        k = self.rule.num_classes
        if self._evaluation is not None and self._collector is None:
            result, self._evaluation = self._evaluation, None
            matrix = np.asarray(result.confusion_matrix, np.float64)
            return np.asarray(result.per_class()["recall"], np.float64), matrix.sum(axis=1)
        if self._collector is not None:
            logits, labels = self._collector(self.model)
            matrix = count_confusion_matrix(labels, logits.argmax(axis=1), k)
            return (np.asarray(per_class_metrics(matrix)["recall"], np.float64),
                    np.asarray(matrix, np.float64).sum(axis=1))
        logs = logs or {}
        missing = [f"val_recall/{j}" for j in range(k) if f"val_recall/{j}" not in logs]
        if missing:
            raise ValueError(
                f"RecallTargetController needs held-out per-class recall: pass validation_data "
                f"(a held-out split of the training data) to the controller, or validation data "
                f"to fit(); the logs lack {', '.join(missing[:3])}.")
        recall = np.array([logs[f"val_recall/{j}"] for j in range(k)], np.float64)
        support_keys = [f"val_support/{j}" for j in range(k)]
        support = np.array([logs[key] for key in support_keys], np.float64) \
            if all(key in logs for key in support_keys) else None
        return recall, support

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        return int(np.asarray(optimizer.iterations)) if optimizer is not None else -1

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.update_every is None:
            return
        step = self._step()
        if step - max(int(self.rule.last_update_step.numpy()), 0) >= self.update_every:
            recall, support = self._measured_recall(None)
            self.rule.update(recall, step=step, support=support)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.update_every is None:
            recall, support = self._measured_recall(logs)
            weights = self.rule.update(recall, step=self._step(), support=support)
        else:
            weights = self.rule.class_weights().numpy()
        if logs is not None:
            for class_id, weight in enumerate(weights):
                logs[f"class_weight/{class_id}"] = float(weight)
