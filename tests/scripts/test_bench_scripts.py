"""Short runs of the benchmark scripts, checked against what they were asked to do.

No timing is asserted. Each run is checked against an oracle of its own: the step counts the
command line asked for, the formulas that turn reported steps, batch size and seconds into the
reported rates and ratios, and facts of the data and the decision rule the figures must obey.
"""

import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
needs_fashion_mnist = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(FASHION_MNIST_DIR, f)) for f in FASHION_MNIST_FILES),
    reason=f"Fashion-MNIST files absent from {FASHION_MNIST_DIR}")


def run_script(name, *args, cwd):
    """Runs scripts/<name> with `args` in `cwd`; returns its stdout (fails the test on a non-zero exit)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *map(str, args)],
                               capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


def load_script(name):
    """Imports scripts/<name> as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(SCRIPTS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ throughput

STEPS, ROUNDS = 4, 3
THROUGHPUT_METHODS = ("trainer", "keras_fit_spe1", "keras_fit_spe2", "bare")


def test_bench_throughput_counts_steps_and_derives_rates_from_them(tmp_path):
    json_out = tmp_path / "bench.json"
    out = run_script("bench_throughput.py", "--rounds", ROUNDS, "--steps", STEPS, "--steps_per_loop", 2,
                     "--dataset_batches", 2, "--mlp_batch_size", 32, "--cnn_batch_size", 16,
                     "--json_out", json_out, cwd=tmp_path)
    saved = json.loads(json_out.read_text())
    results, cores = saved["results"], saved["cpu_count"]
    assert [r["workload"] for r in results] == ["mlp", "cnn"]
    assert "| workload | batch | Trainer | Keras fit | bare loop | Trainer/Keras-fit | Trainer/bare |" in out
    for result in results:
        batch = result["batch_size"]
        assert (result["workload"], batch) in (("mlp", 32), ("cnn", 16))
        assert result["steps"] == STEPS and result["warmup_steps"] == STEPS
        assert result["keras_steps_per_execution"] == [1, 2]

        # Every counter of every method moved by exactly what was asked: a trace run and a
        # sizing run of the warm-up, then ROUNDS timed runs, STEPS steps each.
        assert sorted(result["steps_trained"]) == sorted(THROUGHPUT_METHODS)
        assert set(result["steps_trained"]["trainer"]) == {"optimizer.iterations", "trainer.global_step"}
        for name, counters in result["steps_trained"].items():
            assert counters and set(counters.values()) == {2 * STEPS + ROUNDS * STEPS}, (name, counters)

        # Same seeded start, same batches, same weighted loss: every method ends as far from it.
        start, moved = result["initial_weights_norm"], result["weight_displacement"]
        assert max(start.values()) == pytest.approx(min(start.values()), rel=1e-9)
        assert moved["bare"] > 0
        for name in THROUGHPUT_METHODS:
            assert moved[name] == pytest.approx(moved["bare"], rel=1e-3), (name, moved)

        # Rates from the reported steps, batch size and seconds; CPU time within wall x cores.
        assert len(result["rounds"]) == ROUNDS
        for record in result["rounds"]:
            for name in THROUGHPUT_METHODS:
                timing = record["timings"][name]
                assert timing["steps"] == STEPS
                assert 0 < timing["cpu_seconds"] <= timing["seconds"] * cores + 1e-3, timing
                examples = timing["steps"] * batch
                assert record["examples_per_second"][name] == pytest.approx(examples / timing["seconds"])
                assert record["examples_per_cpu_second"][name] == pytest.approx(
                    examples / timing["cpu_seconds"])
            assert record["other_cores"] == max(record["timings"][n]["other_cores"]
                                                for n in THROUGHPUT_METHODS)
            for unit in ("examples_per_second", "examples_per_cpu_second"):
                rates = record[unit]
                keras_fit = max(rates["keras_fit_spe1"], rates["keras_fit_spe2"])
                assert rates["keras_fit"] == keras_fit
                assert rates["trainer/keras_fit"] == pytest.approx(rates["trainer"] / keras_fit)
                assert rates["trainer/bare"] == pytest.approx(rates["trainer"] / rates["bare"])

        # Medians over the rounds, recomputed; the printed table and verdicts show them.
        for unit in ("examples_per_second", "examples_per_cpu_second"):
            for key, value in result["median"][unit].items():
                assert value == pytest.approx(statistics.median(r[unit][key] for r in result["rounds"]))
            m = result["median"][unit]
            assert (f"| {result['workload']} | {batch} | {m['trainer']:,.0f} | {m['keras_fit']:,.0f} | "
                    f"{m['bare']:,.0f} | {m['trainer/keras_fit']:.2f}x | {m['trainer/bare']:.2f}x |") in out
        m = result["median"]["examples_per_second"]
        for label, key in (("Trainer/Keras-fit", "trainer/keras_fit"), ("Trainer/bare", "trainer/bare")):
            found = re.search(rf"ratio {result['workload']} {label}: ([0-9.]+) \(target >= ([0-9.]+), "
                              r"(met|MISSED)\)", out)
            assert found, out
            value, target, verdict = float(found[1]), float(found[2]), found[3]
            assert value == pytest.approx(m[key], abs=5e-4)
            assert verdict == ("met" if m[key] >= target else "MISSED")


def test_bench_throughput_refuses_a_method_that_trains_less_than_asked():
    bench = load_script("bench_throughput.py")
    shape, factory = (8,), lambda: bench.build_mlp((8,), bench.NUM_CLASSES, hidden_units=(4,))
    args = bench.parse_args(["--steps_per_loop", "2"])
    dataset, weights = bench.make_dataset(shape, 8, 2, seed=0)  # 16 examples: every class present

    class TotalEpochsTrainer(bench.TrainerMethod):
        """The loop as written for the old `fit(epochs=total)`: a second call trains nothing."""

        def run(self, steps):
            self.trainer.fit(self.dataset, total_epochs=1, steps_per_epoch=steps)

    method = TotalEpochsTrainer(factory, dataset, weights, args)
    assert bench.timed(method, 2)["steps"] == 2
    refused = r"trainer was asked for 2 steps, but its counters moved by optimizer\.iterations 0, " \
              r"trainer\.global_step 0"
    with pytest.raises(bench.IncompleteWork, match=refused):
        bench.timed(method, 2)

    class OneStepShort(bench.Method):
        """A hand loop that stops one step early."""

        name = "short"

        def __init__(self):
            self.model = factory()
            self.optimizer = keras.optimizers.SGD(0.1)
            self.initial_weights = []

        def run(self, steps):
            for _ in range(steps - 1):
                self.optimizer.apply_gradients(
                    [(tf.zeros_like(v), v) for v in self.model.trainable_variables])

    with pytest.raises(bench.IncompleteWork, match="short was asked for 3 steps.*optimizer.iterations 2"):
        bench.timed(OneStepShort(), 3)


# ------------------------------------------------------------------------------ input pipelines

def test_bench_input_rates_follow_from_the_reported_counts(tmp_path):
    json_out = tmp_path / "input.json"
    seconds = 0.5
    out = run_script("bench_input.py", "--size_mb=1", "--rounds=1", f"--seconds={seconds}", "--formats=csv",
                     f"--json_out={json_out}", cwd=tmp_path)
    saved = json.loads(json_out.read_text())
    cores, batch = saved["cpu_count"], saved["batch_size"]
    trainer = saved["trainer"]
    (timing,) = trainer["rounds"]
    # Epochs of 200, 400, ... steps until one lasts seconds / 2; each counted by the Trainer's counters.
    assert timing["steps"] >= 200 and math.log2(timing["steps"] / 200).is_integer()
    assert timing["seconds"] >= seconds / 2 or timing["steps"] >= 100000
    assert 0 < timing["cpu_seconds"] <= timing["seconds"] * cores + 1e-3
    examples = timing["steps"] * batch
    assert timing["examples_per_second"] == pytest.approx(examples / timing["seconds"])
    assert timing["cpu_us_per_example"] == pytest.approx(timing["cpu_seconds"] / examples * 1e6)
    assert trainer["examples_per_second"] == timing["examples_per_second"]  # the median of one round
    assert (f"Trainer consumption (MLP 64-512-512-10, batch {batch}): "
            f"{trainer['examples_per_second']:,.0f} ex/s") in out

    csv = saved["formats"]["csv"]
    assert csv["bytes"] >= 1e6 and csv["rows"] > 0 and csv["rows"] % 20000 == 0  # whole blocks of rows
    assert sorted(csv["pipelines"]) == ["cached", "ordered", "scan", "shuffled"]
    for name, pipeline in csv["pipelines"].items():
        assert pipeline["examples_per_second"] > 0, name
        assert pipeline["over_trainer"] == pytest.approx(
            pipeline["examples_per_second"] / trainer["examples_per_second"])
        assert pipeline["over_trainer_by_cpu"] == pytest.approx(
            trainer["cpu_us_per_example"] / pipeline["cpu_us_per_example"])
        assert (f"{pipeline['examples_per_second']:>10,.0f} ex/s  {pipeline['cpu_us_per_example']:6.2f} "
                f"CPU-us/ex  {pipeline['over_trainer']:5.2f}x the Trainer's rate, "
                f"{pipeline['over_trainer_by_cpu']:5.2f}x by CPU cost") in out


# ------------------------------------------------------------------------------ quality

def _check_recall_summary(row, recall, target_class, digits):
    """The row's summary figures are those of its per-class recalls."""
    tolerance = 0.5 * 10 ** -digits if digits else 1e-12
    assert row["balanced_accuracy"] == pytest.approx(np.mean(recall), abs=tolerance)
    assert row["worst_recall"] == pytest.approx(min(recall), abs=tolerance)
    assert recall[row["worst_class"]] == min(recall)
    key = "rarest_recall" if "rarest_recall" in row else "target_recall"
    assert row[key] == pytest.approx(recall[target_class], abs=tolerance)


@needs_fashion_mnist
def test_bench_quality_rows_follow_from_the_data_and_the_decision_rule(tmp_path):
    results = tmp_path / "results.jsonl"
    markdown = tmp_path / "table.md"
    command = ["--epochs=1", "--seeds=0", "--imbalance_ratios=100",
               "--methods=keras_ce,cross_entropy,posthoc_la", "--max_train_examples=256",
               "--max_eval_examples=256", f"--results={results}", f"--markdown_out={markdown}"]
    out = run_script("bench_quality.py", *command, cwd=tmp_path)
    assert "| method | balanced accuracy | worst-class recall | class 9 recall | seeds |" in out
    assert markdown.read_text().strip() in out
    rows = {row["method"]: row for row in map(json.loads, results.read_text().splitlines())}
    assert sorted(rows) == ["cross_entropy", "keras_ce", "posthoc_la"]
    # The long-tailed pool: int(6000 * IR ** (-c / 9)) images of class c, all of them trained on.
    counts = [int(6000 * 100.0 ** (-c / 9)) for c in range(10)]
    for method, row in rows.items():
        assert (row["imbalance_ratio"], row["seed"], row["epochs"]) == (100.0, 0, 1)
        assert row["class_counts"] == counts and row["train_examples"] == sum(counts)
        assert row["train_steps"] == 1 * math.ceil(256 / 128), method  # epochs x batches of 128
        assert len(row["recall"]) == 10
        _check_recall_summary(row, row["recall"], target_class=9, digits=4)
        label = {"keras_ce": "Keras `fit`, cross-entropy", "cross_entropy": "Trainer, cross_entropy",
                 "posthoc_la": "Trainer, cross_entropy + post-hoc logit adjustment (tau 1)"}[method]
        assert (f"| {label} | {row['balanced_accuracy']:.3f} ± 0.000 | {row['worst_recall']:.3f} | "
                f"{row['rarest_recall']:.3f} | 1 |") in out
    # The Trainer's cross-entropy step is Keras's: same seed, same batches, same predictions.
    assert rows["cross_entropy"]["recall"] == rows["keras_ce"]["recall"]
    # Adding -log prior raises the rarest class's logit most and the commonest's least, so every
    # example argmax gave class 9 stays 9, and no example argmax did not give class 0 becomes 0.
    adjusted, plain = rows["posthoc_la"]["recall"], rows["cross_entropy"]["recall"]
    assert adjusted[9] >= plain[9] and adjusted[0] <= plain[0]
    assert rows["posthoc_la"]["train_steps"] == rows["cross_entropy"]["train_steps"]

    # A rerun with the same key trains nothing and prints the same table.
    rerun = run_script("bench_quality.py", *command, cwd=tmp_path)
    assert len(results.read_text().splitlines()) == 3
    assert markdown.read_text().strip() in rerun


# ------------------------------------------------------------------------------ recall target

@needs_fashion_mnist
def test_bench_recall_target_rows_follow_from_their_recalls(tmp_path):
    json_out = tmp_path / "rt.json"
    out = run_script("bench_recall_target.py", "--smoke", "--methods", "ce", "worst_class",
                     "--json_out", json_out, cwd=tmp_path)
    saved = json.loads(json_out.read_text())
    rows = {row["method"]: row for row in saved["rows"]}
    assert sorted(rows) == ["ce", "worst_class"]
    for method, row in rows.items():
        assert row["train_steps"] == 1 * (2000 // 128), method  # --smoke: 1 epoch of 2,000 examples
        _check_recall_summary(row, row["recall"], target_class=6, digits=0)
        for suffix in ("_offsets", "_offsets_unbounded"):
            assert row["worst_recall" + suffix] == pytest.approx(min(row["recall" + suffix]))
            assert row["balanced_accuracy" + suffix] == pytest.approx(np.mean(row["recall" + suffix]))
        assert (f"| {method} | {row['balanced_accuracy']:.3f} | {row['worst_recall']:.3f} "
                f"(class {row['worst_class']}) | {row['target_recall']:.3f} |") in out
    assert "calibrated_recall" in rows["ce"] and "calibrated_recall" not in rows["worst_class"]
    assert saved["table"] in out
