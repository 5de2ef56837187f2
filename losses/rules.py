"""Per-class reweighting rules that act on the gradient at the logits, and their argument checks.

State lives in `tf.Variable`s (checkpointed, replica-synchronised); behaviour is a pure tensor function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer.checks import (
    ArgumentError,
    check_choice,
    check_class_index,
    check_integer,
    check_number,
    check_positive,
)

# Every ReweightingRule subclass, by class name, for `deserialize_rule`.
_RULE_CLASSES: Dict[str, type] = {}


@dataclasses.dataclass(frozen=True)
class TrainingContext:
    """Where training stands when a rule is applied.

    Attributes:
      epoch: Scalar int64 tensor, the zero-based epoch being trained.
      step: Scalar int64 tensor, the number of optimizer steps taken so far.
    """

    epoch: tf.Tensor
    step: tf.Tensor


class ReweightingRule(tf.Module):
    """Base class of per-class gradient reweighting rules.

    Subclasses override `build` (create state, called once inside
    `strategy.scope()` with the number of classes) and `__call__` (a pure
    tensor function run inside the compiled step, in replica context). Rules
    whose weights change over training expose them through `class_weights()`
    so the trainer can log them.

    A rule is a `tf.Module`: variables assigned as attributes are tracked and
    saved in checkpoints.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _RULE_CLASSES[cls.__name__] = cls

    def __init__(self, name: Optional[str] = None):
        super().__init__(name=name)
        self._num_classes: Optional[int] = None

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            raise RuntimeError(f"{type(self).__name__} is used before build(num_classes).")
        return self._num_classes

    @property
    def built(self) -> bool:
        return self._num_classes is not None

    def build(self, num_classes: int) -> None:
        """Creates the rule's state. Called once, inside `strategy.scope()`."""
        self._num_classes = check_integer(num_classes, "num_classes", minimum=2)

    def __call__(
        self,
        labels: tf.Tensor,
        logits: tf.Tensor,
        grad_logits: tf.Tensor,
        context: TrainingContext,
    ) -> tf.Tensor:
        """Returns the reweighted gradient at the logits.

        Args:
          labels: int32 `[batch]` class indices.
          logits: float `[batch, num_classes]`.
          grad_logits: dL/dlogits, same shape as `logits`, already divided by
            the global batch size.
          context: epoch and step counters.
        """
        raise NotImplementedError

    def class_weights(self) -> Optional[tf.Tensor]:
        """The current per-class weights, or None when the rule has none."""
        return None

    def logit_offsets(self, context: TrainingContext) -> Optional[tf.Tensor]:
        """A `[num_classes]` vector added to the logits inside the training loss, or None.

        Rules that act through margins rather than through the gradient (e.g.
        `callbacks.RecallTarget(adjust='margins')`) return one. The Trainer
        adds it to the logits it passes to the loss during training only, so
        evaluation and prediction see the model's own logits: a negative
        offset for class j makes the training loss demand a larger logit for
        j, which then shows as a higher recall of j at test time. Read inside
        the compiled step, in replica context: a pure tensor function of the
        rule's variables. None (the default) leaves the logits alone.

        Args:
          context: epoch and step counters.
        """
        return None

    def get_config(self) -> Dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "ReweightingRule":
        return cls(**config)


def _vector(values: Sequence[float], argument: str, what: str) -> np.ndarray:
    """`values` as a float64 1-D array; `ArgumentError` naming `argument` otherwise."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(argument, values, "must be numbers") from None
    if array.ndim != 1:
        raise ArgumentError(argument, values, f"must be a 1-D list of {what} (shape {array.shape})")
    return array


def _check_length(array: np.ndarray, num_classes: Optional[int], argument: str) -> None:
    """`ArgumentError` naming `argument` unless `array` has `num_classes` entries (when given)."""
    if num_classes is not None and array.shape[0] != num_classes:
        raise ArgumentError(argument, array.tolist(),
                            f"has {array.shape[0]} values but there are {num_classes} classes")


def validate_class_weights(weights: Sequence[float], num_classes: Optional[int] = None,
                           argument: str = "weights") -> np.ndarray:
    """Checks a per-class weight vector and returns it as float32.

    Args:
      weights: One weight per class.
      num_classes: When given, the number of weights required.
      argument: The caller's name for `weights`, for the message.

    Raises:
      ArgumentError: Naming `argument`, when the weights are not a finite 1-D
        vector of non-negative values with at least one positive, or do not
        have `num_classes` entries.
    """
    array = _vector(weights, argument, "per-class weights")
    _check_length(array, num_classes, argument)
    if not np.all(np.isfinite(array)):
        raise ArgumentError(argument, array.tolist(), "must be finite")
    if np.any(array < 0):
        raise ArgumentError(argument, array.tolist(), "must be non-negative")
    if not np.any(array > 0):
        raise ArgumentError(argument, array.tolist(),
                            "are all zero: at least one class needs a positive weight")
    return array.astype(np.float32)


def validate_class_counts(class_counts: Sequence[float], num_classes: Optional[int] = None,
                          argument: str = "class_counts") -> np.ndarray:
    """Checks per-class training-example counts and returns them as float64.

    Counts may be fractional (pseudo-counts) but must be positive: a class
    with no examples has no prior to correct for, and its weight or log-prior
    would be infinite. Add a pseudo-count (e.g. 1) for classes absent from
    the training data.

    Args:
      class_counts: Training examples of each class.
      num_classes: When given, the number of counts required.
      argument: The caller's name for `class_counts`, for the message.

    Raises:
      ArgumentError: Naming `argument`, when the counts are not a finite 1-D
        vector of positive values with `num_classes` entries (if given).
    """
    array = _vector(class_counts, argument, "counts, one per class")
    if array.shape[0] < 2:
        raise ArgumentError(argument, array.tolist(), "must hold one count per class (at least 2)")
    _check_length(array, num_classes, argument)
    if not np.all(np.isfinite(array)):
        raise ArgumentError(argument, array.tolist(), "must be finite")
    if np.any(array <= 0):
        empty = np.flatnonzero(array <= 0).tolist()
        raise ArgumentError(argument, array.tolist(),
                            f"must be positive, but classes {empty} have counts {array[empty].tolist()} "
                            f"(give absent classes a pseudo-count such as 1)")
    return array


_PRIOR_CORRECTIONS = (None, "inverse_frequency", "effective_number")


def _normalise_to_mean_one(weights: np.ndarray) -> np.ndarray:
    return weights * (weights.shape[0] / weights.sum())


class ClassWeights(ReweightingRule):
    """Static per-class weights: every example's gradient is scaled by w[label].

    The step equals Keras `model.fit(class_weight=...)`: the gradient of
    sum_i w[y_i] * loss_i / batch_size. The weights live in a non-trainable
    variable so controllers (e.g. a recall target) can move them.

    Two constructors derive the weights from the training class counts and
    normalise them so that they average 1 over the classes (sum to
    num_classes), which keeps the loss scale, and so the learning rate, close
    to the unweighted one:

    - `ClassWeights.inverse_frequency(class_counts)`: w_j proportional to 1/n_j.
    - `ClassWeights.effective_number(class_counts, beta)` (Cui et al. 2019):
      w_j proportional to (1 - beta) / (1 - beta**n_j).

    Rules made by these constructors record it in `prior_correction`, so
    `warn_if_prior_counted_twice` can tell when a prior-corrected loss is
    stacked on top of them.

    Args:
      weights: One non-negative weight per class, at least one positive.
      name: Optional module name.
      prior_correction: `"inverse_frequency"`, `"effective_number"` or None:
        which class-frequency correction the weights implement (set by the
        constructors above; pass it when you compute such weights yourself).

    Example:
      >>> rule = ClassWeights([1.0, 10.0])
      >>> rule = ClassWeights.effective_number([5000, 50], beta=0.999)
      >>> trainer = Trainer(model=model, reweighting=rule, num_classes=2)
    """

    prior_correction: Optional[str] = None

    def __init__(self, weights: Sequence[float], name: Optional[str] = None, *,
                 prior_correction: Optional[str] = None):
        super().__init__(name=name)
        check_choice(prior_correction, "prior_correction", _PRIOR_CORRECTIONS)
        self._initial_weights = validate_class_weights(weights)
        self.prior_correction = prior_correction
        self.weights: Optional[tf.Variable] = None

    @classmethod
    def inverse_frequency(cls, class_counts: Sequence[float],
                          name: Optional[str] = None) -> "ClassWeights":
        """Weights proportional to 1 / n_j, normalised to average 1 over classes.

        Args:
          class_counts: Positive number of training examples of each class.
          name: Optional module name.

        Raises:
          ArgumentError: Naming `class_counts` when a count is not positive.
        """
        counts = validate_class_counts(class_counts)
        return cls(_normalise_to_mean_one(1.0 / counts), name=name,
                   prior_correction="inverse_frequency")

    @classmethod
    def effective_number(cls, class_counts: Sequence[float], beta: float = 0.9999,
                         name: Optional[str] = None) -> "ClassWeights":
        """Class-balanced weights of Cui et al. (2019), normalised to average 1.

        The effective number of examples of class j is
        E_j = (1 - beta**n_j) / (1 - beta); the weight is 1 / E_j, i.e.
        proportional to (1 - beta) / (1 - beta**n_j). `beta=0` gives uniform
        weights and `beta -> 1` approaches inverse frequency.

        Args:
          class_counts: Positive number of training examples of each class.
          beta: In [0, 1).
          name: Optional module name.

        Raises:
          ArgumentError: Naming `beta` or `class_counts` when out of range.
        """
        beta = check_number(beta, "beta", minimum=0, maximum=1, exclusive_maximum=True)
        counts = validate_class_counts(class_counts)
        effective = -np.expm1(counts * np.log(beta)) if beta > 0 else np.ones_like(counts)
        return cls(_normalise_to_mean_one((1.0 - beta) / effective), name=name,
                   prior_correction="effective_number")

    def build(self, num_classes: int) -> None:
        validate_class_weights(self._initial_weights, num_classes)
        super().build(num_classes)
        self.weights = tf.Variable(self._initial_weights, trainable=False, name="class_weights",
                                   dtype=tf.float32)

    def __call__(self, labels, logits, grad_logits, context):
        example_weights = tf.gather(self.weights, labels)
        return grad_logits * tf.cast(example_weights, grad_logits.dtype)[:, tf.newaxis]

    def class_weights(self) -> tf.Tensor:
        return tf.convert_to_tensor(self.weights)

    def get_config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"weights": self._initial_weights.tolist()}
        if self.prior_correction is not None:
            config["prior_correction"] = self.prior_correction
        return config


class TargetClassWeight(ClassWeights):
    """Scales the gradient of examples whose label is `target_class` by `weight`.

    The rule that the `WeightedRecallLoss` write-up intends: a missed example
    of the class you must catch costs `weight` times more; every other
    example is untouched.

    Args:
      target_class: Index of the class whose recall matters.
      weight: Positive multiplier of that class's gradient.
      name: Optional module name.

    Raises:
      ArgumentError: Naming `target_class` (also at `build`, when it is not
        below `num_classes`) or `weight`.
    """

    def __init__(self, target_class: int, weight: float, name: Optional[str] = None):
        self.target_class = check_class_index(target_class, "target_class")
        self.weight = check_positive(weight, "weight")
        ReweightingRule.__init__(self, name=name)
        self.weights = None

    def build(self, num_classes: int) -> None:
        check_class_index(self.target_class, "target_class", num_classes)
        initial = np.ones(num_classes, np.float32)
        initial[self.target_class] = self.weight
        self._initial_weights = initial
        super().build(num_classes)

    def get_config(self) -> Dict[str, Any]:
        return {"target_class": self.target_class, "weight": self.weight}


def serialize_rule(rule: ReweightingRule) -> Dict[str, Any]:
    """Returns `{"class_name": ..., "config": ...}` for `deserialize_rule`."""
    return {"class_name": type(rule).__name__, "config": rule.get_config()}


def deserialize_rule(config: Dict[str, Any]) -> ReweightingRule:
    """Rebuilds a rule from `serialize_rule`'s output (any imported subclass).

    Raises:
      ValueError: when the class name is not a known `ReweightingRule` subclass.
    """
    name = config.get("class_name")
    if name not in _RULE_CLASSES:
        raise ValueError(
            f"Unknown reweighting rule class {name!r}; known: {', '.join(sorted(_RULE_CLASSES))}.")
    return _RULE_CLASSES[name].from_config(dict(config.get("config", {})))


_RULE_CLASSES[ReweightingRule.__name__] = ReweightingRule
