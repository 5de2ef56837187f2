"""TensorBoard as a user sees it after two runs under one parent directory (real processes).

Plain cross-entropy and a recall target on named classes (`ant`, `bee`, `cat`), run side by side
under `runs/`; read back with TensorBoard's own multiplexer and the HParams plugin's parsing: one
experiment config whichever run TensorBoard picks, the settings that differ shown by default,
integers as integers, the session ends written, the operating point and the final figures as
scalars (checked against metrics.json's confusion matrix), the custom-scalars layout's multi-line
charts matching the tags written, class names in the tags, each run's data described.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api_pb2, backend_context
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cli_processes import REPO, cli_env
from trainer.reporting.history import read_history

NAMES = ("ant", "bee", "cat")
TARGET = 2
EPOCHS = 3


def write_csv(path, num_rows=1500, seed=0):
    """Three named classes, `cat` the rare one (about 10%), learnable from two features."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=num_rows, p=[0.6, 0.3, 0.1])
    features = rng.normal(size=(num_rows, 2)) + 1.2 * np.eye(3, 2)[labels] - 1.2 * (labels == 2)[:, None]
    lines = ["x0,x1,label"] + [f"{a:.4f},{b:.4f},{NAMES[k]}" for (a, b), k in zip(features, labels)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard")
    data = write_csv(root / "animals.csv")
    common = [f"--dataset=csv:{data}", "--label_column=label", f"--epochs={EPOCHS}", "--loss=cross_entropy",
              "--compare_baseline=false", "--export_dir=none", "--batch_size=128", "--steps_per_loop=50",
              "--confusion_matrix_every=2"]
    flags = {"ce": [], "rt": ["--reweighting=recall_target", "--target_class=cat", "--target_recall=0.8",
                              "--decision_folds=0"]}
    processes = {name: subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *common, f"--model_dir={root / 'runs' / name}", *extra],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, extra in flags.items()}  # both at once: two cores
    outputs = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-3000:]
        outputs[name] = stdout + stderr
    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"tensors": 0})
    multiplexer.AddRunsFromDirectory(str(root / "runs"))
    multiplexer.Reload()
    metrics = {name: json.loads((root / "runs" / name / "metrics.json").read_text()) for name in flags}
    return root / "runs", multiplexer, metrics, outputs


def _hparams(multiplexer):
    return multiplexer.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME)


def _last(multiplexer, run, tag):
    events = multiplexer.Tensors(run, tag)
    return events[-1].step, tf.make_ndarray(events[-1].tensor_proto)


def test_one_experiment_config_shows_what_differs(runs):
    _, multiplexer, _, _ = runs
    content = _hparams(multiplexer)
    configs = [hparams_metadata.parse_experiment_plugin_data(tags[hparams_metadata.EXPERIMENT_TAG])
               for tags in content.values() if hparams_metadata.EXPERIMENT_TAG in tags]
    assert len(configs) == 2
    for config in configs:
        config.ClearField("time_created_secs")
    assert configs[0] == configs[1], "whichever config TensorBoard picks, it is the same"
    experiment = configs[0]
    infos = {info.name: info for info in experiment.hparam_infos}
    # What the HParams view ticks by default: TensorBoard's own ordering, then its first five.
    backend_context._sort_and_reduce_to_hparams_limit(experiment, 1000)
    shown = [info.name for info in experiment.hparam_infos[:5]]
    assert {"loss", "reweighting", "target_class", "target_recall"} <= set(shown), shown
    assert infos["epochs"].type == api_pb2.DATA_TYPE_STRING  # integers as their digits
    assert infos["learning_rate"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["calibrate_probabilities"].type == api_pb2.DATA_TYPE_BOOL
    reweightings = [v.string_value for v in infos["reweighting"].domain_discrete.values]
    assert "recall_target" in reweightings and "none" in reweightings
    assert "auto" not in [v.string_value for v in infos["loss"].domain_discrete.values]
    assert [m.name.tag for m in experiment.metric_infos][:5] == [
        "final/balanced_accuracy", "final/min_recall", "final/target_recall", "final/target_precision",
        "final/macro_f1"]


def test_two_sessions_differ_in_the_recipe_and_both_ended(runs):
    _, multiplexer, _, _ = runs
    content = _hparams(multiplexer)
    sessions = {run: hparams_metadata.parse_session_start_info_plugin_data(
        tags[hparams_metadata.SESSION_START_INFO_TAG]) for run, tags in content.items()
        if hparams_metadata.SESSION_START_INFO_TAG in tags}
    assert set(sessions) == {"ce", "rt"}, "one session per run directory, none in train/ or eval/"
    ce, rt = sessions["ce"].hparams, sessions["rt"].hparams
    assert ce["reweighting"].string_value == "none" and rt["reweighting"].string_value == "recall_target"
    assert rt["target_class"].string_value == "2 (cat)" and "target_class" not in ce
    assert rt["target_recall"].number_value == pytest.approx(0.8) and "target_recall" not in ce
    assert ce["epochs"].string_value == str(EPOCHS) and ce["batch_size"].string_value == "128"
    assert ce["loss"].string_value == rt["loss"].string_value == "cross_entropy"
    assert "recall_target_mode" not in ce and rt["recall_target_adjust"].string_value == "weights"
    assert "gamma" not in ce and "tau" not in ce  # settings of losses not used are left out
    assert sessions["rt"].group_name.endswith("rt") and sessions["ce"].group_name.endswith("ce")
    for run in ("ce", "rt"):
        end = hparams_metadata.parse_session_end_info_plugin_data(
            content[run][hparams_metadata.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_SUCCESS


def test_final_scalars_and_the_operating_point(runs):
    runs_dir, multiplexer, metrics, _ = runs
    matrix = np.asarray(metrics["rt"]["confusion_matrix"], np.float64)  # the served decision's counts
    recall = matrix[TARGET, TARGET] / matrix[TARGET].sum()
    precision = matrix[TARGET, TARGET] / matrix[:, TARGET].sum()
    step, value = _last(multiplexer, "rt", "final/target_recall")
    assert float(value) == pytest.approx(recall, abs=1e-6)
    assert step == metrics["rt"]["step"]
    assert float(_last(multiplexer, "rt", "final/target_precision")[1]) == pytest.approx(precision, abs=1e-6)
    balanced = np.mean(np.diag(matrix) / matrix.sum(axis=1))
    assert float(_last(multiplexer, "rt", "final/balanced_accuracy")[1]) == pytest.approx(balanced, abs=1e-6)
    assert float(_last(multiplexer, "rt", "final/min_recall")[1]) == pytest.approx(
        np.min(np.diag(matrix) / matrix.sum(axis=1)), abs=1e-6)
    point = json.loads((runs_dir / "rt" / "operating_point.json").read_text())
    cut = "final/threshold" if point.get("threshold") is not None else "final/logit_offset"
    expected = point["threshold"] if cut == "final/threshold" else point["offset"]
    assert float(_last(multiplexer, "rt", cut)[1]) == pytest.approx(expected, rel=1e-6)
    text = _last(multiplexer, "rt", "final/decision")[1].item().decode()
    assert "class 2 (cat)" in text and f"{recall:.4f}" in text and "Chosen on" in text
    assert "final/target_recall" not in multiplexer.Runs()["ce"]["tensors"]  # no target, no column value


def test_class_names_in_tags_and_the_last_controller_update(runs):
    runs_dir, multiplexer, metrics, _ = runs
    tags = multiplexer.Runs()
    for k, name in enumerate(NAMES):
        assert f"recall/{k}_{name}" in tags["rt/eval"]["tensors"]
        assert f"f1/{k}_{name}" in tags["rt/eval"]["tensors"]
        assert f"pr_curve/{k}_{name}" in tags["rt/eval"]["tensors"]
        assert f"class_weight/{k}_{name}" in tags["rt/train"]["tensors"]
    assert not any(tag.endswith("/pr_curves") for tag in tags["rt/eval"]["tensors"])
    # The weights after the last epoch's update are the ones the run ended with.
    step, weight = _last(multiplexer, "rt/train", f"class_weight/{TARGET}_cat")
    assert step == metrics["rt"]["step"]
    assert float(weight) == pytest.approx(metrics["rt"]["final_class_weights"][TARGET], rel=1e-6)
    # The report's reader still finds every class's history.
    history = read_history(str(runs_dir / "rt"), list(NAMES))
    assert sorted(history.series["recall"]) == [0, 1, 2]
    assert history.series["class_weight"][TARGET][-1, 1] == pytest.approx(float(weight), rel=1e-6)
    assert len(history.series["recall"][TARGET]) == EPOCHS


def test_custom_scalars_layout_draws_every_class_in_one_chart(runs):
    _, multiplexer, _, _ = runs
    step, content = _last(multiplexer, "rt", custom_scalar_metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(content.item())
    charts = {chart.title: list(chart.multiline.tag)
              for category in layout.category for chart in category.chart}
    tags = multiplexer.Runs()

    def matched(title, run):
        return sorted(t for t in tags[run]["tensors"] if any(re.search(p, t) for p in charts[title]))

    assert matched("recall of every class", "rt/eval") == [f"recall/{k}_{n}" for k, n in enumerate(NAMES)]
    assert matched("class weights (after each epoch's update)", "rt/train") == [
        f"class_weight/{k}_{n}" for k, n in enumerate(NAMES)]
    assert matched("recall and precision of class 2 (cat)", "rt/eval") == ["precision/2_cat", "recall/2_cat"]
    assert matched("balanced accuracy and worst-class recall", "rt/eval") == [
        "overall/balanced_accuracy", "overall/min_recall"]


def test_each_run_says_what_data_it_is_and_the_image_cadence(runs):
    _, multiplexer, metrics, _ = runs
    for name, words in (("rt", "validation split"), ("ce", "eval split")):
        text = _last(multiplexer, f"{name}/eval", "run_description")[1].item().decode()
        assert metrics[name]["epoch_evaluations_on"] in text and words in text
        description = multiplexer.SummaryMetadata(
            f"{name}/eval", "overall/balanced_accuracy").summary_description
        assert metrics[name]["epoch_evaluations_on"] in description
    steps = [event.step for event in multiplexer.Tensors("rt/eval", "recall/0_ant")]
    images = multiplexer.Tensors("rt/eval", "overall/confusion_matrix")
    assert [event.step for event in images] == steps[1:], "after epoch 2 (every 2) and the last one"
    width, height, png = tf.make_ndarray(images[-1].tensor_proto)
    decoded = tf.io.decode_png(png).numpy()
    assert decoded.shape[:2] == (int(height), int(width)) and min(decoded.shape[:2]) > 200


def test_progress_line_shows_the_target_class_and_its_weight(runs):
    _, _, _, outputs = runs
    lines = [line for line in outputs["rt"].splitlines() if re.search(r"epoch \d/3 ", line)]
    assert len(lines) == EPOCHS, outputs["rt"][-3000:]
    for line in lines:
        assert "examples/s" in line and "| validation: balanced accuracy" in line
        assert re.search(r"class 2 \(cat\) recall [01]\.\d{4} \(target 0\.8\), weight [\d.]+", line), line
        assert re.search(r"worst class \d \((ant|bee|cat)\) recall", line), line
