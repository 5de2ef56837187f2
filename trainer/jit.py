"""XLA for the training step: what it covers under each strategy, and `auto`'s measured choice.

`Trainer(jit_compile=True)` compiles the per-replica step with XLA
(`tf.function(jit_compile=True)`) inside the uncompiled multi-step loop; the
loop itself reads the iterator, which XLA cannot compile. What the compiled
part covers depends on the strategy (`xla_scope`):

- `step` (the default strategy, `OneDeviceStrategy`, and Mirrored or
  multi-worker strategies whose devices are all GPUs): the whole update after
  the label checks: forward and backward pass, loss, the rule, the non-finite
  guard, the optimizer and the metrics. (Label checks are `tf.debugging`
  asserts, which XLA drops; they run in the graph just before the compiled
  part, so bad labels still stop the step before any use.)
- `replica` (Mirrored or multi-worker strategies with CPU devices): the
  model's forward and backward pass. TensorFlow lifts a compiled function that
  `strategy.run` calls into one cluster over all replicas, which XLA cannot
  compile across CPU devices, and the cross-replica parts (the guard's and
  EQL v2's all-reduce, the optimizer's `merge_call`) cannot run inside a
  compiled function there; those, and the loss, the rule and the metrics
  around them, stay in the graph.
- `tpu`: `TPUStrategy` compiles every step with XLA anyway; nothing changes.

The updates equal the plain graph's to float rounding, with one exception:
TensorFlow's stateless random ops (Keras Dropout) draw other, equally
distributed numbers under XLA. XLA compiles once per batch shape (a partial
last batch compiles once more).

`jit_compile="auto"` takes the run's first batch from the training iterator
and times steps both ways on it (`probe`, then `measure`: alternating rounds,
medians, CPU time on CPUs), keeps the faster, trains that batch as the real
first step the chosen way, and remembers the choice in
`<model_dir>/checkpoints/jit_compile.json` (`save_choice`, `load_choice`), so a
resumed run does not measure again. A run whose planned steps take under
`Measurement.min_run_seconds` on the plain graph is not compiled at all
(`too_short`). The timed steps run on the real state and are undone
(`VariableSnapshot` of every checkpointed variable and the NaN guard's, put
back afterwards): step counts, weights and checkpoints are bit for bit those
of a run told the chosen way. On one device the timed steps go through the
train loops themselves (`FirstBatchSteps`), so nothing is traced twice.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf
from absl import logging

from trainer.checks import ArgumentError
from trainer.distribute import is_multi_worker
from trainer.json_files import read_json, write_json_atomically

JIT_COMPILE_CHOICES = ("auto", "true", "false")
FILENAME = "jit_compile.json"
VERSION = 1

JitCompile = Union[bool, str]


def check_jit_compile(value: Any, argument: str = "jit_compile") -> JitCompile:
    """`True`, `False` or `"auto"` from a bool or one of `JIT_COMPILE_CHOICES` (any case).

    Raises:
      ArgumentError: naming `argument` for any other value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in JIT_COMPILE_CHOICES:
        return {"auto": "auto", "true": True, "false": False}[value.lower()]
    raise ArgumentError(argument, value, "must be True, False or 'auto'")


def _device_types(strategy: tf.distribute.Strategy) -> Tuple[str, ...]:
    try:
        devices = strategy.extended.worker_devices
    except (AttributeError, RuntimeError, NotImplementedError):
        devices = ()
    types = sorted({tf.DeviceSpec.from_string(device).device_type or "CPU" for device in devices})
    if types:
        return tuple(types)
    # The default strategy names no devices: its ops go to the first GPU when there is one.
    return ("GPU",) if tf.config.list_logical_devices("GPU") else ("CPU",)


def xla_scope(strategy: tf.distribute.Strategy) -> str:
    """What XLA compiles of the step under `strategy`: `step`, `replica` or `tpu` (module docstring)."""
    if isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
        return "tpu"
    if isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        # Only with GPUs does TensorFlow keep such a step per replica and
        # all-reduce with collectives instead of merge_call inside it.
        return "step" if _device_types(strategy) == ("GPU",) else "replica"
    return "step"


def run_facts(strategy: tf.distribute.Strategy) -> Dict[str, Any]:
    """What a measured choice depends on besides the model: strategy, replicas, device types."""
    return {"strategy": type(strategy).__name__, "num_replicas": int(strategy.num_replicas_in_sync),
            "device_types": list(_device_types(strategy)), "xla_scope": xla_scope(strategy)}


# ------------------------------------------------------------------ state


def _components(variable: Any) -> Sequence[tf.Variable]:
    if isinstance(variable, keras.Variable):
        variable = variable.value
    if isinstance(variable, tf.distribute.DistributedValues):
        return tuple(variable.values)
    return (variable,)


def variables_of(items: Iterable[Any]) -> List[Any]:
    """The variables of trackables: tf.Variables, Keras models, optimizers and metrics, tf.Modules."""
    found: List[Any] = []
    for item in items:
        if isinstance(item, (tf.Variable, keras.Variable)):
            found.append(item)
        else:
            found.extend(getattr(item, "variables", None) or ())
    return found


class VariableSnapshot:
    """The values of variables, every replica's copy apart, to put back with `restore`.

    Each distributed variable is saved per component (a MirroredVariable's
    copies, a SyncOnRead variable's per-replica values), so a restore is
    exact under any strategy. Call both in eager mode, outside any replica.

    Args:
      variables: tf.Variables or Keras variables (duplicates are saved once).
    """

    def __init__(self, variables: Iterable[Any]):
        seen = set()
        self._saved: List[Tuple[tf.Variable, Any]] = []
        for variable in variables:
            for component in _components(variable):
                if id(component) in seen:
                    continue
                seen.add(id(component))
                self._saved.append((component, component.numpy()))

    def __len__(self) -> int:
        return len(self._saved)

    def restore(self) -> None:
        """Puts every saved value back."""
        for component, value in self._saved:
            component.assign(value)


# ---------------------------------------------------------------- measuring


def wall_timer(jit: bool, run: Callable[[], Any]) -> float:
    """Wall seconds of `run()` (which must block until its steps are done); `jit` is ignored."""
    del jit
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cpu_timer(jit: bool, run: Callable[[], Any]) -> float:
    """CPU seconds this process spent in `run()` (all its threads): what other processes disturb least."""
    del jit
    start = time.process_time()
    run()
    return time.process_time() - start


@dataclasses.dataclass
class Measurement:
    """How `auto` times the two ways: rounds, steps per round, the clock.

    Attributes:
      rounds: Timed rounds per way (alternating, ABBA order); the medians decide.
      steps: Steps per timed round, at least; raised so a round lasts
        `min_seconds` (after a probe), up to `max_steps`.
      min_seconds: Shortest round worth timing.
      max_steps: Most steps per round.
      min_run_seconds: A run whose planned steps take less than this on the
        plain graph (by `probe`) stays plain without compiling with XLA:
        compiling would cost about as much as XLA could save.
      decisive_ratio: Stop before `rounds` (after two at least) once every
        round of one way took this many times as long as every round of the other.
      timer: `timer(jit, run) -> seconds`: runs `run()` and returns how long
        it took; inject one to make the choice deterministic in tests. None
        (the default): `default_timer(strategy)`.
    """

    rounds: int = 3
    steps: int = 5
    min_seconds: float = 0.05
    max_steps: int = 50
    min_run_seconds: float = 30.0
    decisive_ratio: float = 1.5
    timer: Optional[Callable[[bool, Callable[[], Any]], float]] = None


def default_timer(strategy: tf.distribute.Strategy) -> Callable[[bool, Callable[[], Any]], float]:
    """`cpu_timer` when the strategy computes on CPUs only, else `wall_timer`.

    On CPUs, this process's CPU seconds per step are what both ways cost, and
    other processes on the machine disturb them far less than the wall clock
    (on a loaded 2-core machine, wall-clock rounds of the same steps varied
    2x). With accelerators, host CPU time says nothing of device time.
    """
    return cpu_timer if _device_types(strategy) == ("CPU",) else wall_timer


def _agreed(strategy: tf.distribute.Strategy, values: Sequence[float]) -> List[float]:
    """`values` averaged over the workers, so every worker makes the same choice."""
    if not is_multi_worker(strategy):
        return list(values)
    local = tf.constant(values, tf.float64)
    mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(lambda: local), axis=None)
    return [float(v) for v in mean.numpy()]


def _decisive(rounds: Dict[bool, List[float]], ratio: float) -> float:
    """1.0 when every round of one way took `ratio` times as long as every round of the other."""
    slowest = {jit: max(times) for jit, times in rounds.items()}
    fastest = {jit: min(times) for jit, times in rounds.items()}
    return float(fastest[True] >= ratio * slowest[False] or fastest[False] >= ratio * slowest[True])


def probe(run: Callable[[bool, int], Any], settings: Measurement,
          strategy: tf.distribute.Strategy) -> Tuple[int, float]:
    """Times `settings.steps` plain steps: `(steps per timed round, plain seconds per step)`.

    The steps per round are raised so that a round lasts `min_seconds` (up to
    `max_steps`). The plain way must already be traced (one call).
    """
    steps = max(1, int(settings.steps))
    timer = settings.timer or default_timer(strategy)
    seconds = timer(False, lambda: run(False, steps))
    per_step = seconds / steps
    if 0 < seconds < settings.min_seconds:
        steps = min(settings.max_steps, math.ceil(steps * settings.min_seconds / seconds))
    steps, per_step = _agreed(strategy, [steps, per_step])  # the same collectives on every worker
    return int(steps), per_step


def too_short(planned_steps: Optional[int], seconds_per_step: float, settings: Measurement) -> bool:
    """True when the planned steps take under `min_run_seconds` (known length only)."""
    return planned_steps is not None and planned_steps * seconds_per_step < settings.min_run_seconds


def measure(run: Callable[[bool, int], Any], settings: Measurement,
            strategy: tf.distribute.Strategy, steps: int) -> Dict[str, Any]:
    """Median seconds per step with and without XLA, in alternating (ABBA) rounds.

    Both ways must already be traced and compiled (one call each), so no
    compile time is counted.

    Args:
      run: `run(jit, steps)` runs `steps` steps one way and blocks until done.
      settings: Rounds, the decisive ratio and the clock.
      strategy: The run's strategy (workers average their figures).
      steps: Steps per timed round (`probe`'s).

    Returns:
      `xla_seconds_per_step`, `plain_seconds_per_step`, `rounds`, `steps_per_round`,
      `clock` (the timer's name) and the per-round figures `xla_rounds`, `plain_rounds`.
    """
    timer = settings.timer or default_timer(strategy)
    rounds: Dict[bool, List[float]] = {False: [], True: []}
    total = max(1, int(settings.rounds))
    for index in range(total):
        for jit in ((False, True) if index % 2 == 0 else (True, False)):
            rounds[jit].append(timer(jit, lambda jit=jit: run(jit, steps)) / steps)
        # After two rounds at least; every worker must stop at the same round (the steps are collective).
        if 1 <= index < total - 1 and _agreed(strategy, [_decisive(rounds, settings.decisive_ratio)])[0] == 1:
            break
    xla, plain = _agreed(strategy, [statistics.median(rounds[True]), statistics.median(rounds[False])])
    return {"xla_seconds_per_step": xla, "plain_seconds_per_step": plain,
            "rounds": len(rounds[True]), "steps_per_round": steps,
            "clock": getattr(timer, "__name__", "timer"),
            "xla_rounds": rounds[True], "plain_rounds": rounds[False]}


class FirstBatchSteps:
    """Steps on the run's first batch, either way: timed ones (`run`) and the real one (`train`).

    On one device (the batch a plain tuple of tensors) the batch is served by
    datasets of the training data's element spec, so the train loops
    themselves run it: each way is traced once, for timing and training
    alike. Otherwise (a distributed batch) a compiled function runs the
    replica step on it `steps` times; the train loop is traced apart.

    Args:
      batch: The first batch, as the training iterator gave it.
      iterator: That iterator (its type decides whether the loops can be shared).
      strategy: The run's strategy.
      make_loop: `make_loop(jit)` builds a train loop (`Trainer._make_train_loop`).
      replica_step: `replica_step(jit)`, the per-replica step of `make_loop(jit)`.
      global_step: The step counter the loop adds to.
      infinite: The loop's `infinite` argument for the training data.
    """

    def __init__(self, *, batch, iterator, strategy: tf.distribute.Strategy,
                 make_loop: Callable[[bool], Any], replica_step: Callable[[bool], Callable],
                 global_step: tf.Variable, infinite: bool):
        self._batch, self._strategy, self._make_loop = batch, strategy, make_loop
        self._replica_step, self._global_step, self._infinite = replica_step, global_step, infinite
        self._loops: Dict[bool, Any] = {}
        self._repeated: Dict[bool, Any] = {}
        self._single = self._repeating = None
        if not any(isinstance(part, tf.distribute.DistributedValues) for part in tf.nest.flatten(batch)):
            size = int(tf.shape(tf.nest.flatten(batch)[0])[0])
            # unbatch + batch: the same rows, with the training data's (unknown) batch dimension.
            single = tf.data.Dataset.from_tensors(batch).unbatch().batch(size)
            if tf.type_spec_from_value(iter(single)) == tf.type_spec_from_value(iterator):
                self._single, self._repeating = single, single.cache().repeat()

    @property
    def shares_loops(self) -> bool:
        """Whether timing and training run through the same train loops (traced once)."""
        return self._single is not None

    def loop(self, jit: bool):
        """The train loop of one way (built once)."""
        if jit not in self._loops:
            self._loops[jit] = self._make_loop(jit)
        return self._loops[jit]

    def run(self, jit: bool, steps: int) -> int:
        """Runs `steps` steps one way on the batch; waits for them; returns how many ran."""
        count = tf.constant(steps, tf.int64)
        if self.shares_loops:
            return int(self.loop(jit)(iter(self._repeating), count, infinite=self._infinite))
        return int(self._repeated_steps(jit)(self._batch, count))

    def train(self, jit: bool) -> int:
        """The batch's real training step, one way; returns 1."""
        if self.shares_loops:
            return int(self.loop(jit)(iter(self._single), tf.constant(1, tf.int64),
                                      infinite=self._infinite))
        return int(self._repeated_steps(jit)(self._batch, tf.constant(1, tf.int64)))

    def _repeated_steps(self, jit: bool):
        if jit not in self._repeated:
            strategy, step, global_step = self._strategy, self._replica_step(jit), self._global_step

            def repeated_steps(batch, steps):
                for _ in tf.range(steps):
                    strategy.run(step, args=(batch,))
                    global_step.assign_add(1)
                return steps

            self._repeated[jit] = tf.function(repeated_steps)
        return self._repeated[jit]


# ------------------------------------------------------------------ the choice


@dataclasses.dataclass(frozen=True)
class JitChoice:
    """Whether the step is compiled with XLA, and why.

    Attributes:
      jit_compile: The step is compiled with XLA.
      how: `given` (jit_compile True or False), `measured`, `short_run` (the
        planned steps take under `Measurement.min_run_seconds` on the plain
        graph: not compiled), `remembered` (read from the run directory),
        `fallback` (XLA could not compile the step), or `tpu`.
      scope: `xla_scope` of the strategy.
      measured: The figures of `measure` (None unless measured).
      facts: `run_facts` of the run that made the choice.
      reason: One line for the log.
    """

    jit_compile: bool
    how: str
    scope: str
    measured: Optional[Dict[str, Any]] = None
    facts: Optional[Dict[str, Any]] = None
    reason: str = ""

    @classmethod
    def from_measurement(cls, measured: Dict[str, Any], facts: Dict[str, Any]) -> "JitChoice":
        xla, plain = measured["xla_seconds_per_step"], measured["plain_seconds_per_step"]
        faster = xla < plain
        ratio = plain / xla if faster else xla / plain
        clock = {"cpu_timer": ", CPU time", "wall_timer": ", wall time"}.get(measured.get("clock"), "")
        reason = (f"XLA {xla * 1e3:.3g} ms/step, plain graph {plain * 1e3:.3g} ms/step (medians of "
                  f"{measured['rounds']} rounds of {measured['steps_per_round']} steps on the first "
                  f"batch{clock}): {'XLA' if faster else 'the plain graph'} is {ratio:.2f}x faster")
        return cls(jit_compile=faster, how="measured", scope=facts["xla_scope"], measured=measured,
                   facts=facts, reason=reason)

    @classmethod
    def short_run(cls, planned_steps: int, plain_seconds_per_step: float, settings: Measurement,
                  facts: Dict[str, Any]) -> "JitChoice":
        """Plain without compiling: `planned_steps` plain steps take under `min_run_seconds`."""
        seconds = planned_steps * plain_seconds_per_step
        return cls(jit_compile=False, how="short_run", scope=facts["xla_scope"],
                   measured={"plain_seconds_per_step": plain_seconds_per_step,
                             "planned_steps": planned_steps}, facts=facts,
                   reason=f"the {planned_steps} planned steps take about {seconds:.3g} s on the plain "
                          f"graph ({plain_seconds_per_step * 1e3:.3g} ms/step on the first batch), "
                          f"under {settings.min_run_seconds:g} s: too short for XLA's compile to pay")

    def to_dict(self) -> Dict[str, Any]:
        return {"version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, payload: Dict[str, Any]) -> "JitChoice":
        return cls(jit_compile=bool(payload["jit_compile"]), how=str(payload["how"]),
                   scope=str(payload["scope"]), measured=payload.get("measured"),
                   facts=payload.get("facts"), reason=str(payload.get("reason", "")))

    def describe(self) -> str:
        """One log line: the choice, how it was made and the figures."""
        mode = "XLA" if self.jit_compile else "the plain graph"
        return f"Training step: {mode} (jit_compile {self.how}, scope {self.scope}). {self.reason}"


def choice_path(model_dir: str) -> str:
    """`<model_dir>/checkpoints/jit_compile.json`."""
    return os.path.join(model_dir, "checkpoints", FILENAME)


def save_choice(model_dir: str, choice: JitChoice) -> str:
    """Writes the choice (atomically) where `load_choice` reads it; returns the path."""
    return write_json_atomically(choice_path(model_dir), choice.to_dict())


def load_choice(model_dir: Optional[str], facts: Dict[str, Any]) -> Optional[JitChoice]:
    """The choice a previous run of `model_dir` measured, if it holds for a run of these `facts`.

    Returns None (measure again) when there is none, when the file cannot be
    read (with a warning), or when it was measured under another strategy,
    replica count or device type (logged).
    """
    if not model_dir:
        return None
    path = choice_path(model_dir)
    if not tf.io.gfile.exists(path):
        return None
    try:
        choice = JitChoice.from_dict(read_json(path))
    except (OSError, ValueError, KeyError, TypeError) as error:
        logging.warning("Cannot read %s (%s); measuring the XLA choice again.", path, error)
        return None
    if choice.facts != facts:
        logging.info("%s was measured under %s; this run is %s: measuring again.", path, choice.facts,
                     facts)
        return None
    return dataclasses.replace(choice, how="remembered",
                               reason=f"As measured at the run's start ({path}): {choice.reason}")
