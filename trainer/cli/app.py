"""Runs a command as a program: parses the flags, prints `--help` by topic, ends with the right exit status.

A bad flag (parse errors too) prints one `error: ...` line and exits 2; `trainer.cli.errors` maps the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf
from absl import app, flags

from trainer.cli.config import progress_verbosity
from trainer.cli.errors import EXIT_OK, EXIT_USAGE, exit_status_for, one_line
from trainer.cli.logs import configure_logging

FLAGS = flags.FLAGS
# The status `run_program` ended with (its `SystemExit`), for the entry point's last exit handler
# (`trainer.main`); None until then, and when it ended with an uncaught exception.
exit_status: Optional[int] = None
HELP_FLAGS = ("help", "helpshort", "?")
FULL_HELP_FLAGS = ("helpfull",)
_FLAG_GROUPS = "trainer.cli.flag_groups."


@dataclasses.dataclass(frozen=True)
class Command:
    """A command of the command line.

    Attributes:
      main: Runs it: `main(argv)`, argv without the flags (the program name).
      groups: The flag groups (`trainer.cli.flag_groups` modules) its `--help` shows, in order.
      usage: What `--help` says first: what the command does and how to call it.
    """

    main: Callable[[List[str]], Any]
    groups: Tuple[ModuleType, ...]
    usage: str


def process_start_time() -> Optional[float]:
    """When this process started, in `time.time()` seconds (to 10 ms, from /proc); None off Linux."""
    try:
        with open("/proc/self/stat") as stream:
            # Field 22 (start time, clock ticks after boot); the fields after the ")" of the name.
            ticks = int(stream.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as stream:
            uptime = float(stream.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


class Timeline:
    """Seconds since the process started at the named moments of a command (its `Timing:` log line).

    Args:
      start: The `time.time()` the seconds count from; None: the process's start
        (`process_start_time`), else now.
    """

    def __init__(self, start: Optional[float] = None):
        self.start = start if start is not None else (process_start_time() or time.time())
        self.marks: Dict[str, float] = {}

    def mark(self, name: str) -> None:
        """Records `name` at now; a name already marked keeps its first time."""
        self.marks.setdefault(name, time.time() - self.start)

    def line(self) -> str:
        """`Timing (s since the process started): run 3.41, data 3.52, ...` in the order marked."""
        marks = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.marks.items())
        return f"Timing (s since the process started): {marks}"


def help_text(command: Command) -> str:
    """The command's usage and its flags by topic, each with its help and default."""
    parts = [command.usage.strip(), "",
             "Flags by topic (--helpfull lists absl's and TensorFlow's flags too):"]
    for group in command.groups:
        lines = FLAGS.module_help(group.__name__).splitlines()
        heading = f"{group.__name__}:"
        parts += ["", f"{group.TITLE}:"] + [line for line in lines if line.strip() and line != heading]
    return "\n".join(parts) + "\n"


def full_help_text(command: Command) -> str:
    """`help_text`, then every other module's flags (absl, TensorFlow), as absl's `--helpfull` lists them."""
    others = sorted(module for module in FLAGS.flags_by_module_dict()
                    if not module.startswith(_FLAG_GROUPS))
    rest = "\n".join(FLAGS.module_help(module) for module in others)
    return help_text(command) + "\nOther flags:\n" + rest + "\n"


def _flag_name(argument: str) -> Optional[str]:
    """`help` for `--help` or `-help`; None for what is not a flag without a value."""
    if not argument.startswith("-") or "=" in argument:
        return None
    return argument.lstrip("-")


def _fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse_flags(argv: List[str], *, command: Command) -> List[str]:
    """Parses the command line; prints help and exits 0, or exits 2 with one `error: ...` line.

    Args:
      argv: The command line, program name first.
      command: The command (its `--help`).

    Returns:
      `argv` without its flags: the program name alone (positional arguments are refused).
    """
    arguments = argv[1:]
    if "--" in arguments:
        arguments = arguments[:arguments.index("--")]
    names = {_flag_name(argument) for argument in arguments}
    if names.intersection(FULL_HELP_FLAGS):
        sys.stdout.write(full_help_text(command))
        sys.exit(EXIT_OK)
    if names.intersection(HELP_FLAGS):
        sys.stdout.write(help_text(command))
        sys.exit(EXIT_OK)
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        _fail(f"error: {one_line(error)} (see --help)")
    if len(remaining) > 1:
        _fail(f"error: unexpected arguments {' '.join(remaining[1:])!r}: every setting is a flag, "
              f"--name=value (see --help).")
    return remaining


def run_command(command: Callable[[], Any]) -> int:
    """Runs `command`, mapping the errors that end a run to a message and an exit status.

    Bad flags or data, a changed resume, a failed write, NaN, SIGTERM: the
    message names the problem and a traceback would bury it. Anything else is
    a bug: re-raised with its traceback.

    Returns:
      The exit status (`trainer.cli.errors`).
    """
    configure_logging(progress_verbosity())
    try:
        command()
    except Exception as error:  # noqa: BLE001 - mapped to a message and a status, or re-raised.
        status, message = exit_status_for(error)
        if status is None:
            raise
        print(message, file=sys.stderr)
        # TensorFlow's clean-up warnings at exit (e.g. about a refused restore) would bury it.
        tf.get_logger().setLevel("ERROR")
        return status
    return EXIT_OK


def run_program(command: Command) -> None:
    """Parses the flags, runs the command and exits with its status (the body of an entry point).

    Args:
      command: E.g. `trainer.cli.train.COMMAND`.
    """
    global exit_status
    try:
        app.run(lambda argv: run_command(functools.partial(command.main, argv)),
                flags_parser=functools.partial(parse_flags, command=command))
    except SystemExit as done:
        code = 0 if done.code is None else done.code
        exit_status = code if isinstance(code, int) else None  # a message: Python prints it, exits 1
        raise
