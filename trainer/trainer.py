"""The compiled, multi-step, distribution-aware training loop and its seams.

`Trainer` runs `steps_per_loop` GradientTape steps per `tf.function` call and
lets a per-class reweighting rule rescale dL/dlogits before backpropagating.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from losses.rules import ReweightingRule, TrainingContext
from trainer.checkpointing import RunCheckpoint
from trainer.checks import ArgumentError, check_positive_integer
from trainer.distribute import global_batch_size, is_chief, shard_by_data, worker_directory
from trainer.evaluation import EvaluationResult, collect_outputs, concatenate
from trainer.fault_tolerance import FaultTolerance, TrainMetricsState
from trainer.jit import (
    FirstBatchSteps,
    JitChoice,
    Measurement,
    VariableSnapshot,
    check_jit_compile,
    load_choice,
    measure,
    probe,
    run_facts,
    save_choice,
    too_short,
    variables_of,
    xla_scope,
)
from trainer.metrics import ConfusionMatrix, flatten_metrics, per_class_metrics
from trainer.nonfinite import NonFiniteGuard, loss_scaler, unscale
from trainer.summaries import SummaryWriters
from trainer.tasks import MulticlassTask, Task

ModelOrFactory = Union[keras.Model, Callable[[], keras.Model], None]
OptimizerOrFactory = Union[keras.optimizers.Optimizer, Callable[[], keras.optimizers.Optimizer], None]


def _learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(np.asarray(optimizer.learning_rate))


def computes_in_float16(model: keras.Model) -> bool:
    """Whether the model, or any layer in it, computes in float16 (a `mixed_float16` policy)."""
    pending = [model]
    while pending:
        layer = pending.pop()
        if getattr(layer, "compute_dtype", None) == "float16":
            return True
        pending.extend(getattr(layer, "layers", None) or ())
    return False


class Trainer:
    """Trains a Keras classifier with a compiled custom loop.

    Each call of the compiled train function runs up to `steps_per_loop`
    steps (`tf.range` inside one `tf.function`; the count is a tensor, so the
    function is traced once). One step, `train_step`, calls these seams in
    order; a subclass overrides any one of them alone:

    1. `compute_loss(labels, logits)`: per-example losses `[batch]`.
    2. `reweight(labels, logits, grad_logits, context)`: the rule's call on
       dL/dlogits (identity without a rule).
    3. `apply_gradients(loss, gradients, variables)`: the optimizer update
       behind the non-finite guard; returns whether it was applied.
    4. `update_metrics(labels, logits, per_example_loss, applied)`.

    The per-example losses are summed and divided by the examples of the
    step on all replicas, dL/dlogits is taken, reweighted and backpropagated
    with `tape.gradient(logits, variables, output_gradients=...)`, plus the
    gradients of the model's regularisation losses (`model.losses`, divided
    by the replica count inside the tape, so they count once).

    Mixed precision: set the Keras policy (`keras.mixed_precision.set_global_policy(
    "mixed_float16")` or `"mixed_bfloat16"`) before building the model, and
    keep its logits layer in float32 (`Dense(..., dtype="float32")`); logits
    are cast to float32 inside the tape either way. For a model that computes
    in float16 the optimizer is wrapped in `keras.optimizers.LossScaleOptimizer`
    (pass one to choose its `initial_scale` and `dynamic_growth_steps`): the
    output gradients at the logits (the rule's dL/dlogits, and the
    regularisation's 1) are multiplied by the loss scale, the variables'
    gradients divided by it before `apply_gradients` (which sees true
    gradients), and a step whose float16 gradients overflowed is skipped with
    the scale halved (`NonFiniteGuard`; not a non-finite error). Such a step
    counts in `global_step` (its batch was read; a resume positions the data
    by it) but not in `optimizer.iterations`. The scale is part of the
    optimizer's checkpoint. bfloat16 needs no loss scaling.

    Model, optimizer, metrics and rule state are created inside
    `strategy.scope()`, and the optimizer is built before the first trace.
    With `model_dir`, each epoch ends with a checkpoint, and a new `Trainer`
    on the same `model_dir` restores the latest one the first time it is
    used (fit, evaluate or predict). The constructor does no I/O and seeds
    nothing: call `trainer.determinism.seed_everything(seed)` first for a
    reproducible run.

    Args:
      model: A Keras model returning logits, a zero-argument callable that
        builds one (called inside `strategy.scope()`), or None when a
        subclass overrides `build_model()`.
      optimizer: A Keras optimizer (default Adam, learning rate 1e-3), or a
        factory called inside `strategy.scope()`.
      loss: Per-example loss from logits: a Keras `Loss` (its unreduced
        `call` is used) or a callable `(labels, logits) -> [batch]`. Default:
        the task's (sparse categorical cross-entropy).
      reweighting: A `losses.ReweightingRule`, or None.
      num_classes: Number of classes; read from the model's output when None.
      strategy: A `tf.distribute.Strategy`; default the current one.
      steps_per_loop: Steps per compiled call.
      model_dir: Where checkpoints and TensorBoard events go; None for none.
      callbacks: Keras callbacks (the Keras callback protocol is honoured).
        A callback with an `on_evaluation(result)` method receives each
        epoch's `EvaluationResult` before `on_epoch_end`; one whose
        `needs_validation_logits` is True makes that result carry logits.
      max_checkpoints: How many recent checkpoints to keep.
      skip_nonfinite_steps: Skip (and count) steps whose loss or gradients are
        NaN or Inf instead of stopping with `NonFiniteLossError`.
      task: How labels meet logits (`trainer.tasks`): `MulticlassTask()` (the
        default, softmax over K logits), `BinaryTask()` (a one-logit model),
        `PerPositionTask()` (a label per position) or `MultiLabelTask()`
        (`L` sigmoid logits, multi-hot labels).
      jit_compile: Compile the per-replica step with XLA (`tf.function(
        jit_compile=True)` on the step, inside the uncompiled multi-step
        loop): True, False, or `"auto"`: before the first step, time a few
        steps both ways on the first batch (on a snapshot of the state, put
        back afterwards: the run trains exactly as the chosen way would),
        keep the faster, log the figures, and remember the choice in
        `<model_dir>/checkpoints/jit_compile.json` so a resume does not
        measure again. What the compiled part covers under each strategy:
        `trainer.jit`. Under `auto`, a step XLA cannot compile runs plain.

    Attributes:
      operating_point: A decision (`trainer.decisions`) that `predict` and
        `predict_classes` apply, or None for the argmax. Set it explicitly,
        e.g. `trainer.operating_point = trainer.decisions.load(model_dir)`.
      jit_choice: The `trainer.jit.JitChoice` the first `fit` made (whether
        the step is compiled with XLA, how it was decided, the figures), or
        None before it.
      jit_measurement: How `jit_compile="auto"` times (`trainer.jit.Measurement`).
      calibration: Calibrated probabilities (`trainer.decisions.Calibration`,
        its `apply(logits)`) that `predict` returns, or None for the softmax.
        Set it explicitly, e.g. `trainer.decisions.load_calibration(model_dir)`.

    Example:
      >>> trainer = Trainer(model=lambda: build_mlp((20,), 3), num_classes=3,
      ...                   reweighting=ClassWeights([1.0, 1.0, 5.0]))
      >>> history = trainer.fit(train_ds, epochs=3, validation_data=eval_ds)
      >>> trainer.evaluate(eval_ds)["balanced_accuracy"]
    """

    def __init__(
        self,
        *,
        model: ModelOrFactory = None,
        optimizer: OptimizerOrFactory = None,
        loss: Optional[Callable] = None,
        reweighting: Optional[ReweightingRule] = None,
        num_classes: Optional[int] = None,
        strategy: Optional[tf.distribute.Strategy] = None,
        steps_per_loop: int = 100,
        model_dir: Optional[str] = None,
        callbacks: Optional[Sequence[keras.callbacks.Callback]] = None,
        max_checkpoints: int = 3,
        skip_nonfinite_steps: bool = False,
        task: Optional[Task] = None,
        jit_compile: Union[bool, str] = False,
    ):
        if reweighting is not None and not isinstance(reweighting, ReweightingRule):
            raise ValueError(
                f"reweighting must be a losses.ReweightingRule, got {type(reweighting).__name__}.")
        if task is not None and not isinstance(task, Task):
            raise ValueError(f"task must be a trainer.tasks.Task, got {type(task).__name__}.")
        self.task = task or MulticlassTask()
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_loop = check_positive_integer(steps_per_loop, "steps_per_loop")
        self.max_checkpoints = check_positive_integer(max_checkpoints, "max_checkpoints")
        self.jit_compile = check_jit_compile(jit_compile)
        if self.jit_compile is True and not self.task.xla_compatible:
            raise ArgumentError("jit_compile", True,
                                f"cannot be True for this {self.task.name} task: its step drops examples "
                                f"(e.g. positions of an ignore_label), so its shapes are not static; "
                                f"use False or 'auto'")
        self.jit_measurement = Measurement()
        self.jit_choice: Optional[JitChoice] = None
        self.model_dir = model_dir
        self.loss = loss if loss is not None else self.task.default_loss()
        self.reweighting = reweighting
        self.callbacks = list(callbacks or [])
        self.is_chief = is_chief(self.strategy)
        self.operating_point: Any = None
        self.calibration: Any = None

        with self.strategy.scope():
            self.model = self._resolve_model(model)
            self.optimizer = self._with_loss_scaling(self._resolve_optimizer(optimizer))
            self.num_classes = self.task.check_num_classes(num_classes, self._model_output_width())
            if self.reweighting is not None and not self.reweighting.built:
                self.reweighting.build(self.num_classes)
            self.train_confusion = ConfusionMatrix(self.num_classes, name="train_confusion_matrix")
            self.train_loss = keras.metrics.Mean(name="train_loss")
            self.eval_confusion = ConfusionMatrix(self.num_classes, name="eval_confusion_matrix")
            self.eval_loss = keras.metrics.Mean(name="eval_loss")
            self.epoch = self._counter("epoch")
            self.global_step = self._counter("global_step")
            # Steps of the current epoch done when a checkpoint was written mid-epoch (SIGTERM).
            self.epoch_step = self._counter("epoch_step")
            self.nonfinite_guard = NonFiniteGuard(skip=skip_nonfinite_steps)

        self.summaries = SummaryWriters(model_dir, enabled=self.is_chief)
        self.fault_tolerance = FaultTolerance(
            strategy=self.strategy, model_dir=model_dir, global_step=self.global_step,
            epoch_step=self.epoch_step, nonfinite_guard=self.nonfinite_guard)
        self.checkpoint: Optional[RunCheckpoint] = None
        self._built = False
        self._train_loop_fn = None
        self._xla_update_fn = None
        self._eval_fn = None
        self._forward_fn = None
        self._forward_with_loss_fn = None
        self._logits_shape: Optional[tf.TensorShape] = None

    @staticmethod
    def _counter(name: str) -> tf.Variable:
        return tf.Variable(0, dtype=tf.int64, trainable=False, name=name,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    # ------------------------------------------------------------------ set-up

    def build_model(self) -> keras.Model:
        """Builds the model; override in a subclass when `model` is None."""
        raise ValueError("model is None: pass a Keras model (or a factory), or override build_model().")

    def _resolve_model(self, model: ModelOrFactory) -> keras.Model:
        if model is None:
            model = self.build_model()
        elif not isinstance(model, keras.Model) and callable(model):
            model = model()
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model, got {type(model).__name__}.")
        return model

    def _resolve_optimizer(self, optimizer: OptimizerOrFactory) -> keras.optimizers.Optimizer:
        if optimizer is None:
            return keras.optimizers.Adam(learning_rate=1e-3)
        if not isinstance(optimizer, keras.optimizers.Optimizer) and callable(optimizer):
            optimizer = optimizer()
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"optimizer must be a keras.optimizers.Optimizer, "
                             f"got {type(optimizer).__name__}.")
        return optimizer

    def _with_loss_scaling(self, optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
        """A float16 model's optimizer wrapped in a `LossScaleOptimizer` (unless it is one)."""
        if loss_scaler(optimizer) is not None or not computes_in_float16(self.model):
            return optimizer
        logging.info("The model computes in float16: dynamic loss scaling "
                     "(keras.optimizers.LossScaleOptimizer around %s).", type(optimizer).__name__)
        return keras.optimizers.LossScaleOptimizer(optimizer)

    def _model_output_width(self) -> Optional[int]:
        try:
            shape = self.model.output_shape
        except (AttributeError, ValueError, RuntimeError):
            return None
        if isinstance(shape, list):
            raise ValueError("model must have a single output (the logits); it has several.")
        return shape[-1] if shape else None

    def checkpoint_items(self) -> Dict[str, Any]:
        """The trackables saved in each checkpoint; extend in a subclass."""
        items = {"model": self.model, "optimizer": self.optimizer, "epoch": self.epoch,
                 "global_step": self.global_step, "epoch_step": self.epoch_step,
                 "train_metrics": TrainMetricsState(self.train_loss, self.train_confusion)}
        if self.reweighting is not None:
            items["reweighting"] = self.reweighting
        for index, callback in enumerate(self.callbacks):
            if isinstance(callback, tf.Module):
                callback.set_model(self.model)  # so it can create model-shaped state before a restore
                items[f"callback_{index}"] = callback
        return items

    def _prepare(self, element_spec) -> None:
        """Before the first use: builds model and optimizer, then restores the latest checkpoint."""
        if self._built:
            return
        self._build(element_spec)
        self._built = True
        if self.model_dir:
            self._restore_latest()

    def _build(self, element_spec) -> None:
        with self.strategy.scope():
            if not self.model.built or not self.model.variables:
                features_spec = element_spec[0] if isinstance(element_spec, tuple) else element_spec
                self.task.check_num_classes(self.num_classes, self._output_shape(features_spec)[-1])
            # Built before the first trace (Keras issue 23085: a stateful
            # optimizer first built inside a replica fails under 2 replicas).
            self.optimizer.build(self.model.trainable_variables)
        if getattr(self.model, "optimizer", None) is None:
            self.model.optimizer = self.optimizer

    def _restore_latest(self) -> None:
        # Workers other than the chief save too (collective ops), but to a private
        # directory that fit() removes at its end (trainer/distribute/cluster.py).
        root = worker_directory(self.model_dir, self.strategy) or self.model_dir
        self.checkpoint = RunCheckpoint(
            os.path.join(root, "checkpoints"),
            max_to_keep=self.max_checkpoints if self.is_chief else 1, **self.checkpoint_items())
        self.fault_tolerance.attach_checkpoint(self.checkpoint)
        # Every worker restores the chief's checkpoint (see docs/DISTRIBUTED.md).
        restored = self.checkpoint.restore_latest(os.path.join(self.model_dir, "checkpoints"))
        self.fault_tolerance.restored(restored)
        if restored:
            logging.info("Resumed from %s (epoch %d, step %d).", restored,
                         int(self.epoch.numpy()), int(self.global_step.numpy()))

    # ------------------------------------------------------------ the seams

    def compute_loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-example losses `[batch]` of the logits; override to change the loss."""
        return self.task.per_example_loss(self.loss, labels, logits)

    def reweight(self, labels: tf.Tensor, logits: tf.Tensor, grad_logits: tf.Tensor,
                 context: TrainingContext) -> tf.Tensor:
        """dL/dlogits after the per-class rule (unchanged without one); override to change it."""
        if self.reweighting is None:
            return grad_logits
        return self.reweighting(labels, logits, grad_logits, context)

    def apply_gradients(self, loss: tf.Tensor, gradients: Sequence[Optional[tf.Tensor]],
                        variables: Sequence[tf.Variable]) -> tf.Tensor:
        """Applies `gradients` unless the step is not finite; returns whether it was applied.

        Called in a replica context. An override that transforms the
        gradients (clipping, noise) keeps the guard by calling `super()`.
        Under loss scaling the gradients are already unscaled (true ones).
        """
        return self.nonfinite_guard.apply_gradients(self.optimizer, loss, gradients, variables,
                                                    step=self.global_step)

    def update_metrics(self, labels: tf.Tensor, logits: tf.Tensor, per_example_loss: tf.Tensor,
                       applied: tf.Tensor) -> None:
        """Updates the running training metrics with one replica's step.

        `logits` are the task's decision logits `[batch, K]` (`Task.decision_logits`).
        """
        self.train_loss.update_state(
            tf.where(applied, per_example_loss, tf.zeros_like(per_example_loss)),
            sample_weight=tf.cast(applied, per_example_loss.dtype))
        self.train_confusion.update_state(labels, self.task.predicted_classes(labels, logits))

    # ------------------------------------------------------------ compiled code

    def _training_context(self) -> TrainingContext:
        return TrainingContext(epoch=tf.convert_to_tensor(self.epoch),
                               step=tf.convert_to_tensor(self.global_step))

    def _weighted_loss(self, labels: tf.Tensor, logits: tf.Tensor,
                       sample_weight: Optional[tf.Tensor]) -> tf.Tensor:
        """`compute_loss`, times the examples' sample weights when the data has them."""
        per_example = self.compute_loss(labels, logits)
        if sample_weight is None:
            return per_example
        return per_example * tf.reshape(tf.cast(sample_weight, per_example.dtype), [-1])

    def _unpack(self, batch) -> Tuple[Any, tf.Tensor, Optional[tf.Tensor]]:
        """`(features, checked labels, sample weights or None)` of a batch."""
        sample_weight = batch[2] if len(batch) > 2 else None
        return batch[0], self.task.class_labels(batch[1], self.num_classes), sample_weight

    def _loss_and_logit_gradient(self, labels: tf.Tensor, logits: tf.Tensor,
                                 context: TrainingContext, sample_weight: Optional[tf.Tensor] = None
                                 ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`(per_example_loss, loss, dL/dlogits)` of one replica's logits (losses weighted)."""
        offsets = None if self.reweighting is None else self.reweighting.logit_offsets(context)
        with tf.GradientTape() as loss_tape:
            loss_tape.watch(logits)
            # A rule acting through margins shifts the logits the loss sees (training
            # only); the shift is constant, so dL/dlogits is taken through it.
            loss_logits = logits if offsets is None else self.task.shift_logits(logits, offsets)
            per_example = self._weighted_loss(labels, loss_logits, sample_weight)
            # Divided by the examples of the step on all replicas: a partial last
            # batch splits unevenly, so per-replica size x replicas would be wrong.
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=global_batch_size(labels, self.strategy))
        return per_example, loss, loss_tape.gradient(loss, logits)

    def train_step(self, batch) -> None:
        """One optimizer step on one replica's batch `(features, labels[, sample_weight])`."""
        features, labels, sample_weight = self._unpack(batch)
        self._update(features, labels, sample_weight)

    def _training_forward(self, features) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        """`(float32 logits, this replica's share of the regularisation or None)`, inside the tape."""
        # Cast inside the tape: a mixed-precision model's float16 logits still
        # carry the gradient to its variables.
        logits = tf.cast(self.model(features, training=True), tf.float32)
        # Scaled inside the tape (so its gradient exists) and once per step:
        # each replica adds 1/replicas of it, the optimizer sums replicas.
        regularization = (tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
                          if self.model.losses else None)
        return logits, regularization

    def _update(self, features, labels: tf.Tensor, sample_weight: Optional[tf.Tensor],
                forward: Optional[Callable] = None) -> None:
        """The step after the label checks: the seams in order (see the class docstring)."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits, regularization = (forward or self._training_forward)(features)
            # The counted examples (a per-position task's positions), inside the tape.
            logits, labels, sample_weight = self.task.positions(logits, labels, sample_weight)
        context = self._training_context()
        per_example, loss, grad_logits = self._loss_and_logit_gradient(labels, logits, context,
                                                                       sample_weight)
        grad_logits = self.reweight(labels, logits, grad_logits, context)
        targets, output_gradients = [logits], [grad_logits]
        if regularization is not None:
            targets.append(regularization)
            output_gradients.append(tf.ones_like(regularization))
            loss = loss + tf.cast(regularization, loss.dtype)
        scaler = loss_scaler(self.optimizer)
        if scaler is None:
            gradients = tape.gradient(targets, variables, output_gradients=output_gradients)
        else:  # float16: the backward pass runs on scaled gradients, the update sees true ones
            scale = tf.convert_to_tensor(scaler.dynamic_scale)
            gradients = unscale(tape.gradient(
                targets, variables,
                output_gradients=[g * tf.cast(scale, g.dtype) for g in output_gradients]), scale)
        applied = self.apply_gradients(loss, gradients, variables)
        self.update_metrics(labels, self.task.decision_logits(logits), per_example, applied)

    def eval_step(self, batch) -> None:
        """Updates the evaluation metrics with one replica's batch."""
        features, labels, sample_weight = self._unpack(batch)
        logits, labels, sample_weight = self.task.positions(self._model_logits(features), labels,
                                                            sample_weight)
        self.eval_loss.update_state(self._weighted_loss(labels, logits, sample_weight))
        self.eval_confusion.update_state(
            labels, self.task.predicted_classes(labels, self.task.decision_logits(logits)))

    def _model_logits(self, features) -> tf.Tensor:
        return tf.cast(self.model(features, training=False), tf.float32)

    def predict_step(self, features) -> tf.Tensor:
        """float32 decision logits `[batch, K]` of a batch of features (inference mode).

        The task's view of the model's output (`Task.decision_logits`): the
        model's logits for a multi-class model, `[0, z]` for a one-logit one.
        """
        return self.task.decision_logits(self._model_logits(features))

    def _forward_with_loss(self, features, labels, sample_weight=None
                           ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`(decision logits, weighted losses, labels)` of a batch's counted examples."""
        labels = self.task.class_labels(labels, self.num_classes)
        logits, labels, sample_weight = self.task.positions(self._model_logits(features), labels,
                                                            sample_weight)
        return (self.task.decision_logits(logits), self._weighted_loss(labels, logits, sample_weight),
                tf.cast(labels, tf.int64))

    def _xla_update(self) -> Callable:
        """`_update` compiled with XLA as far as the strategy allows (`trainer.jit.xla_scope`)."""
        if self._xla_update_fn is None:
            scope = xla_scope(self.strategy)
            if scope == "step":
                self._xla_update_fn = tf.function(self._update, jit_compile=True)
            elif scope == "replica":
                self._xla_update_fn = functools.partial(
                    self._update, forward=tf.function(self._training_forward, jit_compile=True))
            else:  # TPUStrategy compiles the whole step anyway
                self._xla_update_fn = self._update
        return self._xla_update_fn

    def _replica_step(self, jit: bool) -> Callable:
        """The per-replica step: `train_step`, or with XLA on the update after the label checks."""
        if not jit:
            return self.train_step
        update = self._xla_update()

        def xla_train_step(batch) -> None:
            # The label checks are asserts, which XLA drops: they run here, in
            # the graph, and the compiled update depends on them.
            features, labels, sample_weight = self._unpack(batch)
            update(features, labels, sample_weight)

        return xla_train_step

    def _make_train_loop(self, jit: bool = False):
        strategy = self.strategy
        train_step = self._replica_step(jit)

        @tf.function
        def train_loop(iterator, num_steps, infinite=False):
            # `infinite` (a Python bool, so each value is its own trace): the
            # data repeat forever and `next()` cannot run out. That skips the
            # optional, whose has-value test would put the whole step inside
            # a `tf.cond`; data of finite or unknown length keep the optional.
            steps_done = tf.constant(0, tf.int64)
            for _ in tf.range(num_steps):
                if infinite:
                    strategy.run(train_step, args=(next(iterator),))
                else:
                    optional = iterator.get_next_as_optional()
                    if not optional.has_value():
                        break
                    strategy.run(train_step, args=(optional.get_value(),))
                self.global_step.assign_add(1)
                steps_done += 1
                if self.nonfinite_guard.stop_requested():
                    break
            return steps_done

        return train_loop

    def _make_eval_fn(self):
        strategy = self.strategy

        @tf.function
        def evaluate(dataset):
            for batch in dataset:
                strategy.run(self.eval_step, args=(batch,))

        return evaluate

    # ------------------------------------------------------------- inputs

    def _check_dataset(self, data: Any, argument: str) -> int:
        """Checks a `(features, labels)` dataset; returns its cardinality."""
        if not isinstance(data, tf.data.Dataset):
            raise ValueError(f"{argument} must be a tf.data.Dataset of (features, labels) batches, "
                             f"got {type(data).__name__}.")
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"{argument} must yield (features, labels) batches; its elements are {spec}.")
        if len(spec) > 3:
            raise ValueError(
                f"{argument} yields {len(spec)} components per batch; the Trainer reads "
                f"(features, labels) or (features, labels, sample_weight) and would ignore the rest.")
        if spec[0].shape.rank is not None and spec[0].shape.rank < 2:
            raise ValueError(f"{argument} must be batched (features of rank >= 2); "
                             f"got shape {spec[0].shape}.")
        cardinality = int(data.cardinality())
        if cardinality == 0:
            raise ValueError(f"{argument} is empty.")
        self._prepare(spec)
        self.task.check_label_shape(spec[1].shape, self._output_shape(spec[0]))
        return cardinality

    def _output_shape(self, features_spec: tf.TensorSpec) -> tf.TensorShape:
        """The model's output shape for one example of `features_spec` (batch axis 1)."""
        if self._logits_shape is None:
            dummy = tf.zeros([1] + list(features_spec.shape[1:]), features_spec.dtype)
            self._logits_shape = self.model(dummy, training=False).shape
        return self._logits_shape

    def _distribute(self, data: tf.data.Dataset, argument: str):
        cardinality = self._check_dataset(data, argument)
        data = shard_by_data(data, self.strategy)
        return self.strategy.experimental_distribute_dataset(data), cardinality

    # ------------------------------------------------------------- fit

    def _epoch_range(self, epochs: Optional[int], total_epochs: Optional[int]) -> Tuple[int, int]:
        if (epochs is None) == (total_epochs is None):
            raise ValueError(f"Pass exactly one of epochs (how many more epochs) and total_epochs "
                             f"(train until this many are done), got epochs={epochs!r}, "
                             f"total_epochs={total_epochs!r}.")
        first = int(self.epoch.numpy())
        if epochs is not None:
            return first, first + check_positive_integer(epochs, "epochs")
        return first, check_positive_integer(total_epochs, "total_epochs")

    def _callbacks_need_logits(self) -> bool:
        return any(getattr(callback, "needs_validation_logits", False) for callback in self.callbacks)

    def fit(self, train_data: tf.data.Dataset, *, epochs: Optional[int] = None,
            total_epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None,
            validation_data: Optional[tf.data.Dataset] = None) -> Dict[str, List[float]]:
        """Trains `epochs` more epochs, or until `total_epochs` are done.

        Each epoch, in this order: compiled loops of `steps_per_loop` steps,
        each followed by the non-finite check and the SIGTERM check
        (`FaultTolerance.after_train_loop`); then one evaluation of
        `validation_data` (an `EvaluationResult`, handed to callbacks that
        define `on_evaluation`); the TensorBoard scalars; the callbacks'
        `on_epoch_end`; the rule's `class_weight/<k>` (after the callbacks, so
        a controller's update of the epoch shows); the epoch counter; the
        checkpoint and the SIGTERM exit (`FaultTolerance.after_epoch`).

        Args:
          train_data: Batched dataset of `(features, labels)` or `(features,
            labels, sample_weight)`; the batch size is the global one. Sample
            weights multiply each example's loss (and so its dL/dlogits, before
            the rule's per-class scale), as in Keras `fit(sample_weight=...)`.
            Without `steps_per_epoch` an epoch is one pass.
          epochs: How many epochs to train in this call (Keras's convention:
            a second `fit(epochs=2)` trains two more).
          total_epochs: Instead of `epochs`: train until the epoch counter
            (restored epochs included) reaches this; a resumed run trains the
            rest, and a finished one trains nothing (and says so).
          steps_per_epoch: Steps per epoch; needed for infinite datasets. The
            iterator then carries over between epochs.
          validation_data: Batched dataset evaluated once after each epoch;
            its metrics enter the logs with the `val_` prefix.

        Returns:
          History: each log name mapped to its value per epoch trained now.
        """
        if steps_per_epoch is not None:
            steps_per_epoch = check_positive_integer(steps_per_epoch, "steps_per_epoch")
        distributed, cardinality = self._distribute(train_data, "train_data")
        first_epoch, end_epoch = self._epoch_range(epochs, total_epochs)
        if first_epoch >= end_epoch:
            logging.warning("Nothing to train: %d epoch(s) are done and total_epochs=%d; pass a "
                            "larger total_epochs (or epochs=N for N more).", first_epoch, end_epoch)
            return {}
        infinite = cardinality == tf.data.INFINITE_CARDINALITY
        if steps_per_epoch is None and infinite:
            raise ValueError("train_data is infinite (it repeats): pass steps_per_epoch.")
        if validation_data is not None:
            self._check_dataset(validation_data, "validation_data")
        steps_limit = steps_per_epoch or (cardinality if cardinality > 0 else None)
        callbacks = keras.callbacks.CallbackList(self.callbacks, model=self.model,
                                                 epochs=end_epoch, steps=steps_limit)
        persistent_iterator = iter(distributed) if steps_per_epoch else None
        history: Dict[str, List[float]] = {}
        self.model.stop_training = False
        with self.fault_tolerance.watching(self.model.variables):
            callbacks.on_train_begin()
            for epoch in range(first_epoch, end_epoch):
                if getattr(self.model, "stop_training", False):
                    break  # e.g. a restored callback had already stopped this run
                logs = self._fit_epoch(epoch, distributed, persistent_iterator, steps_limit,
                                       infinite, callbacks, validation_data)
                for key, value in logs.items():
                    history.setdefault(key, []).append(value)
                if getattr(self.model, "stop_training", False):
                    break
            callbacks.on_train_end(history and {k: v[-1] for k, v in history.items()})
        return history

    def _fit_epoch(self, epoch: int, distributed, persistent_iterator, steps_limit: Optional[int],
                   infinite: bool, callbacks: keras.callbacks.CallbackList,
                   validation_data: Optional[tf.data.Dataset]) -> Dict[str, float]:
        """One epoch of `fit`, in the order its docstring gives; returns the epoch's logs."""
        self.epoch.assign(epoch)
        callbacks.on_epoch_begin(epoch)
        if not self.fault_tolerance.resuming_mid_epoch():
            self.train_loss.reset_state()
            self.train_confusion.reset_state()
        # After a restore: the same shuffling and position as the interrupted run.
        iterator, steps = self.fault_tolerance.epoch_iterator(distributed, epoch, persistent_iterator)
        if self._train_loop_fn is None:  # the first loop: XLA or not (measured for "auto")
            # The steps this fit means to run (the callbacks' `epochs` is fit's end epoch).
            planned = None if steps_limit is None else (
                (callbacks.params.get("epochs", epoch + 1) - epoch) * steps_limit - steps)
            steps = self._start_training(iterator, epoch, steps, planned, infinite)
        while steps_limit is None or steps < steps_limit:
            chunk = self.steps_per_loop if steps_limit is None else min(self.steps_per_loop,
                                                                        steps_limit - steps)
            callbacks.on_train_batch_begin(steps)
            done = int(self._train_loop_fn(iterator, tf.constant(chunk, tf.int64), infinite=infinite))
            steps += done
            self.fault_tolerance.after_train_loop(epoch, steps)  # NaN/Inf, then SIGTERM
            callbacks.on_train_batch_end(steps - 1, {"loss": float(self.train_loss.result())})
            if done < chunk:
                break
        if steps == 0:
            raise ValueError("train_data produced no batches in this epoch (empty or exhausted); "
                             "pass a larger dataset, or repeat it and set steps_per_epoch.")
        logs = self._train_logs()
        if validation_data is not None:
            result = self.evaluation(validation_data, collect_logits=self._callbacks_need_logits(),
                                     epoch=epoch)
            logs.update({f"val_{k}": v for k, v in result.scalars().items()})
            for callback in self.callbacks:
                if hasattr(callback, "on_evaluation"):
                    callback.on_evaluation(result)
        self._write_epoch_summaries(logs)
        callbacks.on_epoch_end(epoch, logs)
        self._write_class_weights()  # after the callbacks: a controller's update of this epoch shows
        self.epoch.assign(epoch + 1)
        self.fault_tolerance.after_epoch()  # checkpoint, then SIGTERM
        return logs

    # ------------------------------------------------------- XLA or not

    def _start_training(self, iterator, epoch: int, steps: int, planned_steps: Optional[int],
                        infinite: bool) -> int:
        """Resolves `jit_compile` and builds the train loop; returns the epoch's steps done.

        With "auto" and nothing remembered, the first batch is taken from the
        iterator, the two ways are timed on it (`_measure_jit`; `planned_steps`
        is how many steps this `fit` means to run, None if unknown), and then
        it is trained on as the real next step, the chosen way: 1 step more.
        """
        facts = run_facts(self.strategy)
        choice = first = None
        if facts["xla_scope"] == "tpu":
            choice = JitChoice(jit_compile=True, how="tpu", scope="tpu", facts=facts,
                               reason="TPUStrategy compiles every step with XLA")
        elif self.jit_compile != "auto":
            choice = JitChoice(jit_compile=bool(self.jit_compile), how="given",
                               scope=facts["xla_scope"], facts=facts)
        elif not self.task.xla_compatible:
            choice = JitChoice(jit_compile=False, how="fallback", scope=facts["xla_scope"], facts=facts,
                               reason=f"the {self.task.name} task's step drops examples (dynamic "
                                      f"shapes), which XLA cannot compile")
        else:
            choice = load_choice(self.model_dir, facts)
            optional = None if choice else iterator.get_next_as_optional()
            if optional is not None and optional.has_value():
                first = FirstBatchSteps(batch=optional.get_value(), iterator=iterator,
                                        strategy=self.strategy, make_loop=self._make_train_loop,
                                        replica_step=self._replica_step,
                                        global_step=self.global_step, infinite=infinite)
                choice = self._measure_jit(first, facts, planned_steps)
                if self.model_dir and self.is_chief:
                    save_choice(self.model_dir, choice)
            elif optional is not None:  # nothing to train on: the loop says so
                choice = JitChoice(jit_compile=False, how="fallback", scope=facts["xla_scope"],
                                   facts=facts, reason="no batch to measure on")
        self.jit_choice = choice
        if choice.how != "given":
            logging.info("%s", choice.describe())
        if first is None:
            self._train_loop_fn = self._make_train_loop(choice.jit_compile)
            return steps
        self._train_loop_fn = first.loop(choice.jit_compile)
        steps += first.train(choice.jit_compile)
        self.fault_tolerance.after_train_loop(epoch, steps)  # NaN/Inf, then SIGTERM
        return steps

    def _step_state(self) -> List[Any]:
        """Every variable a training step may change: all that is checkpointed, and the NaN guard's."""
        return variables_of([*self.checkpoint_items().values(), self.nonfinite_guard])

    def _measure_jit(self, first: FirstBatchSteps, facts: Dict[str, Any],
                     planned_steps: Optional[int]) -> JitChoice:
        """Times steps on the first batch with and without XLA, then puts the state back.

        A run too short for XLA to pay (`trainer.jit.too_short`) is not
        compiled at all. See `trainer.jit`.
        """
        settings = self.jit_measurement
        snapshot = VariableSnapshot(self._step_state())
        try:
            first.run(False, 1)  # traces: no compile time is timed
            steps, plain_seconds = probe(first.run, settings, self.strategy)
            if too_short(planned_steps, plain_seconds, settings):
                return JitChoice.short_run(planned_steps, plain_seconds, settings, facts)
            try:
                first.run(True, 1)  # traces and compiles with XLA
            except (tf.errors.OpError, ValueError, TypeError, NotImplementedError) as error:
                message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
                logging.warning("XLA cannot compile the training step (%s): training without it.",
                                message[:500])
                return JitChoice(jit_compile=False, how="fallback", scope=facts["xla_scope"],
                                 facts=facts, reason=f"XLA could not compile the step: {message[:500]}")
            return JitChoice.from_measurement(measure(first.run, settings, self.strategy, steps), facts)
        finally:
            snapshot.restore()

    def _train_logs(self) -> Dict[str, float]:
        metrics = per_class_metrics(self.train_confusion.result().numpy())
        logs = {"loss": float(self.train_loss.result())}
        logs.update(flatten_metrics(metrics))
        logs["learning_rate"] = _learning_rate(self.optimizer)
        return logs

    def _write_epoch_summaries(self, logs: Dict[str, float]) -> None:
        step = int(self.global_step.numpy())
        train = {k: v for k, v in logs.items() if not k.startswith(("val_", "class_weight/"))}
        self.summaries.write_scalars("train", train, step)
        evaluation = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        if evaluation:
            self.summaries.write_scalars("eval", evaluation, step)

    def _write_class_weights(self) -> None:
        """The rule's `class_weight/<k>` at the epoch's step, as the epoch's callbacks left them."""
        weights = None if self.reweighting is None else self.reweighting.class_weights()
        if weights is not None:
            self.summaries.write_scalars("train", {f"class_weight/{class_id}": float(weight) for
                                                   class_id, weight in enumerate(np.asarray(weights))},
                                         int(self.global_step.numpy()))

    # ------------------------------------------------------- evaluation

    def evaluation(self, data: tf.data.Dataset, *, collect_logits: bool = False,
                   epoch: Optional[int] = None) -> EvaluationResult:
        """One pass over `data` (batched `(features, labels)`): an `EvaluationResult`.

        Without `collect_logits` the pass is distributed and the confusion
        matrix is summed across replicas; with it, every worker runs the
        model over the whole of `data` and the result carries the logits
        and labels as well.
        """
        step = int(self.global_step.numpy())
        if collect_logits:
            self._check_dataset(data, "data")
            if self._forward_with_loss_fn is None:
                self._forward_with_loss_fn = tf.function(self._forward_with_loss,
                                                         reduce_retracing=True)
            outputs, _ = collect_outputs(self._forward_with_loss_fn, data)
            logits, labels = concatenate(outputs, 0), concatenate(outputs, 2)
            predictions = self.task.predicted_classes(tf.constant(labels), tf.constant(logits)).numpy()
            return EvaluationResult.from_logits(
                logits, labels, loss=float(np.mean(concatenate(outputs, 1))), epoch=epoch, step=step,
                predictions=predictions, num_classes=self.num_classes)
        distributed, _ = self._distribute(data, "data")
        if self._eval_fn is None:
            self._eval_fn = self._make_eval_fn()
        self.eval_loss.reset_state()
        self.eval_confusion.reset_state()
        self._eval_fn(distributed)
        return EvaluationResult(confusion_matrix=self.eval_confusion.result().numpy(),
                                loss=float(self.eval_loss.result()), epoch=epoch, step=step)

    def evaluate_confusion_matrix(self, data: tf.data.Dataset) -> np.ndarray:
        """Streams `data` through the model and returns its confusion matrix."""
        return self.evaluation(data).confusion_matrix

    def evaluate(self, data: tf.data.Dataset) -> Dict[str, Any]:
        """Evaluates on `data` (batched `(features, labels)`).

        Returns:
          `loss`, `accuracy`, `balanced_accuracy`, `macro_f1`, `min_recall`,
          `recall/<k>`, `precision/<k>`, `f1/<k>` as floats, plus the arrays
          `recall`, `precision`, `f1`, `support` and `confusion_matrix`.
        """
        return self.evaluation(data).metrics()

    def collect_logits(self, data: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
        """`(logits float32 [N, K], labels int64 [N])` of a dataset of `(features, labels)` batches.

        A multi-label task's: `[N, L]` logits and multi-hot labels (`Task.example_view`).
        """
        self._check_dataset(data, "data")
        if self._forward_with_loss_fn is None:
            self._forward_with_loss_fn = tf.function(self._forward_with_loss, reduce_retracing=True)
        outputs, _ = collect_outputs(self._forward_with_loss_fn, data)
        return self.task.example_view(concatenate(outputs, 0), concatenate(outputs, 2), self.num_classes)

    # ------------------------------------------------------- prediction

    def _forward(self):
        if self._forward_fn is None:
            self._forward_fn = tf.function(self.predict_step, reduce_retracing=True)
        return self._forward_fn

    def predict_logits(self, data: Union[tf.data.Dataset, np.ndarray]) -> np.ndarray:
        """Logits `[N, num_classes]` for features (a dataset of batches or an array)."""
        if isinstance(data, np.ndarray):
            data = tf.data.Dataset.from_tensor_slices(data.astype(np.float32)).batch(1024)
        if not isinstance(data, tf.data.Dataset):
            raise ValueError(f"data must be a tf.data.Dataset or a NumPy array, got {type(data).__name__}.")
        self._prepare(data.element_spec)
        forward = self._forward()
        outputs, _ = collect_outputs(lambda x: (forward(x),), data, with_labels=False)
        return concatenate(outputs, 0)

    def _decision_offsets(self, logit_adjustment: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if logit_adjustment is None and self.operating_point is not None:
            logit_adjustment = self.operating_point.offsets()  # None: a decision that keeps them
        if logit_adjustment is None:
            return None
        offsets = np.asarray(logit_adjustment, np.float32)
        if offsets.shape != (self.num_classes,):
            raise ValueError(f"logit_adjustment must have {self.num_classes} values, "
                             f"got shape {offsets.shape}.")
        return offsets

    def predict(self, data: Union[tf.data.Dataset, np.ndarray], *,
                logit_adjustment: Optional[np.ndarray] = None) -> np.ndarray:
        """Class probabilities `[N, num_classes]`.

        Args:
          data: Batched dataset (features, or (features, labels)) or an array.
          logit_adjustment: Optional per-class offsets added to the logits
            before the softmax (e.g. `-tau * log(prior)` for post-hoc logit
            adjustment). Without it, the `calibration` (if any) gives the
            probabilities (as the exported model serves them), else the
            `operating_point` (if any) adjusts the logits.
        """
        logits = self.predict_logits(data)
        if logit_adjustment is None and self.calibration is not None:
            return np.asarray(self.calibration.apply(logits))
        offsets = self._decision_offsets(logit_adjustment)
        if offsets is not None:
            logits = logits + offsets
        return self.task.probabilities(logits)

    def predict_classes(self, data: Union[tf.data.Dataset, np.ndarray]) -> np.ndarray:
        """Predicted class indices `[N]`: the `operating_point`'s decision, else the task's."""
        logits = self.predict_logits(data)
        if self.operating_point is not None:
            return self.operating_point.decide(logits)
        return self.task.predictions(logits)
