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
        assert result["median"]["trainer"] > 0 and result["median"]["bare"] > 0
