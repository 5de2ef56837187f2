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
flags.DEFINE_integer("ignore_label", None,
                     "Labels per position (NPZ 'y' of shape [N, H, W] or [N, T], one class per pixel "
                     "or token): the label of positions left out of the loss and every metric (e.g. "
                     "255 or -1); it must not be a class index.")
flags.DEFINE_list("label_columns", None,
                  "Multi-label data: the yes/no label columns of a CSV file (cells 0/1 or "
                  "true/false), or the names of the columns of an NPZ file's multi-hot 'y' [N, L]. "
                  "Each label gets a sigmoid logit; --target_class=<label> --target_recall=R chooses "
                  "that label's cut-off on the validation split. Replaces --label_column.")
flags.DEFINE_list("feature_columns", None,
                  "CSV: the feature columns (comma-separated); default: every column but the label "
                  "and --weight_column. The run logs the list it uses.")
flags.DEFINE_list("exclude_columns", [],
                  "CSV: columns never used as features (IDs, leaks, sibling labels).")
flags.DEFINE_list("categorical_columns", [],
                  "CSV: columns read as categories even though every cell is a number (integer "
                  "codes). A column with any cell that is not a number is categorical anyway.")
flags.DEFINE_string("weight_column", None,
                    "CSV: a column of per-row sample weights (finite, >= 0), never a feature; each "
                    "row's gradient is multiplied by it, together with the class rule.")
flags.DEFINE_enum("missing", "impute", ["impute", "error"],
                  "CSV missing cells: 'impute' (numeric: the training mean plus a 0/1 'was missing' "
                  "input; categorical: a category of its own) or 'error' (refuse them).")
flags.DEFINE_list("missing_values", None,
                  "CSV cell spellings read as missing, besides the empty cell (case-insensitive); "
                  "default: NA, N/A, NaN, null, None, ?.")
flags.DEFINE_integer("max_vocabulary", 1000,
                     "CSV: most distinct training values of a categorical column; a column with more "
                     "is refused (an ID or free text: exclude it, or raise this).")
flags.DEFINE_integer("min_category_count", 1,
                     "CSV: training rows a category needs for an input of its own; rarer categories "
                     "(and unseen ones) share the column's 'other' input.")
flags.DEFINE_string("feature_key", "features", "tf.train.Example key of the float feature vector.")
flags.DEFINE_string("label_key", "label", "tf.train.Example key of the int64 label.")
flags.DEFINE_float("imbalance_ratio", 100.0,
                   "Largest over smallest class count of synthetic and fashion_mnist_lt.")
flags.DEFINE_string("data_dir", None, "Directory of the Fashion-MNIST files (default: Debian's).")
flags.DEFINE_integer("num_classes", None,
                     "Number of classes; default: largest label + 1 in the training data.")
flags.DEFINE_list(
    "class_names", None,
    "The classes, comma-separated. String labels: their order (exactly the labels of the data; "
    "default: sorted, numbers by value before text). Integer labels (integral numbers such as "
    "2.0 too): the names of classes 0, 1, ... (one per class). Logged, saved in metrics.json "
    "and the export; flags that take a class (--target_class) accept these names.")
flags.DEFINE_bool(
    "channels_first", None,
    "NPZ images: true when x is (N, C, H, W) (transposed to (N, H, W, C) on load); false to take "
    "x as given. Default: as given, but x that looks channels-first is refused.")
flags.DEFINE_string(
    "weight_key", None,
    "Per-example sample weights (finite, >= 0; each example's gradient is multiplied by its "
    "weight, together with the class rule) of npz: and tfrecord: data. NPZ: the array of that "
    "name; by default the array 'w' when the file has one (the Data: line says so), 'none' to "
    "ignore it. TFRecord: the key of each record's one float weight. CSV: --weight_column.")
flags.DEFINE_bool(
    "weighted_metrics", False,
    "Count the sample weights in the reported metrics: each cell of the final confusion matrices "
    "(metrics.json, the end-of-run table, TensorBoard final/*, trainer.evaluate's evaluation.json) "
    "sums the weights of its rows, and recall, precision, F1 and support follow. Default: cells "
    "count rows (the weights act on training only). metrics.json says which ('weighted'). The "
    "per-epoch figures, the operating point's and the calibration's figures count rows either way.")
