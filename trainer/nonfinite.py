"""A cheap guard in the compiled step against NaN or Inf in the loss or the gradients.

`NonFiniteGuard.apply_gradients` replaces `optimizer.apply_gradients` inside a
replica's step: the update is applied only when the loss and the global
gradient norm are finite on every replica, and a skipped step is counted.

With a `keras.optimizers.LossScaleOptimizer` (float16 models) the guard also
keeps its loss scale: the Trainer multiplies dL/dlogits by the scale and
divides the gradients by it (`unscale`) before they reach the guard; a step
whose loss is finite but whose gradients overflowed while the scale was above
`LOSS_SCALE_FLOOR` is a loss-scale skip (the scale halves, nothing is applied,
no error), not a non-finite step.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

# An overflow at a loss scale of 1 or below is not the scaling's doing: the
# unscaled gradients are not finite, which the guard treats as any non-finite step.
LOSS_SCALE_FLOOR = 1.0


def loss_scaler(optimizer: keras.optimizers.Optimizer) -> Optional[keras.optimizers.LossScaleOptimizer]:
    """The optimizer if it is a `keras.optimizers.LossScaleOptimizer`, else None."""
    return optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None


def unscale(gradients: Sequence[Optional[tf.Tensor]], scale: tf.Tensor) -> list:
    """The gradients divided by the loss scale (`None` kept, `IndexedSlices` as slices)."""
    unscaled = []
    for gradient in gradients:
        if gradient is None:
            unscaled.append(None)
        elif isinstance(gradient, tf.IndexedSlices):
            unscaled.append(tf.IndexedSlices(gradient.values / tf.cast(scale, gradient.dtype),
                                             gradient.indices, gradient.dense_shape))
        else:
            unscaled.append(gradient / tf.cast(scale, gradient.dtype))
    return unscaled


class NonFiniteLossError(FloatingPointError):
    """Training hit a non-finite loss or gradient and stopped.

    Attributes:
      step: The 1-based global step whose loss or gradients were not finite.
      loss: The loss of that step (mean over the global batch).
      gradient_norm: Root of the sum over replicas of the squared gradient norms.
    """

    def __init__(self, message: str, *, step: int, loss: float, gradient_norm: float):
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.gradient_norm = gradient_norm


def _guard_variable(initial_value, dtype, name: str) -> tf.Variable:
    # ON_READ: each replica writes its own copy without a cross-replica sync;
    # every replica writes the same all-reduced value, and a read takes the first.
    return tf.Variable(initial_value, dtype=dtype, trainable=False, name=name,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class NonFiniteGuard(tf.Module):
    """Skips optimizer updates whose loss or gradients are not finite.

    Create it inside `strategy.scope()`. In each replica's step, call
    `apply_gradients` instead of `optimizer.apply_gradients`: it all-reduces
    the loss and the squared gradient norm (one two-element all-reduce), so
    all replicas agree, and applies the update under a `tf.cond` (in a
    cross-replica context where the strategy needs a `merge_call`, as Keras's
    `LossScaleOptimizer` does). A skipped step leaves model and optimizer
    state untouched (Adam's moments and iteration count included), adds one to
    `skipped_steps` and records its step and loss.

    With a `keras.optimizers.LossScaleOptimizer`, `gradients` are the
    unscaled ones (`unscale`) and the update goes to its inner optimizer; the
    guard keeps the scale as Keras's `LossScaleOptimizer.apply` does (doubled
    after `dynamic_growth_steps` applied steps in a row, halved on an
    overflow), deciding on the all-reduced figures, so all replicas agree. A
    step with a finite loss whose gradients are not finite while the scale is
    above `LOSS_SCALE_FLOOR` is an overflow: skipped, counted in
    `loss_scale_skips`, never an error. A non-finite loss, or an overflow at
    a scale of 1 or less, is a non-finite step as above (the scale unchanged).

    Between compiled calls, `check` either raises `NonFiniteLossError` (the
    default) or logs the steps skipped since the last check
    (`skip=True`). With `skip=False`, `stop_requested()` lets the compiled loop
    stop at the first bad step.

    Args:
      skip: Skip non-finite steps and go on (True) or stop training (False).

    Example:
      >>> with strategy.scope():
      ...     guard = NonFiniteGuard(skip=False)
      >>> # in the replica step:
      >>> applied = guard.apply_gradients(optimizer, loss, gradients, variables, step=global_step)
    """

    def __init__(self, *, skip: bool = False):
        super().__init__(name="nonfinite_guard")
        self.skip = bool(skip)
        self.skipped_steps = _guard_variable(0, tf.int64, "skipped_steps")
        self.last_step = _guard_variable(0, tf.int64, "last_nonfinite_step")
        self.last_loss = _guard_variable(0.0, tf.float32, "last_nonfinite_loss")
        self.last_gradient_norm = _guard_variable(0.0, tf.float32, "last_nonfinite_gradient_norm")
        self.loss_scale_skips = _guard_variable(0, tf.int64, "loss_scale_skips")
        self.last_loss_scale = _guard_variable(0.0, tf.float32, "loss_scale_after_last_skip")
        self._logged = 0
        self._logged_loss_scale_skips = 0

    # ------------------------------------------------------------ compiled

    def apply_gradients(self, optimizer: keras.optimizers.Optimizer, loss: tf.Tensor,
                        gradients: Sequence[Optional[tf.Tensor]], variables: Sequence[tf.Variable],
                        *, step: tf.Variable) -> tf.Tensor:
        """Applies `gradients` when they and `loss` are finite on every replica.

        Call in a replica context (inside `strategy.run`, or with no strategy).

        Args:
          optimizer: The optimizer (built).
          loss: This replica's scalar loss, already divided by the global batch.
          gradients: This replica's gradients (summed across replicas by the optimizer).
          variables: The variables the gradients belong to.
          step: The global step counter; the recorded step is `step + 1`.

        Returns:
          A boolean scalar: whether the update was applied.
        """
        present = [g for g in gradients if g is not None]
        squared_norm = tf.square(tf.linalg.global_norm(present)) if present else tf.constant(0.0)
        local = tf.stack([tf.cast(loss, tf.float32), tf.cast(squared_norm, tf.float32)])
        replica = tf.distribute.get_replica_context()
        totals = replica.all_reduce(tf.distribute.ReduceOp.SUM, local) if replica else local
        finite = tf.reduce_all(tf.math.is_finite(totals))
        pairs = list(zip(gradients, variables))
        scaler = loss_scaler(optimizer)
        # A LossScaleOptimizer's own apply would unscale again: the unscaled gradients go to its inner one.
        update = optimizer if scaler is None else scaler.inner_optimizer

        if replica is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
            return self._apply_or_skip(finite, totals, step, lambda: update.apply_gradients(pairs),
                                       scaler)

        def cross_replica(strategy, finite, totals, gradients, variables):
            # A cond whose branch calls merge_call (apply_gradients does) is only
            # allowed in a cross-replica context; every replica computed the same
            # all-reduced `finite`, so the first one's decides.
            finite = strategy.experimental_local_results(finite)[0]
            totals = strategy.experimental_local_results(totals)[0]

            def apply():
                strategy.extended.call_for_each_replica(
                    lambda g, v: update.apply_gradients(zip(g, v)), args=(gradients, variables))

            return self._apply_or_skip(finite, totals, step, apply, scaler)

        return replica.merge_call(cross_replica, args=(finite, totals, list(gradients), list(variables)))

    def _apply_or_skip(self, finite, totals, step, apply_fn,
                       scaler: Optional[keras.optimizers.LossScaleOptimizer] = None) -> tf.Tensor:
        def apply():
            apply_fn()
            if scaler is not None:
                _grow_loss_scale(scaler)
            return tf.constant(True)

        def skip():
            self.skipped_steps.assign_add(1)
            self.last_step.assign(tf.cast(tf.convert_to_tensor(step), tf.int64) + 1)
            self.last_loss.assign(totals[0])
            self.last_gradient_norm.assign(tf.sqrt(totals[1]))
            return tf.constant(False)

        if scaler is None:
            return tf.cond(finite, apply, skip)

        def overflow():
            halved = _halve_loss_scale(scaler)
            self.loss_scale_skips.assign_add(1)
            self.last_loss_scale.assign(halved)
            return tf.constant(False)

        scale = tf.convert_to_tensor(scaler.dynamic_scale)
        overflowed = tf.logical_and(tf.math.is_finite(totals[0]), scale > LOSS_SCALE_FLOOR)
        return tf.cond(finite, apply, lambda: tf.cond(overflowed, overflow, skip))

    def stop_requested(self):
        """In the compiled loop: True once a step was not finite and `skip` is off."""
        if self.skip:
            return False
        return self.skipped_steps > 0

    # ------------------------------------------------------------- eager

    def check(self, *, epoch: int, last_checkpoint: Optional[str]) -> None:
        """Raises or logs after a compiled call, as `skip` says.

        Args:
          epoch: The 0-based epoch being trained (reported 1-based).
          last_checkpoint: Path of the latest checkpoint, for the message.

        Raises:
          NonFiniteLossError: When a step was not finite and `skip` is off.
        """
        self._log_loss_scale_skips()
        count = int(self.skipped_steps.numpy())
        if count == self._logged:
            return
        step = int(self.last_step.numpy())
        loss = float(self.last_loss.numpy())
        norm = float(self.last_gradient_norm.numpy())
        if self.skip:
            logging.warning("Skipped %d step(s) with a non-finite loss or gradients so far "
                            "(latest: step %d, loss=%s, gradient norm=%s).", count, step, loss, norm)
            self._logged = count
            return
        self.skipped_steps.assign(0)
        self._logged = 0
        where = (f"the last good checkpoint, {last_checkpoint}, is intact and the same command "
                 f"resumes from it" if last_checkpoint else "no checkpoint has been written yet")
        raise NonFiniteLossError(
            f"Training stopped: the loss or its gradients are not finite at step {step} "
            f"(epoch {epoch + 1}): loss={loss}, gradient norm={norm}. That update was not applied and "
            f"{where}. Lower the learning rate, check the data for extreme values, or skip such "
            f"steps (--skip_nonfinite_steps, Trainer(skip_nonfinite_steps=True)).",
            step=step, loss=loss, gradient_norm=norm)

    @property
    def total_skipped(self) -> int:
        """Steps skipped so far (with `skip=True`)."""
        return int(self.skipped_steps.numpy())

    @property
    def total_loss_scale_skips(self) -> int:
        """Steps skipped so far because float16 gradients overflowed under loss scaling."""
        return int(self.loss_scale_skips.numpy())

    def _log_loss_scale_skips(self) -> None:
        count = int(self.loss_scale_skips.numpy())
        if count != self._logged_loss_scale_skips:
            logging.info("Loss scaling: %d step(s) skipped so far because the float16 gradients "
                         "overflowed (the loss scale was halved each time; now %s).", count,
                         float(self.last_loss_scale.numpy()))
            self._logged_loss_scale_skips = count


def _grow_loss_scale(scaler: keras.optimizers.LossScaleOptimizer) -> None:
    """After an applied step: Keras's rule, the scale doubles after `dynamic_growth_steps` in a row."""
    counter = tf.convert_to_tensor(scaler.step_counter)
    grow = tf.equal(counter, scaler.dynamic_growth_steps - 1)
    scale = tf.convert_to_tensor(scaler.dynamic_scale)
    scaler.step_counter.assign(tf.where(grow, tf.zeros_like(counter), counter + 1))
    scaler.dynamic_scale.assign(tf.where(grow, scale * 2.0, scale))


def _halve_loss_scale(scaler: keras.optimizers.LossScaleOptimizer) -> tf.Tensor:
    """After an overflow: Keras's rule, the scale halves and the growth count restarts; the new scale."""
    halved = tf.convert_to_tensor(scaler.dynamic_scale) * 0.5
    scaler.step_counter.assign(tf.zeros_like(tf.convert_to_tensor(scaler.step_counter)))
    scaler.dynamic_scale.assign(halved)
    return halved
