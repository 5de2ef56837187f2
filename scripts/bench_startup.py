"""Start-up and exit time of the command line, as real `python -m trainer.main` processes.

Per round, and for each source tree given (`--trees`, alternating their order
round by round), it times six processes, each started fresh:

- import: `python -c "import trainer.main"` (what importing the CLI costs);
- help: `python -m trainer.main --helpshort` (the program's start-up and exit, no run);
- run: the default run (`--cli_args` added) on a fresh `--model_dir`, from
  launch to its first training step and to its exit;
- rerun: the same command again on that finished run directory;
- evaluate: `python -m trainer.evaluate --model_dir=<the run>` (the export on the
  run's own evaluation data, the report written);
- predict: `python -m trainer.predict` of the export over an NPZ of
  `--predict_rows` new rows of its input shape.

Each figure is wall seconds and CPU seconds (user + system of the process
and its children, from `os.wait4`), medians over the rounds; with two trees,
also the second's over the first's (median of the per-round ratios).

The first training step: launch to the timestamp of the first log line
written after a training step ran, the same line in every version of the
CLI: `Training step: ...` (`--jit_compile=auto`'s choice, logged once the
first batch's steps were traced and run), else the first progress line
(`epoch 1/N`, the end of the first epoch). absl stamps its lines with the
local time to the microsecond.

Where the time goes: the CLI's own `Timing (s since the process started):
...` log line, when it writes one (medians of each mark and of each phase
between marks), and `python -X importtime -m trainer.main --helpshort` once
per tree (the packages and the modules that cost the most import time of
their own, and which of scikit-learn, matplotlib, SciPy and pandas it loads).

Every run is checked for the work it claims: the run exits 0 with
metrics.json at its final epoch (step > 0), the export and (with matplotlib)
report.html written; the rerun exits 0, trains nothing (the latest checkpoint
and metrics.json's epoch and step as they were) and reports the same metrics.
Evaluate must exit 0 and write evaluation.json; predict must exit 0 and write one
output row per input row. The script stops with an error otherwise. With `--cli_args`
holding `--export_dir=none` there is no export: evaluate and predict are not timed, and the
output says so (`serving_skipped`).

Usage:
  TF_CPP_MIN_LOG_LEVEL=2 python scripts/bench_startup.py --rounds 5 --json_out startup.json
  # before / after, side by side (a copy of the tree as it was, and this one):
  python scripts/bench_startup.py --trees before=/tmp/before,after=. --rounds 5
  python scripts/bench_startup.py --rounds 1 --cli_args="--epochs=1"   # a short check
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURES = ("import", "help", "run", "rerun", "evaluate", "predict")
TIMING_LINE = re.compile(r"Timing \(s since the process started\): (.*?)\.?$")
TIMING_MARK = re.compile(r"(\w+) (\d+(?:\.\d+)?)")
# absl: `I1202 06:17:50.800575 140419949939584 train.py:185] message`.
ABSL_LINE = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s+\d+\s+\S+:\d+\] (.*)$")
FIRST_STEP_LINE = re.compile(r"^(Training step: |epoch 1/\d+ )")
# The metrics a rerun must report unchanged.
SAME_METRICS = ("epoch", "step", "accuracy", "balanced_accuracy", "recall", "precision", "decision")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per tree (medians over these).")
    parser.add_argument("--trees", default=f"current={ROOT}",
                        help="Comma-separated name=path of source trees to time side by side.")
    parser.add_argument("--cli_args", default="",
                        help="Flags added to the run and the rerun (e.g. --epochs=1); none: the default run.")
    parser.add_argument("--importtime_top", type=int, default=8,
                        help="How many packages and modules the import profile lists (0: no profile).")
    parser.add_argument("--predict_rows", type=int, default=2000,
                        help="Rows of the NPZ that the predict measure reads.")
    parser.add_argument("--work_dir", default=None,
                        help="Where the run directories go (default: a temporary directory, removed after).")
    parser.add_argument("--json_out", default=None, help="Write every figure here as JSON.")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}: at least 1")
    return args


def parse_trees(spec: str) -> Dict[str, str]:
    """`name=path,...` -> {name: absolute path}; each path must hold trainer/main.py."""
    trees: Dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--trees: {item!r} is not name=path")
        path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(path, "trainer", "main.py")):
            raise SystemExit(f"--trees: {path} holds no trainer/main.py")
        if name in trees:
            raise SystemExit(f"--trees: the name {name!r} is given twice")
        trees[name] = path
    if not trees:
        raise SystemExit("--trees: give at least one name=path")
    return trees


# ------------------------------------------------------------------ one process


def run_process(argv: List[str], *, tree: str, log_prefix: str) -> Dict[str, Any]:
    """Runs `argv` in `tree`; returns its wall and CPU seconds, exit status, launch time, stdout, stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONPATH=os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")])))
    with open(log_prefix + ".out", "w+") as out, open(log_prefix + ".err", "w+") as err:
        launched = time.time()
        process = subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        ended = time.time()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"wall_s": ended - launched, "cpu_s": usage.ru_utime + usage.ru_stime,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "returncode": process.returncode,
            "launched": launched, "stdout": stdout, "stderr": stderr}


def _require(ok: bool, what: str, result: Dict[str, Any]) -> None:
    if not ok:
        raise SystemExit(f"bench_startup: {what}\n--- stderr (end) ---\n{result['stderr'][-3000:]}")


def absl_times(stderr: str, launched: float) -> List[Tuple[float, str]]:
    """`(seconds after launch, message)` of each absl log line of `stderr`."""
    year = datetime.datetime.fromtimestamp(launched).year
    found = []
    for line in stderr.splitlines():
        match = ABSL_LINE.match(line)
        if not match:
            continue
        month, day, hour, minute, second, micro = map(int, match.groups()[:6])
        stamp = datetime.datetime(year, month, day, hour, minute, second, micro).timestamp()
        if stamp < launched - 180 * 86400:  # the run crossed a new year
            stamp = datetime.datetime(year + 1, month, day, hour, minute, second, micro).timestamp()
        found.append((stamp - launched, match.group(7)))
    return found


def first_step_seconds(stderr: str, launched: float) -> Optional[float]:
    """Launch to the first log line written after a training step ran (see the module doc)."""
    for seconds, message in absl_times(stderr, launched):
        if FIRST_STEP_LINE.match(message):
            return seconds
    return None


def timing_marks(stderr: str) -> Optional[Dict[str, float]]:
    """The marks of the CLI's `Timing (s since the process started): ...` line, None without one."""
    for line in reversed(stderr.splitlines()):
        match = TIMING_LINE.search(line)
        if match:
            return {name: float(value) for name, value in TIMING_MARK.findall(match.group(1))}
    return None


def _phases(marks: Dict[str, float]) -> Dict[str, float]:
    """Seconds between consecutive marks, each named by the mark that ends it (`run`: from the start)."""
    phases, previous = {}, 0.0
    for name, seconds in marks.items():
        phases[name] = seconds - previous
        previous = seconds
    return phases


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def _latest_checkpoint(model_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as stream:
            first = stream.readline()
    except OSError:
        return None
    match = re.match(r'model_checkpoint_path: "(.*)"', first)
    return match.group(1) if match else None


# ------------------------------------------------------------------ one round of one tree


def _summary(result: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    keep = ("wall_s", "cpu_s", "user_s", "sys_s", "returncode")
    return {**{key: result[key] for key in keep}, **extra}


def time_serving_commands(tree: str, model_dir: str, export_dir: str, rows: int,
                          log_prefix: str) -> Dict[str, Any]:
    """`trainer.evaluate` and `trainer.predict` on a finished run, each a fresh process, checked."""
    import numpy as np

    python = sys.executable
    record: Dict[str, Any] = {}
    evaluated = run_process([python, "-m", "trainer.evaluate", f"--model_dir={model_dir}"], tree=tree,
                            log_prefix=log_prefix + "evaluate")
    _require(evaluated["returncode"] == 0 and _read_json(os.path.join(model_dir, "evaluation.json")),
             "trainer.evaluate failed or wrote no evaluation.json", evaluated)
    record["evaluate"] = _summary(evaluated)
    metadata = _read_json(os.path.join(export_dir, "assets.extra", "metadata.json")) or {}
    _require("input_shape" in metadata, f"no input_shape in {export_dir}'s metadata.json", evaluated)
    inputs, output = log_prefix + "new_rows.npz", log_prefix + "predictions.csv"
    np.savez(inputs, x=np.random.default_rng(0).normal(size=(rows, *metadata["input_shape"]))
             .astype(np.float32))
    predicted = run_process([python, "-m", "trainer.predict", f"--model_dir={model_dir}",
                             f"--input=npz:{inputs}", f"--output={output}"], tree=tree,
                            log_prefix=log_prefix + "predict")
    written = 0
    if predicted["returncode"] == 0 and os.path.isfile(output):
        with open(output) as stream:
            written = sum(1 for _ in stream) - 1  # the header
    _require(predicted["returncode"] == 0 and written == rows,
             f"trainer.predict failed or wrote {written} rows for {rows}", predicted)
    record["predict"] = _summary(predicted, rows=rows)
    return record


def time_tree(tree: str, model_dir: str, cli_args: List[str], log_prefix: str,
              predict_rows: int = 2000) -> Dict[str, Any]:
    """The six measures of one round in `tree`, checked (see the module doc)."""
    python = sys.executable
    record: Dict[str, Any] = {}

    imported = run_process([python, "-c", "import trainer.main"], tree=tree, log_prefix=log_prefix + "import")
    _require(imported["returncode"] == 0, "`import trainer.main` failed", imported)
    record["import"] = _summary(imported)

    shown = run_process([python, "-m", "trainer.main", "--helpshort"], tree=tree,
                        log_prefix=log_prefix + "help")
    _require(shown["returncode"] == 0 and "USAGE" in shown["stdout"], "--helpshort failed", shown)
    record["help"] = _summary(shown)

    command = [python, "-m", "trainer.main", f"--model_dir={model_dir}", *cli_args]
    first = run_process(command, tree=tree, log_prefix=log_prefix + "run")
    _require(first["returncode"] == 0, f"the run exited {first['returncode']}", first)
    metrics = _read_json(os.path.join(model_dir, "metrics.json"))
    _require(metrics is not None, "the run wrote no metrics.json", first)
    epochs = metrics["flags"]["epochs"]
    _require(metrics["epoch"] == epochs and metrics["step"] > 0,
             f"the run ended at epoch {metrics['epoch']} of {epochs}, step {metrics['step']}", first)
    export_flag = metrics["flags"].get("export_dir")
    exported = export_flag != "none"
    export_dir = export_flag or os.path.join(model_dir, "export")
    _require(not exported or os.path.isfile(os.path.join(export_dir, "saved_model.pb")),
             f"the run exported nothing to {export_dir}", first)
    report = os.path.isfile(os.path.join(model_dir, "report.html"))
    _require(report or importlib.util.find_spec("matplotlib") is None, "the run wrote no report.html", first)
    first_step = first_step_seconds(first["stderr"], first["launched"])
    _require(first_step is not None, "the run logged no training step", first)
    marks = timing_marks(first["stderr"])
    record["run"] = _summary(first, first_step_s=first_step, epochs=epochs, steps=metrics["step"],
                             exported=exported, report_written=report, timing=marks)

    checkpoint = _latest_checkpoint(model_dir)
    again = run_process(command, tree=tree, log_prefix=log_prefix + "rerun")
    _require(again["returncode"] == 0, f"the rerun exited {again['returncode']}", again)
    after = _read_json(os.path.join(model_dir, "metrics.json"))
    _require(after is not None and _latest_checkpoint(model_dir) == checkpoint,
             "the rerun moved the checkpoint or lost metrics.json", again)
    changed = [key for key in SAME_METRICS if after.get(key) != metrics.get(key)]
    _require(not changed, f"the rerun reported other {', '.join(changed)}", again)
    trained = first_step_seconds(again["stderr"], again["launched"]) is not None
    record["rerun"] = _summary(again, trained=trained, summary_only="Finished earlier" in again["stdout"],
                               timing=timing_marks(again["stderr"]))
    _require(not record["rerun"]["trained"], "the rerun trained", again)
    if exported:
        record.update(time_serving_commands(tree, model_dir, export_dir, predict_rows, log_prefix))
    else:  # both serve the export: nothing to time, and the table says so
        record["serving_skipped"] = "--export_dir=none: no export for trainer.evaluate and trainer.predict"
        print(f"{log_prefix}: {record['serving_skipped']}; not timed", file=sys.stderr)
    return record


# ------------------------------------------------------------------ the import profile


def import_profile(tree: str, top: int, log_prefix: str) -> Dict[str, Any]:
    """`python -X importtime -m trainer.main --helpshort`: the packages and modules of most own time.

    A package counts as loaded when its modules took over a millisecond (an import that a
    `None` in `sys.modules` stops, or one of a package not installed, is logged in microseconds).
    """
    result = run_process([sys.executable, "-X", "importtime", "-m", "trainer.main", "--helpshort"],
                         tree=tree, log_prefix=log_prefix + "importtime")
    _require(result["returncode"] == 0, "the import profile failed", result)
    own: Dict[str, float] = {}
    modules: List[Tuple[float, str]] = []
    for line in result["stderr"].splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:"):].split("|"))
        package = name.split(".")[0]
        own[package] = own.get(package, 0.0) + int(self_us) / 1e6
        modules.append((int(self_us) / 1e6, name))
    modules.sort(reverse=True)
    return {"command": "python -X importtime -m trainer.main --helpshort",
            "total_s": sum(own.values()),
            "packages_by_own_s": sorted(own.items(), key=lambda item: -item[1])[:top],
            "modules_by_own_s": [(name, seconds) for seconds, name in modules[:top]],
            "loaded": sorted(name for name in ("sklearn", "matplotlib", "scipy", "pandas")
                             if own.get(name, 0.0) > 1e-3)}


# ------------------------------------------------------------------ medians and the report


def _median(values: List[float]) -> Optional[float]:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def medians(rounds: List[Dict[str, Any]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Per measure: median wall and CPU seconds (and the run's first step)."""
    out = {}
    for measure in MEASURES:
        out[measure] = {key: _median([r[measure][key] for r in rounds if measure in r])
                        for key in ("wall_s", "cpu_s")}
    out["run"]["first_step_s"] = _median([r["run"]["first_step_s"] for r in rounds])
    return out


def timing_medians(rounds: List[Dict[str, Any]], measure: str) -> Optional[Dict[str, Dict[str, float]]]:
    """Medians of the CLI's marks and of the phases between them (None when it logs no Timing line)."""
    marks = [r[measure]["timing"] for r in rounds if r[measure].get("timing")]
    if not marks:
        return None
    names = list(dict.fromkeys(name for m in marks for name in m))
    phases = [_phases(m) for m in marks]
    return {"marks": {name: _median([m.get(name) for m in marks]) for name in names},
            "phases": {name: _median([p.get(name) for p in phases]) for name in names}}


ROWS = (("import", "wall_s", "`python -c 'import trainer.main'`, wall"),
        ("import", "cpu_s", "`python -c 'import trainer.main'`, CPU"),
        ("help", "wall_s", "`--helpshort`, wall"),
        ("help", "cpu_s", "`--helpshort`, CPU"),
        ("run", "first_step_s", "run: launch to the first training step, wall"),
        ("run", "wall_s", "run: launch to exit, wall"),
        ("run", "cpu_s", "run: CPU"),
        ("rerun", "wall_s", "rerun on the finished run, wall"),
        ("rerun", "cpu_s", "rerun on the finished run, CPU"),
        ("evaluate", "wall_s", "`trainer.evaluate` on the finished run, wall"),
        ("evaluate", "cpu_s", "`trainer.evaluate` on the finished run, CPU"),
        ("predict", "wall_s", "`trainer.predict` over the new rows, wall"),
        ("predict", "cpu_s", "`trainer.predict` over the new rows, CPU"))


def ratios(results: Dict[str, Any], names: List[str]) -> Optional[Dict[str, Optional[float]]]:
    """With two trees: the second's over the first's per row, the median of the per-round ratios."""
    if len(names) != 2:
        return None
    first, second = (results[name]["rounds"] for name in names)
    out = {}
    for measure, key, _ in ROWS:
        out[f"{measure}.{key}"] = _median([b[measure][key] / a[measure][key] for a, b in zip(first, second)
                                           if measure in a and measure in b and a[measure][key]
                                           and b[measure][key] is not None])
    return out


def markdown(results: Dict[str, Any], names: List[str], ratio: Optional[Dict[str, Optional[float]]]) -> str:
    header = "| measure (median seconds) | " + " | ".join(names) + (
        f" | {names[1]}/{names[0]} |" if ratio else " |")
    lines = [header, "|---|" + "---:|" * (len(names) + (1 if ratio else 0))]
    for measure, key, label in ROWS:
        cells = [results[name]["medians"][measure][key] for name in names]
        row = f"| {label} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells)
        if ratio:
            value = ratio[f"{measure}.{key}"]
            row += " | " + ("-" if value is None else f"{value:.2f}x")
        lines.append(row + " |")
    for name in names:
        skipped = {r["serving_skipped"] for r in results[name]["rounds"] if r.get("serving_skipped")}
        if skipped:
            lines.append(f"\n{name}: evaluate and predict not timed ({'; '.join(sorted(skipped))}).")
        for measure in ("run", "rerun"):
            timing = results[name]["timing"][measure]
            if timing:
                phases = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in timing["phases"].items())
                lines.append(f"\n{name}, {measure}: seconds per phase, each named by the mark that ends it "
                             f"(the CLI's Timing line, medians): {phases}")
        profile = results[name].get("import_profile")
        if profile:
            packages = ", ".join(f"{package} {s:.2f}" for package, s in profile["packages_by_own_s"])
            modules = ", ".join(f"{module} {s:.2f}" for module, s in profile["modules_by_own_s"])
            loaded = ", ".join(profile["loaded"]) or "none"
            lines.append(f"\n{name}, `{profile['command']}`: {profile['total_s']:.2f} s of imports; "
                         f"own time by package: {packages}; by module: {modules}; "
                         f"loaded of sklearn/matplotlib/scipy/pandas: {loaded}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    trees = parse_trees(args.trees)
    names = list(trees)
    cli_args = shlex.split(args.cli_args)
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_startup-")
    os.makedirs(work, exist_ok=True)
    results: Dict[str, Any] = {name: {"tree": path, "rounds": []} for name, path in trees.items()}
    try:
        for index in range(args.rounds):
            order = names if index % 2 == 0 else names[::-1]
            for name in order:
                prefix = os.path.join(work, f"{name}-{index}-")
                model_dir = prefix + "run"
                record = time_tree(trees[name], model_dir, cli_args, prefix, args.predict_rows)
                results[name]["rounds"].append(record)
                print(f"round {index + 1}/{args.rounds} {name}: run {record['run']['wall_s']:.2f} s "
                      f"({record['run']['cpu_s']:.2f} CPU), rerun {record['rerun']['wall_s']:.2f} s "
                      f"({record['rerun']['cpu_s']:.2f} CPU)", file=sys.stderr, flush=True)
                shutil.rmtree(model_dir, ignore_errors=True)
        for name in names:
            rounds = results[name]["rounds"]
            results[name]["medians"] = medians(rounds)
            results[name]["timing"] = {m: timing_medians(rounds, m) for m in ("run", "rerun")}
            if args.importtime_top > 0:
                results[name]["import_profile"] = import_profile(
                    trees[name], args.importtime_top, os.path.join(work, f"{name}-"))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = ratios(results, names)
    report = {"rounds": args.rounds, "cli_args": cli_args, "trees": trees, "cpu_count": os.cpu_count(),
              "python": sys.version.split()[0], "results": results, "ratios": ratio,
              "measures": {"import": "python -c 'import trainer.main'",
                           "help": "python -m trainer.main --helpshort",
                           "run": "python -m trainer.main --model_dir=<fresh> " + " ".join(cli_args),
                           "rerun": "the same command again on the finished run directory",
                           "evaluate": "python -m trainer.evaluate --model_dir=<the run>",
                           "predict": f"python -m trainer.predict --model_dir=<the run> "
                                      f"--input=npz:<{args.predict_rows} rows> --output=<csv>"}}
    print(markdown(results, names, ratio))
    if args.json_out:
        with open(args.json_out, "w") as stream:
            json.dump(report, stream, indent=2)
    return report


if __name__ == "__main__":
    main()
