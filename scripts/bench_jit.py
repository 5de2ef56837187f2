"""XLA on the training step or not: `Trainer(jit_compile=True)` against `jit_compile=False`.

In one process and in alternating rounds (plain, XLA, XLA, plain, ...) it
times `Trainer.fit` on the same seeded model and data both ways, and prints
examples per CPU-second of this process (steadier than wall time on a shared
machine) and per wall second, side by side, as medians over the rounds, with
the XLA/plain ratio (median of the per-round ratios).

Workloads (as in `scripts/bench_throughput.py`): an MLP 64 -> 512 -> 512 -> 10
on batch 256 and the small CNN (conv32-pool-conv64-pool-dense128) on 28x28x1
inputs, batch 128; synthetic long-tailed data (cached, repeated, prefetched);
a static `ClassWeights` rule and the training metrics on. Each way is warmed
up (traced, compiled) before timing; every measurement runs the same number of
steps, and each Trainer's `global_step` and optimizer `iterations` must have
advanced by exactly that many, or the script stops.

Then, per workload, a fresh `Trainer(jit_compile="auto")` trains one step
(measuring however short the fit, `min_run_seconds=0`): the report gives its
choice, the figures it measured, and what the choice cost (wall and CPU
seconds of that first `fit` minus those of a fresh plain Trainer's).

Usage:
  TF_CPP_MIN_LOG_LEVEL=2 python scripts/bench_jit.py --rounds 5 --json_out jit.json
  python scripts/bench_jit.py --smoke   # seconds; checks it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from losses.rules import ClassWeights  # noqa: E402
from trainer import Trainer  # noqa: E402
from trainer.determinism import seed_everything  # noqa: E402
from trainer.models import build_cnn, build_mlp  # noqa: E402

NUM_CLASSES = 10
IMBALANCE_RATIO = 100.0
LEARNING_RATE = 1e-3
WAYS = ("plain", "xla")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="mlp,cnn", help="Comma-separated: mlp, cnn.")
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds (medians over these).")
    parser.add_argument("--steps_per_loop", type=int, default=100)
    parser.add_argument("--steps", type=int, default=0,
                        help="Steps per measurement; 0 picks a multiple of steps_per_loop lasting "
                             "about --seconds (from the warm-up).")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--mlp_batch_size", type=int, default=256)
    parser.add_argument("--cnn_batch_size", type=int, default=128)
    parser.add_argument("--dataset_batches", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads; 0 keeps its default.")
    parser.add_argument("--no_auto", action="store_true", help="Skip the jit_compile='auto' part.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default=None)
    parser.add_argument("--smoke", action="store_true", help="A few tiny steps, 1 round.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.steps_per_loop, args.steps, args.dataset_batches = 1, 2, 4, 2
        args.mlp_batch_size, args.cnn_batch_size = 32, 16
    for name in ("rounds", "steps_per_loop"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.steps < 0 or args.threads < 0:
        parser.error("--steps and --threads must be non-negative.")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not workloads or any(w not in ("mlp", "cnn") for w in workloads):
        parser.error(f"--workloads={args.workloads!r}: choose from mlp, cnn.")
    args.workloads = workloads
    return args


def make_workload(name: str, args: argparse.Namespace):
    """(input shape, batch size, model factory)."""
    if name == "mlp":
        return (64,), args.mlp_batch_size, lambda: build_mlp((64,), NUM_CLASSES, hidden_units=(512, 512))
    return (28, 28, 1), args.cnn_batch_size, lambda: build_cnn((28, 28, 1), NUM_CLASSES)


def make_dataset(shape, batch_size: int, num_batches: int, seed: int):
    """Cached repeated batches of normal features and long-tailed labels; inverse-frequency weights."""
    rng = np.random.default_rng(seed)
    n = batch_size * num_batches
    priors = IMBALANCE_RATIO ** (-np.arange(NUM_CLASSES) / (NUM_CLASSES - 1))
    labels = rng.choice(NUM_CLASSES, size=n, p=priors / priors.sum()).astype(np.int32)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    features = rng.normal(size=(n,) + tuple(shape)).astype(np.float32)
    dataset = (tf.data.Dataset.from_tensor_slices((features, labels))
               .batch(batch_size, drop_remainder=True).cache().repeat().prefetch(tf.data.AUTOTUNE))
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    return dataset, (counts.sum() / (NUM_CLASSES * counts)).astype(np.float32)


def make_trainer(factory, weights, args, jit_compile) -> Trainer:
    seed_everything(args.seed)
    return Trainer(model=factory(), optimizer=keras.optimizers.Adam(LEARNING_RATE),
                   reweighting=ClassWeights(weights), num_classes=NUM_CLASSES,
                   steps_per_loop=args.steps_per_loop, jit_compile=jit_compile)


def step_counts(trainer: Trainer) -> Dict[str, int]:
    return {"global_step": int(trainer.global_step.numpy()),
            "optimizer.iterations": int(trainer.optimizer.iterations.numpy())}


class IncompleteWork(RuntimeError):
    """A Trainer ran other than the steps asked for: its timing would mislead."""


def timed(trainer: Trainer, dataset, steps: int, way: str) -> Dict[str, float]:
    """Trains `steps` steps; wall and process CPU seconds, after checking exactly `steps` ran."""
    before = step_counts(trainer)
    cpu, start = time.process_time(), time.perf_counter()
    trainer.fit(dataset, epochs=1, steps_per_epoch=steps)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = step_counts(trainer)
    ran = {k: after[k] - before[k] for k in after}
    if any(count != steps for count in ran.values()):
        raise IncompleteWork(f"{way} was asked for {steps} steps but its counters moved by {ran}")
    return {"seconds": seconds, "cpu_seconds": cpu, "steps": steps}


def bench_workload(name: str, args: argparse.Namespace) -> Dict:
    shape, batch_size, factory = make_workload(name, args)
    dataset, weights = make_dataset(shape, batch_size, args.dataset_batches, args.seed)
    trainers = {"plain": make_trainer(factory, weights, args, False),
                "xla": make_trainer(factory, weights, args, True)}
    warmup = args.steps or args.steps_per_loop
    warm_seconds = {}
    for way, trainer in trainers.items():
        timed(trainer, dataset, warmup, way)  # traces, compiles
        warm_seconds[way] = timed(trainer, dataset, warmup, way)["seconds"]
    steps = args.steps
    if not steps:
        per_step = min(warm_seconds.values()) / warmup
        steps = max(1, round(args.seconds / per_step / args.steps_per_loop)) * args.steps_per_loop
    print(f"[{name}] batch {batch_size}, {steps} steps per measurement, {args.rounds} rounds",
          file=sys.stderr, flush=True)
    rounds: List[Dict] = []
    for index in range(args.rounds):
        order = WAYS if index % 2 == 0 else WAYS[::-1]
        timings = {way: timed(trainers[way], dataset, steps, way) for way in order}
        record = {unit: {way: t["steps"] * batch_size / t[key] for way, t in timings.items()}
                  for unit, key in (("examples_per_cpu_second", "cpu_seconds"),
                                    ("examples_per_second", "seconds"))}
        for unit in record:
            record[unit]["xla/plain"] = record[unit]["xla"] / record[unit]["plain"]
        record["timings"] = timings
        rounds.append(record)
        print(f"[{name}] round {index + 1}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in record["examples_per_cpu_second"].items()) + " per CPU-s",
            file=sys.stderr, flush=True)
    median = {unit: {key: statistics.median(r[unit][key] for r in rounds) for key in rounds[0][unit]}
              for unit in ("examples_per_cpu_second", "examples_per_second")}
    result = {"workload": name, "batch_size": batch_size, "steps": steps, "rounds": rounds,
              "median": median, "steps_trained": {w: step_counts(t) for w, t in trainers.items()}}
    if not args.no_auto:
        result["auto"] = bench_auto(factory, dataset, weights, args)
    return result


def bench_auto(factory, dataset, weights, args: argparse.Namespace) -> Dict:
    """A fresh `auto` Trainer's choice, and the wall seconds it added to a first one-step fit."""
    first_fit, first_fit_cpu = {}, {}
    for way, jit_compile in (("plain", False), ("auto", "auto")):
        trainer = make_trainer(factory, weights, args, jit_compile)
        trainer.jit_measurement.min_run_seconds = 0  # measure, however short this fit is
        cpu, start = time.process_time(), time.perf_counter()
        trainer.fit(dataset, epochs=1, steps_per_epoch=1)
        first_fit[way] = time.perf_counter() - start
        first_fit_cpu[way] = time.process_time() - cpu
        if step_counts(trainer)["global_step"] != 1:
            raise IncompleteWork(f"the {way} Trainer's first fit ran {step_counts(trainer)} steps, not 1")
    choice = trainer.jit_choice
    return {"jit_compile": choice.jit_compile, "how": choice.how, "measured": choice.measured,
            "first_fit_seconds": first_fit, "cost_seconds": first_fit["auto"] - first_fit["plain"],
            "first_fit_cpu_seconds": first_fit_cpu,
            "cost_cpu_seconds": first_fit_cpu["auto"] - first_fit_cpu["plain"]}


def format_report(results: List[Dict], args: argparse.Namespace) -> str:
    lines = [f"Examples per CPU-second of this process (and per wall second), median of "
             f"{args.rounds} round(s); XLA/plain is the median of the per-round ratios.", "",
             "| workload | batch | plain | XLA | XLA/plain | plain (wall) | XLA (wall) | XLA/plain (wall) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cpu, wall = r["median"]["examples_per_cpu_second"], r["median"]["examples_per_second"]
        lines.append(f"| {r['workload']} | {r['batch_size']} | {cpu['plain']:,.0f} | {cpu['xla']:,.0f} | "
                     f"{cpu['xla/plain']:.2f}x | {wall['plain']:,.0f} | {wall['xla']:,.0f} | "
                     f"{wall['xla/plain']:.2f}x |")
    autos = [r for r in results if "auto" in r]
    if autos:
        lines += ["", "jit_compile='auto' on a fresh Trainer (ms per step as it measured them on the "
                  "first batch, by its clock; the seconds it added to a first one-step fit, by wall "
                  "and CPU time):", "",
                  "| workload | choice | clock | XLA ms/step | plain ms/step | added (wall s) | "
                  "added (CPU s) |", "|---|---|---|---:|---:|---:|---:|"]
        for r in autos:
            a, m = r["auto"], r["auto"]["measured"] or {}
            xla, plain = m.get("xla_seconds_per_step"), m.get("plain_seconds_per_step")
            lines.append(f"| {r['workload']} | {'XLA' if a['jit_compile'] else 'plain'} ({a['how']}) | "
                         f"{m.get('clock', '-')} | {xla * 1e3 if xla else float('nan'):.3f} | "
                         f"{plain * 1e3 if plain else float('nan'):.3f} | {a['cost_seconds']:.2f} | "
                         f"{a['cost_cpu_seconds']:.2f} |")
    lines += ["", "Raw rounds, examples per CPU-second (per wall second):", ""]
    for r in results:
        lines += [f"| {r['workload']} round | plain | XLA | XLA/plain |", "|---:|---:|---:|---:|"]
        for index, record in enumerate(r["rounds"]):
            cpu, wall = record["examples_per_cpu_second"], record["examples_per_second"]
            lines.append(f"| {index + 1} | {cpu['plain']:,.0f} ({wall['plain']:,.0f}) | "
                         f"{cpu['xla']:,.0f} ({wall['xla']:,.0f}) | "
                         f"{cpu['xla/plain']:.3f} ({wall['xla/plain']:.3f}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    results = [bench_workload(name, args) for name in args.workloads]
    print(format_report(results, args))
    if args.json_out:
        with open(args.json_out, "w") as stream:
            json.dump({"args": vars(args), "results": results}, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
