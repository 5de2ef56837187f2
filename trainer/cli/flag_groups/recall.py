"""Flags of recall targets and decisions: the controller, recall callbacks, the calibrated operating point.

Each flag is a field of `trainer.cli.config.RecallConfig`; `trainer.cli.build` says which data each part sees.
"""

from typing import Any, Tuple, Union

from absl import flags

TITLE = "Recall targets and decisions"


class RecallsParser(flags.ArgumentParser):
    """`--target_recall`: one number (a float), or comma-separated numbers (a tuple of floats)."""

    syntactic_help = "a number, or comma-separated numbers (one per --target_class)"

    def parse(self, argument: Any) -> Union[float, Tuple[float, ...]]:
        if isinstance(argument, (int, float)) and not isinstance(argument, bool):
            return float(argument)
        items = list(argument) if isinstance(argument, (list, tuple)) else str(argument).split(",")
        values, bad = [], []
        for item in items:
            try:
                values.append(float(item))
            except (TypeError, ValueError):
                bad.append(str(item))
        if bad:
            raise ValueError(f"not a number: {', '.join(repr(item) for item in bad)} (give a recall, or "
                             f"comma-separated recalls, one per --target_class)")
        return values[0] if len(values) == 1 else tuple(values)

    def flag_type(self) -> str:
        return "float"  # one value's type (TensorBoard's HParams column): comma lists are text there


class RecallsSerializer(flags.ArgumentSerializer):
    """Writes `RecallsParser`'s values back as the flag's text."""

    def serialize(self, value: Any) -> str:
        return ",".join(repr(v) for v in value) if isinstance(value, tuple) else repr(value)


flags.DEFINE_string("target_class", None,
                    "Class whose recall matters (--reweighting=target_class, recall targets): its "
                    "index or its name (--class_names, or the data's string labels). A name wins "
                    "over an index: with classes named 1.5, 2.5, '2.5' is that class, '1' class 1. "
                    "Several recall targets: comma-separated classes with as many --target_recall "
                    "values (--target_class=3,4 --target_recall=0.9,0.8).")
flags.DEFINE(RecallsParser(), "target_recall", None,
             "Recall --target_class must reach: drives --reweighting=recall_target and the "
             "calibrated operating point. Comma-separated recalls, one per --target_class, choose "
             "per-class logit offsets jointly after training so that every target class reaches its "
             "recall (the controller takes one target); metrics.json says which targets cannot be met "
             "together, and what each reaches.", serializer=RecallsSerializer())
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
                    "min_recall, balanced_accuracy, macro_f1... (<k>: a class index or name). "
                    "Default: recall/<target_class> (several target classes: min_recall), "
                    "else min_recall. With a recall feature on, per-epoch validation uses the "
                    "held-out split of the training data.")
flags.DEFINE_integer("early_stopping_patience", None,
                     "Stop after this many evaluations without improvement of --monitor and "
                     "restore the best weights (off by default).")
flags.DEFINE_float("stop_at_recall", None, "Stop as soon as --monitor reaches this value.")
flags.DEFINE_integer("reduce_lr_patience", None,
                     "Multiply the learning rate by --reduce_lr_factor after this many "
                     "evaluations without improvement of --monitor (off by default).")
flags.DEFINE_float("reduce_lr_factor", 0.5, "Learning-rate factor of --reduce_lr_patience.")
flags.DEFINE_bool("calibrate", None,
                  "After training, choose on the validation split (or on out-of-fold logits, "
                  "--decision_folds) the logit offset or threshold that reaches --target_recall "
                  "(see --decision_confidence) with the best precision (or, with "
                  "--recall_target_mode=worst_class and no target, the "
                  "per-class logit offsets that raise the smallest recall); save it as "
                  "operating_point.json, apply it in predict and the export (on by default when "
                  "--target_recall is given or --reweighting=recall_target raises the worst "
                  "class).")
flags.DEFINE_float("max_balanced_accuracy_drop", 0.0,
                   "Worst-class calibration: the most held-out balanced accuracy the per-class "
                   "offsets may give up to raise the smallest recall (0: none; 1: no bound).")
flags.DEFINE_float(
    "decision_confidence", 0.5,
    "Target-recall calibration: 0.5 (default) places the cut-off at a smoothed (Harrell-Davis) "
    "estimate of the score the target recall needs, so new data get about the target recall "
    "(median-unbiased) with the precision the model allows; a value in (0.5, 1) instead takes "
    "the best-precision cut-off whose exact one-sided lower confidence bound of the recall "
    "reaches the target (e.g. 0.9: the target is met on about 90% of new samples, at a "
    "precision cost), and says so when the data are too few to show it (then the estimate "
    "is used). metrics.json reports a 90% interval of the recall and precision either way.")
flags.DEFINE_enum(
    "decision_estimator", "harrell_davis", ["harrell_davis", "empirical"],
    "Target-recall calibration: how the cut-off between the scores of the target class is "
    "estimated: 'harrell_davis' (smoothed quantile, steadier on few examples) or 'empirical' "
    "(an order statistic).")
flags.DEFINE_integer(
    "decision_folds", None,
    "Choose the operating point on out-of-fold logits of every training row instead of the "
    "held-out split: train this many more models, each on all but one stratified fold of the "
    "training data (checkpointed in <model_dir>/folds/<k>; a killed run resumes at the fold it was "
    "in), and calibrate on each row's logits from the model that did not train on it. "
    "--decision_model says which model is served. 0: off. "
    "Default: 5 when the validation split has too few --target_class examples to show "
    "--target_recall (even catching every one of them gives an exact 90% lower confidence bound "
    "below --target_recall: fewer than 22 for 0.9), else off.")
flags.DEFINE_enum(
    "decision_model", None, ["ensemble", "refit"],
    "With --decision_folds: the model the cross-fitted operating point is served on (and the test "
    "split measured on). 'refit' (default): the model trained on all the training rows; "
    "'ensemble': the mean of the fold models' logits (K forward passes per prediction). They "
    "served the same recall and precision on new data (README 'Rare-class decisions'). Without "
    "cross-fitting the refit is the only model.")
flags.DEFINE_bool(
    "calibrate_probabilities", True,
    "After training, fit temperature scaling (Guo et al. 2017) on the data that chooses the "
    "operating point (the validation split, or the out-of-fold logits of --decision_folds; never "
    "the test split), after undoing the prior shift the training introduced (class weights on "
    "the gradient: -log w; a logit-adjusted or balanced-softmax loss, or recall-target margins: "
    "the logit shift the loss saw). Saves <model_dir>/calibration.json, reports per-class and "
    "overall expected calibration error on the evaluation split in metrics.json, and the export "
    "serves the calibrated probabilities. Skipped (said in metrics.json) without a held-out "
    "split (--eval_dataset).")
flags.DEFINE_string(
    "cost_matrix", None,
    "Path of a K x K CSV of decision costs: row i, column j is the cost of deciding class j when "
    "the true class is i (K: the number of classes). Either K rows of K numbers, or a first row "
    "naming the classes in index order (class names or indices) followed by those rows. The "
    "served decision becomes the class of least expected cost under the calibrated "
    "probabilities (--calibrate_probabilities; the plain softmax without it); metrics.json "
    "reports the measured and expected cost on the evaluation split next to argmax's. Not with "
    "--target_recall or --recall_target_mode=worst_class (each is a decision rule of its own).")
