"""The input layer: `load_data` turns a dataset spec into train/validation/eval `tf.data` pipelines.

Sources: synthetic, fashion_mnist_lt, npz:PATH, csv:PATH, tfrecord:GLOB (see `sources.load_data`).
"""

# Modules, one job each: `sources` (specs, `load_data`), `bundle` (`DataSplit`, `DataBundle`),
# `arrays` (in-memory data, NPZ), `csv_source` / `tfrecord_source` (streamed files), `schema`
# (a table's columns), `column_scan` (the pass that infers it), `encoding` (cells -> model inputs,
# shared with the export), `streaming`
# (their statistics pass and pipeline), `splits` (stratified train/validation/test splits and
# K folds), `stats` (counts, moments, JSON cache), `labels` (label -> class index), `synthetic`,
# `fashion_mnist`, `errors`; `multi_label` (several 0/1 label columns -> multi-hot [N, L]);
# `per_position` (NPZ labels per pixel or token, y [N, H, W] / [N, T]).

from .bundle import DataBundle, DataSplit
from .csv_source import ColumnOptions
from .errors import DataArgumentError, DataWarning, InputDataError
from .multi_label import load_multi_label_data
from .per_position import load_per_position_data
from .schema import DEFAULT_MISSING_VALUES, TabularSchema
from .sources import TINY_CLASS_SIZE, VALID_FORMS, load_data, parse_spec
from .splits import DEFAULT_TEST_SPLIT, stratified_fold_ids, stratified_folds

__all__ = ["ColumnOptions", "DEFAULT_MISSING_VALUES", "DEFAULT_TEST_SPLIT", "DataArgumentError",
           "DataBundle", "DataSplit", "DataWarning", "InputDataError", "TINY_CLASS_SIZE",
           "TabularSchema", "VALID_FORMS", "load_data", "load_multi_label_data",
           "load_per_position_data", "parse_spec",
           "stratified_fold_ids", "stratified_folds"]
