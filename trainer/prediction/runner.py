"""`predict_file`: an exported model over every row of an input file, streamed, with a progress line.

Memory is bounded by a few batches (CSV and TFRecord inputs, CSV output): rows are read,
served and written batch by batch in input order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from trainer.checks import ArgumentError, check_positive_integer
from trainer.export import SERVING_SIGNATURE, load_serving_function

from .inputs import open_input
from .outputs import open_writer, output_format

# Seconds between two progress lines.
PROGRESS_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class PredictionSummary:
    """What a prediction wrote.

    Attributes:
      output: The file written.
      rows: Rows written (one per input row).
      class_counts: Rows decided as each class, by class name, in class order (multi-label:
        rows decided positive for each label; labels per position: positions).
      columns: The output's columns.
      seconds: Wall time of the pass.
    """

    output: str
    rows: int
    class_counts: Dict[str, int]
    columns: List[str]
    seconds: float

    def describe(self) -> str:
        """`Wrote 1,000 rows to pred.csv in 2.1s; decided: a 900, b 100`."""
        counts = ", ".join(f"{name} {count:,}" for name, count in self.class_counts.items())
        return f"Wrote {self.rows:,} rows to {self.output} in {self.seconds:.1f}s; decided: {counts}"


def _text(values: np.ndarray) -> List[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def predict_file(export_dir: str, input: str, output: str, *,  # the --input flag
                 keep_columns: Sequence[str] = (), batch_size: int = 1024, feature_key: str = "features",
                 channels_first: Optional[bool] = None, refuse_missing: bool = False,
                 progress_seconds: float = PROGRESS_SECONDS) -> PredictionSummary:
    """Predicts every row of `input` with the model exported to `export_dir`; writes `output`.

    A model trained on a table is fed raw named columns (its `serving_default` signature:
    the SavedModel's own encoder runs); other models `features`. See `trainer.prediction.inputs`
    for what each input kind must hold and `trainer.prediction.outputs` for the columns.

    Args:
      export_dir: The exported model (`trainer.export.export_saved_model`).
      input: `csv:PATH`, `npz:PATH` or `tfrecord:GLOB`.
      output: The result file, `.csv` or `.npz`; written atomically, only when every row was read.
      keep_columns: Input columns (NPZ arrays, TFRecord keys) copied to the output verbatim.
      batch_size: Rows per model call.
      feature_key: TFRecord: the float feature key of the training data.
      channels_first: NPZ: `x` is (N, C, H, W), as the training was told.
      refuse_missing: CSV: refuse missing feature cells (the training used `missing='error'`).
      progress_seconds: Seconds between progress lines (rows done, rows/s) on the log.

    Returns:
      What was written.

    Raises:
      InputDataError, ArgumentError: naming the argument, file, row, column and value, before
        `output` is written.
      ValueError: `export_dir` holds no exported model.
    """
    batch_size = check_positive_integer(batch_size, "batch_size")
    output_format(output)
    serve, metadata = load_serving_function(export_dir, SERVING_SIGNATURE)
    class_names = [str(n) for n in metadata["class_names"]]
    with_scores = metadata.get("operating_point") is not None
    reader = open_input(input, metadata, keep_columns=keep_columns, batch_size=batch_size,
                        feature_key=feature_key, channels_first=channels_first,
                        refuse_missing=refuse_missing)
    if os.path.realpath(output) in {os.path.realpath(p) for p in reader.paths}:
        raise ArgumentError("output", output, "must not be the input file")
    multi_label = metadata.get("head") == "multi_label"
    per_position = metadata.get("label_shape") is not None
    if per_position and output_format(output) != ".npz":
        raise ArgumentError("output", output, f"must end in .npz for a model with labels per position "
                                              f"(class_id per input row is {metadata['label_shape']})")
    writer = open_writer(output, reader.kept_names, class_names, with_scores, multi_label)
    counts = np.zeros(len(class_names), np.int64)
    started = last = time.monotonic()
    try:
        for batch in reader.batches():
            served = serve(**batch.inputs)
            if multi_label:  # multi-hot decisions [B, L]; `labels` names the decided ones
                decided, names = served["decisions"].numpy(), served["labels"].numpy()
                counts += decided.sum(axis=0)
            else:
                decided, names = served["class_id"].numpy(), served["class_name"].numpy()
                counts += np.bincount(decided.reshape(-1), minlength=len(class_names))
            names = np.char.decode(names.astype(bytes), "utf-8") if per_position else _text(names)
            writer.write(batch.kept, names, decided, served["probabilities"].numpy(),
                         served["decision_scores"].numpy() if with_scores else None)
            now = time.monotonic()
            if now - last >= progress_seconds:
                last = now
                logging.info("predicted %s rows (%s rows/s)", f"{writer.rows:,}",
                             f"{writer.rows / max(now - started, 1e-9):,.0f}")
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return PredictionSummary(output=output, rows=writer.rows,
                             class_counts={n: int(c) for n, c in zip(class_names, counts)},
                             columns=writer.columns, seconds=time.monotonic() - started)
