"""scripts/bench_gpu.py: a smoke run on the CPU, checked against what it was asked to do.

No timing is asserted. Oracles: the step counts the command line implies (one warm-up run and
the rounds, `--steps` each), the formulas that turn steps, batch size and seconds into rates and
ratios, the optimizer each policy needs (a LossScaleOptimizer for mixed_float16, plain Adam for
float32), and the weights: a Trainer and Keras `fit` at the same setting start from the same
seeded weights, see the same batches and minimise the same weighted loss, so they move equally far.
The step-count check is tested on sides that train a step short, and on float16 steps that the
loss scale skipped (not missing work: counted apart from `optimizer.iterations`).
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "bench_gpu.py")
SETTINGS = ["float32/plain", "float32/xla", "mixed_float16/plain", "mixed_float16/xla"]
SIDES = [f"{side} {setting}" for setting in SETTINGS for side in ("trainer", "keras_fit")]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_smoke_counts_steps_and_reports_the_grid(tmp_path):
    json_out = tmp_path / "gpu.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    completed = subprocess.run([sys.executable, SCRIPT, "--smoke", "--workloads", "cnn",
                                "--json_out", str(json_out)], capture_output=True, text=True,
                               timeout=300, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    out, report = completed.stdout, json.loads(json_out.read_text())
    assert isinstance(report["gpus"], list) and isinstance(report["gpu_device_name"], str)
    assert out.splitlines()[0].startswith("GPU: ")
    (result,) = report["results"]
    steps, batch = result["steps"], result["batch_size"]
    assert (result["workload"], steps, batch, result["warmup_runs"]) == ("cnn", 2, 8, 1)  # --smoke
    assert result["settings"] == SETTINGS and list(result["sides"]) == SIDES
    assert result["global_policy_after_building"] == "float32"

    for name, facts in result["sides"].items():
        side, setting = name.split(" ")
        policy, way = setting.split("/")
        # One warm-up run and one round, `steps` each: every counter moved by exactly that.
        expected = {"optimizer.iterations + loss_scale_skips": 2 * steps}
        if side == "trainer":
            expected["trainer.global_step"] = 2 * steps
        assert facts["step_counts"] == expected, name
        assert facts["optimizer.iterations"] + facts["loss_scale_skips"] == 2 * steps
        assert facts["jit_applied"] is facts["jit_compile"] is (way == "xla"), name
        assert facts["policy"] == policy and facts["logits_dtype"] == "float32"
        if policy == "mixed_float16":
            assert facts["optimizer"].endswith("LossScaleOptimizer"), name
            assert facts["inner_optimizer"] == "Adam" and facts["compute_dtype"] == "float16"
            assert facts["loss_scale"] > 0
        else:
            assert (facts["optimizer"], facts["compute_dtype"]) == ("Adam", "float32")
            assert facts["loss_scale"] is None

    # Same seeded start, same batches, same weighted loss: the two sides of a setting move equally far.
    moved = {name: facts["weight_displacement"] for name, facts in result["sides"].items()}
    assert min(moved.values()) > 0
    for setting in SETTINGS:
        assert moved[f"trainer {setting}"] == pytest.approx(moved[f"keras_fit {setting}"], rel=1e-3), setting
    assert moved["trainer float32/xla"] == pytest.approx(moved["trainer float32/plain"], rel=1e-3)

    (record,) = result["rounds"]
    for unit, key in (("examples_per_second", "seconds"), ("examples_per_cpu_second", "cpu_seconds")):
        rates = record[unit]
        for name in SIDES:
            timing = record["timings"][name]
            assert timing["steps"] == steps
            assert rates[name] == pytest.approx(steps * batch / timing[key])
        for setting in SETTINGS:
            assert rates[f"trainer/keras_fit {setting}"] == pytest.approx(
                rates[f"trainer {setting}"] / rates[f"keras_fit {setting}"])
            for side in ("trainer", "keras_fit"):
                assert rates[f"{side} {setting} over float32/plain"] == pytest.approx(
                    rates[f"{side} {setting}"] / rates[f"{side} float32/plain"])
        for name, value in result["median"][unit].items():
            assert value == pytest.approx(statistics.median(r[unit][name] for r in result["rounds"]))

    m = result["median"]["examples_per_second"]
    for setting in SETTINGS:
        policy, way = setting.split("/")
        row = (f"| cnn | 8 | {policy} | {'on' if way == 'xla' else 'off'} | {m[f'trainer {setting}']:,.0f} | "
               f"{m[f'keras_fit {setting}']:,.0f} | {m[f'trainer/keras_fit {setting}']:.2f}x | "
               f"{m[f'trainer {setting} over float32/plain']:.2f}x | "
               f"{m[f'keras_fit {setting} over float32/plain']:.2f}x |")
        assert row in out, row
    assert "| cnn | keras_fit mixed_float16/xla | CountingLossScaleOptimizer | True | float16 |" in out


def _tiny(bench):
    args = bench.parse_args(["--steps_per_loop", "2"])
    dataset, weights = bench.make_dataset((10, 10, 1), 8, 2, seed=0)  # 16 examples: every class present
    return (lambda: bench.build_cnn((10, 10, 1), bench.NUM_CLASSES)), dataset, weights, args


def test_bench_gpu_refuses_a_side_that_trains_less_or_not_the_setting_it_claims():
    bench = load_script()
    factory, dataset, weights, args = _tiny(bench)

    class ShortTrainer(bench.TrainerSide):
        def run(self, steps):
            super().run(steps - 1)

    class ShortKeras(bench.KerasFitSide):
        def run(self, steps):
            super().run(steps - 1)

    trainer = ShortTrainer(factory, dataset, weights, args, "float32", False)
    with pytest.raises(bench.IncompleteWork, match=r"trainer float32/plain was asked for 3 steps, but its "
                       r"counters moved by trainer\.global_step 2, optimizer\.iterations \+ "
                       r"loss_scale_skips 2"):
        bench.timed(trainer, 3)
    keras_fit = ShortKeras(factory, dataset, weights, args, "float32", False)
    with pytest.raises(bench.IncompleteWork, match=r"keras_fit float32/plain was asked for 3 steps.*"
                       r"optimizer\.iterations \+ loss_scale_skips 2"):
        bench.timed(keras_fit, 3)

    plain = bench.KerasFitSide(factory, dataset, weights, args, "float32", False)
    assert bench.timed(plain, 2)["steps"] == 2
    bench.check_setting(plain)
    plain.jit_compile = True  # claims XLA, runs without it
    with pytest.raises(bench.IncompleteWork, match="jit_compile=True but runs with jit_compile=False"):
        bench.check_setting(plain)


def test_bench_gpu_counts_float16_steps_the_loss_scale_skipped():
    bench = load_script()
    factory, dataset, weights, args = _tiny(bench)
    huge = 2.0 ** 60  # float16 gradients overflow at this scale: each step is skipped, the scale halved
    sides = [bench.TrainerSide(factory, dataset, weights, args, "mixed_float16", False,
                               optimizer=lambda: keras.optimizers.LossScaleOptimizer(
                                   keras.optimizers.Adam(), initial_scale=huge)),
             bench.KerasFitSide(factory, dataset, weights, args, "mixed_float16", False, initial_scale=huge)]
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    for side in sides:
        timing = bench.timed(side, 2)
        assert keras.mixed_precision.global_policy().name == "float32"
        facts = side.facts()
        assert timing["loss_scale_skips"] == facts["loss_scale_skips"] == 2, side.name
        assert facts["optimizer.iterations"] == 0 and facts["loss_scale"] == huge / 4
        assert facts["compute_dtype"] == "float16" and facts["optimizer"].endswith("LossScaleOptimizer")
        assert facts["weight_displacement"] == 0.0


def test_bench_gpu_resnet_computes_in_float16_with_float32_logits():
    bench = load_script()
    with bench.dtype_policy("mixed_float16"):
        model = bench.build_resnet((8, 8, 3), 10, width=4, blocks_per_stage=2)
    assert keras.mixed_precision.global_policy().name == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    # A stem, two per block, and a projection at the first block of stages 2 and 3.
    assert (len(convs), len(adds)) == (1 + 2 * 6 + 2, 6)
    assert {layer.compute_dtype for layer in convs} == {"float16"}
    assert model.output.dtype == "float32" and tuple(model.output.shape) == (None, 10)
    assert [c.filters for c in convs][-1] == 16  # width x 4 in the last stage


def test_bench_gpu_without_a_gpu_stops_with_status_2(capsys):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    assert load_script().main(["--workloads", "cnn"]) == 2
    assert "No GPU found" in capsys.readouterr().err
