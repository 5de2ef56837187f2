"""Command-line flags of `python -m trainer.main`, grouped by what they control.

Every flag is documented here; `--helpfull` prints them all.
"""

from absl import flags

from losses.registry import DRW_RULE_NAMES, LOSS_NAMES, RULE_NAMES
from trainer.models import MODEL_NAMES
from trainer.strategies import STRATEGY_NAMES

# recall_target is built by callbacks/ (a rule plus the callback that drives it).
REWEIGHTING_NAMES = RULE_NAMES + ("recall_target",)

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
flags.DEFINE_float("ldam_scale", 1.0,
                   "Logit scale of --loss=ldam. The paper's 30 assumes a cosine-normalised last "
                   "layer; the built-in models end in a plain dense layer, for which 1 fits.")
flags.DEFINE_integer("drw_start_epoch", 5, "First epoch of the deferred rule (--reweighting=drw).")
flags.DEFINE_enum("drw_rule", "effective_number", list(DRW_RULE_NAMES),
                  "Rule that --reweighting=drw switches on.")

# Recall-driven training (callbacks/cli.py says which data each part sees).
flags.DEFINE_float("target_recall", None,
                   "Recall --target_class must reach: drives --reweighting=recall_target and the "
                   "calibrated operating point.")
flags.DEFINE_enum("recall_target_mode", "target_class", ["target_class", "worst_class"],
                  "--reweighting=recall_target: move class weights until --target_class reaches "
                  "--target_recall, or raise the worst class's recall. With worst_class and no "
                  "target, --calibrate chooses per-class logit offsets that raise the smallest "
                  "held-out recall (with any loss or rule).")
flags.DEFINE_enum("recall_target_adjust", None, ["weights", "margins"],
                  "--reweighting=recall_target: scale each example's gradient by its class "
                  "weight w, or shift the logits inside the training loss by -log w (margins: "
                  "keep moving the decision boundary once the model fits its training data). "
                  "Default: weights for --recall_target_mode=target_class, margins for "
                  "worst_class.")
flags.DEFINE_float("recall_target_step_size", None,
                   "--reweighting=recall_target: the controller's exponentiated-gradient step "
                   "(> 0). Default: 1 with weights, 0.5 with margins.")
flags.DEFINE_string("monitor", None,
                    "Metric the recall callbacks follow, without the val_ prefix: recall/<k>, "
                    "min_recall, balanced_accuracy, macro_f1... Default: recall/<target_class>, "
                    "else min_recall. With a callback on, per-epoch validation uses the held-out "
                    "split of the training data.")
flags.DEFINE_integer("early_stopping_patience", None,
                     "Stop after this many evaluations without improvement of --monitor and "
                     "restore the best weights (off by default).")
flags.DEFINE_float("stop_at_recall", None, "Stop as soon as --monitor reaches this value.")
flags.DEFINE_integer("reduce_lr_patience", None,
                     "Multiply the learning rate by --reduce_lr_factor after this many "
                     "evaluations without improvement of --monitor (off by default).")
flags.DEFINE_float("reduce_lr_factor", 0.5, "Learning-rate factor of --reduce_lr_patience.")
flags.DEFINE_bool("calibrate", None,
                  "After training, choose on the held-out split the logit offset or threshold "
                  "that reaches --target_recall (at 90% one-sided confidence) with the best "
                  "precision (or, with --recall_target_mode=worst_class and no target, the "
                  "per-class logit offsets that raise the smallest recall); save it as "
                  "operating_point.json, apply it in predict and the export (on by default when "
                  "--target_recall is given or --reweighting=recall_target raises the worst "
                  "class).")
flags.DEFINE_float("max_balanced_accuracy_drop", 0.0,
                   "Worst-class calibration: the most held-out balanced accuracy the per-class "
                   "offsets may give up to raise the smallest recall (0: none; 1: no bound).")

# Distribution and output.
flags.DEFINE_enum("strategy", "default", list(STRATEGY_NAMES), "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_devices", 1,
                     "Split the CPU into this many logical devices (lets 'mirrored' run without GPUs).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
flags.DEFINE_string("model_dir", "./runs/default",
                    "Run directory: checkpoints, TensorBoard events, metrics.json. "
                    "A run started again on the same directory resumes.")

# Faults and reproducibility (trainer/fault_tolerance.py, docs/DISTRIBUTED.md).
flags.DEFINE_bool("deterministic", False,
                  "Seed everything with --seed and turn on TensorFlow's op determinism: the same "
                  "command gives the same weights, and a run resumed after a crash finishes like "
                  "an uninterrupted one.")
flags.DEFINE_bool("skip_nonfinite_steps", False,
                  "Skip (and count) steps whose loss or gradients are NaN or Inf instead of "
                  "stopping with an error (exit status 3).")

flags.DEFINE_string("export_dir", None,
                    "Where the SavedModel goes (default <model_dir>/export); 'none' skips the export.")

FLAGS = flags.FLAGS


def progress_verbosity() -> int:
    """Verbosity of the progress line: 1 unless --verbosity is given explicitly.

    absl sets --verbosity to 0 (INFO) when it is absent, so "absent" and an
    explicit `--verbosity=0` look alike by value: `--verbosity=0` (or lower)
    given on the command line silences the progress line and info logs.
    """
    return FLAGS.verbosity if FLAGS["verbosity"].present else 1
