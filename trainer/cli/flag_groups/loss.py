"""Flags of the loss and the per-class reweighting rule applied to dL/dlogits.

Each flag is a field of `trainer.cli.config.LossConfig`.
"""

from absl import flags

from losses.registry import DRW_RULE_NAMES, LOSS_NAMES, RULE_NAMES

TITLE = "Loss and reweighting"

# recall_target is built by trainer.cli.build (a rule plus the callback that drives it).
REWEIGHTING_NAMES = RULE_NAMES + ("recall_target",)

flags.DEFINE_enum(
    "loss", "auto", ["auto", *LOSS_NAMES],
    "Per-example loss. 'auto': logit_adjusted (Menon et al. 2021: cross-entropy on logits plus "
    "tau * log class prior, which targets the balanced error; measured best worst-class recall "
    "on the built-in data, README) when --reweighting=none; with a reweighting rule, "
    "cross_entropy (sigmoid_focal for eqlv2), so the rule alone handles the imbalance. "
    "cross_entropy is the plain loss (binary cross-entropy for a sigmoid head or "
    "--label_columns). sigmoid_focal and asymmetric are losses of sigmoid logits: "
    "--label_columns or --binary_head=sigmoid.")
flags.DEFINE_enum("reweighting", "none", list(REWEIGHTING_NAMES),
                  "Per-class rule applied to the gradient at the logits.")
flags.DEFINE_list("class_weights", None,
                  "Comma-separated per-class weights for --reweighting=manual.")
flags.DEFINE_float("target_weight", 5.0,
                   "Gradient multiplier of --target_class (--reweighting=target_class).")
flags.DEFINE_float("beta", 0.9999, "Beta of --reweighting=effective_number (Cui et al. 2019).")
flags.DEFINE_float("gamma", 2.0, "Focusing parameter of the focal losses.")
flags.DEFINE_float("tau", 1.0, "Temperature of --loss=logit_adjusted.")
flags.DEFINE_float("ldam_scale", 1.0,
                   "Logit scale of --loss=ldam. The paper's 30 assumes a cosine-normalised last "
                   "layer; the built-in models end in a plain dense layer, for which 1 fits.")
flags.DEFINE_float("asl_gamma_pos", 0.0,
                   "Focusing parameter of the positives of --loss=asymmetric (Ridnik et al. 2021).")
flags.DEFINE_float("asl_gamma_neg", 4.0, "Focusing parameter of the negatives of --loss=asymmetric.")
flags.DEFINE_float("asl_clip", 0.05,
                   "Probability margin of --loss=asymmetric: a negative whose probability is below it "
                   "adds no loss.")
flags.DEFINE_integer("drw_start_epoch", 5, "First epoch of the deferred rule (--reweighting=drw).")
flags.DEFINE_enum("drw_rule", "effective_number", list(DRW_RULE_NAMES),
                  "Rule that --reweighting=drw switches on.")
