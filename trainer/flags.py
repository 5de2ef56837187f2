"""Command-line flags of `python -m trainer.main`, grouped by what they control.

Every flag is documented here; `--helpfull` prints them all.
"""

from absl import flags

from trainer.models import MODEL_NAMES
from trainer.strategies import STRATEGY_NAMES

LOSS_NAMES = ("cross_entropy", "focal", "sigmoid_focal", "logit_adjusted", "balanced_softmax", "ldam")
REWEIGHTING_NAMES = ("none", "manual", "inverse_frequency", "effective_number", "target_class",
                     "drw", "eqlv2")

# Data.
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
                   "Largest over smallest class count of fashion_mnist_lt.")
flags.DEFINE_string("data_dir", None, "Directory of the Fashion-MNIST files (default: Debian's).")
flags.DEFINE_integer("num_classes", None,
                     "Number of classes; default: largest label + 1 in the training data.")

# Model and optimisation.
flags.DEFINE_enum("model", None, list(MODEL_NAMES),
                  "Model; default 'cnn' for image inputs and 'mlp' for feature vectors.")
flags.DEFINE_integer("epochs", 10, "Number of epochs (a resumed run trains the remaining ones).")
flags.DEFINE_integer("batch_size", 256, "Global batch size (split across replicas).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("steps_per_loop", 100, "Training steps per compiled call.")
flags.DEFINE_integer("seed", 0, "Seed of data shuffling and weight initialisation.")

# Loss and reweighting.
flags.DEFINE_enum("loss", "cross_entropy", list(LOSS_NAMES), "Per-example loss.")
flags.DEFINE_enum("reweighting", "none", list(REWEIGHTING_NAMES),
                  "Per-class rule applied to the gradient at the logits.")
flags.DEFINE_list("class_weights", None,
                  "Comma-separated per-class weights for --reweighting=manual.")
flags.DEFINE_integer("target_class", None,
                     "Class whose recall matters (--reweighting=target_class, recall targets).")
flags.DEFINE_float("target_weight", 5.0, "Gradient multiplier of --target_class.")
flags.DEFINE_float("beta", 0.9999, "Beta of --reweighting=effective_number (Cui et al. 2019).")
flags.DEFINE_float("gamma", 2.0, "Focusing parameter of the focal losses.")
flags.DEFINE_float("tau", 1.0, "Temperature of --loss=logit_adjusted.")
flags.DEFINE_integer("drw_start_epoch", 5, "First epoch of the deferred rule (--reweighting=drw).")
flags.DEFINE_enum("drw_rule", "effective_number", ["inverse_frequency", "effective_number"],
                  "Rule that --reweighting=drw switches on.")

# Distribution and output.
flags.DEFINE_enum("strategy", "default", list(STRATEGY_NAMES), "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_devices", 1,
                     "Split the CPU into this many logical devices (lets 'mirrored' run without GPUs).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
flags.DEFINE_string("model_dir", "./runs/default",
                    "Run directory: checkpoints, TensorBoard events, metrics.json. "
                    "A run started again on the same directory resumes.")

FLAGS = flags.FLAGS
