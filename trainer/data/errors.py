"""The one error type of the input layer.

Every bad-data problem is an `InputDataError` whose message names the file, row, column and value.
"""

from __future__ import annotations

import re
from typing import Any, Optional


class InputDataError(ValueError):
    """Bad input data or a bad data flag, raised before training starts.

    The message says what is wrong and where: the flag, file, 1-based data row
    (or line), column and offending value, whichever apply.
    """


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
