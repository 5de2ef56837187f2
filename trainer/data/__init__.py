"""The input layer: `load_data` turns a dataset spec into train/eval `tf.data` pipelines.

Sources: synthetic, fashion_mnist_lt, npz:PATH, csv:PATH, tfrecord:GLOB (see `sources.load_data`).
"""

# Modules, one job each: `sources` (specs, `load_data`), `bundle` (`DataSplit`, `DataBundle`),
# `arrays` (in-memory data, NPZ), `csv_source` / `tfrecord_source` (streamed files), `streaming`
# (their statistics pass and pipeline), `splits` (stratified splits), `stats` (counts, moments,
# JSON cache), `labels` (label -> class index), `synthetic`, `fashion_mnist`, `errors`.

from .bundle import DataBundle, DataSplit
from .errors import DataArgumentError, InputDataError
from .sources import VALID_FORMS, load_data, parse_spec

__all__ = ["DataArgumentError", "DataBundle", "DataSplit", "InputDataError", "VALID_FORMS",
           "load_data", "parse_spec"]
