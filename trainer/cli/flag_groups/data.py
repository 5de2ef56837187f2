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
    "Evaluation (reporting) data, same syntax as --dataset. Default: the benchmarks' own test "
    "sets; for files, a stratified held-out test split (--test_split), disjoint from the "
    "validation split.")
flags.DEFINE_float("validation_split", 0.2,
                   "Fraction of each class held out to choose: the recall-target controller, the "
                   "operating point, early stopping and the LR schedule read it, never the test data.")
flags.DEFINE_float("test_split", 0.2,
                   "Fraction of each class of a file held out to report when --eval_dataset is not "
                   "given (1 - validation_split - test_split trains). Unused for synthetic and "
                   "fashion_mnist_lt (their own test sets) and with --eval_dataset.")
flags.DEFINE_string("label_column", "label", "Label column of CSV data.")
flags.DEFINE_string("feature_key", "features", "tf.train.Example key of the float feature vector.")
flags.DEFINE_string("label_key", "label", "tf.train.Example key of the int64 label.")
flags.DEFINE_float("imbalance_ratio", 100.0,
                   "Largest over smallest class count of synthetic and fashion_mnist_lt.")
flags.DEFINE_string("data_dir", None, "Directory of the Fashion-MNIST files (default: Debian's).")
flags.DEFINE_integer("num_classes", None,
                     "Number of classes; default: largest label + 1 in the training data.")
