"""A cheap guard in the compiled step against NaN or Inf in the loss or the gradients.

`NonFiniteGuard.apply_gradients` replaces `optimizer.apply_gradients` inside a
replica's step: the update is applied only when the loss and the global
gradient norm are finite on every replica, and a skipped step is counted.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf
from absl import logging


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
        self._logged = 0

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

        if replica is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
            return self._apply_or_skip(finite, totals, step, lambda: optimizer.apply_gradients(pairs))

        def cross_replica(strategy, finite, totals, gradients, variables):
            # A cond whose branch calls merge_call (apply_gradients does) is only
            # allowed in a cross-replica context; every replica computed the same
            # all-reduced `finite`, so the first one's decides.
            finite = strategy.experimental_local_results(finite)[0]
            totals = strategy.experimental_local_results(totals)[0]

            def apply():
                strategy.extended.call_for_each_replica(
                    lambda g, v: optimizer.apply_gradients(zip(g, v)), args=(gradients, variables))

            return self._apply_or_skip(finite, totals, step, apply)

        return replica.merge_call(cross_replica, args=(finite, totals, list(gradients), list(variables)))

    def _apply_or_skip(self, finite, totals, step, apply_fn) -> tf.Tensor:
        def apply():
            apply_fn()
            return tf.constant(True)

        def skip():
            self.skipped_steps.assign_add(1)
            self.last_step.assign(tf.cast(tf.convert_to_tensor(step), tf.int64) + 1)
            self.last_loss.assign(totals[0])
            self.last_gradient_norm.assign(tf.sqrt(totals[1]))
            return tf.constant(False)

        return tf.cond(finite, apply, skip)

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
