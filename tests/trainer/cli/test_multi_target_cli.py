"""Several recall targets from the command line: the flags' checks, the automatic folds, one run end to end.

Oracles: NumPy decisions from the saved offsets and recall counted on the test split against what the export
serves and what metrics.json and the end-of-run table report.
"""

import json
import os

import numpy as np
import pytest
from absl import flags

from cli_processes import run_cli
from trainer import decisions
from trainer.cli import build, decision_folds, report
from trainer.cli import config as config_lib
from trainer.export import load_serving_function

FLAGS = flags.FLAGS


def test_comma_lists_are_several_targets(parse):
    config = parse("--target_class=3,4", "--target_recall=0.9,0.8")
    recall = config.recall
    assert recall.target_class == (3, 4) and recall.target_recall == (0.9, 0.8)
    assert recall.targets == ((3, 0.9), (4, 0.8)) and recall.several_targets
    assert recall.calibration_kind == "multi_target" and recall.calibrate
    assert recall.monitor_key == "val_min_recall" and recall.single_target_class is None
    one = parse("--target_class=3", "--target_recall=0.9").recall  # one target: as before
    assert (one.target_class, one.target_recall, one.calibration_kind) == (3, 0.9, "target_recall")
    assert one.targets == ((3, 0.9),) and not one.several_targets and one.monitor_key == "val_recall/3"


@pytest.mark.parametrize("args, message", [
    (["--target_class=3,4", "--target_recall=0.9"],
     "--target_class=3,4 and --target_recall=0.9 must be comma lists of the same length, one recall per "
     "target class: got 2 class(es) and 1 recall(s)."),
    (["--target_class=3", "--target_recall=0.9,0.8,0.7"], "got 1 class(es) and 3 recall(s)"),
    (["--target_class=3,4"], "--target_recall=(not given) must be comma lists of the same length"),
    (["--target_class=3,4", "--target_recall=0.9,1.5"],
     "--target_recall must each be in (0.0, 1.0], got [1.5]"),
    (["--target_class=3,-1,-2", "--target_recall=0.9,0.8,0.7"], "got [-1, -2]"),
    (["--target_class=3,", "--target_recall=0.9,0.8"], "--target_class=3, has an empty item"),
    (["--target_class=3,4", "--target_recall=0.9,0.8", "--reweighting=recall_target"],
     "Drop --reweighting=recall_target: the operating point chosen after training"),
    (["--target_class=3,4", "--target_recall=0.9,0.8", "--reweighting=target_class"],
     "--reweighting=target_class up-weights one class, and --target_class=3,4 names 2"),
])
def test_bad_target_lists_are_named(parse, args, message):
    with pytest.raises(ValueError) as caught:
        parse(*args)
    assert message in str(caught.value)


def test_a_recall_that_is_no_number_is_named():
    FLAGS.unparse_flags()
    try:
        with pytest.raises(flags.IllegalFlagValueError, match=r"--target_recall=0.9,high,: not a number: "
                                                              r"'high', ''"):
            FLAGS(["trainer.main", "--target_recall=0.9,high,"])
    finally:
        FLAGS.unparse_flags()


def test_class_names_resolve_in_a_list(parse):
    config = parse("--target_class=cat,3", "--target_recall=0.9,0.8")
    names = ["ant", "bee", "cat", "dog"]
    assert config.with_class_names(names).recall.target_class == (2, 3)
    with pytest.raises(ValueError, match=r"--target_class=cat,2 names class\(es\) 2 more than once"):
        parse("--target_class=cat,2", "--target_recall=0.9,0.8").with_class_names(names)
    with pytest.raises(ValueError, match=r"--target_class=emu,cat,yak: emu, yak are not classes of the data "
                                         r"\(4 classes: "):
        parse("--target_class=emu,cat,yak", "--target_recall=0.9,0.8,0.7").with_class_names(names)
    with pytest.raises(ValueError, match=r"--target_class=cat,7 does not exist"):
        parse("--target_class=cat,7", "--target_recall=0.9,0.8").with_class_names(names)


def test_automatic_folds_cross_fit_when_any_target_cannot_be_shown(parse):
    recall = parse("--target_class=1,2", "--target_recall=0.9,0.8").recall
    # 0.9 at 90% needs 22 examples caught (0.9 ** 22 <= 0.1), 0.8 needs 11.
    assert decision_folds.choose_decision_folds(recall, [500, 22, 11]).folds == 0
    assert decision_folds.choose_decision_folds(recall, [500, 21, 11]).folds == 5
    short = decision_folds.choose_decision_folds(recall, [500, 22, 10])
    assert short.folds == 5 and "10 example(s) of class 2" in short.reason


ARGS = ("--dataset=synthetic", "--imbalance_ratio=10", "--epochs=3", "--batch_size=64", "--deterministic",
        "--seed=1", "--compare_baseline=false")


@pytest.fixture(scope="module")
def test_split():
    """The synthetic data's evaluation split as the run reads it (same flags and seed)."""
    FLAGS.unparse_flags()
    try:
        FLAGS(["trainer.main", *ARGS, "--model_dir=/tmp/unused"])
        bundle = build.load_bundle(config_lib.from_flags())
    finally:
        FLAGS.unparse_flags()
    features, labels = [], []
    for x, y in bundle.eval.dataset(256, shuffle=False, seed=1):
        features.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(features), np.concatenate(labels).reshape(-1).astype(np.int64)


def test_a_run_with_two_targets_serves_offsets_that_meet_them(tmp_path, test_split):
    model_dir = tmp_path / "run"
    result = run_cli(*ARGS, f"--model_dir={model_dir}", "--target_class=8,9", "--target_recall=0.9,0.8",
                     timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    point = decisions.load(str(model_dir))
    assert isinstance(point, decisions.MultiTargetPoint) and point.target_classes == (8, 9)
    offsets = np.asarray(point.class_offsets)
    assert np.all(offsets[:8] == 0) and np.all(offsets[8:] != 0)
    # The export decides argmax(logits + offsets), counted here in NumPy.
    features, labels = test_split
    serve, metadata = load_serving_function(os.path.join(model_dir, "export"))
    served = {key: value.numpy() for key, value in serve(features=features.astype(np.float32)).items()}
    np.testing.assert_array_equal(served["class_id"], np.argmax(served["logits"] + offsets, axis=1))
    assert metadata["operating_point"] == point.to_dict()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    chosen = metrics["operating_point"]
    assert chosen["kind"] == "multi_target_offsets" and chosen["conflict"] is None
    assert chosen["chosen_on"].startswith("the validation split")
    assert chosen["measured_on"].startswith("the eval split")
    for target, k, asked in zip(chosen["targets"], (8, 9), (0.9, 0.8)):
        recall = float(np.mean(served["class_id"][labels == k] == k))
        precision = float(np.mean(labels[served["class_id"] == k] == k))
        assert (target["target_class"], target["target_recall"], target["feasible"]) == (k, asked, True)
        assert target["eval_recall"] == pytest.approx(recall)
        assert target["eval_precision"] == pytest.approx(precision)
        assert metrics["recall"][k] == pytest.approx(recall)
        assert target["validation_recall"] == pytest.approx(asked, abs=0.05)  # the point estimate
        # The end-of-run table: the target's row with its served recall and precision and the target.
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"{k} "))
        cells = row.split()
        assert float(cells[2]) == pytest.approx(recall, abs=5e-5)
        assert float(cells[3]) == pytest.approx(precision, abs=5e-5)
        assert float(cells[-2]) == asked and cells[-1] == ("met" if recall >= asked else "missed")
    assert "target recall" in result.stdout
    assert f"logit offsets {offsets[8]:+.4g} on class 8 for recall 0.9" in metrics["decision"]


def test_a_conflict_is_reported_by_name_in_metrics_and_the_decision(parse, caplog):
    # Classes 2 and 3 nearly indistinguishable: recall 0.9 for both cannot be met together.
    rng = np.random.default_rng(0)
    means = 3.0 * np.eye(4)
    means[3] = 3.0 * (0.2 * np.eye(4)[3] + 0.95 * np.eye(4)[2])
    labels = np.repeat(np.arange(4), [300, 200, 150, 150])
    logits = rng.normal(size=(len(labels), 4)) + means[labels]
    recall = parse("--target_class=2,3", "--target_recall=0.9,0.9").recall
    with pytest.warns(UserWarning, match="cannot all be met together"):
        point = decisions.calibrate("multi_target", logits, labels, target_classes=[2, 3],
                                    target_recalls=[0.9, 0.9], confidence=recall.decision_confidence)
    names = ["ant", "bee", "cat", "dog"]
    argmax = report.argmax_metrics(logits, labels)
    payload = report.operating_point_report(point, recall, logits, labels, argmax, class_names=names)
    assert payload["conflict"].startswith("The recall targets cannot all be met together on the choosing "
                                          "data: class 2 (cat) cannot reach recall 0.9 (it reaches ")
    assert "class 3 (dog) cannot reach recall 0.9" in payload["conflict"]
    assert [t["feasible"] for t in payload["targets"]] == [False, False]
    served = point.decide(logits)
    for target in payload["targets"]:
        k = target["target_class"]
        assert target["eval_recall"] == pytest.approx(np.mean(served[labels == k] == k))
    assert any("cannot all be met together" in r.getMessage() for r in caplog.records)
    decision = report.describe_decision(point, names)
    assert "on class 2 (cat) for recall 0.9, served for" in decision and "conflict" in decision
