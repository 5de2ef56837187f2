"""Training throughput: `Trainer.fit` against Keras `model.fit` and a bare loop.

In one process and in alternating rounds (a, b, c, a, b, c, ...) it times:

  (a) `Trainer.fit` with a static `ClassWeights` rule, training metrics on
      (streaming confusion matrix and mean loss);
  (b) Keras `model.fit` with `class_weight` (jit_compile=False, verbose=0),
      with `steps_per_execution` 1 and the Trainer's `steps_per_loop`; the
      faster of the two counts;
  (c) a bare hand-written multi-step `tf.GradientTape` loop (`tf.range` in one
      `tf.function`, `next(iterator)`) with the same weighting: the weighted
      per-example cross-entropy summed and divided by the batch size.

Workloads: an MLP 64 -> 512 -> 512 -> 10 on batch 256 and the small CNN
(conv32-pool-conv64-pool-dense128) on 28x28x1 inputs, batch 128. Data are
synthetic long-tailed arrays (`tf.data` from tensors, cached, repeated,
prefetched), the same for every method. Each method is warmed up (traced)
before timing; every measurement runs the same fixed number of steps, and
each method's step counters (the optimizer's `iterations`, and the Trainer's
`global_step`) must have advanced by exactly that many, or the script stops:
a side that did less work would look faster. All methods start from the same
seeded weights and see the same batches, so after the run they have moved
equally far from them (`weight_displacement` in the JSON). It prints
examples/s per method and the ratios Trainer/Keras-fit and Trainer/bare as
medians over the rounds, as a Markdown table, then the raw per-round numbers.

On a shared machine other processes take cores away at random; the report
says how many cores they kept busy in each round, and repeats the table in
examples per CPU-second of this process, which they disturb much less (a
cross-check; the targets are on examples/s). `--threads 1` makes that
CPU-time figure exact (no thread-pool spinning).

Usage:
  TF_CPP_MIN_LOG_LEVEL=2 python scripts/bench_throughput.py --rounds 5 \
      --json_out bench.json
  python scripts/bench_throughput.py --smoke   # seconds; checks it runs

The figures measured with it are in the README ("Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from losses.rules import ClassWeights  # noqa: E402
from trainer import Trainer  # noqa: E402
from trainer.determinism import seed_everything  # noqa: E402
from trainer.models import build_cnn, build_mlp  # noqa: E402

NUM_CLASSES = 10
IMBALANCE_RATIO = 100.0  # most / least frequent class in the synthetic labels
LEARNING_RATE = 1e-3
TARGETS = {  # workload -> (Trainer/Keras-fit, Trainer/bare) minimum ratios
    "mlp": (1.25, 0.95),
    "cnn": (1.0, 0.95),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="mlp,cnn",
                        help="Comma-separated workloads to run: mlp, cnn.")
    parser.add_argument("--rounds", type=int, default=5,
                        help="Timed rounds per workload (medians are over these); at least 1.")
    parser.add_argument("--steps_per_loop", type=int, default=100,
                        help="Trainer steps per compiled call; also the bare loop's chunk and "
                             "the second Keras steps_per_execution.")
    parser.add_argument("--steps", type=int, default=0,
                        help="Steps per measurement; 0 picks, from the warm-up, a multiple of "
                             "steps_per_loop lasting about --seconds.")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="Target length of one measurement when --steps is 0.")
    parser.add_argument("--mlp_batch_size", type=int, default=256)
    parser.add_argument("--cnn_batch_size", type=int, default=128)
    parser.add_argument("--dataset_batches", type=int, default=32,
                        help="Distinct batches in the cached synthetic dataset.")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads; 0 keeps its default (all cores).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default=None, help="Also write all numbers to this JSON file.")
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny setting (a couple of steps, 1 round) that only checks the script runs.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds = 1
        args.steps_per_loop = 2
        args.steps = 4
        args.dataset_batches = 2
        args.mlp_batch_size = 32
        args.cnn_batch_size = 16
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}.")
    if args.steps_per_loop < 1:
        parser.error(f"--steps_per_loop must be at least 1, got {args.steps_per_loop}.")
    if args.threads < 0:
        parser.error(f"--threads must be non-negative, got {args.threads}.")
    if args.steps < 0:
        parser.error(f"--steps must be non-negative, got {args.steps}.")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in TARGETS]
    if unknown or not workloads:
        parser.error(f"--workloads={args.workloads!r}: choose from {', '.join(TARGETS)}.")
    args.workloads = workloads
    return args


# ------------------------------------------------------------------- data


def long_tailed_labels(num_examples: int, rng: np.random.Generator) -> np.ndarray:
    """Labels whose class frequencies decay geometrically by IMBALANCE_RATIO."""
    priors = IMBALANCE_RATIO ** (-np.arange(NUM_CLASSES) / (NUM_CLASSES - 1))
    priors /= priors.sum()
    labels = rng.choice(NUM_CLASSES, size=num_examples, p=priors).astype(np.int32)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)  # every class present
    return labels


def make_workload(name: str, args: argparse.Namespace):
    """Returns (input_shape, batch_size, model_factory)."""
    if name == "mlp":
        shape = (64,)
        return shape, args.mlp_batch_size, lambda: build_mlp(shape, NUM_CLASSES, hidden_units=(512, 512))
    shape = (28, 28, 1)
    return shape, args.cnn_batch_size, lambda: build_cnn(shape, NUM_CLASSES)


def make_dataset(shape, batch_size: int, num_batches: int, seed: int):
    rng = np.random.default_rng(seed)
    n = batch_size * num_batches
    features = rng.normal(size=(n,) + tuple(shape)).astype(np.float32)
    labels = long_tailed_labels(n, rng)
    dataset = (tf.data.Dataset.from_tensor_slices((features, labels))
               .batch(batch_size, drop_remainder=True).cache().repeat()
               .prefetch(tf.data.AUTOTUNE))
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    weights = counts.sum() / (NUM_CLASSES * counts)  # inverse frequency, mean ~1
    return dataset, weights.astype(np.float32)


def seeded(factory: Callable[[], keras.Model], seed: int) -> keras.Model:
    seed_everything(seed)
    return factory()


def _weights(model: keras.Model) -> List[np.ndarray]:
    return [np.array(v.numpy(), dtype=np.float64) for v in model.trainable_variables]


# ---------------------------------------------------------------- methods


class Method:
    """What every method has: `name`, `model`, `optimizer`, `run(steps)`.

    `step_counts()` reads the counters that show how many steps really ran;
    `initial_weights` are the weights before any training.
    """

    name: str
    model: keras.Model
    optimizer: keras.optimizers.Optimizer

    def run(self, steps: int) -> None:
        raise NotImplementedError

    def step_counts(self) -> Dict[str, int]:
        return {"optimizer.iterations": int(self.optimizer.iterations.numpy())}

    def weight_displacement(self) -> float:
        """Euclidean distance of the trainable weights from where they started."""
        return float(np.sqrt(sum(np.sum((now - start) ** 2) for now, start in
                                 zip(_weights(self.model), self.initial_weights))))


class TrainerMethod(Method):
    """(a) `Trainer.fit` with `ClassWeights`, metrics on; one more epoch per call."""

    name = "trainer"

    def __init__(self, factory, dataset, weights, args):
        self.dataset = dataset
        self.trainer = Trainer(model=seeded(factory, args.seed),
                               optimizer=keras.optimizers.Adam(LEARNING_RATE),
                               reweighting=ClassWeights(weights), num_classes=NUM_CLASSES,
                               steps_per_loop=args.steps_per_loop)
        self.model, self.optimizer = self.trainer.model, self.trainer.optimizer
        self.initial_weights = _weights(self.model)

    def run(self, steps: int) -> None:
        self.trainer.fit(self.dataset, epochs=1, steps_per_epoch=steps)

    def step_counts(self) -> Dict[str, int]:
        return {**super().step_counts(), "trainer.global_step": int(self.trainer.global_step.numpy())}


class KerasFitMethod(Method):
    """(b) Keras `model.fit(class_weight=...)` with a given steps_per_execution."""

    def __init__(self, factory, dataset, weights, args, steps_per_execution: int):
        self.name = f"keras_fit_spe{steps_per_execution}"
        self.dataset = dataset
        self.class_weight = {k: float(w) for k, w in enumerate(weights)}
        self.model = seeded(factory, args.seed)
        self.model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           steps_per_execution=steps_per_execution, jit_compile=False)
        self.optimizer = self.model.optimizer
        self.initial_weights = _weights(self.model)

    def run(self, steps: int) -> None:
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps,
                       class_weight=self.class_weight, shuffle=False, verbose=0)


class BareLoopMethod(Method):
    """(c) A hand-written multi-step GradientTape loop with the same weighting."""

    name = "bare"

    def __init__(self, factory, dataset, weights, args):
        self.dataset = dataset
        self.chunk = args.steps_per_loop
        self.model = seeded(factory, args.seed)
        self.optimizer = keras.optimizers.Adam(LEARNING_RATE)
        self.optimizer.build(self.model.trainable_variables)
        self.initial_weights = _weights(self.model)
        self.weights = tf.constant(weights)
        model, optimizer, class_weights = self.model, self.optimizer, self.weights

        @tf.function
        def train_loop(iterator, num_steps):
            variables = model.trainable_variables
            for _ in tf.range(num_steps):
                x, y = next(iterator)
                with tf.GradientTape() as tape:
                    logits = model(x, training=True)
                    per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
                    weighted = per_example * tf.gather(class_weights, y)
                    loss = tf.reduce_sum(weighted) / tf.cast(tf.shape(y)[0], tf.float32)
                gradients = tape.gradient(loss, variables)
                optimizer.apply_gradients(zip(gradients, variables))

        self.train_loop = train_loop

    def run(self, steps: int) -> None:
        iterator = iter(self.dataset)
        done = 0
        while done < steps:
            chunk = min(self.chunk, steps - done)
            self.train_loop(iterator, tf.constant(chunk, tf.int64))
            done += chunk


def _busy_cpu_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (Linux; else 0)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class IncompleteWork(RuntimeError):
    """A method ran fewer (or more) steps than it was asked to: its timing would mislead."""


def timed(method: Method, steps: int) -> Dict[str, float]:
    """Runs `steps` steps of `method` and checks that exactly that many ran.

    Returns:
      Its wall seconds, the CPU seconds this process used meanwhile (all its
      threads), how many cores other processes kept busy meanwhile, and the
      steps that ran (by the method's counters, read outside the timed span).

    Raises:
      IncompleteWork: If any of the method's step counters moved by other than `steps`.
    """
    before = method.step_counts()
    busy, cpu = _busy_cpu_seconds(), time.process_time()
    start = time.perf_counter()
    method.run(steps)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    others = max(0.0, (_busy_cpu_seconds() - busy) - cpu) / seconds
    after = method.step_counts()
    ran = {counter: after[counter] - before[counter] for counter in after}
    wrong = {counter: count for counter, count in ran.items() if count != steps}
    if wrong:
        raise IncompleteWork(f"{method.name} was asked for {steps} steps, but its counters moved by "
                             + ", ".join(f"{counter} {count}" for counter, count in wrong.items()))
    return {"seconds": seconds, "cpu_seconds": cpu, "other_cores": others, "steps": steps}


# ------------------------------------------------------------------ bench


def _with_ratios(rates: Dict[str, float], spes: Sequence[int]) -> Dict[str, float]:
    rates = dict(rates)
    rates["keras_fit"] = max(rates[f"keras_fit_spe{s}"] for s in spes)
    rates["trainer/keras_fit"] = rates["trainer"] / rates["keras_fit"]
    rates["trainer/bare"] = rates["trainer"] / rates["bare"]
    return rates


def bench_workload(name: str, args: argparse.Namespace) -> Dict:
    shape, batch_size, factory = make_workload(name, args)
    dataset, weights = make_dataset(shape, batch_size, args.dataset_batches, args.seed)
    spes = sorted({1, args.steps_per_loop})
    # Round order: a, b (each steps_per_execution), c.
    methods = ([TrainerMethod(factory, dataset, weights, args)]
               + [KerasFitMethod(factory, dataset, weights, args, s) for s in spes]
               + [BareLoopMethod(factory, dataset, weights, args)])

    warmup_steps = args.steps or args.steps_per_loop
    warmup_seconds = {}
    for method in methods:
        timed(method, warmup_steps)  # traces
        warmup_seconds[method.name] = timed(method, warmup_steps)["seconds"]  # sizes --steps 0
    steps = args.steps
    if not steps:
        per_step = min(warmup_seconds.values()) / warmup_steps
        loops = max(1, int(round(args.seconds / per_step / args.steps_per_loop)))
        steps = loops * args.steps_per_loop
    print(f"[{name}] batch {batch_size}, {steps} steps per measurement, {args.rounds} rounds",
          file=sys.stderr, flush=True)

    rounds: List[Dict] = []
    for index in range(args.rounds):
        wall, cpu, timings = {}, {}, {}
        for method in methods:
            timing = timings[method.name] = timed(method, steps)
            wall[method.name] = timing["steps"] * batch_size / timing["seconds"]
            cpu[method.name] = timing["steps"] * batch_size / timing["cpu_seconds"]
        # Noise: the cores other processes kept busy, worst measurement of the round.
        record = {"examples_per_second": _with_ratios(wall, spes),
                  "examples_per_cpu_second": _with_ratios(cpu, spes),
                  "other_cores": max(t["other_cores"] for t in timings.values()),
                  "timings": timings}
        rounds.append(record)
        print(f"[{name}] round {index + 1}: "
              + ", ".join(f"{k} {v:.4g}" for k, v in record["examples_per_second"].items())
              + f", other processes {record['other_cores']:.2f} cores", file=sys.stderr, flush=True)

    medians = {unit: {key: statistics.median(r[unit][key] for r in rounds) for key in rounds[0][unit]}
               for unit in ("examples_per_second", "examples_per_cpu_second")}
    return {"workload": name, "batch_size": batch_size, "input_shape": list(shape), "steps": steps,
            "warmup_steps": warmup_steps, "steps_per_loop": args.steps_per_loop,
            "keras_steps_per_execution": spes, "rounds": rounds, "median": medians,
            "steps_trained": {m.name: m.step_counts() for m in methods},
            "weight_displacement": {m.name: m.weight_displacement() for m in methods},
            "initial_weights_norm": {m.name: float(np.sqrt(sum(np.sum(w ** 2) for w in m.initial_weights)))
                                     for m in methods}}


def _summary_table(results: List[Dict], unit: str) -> List[str]:
    lines = ["| workload | batch | Trainer | Keras fit | bare loop | Trainer/Keras-fit | Trainer/bare |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        m = result["median"][unit]
        lines.append(f"| {result['workload']} | {result['batch_size']} | {m['trainer']:,.0f} | "
                     f"{m['keras_fit']:,.0f} | {m['bare']:,.0f} | {m['trainer/keras_fit']:.2f}x | "
                     f"{m['trainer/bare']:.2f}x |")
    return lines


def format_report(results: List[Dict], args: argparse.Namespace) -> str:
    spes = " and ".join(str(s) for s in results[0]["keras_steps_per_execution"])
    lines = [f"Examples/s, median of {args.rounds} round(s); ratios are medians of the per-round "
             f"ratios; Keras fit = the faster of steps_per_execution {spes} in each round.", ""]
    lines += _summary_table(results, "examples_per_second")
    lines.append("")
    for result in results:
        name, m = result["workload"], result["median"]["examples_per_second"]
        keras_target, bare_target = TARGETS[name]
        for label, key, target in (("Trainer/Keras-fit", "trainer/keras_fit", keras_target),
                                   ("Trainer/bare", "trainer/bare", bare_target)):
            verdict = "met" if m[key] >= target else "MISSED"
            lines.append(f"ratio {name} {label}: {m[key]:.3f} (target >= {target:.2f}, {verdict})")
    lines += ["", "Cross-check that other processes disturb less: examples per CPU-second of "
              "this process (all its threads), medians.", ""]
    lines += _summary_table(results, "examples_per_cpu_second")
    lines += ["", "Raw rounds: examples/s (examples per CPU-second); other = cores that other "
              f"processes kept busy (of {os.cpu_count()}), worst measurement of the round.", ""]
    for result in results:
        first = result["rounds"][0]["examples_per_second"]
        keys = [k for k in first if "/" not in k and k != "keras_fit"]
        lines.append(f"| {result['workload']} round | " + " | ".join(keys)
                     + " | Trainer/Keras-fit | Trainer/bare | other |")
        lines.append("|---:|" + "---:|" * (len(keys) + 3))
        for index, r in enumerate(result["rounds"]):
            wall, cpu = r["examples_per_second"], r["examples_per_cpu_second"]
            cells = [f"{wall[k]:,.0f} ({cpu[k]:,.0f})" for k in keys]
            cells += [f"{wall[k]:.3f} ({cpu[k]:.3f})" for k in ("trainer/keras_fit", "trainer/bare")]
            lines.append(f"| {index + 1} | " + " | ".join(cells) + f" | {r['other_cores']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    results = [bench_workload(name, args) for name in args.workloads]
    print(format_report(results, args), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"tensorflow": tf.__version__, "keras": keras.__version__,
                       "cpu_count": os.cpu_count(), "args": vars(args), "results": results},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
