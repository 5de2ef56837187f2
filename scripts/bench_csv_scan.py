"""Memory and speed of the CSV statistics pass and pipeline on a large file with categorical columns.

Writes a CSV of about `--megabytes` (numeric columns with missing cells, string categories, an ID
column and a weight column), then, in child processes so that each peak RSS is its own:

1. `load_data` (the one statistics pass: schema, vocabularies, moments, split counts);
2. one full pass of the training pipeline (parse + encode every row).

Prints rows, MB/s and the peak resident memory of each, next to the file size: memory must stay
bounded (far below the file size) because the file is streamed.

    python scripts/bench_csv_scan.py --megabytes=1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

_CHILD = r"""
import json, resource, sys, time
from trainer.data import ColumnOptions, load_data
path, mode = sys.argv[1], sys.argv[2]
options = ColumnOptions(exclude_columns=("row_id",), weight_column="w")
start, cpu = time.perf_counter(), time.process_time()
bundle = load_data(f"csv:{path}", columns=options)
rows = 0
if mode == "pipeline":
    start, cpu = time.perf_counter(), time.process_time()
    for batch in bundle.train.dataset(4096, shuffle=True, seed=0):
        rows += int(batch[1].shape[0])
    assert rows == bundle.train.num_examples, (rows, bundle.train.num_examples)
else:
    rows = bundle.train.num_examples + bundle.validation.num_examples + bundle.eval.num_examples
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start,
                  "cpu_seconds": time.process_time() - cpu,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "inputs": bundle.schema.width, "features": bundle.schema.describe()}))
"""


def write_csv(path: str, megabytes: float, seed: int = 0) -> int:
    """Writes the table; returns its row count."""
    rng = np.random.default_rng(seed)
    cities = np.array([f"city_{i}" for i in range(300)])
    devices = np.array(["ios", "android", "web", "pos"])
    target = int(megabytes * 2**20)
    rows = 0
    with open(path, "w") as f:
        f.write("row_id,amount,age,score,city,device,w,label\n")
        while f.tell() < target:
            n = 50_000
            amount = np.round(rng.lognormal(3, 1.2, n), 2).astype(str)
            amount[rng.random(n) < 0.03] = ""
            age = rng.integers(18, 90, n).astype(str)
            age[rng.random(n) < 0.05] = "NA"
            score = np.round(rng.normal(0, 1, n), 4).astype(str)
            city = cities[np.minimum(rng.zipf(1.5, n) - 1, len(cities) - 1)]
            device = devices[rng.integers(0, 4, n)]
            w = np.round(rng.uniform(0.5, 2.0, n), 3).astype(str)
            label = np.where(rng.random(n) < 0.01, "fraud", "ok")
            ids = np.arange(rows, rows + n).astype(str)
            lines = [",".join(r) for r in zip(ids, amount, age, score, city, device, w, label)]
            f.write("\n".join(lines) + "\n")
            rows += n
    return rows


def run_child(path: str, mode: str) -> dict:
    """Runs one measurement in a fresh process (its own peak RSS)."""
    out = subprocess.run([sys.executable, "-c", _CHILD, path, mode], check=True, capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=1024)
    parser.add_argument("--keep", help="write the CSV here and keep it (default: a temp file)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench_csv_")
    path = args.keep or os.path.join(directory, "big.csv")
    start = time.perf_counter()
    rows = write_csv(path, args.megabytes)
    size_mb = os.path.getsize(path) / 2**20
    print(f"wrote {rows:,} rows, {size_mb:,.0f} MB in {time.perf_counter() - start:.0f} s: {path}")
    for mode in ("scan", "pipeline"):
        r = run_child(path, mode)
        print(f"{mode:>8}: {r['rows']:,} rows in {r['seconds']:.1f} s ({size_mb / r['seconds']:.1f} MB/s, "
              f"{r['cpu_seconds']:.1f} CPU s), peak RSS {r['peak_rss_mb']:,.0f} MB "
              f"({r['peak_rss_mb'] / size_mb:.2f}x the file); {r['features']}")
    if not args.keep:
        os.remove(path)
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")


if __name__ == "__main__":
    main()
