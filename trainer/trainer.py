"""The compiled, multi-step, distribution-aware training loop.

`Trainer` runs `steps_per_loop` GradientTape steps per `tf.function` call and
applies a per-class reweighting rule to dL/dlogits before backpropagating.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from losses.rules import ReweightingRule, TrainingContext
from trainer.checkpointing import RunCheckpoint
from trainer.distributed import global_batch_size, shard_by_data, worker_directory
from trainer.fault_tolerance import FaultTolerance, TrainMetricsState, fault_tolerant_fit
from trainer.nonfinite import NonFiniteGuard
from trainer.metrics import ConfusionMatrix, flatten_metrics, per_class_metrics
from trainer.operating_point import load_operating_point
from trainer.strategies import is_chief
from trainer.summaries import SummaryWriters

ModelOrFactory = Union[keras.Model, Callable[[], keras.Model], None]


def _default_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def _learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(np.asarray(optimizer.learning_rate))


class Trainer:
    """Trains a Keras classifier with a compiled custom loop.

    Each call of the compiled train function runs up to `steps_per_loop`
    steps (`tf.range` inside one `tf.function`; the count is a tensor, so the
    function is traced once). Each step computes per-example losses from the
    logits, divides their sum by the global batch size once, takes dL/dlogits,
    lets `reweighting` rescale it per class, and backpropagates the result with
    `tape.gradient(logits, variables, output_gradients=...)` plus the
    gradients of the model's regularisation losses.

    Model, optimizer, metrics and rule state are created inside
    `strategy.scope()`, and the optimizer is built before the first trace.
    With `model_dir`, each epoch ends with a checkpoint, and a new `Trainer`
    on the same `model_dir` resumes from the latest one.

    Args:
      model: A Keras model returning logits, a zero-argument callable that
        builds one (called inside `strategy.scope()`), or None when a
        subclass overrides `build_model()`.
      optimizer: A Keras optimizer (default Adam, learning rate 1e-3). Create
        it inside `strategy.scope()` or pass a factory.
      loss: Per-example loss from logits: a Keras `Loss` (its unreduced
        `call` is used) or a callable `(labels, logits) -> [batch]`. Default:
        sparse categorical cross-entropy.
      reweighting: A `losses.ReweightingRule`, or None.
      num_classes: Number of classes; read from the model's output when None.
      strategy: A `tf.distribute.Strategy`; default the current one.
      steps_per_loop: Steps per compiled call.
      model_dir: Where checkpoints and TensorBoard events go; None for none.
      callbacks: Keras callbacks (the Keras callback protocol is honoured).
      seed: Seeds Python, NumPy and TensorFlow before the model is built.
      max_checkpoints: How many recent checkpoints to keep.
      skip_nonfinite_steps: Skip (and count) steps whose loss or gradients are
        NaN or Inf instead of stopping with `NonFiniteLossError`.

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
        optimizer: Union[keras.optimizers.Optimizer, Callable[[], keras.optimizers.Optimizer], None] = None,
        loss: Optional[Callable] = None,
        reweighting: Optional[ReweightingRule] = None,
        num_classes: Optional[int] = None,
        strategy: Optional[tf.distribute.Strategy] = None,
        steps_per_loop: int = 100,
        model_dir: Optional[str] = None,
        callbacks: Optional[Sequence[keras.callbacks.Callback]] = None,
        seed: Optional[int] = None,
        max_checkpoints: int = 3,
        skip_nonfinite_steps: bool = False,
    ):
        if isinstance(steps_per_loop, bool) or int(steps_per_loop) != steps_per_loop or steps_per_loop < 1:
            raise ValueError(f"steps_per_loop must be a positive integer, got {steps_per_loop!r}.")
        if num_classes is not None and (int(num_classes) != num_classes or num_classes < 2):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        if reweighting is not None and not isinstance(reweighting, ReweightingRule):
            raise ValueError(
                f"reweighting must be a losses.ReweightingRule, got {type(reweighting).__name__}.")
        if seed is not None:
            keras.utils.set_random_seed(int(seed))
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_loop = int(steps_per_loop)
        self.model_dir = model_dir
        self.seed = seed
        self.loss = loss if loss is not None else _default_loss()
        self.reweighting = reweighting
        self.callbacks = list(callbacks or [])
        self._max_checkpoints = max_checkpoints
        self._is_chief = is_chief(self.strategy)

        with self.strategy.scope():
            self.model = self._resolve_model(model)
            self.optimizer = self._resolve_optimizer(optimizer)
            self.num_classes = self._resolve_num_classes(num_classes)
            if self.reweighting is not None and not self.reweighting.built:
                self.reweighting.build(self.num_classes)
            self.train_confusion = ConfusionMatrix(self.num_classes, name="train_confusion_matrix")
            self.train_loss = keras.metrics.Mean(name="train_loss")
            self.eval_confusion = ConfusionMatrix(self.num_classes, name="eval_confusion_matrix")
            self.eval_loss = keras.metrics.Mean(name="eval_loss")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            # Steps of the current epoch done when a checkpoint was written mid-epoch (SIGTERM).
            self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step",
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.nonfinite_guard = NonFiniteGuard(skip=skip_nonfinite_steps)

        self._train_loop_fn = None
        self._eval_fn = None
        self._predict_fn = None
        self._checkpoint: Optional[RunCheckpoint] = None
        self._optimizer_built = False
        self.summaries = SummaryWriters(model_dir, enabled=self._is_chief)
        self._fault_tolerance = FaultTolerance(self)
        # A calibrated decision rule (trainer.operating_point); predict() applies it.
        self.operating_point = load_operating_point(model_dir)

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

    def _resolve_optimizer(self, optimizer) -> keras.optimizers.Optimizer:
        if optimizer is None:
            return keras.optimizers.Adam(learning_rate=1e-3)
        if not isinstance(optimizer, keras.optimizers.Optimizer) and callable(optimizer):
            optimizer = optimizer()
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"optimizer must be a keras.optimizers.Optimizer, got {type(optimizer).__name__}.")
        return optimizer

    def _model_output_width(self) -> Optional[int]:
        try:
            shape = self.model.output_shape
        except (AttributeError, ValueError, RuntimeError):
            return None
        if isinstance(shape, list):
            raise ValueError("model must have a single output (the logits); it has several.")
        return shape[-1] if shape else None

    def _resolve_num_classes(self, num_classes: Optional[int]) -> int:
        width = self._model_output_width()
        if num_classes is None:
            if width is None:
                raise ValueError("num_classes is None and the model's output width is unknown: pass num_classes.")
            num_classes = width
        if width is not None and width != num_classes:
            raise ValueError(
                f"The model returns {width} logits per example but num_classes={num_classes}: "
                f"the last layer must have num_classes units.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        return int(num_classes)

    def _ensure_ready(self, element_spec) -> None:
        """Builds model and optimizer variables, then restores a checkpoint."""
        if self._optimizer_built:
            return
        with self.strategy.scope():
            if not self.model.built or not self.model.variables:
                features_spec = element_spec[0] if isinstance(element_spec, tuple) else element_spec
                dummy = tf.zeros([1] + list(features_spec.shape[1:]), features_spec.dtype)
                logits = self.model(dummy, training=False)
                if logits.shape[-1] != self.num_classes:
                    raise ValueError(
                        f"The model returns {logits.shape[-1]} logits per example but "
                        f"num_classes={self.num_classes}.")
            # Built before the first trace (Keras issue 23085: a stateful
            # optimizer first built inside a replica fails under 2 replicas).
            self.optimizer.build(self.model.trainable_variables)
        if not hasattr(self.model, "optimizer") or self.model.optimizer is None:
            self.model.optimizer = self.optimizer
        self._optimizer_built = True
        if self.model_dir:
            self._checkpoint = RunCheckpoint(
                os.path.join(self._checkpoint_root(), "checkpoints"),
                max_to_keep=self._max_checkpoints if self._is_chief else 1, **self.checkpoint_items())
            # Every worker restores the chief's checkpoint (see docs/DISTRIBUTED.md).
            restored = self._checkpoint.restore_latest(os.path.join(self.model_dir, "checkpoints"))
            self._fault_tolerance.restored(restored)
            if restored:
                logging.info("Resumed from %s (epoch %d, step %d).", restored,
                                     int(self.epoch.numpy()), int(self.global_step.numpy()))

    def _checkpoint_root(self) -> str:
        # Workers other than the chief must save too (collective ops), but to a
        # private directory that fit() removes at its end (trainer/distributed.py).
        return worker_directory(self.model_dir, self.strategy) or self.model_dir

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

    # ------------------------------------------------------------ compiled code

    def compute_loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-example losses `[batch]` of the logits; override to change the loss."""
        if isinstance(self.loss, keras.losses.Loss):
            per_example = self.loss.call(labels, logits)
        else:
            per_example = self.loss(labels, logits)
        if per_example.shape.rank != 1:
            per_example = tf.reshape(per_example, [tf.shape(logits)[0], -1])
            per_example = tf.reduce_sum(per_example, axis=-1)
        return per_example

    def _labels(self, labels: tf.Tensor) -> tf.Tensor:
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        checks = [
            tf.debugging.assert_non_negative(labels, message="labels must be >= 0"),
            tf.debugging.assert_less(labels, self.num_classes,
                                     message=f"labels must be < num_classes={self.num_classes}"),
        ]
        # The identity depends on the checks, so they run before any use of the labels.
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def train_step(self, batch) -> None:
        """One optimizer step on one replica's batch `(features, labels)`."""
        features, labels = batch[0], self._labels(batch[1])
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(features, training=True)
            regularization = tf.add_n(self.model.losses) if self.model.losses else None
        logits = tf.cast(logits, tf.float32)
        offsets, context = None, None
        if self.reweighting is not None:
            context = TrainingContext(epoch=tf.convert_to_tensor(self.epoch),
                                      step=tf.convert_to_tensor(self.global_step))
            offsets = self.reweighting.logit_offsets(context)
        with tf.GradientTape() as loss_tape:
            loss_tape.watch(logits)
            # A rule acting through margins shifts the logits the loss sees (training
            # only); the shift is constant, so dL/dlogits is taken through it.
            loss_logits = logits if offsets is None else logits + tf.cast(offsets, logits.dtype)
            per_example = self.compute_loss(labels, loss_logits)
            # Divided by the examples of the step on all replicas: a partial last
            # batch splits unevenly, so per-replica size x replicas would be wrong.
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=global_batch_size(labels, self.strategy))
        grad_logits = loss_tape.gradient(loss, logits)
        if self.reweighting is not None:
            grad_logits = self.reweighting(labels, logits, grad_logits, context)
        targets, output_gradients = [logits], [grad_logits]
        if regularization is not None:
            targets.append(regularization / self.strategy.num_replicas_in_sync)
            output_gradients.append(None)
        gradients = tape.gradient(targets, variables, output_gradients=output_gradients)
        # Applied only when loss and gradients are finite (trainer/nonfinite.py).
        applied = self.nonfinite_guard.apply_gradients(self.optimizer, loss, gradients, variables,
                                                       step=self.global_step)
        self.train_loss.update_state(tf.where(applied, per_example, tf.zeros_like(per_example)),
                                     sample_weight=tf.cast(applied, per_example.dtype))
        self.train_confusion.update_state(labels, logits)

    def eval_step(self, batch) -> None:
        """Updates the evaluation metrics with one replica's batch."""
        features, labels = batch[0], self._labels(batch[1])
        logits = tf.cast(self.model(features, training=False), tf.float32)
        self.eval_loss.update_state(self.compute_loss(labels, logits))
        self.eval_confusion.update_state(labels, logits)

    def _make_train_loop(self):
        strategy = self.strategy

        @tf.function
        def train_loop(iterator, num_steps, infinite=False):
            # `infinite` (a Python bool, so each value is its own trace): the
            # data repeat forever and `next()` cannot run out. That skips the
            # optional, whose has-value test would put the whole step inside
            # a `tf.cond`; data of finite or unknown length keep the optional.
            steps_done = tf.constant(0, tf.int64)
            for _ in tf.range(num_steps):
                if infinite:
                    strategy.run(self.train_step, args=(next(iterator),))
                else:
                    optional = iterator.get_next_as_optional()
                    if not optional.has_value():
                        break
                    strategy.run(self.train_step, args=(optional.get_value(),))
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

    # ------------------------------------------------------------- public API

    def _distribute(self, data: tf.data.Dataset, argument: str):
        if not isinstance(data, tf.data.Dataset):
            raise ValueError(f"{argument} must be a tf.data.Dataset of (features, labels) batches, "
                             f"got {type(data).__name__}.")
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"{argument} must yield (features, labels) batches; its elements are {spec}.")
        if spec[0].shape.rank is not None and spec[0].shape.rank < 2:
            raise ValueError(f"{argument} must be batched (features of rank >= 2); got shape {spec[0].shape}.")
        cardinality = int(data.cardinality())
        if cardinality == 0:
            raise ValueError(f"{argument} is empty.")
        self._ensure_ready(spec)
        data = shard_by_data(data, self.strategy)
        return self.strategy.experimental_distribute_dataset(data), cardinality

    @fault_tolerant_fit
    def fit(self, train_data: tf.data.Dataset, *, epochs: int, steps_per_epoch: Optional[int] = None,
            validation_data: Optional[tf.data.Dataset] = None) -> Dict[str, List[float]]:
        """Trains until `epochs` epochs are done (counting resumed ones).

        Args:
          train_data: Batched dataset of `(features, labels)`; the batch size
            is the global one. Without `steps_per_epoch` an epoch is one pass.
          epochs: Total number of epochs; a resumed run trains the rest.
          steps_per_epoch: Steps per epoch; needed for infinite datasets. The
            iterator then carries over between epochs.
          validation_data: Batched dataset evaluated after each epoch; its
            metrics enter the logs with the `val_` prefix.

        Returns:
          History: each log name mapped to its value per epoch trained now.
        """
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
        if steps_per_epoch is not None and (int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}.")
        distributed, cardinality = self._distribute(train_data, "train_data")
        infinite = cardinality == tf.data.INFINITE_CARDINALITY
        if steps_per_epoch is None and infinite:
            raise ValueError("train_data is infinite (it repeats): pass steps_per_epoch.")
        if validation_data is not None:
            self._distribute(validation_data, "validation_data")
        if self._train_loop_fn is None:
            self._train_loop_fn = self._make_train_loop()

        callbacks = keras.callbacks.CallbackList(self.callbacks, model=self.model,
                                                 epochs=epochs, steps=steps_per_epoch or (cardinality if cardinality > 0 else None))
        self.model.stop_training = False
        history: Dict[str, List[float]] = {}
        persistent_iterator = iter(distributed) if steps_per_epoch else None
        callbacks.on_train_begin()
        for epoch in range(int(self.epoch.numpy()), epochs):
            if getattr(self.model, "stop_training", False):
                break  # e.g. a restored callback had already stopped this run
            self.epoch.assign(epoch)
            callbacks.on_epoch_begin(epoch)
            if not self._fault_tolerance.resuming_mid_epoch():
                self.train_loss.reset_state()
                self.train_confusion.reset_state()
            # After a restore: the same shuffling and position as the interrupted run.
            iterator, steps = self._fault_tolerance.epoch_iterator(distributed, epoch, persistent_iterator)
            limit = steps_per_epoch or (cardinality if cardinality > 0 else None)
            while limit is None or steps < limit:
                chunk = self.steps_per_loop if limit is None else min(self.steps_per_loop, limit - steps)
                callbacks.on_train_batch_begin(steps)
                done = int(self._train_loop_fn(iterator, tf.constant(chunk, tf.int64),
                                               infinite=infinite))
                steps += done
                self._fault_tolerance.after_train_loop(epoch, steps)  # NaN/Inf, SIGTERM
                callbacks.on_train_batch_end(steps - 1, {"loss": float(self.train_loss.result())})
                if done < chunk:
                    break
            if steps == 0:
                raise ValueError("train_data produced no batches in this epoch (empty or exhausted); "
                                 "pass a larger dataset, or repeat it and set steps_per_epoch.")
            logs = self._train_logs()
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(validation_data).items()
                             if not isinstance(v, (list, np.ndarray))})
            self._write_epoch_summaries(logs)
            callbacks.on_epoch_end(epoch, logs)
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            self.epoch.assign(epoch + 1)
            self._fault_tolerance.save()
            self._fault_tolerance.after_epoch()
            if getattr(self.model, "stop_training", False):
                break
        callbacks.on_train_end(history and {k: v[-1] for k, v in history.items()})
        return history

    def _train_logs(self) -> Dict[str, float]:
        metrics = per_class_metrics(self.train_confusion.result().numpy())
        logs = {"loss": float(self.train_loss.result())}
        logs.update(flatten_metrics(metrics))
        logs["learning_rate"] = _learning_rate(self.optimizer)
        return logs

    def _write_epoch_summaries(self, logs: Dict[str, float]) -> None:
        step = int(self.global_step.numpy())
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        if self.reweighting is not None:
            weights = self.reweighting.class_weights()
            if weights is not None:
                for class_id, weight in enumerate(np.asarray(weights)):
                    train[f"class_weight/{class_id}"] = float(weight)
        self.summaries.write_scalars("train", train, step)
        evaluation = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        if evaluation:
            self.summaries.write_scalars("eval", evaluation, step)

    def evaluate_confusion_matrix(self, data: tf.data.Dataset) -> np.ndarray:
        """Streams `data` through the model and returns its confusion matrix."""
        distributed, _ = self._distribute(data, "data")
        if self._eval_fn is None:
            self._eval_fn = self._make_eval_fn()
        self.eval_loss.reset_state()
        self.eval_confusion.reset_state()
        self._eval_fn(distributed)
        return self.eval_confusion.result().numpy()

    def evaluate(self, data: tf.data.Dataset) -> Dict[str, Any]:
        """Evaluates on `data` (batched `(features, labels)`).

        Returns:
          `loss`, `accuracy`, `balanced_accuracy`, `macro_f1`, `min_recall`,
          `recall/<k>`, `precision/<k>`, `f1/<k>` as floats, plus the arrays
          `recall`, `precision`, `f1`, `support` and `confusion_matrix`.
        """
        matrix = self.evaluate_confusion_matrix(data)
        metrics = per_class_metrics(matrix)
        result: Dict[str, Any] = {"loss": float(self.eval_loss.result())}
        result.update(flatten_metrics(metrics))
        for key in ("recall", "precision", "f1", "support"):
            result[key] = np.asarray(metrics[key])
        result["confusion_matrix"] = matrix
        return result

    def _logits_of(self, features: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.model(features, training=False), tf.float32)

    def predict_logits(self, data: Union[tf.data.Dataset, np.ndarray]) -> np.ndarray:
        """Logits `[N, num_classes]` for features (a dataset of batches or an array)."""
        if isinstance(data, np.ndarray):
            data = tf.data.Dataset.from_tensor_slices(data.astype(np.float32)).batch(1024)
        if not isinstance(data, tf.data.Dataset):
            raise ValueError(f"data must be a tf.data.Dataset or a NumPy array, got {type(data).__name__}.")
        spec = data.element_spec
        self._ensure_ready(spec)
        if self._predict_fn is None:
            self._predict_fn = tf.function(self._logits_of)
        outputs = []
        for element in data:
            features = element[0] if isinstance(element, tuple) else element
            outputs.append(self._predict_fn(features).numpy())
        if not outputs:
            raise ValueError("data is empty.")
        return np.concatenate(outputs, axis=0)

    def predict(self, data: Union[tf.data.Dataset, np.ndarray], *,
                logit_adjustment: Optional[np.ndarray] = None) -> np.ndarray:
        """Class probabilities `[N, num_classes]`.

        Args:
          data: Batched dataset (features, or (features, labels)) or an array.
          logit_adjustment: Optional per-class offsets added to the logits
            before the softmax (e.g. `-tau * log(prior)` for post-hoc logit
            adjustment). Without it, the calibrated `operating_point` (if
            any) adjusts the logits.
        """
        logits = self.predict_logits(data)
        if logit_adjustment is None and self.operating_point is not None:
            logit_adjustment = self.operating_point.offsets()
        if logit_adjustment is not None:
            offsets = np.asarray(logit_adjustment, np.float32)
            if offsets.shape != (self.num_classes,):
                raise ValueError(f"logit_adjustment must have {self.num_classes} values, got shape {offsets.shape}.")
            logits = logits + offsets
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict_classes(self, data: Union[tf.data.Dataset, np.ndarray]) -> np.ndarray:
        """Predicted class indices `[N]`: the `operating_point`'s rule, else the argmax."""
        logits = self.predict_logits(data)
        if self.operating_point is not None:
            return self.operating_point.decide(logits)
        return logits.argmax(axis=1)
