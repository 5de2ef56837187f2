"""How a command ends: exit statuses, the one `error: ...` line, library argument names turned into flags.

Library errors name their own arguments (`ArgumentError.argument`); `ARGUMENT_FLAGS` gives the flag of each.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Mapping, Optional, Tuple

import tensorflow as tf
from absl import flags

from trainer.nonfinite import NonFiniteLossError
from trainer.preemption import EXIT_PREEMPTED, PreemptedError

_FLAG_GROUPS = "trainer.cli.flag_groups."

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NONFINITE = 3

# Library argument -> flag, where the two names differ. An argument that is itself the name of a
# flag (class_weights, target_class, label_column, model_dir, seed, ...) names that flag. Names
# whose flag depends on the call (`name` of make_loss / make_rule / make_strategy, `patience` of
# the two recall callbacks) are given where the call is made, with `flags_named`.
ARGUMENT_FLAGS: Mapping[str, str] = {
    "num_devices": "num_cpu_devices",      # trainer.distribute.split_cpu_into_logical_devices
    "scale": "ldam_scale",                 # losses.LDAMCrossentropy, losses.registry.make_loss
    "start_epoch": "drw_start_epoch",      # losses.DeferredReweighting
    "weight": "target_weight",             # losses.TargetClassWeight
    "total_epochs": "epochs",              # Trainer.fit
    "mode": "recall_target_mode",          # callbacks.RecallTarget
    "adjust": "recall_target_adjust",      # callbacks.RecallTarget
    "stop_at": "stop_at_recall",           # callbacks.RecallEarlyStopping
    "factor": "reduce_lr_factor",          # callbacks.RecallReduceLROnPlateau
}


class UsageError(ValueError):
    """Flags that do not fit together or do not fit the data: printed as `error: ...`, status 2."""


def project_flag_names() -> frozenset:
    """The names of the flags defined in `trainer.cli.flag_groups` (loaded by every command)."""
    return frozenset(flag.name for module, module_flags in flags.FLAGS.flags_by_module_dict().items()
                     if module.startswith(_FLAG_GROUPS) for flag in module_flags)


def flag_for(argument: str, overrides: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The `--flag` that sets library argument `argument`, or None when no flag does.

    Args:
      argument: The argument's name as the library calls it (`ArgumentError.argument`).
      overrides: Argument -> flag for this call, before `ARGUMENT_FLAGS`.
    """
    if argument.startswith("--"):
        return argument
    name = (overrides or {}).get(argument) or ARGUMENT_FLAGS.get(argument, argument)
    return f"--{name}" if name in project_flag_names() else None


def as_flag_error(error: BaseException, overrides: Optional[Mapping[str, str]] = None) -> BaseException:
    """`error` with its argument renamed to the flag that sets it (itself when it has none)."""
    argument = getattr(error, "argument", None)
    if not isinstance(argument, str) or not hasattr(error, "renamed"):
        return error
    flag = flag_for(argument, overrides)
    return error if flag is None or flag == argument else error.renamed(flag)


@contextlib.contextmanager
def flags_named(**overrides: str) -> Iterator[None]:
    """Inside: an error naming a library argument names its flag instead (`overrides` first).

    Example:
      >>> with flags_named(name="strategy"):
      ...     make_strategy(config.strategy, tpu=config.tpu)
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised, renamed when it names an argument
        renamed = as_flag_error(error, overrides)
        if renamed is error:
            raise
        raise renamed from None


def describe_op_error(error: tf.errors.OpError) -> str:
    """The useful lines of a TensorFlow runtime error, without graph node dumps."""
    lines = []
    for line in str(getattr(error, "message", error)).splitlines():
        line = line.strip()
        if not line or line.startswith(("[[", "Encountered when executing", "Traceback", "File ",
                                        "Graph execution error", "Detected at node")):
            continue
        if line.startswith("Function call stack") or line.startswith("Stack trace"):
            break
        line = re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]", "", line)
        if line:
            lines.append(line)
    text = " ".join(lines[:4]) or type(error).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def one_line(message: Any) -> str:
    """`message` on one line: its lines joined by spaces."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def exit_status_for(error: BaseException) -> Tuple[Optional[int], str]:
    """The exit status and the message line for an error that ends a command.

    0 done, 2 bad input (flags, data, an incompatible or changed run, a failed
    write), 3 a non-finite loss, 143 preempted after saving.

    Returns:
      `(status, message)`; status None for an unexpected error (a bug, to be
      shown with its traceback).
    """
    if isinstance(error, PreemptedError):
        return EXIT_PREEMPTED, f"preempted: {one_line(error)}"
    if isinstance(error, NonFiniteLossError):
        return EXIT_NONFINITE, f"error: {one_line(error)}"
    if isinstance(error, tf.errors.OpError):
        # E.g. a label assertion of the compiled step, or a file that cannot be written.
        return EXIT_USAGE, f"error: {describe_op_error(error)}"
    if isinstance(error, (ValueError, OSError)):
        return EXIT_USAGE, f"error: {one_line(as_flag_error(error))}"
    return None, ""
