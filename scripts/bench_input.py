"""Input-pipeline benchmark: examples/s of the streamed CSV and TFRecord pipelines, and CSV peak memory.

Generates files of `--size_mb` (64 float features, 10 classes) in a temp dir, times `load_data`'s
statistics pass and the training split's pipeline (batch 256): streamed (read and parsed every
epoch; shuffled and in order) and cached in memory; prints medians of `--rounds` alternating rounds.
It also times the Trainer's consumption rate on the MLP benchmark (64-512-512-10, batch 256, data
in memory) in the same process and prints each pipeline's rate over it (goal: >= 2x); each Trainer
measurement checks that its `global_step` and optimizer advanced by the steps it was timed for.

    python scripts/bench_input.py [--size_mb=300] [--rounds=3] [--seconds=5] [--csv_gb=1]
    python scripts/bench_input.py --size_mb=2 --rounds=1 --seconds=0.5 --json_out=input.json  # a quick check

The figures measured with it are in the README ("Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from losses import ClassWeights  # noqa: E402
from trainer import Trainer  # noqa: E402
from trainer.data import load_data, streaming  # noqa: E402
from trainer.determinism import seed_everything  # noqa: E402
from trainer.models import build_mlp  # noqa: E402

NUM_FEATURES = 64
NUM_CLASSES = 10
BATCH_SIZE = 256
BLOCK_ROWS = 20000


def measure_pipeline(dataset: tf.data.Dataset, seconds: float,
                     warmup_batches: int = 5) -> Tuple[float, float]:
    """Iterates `dataset` for about `seconds` after a warm-up.

    Args:
      dataset: A batched dataset (repeat it if one pass may take less than `seconds`).
      seconds: How long to iterate after the warm-up.
      warmup_batches: Batches consumed before the clock starts (fills buffers and caches).

    Returns:
      (examples per second, process CPU microseconds per example); (0.0, nan) if the
      dataset ended during the warm-up. CPU time counts every thread of this process, so
      it is the pipeline's cost even when other processes share the cores.
    """
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        try:
            next(iterator)
        except StopIteration:
            return 0.0, float("nan")
    examples = 0
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            break
        examples += int(tf.shape(tf.nest.flatten(batch)[0])[0])
        if time.perf_counter() >= deadline:
            break
    elapsed = max(time.perf_counter() - start, 1e-9)
    cpu = _cpu_seconds() - cpu_start
    return examples / elapsed, (cpu / examples * 1e6 if examples else float("nan"))


def measure_pipeline_rate(dataset: tf.data.Dataset, seconds: float, warmup_batches: int = 5) -> float:
    """Examples/s of iterating `dataset` (batches with a leading batch dim) for about `seconds`.

    See `measure_pipeline` for the arguments.
    """
    return measure_pipeline(dataset, seconds, warmup_batches)[0]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _block(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BLOCK_ROWS, NUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=BLOCK_ROWS)
    return x, y


def write_csv(path: str, size_bytes: int) -> int:
    """Writes a CSV of about `size_bytes` (a repeated block of random rows); returns its rows."""
    x, y = _block()
    lines = [",".join(f"{v:.6g}" for v in row) + f",{label}" for row, label in zip(x, y)]
    block = ("\n".join(lines) + "\n").encode()
    rows = 0
    with open(path, "wb") as f:
        f.write((",".join(f"f{i}" for i in range(NUM_FEATURES)) + ",label\n").encode())
        while f.tell() < size_bytes:
            f.write(block)
            rows += BLOCK_ROWS
    return rows


def write_tfrecord(path: str, size_bytes: int) -> int:
    """Writes a TFRecord file of about `size_bytes` (a repeated block); returns its records."""
    x, y = _block()
    records = [tf.train.Example(features=tf.train.Features(feature={
        "features": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    })).SerializeToString() for row, label in zip(x, y)]
    rows = 0
    with tf.io.TFRecordWriter(path) as w:
        while os.path.getsize(path) < size_bytes if os.path.exists(path) else True:
            for r in records:
                w.write(r)
            rows += BLOCK_ROWS
            w.flush()
    return rows


def bench_format(spec: str, rows: int, size_bytes: int, rounds: int, seconds: float,
                 cache_dir: str) -> Dict[str, Tuple[float, float]]:
    """Times the statistics pass, the streamed pipelines (shuffled / in order) and the cached one.

    Returns:
      {name: (median examples/s, median CPU us/example)} for 'scan', 'shuffled', 'ordered',
      'cached'.
    """
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    bundle = load_data(spec, cache_dir=cache_dir)
    scan_s, scan_cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    runs: Dict[str, List[Tuple[float, float]]] = {"shuffled": [], "ordered": [], "cached": []}
    limit = streaming.CACHE_LIMIT_BYTES
    epoch_batches = -(-bundle.train.num_examples // BATCH_SIZE)
    try:
        for r in range(rounds):  # alternating rounds
            streaming.CACHE_LIMIT_BYTES = 0  # streamed: read and parse every epoch
            runs["shuffled"].append(measure_pipeline(
                bundle.train.dataset(BATCH_SIZE, shuffle=True, seed=r, repeat=True), seconds))
            runs["ordered"].append(measure_pipeline(
                bundle.train.dataset(BATCH_SIZE, shuffle=False, seed=r, repeat=True), seconds))
            streaming.CACHE_LIMIT_BYTES = 1 << 40  # cached after the first epoch (the warm-up)
            runs["cached"].append(measure_pipeline(
                bundle.train.dataset(BATCH_SIZE, shuffle=True, seed=r, repeat=True), seconds,
                warmup_batches=epoch_batches + 1))
    finally:
        streaming.CACHE_LIMIT_BYTES = limit
    result = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
              for k, v in runs.items()}
    result["scan"] = (rows / scan_s, scan_cpu / rows * 1e6)
    return result


class IncompleteWork(RuntimeError):
    """The Trainer ran other than the steps it was timed for: its rate would mislead."""


def _step_counts(trainer: Trainer) -> Dict[str, int]:
    return {"optimizer.iterations": int(trainer.optimizer.iterations.numpy()),
            "trainer.global_step": int(trainer.global_step.numpy())}


def timed_epoch(trainer: Trainer, data: tf.data.Dataset, steps: int) -> Dict[str, float]:
    """Trains one more epoch of `steps` steps and checks that exactly that many ran.

    Returns:
      {"steps", "seconds", "cpu_seconds"}: the steps, wall and process CPU seconds of the epoch.

    Raises:
      IncompleteWork: If a step counter moved by other than `steps`.
    """
    before = _step_counts(trainer)
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    trainer.fit(data, epochs=1, steps_per_epoch=steps)
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    after = _step_counts(trainer)
    wrong = {name: after[name] - before[name] for name in after if after[name] - before[name] != steps}
    if wrong:
        raise IncompleteWork(f"the Trainer was asked for {steps} steps, but its counters moved by "
                             + ", ".join(f"{name} {count}" for name, count in wrong.items()))
    return {"steps": steps, "seconds": elapsed, "cpu_seconds": cpu}


def measure_trainer_rate(seconds: float) -> Dict[str, float]:
    """The Trainer's consumption rate on the MLP benchmark, with data already in memory.

    After a warm-up epoch of 100 steps, times epochs of 200, 400, ... steps until one
    lasts at least `seconds / 2`.

    Returns:
      That epoch's {"steps", "seconds", "cpu_seconds"} plus "examples_per_second"
      and "cpu_us_per_example" (process CPU microseconds per example).
    """
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BATCH_SIZE * 64, NUM_FEATURES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=len(features)).astype(np.int32)
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(
        BATCH_SIZE, drop_remainder=True).cache().repeat().prefetch(tf.data.AUTOTUNE)
    seed_everything(0)
    trainer = Trainer(model=lambda: build_mlp((NUM_FEATURES,), NUM_CLASSES, hidden_units=(512, 512)),
                      optimizer=lambda: keras.optimizers.Adam(1e-3), num_classes=NUM_CLASSES,
                      reweighting=ClassWeights([1.0] * NUM_CLASSES), steps_per_loop=100)
    timed_epoch(trainer, data, 100)  # trace and warm up
    steps = 200
    while True:
        timing = timed_epoch(trainer, data, steps)
        if timing["seconds"] >= seconds / 2 or steps >= 100000:
            examples = timing["steps"] * BATCH_SIZE
            return {**timing, "examples_per_second": examples / timing["seconds"],
                    "cpu_us_per_example": timing["cpu_seconds"] / examples * 1e6}
        steps *= 2


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_child(path: str) -> None:
    """Child process: streams `path` (statistics pass + one training epoch); prints peak RSS."""
    tf.constant(0.0) + 1.0  # initialise the runtime before the baseline
    baseline = _vm_hwm_kb()
    start = time.perf_counter()
    bundle = load_data(f"csv:{path}")
    n = 0
    for x, _ in bundle.train.dataset(BATCH_SIZE, shuffle=True, seed=0):
        n += int(x.shape[0])
    elapsed = time.perf_counter() - start
    peak = _vm_hwm_kb()
    print(f"RSS baseline {baseline / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
          f"peak above baseline {(peak - baseline) / 1024:.0f} MiB "
          f"(statistics pass + one shuffled epoch of {n:,} examples in {elapsed:.0f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size_mb", type=float, default=300.0, help="Size of each generated file.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="Timed seconds per round.")
    parser.add_argument("--csv_gb", type=float, default=0.0,
                        help="If > 0, also measure peak RSS while streaming a CSV of this size.")
    parser.add_argument("--formats", default="csv,tfrecord")
    parser.add_argument("--json_out", default=None, help="Also write all numbers to this JSON file.")
    parser.add_argument("--rss_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(args.rss_child)
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}.")
    size = int(args.size_mb * 1e6)
    report = {"tensorflow": tf.__version__, "cpu_count": os.cpu_count(), "args": vars(args),
              "batch_size": BATCH_SIZE, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"batch {BATCH_SIZE}, {NUM_FEATURES} float features, {NUM_CLASSES} classes, "
              f"medians of {args.rounds} rounds of {args.seconds:g} s")
        trainer_rounds = [measure_trainer_rate(args.seconds) for _ in range(args.rounds)]
        trainer_rate = statistics.median(r["examples_per_second"] for r in trainer_rounds)
        trainer_cpu = statistics.median(r["cpu_us_per_example"] for r in trainer_rounds)
        report["trainer"] = {"rounds": trainer_rounds, "examples_per_second": trainer_rate,
                             "cpu_us_per_example": trainer_cpu}
        print(f"Trainer consumption (MLP 64-512-512-10, batch {BATCH_SIZE}): {trainer_rate:,.0f} ex/s, "
              f"{trainer_cpu:.2f} CPU-us/ex", flush=True)
        for fmt in args.formats.split(","):
            path = os.path.join(tmp, f"bench.{fmt}")
            rows = write_csv(path, size) if fmt == "csv" else write_tfrecord(path, size)
            actual = os.path.getsize(path)
            res = bench_format(f"{fmt}:{path}", rows, actual, args.rounds, args.seconds,
                               os.path.join(tmp, "cache"))
            print(f"{fmt} file: {actual / 1e6:.0f} MB, {rows:,} rows", flush=True)
            pipelines = {}
            for name, label in (("scan", "statistics pass (rows/s)"), ("shuffled", "streamed, shuffled"),
                                ("ordered", "streamed, in order"), ("cached", "cached, shuffled")):
                rate, cpu_us = res[name]
                pipelines[name] = {"examples_per_second": rate, "cpu_us_per_example": cpu_us,
                                   "over_trainer": rate / trainer_rate,
                                   "over_trainer_by_cpu": trainer_cpu / cpu_us}
                print(f"  {label:26s} {rate:>10,.0f} ex/s  {cpu_us:6.2f} CPU-us/ex  "
                      f"{rate / trainer_rate:5.2f}x the Trainer's rate, "
                      f"{trainer_cpu / cpu_us:5.2f}x by CPU cost", flush=True)
            report["formats"][fmt] = {"bytes": actual, "rows": rows, "pipelines": pipelines}
            os.remove(path)
        if args.csv_gb > 0:
            path = os.path.join(tmp, "big.csv")
            rows = write_csv(path, int(args.csv_gb * 1e9))
            print(f"csv {os.path.getsize(path) / 1e9:.2f} GB, {rows:,} rows:", flush=True)
            subprocess.run([sys.executable, os.path.abspath(__file__), "--rss_child", path], check=True)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
