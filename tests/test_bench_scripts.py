"""Smoke tests of the benchmark scripts: they run and print what they promise (no timing asserts)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_throughput_smoke(tmp_path):
    json_out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "bench_throughput.py"), "--smoke",
         "--json_out", str(json_out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = completed.stdout
    assert "| workload | batch | Trainer | Keras fit | bare loop | Trainer/Keras-fit | Trainer/bare |" in out
    for workload in ("mlp", "cnn"):
        assert f"ratio {workload} Trainer/Keras-fit: " in out
        assert f"ratio {workload} Trainer/bare: " in out
    results = json.loads(json_out.read_text())["results"]
    assert [r["workload"] for r in results] == ["mlp", "cnn"]
    for result in results:
        for unit in ("examples_per_second", "examples_per_cpu_second"):
            median = result["median"][unit]
            assert median["trainer"] > 0 and median["keras_fit"] > 0 and median["bare"] > 0
            assert median["trainer/bare"] > 0


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def test_bench_quality_smoke(tmp_path):
    import pytest

    if not all(os.path.isfile(os.path.join(FASHION_MNIST_DIR, f)) for f in FASHION_MNIST_FILES):
        pytest.skip(f"Fashion-MNIST files absent from {FASHION_MNIST_DIR}")
    results = tmp_path / "results.jsonl"
    markdown = tmp_path / "table.md"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, os.path.join(ROOT, "scripts", "bench_quality.py"), "--epochs=1",
               "--seeds=0", "--imbalance_ratios=100", "--methods=keras_ce,cross_entropy",
               "--max_train_examples=256", "--max_eval_examples=256",
               f"--results={results}", f"--markdown_out={markdown}"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                               cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = completed.stdout
    assert "| method | balanced accuracy | worst-class recall | class 9 recall | seeds |" in out
    assert "| Keras `fit`, cross-entropy | " in out
    assert "| Trainer, cross_entropy | " in out
    assert markdown.read_text().strip() in out
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == ["cross_entropy", "keras_ce"]
    for row in rows:
        assert (row["imbalance_ratio"], row["seed"], row["epochs"]) == (100.0, 0, 1)
        assert 0.0 <= row["worst_recall"] <= row["balanced_accuracy"] <= 1.0
        assert len(row["recall"]) == 10
    # A rerun with the same key trains nothing and prints the same table.
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                           cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert len(results.read_text().splitlines()) == 2
    assert "| Trainer, cross_entropy | " in rerun.stdout
