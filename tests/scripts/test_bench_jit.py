"""scripts/bench_jit.py: a smoke run, checked against what it was asked to do.

No timing is asserted. Oracles: the step counts the command line implies (two warm-up calls and
the rounds, each of `--steps`), the formulas that turn steps, batch size and seconds into the
reported rates and ratios, and the `auto` choice agreeing with the figures it measured.
"""

import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "bench_jit.py")


def test_bench_jit_counts_steps_and_derives_rates_from_them(tmp_path):
    json_out = tmp_path / "jit.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    completed = subprocess.run([sys.executable, SCRIPT, "--smoke", "--workloads", "mlp",
                                "--json_out", str(json_out)], capture_output=True, text=True,
                               timeout=180, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(json_out.read_text())
    (result,) = report["results"]
    steps, batch = result["steps"], result["batch_size"]
    assert (steps, batch) == (4, 32)  # --smoke
    for way in ("plain", "xla"):
        # Two warm-up calls and one round, each of `steps` steps; the optimizer agrees.
        assert result["steps_trained"][way] == {"global_step": 3 * steps, "optimizer.iterations": 3 * steps}
    for record in result["rounds"]:
        for way, timing in record["timings"].items():
            assert timing["steps"] == steps
            assert record["examples_per_cpu_second"][way] == pytest.approx(
                steps * batch / timing["cpu_seconds"])
            assert record["examples_per_second"][way] == pytest.approx(steps * batch / timing["seconds"])
        cpu = record["examples_per_cpu_second"]
        assert cpu["xla/plain"] == pytest.approx(cpu["xla"] / cpu["plain"])
    median = result["median"]["examples_per_cpu_second"]
    assert median["xla"] == pytest.approx(statistics.median(
        r["examples_per_cpu_second"]["xla"] for r in result["rounds"]))
    assert f"| mlp | 32 | {median['plain']:,.0f} | {median['xla']:,.0f} |" in completed.stdout

    auto = result["auto"]
    measured = auto["measured"]
    assert auto["how"] == "measured"
    assert auto["jit_compile"] == (measured["xla_seconds_per_step"] < measured["plain_seconds_per_step"])
    assert auto["cost_seconds"] == pytest.approx(
        auto["first_fit_seconds"]["auto"] - auto["first_fit_seconds"]["plain"])
