"""GPU training throughput: `Trainer.fit` against Keras `model.fit`, float32 / mixed_float16 x XLA off / on.

In one process and in alternating rounds (forward order, then reversed, ...)
it times, for each workload and each setting in the grid

  policy in {float32, mixed_float16}  x  jit_compile in {False, True},

two sides with the same settings:

  trainer    `trainer.Trainer(jit_compile=...)` with a static `ClassWeights`
             rule, training metrics on, `steps_per_loop`; built under the
             Keras global dtype policy, which is restored afterwards. For a
             float16 model the Trainer wraps the Adam optimizer in Keras's
             `LossScaleOptimizer` itself.
  keras_fit  Keras `model.fit(class_weight=...)` after `model.compile(
             jit_compile=..., steps_per_execution=steps_per_loop)`, built
             under the same policy. Under mixed_float16 its Adam is wrapped
             in a `LossScaleOptimizer` (what Keras 3's `compile(
             auto_scale_loss=True)` does by itself; here a subclass that also
             counts the steps it skipped on an overflow, one `assign_add` per
             skipped step).

Workloads: `cnn`, the project's small CNN (`trainer.models.build_cnn`:
conv32-pool-conv64-pool-dense128) on 28x28x1, batch 512; `resnet`, a
ResNet-style CNN built here (3x3 stem, three stages of `--resnet_blocks`
residual blocks of width `--resnet_width` x 1, 2, 4 with batch normalisation,
global average pooling, a float32 logits layer) on 32x32x3, batch 256. Data are
synthetic long-tailed arrays (`tf.data` from tensors, cached, repeated,
prefetched), the same for every side.

Each side is warmed up (traced, compiled) before timing; the script checks that
the XLA setting each side asked for is the one it runs (`Trainer.jit_choice`,
Keras's `model.jit_compile`). Every measurement runs the same fixed number of
steps and ends by reading a variable back to the host (so the GPU's queued work
is inside the timed span); each side's counters must have advanced by exactly
that many steps, or the script stops: the Trainer's `global_step`, and for both
sides `optimizer.iterations` plus the steps the loss scale skipped (a float16
overflow skips the update: it does not count in `iterations`). All sides start
from the same seeded weights and see the same batches; the JSON gives how far
each moved (`weight_displacement`).

Report: examples/s per (workload, setting, side), the Trainer/Keras ratio, and
the speed-up of each setting over float32 without XLA, per side, all medians
over the rounds (ratios: medians of the per-round ratios), as a Markdown table;
the same per CPU-second of this process; the raw rounds in the JSON.

It prints the GPU it found (`tf.config.list_physical_devices('GPU')`,
`tf.test.gpu_device_name()`, the device details). Without a GPU it stops with
exit status 2 (the figures would describe the CPU), unless `--smoke` is given.

Usage (the timed part lasts at least workloads x 8 sides x rounds x --seconds, 2 minutes with
the defaults, plus tracing and XLA compilation of 16 models; not yet measured on a GPU):
  TF_CPP_MIN_LOG_LEVEL=2 python scripts/bench_gpu.py --rounds 5 --json_out gpu.json
  python scripts/bench_gpu.py --smoke   # tiny shapes, CPU allowed; checks it runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from losses.rules import ClassWeights  # noqa: E402
from trainer import Trainer  # noqa: E402
from trainer.cli.build import dtype_policy  # noqa: E402  (the CLI's own: policy in, restored after)
from trainer.determinism import seed_everything  # noqa: E402
from trainer.models import build_cnn  # noqa: E402

NUM_CLASSES = 10
IMBALANCE_RATIO = 100.0
LEARNING_RATE = 1e-3
POLICIES = ("float32", "mixed_float16")
JIT_MODES = (False, True)
SIDES = ("trainer", "keras_fit")
BASELINE = "float32/plain"
NO_GPU_STATUS = 2


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="cnn,resnet", help="Comma-separated: cnn, resnet.")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help="Comma-separated Keras dtype policies: float32, mixed_float16.")
    parser.add_argument("--jit_modes", default="false,true",
                        help="Comma-separated jit_compile values: false, true.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds (medians over these).")
    parser.add_argument("--steps_per_loop", type=int, default=100,
                        help="Trainer steps per compiled call; also Keras's steps_per_execution.")
    parser.add_argument("--steps", type=int, default=0,
                        help="Steps per measurement; 0 picks, from a sizing run, a multiple of "
                             "steps_per_loop that lasts about --seconds on the fastest side.")
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="Target length of one measurement when --steps is 0.")
    parser.add_argument("--cnn_batch_size", type=int, default=512)
    parser.add_argument("--resnet_batch_size", type=int, default=256)
    parser.add_argument("--resnet_width", type=int, default=32, help="Filters of the first stage.")
    parser.add_argument("--resnet_blocks", type=int, default=2, help="Residual blocks per stage (3 stages).")
    parser.add_argument("--dataset_batches", type=int, default=16,
                        help="Distinct batches in the cached synthetic dataset.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default=None,
                        help="Also write all numbers to this JSON file (rewritten after each workload).")
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny shapes, 1 round, 2 steps; runs on a CPU too. Only checks the script runs.")
    args = parser.parse_args(argv)
    args.cnn_shape, args.resnet_shape = (28, 28, 1), (32, 32, 3)
    if args.smoke:
        args.rounds, args.steps_per_loop, args.steps, args.dataset_batches = 1, 2, 2, 2
        args.cnn_batch_size, args.resnet_batch_size = 8, 8
        args.resnet_width, args.resnet_blocks, args.resnet_shape = 4, 1, (8, 8, 3)
    for name in ("rounds", "steps_per_loop", "cnn_batch_size", "resnet_batch_size", "resnet_width",
                 "resnet_blocks", "dataset_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.steps < 0:
        parser.error(f"--steps must be non-negative, got {args.steps}.")
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}.")
    args.workloads = _choices(parser, "workloads", args.workloads, ("cnn", "resnet"))
    args.policies = _choices(parser, "policies", args.policies, POLICIES)
    jit_names = _choices(parser, "jit_modes", args.jit_modes.lower(), ("false", "true"))
    args.jit_modes = [name == "true" for name in jit_names]
    return args


def _choices(parser, flag: str, value: str, allowed: Sequence[str]) -> List[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if not chosen or any(v not in allowed for v in chosen) or len(set(chosen)) != len(chosen):
        parser.error(f"--{flag}={value!r}: a comma-separated subset of {', '.join(allowed)}.")
    return [v for v in allowed if v in chosen]  # the grid's order


def setting_name(policy: str, jit_compile: bool) -> str:
    return f"{policy}/{'xla' if jit_compile else 'plain'}"


# ------------------------------------------------------------------- device


def device_facts() -> Dict:
    """The GPUs TensorFlow sees (with memory growth on, so the sides share the memory)."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError, ValueError):  # already initialised
            tf.config.experimental.set_memory_growth(gpu, True)
    details = []
    for gpu in gpus:
        try:
            facts = tf.config.experimental.get_device_details(gpu)
        except (RuntimeError, ValueError):
            facts = {}
        details.append({key: (list(v) if isinstance(v, tuple) else v) for key, v in facts.items()})
    return {"gpus": [gpu.name for gpu in gpus], "gpu_device_name": tf.test.gpu_device_name(),
            "gpu_details": details, "tensorflow": tf.__version__, "keras": keras.__version__,
            "cpu_count": os.cpu_count()}


def describe(device: Dict) -> str:
    if not device["gpus"]:
        return "GPU: none (tf.config.list_physical_devices('GPU') is empty)"
    names = ", ".join(f"{d.get('device_name', '?')} (compute capability "
                      f"{'.'.join(map(str, d.get('compute_capability', ['?'])))})"
                      for d in device["gpu_details"])
    return (f"GPU: {', '.join(device['gpus'])}; tf.test.gpu_device_name() = "
            f"{device['gpu_device_name']!r}; {names}")


# ------------------------------------------------------------------ workloads


def build_resnet(input_shape: Sequence[int], num_classes: int, *, width: int = 32,
                 blocks_per_stage: int = 2) -> keras.Model:
    """A ResNet-style CNN: 3x3 stem, 3 stages of residual blocks (width x 1, 2, 4), GAP, float32 logits."""
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for stage in range(3):
        filters = width * 2 ** stage
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
            y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = keras.layers.BatchNormalization()(y)
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
                shortcut = keras.layers.BatchNormalization()(shortcut)
            x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="resnet")


def make_workload(name: str, args: argparse.Namespace):
    """(input shape, batch size, model factory, description)."""
    if name == "cnn":
        shape = args.cnn_shape
        return (shape, args.cnn_batch_size, lambda: build_cnn(shape, NUM_CLASSES),
                f"CNN conv32-conv64-dense128, {'x'.join(map(str, shape))}")
    shape, width, blocks = args.resnet_shape, args.resnet_width, args.resnet_blocks
    return (shape, args.resnet_batch_size,
            lambda: build_resnet(shape, NUM_CLASSES, width=width, blocks_per_stage=blocks),
            f"ResNet {3 * blocks} blocks, width {width}-{2 * width}-{4 * width}, "
            f"{'x'.join(map(str, shape))}")


def make_dataset(shape, batch_size: int, num_batches: int, seed: int):
    """Cached repeated batches of normal features and long-tailed labels; inverse-frequency weights."""
    rng = np.random.default_rng(seed)
    n = batch_size * num_batches
    priors = IMBALANCE_RATIO ** (-np.arange(NUM_CLASSES) / (NUM_CLASSES - 1))
    labels = rng.choice(NUM_CLASSES, size=n, p=priors / priors.sum()).astype(np.int32)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)  # every class present
    features = rng.normal(size=(n,) + tuple(shape)).astype(np.float32)
    dataset = (tf.data.Dataset.from_tensor_slices((features, labels))
               .batch(batch_size, drop_remainder=True).cache().repeat().prefetch(tf.data.AUTOTUNE))
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    return dataset, (counts.sum() / (NUM_CLASSES * counts)).astype(np.float32)


def _weights(model: keras.Model) -> List[np.ndarray]:
    return [np.array(v.numpy(), dtype=np.float64) for v in model.trainable_variables]


# ---------------------------------------------------------------------- sides


class CountingLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's `LossScaleOptimizer`, plus `overflow_steps`: the updates it skipped on an overflow."""

    def build(self, var_list):
        self.overflow_steps = self.add_variable(shape=(), dtype="int64", initializer="zeros",
                                                aggregation="none", name="overflow_steps")
        super().build(var_list)

    def _stateful_handle_non_finite_grads(self):
        self.overflow_steps.assign_add(1)
        super()._stateful_handle_non_finite_grads()


class Side:
    """One side at one setting: `name`, `policy`, `jit_compile`, `model`, `optimizer`, `run(steps)`.

    `step_counts()` reads counters each of which must advance by exactly the
    steps a `run` was asked for; `loss_scale_skips()` the updates skipped on a
    float16 overflow so far.
    """

    side: str
    model: keras.Model
    optimizer: keras.optimizers.Optimizer

    def __init__(self, policy: str, jit_compile: bool):
        self.policy, self.jit_compile = policy, jit_compile
        self.setting = setting_name(policy, jit_compile)
        self.name = f"{self.side} {self.setting}"

    def run(self, steps: int) -> None:
        raise NotImplementedError

    def jit_applied(self) -> bool:
        """Whether the step runs with XLA (after the first run)."""
        raise NotImplementedError

    def loss_scale_skips(self) -> int:
        raise NotImplementedError

    def iterations(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def step_counts(self) -> Dict[str, int]:
        return {"optimizer.iterations + loss_scale_skips": self.iterations() + self.loss_scale_skips()}

    def sync(self) -> None:
        """Reads variables the last step wrote back to the host: waits for the device's queued work."""
        self.optimizer.iterations.numpy()
        self.model.trainable_variables[-1].numpy()

    def loss_scale(self) -> Optional[float]:
        scaler = self.optimizer if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else None
        return None if scaler is None else float(np.asarray(scaler.dynamic_scale))

    def facts(self) -> Dict:
        """What this side ran: the optimizer's class, XLA, compute dtype, loss scale, skips, movement."""
        return {"optimizer": type(self.optimizer).__name__,
                "inner_optimizer": type(getattr(self.optimizer, "inner_optimizer", self.optimizer)).__name__,
                "policy": self.policy, "jit_compile": self.jit_compile, "jit_applied": self.jit_applied(),
                "compute_dtype": self.model.layers[-2].compute_dtype,
                "logits_dtype": self.model.layers[-1].compute_dtype,
                "loss_scale": self.loss_scale(), "loss_scale_skips": self.loss_scale_skips(),
                "optimizer.iterations": self.iterations(), "step_counts": self.step_counts(),
                "weight_displacement": float(np.sqrt(sum(np.sum((now - start) ** 2) for now, start in
                                                         zip(_weights(self.model), self.initial_weights))))}


class TrainerSide(Side):
    """`Trainer.fit` with `ClassWeights`, metrics on; one more epoch of `steps` per call."""

    side = "trainer"

    def __init__(self, factory: Callable[[], keras.Model], dataset, weights, args, policy: str,
                 jit_compile: bool, optimizer: Optional[Callable[[], keras.optimizers.Optimizer]] = None):
        super().__init__(policy, jit_compile)
        self.dataset = dataset
        with dtype_policy(policy):
            seed_everything(args.seed)
            self.trainer = Trainer(model=factory(),
                                   optimizer=(optimizer or (lambda: keras.optimizers.Adam(LEARNING_RATE)))(),
                                   reweighting=ClassWeights(weights), num_classes=NUM_CLASSES,
                                   steps_per_loop=args.steps_per_loop, jit_compile=jit_compile)
        self.model, self.optimizer = self.trainer.model, self.trainer.optimizer
        self.initial_weights = _weights(self.model)

    def run(self, steps: int) -> None:
        self.trainer.fit(self.dataset, epochs=1, steps_per_epoch=steps)

    def jit_applied(self) -> bool:
        return bool(self.trainer.jit_choice and self.trainer.jit_choice.jit_compile)

    def loss_scale_skips(self) -> int:
        return int(self.trainer.nonfinite_guard.loss_scale_skips.numpy())

    def step_counts(self) -> Dict[str, int]:
        return {"trainer.global_step": int(self.trainer.global_step.numpy()), **super().step_counts()}


class KerasFitSide(Side):
    """Keras `model.fit(class_weight=...)`, `steps_per_execution` = the Trainer's `steps_per_loop`."""

    side = "keras_fit"

    def __init__(self, factory: Callable[[], keras.Model], dataset, weights, args, policy: str,
                 jit_compile: bool, initial_scale: float = 2.0 ** 15):
        super().__init__(policy, jit_compile)
        self.dataset = dataset
        self.class_weight = {k: float(w) for k, w in enumerate(weights)}
        with dtype_policy(policy):
            seed_everything(args.seed)
            self.model = factory()
            optimizer = keras.optimizers.Adam(LEARNING_RATE)
            if policy == "mixed_float16":
                optimizer = CountingLossScaleOptimizer(optimizer, initial_scale=initial_scale)
            self.model.compile(optimizer=optimizer,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                               steps_per_execution=args.steps_per_loop, jit_compile=jit_compile)
        self.optimizer = self.model.optimizer
        self.initial_weights = _weights(self.model)

    def run(self, steps: int) -> None:
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps,
                       class_weight=self.class_weight, shuffle=False, verbose=0)

    def jit_applied(self) -> bool:
        return bool(self.model.jit_compile)

    def loss_scale_skips(self) -> int:
        counter = getattr(self.optimizer, "overflow_steps", None)
        return 0 if counter is None else int(counter.numpy())


# ---------------------------------------------------------------------- timing


class IncompleteWork(RuntimeError):
    """A side ran other than the steps asked for, or not the setting it claims: its timing would mislead."""


def timed(side: Side, steps: int) -> Dict[str, float]:
    """Runs `steps` steps of `side` (under its dtype policy) and checks exactly that many ran.

    Returns:
      Its wall seconds (up to the device's last write read back), the CPU
      seconds this process used meanwhile, the steps, and the loss-scale skips
      among them.

    Raises:
      IncompleteWork: If any of the side's step counters moved by other than `steps`.
    """
    with dtype_policy(side.policy):
        before, skips = side.step_counts(), side.loss_scale_skips()
        cpu, start = time.process_time(), time.perf_counter()
        side.run(steps)
        side.sync()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = side.step_counts()
    ran = {counter: after[counter] - before[counter] for counter in after}
    wrong = {counter: count for counter, count in ran.items() if count != steps}
    if wrong:
        raise IncompleteWork(f"{side.name} was asked for {steps} steps, but its counters moved by "
                             + ", ".join(f"{counter} {count}" for counter, count in wrong.items()))
    return {"seconds": seconds, "cpu_seconds": cpu, "steps": steps,
            "loss_scale_skips": side.loss_scale_skips() - skips}


def check_setting(side: Side) -> None:
    """Stops when the side does not run the XLA setting it asked for (after its first run)."""
    if side.jit_applied() != side.jit_compile:
        raise IncompleteWork(f"{side.name} asked for jit_compile={side.jit_compile} but runs with "
                             f"jit_compile={side.jit_applied()}")


def _ratios(rates: Dict[str, float], settings: Sequence[str]) -> Dict[str, float]:
    """Trainer/Keras per setting, and each side's speed-up of each setting over float32/plain."""
    out = dict(rates)
    for setting in settings:
        out[f"trainer/keras_fit {setting}"] = rates[f"trainer {setting}"] / rates[f"keras_fit {setting}"]
    if BASELINE in settings:
        for side in SIDES:
            for setting in settings:
                out[f"{side} {setting} over {BASELINE}"] = (rates[f"{side} {setting}"]
                                                            / rates[f"{side} {BASELINE}"])
    return out


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_workload(name: str, args: argparse.Namespace) -> Dict:
    shape, batch_size, factory, description = make_workload(name, args)
    dataset, weights = make_dataset(shape, batch_size, args.dataset_batches, args.seed)
    settings = [setting_name(p, j) for p in args.policies for j in args.jit_modes]
    sides: List[Side] = []
    for policy in args.policies:
        for jit_compile in args.jit_modes:
            sides.append(TrainerSide(factory, dataset, weights, args, policy, jit_compile))
            sides.append(KerasFitSide(factory, dataset, weights, args, policy, jit_compile))
    policy_after = keras.mixed_precision.global_policy().name

    warmup_steps = args.steps or args.steps_per_loop
    warmup_seconds = {}
    for side in sides:
        start = time.perf_counter()
        timed(side, warmup_steps)  # traces, compiles
        check_setting(side)
        _log(f"[{name}] {side.name}: warmed up in {time.perf_counter() - start:.1f} s "
             f"({type(side.optimizer).__name__})")
        if not args.steps:
            warmup_seconds[side.name] = timed(side, warmup_steps)["seconds"]  # sizes the measurements
    steps = args.steps
    if not steps:
        per_step = min(warmup_seconds.values()) / warmup_steps
        steps = max(1, round(args.seconds / per_step / args.steps_per_loop)) * args.steps_per_loop
    _log(f"[{name}] batch {batch_size}, {steps} steps per measurement, {args.rounds} rounds")

    rounds: List[Dict] = []
    for index in range(args.rounds):
        order = sides if index % 2 == 0 else sides[::-1]
        timings = {side.name: timed(side, steps) for side in order}
        timings = {side.name: timings[side.name] for side in sides}  # the grid's order
        record = {unit: _ratios({n: t["steps"] * batch_size / t[key] for n, t in timings.items()}, settings)
                  for unit, key in (("examples_per_second", "seconds"),
                                    ("examples_per_cpu_second", "cpu_seconds"))}
        record["timings"] = timings
        rounds.append(record)
        _log(f"[{name}] round {index + 1}: " + ", ".join(
            f"{s.name} {record['examples_per_second'][s.name]:,.0f}" for s in sides) + " ex/s")
    medians = {unit: {key: statistics.median(r[unit][key] for r in rounds) for key in rounds[0][unit]}
               for unit in ("examples_per_second", "examples_per_cpu_second")}
    return {"workload": name, "description": description, "batch_size": batch_size,
            "input_shape": list(shape), "steps": steps, "warmup_steps": warmup_steps,
            "warmup_runs": 1 if args.steps else 2, "steps_per_loop": args.steps_per_loop,
            "settings": settings, "global_policy_after_building": policy_after,
            "rounds": rounds, "median": medians, "sides": {s.name: s.facts() for s in sides}}


# ---------------------------------------------------------------------- report


def _table(results: List[Dict], unit: str) -> List[str]:
    lines = ["| workload | batch | policy | XLA | Trainer | Keras fit | Trainer/Keras | "
             f"Trainer vs {BASELINE} | Keras vs {BASELINE} |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for result in results:
        m = result["median"][unit]
        for setting in result["settings"]:
            policy, way = setting.split("/")
            speedups = [f"{m[f'{side} {setting} over {BASELINE}']:.2f}x"
                        if f"{side} {setting} over {BASELINE}" in m else "-" for side in SIDES]
            lines.append(f"| {result['workload']} | {result['batch_size']} | {policy} | "
                         f"{'on' if way == 'xla' else 'off'} | {m[f'trainer {setting}']:,.0f} | "
                         f"{m[f'keras_fit {setting}']:,.0f} | {m[f'trainer/keras_fit {setting}']:.2f}x | "
                         f"{speedups[0]} | {speedups[1]} |")
    return lines


def format_report(results: List[Dict], device: Dict, args: argparse.Namespace) -> str:
    lines = [describe(device), "",
             f"Examples/s, median of {args.rounds} round(s); ratios are medians of the per-round ratios; "
             f"Keras fit with steps_per_execution {args.steps_per_loop} (the Trainer's steps_per_loop).", ""]
    lines += _table(results, "examples_per_second")
    lines += ["", "Workloads: " + "; ".join(f"{r['workload']} = {r['description']}, {r['steps']} steps "
                                             "per measurement" for r in results) + ".", "",
              "What each side ran (optimizer; loss-scale skips over the whole run; final loss scale):", "",
              "| workload | side | optimizer | XLA applied | compute dtype | skips | loss scale |",
              "|---|---|---|---|---|---:|---:|"]
    for result in results:
        for name, facts in result["sides"].items():
            scale = "-" if facts["loss_scale"] is None else f"{facts['loss_scale']:g}"
            lines.append(f"| {result['workload']} | {name} | {facts['optimizer']} | {facts['jit_applied']} | "
                         f"{facts['compute_dtype']} | {facts['loss_scale_skips']} | {scale} |")
    lines += ["", "Examples per CPU-second of this process (all its threads), medians:", ""]
    lines += _table(results, "examples_per_cpu_second")
    return "\n".join(lines)


def _write_json(path: str, device: Dict, args: argparse.Namespace, results: List[Dict]) -> None:
    with open(path, "w") as handle:
        flags = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
        json.dump({**device, "args": flags, "results": results}, handle, indent=2)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = device_facts()
    print(describe(device), file=sys.stderr, flush=True)
    if not device["gpus"] and not args.smoke:
        print("No GPU found: the figures would describe this CPU and mislead. Run it on a GPU "
              "machine, or pass --smoke to check that the script runs.", file=sys.stderr)
        return NO_GPU_STATUS
    results: List[Dict] = []
    for name in args.workloads:
        results.append(bench_workload(name, args))
        if args.json_out:
            _write_json(args.json_out, device, args, results)
    print(format_report(results, device, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
