"""Calibrated probabilities: temperature scaling fitted on held-out logits after undoing a known prior shift.

`fit_temperature` returns a `Calibration` (NumPy and TensorFlow `apply`, JSON round trip); ECE beside it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from trainer.checks import ArgumentError, check_integer, check_number, check_positive
from trainer.decisions.base import checked_logits_and_labels
from trainer.json_files import read_json, write_json_atomically

FILENAME = "calibration.json"
KIND = "temperature_scaling"
# Equal-width bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15
# The temperatures the fit searches (a fit at either end is reported with a warning).
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2


def _offsets(values: Sequence[float] | None, num_classes: int, argument: str) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, np.float64).reshape(-1)
    if array.shape != (num_classes,) or not np.all(np.isfinite(array)):
        raise ArgumentError(argument, values, f"must be {num_classes} finite numbers (one per class)")
    return array


def class_weight_correction(class_weights: Sequence[float]) -> np.ndarray:
    """The `prior_correction` that undoes training with per-class loss (or gradient) weights `w`.

    Minimising the `w`-weighted cross-entropy makes `softmax(z)` estimate
    `w_y p(y|x) / sum_j w_j p(j|x)`, so `log p(y|x) = z_y - log w_y + const`:
    the correction is `-log w` (applied after the temperature: the weights
    shift probabilities, not the logits the loss saw). For a rule whose
    weights moved during training (the controller), pass its final weights:
    an approximation.

    Args:
      class_weights: Positive per-class weights.

    Raises:
      ArgumentError: naming `class_weights` unless positive and finite.
    """
    weights = np.asarray(class_weights, np.float64).reshape(-1)
    if weights.size < 2 or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ArgumentError("class_weights", class_weights, "must be at least 2 positive finite numbers")
    return -np.log(weights)


def logit_adjustment_correction(class_counts: Sequence[float], tau: float = 1.0) -> np.ndarray:
    """The `loss_offsets` that undo a logit-adjusted loss, `CE(z + tau log prior, y)`.

    Such a loss fits `softmax(z + tau log prior)` to the labels, so the
    offsets are `tau * log(counts / sum(counts))`, added to the logits
    before the temperature (the loss saw them there). Balanced softmax is
    `tau = 1`.

    Args:
      class_counts: Positive training examples per class (give absent
        classes a pseudo-count).
      tau: The loss's tau, >= 0.

    Raises:
      ArgumentError: naming `class_counts` or `tau` when out of range.
    """
    counts = np.asarray(class_counts, np.float64).reshape(-1)
    if counts.size < 2 or not np.all(np.isfinite(counts)) or np.any(counts <= 0):
        raise ArgumentError("class_counts", class_counts, "must be at least 2 positive finite numbers")
    tau = check_number(tau, "tau", minimum=0)
    return tau * np.log(counts / counts.sum())


def _log_softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean `-log p_y` of `[N, K]` probabilities (floored at 1e-300)."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    return float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-300))))


def _binned_gap(scores: np.ndarray, outcomes: np.ndarray, bins: int) -> float:
    """`sum_b (n_b / N) |mean(outcome)_b - mean(score)_b|` over equal-width bins of [0, 1]."""
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    score_sum = np.bincount(index, weights=scores, minlength=bins)
    outcome_sum = np.bincount(index, weights=outcomes, minlength=bins)
    return float(np.sum(np.abs(outcome_sum - score_sum)) / len(scores))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *,
                               bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration errors of `[N, K]` probabilities, overall (top-label) and per class.

    Equal-width bins: an example with score `s` falls in bin
    `min(floor(s * bins), bins - 1)` (bins `[i/M, (i+1)/M)`, the last one
    closed). Top-label (Guo et al. 2017): the score is the largest
    probability and the outcome whether its class is the label. Per class
    (one-vs-rest): the score is `p_k` and the outcome `label == k`, over
    all examples. Each is `sum_b (n_b / N) |mean outcome - mean score|`.

    Args:
      probabilities: `[N, K]` rows summing to 1.
      labels: `[N]` labels in [0, K).
      bins: Number of bins, >= 1.

    Returns:
      `{'ece': float, 'per_class_ece': [K floats], 'bins': bins,
      'examples': N}`.

    Raises:
      ArgumentError: naming `bins`, `probabilities` or `labels` when malformed.
    """
    bins = check_integer(bins, "bins", minimum=1)
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0] or labels.size == 0:
        raise ArgumentError("probabilities", probabilities.shape,
                            f"must be [N, K] with N = {labels.size} > 0")
    if not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise ArgumentError("probabilities", "values outside [0, 1]", "must be probabilities")
    num_classes = probabilities.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ArgumentError("labels", (int(labels.min()), int(labels.max())),
                            f"must be in [0, {num_classes})")
    top = probabilities.argmax(axis=1)
    overall = _binned_gap(probabilities.max(axis=1), (top == labels).astype(np.float64), bins)
    per_class = [_binned_gap(probabilities[:, k], (labels == k).astype(np.float64), bins)
                 for k in range(num_classes)]
    return {"ece": overall, "per_class_ece": per_class, "bins": bins, "examples": int(labels.size)}


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Temperature scaling after a prior correction: `p = softmax((z + loss_offsets) / T + prior_correction)`.

    `loss_offsets` undo a loss that added offsets to the logits during
    training (`logit_adjustment_correction`: `tau log prior`);
    `prior_correction` undoes a reweighting of the loss or its gradient
    (`class_weight_correction`: `-log w`), or moves the probabilities to
    another class prior (`log(new prior / training prior)`). Either may be
    None (zeros). The `fit_*` figures were measured on the data the
    temperature was fitted on.

    Attributes:
      temperature: T > 0.
      num_classes: K.
      loss_offsets: `[K]` added before the temperature, or None.
      prior_correction: `[K]` added after it, or None.
      fit_examples: Number of examples the fit used.
      fit_nll: Mean negative log-likelihood there, calibrated.
      fit_nll_uncalibrated: The same of `softmax(z)`.
      fit_ece: Top-label ECE there (`ECE_BINS` bins), calibrated.
      fit_ece_uncalibrated: The same of `softmax(z)`.
      kind: Class attribute, `'temperature_scaling'`.
    """

    kind: ClassVar[str] = KIND

    temperature: float
    num_classes: int
    loss_offsets: tuple[float, ...] | None = None
    prior_correction: tuple[float, ...] | None = None
    fit_examples: int | None = None
    fit_nll: float | None = None
    fit_nll_uncalibrated: float | None = None
    fit_ece: float | None = None
    fit_ece_uncalibrated: float | None = None

    def _vector(self, values: tuple[float, ...] | None) -> np.ndarray:
        return np.zeros(self.num_classes) if values is None else np.asarray(values, np.float64)

    def calibrated_logits(self, logits: np.ndarray) -> np.ndarray:
        """`(z + loss_offsets) / T + prior_correction` of `[N, K]` logits, float64."""
        logits = np.asarray(logits, np.float64)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape [N, {self.num_classes}], got {logits.shape}.")
        return ((logits + self._vector(self.loss_offsets)) / self.temperature
                + self._vector(self.prior_correction))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities `[N, K]` (float64) of `[N, K]` logits."""
        return np.exp(_log_softmax(self.calibrated_logits(logits)))

    def apply_tensor(self, logits: tf.Tensor) -> tf.Tensor:
        """`apply` in TensorFlow (float32 `[N, K]`), e.g. for a SavedModel's serving function."""
        logits = tf.cast(logits, tf.float32)
        scaled = (logits + tf.constant(self._vector(self.loss_offsets), tf.float32)) / self.temperature
        return tf.nn.softmax(scaled + tf.constant(self._vector(self.prior_correction), tf.float32), axis=-1)

    def to_dict(self) -> dict[str, Any]:
        """The calibration as a JSON-ready dict (the format of `calibration.json`), `kind` included."""
        payload = {"kind": KIND, **dataclasses.asdict(self)}
        for key in ("loss_offsets", "prior_correction"):
            payload[key] = None if payload[key] is None else [float(v) for v in payload[key]]
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Calibration:
        """The calibration `to_dict` described.

        Raises:
          ValueError: for another kind, a missing or unknown key, or values
            out of range (`ArgumentError` naming the key).
        """
        if not isinstance(payload, dict):
            raise TypeError(f"A calibration must be a JSON object, got {type(payload).__name__}.")
        payload = dict(payload)
        kind = payload.pop("kind", None)
        if kind != KIND:
            raise ValueError(f"Not a calibration: kind {kind!r} (expected {KIND!r}).")
        num_classes = check_integer(payload.get("num_classes"), "num_classes", minimum=2)
        for key in ("loss_offsets", "prior_correction"):
            offsets = _offsets(payload.get(key), num_classes, key)
            payload[key] = None if offsets is None else tuple(float(v) for v in offsets)
        check_positive(payload.get("temperature"), "temperature")
        try:
            return cls(**payload)
        except TypeError as error:  # a missing or unexpected key
            raise ValueError(str(error)) from error

    def save(self, directory: str) -> str:
        """Writes `<directory>/calibration.json` atomically (creating `directory`); returns the path."""
        return write_json_atomically(os.path.join(directory, FILENAME), self.to_dict())


def load_calibration(directory: str | None) -> Calibration | None:
    """The calibration saved in `<directory>/calibration.json`, or None when there is none.

    Raises:
      ValueError: naming the file when it is not a valid calibration.
    """
    if not directory:
        return None
    path = os.path.join(directory, FILENAME)
    if not os.path.isfile(path):
        return None
    try:
        return Calibration.from_dict(read_json(path))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a valid calibration: {error}") from error


def _nll_slope(inverse_temperature: float, shifted: np.ndarray, labels: np.ndarray,
               correction: np.ndarray) -> float:
    """d/d(beta) of the mean NLL of `softmax(beta * shifted + correction)`: E_p[u] - u_y, averaged."""
    probabilities = np.exp(_log_softmax(inverse_temperature * shifted + correction))
    return float(np.mean(np.sum(probabilities * shifted, axis=1) - shifted[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *,
                    loss_offsets: Sequence[float] | None = None,
                    prior_correction: Sequence[float] | None = None) -> Calibration:
    """Fits the temperature T minimising the NLL of `softmax((z + loss_offsets) / T + prior_correction)`.

    Temperature scaling (Guo et al., ICML 2017) on held-out logits of the
    training distribution (never the reporting split), after undoing the
    prior shift the training introduced (see `Calibration`). The mean NLL
    is convex in `beta = 1 / T` (a log-sum-exp of functions affine in beta),
    so its minimum is where the slope `mean(E_p[u] - u_y)` (u: the shifted
    logits) changes sign: bracketed in [1/100, 1/0.01] and bisected in
    log beta to 1e-12 relative. When the slope does not change sign inside
    (logits that separate the labels perfectly, or carry no information),
    T stops at that end with a warning.

    Args:
      logits: `[N, K]` held-out logits.
      labels: `[N]` held-out labels in [0, K).
      loss_offsets: `[K]` offsets the loss added to the logits, or None.
      prior_correction: `[K]` log-prior correction after the temperature,
        or None.

    Raises:
      ValueError: naming the argument that is malformed (`ArgumentError`).
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    num_classes = logits.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ArgumentError("labels", (int(labels.min()), int(labels.max())),
                            f"must be in [0, {num_classes})")
    offsets = _offsets(loss_offsets, num_classes, "loss_offsets")
    correction = _offsets(prior_correction, num_classes, "prior_correction")
    shifted = logits + (0.0 if offsets is None else offsets)
    after = np.zeros(num_classes) if correction is None else correction
    low, high = math.log(1.0 / MAX_TEMPERATURE), math.log(1.0 / MIN_TEMPERATURE)
    if _nll_slope(math.exp(low), shifted, labels, after) >= 0:
        log_beta = low
        warnings.warn(f"The NLL is smallest at the largest temperature searched ({MAX_TEMPERATURE:g}): "
                      "the logits carry (almost) no information on these labels.", stacklevel=2)
    elif _nll_slope(math.exp(high), shifted, labels, after) <= 0:
        log_beta = high
        warnings.warn(f"The NLL is smallest at the smallest temperature searched ({MIN_TEMPERATURE:g}): "
                      "the logits separate these labels (almost) perfectly.", stacklevel=2)
    else:
        while high - low > 1e-12:
            middle = 0.5 * (low + high)
            if _nll_slope(math.exp(middle), shifted, labels, after) < 0:
                low = middle
            else:
                high = middle
        log_beta = 0.5 * (low + high)
    calibration = Calibration(
        temperature=float(math.exp(-log_beta)), num_classes=num_classes,
        loss_offsets=None if offsets is None else tuple(float(v) for v in offsets),
        prior_correction=None if correction is None else tuple(float(v) for v in correction))
    raw = np.exp(_log_softmax(logits))
    calibrated = calibration.apply(logits)
    return dataclasses.replace(
        calibration, fit_examples=int(len(labels)),
        fit_nll=negative_log_likelihood(calibrated, labels),
        fit_nll_uncalibrated=negative_log_likelihood(raw, labels),
        fit_ece=expected_calibration_error(calibrated, labels)["ece"],
        fit_ece_uncalibrated=expected_calibration_error(raw, labels)["ece"])


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, calibration: Calibration | None = None, *,
                        bins: int = ECE_BINS) -> dict[str, Any]:
    """NLL and ECEs of the calibrated probabilities (the plain softmax when None) on labelled logits.

    For `metrics.json`: say which data `logits` are (the evaluation split).

    Returns:
      `expected_calibration_error(...)` plus `nll` and `temperature`
      (None without a calibration).
    """
    logits, labels = checked_logits_and_labels(logits, labels)
    probabilities = np.exp(_log_softmax(logits)) if calibration is None else calibration.apply(logits)
    metrics = expected_calibration_error(probabilities, labels, bins=bins)
    metrics["nll"] = negative_log_likelihood(probabilities, labels)
    metrics["temperature"] = None if calibration is None else calibration.temperature
    return metrics
