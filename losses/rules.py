"""Per-class reweighting rules that act on the gradient at the logits, and their argument checks.

State lives in `tf.Variable`s (checkpointed, replica-synchronised); behaviour is a pure tensor function.
"""

from __future__ import annotations

import dataclasses
import warnings
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


# A class with no training example counts as this many in every prior-based rule and loss
# (inverse_frequency, effective_number, logit_adjusted, balanced_softmax, LDAM, post-hoc
# logit adjustment, the recall-target base weights): the add-one-half (Krichevsky-Trofimov /
# Jeffreys) estimate, which keeps an absent class rarer than any observed one.
ABSENT_CLASS_PSEUDO_COUNT = 0.5
# A class with fewer training examples than this is tiny: inverse-frequency-style weights
# treat it as having TINY_CLASS_SIZE (w_j proportional to 1 / max(n_j, TINY_CLASS_SIZE)), so
# no class weighs more than a class of 5 examples would: at most n_max / 5 times the most
# common class. Below 5 the count says little about the class's frequency (a Poisson count
# of n has relative error 1 / sqrt(n) > 45%), and 1 / n grows fastest exactly there (a
# singleton among 3,900 rows would weigh 3,900 times the common class).
TINY_CLASS_SIZE = 5


class SmallClassWarning(UserWarning):
    """A class absent from the training data or with fewer than `TINY_CLASS_SIZE` examples."""


def class_label(c: int, class_names: Optional[Sequence[str]] = None) -> str:
    """'class 3' or "class 3 ('rare')" for messages."""
    if class_names is not None and c < len(class_names):
        return f"class {c} ({str(class_names[c])!r})"
    return f"class {c}"


def observed_class_counts(class_counts: Sequence[float], num_classes: Optional[int] = None,
                          argument: str = "class_counts") -> np.ndarray:
    """Checks per-class training-example counts as observed (zeros allowed) and returns float64.

    Raises:
      ArgumentError: Naming `argument`, when the counts are not a finite 1-D vector of
        non-negative values, at least one positive, with `num_classes` entries (if given)
        and at least 2.
    """
    array = _vector(class_counts, argument, "counts, one per class")
    if array.shape[0] < 2:
        raise ArgumentError(argument, array.tolist(), "must hold one count per class (at least 2)")
    _check_length(array, num_classes, argument)
    if not np.all(np.isfinite(array)):
        raise ArgumentError(argument, array.tolist(), "must be finite")
    if np.any(array < 0):
        negative = np.flatnonzero(array < 0).tolist()
        raise ArgumentError(argument, array.tolist(),
                            f"must be non-negative, but classes {negative} have counts "
                            f"{array[negative].tolist()}")
    if not np.any(array > 0):
        raise ArgumentError(argument, array.tolist(), "are all zero: no class has a training example")
    return array


def validate_class_counts(class_counts: Sequence[float], num_classes: Optional[int] = None,
                          argument: str = "class_counts", *,
                          class_names: Optional[Sequence[str]] = None,
                          used_by: str = "the class prior") -> np.ndarray:
    """Checks per-class training-example counts; absent classes get the pseudo-count.

    Counts may be fractional. A class with count 0 (no training example) counts as
    `ABSENT_CLASS_PSEUDO_COUNT` (0.5) instead, with a `SmallClassWarning` naming it: its
    weight or log-prior would otherwise be infinite.

    Args:
      class_counts: Training examples of each class.
      num_classes: When given, the number of counts required.
      argument: The caller's name for `class_counts`, for the message.
      class_names: Class names for the warning (default: indices only).
      used_by: What the counts feed, for the warning.

    Returns:
      float64 counts, every entry positive.

    Raises:
      ArgumentError: Naming `argument`, when the counts are not a finite 1-D
        vector of non-negative values, at least one positive, with `num_classes`
        entries (if given).
    """
    array = observed_class_counts(class_counts, num_classes, argument).copy()
    absent = np.flatnonzero(array == 0)
    if len(absent):
        listed = ", ".join(class_label(int(c), class_names) for c in absent)
        warnings.warn(
            f"{listed} {'has' if len(absent) == 1 else 'have'} no training example: "
            f"{'it counts' if len(absent) == 1 else 'each counts'} as {ABSENT_CLASS_PSEUDO_COUNT:g} "
            f"examples (pseudo-count) in {used_by}; the model cannot learn "
            f"{'it' if len(absent) == 1 else 'them'}", SmallClassWarning, stacklevel=3)
        array[absent] = ABSENT_CLASS_PSEUDO_COUNT
    return array


def capped_class_counts(class_counts: Sequence[float], *, class_names: Optional[Sequence[str]] = None,
                        used_by: str = "inverse-frequency weights",
                        argument: str = "class_counts") -> np.ndarray:
    """The counts inverse-frequency-style weights use: max(n_j, TINY_CLASS_SIZE) (float64).

    Absent classes get the pseudo-count first (`validate_class_counts`, which warns), so
    they weigh as a class of `TINY_CLASS_SIZE` too.

    Raises:
      ArgumentError: As `validate_class_counts`.
    """
    counts = validate_class_counts(class_counts, argument=argument, class_names=class_names,
                                   used_by=used_by)
    return np.maximum(counts, float(TINY_CLASS_SIZE))


def _capped_weights(class_counts: Sequence[float], weigh, used_by: str,
                    class_names: Optional[Sequence[str]], argument: str) -> np.ndarray:
    """`weigh(counts)` on the capped counts, averaging 1 over present classes; warns per tiny class."""
    observed = observed_class_counts(class_counts, argument=argument)
    capped = capped_class_counts(observed, class_names=class_names, used_by=used_by,
                                 argument=argument)
    present = observed > 0
    weights = weigh(capped)
    weights = weights * (present.sum() / weights[present].sum())
    tiny = np.flatnonzero(present & (observed < TINY_CLASS_SIZE))
    if len(tiny):
        common = int(np.argmax(observed))
        uncapped = weigh(np.where(present, observed, 1.0))
        for c in tiny:
            n = observed[c]
            warnings.warn(
                f"{class_label(int(c), class_names)} has only {n:g} training example"
                f"{'' if n == 1 else 's'} (fewer than {TINY_CLASS_SIZE}): {used_by} cap its "
                f"weight at that of a class with {TINY_CLASS_SIZE} examples (counts "
                f"max(n, {TINY_CLASS_SIZE})): {weights[c] / weights[common]:.4g}x the most common "
                f"class instead of {uncapped[c] / uncapped[common]:.4g}x",
                SmallClassWarning, stacklevel=4)
    return weights


def inverse_frequency_weights(class_counts: Sequence[float], *,
                              class_names: Optional[Sequence[str]] = None,
                              argument: str = "class_counts") -> np.ndarray:
    """w_j proportional to 1 / max(n_j, TINY_CLASS_SIZE), averaging 1 over present classes.

    Absent classes count `ABSENT_CLASS_PSEUDO_COUNT` (then the cap); their weight never
    scales a training example and is left out of the average, so an absent class does
    not change the others' weights. A `SmallClassWarning` names each absent class and
    each tiny one (with its weight relative to the most common class, capped and not).

    Args:
      class_counts: Non-negative training examples per class (at least one positive).
      class_names: Class names for the warnings.
      argument: The caller's name for `class_counts`, for errors.

    Returns:
      float64 [K].

    Raises:
      ArgumentError: As `observed_class_counts`.
    """
    return _capped_weights(class_counts, lambda n: 1.0 / n, "inverse-frequency weights",
                           class_names, argument)


def effective_number_weights(class_counts: Sequence[float], beta: float, *,
                             class_names: Optional[Sequence[str]] = None,
                             argument: str = "class_counts") -> np.ndarray:
    """Cui et al. (2019) weights (1 - beta) / (1 - beta**n_j), n_j capped and averaged as above.

    Raises:
      ArgumentError: Naming `beta` or `argument`.
    """
    beta = check_number(beta, "beta", minimum=0, maximum=1, exclusive_maximum=True)

    def weigh(n: np.ndarray) -> np.ndarray:
        effective = -np.expm1(n * np.log(beta)) if beta > 0 else np.ones_like(n)
        return (1.0 - beta) / effective
    return _capped_weights(class_counts, weigh, "effective-number weights", class_names, argument)


_PRIOR_CORRECTIONS = (None, "inverse_frequency", "effective_number")


class ClassWeights(ReweightingRule):
    """Static per-class weights: every example's gradient is scaled by w[label].

    The step equals Keras `model.fit(class_weight=...)`: the gradient of
    sum_i w[y_i] * loss_i / batch_size. The weights live in a non-trainable
    variable so controllers (e.g. a recall target) can move them.

    Two constructors derive the weights from the training class counts and
    normalise them so that they average 1 over the classes with training
    examples (sum to num_classes when every class has some), which keeps the
    loss scale, and so the learning rate, close to the unweighted one:

    - `ClassWeights.inverse_frequency(class_counts)`: w_j proportional to 1/n_j.
    - `ClassWeights.effective_number(class_counts, beta)` (Cui et al. 2019):
      w_j proportional to (1 - beta) / (1 - beta**n_j).

    Both cap tiny classes: n_j counts as max(n_j, TINY_CLASS_SIZE = 5), so no
    class weighs more than a class of 5 examples (a `SmallClassWarning` names
    each such class); an absent class (n_j = 0) counts as
    ABSENT_CLASS_PSEUDO_COUNT = 0.5, then the cap (its weight scales no
    example and is left out of the average).

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
    def inverse_frequency(cls, class_counts: Sequence[float], name: Optional[str] = None, *,
                          class_names: Optional[Sequence[str]] = None) -> "ClassWeights":
        """Weights proportional to 1 / max(n_j, 5), averaging 1 over classes with examples.

        See `inverse_frequency_weights` (tiny classes capped, absent ones pseudo-counted).

        Args:
          class_counts: Non-negative number of training examples of each class.
          name: Optional module name.
          class_names: Class names for the warnings.

        Raises:
          ArgumentError: Naming `class_counts` when a count is negative or all are zero.
        """
        return cls(inverse_frequency_weights(class_counts, class_names=class_names), name=name,
                   prior_correction="inverse_frequency")

    @classmethod
    def effective_number(cls, class_counts: Sequence[float], beta: float = 0.9999,
                         name: Optional[str] = None, *,
                         class_names: Optional[Sequence[str]] = None) -> "ClassWeights":
        """Class-balanced weights of Cui et al. (2019), averaging 1 over classes with examples.

        The effective number of examples of class j is
        E_j = (1 - beta**n_j) / (1 - beta); the weight is 1 / E_j, i.e.
        proportional to (1 - beta) / (1 - beta**n_j). `beta=0` gives uniform
        weights and `beta -> 1` approaches inverse frequency. Tiny classes
        count max(n_j, 5), as in `inverse_frequency`.

        Args:
          class_counts: Non-negative number of training examples of each class.
          beta: In [0, 1).
          name: Optional module name.
          class_names: Class names for the warnings.

        Raises:
          ArgumentError: Naming `beta` or `class_counts` when out of range.
        """
        return cls(effective_number_weights(class_counts, beta, class_names=class_names),
                   name=name, prior_correction="effective_number")

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
