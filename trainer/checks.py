"""Argument checks shared by every layer: one helper per kind of value.

A leaf module (it imports nothing of the project), so `losses`, `trainer.data`
and `callbacks` may all use it. Each check raises `ArgumentError`, a
`ValueError` that names the argument and the offending value; the command line
(`trainer.cli`) maps the argument name to its flag.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional


class ArgumentError(ValueError):
    """A bad argument value: names the argument, the value and what was expected.

    Attributes:
      argument: The argument's name as the raising function calls it.
      value: The value that was given.
      requirement: What the value must be, e.g. "must be a positive integer".
    """

    def __init__(self, argument: str, value: Any, requirement: str):
        self.argument = argument
        self.value = value
        self.requirement = requirement
        super().__init__(f"{argument} {requirement}, got {value!r}.")

    def renamed(self, name: str) -> "ArgumentError":
        """The same error with the argument called `name` (e.g. its flag)."""
        return ArgumentError(name, self.value, self.requirement)


def _is_integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_integer(value: Any, argument: str, *, minimum: Optional[int] = None,
                  maximum: Optional[int] = None) -> int:
    """Returns `value` as int; `ArgumentError` unless an integer in `[minimum, maximum]`.

    Floats that are whole numbers (`3.0`) are accepted; booleans are not.
    """
    whole = _is_integer(value) or (_is_number(value) and math.isfinite(value)
                                   and float(value).is_integer())
    if not whole or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        raise ArgumentError(argument, value, _integer_requirement(minimum, maximum))
    return int(value)


def _integer_requirement(minimum: Optional[int], maximum: Optional[int]) -> str:
    if minimum == 1 and maximum is None:
        return "must be a positive integer"
    if minimum == 0 and maximum is None:
        return "must be a non-negative integer"
    if minimum is not None and maximum is not None:
        return f"must be an integer in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"must be an integer >= {minimum}"
    if maximum is not None:
        return f"must be an integer <= {maximum}"
    return "must be an integer"


def check_positive_integer(value: Any, argument: str) -> int:
    """Returns `value` as int; `ArgumentError` unless an integer >= 1."""
    return check_integer(value, argument, minimum=1)


def check_class_index(value: Any, argument: str, num_classes: Optional[int] = None) -> int:
    """Returns `value` as int; `ArgumentError` unless a class index (in `[0, num_classes)`)."""
    if num_classes is None:
        return check_integer(value, argument, minimum=0)
    if not (_is_integer(value) and 0 <= value < num_classes):
        raise ArgumentError(argument, value,
                            f"must be a class index in 0..{num_classes - 1} ({num_classes} classes)")
    return int(value)


def check_number(value: Any, argument: str, *, minimum: Optional[float] = None,
                 maximum: Optional[float] = None, exclusive_minimum: bool = False,
                 exclusive_maximum: bool = False) -> float:
    """Returns `value` as float; `ArgumentError` unless a finite number in the given range.

    Args:
      value: The value to check.
      argument: Its name, for the message.
      minimum, maximum: Bounds (None: unbounded).
      exclusive_minimum, exclusive_maximum: Whether the bounds are excluded.
    """
    ok = _is_number(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        raise ArgumentError(argument, value, _number_requirement(
            minimum, maximum, exclusive_minimum, exclusive_maximum))
    return float(value)


def _number_requirement(minimum, maximum, exclusive_minimum, exclusive_maximum) -> str:
    if minimum == 0 and maximum is None:
        return "must be a positive number" if exclusive_minimum else \
            "must be a finite non-negative number"
    if minimum is not None and maximum is not None:
        left = "(" if exclusive_minimum else "["
        right = ")" if exclusive_maximum else "]"
        return f"must be in {left}{minimum}, {maximum}{right}"
    if minimum is not None:
        return f"must be a finite number {'>' if exclusive_minimum else '>='} {minimum}"
    if maximum is not None:
        return f"must be a finite number {'<' if exclusive_maximum else '<='} {maximum}"
    return "must be a finite number"


def check_positive(value: Any, argument: str) -> float:
    """Returns `value` as float; `ArgumentError` unless finite and > 0."""
    return check_number(value, argument, minimum=0.0, exclusive_minimum=True)


def check_nonnegative(value: Any, argument: str) -> float:
    """Returns `value` as float; `ArgumentError` unless finite and >= 0."""
    return check_number(value, argument, minimum=0.0)


def check_choice(value: Any, argument: str, choices) -> Any:
    """Returns `value`; `ArgumentError` unless it is one of `choices`."""
    if value not in tuple(choices):
        raise ArgumentError(argument, value, f"must be one of {', '.join(map(str, choices))}")
    return value
