"""The results of a prediction: their columns, and the CSV or NPZ file written atomically.

Columns, in order: the kept input columns (verbatim), `class_name`, `class_id`, one
`probability_<class>` per class and, when the export has an operating point, one `score_<class>`
per class (the `decision_scores` the rule compared). A multi-label model's (`multi_label`): the
kept columns, `labels` (the decided labels joined by `;`), one 0/1 `decision_<label>` per label,
then `probability_<label>` and `score_<label>` per label; its NPZ arrays are `labels` [N] and
`decisions` [N, L] in place of `class_name` and `class_id`. The file is written to a temporary sibling
and renamed into place by `commit`, so a failed run leaves no half-written output (and an older
file of that name untouched).
"""

from __future__ import annotations

import csv
import os
import tempfile
from typing import List, Optional, Sequence

import numpy as np

from trainer.checks import ArgumentError
from trainer.data.errors import InputDataError

FORMATS = (".csv", ".npz")
# Probabilities and scores are float32: 9 significant digits give each value back exactly.
_FLOAT_FORMAT = "%.9g"


def output_columns(kept: Sequence[str], class_names: Sequence[str], with_scores: bool,
                   multi_label: bool = False) -> List[str]:
    """The output's column names (see the module doc)."""
    decided = (["labels"] + [f"decision_{n}" for n in class_names] if multi_label
               else ["class_name", "class_id"])
    columns = list(kept) + decided + [f"probability_{n}" for n in class_names]
    return columns + ([f"score_{n}" for n in class_names] if with_scores else [])


def output_format(path: str) -> str:
    """`.csv` or `.npz`, from the name.

    Raises:
      ArgumentError: (argument `output`) any other name.
    """
    extension = os.path.splitext(path)[1].lower()
    if not path or extension not in FORMATS:
        raise ArgumentError("output", path, "must be a file name ending in .csv or .npz")
    return extension


class ResultWriter:
    """Writes result batches to a temporary file; `commit` renames it to `path`.

    Args:
      path: The output file (`.csv` or `.npz`).
      kept: The kept columns' names.
      class_names: The model's classes, in index order.
      with_scores: Whether the `score_<class>` columns are written.
      multi_label: Whether `class_names` are the labels of a multi-label model (its decisions
        are multi-hot `[N, L]`).

    Raises:
      InputDataError: (argument `keep_columns`) a kept column given twice, or named like an
        output column.
      OSError: When the directory cannot be written.
    """

    def __init__(self, path: str, kept: Sequence[str], class_names: Sequence[str], with_scores: bool,
                 multi_label: bool = False):
        self.path = path
        self.multi_label = multi_label
        self.columns = output_columns(kept, class_names, with_scores, multi_label)
        repeated = sorted({k for k in kept if list(kept).count(k) > 1})
        if repeated:
            raise InputDataError(f"keep_columns: {', '.join(repr(k) for k in repeated)} given more than "
                                 "once", argument="keep_columns", value=",".join(repeated))
        clash = [k for k in kept if k in self.columns[len(kept):]]
        if clash:
            raise InputDataError(
                f"keep_columns: {', '.join(repr(k) for k in clash)} would clash with the output "
                f"column{'s' if len(clash) > 1 else ''} of that name; rename "
                f"{'them' if len(clash) > 1 else 'it'} in the input", argument="keep_columns",
                value=",".join(clash))
        self.kept = list(kept)
        self.class_names = [str(n) for n in class_names]
        self.with_scores = with_scores
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        handle, self.staging = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                                dir=parent)
        os.close(handle)
        self.rows = 0

    def write(self, kept: List[List[str]], class_name: Sequence[str], class_id: np.ndarray,
              probabilities: np.ndarray, scores: Optional[np.ndarray]) -> None:
        """Adds a batch: per row its kept values, decided class (multi-label: the decided labels'
        names and the multi-hot decisions `[B, L]`) and per-class figures."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Completes the temporary file."""

    def commit(self) -> str:
        """Completes the file and renames it to `path`; returns `path`."""
        self._finish()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.staging, 0o666 & ~umask)  # mkstemp's file is private; a result is not
        os.replace(self.staging, self.path)
        return self.path

    def discard(self) -> None:
        """Removes the temporary file (a failed run)."""
        try:
            os.remove(self.staging)
        except OSError:
            pass


class CsvResultWriter(ResultWriter):
    """One CSV row per input row, streamed (see `ResultWriter`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stream = open(self.staging, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._stream)
        self._writer.writerow(self.columns)

    def write(self, kept, class_name, class_id, probabilities, scores) -> None:
        """See `ResultWriter.write`."""
        figures = [np.char.mod(_FLOAT_FORMAT, probabilities).tolist()]
        if self.with_scores:
            figures.append(np.char.mod(_FLOAT_FORMAT, scores).tolist())
        ids = [[ident] for ident in class_id.tolist()] if class_id.ndim == 1 else class_id.tolist()
        self._writer.writerows(
            row + [name] + ident + [v for part in parts for v in part]
            for row, name, ident, *parts in zip(kept, class_name, ids, *figures))
        self.rows += len(ids)

    def _finish(self) -> None:
        self._stream.close()

    def discard(self) -> None:
        """See `ResultWriter.discard`."""
        self._stream.close()
        super().discard()


class NpzResultWriter(ResultWriter):
    """Arrays `class_id [N]`, `class_name [N]`, `probabilities [N, K]`, `decision_scores [N, K]`
    (with an operating point), `class_names [K]`, `keep_columns [C]` and `kept [N, C]` (text);
    held in memory until `commit` (multi-label: `labels [N]` and `decisions [N, L]` for the first
    two)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._parts: dict = {"kept": [], "class_name": [], "class_id": [], "probabilities": [],
                             "decision_scores": []}

    def write(self, kept, class_name, class_id, probabilities, scores) -> None:
        """See `ResultWriter.write`."""
        self._parts["kept"].append(np.asarray(kept, dtype=str).reshape(len(class_id), len(self.kept)))
        self._parts["class_name"].append(np.asarray(class_name, dtype=str))
        self._parts["class_id"].append(np.asarray(class_id, np.int32))
        self._parts["probabilities"].append(np.asarray(probabilities, np.float32))
        if self.with_scores:
            self._parts["decision_scores"].append(np.asarray(scores, np.float32))
        self.rows += len(class_id)

    def _finish(self) -> None:
        k = len(self.class_names)
        empty = {"kept": np.zeros((0, len(self.kept)), str), "class_name": np.zeros(0, str),
                 "class_id": np.zeros((0, k) if self.multi_label else 0, np.int32),
                 "probabilities": np.zeros((0, k), np.float32),
                 "decision_scores": np.zeros((0, k), np.float32)}
        arrays = {key: np.concatenate(parts) if parts else empty[key]
                  for key, parts in self._parts.items()
                  if key != "decision_scores" or self.with_scores}
        if self.multi_label:
            arrays["labels"], arrays["decisions"] = arrays.pop("class_name"), arrays.pop("class_id")
        with open(self.staging, "wb") as stream:
            np.savez(stream, class_names=np.asarray(self.class_names, dtype=str),
                     keep_columns=np.asarray(self.kept, dtype=str), **arrays)


def open_writer(path: str, kept: Sequence[str], class_names: Sequence[str],
                with_scores: bool, multi_label: bool = False) -> ResultWriter:
    """The writer for `path`'s format (`output_format`)."""
    kind = CsvResultWriter if output_format(path) == ".csv" else NpzResultWriter
    return kind(path, kept, class_names, with_scores, multi_label)
