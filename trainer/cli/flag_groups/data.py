"""Flags of the data: which files or benchmark, how they are read, what is held out.

Each flag is a field of `trainer.cli.config.DataConfig`.
"""

from absl import flags

TITLE = "Data"

flags.DEFINE_string(
    "dataset", "synthetic",
    "Training data: 'synthetic' (built-in long-tailed generator), 'npz:PATH' (arrays x, y), "
    "'csv:PATH' (header row, see --label_column), 'tfrecord:GLOB' or 'fashion_mnist_lt'.")
flags.DEFINE_string(
    "eval_dataset", None,
    "Evaluation data, same syntax as --dataset. Default: a fixed stratified split of the "
    "training data (--validation_split).")
flags.DEFINE_float("validation_split", 0.2,
                   "Fraction of each class held out for evaluation when --eval_dataset is not given.")
flags.DEFINE_string("label_column", "label", "Label column of CSV data.")
flags.DEFINE_string("feature_key", "features", "tf.train.Example key of the float feature vector.")
flags.DEFINE_string("label_key", "label", "tf.train.Example key of the int64 label.")
flags.DEFINE_float("imbalance_ratio", 100.0,
                   "Largest over smallest class count of synthetic and fashion_mnist_lt.")
flags.DEFINE_string("data_dir", None, "Directory of the Fashion-MNIST files (default: Debian's).")
flags.DEFINE_integer("num_classes", None,
                     "Number of classes; default: largest label + 1 in the training data.")
