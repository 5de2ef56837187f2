"""Command line: train a classifier on imbalanced data and report per-class metrics.

Run `python -m trainer.main --helpfull` for every flag.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from absl import app, logging

from trainer.flags import FLAGS, progress_verbosity  # noqa: F401  (defines the flags)


class UsageError(ValueError):
    """A flag value or input the run cannot use; printed without a traceback."""


def _parse_class_weights(values: Optional[List[str]]) -> Optional[List[float]]:
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError as error:
        raise UsageError(f"--class_weights must be comma-separated numbers, got {','.join(values)!r}.") from error


def _check_flag_combinations() -> None:
    uses_eqlv2 = FLAGS.reweighting == "eqlv2" or (
        FLAGS.reweighting == "drw" and FLAGS.drw_rule == "eqlv2")
    if uses_eqlv2 and FLAGS.loss != "sigmoid_focal":
        raise UsageError(
            f"EQL v2 (--reweighting={FLAGS.reweighting}) needs a sigmoid (one-vs-all) loss: use "
            f"--loss=sigmoid_focal (--gamma=0 for plain sigmoid cross-entropy), not "
            f"--loss={FLAGS.loss}. With a softmax "
            f"loss it suppresses the head classes' negative gradients and training collapses.")
    if FLAGS.reweighting == "manual" and not FLAGS.class_weights:
        raise UsageError("--reweighting=manual needs --class_weights (one weight per class).")
    if FLAGS.class_weights and FLAGS.reweighting != "manual":
        raise UsageError(f"--class_weights is only used with --reweighting=manual "
                         f"(got --reweighting={FLAGS.reweighting}).")
    if FLAGS.reweighting == "target_class" and FLAGS.target_class is None:
        raise UsageError("--reweighting=target_class needs --target_class.")
    from callbacks import cli as recall_cli
    recall_cli.check_flags(FLAGS)
    for name in ("epochs", "batch_size", "steps_per_loop", "num_cpu_devices"):
        if getattr(FLAGS, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(FLAGS, name)}.")
    if not FLAGS.learning_rate > 0:
        raise UsageError(f"--learning_rate must be positive, got {FLAGS.learning_rate}.")
    if FLAGS.tpu is not None and FLAGS.strategy != "tpu":
        raise UsageError(f"--tpu={FLAGS.tpu} is only used with --strategy=tpu (got --strategy={FLAGS.strategy}).")
    if FLAGS.strategy == "mirrored" and FLAGS.num_cpu_devices == 1:
        logging.info("--strategy=mirrored on the visible devices (use --num_cpu_devices to split a CPU).")


def _jsonable(value: Any) -> Any:
    import numpy as np
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json_atomically(path: str, payload: Dict[str, Any]) -> None:
    """Writes JSON to `path` through a temporary file and a rename."""
    temporary = path + ".tmp"
    with open(temporary, "w") as stream:
        json.dump(_jsonable(payload), stream, indent=2, allow_nan=False)
    os.replace(temporary, path)


def run() -> Dict[str, Any]:
    """Trains and evaluates as the flags say; returns the final metrics."""
    import keras
    import tensorflow as tf

    from callbacks import cli as recall_cli
    from losses import warn_if_prior_counted_twice
    from losses.rules import serialize_rule
    from losses.registry import make_loss, make_rule
    from trainer import data as data_lib
    from trainer.metrics import format_per_class_table
    from trainer.export import export_saved_model
    from trainer.models import build_model
    from trainer.progress import ProgressLogger
    from trainer.strategies import is_chief, make_strategy, split_cpu_into_logical_devices
    from trainer.determinism import enable_determinism
    from trainer.distributed import check_model_dir_writable
    from trainer.trainer import Trainer

    _check_flag_combinations()
    # TensorFlow's own INFO lines (saver internals) would drown the progress line.
    tf.get_logger().setLevel("WARNING")
    class_weights = _parse_class_weights(FLAGS.class_weights)
    split_cpu_into_logical_devices(FLAGS.num_cpu_devices)
    strategy = make_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
    check_model_dir_writable(FLAGS.model_dir)
    if FLAGS.deterministic:
        enable_determinism(FLAGS.seed)

    bundle = data_lib.load_data(
        FLAGS.dataset, eval_dataset=FLAGS.eval_dataset, validation_split=FLAGS.validation_split,
        label_column=FLAGS.label_column, feature_key=FLAGS.feature_key, label_key=FLAGS.label_key,
        imbalance_ratio=FLAGS.imbalance_ratio, data_dir=FLAGS.data_dir, seed=FLAGS.seed,
        num_classes=FLAGS.num_classes, cache_dir=FLAGS.model_dir,
        hold_out_validation=recall_cli.needs_held_out_split(FLAGS))
    logging.info("Data: %s", bundle.description)
    num_classes = bundle.num_classes
    if FLAGS.target_class is not None and not 0 <= FLAGS.target_class < num_classes:
        raise UsageError(f"--target_class={FLAGS.target_class} does not exist: the data has "
                         f"{num_classes} classes (0..{num_classes - 1}).")
    class_counts = bundle.train.class_counts

    loss = make_loss(FLAGS.loss, class_counts=class_counts, gamma=FLAGS.gamma, tau=FLAGS.tau,
                     scale=FLAGS.ldam_scale)
    rule = recall_cli.make_recall_target(FLAGS, class_counts, loss) \
        if FLAGS.reweighting == "recall_target" else make_rule(
        FLAGS.reweighting, num_classes=num_classes, class_counts=class_counts,
        class_weights=class_weights, beta=FLAGS.beta, target_class=FLAGS.target_class,
        target_weight=FLAGS.target_weight, drw_start_epoch=FLAGS.drw_start_epoch,
        drw_rule=FLAGS.drw_rule)

    warn_if_prior_counted_twice(loss, rule)

    def model_factory() -> keras.Model:
        return build_model(FLAGS.model, bundle.train.input_shape, num_classes,
                           feature_mean=bundle.feature_mean, feature_variance=bundle.feature_variance)

    eval_data = bundle.eval.dataset(FLAGS.batch_size, shuffle=False, seed=FLAGS.seed)
    recall = recall_cli.RecallSetup.from_flags(FLAGS, bundle, rule, eval_data, chief=is_chief(strategy))
    progress = ProgressLogger(FLAGS.batch_size, -(-bundle.train.num_examples // FLAGS.batch_size) or None,
                              verbosity=progress_verbosity())
    trainer = Trainer(
        model=model_factory, callbacks=[progress, *recall.callbacks],
        optimizer=lambda: keras.optimizers.Adam(FLAGS.learning_rate),
        loss=loss, reweighting=rule, num_classes=num_classes, strategy=strategy,
        steps_per_loop=FLAGS.steps_per_loop, model_dir=FLAGS.model_dir, seed=FLAGS.seed,
        skip_nonfinite_steps=FLAGS.skip_nonfinite_steps)
    train_data = bundle.train.dataset(FLAGS.batch_size, shuffle=True, seed=FLAGS.seed)
    trainer.fit(train_data, epochs=FLAGS.epochs, validation_data=recall.validation_data)

    result = trainer.evaluate(eval_data)
    metrics = {
        "accuracy": result["accuracy"], "balanced_accuracy": result["balanced_accuracy"],
        "macro_f1": result["macro_f1"], "min_recall": result["min_recall"],
        "recall": result["recall"], "precision": result["precision"], "f1": result["f1"],
        "support": result["support"], "confusion_matrix": result["confusion_matrix"],
        "class_names": list(bundle.class_names),
        "epoch": int(trainer.epoch.numpy()), "step": int(trainer.global_step.numpy()),
        "flags": {flag.name: flag.value for flag in FLAGS.get_key_flags_for_module("trainer.flags")},
        # The rule as it ran (defaults resolved) and its final per-class weights.
        "reweighting": None if rule is None else serialize_rule(rule),
        "final_class_weights": None if rule is None or rule.class_weights() is None
        else [float(w) for w in rule.class_weights().numpy()],
    }
    if recall.calibrate:
        metrics["operating_point"] = recall.calibrate_and_report(trainer, FLAGS, eval_data)
    if is_chief(strategy):
        os.makedirs(FLAGS.model_dir, exist_ok=True)
        write_json_atomically(os.path.join(FLAGS.model_dir, "metrics.json"), metrics)
        export_dir = FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export")
        if export_dir.lower() != "none":
            point = trainer.operating_point
            export_saved_model(trainer.model, export_dir, input_shape=bundle.train.input_shape,
                               class_names=bundle.class_names,
                               decide=None if point is None else point.decide_tensor,
                               metadata={"num_classes": num_classes, "dataset": FLAGS.dataset,
                                         "operating_point": None if point is None
                                         else point.to_dict()})
            logging.info("Exported the serving model to %s", export_dir)
        print(format_per_class_table(result, bundle.class_names))
        print(f"Wrote {os.path.join(FLAGS.model_dir, 'metrics.json')}; "
              f"TensorBoard: tensorboard --logdir {FLAGS.model_dir}")
    return metrics


class _LibraryInfoFilter(pylogging.Filter):
    """Drops TensorFlow's and Keras's INFO lines (saver internals), keeps ours and all warnings."""

    def __init__(self):
        super().__init__()
        import keras
        import tensorflow as tf
        self._library_dirs = tuple(os.path.dirname(os.path.dirname(module.__file__)) + os.sep
                                   for module in (tf, keras))
        self._library_dirs = tuple(os.path.join(d, name) for d in set(self._library_dirs)
                                   for name in ("tensorflow", "keras"))

    def filter(self, record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or not record.pathname.startswith(self._library_dirs)


def run_command(run_function: Callable[[], Any], argv: List[str]) -> int:
    """Runs a command's `run_function`, mapping known failures to a message and an exit status.

    Bad flags or data, a failed write, NaN, SIGTERM: the message names the
    problem and a traceback would bury it. Anything else is a bug: re-raised.
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if progress_verbosity() <= 0:
        logging.set_verbosity(logging.WARNING)
    elif progress_verbosity() == 1:
        logging.get_absl_handler().addFilter(_LibraryInfoFilter())
    from trainer.fault_tolerance import exit_status_for
    try:
        run_function()
    except Exception as error:  # noqa: BLE001 - mapped to a message and a status, or re-raised.
        status, message = exit_status_for(error)
        if status is None:
            raise
        print(message, file=sys.stderr)
        # TensorFlow's clean-up warnings at exit (e.g. about a refused restore) would bury it.
        import tensorflow as tf  # noqa: PLC0415 - already loaded by run_function()
        tf.get_logger().setLevel("ERROR")
        return status
    return 0


def main(argv: List[str]) -> int:
    return run_command(run, argv)


if __name__ == "__main__":
    app.run(main)
