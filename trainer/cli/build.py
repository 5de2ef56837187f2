"""Turns a checked `RunConfig` into the run's objects: strategy, data, loss, rule, callbacks, the Trainer.

The one module of `trainer.cli` that calls the library's constructors; their argument errors name flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

from callbacks.recall_early_stopping import RecallEarlyStopping
from callbacks.recall_reduce_lr import RecallReduceLROnPlateau
from callbacks.recall_target import RecallTarget
from callbacks.tensorboard_extras import TensorBoardExtras
from losses import registry, warn_if_prior_counted_twice
from losses.rules import ReweightingRule
from trainer import cross_fit, decisions
from trainer import data as data_lib
from trainer.cli import tensorboard_run
from trainer.cli.config import LossConfig, RecallConfig, RunConfig, TrainingConfig
from trainer.cli.errors import UsageError, flags_named
from trainer.data.per_position import label_rank
from trainer.determinism import enable_determinism, seed_everything
from trainer.distribute import (
    check_model_dir_writable,
    is_chief,
    make_strategy,
    split_cpu_into_logical_devices,
)
from trainer.models import build_model
from trainer.progress import ProgressLogger
from trainer.tasks import BinaryTask, MultiLabelTask, PerPositionTask, one_logit_loss
from trainer.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class RunData:
    """The batched datasets of a run, and who reads which (each disjoint from training by construction).

    The recall-target controller and the operating-point calibration learn
    from `bundle.validation`, the data layer's fixed stratified split of the
    training data (for `fashion_mnist_lt` a split of the long-tailed training
    pool, not the balanced test set). With `--eval_dataset` the data layer
    holds that split out of `--dataset` anyway (`RunConfig.needs_held_out_split`),
    so the evaluation data never steers training. With any recall feature on
    (controller, calibration, early stopping, LR reduction) the per-epoch
    validation data of `fit` is that held-out split: `fit` evaluates it once
    per epoch and every callback (controller, recall callbacks, TensorBoard
    extras) reads that one result. Without them it is the evaluation data.
    The final metrics are always on `bundle.eval`.

    Attributes:
      train: Shuffled training batches.
      eval: The evaluation data of the final report.
      held_out: The held-out split of the training data (controller,
        calibration), or None.
      validation: What `fit` evaluates once per epoch: `held_out` when a
        recall feature is on, else `eval`.
    """

    train: tf.data.Dataset
    eval: tf.data.Dataset
    held_out: Optional[tf.data.Dataset]
    validation: tf.data.Dataset


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything `build` made for one training run."""

    config: RunConfig
    bundle: Any
    data: RunData
    loss: keras.losses.Loss
    rule: Optional[ReweightingRule]
    callbacks: Sequence[keras.callbacks.Callback]
    trainer: Trainer
    chief: bool


class ResumedLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate when training begins, after the checkpoint restored its own.

    For a resume whose `--learning_rate` change was allowed: the checkpoint
    holds the optimizer's learning rate, which would otherwise win.
    """

    def __init__(self, learning_rate: float):
        super().__init__()
        self.learning_rate = float(learning_rate)

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self.model.optimizer.learning_rate.assign(self.learning_rate)


# ------------------------------------------------------------------ before the data


def start_runtime(config: RunConfig) -> tf.distribute.Strategy:
    """Devices, the strategy, a writable run directory and, with `--deterministic`, op determinism.

    Call it first: the CPU split must happen before TensorFlow initialises its devices.

    Raises:
      ArgumentError, TFConfigError, ModelDirError: naming the flag or `TF_CONFIG`.
    """
    split_cpu_into_logical_devices(config.distribution.num_cpu_devices)
    with flags_named(name="strategy"):
        strategy = make_strategy(config.distribution.strategy, tpu=config.distribution.tpu)
    check_model_dir_writable(config.output.model_dir)
    if config.training.deterministic:
        enable_determinism(config.training.seed)
    return strategy


def chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (metrics, export, fingerprint)."""
    return is_chief(strategy)


def load_bundle(config: RunConfig) -> Any:
    """Loads and validates the data the config names (`trainer.data.load_data`).

    Raises:
      InputDataError: naming the flag, file, row, column and value.
    """
    data = config.data
    spec = data_lib.parse_spec(data.dataset, "dataset")
    if spec.kind == "npz" and label_rank(spec.path) > 1:
        bundle = data_lib.load_per_position_data(
            data.dataset, eval_dataset=data.eval_dataset, validation_split=data.validation_split,
            test_split=data.test_split, seed=config.training.seed, num_classes=data.num_classes,
            class_names=data.class_names, ignore_label=data.ignore_label,
            hold_out_validation=config.needs_held_out_split, weight_key=data.weight_key,
            channels_first=data.channels_first)
        logging.info("Labels per position (y %s per example): every position is an example of its class; "
                     "the class counts, loss and metrics count positions%s.", bundle.label_shape,
                     "" if data.ignore_label is None else f", label {data.ignore_label} left out")
        check_weighted_metrics(data.weighted_metrics, bundle)
        return bundle
    if data.ignore_label is not None:
        raise UsageError(f"--ignore_label={data.ignore_label} leaves out positions of labels per position "
                         f"(an NPZ 'y' of shape [N, H, W] or [N, T]), and --dataset={data.dataset} has one "
                         f"label per example: drop --ignore_label.")
    bundle = data_lib.load_data(
        data.dataset, eval_dataset=data.eval_dataset, validation_split=data.validation_split,
        test_split=data.test_split, label_column=data.label_column, feature_key=data.feature_key,
        label_key=data.label_key,
        imbalance_ratio=data.imbalance_ratio, data_dir=data.data_dir, seed=config.training.seed,
        num_classes=data.num_classes, cache_dir=config.output.model_dir,
        hold_out_validation=config.needs_held_out_split, columns=data.column_options(),
        class_names=data.class_names, channels_first=data.channels_first,
        weight_key=data.weight_key)
    check_weighted_metrics(data.weighted_metrics, bundle)
    return bundle


def check_weighted_metrics(weighted_metrics: bool, bundle: Any) -> None:
    """`--weighted_metrics` needs evaluation rows that carry sample weights.

    Raises:
      UsageError: naming `--weighted_metrics` and what the data lack.
    """
    if not weighted_metrics:
        if bundle.eval.weighted:
            logging.info("The evaluation rows carry sample weights: the reported metrics count rows "
                         "(--weighted_metrics sums the weights instead).")
        return
    if bundle.eval.weighted:
        return
    if bundle.sample_weights is None:
        raise UsageError("--weighted_metrics counts sample weights in the metrics, and the data have "
                         "none: give --weight_column (CSV), --weight_key (TFRecord; NPZ: an array 'w' "
                         "or --weight_key), or drop --weighted_metrics.")
    raise UsageError(f"--weighted_metrics counts sample weights in the metrics, and the evaluation "
                     f"rows ({bundle.eval.origin}) have none (the training rows' come from "
                     f"{bundle.sample_weights}): give evaluation data with the same weight column, "
                     f"array or key, or drop --weighted_metrics.")


# ------------------------------------------------------------------ the parts


def make_datasets(config: RunConfig, bundle: Any) -> RunData:
    """The run's batched datasets (see `RunData`)."""
    batch_size, seed = config.training.batch_size, config.training.seed
    eval_data = bundle.eval.dataset(batch_size, shuffle=False, seed=seed)
    split = bundle.validation
    # The data layer never makes the choosing split the reporting one.
    held_out = None if split is None else split.dataset(batch_size, shuffle=False, seed=seed)
    validation = held_out if config.needs_held_out_split and held_out is not None else eval_data
    return RunData(train=bundle.train.dataset(batch_size, shuffle=True, seed=seed), eval=eval_data,
                   held_out=held_out, validation=validation)


def make_loss(loss: LossConfig, class_counts: Any) -> keras.losses.Loss:
    """The per-example loss `--loss` names, with its parameters."""
    with flags_named(name="loss", gamma_pos="asl_gamma_pos", gamma_neg="asl_gamma_neg", clip="asl_clip"):
        return registry.make_loss(loss.loss, class_counts=class_counts, gamma=loss.gamma, tau=loss.tau,
                                  scale=loss.ldam_scale, gamma_pos=loss.asl_gamma_pos,
                                  gamma_neg=loss.asl_gamma_neg, clip=loss.asl_clip)


def make_recall_target(recall: RecallConfig, class_counts: Any,
                       loss: Optional[keras.losses.Loss] = None) -> RecallTarget:
    """The `--reweighting=recall_target` rule.

    Its base weights are inverse class frequencies, or uniform when `loss`
    already corrects for the prior (`--loss=logit_adjusted` or
    `balanced_softmax`): then the rule is the weighted logit-adjusted loss
    (margins from the prior, weights from the controller) and the prior is
    not counted twice. `--recall_target_adjust` says whether the controller's
    weights scale the gradient or shift the loss's logits.

    Args:
      recall: The recall settings (`RecallConfig`, or anything with its
        `recall_target_*`, `target_class` and `target_recall` attributes).
      class_counts: Training examples per class.
      loss: The run's loss.
    """
    controller = dict(class_counts=class_counts, loss=loss, adjust=recall.recall_target_adjust,
                      step_size=recall.recall_target_step_size)
    with flags_named(step_size="recall_target_step_size"):
        if recall.recall_target_mode == "worst_class":
            return RecallTarget(mode="worst_class", **controller)
        return RecallTarget(target_class=recall.target_class, target_recall=recall.target_recall,
                            **controller)


def make_rule(config: RunConfig, class_counts: Any, num_classes: int,
              loss: keras.losses.Loss) -> Optional[ReweightingRule]:
    """The (unbuilt) reweighting rule `--reweighting` names; None for `none`."""
    if config.uses_controller:
        return make_recall_target(config.recall, class_counts, loss)
    rule = config.loss
    with flags_named(name="reweighting"):
        return registry.make_rule(
            rule.reweighting, num_classes=num_classes, class_counts=class_counts,
            class_weights=rule.class_weights, beta=rule.beta, target_class=config.recall.target_class,
            target_weight=rule.target_weight, drw_start_epoch=rule.drw_start_epoch,
            drw_rule=rule.drw_rule)


def make_callbacks(config: RunConfig, bundle: Any, rule: Optional[ReweightingRule], *,
                   chief: bool, tensorboard: bool = True) -> List[keras.callbacks.Callback]:
    """The recall callbacks and (with `tensorboard`) TensorBoard extras; each reads `fit`'s one evaluation."""
    recall = config.recall
    callbacks: List[keras.callbacks.Callback] = []
    if isinstance(rule, RecallTarget):
        callbacks.append(rule.controller())
    if recall.stops_early:
        with flags_named(patience="early_stopping_patience"):
            callbacks.append(RecallEarlyStopping(monitor=recall.monitor_key,
                                                 patience=recall.early_stopping_patience,
                                                 stop_at=recall.stop_at_recall, verbose=1))
    if recall.reduces_lr:
        with flags_named(patience="reduce_lr_patience"):
            callbacks.append(RecallReduceLROnPlateau(monitor=recall.monitor_key,
                                                     patience=recall.reduce_lr_patience,
                                                     factor=recall.reduce_lr_factor, verbose=1))
    if tensorboard and config.output.model_dir:
        # The run's final figures and the HParams session's end come after training, from the
        # evaluation data (`tensorboard_run.write_run_end`).
        callbacks.append(TensorBoardExtras(
            config.output.model_dir, class_names=bundle.class_names,
            hparams=tensorboard_run.session(config, bundle.class_names, rule), enabled=chief,
            matrix_renderer=tensorboard_run.matrix_renderer(),
            confusion_matrix_every=config.output.confusion_matrix_every,
            target_class=config.recall.single_target_class, final_metrics=False,
            data_description=tensorboard_run.run_descriptions(config, bundle)["eval"]))
    return callbacks


def make_optimizer(training: TrainingConfig) -> keras.optimizers.Optimizer:
    """Adam at `--learning_rate`; AdamW with `--weight_decay` on the kernels (biases excluded)."""
    if not training.weight_decay:
        return keras.optimizers.Adam(training.learning_rate)
    optimizer = keras.optimizers.AdamW(training.learning_rate, weight_decay=training.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


def _trainer(config: RunConfig, *, loss: keras.losses.Loss, rule: Optional[ReweightingRule],
             callbacks: Sequence[keras.callbacks.Callback], strategy: tf.distribute.Strategy,
             model_dir: Optional[str], input_shape: Sequence[int], feature_mean: Any,
             feature_variance: Any, num_examples: int, class_names: Optional[Sequence[str]] = None,
             evaluated_on: str = "val", bundle: Any = None) -> Trainer:
    """The Trainer of the config's model, loss and rule on data of these statistics (seeds nothing).

    Its progress line names `class_names` and says which split the per-epoch
    figures are of (`evaluated_on`, e.g. "validation"). With `--binary_head=sigmoid` the
    model ends in one logit, the task is `BinaryTask` and `loss` trains in its one-logit
    form (`trainer.tasks.one_logit_loss`). The task and output width come from `bundle`
    (`task_of`): multi-label data train one sigmoid logit per label (`--loss=cross_entropy`
    is then binary cross-entropy), labels per position a `PerPositionTask`.
    """
    training, output = config.training, config.output
    num_classes = config.data.num_classes
    task, outputs = task_of(config, bundle)
    multi_label = isinstance(task, MultiLabelTask)
    one_logit = config.model.one_logit

    def model_factory() -> keras.Model:
        architecture = {} if config.model.hidden_units is None else {
            "hidden_units": config.model.hidden_units}
        if config.model.dropout:
            architecture["dropout"] = config.model.dropout
        with dtype_policy(training.mixed_precision):
            return build_model(config.model.model, input_shape, outputs,
                               feature_mean=feature_mean, feature_variance=feature_variance,
                               **architecture)

    steps_per_epoch = math.ceil(num_examples / training.batch_size) or None
    progress = ProgressLogger(training.batch_size, steps_per_epoch, verbosity=output.verbosity,
                              class_names=class_names, target_class=config.recall.single_target_class,
                              target_recall=config.recall.target_recall, evaluated_on=evaluated_on,
                              multi_label=multi_label)
    # The progress line comes last: it shows the weights the controller set this epoch.
    return Trainer(
        model=model_factory, optimizer=lambda: make_optimizer(training),
        loss=one_logit_loss(loss) if one_logit or multi_label else loss, reweighting=rule,
        num_classes=num_classes, task=task, strategy=strategy,
        steps_per_loop=training.steps_per_loop, model_dir=model_dir,
        callbacks=[*callbacks, progress], skip_nonfinite_steps=training.skip_nonfinite_steps,
        jit_compile=resolved_jit_compile(training))


def task_of(config: RunConfig, bundle: Any = None) -> tuple:
    """`(the Trainer's task or None for the default, the model's output width)` of the data.

    Multi-label data (`bundle.label_names`): `MultiLabelTask`, a logit per label; labels per
    position (`bundle.label_shape`): `PerPositionTask(bundle.ignore_label)`, a logit per class
    at every position; `--binary_head=sigmoid`: `BinaryTask`, one logit; else one per class.
    """
    if bundle is not None and getattr(bundle, "label_names", None) is not None:
        return MultiLabelTask(bundle.label_names), len(bundle.label_names)
    if bundle is not None and getattr(bundle, "label_shape", None) is not None:
        return PerPositionTask(bundle.ignore_label), config.data.num_classes
    if config.model.one_logit:
        return BinaryTask(), 1
    return None, config.data.num_classes


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy is `name` (`--mixed_precision`) inside, and what it was after.

    Layers keep the policy they were built under, so the model is built inside
    and nothing leaks into the next run of the same process.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def resolved_jit_compile(training: Any) -> str:
    """`--jit_compile`, except that `auto` is `false` under `--deterministic`: a timing must not
    decide the numerics of a run that is meant to repeat exactly."""
    if training.deterministic and training.jit_compile == "auto":
        return "false"
    return training.jit_compile


def evaluated_on(config: RunConfig, bundle: Any) -> str:
    """The split `fit` evaluates after each epoch, in one word (`make_datasets`)."""
    return "validation" if config.needs_held_out_split and bundle.validation is not None else "eval"


def make_trainer(config: RunConfig, bundle: Any, *, loss: keras.losses.Loss,
                 rule: Optional[ReweightingRule], callbacks: Sequence[keras.callbacks.Callback],
                 strategy: tf.distribute.Strategy) -> Trainer:
    """Seeds (`--seed`), then builds the Trainer with the saved operating point of `--model_dir`."""
    seed_everything(config.training.seed)
    trainer = _trainer(config, loss=loss, rule=rule, callbacks=callbacks, strategy=strategy,
                       model_dir=config.output.model_dir, input_shape=bundle.train.input_shape,
                       feature_mean=bundle.feature_mean, feature_variance=bundle.feature_variance,
                       num_examples=bundle.train.num_examples, class_names=bundle.class_names,
                       evaluated_on=evaluated_on(config, bundle), bundle=bundle)
    tensorboard_run.describe_summaries(trainer, config, bundle)
    trainer.operating_point = decisions.load(config.output.model_dir)
    trainer.calibration = decisions.load_calibration(config.output.model_dir)
    return trainer


def fold_trainer_factory(config: RunConfig, bundle: Any, strategy: tf.distribute.Strategy, *,
                         changed: Sequence[str] = ()) -> Callable[[cross_fit.Fold], Trainer]:
    """`build_trainer` of `trainer.cross_fit.out_of_fold_logits`: the run's recipe, for one fold.

    Each fold's Trainer gets a fresh loss, rule and recall callbacks built from
    the fold's class counts, a model normalised with the fold's feature
    statistics, the run's strategy, and the fold's own directory (no
    TensorBoard extras; the Trainer's own scalars go to `<fold dir>/train`
    and `eval`). It seeds nothing: `out_of_fold_logits` seeds each fold.

    Args:
      config: The config, after `RunConfig.with_data(...)`.
      bundle: The loaded data.
      strategy: The run's strategy.
      changed: As for `build`: a resumed fold then takes the new `learning_rate`.
    """
    is_chief_process = chief(strategy)
    input_shape = tuple(bundle.train.input_shape)

    def build_fold(fold: cross_fit.Fold) -> Trainer:
        loss = make_loss(config.loss, fold.class_counts)
        rule = make_rule(config, fold.class_counts, config.data.num_classes, loss)
        callbacks = make_callbacks(config, bundle, rule, chief=is_chief_process, tensorboard=False)
        if "learning_rate" in changed:
            callbacks.insert(0, ResumedLearningRate(config.training.learning_rate))
        return _trainer(config, loss=loss, rule=rule, callbacks=callbacks, strategy=strategy,
                        model_dir=fold.model_dir, input_shape=input_shape,
                        feature_mean=fold.feature_mean, feature_variance=fold.feature_variance,
                        num_examples=len(fold.train_indices), class_names=bundle.class_names,
                        evaluated_on="validation" if config.steers_on_held_out_split else "val")

    return build_fold


def build(config: RunConfig, bundle: Any, strategy: tf.distribute.Strategy, *,
          changed: Sequence[str] = ()) -> Run:
    """Builds every object of a training run from a config checked against its data.

    Args:
      config: The config, after `RunConfig.with_data(...)` (classes and model resolved).
      bundle: The loaded data (`trainer.data.DataBundle`).
      strategy: From `start_runtime`.
      changed: The names whose change a resume allowed; the new `learning_rate`
        then replaces the one the checkpoint restores.
    """
    class_counts = bundle.train.class_counts
    loss = make_loss(config.loss, class_counts)
    rule = make_rule(config, class_counts, config.data.num_classes, loss)
    warn_if_prior_counted_twice(loss, rule)
    is_chief_process = chief(strategy)
    # A multi-label run's images and PR curves are not drawn (TensorBoardExtras reads one label per row).
    callbacks = make_callbacks(config, bundle, rule, chief=is_chief_process,
                               tensorboard=getattr(bundle, "label_names", None) is None)
    if "learning_rate" in changed:
        callbacks.insert(0, ResumedLearningRate(config.training.learning_rate))
    trainer = make_trainer(config, bundle, loss=loss, rule=rule, callbacks=callbacks,
                           strategy=strategy)
    return Run(config=config, bundle=bundle, data=make_datasets(config, bundle), loss=loss, rule=rule,
               callbacks=callbacks, trainer=trainer, chief=is_chief_process)
