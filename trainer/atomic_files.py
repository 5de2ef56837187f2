"""Files that appear whole or not at all: write to a temporary file beside the target, then rename.

A run killed mid-write leaves the previous file (or none), never half of one;
the temporary file is removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", *, encoding: str | None = "utf-8",
                 durable: bool = False) -> Iterator[IO]:
    """Opens a temporary file for writing; on a clean exit it replaces `path` (one `os.replace`).

    Creates the directory when it is missing.

    Args:
      path: The file to write.
      mode: `"w"` (text) or `"wb"` (binary).
      encoding: Of a text file.
      durable: Flush and fsync the data before the rename (a checkpoint-like
        file that must survive a machine crash, not only a killed process).

    Yields:
      The open stream.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, mode, encoding=None if "b" in mode else encoding) as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
