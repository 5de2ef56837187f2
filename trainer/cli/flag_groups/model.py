"""Flags of the model: which architecture the run builds.

Each flag is a field of `trainer.cli.config.ModelConfig`.
"""

from absl import flags

from trainer.models import MODEL_NAMES

TITLE = "Model"

flags.DEFINE_enum("model", None, list(MODEL_NAMES),
                  "Model; default 'cnn' for image inputs, 'mlp' for feature vectors and 'fcn' (fully "
                  "convolutional, logits per position) for labels per position (NPZ 'y' [N, H, W] "
                  "or [N, T]).")
flags.DEFINE_list("hidden_units", None,
                  "Widths of the MLP's hidden ReLU layers, comma-separated; default 256,256. "
                  "Categorical columns reach the first layer one-hot, so its rows for them act as "
                  "a learned embedding of each category. Refused for the CNN.")
flags.DEFINE_float("dropout", 0.0,
                   "Dropout rate after each hidden layer of the MLP (after the dense layer of the "
                   "CNN), in [0, 1). Dropout acts on activations, not on the loss, so a reweighting "
                   "rule's per-class scale leaves its strength unchanged.")
flags.DEFINE_enum(
    "binary_head", "softmax", ["softmax", "sigmoid"],
    "Two-class data: 'softmax' keeps two logits; 'sigmoid' trains one logit z with "
    "p(class 1) = sigmoid(z) (binary cross-entropy; the other losses see the two-class logits "
    "[0, z], so e.g. logit adjustment shifts z by tau * log(n1 / n0)). Decisions, the operating "
    "point (a threshold on z) and the export (probabilities of both classes) are the same either "
    "way. Refused for more than two classes.")
