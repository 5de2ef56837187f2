"""The error types of the input layer: bad data, and bad arguments of `load_data` and its sources.

Messages name the file, row, column and value; an error about an argument starts with its name.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from trainer.checks import ArgumentError


class InputDataError(ValueError):
    """Bad input data, or an argument that does not fit the data, raised before training starts.

    The message says what is wrong and where: the argument, file, 1-based data
    row (or line), column and offending value, whichever apply. When an
    argument is at fault (`label_column='y' is not a column of ...`), the
    message starts with the argument's name, `argument` holds it and
    `renamed(name)` gives the same error naming it `name` instead (e.g. the
    command line's flag).

    Attributes:
      argument: The argument at fault (as the raising function calls it), or None when the data
        itself is bad.
      value: That argument's value (None when `argument` is None).
    """

    argument: Optional[str] = None
    value: Any = None

    def __init__(self, message: str, *, argument: Optional[str] = None, value: Any = None):
        super().__init__(message)
        if argument is not None:
            if not message.startswith(argument):
                raise AssertionError(f"the message must start with {argument!r}: {message!r}")
            self.argument = argument
            self.value = value

    def renamed(self, name: str) -> "InputDataError":
        """The same error with the argument called `name`; itself when no argument is at fault."""
        if self.argument is None:
            return self
        return InputDataError(name + str(self)[len(self.argument):], argument=name, value=self.value)


class DataArgumentError(ArgumentError, InputDataError):
    """An argument of the input layer out of its range: an `ArgumentError` and an `InputDataError`.

    E.g. `validation_split must be in (0, 1), got 1.5.`: callers may catch
    either type (`load_data` raises only `InputDataError`s).
    """

    def renamed(self, name: str) -> "DataArgumentError":
        """The same error with the argument called `name` (e.g. its flag)."""
        return DataArgumentError(name, self.value, self.requirement)


def checked(check: Callable[..., Any], value: Any, argument: str, **bounds: Any) -> Any:
    """Runs a `trainer.checks` helper; its `ArgumentError` becomes a `DataArgumentError`.

    Args:
      check: E.g. `check_positive_integer`.
      value: The value to check.
      argument: Its name.
      **bounds: The helper's keyword arguments (`minimum`, ...).

    Returns:
      The helper's result (the value, converted).
    """
    try:
        return check(value, argument, **bounds)
    except ArgumentError as error:
        raise DataArgumentError(error.argument, error.value, error.requirement) from None


def describe_location(path: Optional[str] = None, *, row: Optional[int] = None,
                      line: Optional[int] = None, column: Any = None, value: Any = None) -> str:
    """Formats where a bad value sits, for an `InputDataError` message.

    Args:
      path: The file.
      row: 1-based data row (or record) number.
      line: 1-based line number in the file.
      column: Column name or index.
      value: The offending value (shown with `repr`).

    Returns:
      A string such as "file 'a.csv', row 3 (line 4), column 'x1', value 'abc'".
    """
    parts = []
    if path is not None:
        parts.append(f"file {str(path)!r}")
    if row is not None:
        parts.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
    elif line is not None:
        parts.append(f"line {line}")
    if column is not None:
        parts.append(f"column {column!r}")
    if value is not None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"value {value!r}")
    return ", ".join(parts)


def tf_message(error: BaseException) -> str:
    """The readable part of a TensorFlow error message (no function-node or op decorations)."""
    msg = getattr(error, "message", None) or str(error)
    msg = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", msg)
    msg = re.sub(r"\s*\[Op:[^\]]*\].*", "", msg, flags=re.S)
    msg = re.sub(r"\s*\[\[\{\{node [^\]]*\]\]", "", msg)
    return msg.strip()


class DataWarning(UserWarning):
    """A fact about the data that weakens what can be learnt or shown (absent or tiny classes).

    `load_data` emits one per finding and keeps its text in `DataBundle.notes`.
    """
