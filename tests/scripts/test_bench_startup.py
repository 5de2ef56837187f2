"""scripts/bench_startup.py: one short round, its output checked against what it was asked to do.

No timing is asserted. Oracles: the command line it was given (one round, one tree, `--epochs=1`),
the rules the script states (medians of one round are that round's figures, a phase is the time
between two of the CLI's marks, the rerun trains nothing), and the CLI's own files and log lines.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "bench_startup.py")
MEASURES = ("import", "help", "run", "rerun", "evaluate", "predict")


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_startup", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench_startup")
    json_out = tmp_path / "startup.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, SCRIPT, "--rounds", "1", "--cli_args=--epochs=1", "--importtime_top", "3",
         "--predict_rows", "50", "--json_out", str(json_out)], capture_output=True, text=True, timeout=400,
        env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(json_out.read_text()), completed.stdout


def test_one_round_of_each_measure_and_its_checks(bench):
    report, _ = bench
    assert report["rounds"] == 1 and report["cli_args"] == ["--epochs=1"]
    assert report["trees"] == {"current": ROOT} and report["ratios"] is None  # one tree: no ratio
    result = report["results"]["current"]
    (record,) = result["rounds"]
    assert sorted(record) == sorted(MEASURES)
    for measure in MEASURES:
        timing = record[measure]
        assert timing["returncode"] == 0
        assert timing["wall_s"] > 0 and timing["cpu_s"] > 0
        assert timing["cpu_s"] == pytest.approx(timing["user_s"] + timing["sys_s"])
        # The median of one round is that round's figure.
        assert result["medians"][measure] == {key: timing[key] for key in ("wall_s", "cpu_s")} | (
            {"first_step_s": timing["first_step_s"]} if measure == "run" else {})
    run, rerun = record["run"], record["rerun"]
    assert run["epochs"] == 1 and run["steps"] > 0 and run["exported"] and run["report_written"]
    assert 0 < run["first_step_s"] < run["wall_s"]
    # The rerun on the finished run directory trains nothing and says it only summarised.
    assert rerun["trained"] is False and rerun["summary_only"] is True
    assert record["predict"]["rows"] == 50  # and the script checked that 50 rows were written


def test_phases_come_from_the_clis_timing_marks(bench):
    report, _ = bench
    result = report["results"]["current"]
    (record,) = result["rounds"]
    marks = record["run"]["timing"]
    assert list(marks)[:3] == ["run", "data", "built"] and "first_loop" in marks and "report" in marks
    assert list(marks.values()) == sorted(marks.values())  # in the order they happened
    assert marks["report"] < record["run"]["wall_s"]
    phases = result["timing"]["run"]["phases"]
    names = list(marks)
    for before, after in zip(names, names[1:]):
        assert phases[after] == pytest.approx(marks[after] - marks[before])
    assert phases["run"] == pytest.approx(marks["run"])
    assert list(record["rerun"]["timing"]) == ["run", "data", "summary"]  # nothing built or trained


def test_import_profile_and_the_table(bench):
    report, stdout = bench
    profile = report["results"]["current"]["import_profile"]
    assert len(profile["packages_by_own_s"]) == 3 and len(profile["modules_by_own_s"]) == 3
    seconds = [s for _, s in profile["packages_by_own_s"]]
    assert seconds == sorted(seconds, reverse=True) and sum(seconds) <= profile["total_s"] + 1e-9
    assert profile["packages_by_own_s"][0][0] == "tensorflow"
    assert "sklearn" not in profile["loaded"]  # hidden while Keras loads (trainer/main.py)
    assert "| measure (median seconds) | current |" in stdout
    for label in ("run: launch to the first training step, wall", "rerun on the finished run, CPU"):
        assert label in stdout


def test_absl_timestamps_and_the_timing_line_are_read_as_written():
    bench_startup = _load_script()
    import datetime

    launched = datetime.datetime(2026, 12, 2, 6, 17, 40, 500000).timestamp()
    stderr = ("I1202 06:17:41.000000 1404 trainer.py:667] Training step: the plain graph\n"
              "I1202 06:17:42.250000 1404 progress.py:158] epoch 1/10 1.6s\n"
              "I1202 06:17:50.800575 1404 train.py:185] Timing (s since the process started): "
              "run 3.71, data 3.72, first_loop 8.40.\n")
    assert bench_startup.first_step_seconds(stderr, launched) == pytest.approx(0.5)
    assert bench_startup.first_step_seconds(stderr.split("\n", 1)[1], launched) == pytest.approx(1.75)
    assert bench_startup.first_step_seconds("no log lines\n", launched) is None
    assert bench_startup.timing_marks(stderr) == {"run": 3.71, "data": 3.72, "first_loop": 8.40}
    assert bench_startup.timing_marks("nothing") is None
