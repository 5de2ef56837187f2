"""`python -m trainer.predict` in fresh processes, on a model trained by `python -m trainer.main`.

The training file has a string category with empty cells, a numeric column with empty and 'NA'
cells and an ID column left out with --exclude_columns; the model has a target-recall operating
point (score columns). The oracle of the decisions is the training-time path: the same rows with
labels, loaded and encoded by `trainer.data.load_data` as the training run loaded them, through the
export's `serve_features` signature (what `trainer.evaluate` computes), compared with predict's
raw rows -> SavedModel encoder path.
"""

import csv
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cli_processes import run_cli
from trainer import data as data_lib
from trainer.cli import app
from trainer.cli import predict as predict_cli
from trainer.cli import train as train_cli
from trainer.cli.errors import EXIT_USAGE, exit_status_for
from trainer.data.schema import TabularSchema
from trainer.export import FEATURES_SIGNATURE, load_serving_function

NEW_ORDER = ["weight_kg", "note", "id", "color", "size"]  # another order, an extra column, no label


def write_table(path, n, seed, columns, unseen=False):
    """Rows whose class follows size and color; returns them as dicts."""
    rng = np.random.default_rng(seed)
    colors = ["red", "green", "blue", ""] + (["purple"] if unseen else [])
    color = rng.choice(colors, size=n)
    size = rng.normal(size=n)
    score = size + 1.5 * (color == "red") - 1.0 * (color == "blue") + 0.3 * rng.normal(size=n)
    label = np.where(score > 1.2, "high", np.where(score > -0.3, "mid", "low"))
    rows = []
    for i in range(n):
        cell = "" if i % 9 == 0 else ("NA" if i % 13 == 4 else f"{size[i]:.4f}")
        rows.append({"id": str(5000 + 7 * i), "color": color[i], "size": cell,
                     "weight_kg": f"{rng.normal():.3f}", "label": label[i],
                     "note": f'row {i}, "quoted"' if i % 5 == 0 else f"r{i}"})
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows([[row[c] for c in columns] for row in rows])
    return rows


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    write_table(root / "train.csv", 300, 0, ["id", "color", "size", "weight_kg", "label"])
    rows = write_table(root / "new.csv", 60, 1, NEW_ORDER, unseen=True)
    write_table(root / "new_labelled.csv", 60, 1, NEW_ORDER + ["label"], unseen=True)
    model_dir = str(root / "run")
    result = run_cli(f"--dataset=csv:{root}/train.csv", f"--eval_dataset=csv:{root}/new_labelled.csv",
                     "--exclude_columns=id", f"--model_dir={model_dir}", "--epochs=3", "--batch_size=64",
                     "--target_class=high", "--target_recall=0.8", "--decision_folds=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, model_dir, rows


@pytest.fixture(scope="module")
def runs(trained):
    """A good prediction and one on a file with bad numeric cells, run at the same time."""
    root, model_dir, _ = trained
    lines = (root / "new.csv").read_text().splitlines()  # weight_kg first, size last
    lines[3] = "abc," + lines[3].split(",", 1)[1]          # weight_kg, row 3
    lines[8] = lines[8].rsplit(",", 1)[0] + ",1.2.3"       # size, row 8
    lines[11] = "'7'," + lines[11].split(",", 1)[1]        # weight_kg, row 11
    (root / "bad.csv").write_text("\n".join(lines) + "\n")
    (root / "bad_out").mkdir()
    commands = {
        "good": [f"--model_dir={model_dir}", f"--input=csv:{root}/new.csv",
                 f"--output={root}/out/pred.csv", "--keep_columns=id,note"],
        "bad": [f"--model_dir={model_dir}", f"--input=csv:{root}/bad.csv",
                f"--output={root}/bad_out/pred.csv", "--keep_columns=id"],
    }
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_cli, *args, module="trainer.predict")
                   for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def oracle(root, model_dir):
    """Decisions and figures of `serve_features` on the labelled rows as the training encoded them."""
    serve, metadata = load_serving_function(os.path.join(model_dir, "export"), FEATURES_SIGNATURE)
    bundle = data_lib.load_data(
        f"csv:{root}/train.csv", eval_dataset=f"csv:{root}/new_labelled.csv", seed=0,
        num_classes=len(metadata["class_names"]), hold_out_validation=True,
        columns=data_lib.ColumnOptions(exclude_columns=("id",)))
    assert bundle.schema == TabularSchema.from_json(metadata["schema"]), "the training's encoding"
    parts = {key: [] for key in ("class_id", "probabilities", "decision_scores", "labels")}
    for features, labels in bundle.eval.dataset(16, shuffle=False, seed=0):
        served = serve(features=features)
        for key in ("class_id", "probabilities", "decision_scores"):
            parts[key].append(served[key].numpy())
        parts["labels"].append(labels.numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}, metadata


def test_predict_agrees_with_the_training_time_preprocessing(trained, runs):
    root, model_dir, _ = trained
    assert runs["good"].returncode == 0, runs["good"].stderr[-3000:]
    expected, metadata = oracle(root, model_dir)
    names = metadata["class_names"]
    assert metadata["operating_point"]["kind"] in ("threshold", "logit_offset")
    rows = read_csv(root / "out" / "pred.csv")
    class_id = np.array([int(r["class_id"]) for r in rows])
    np.testing.assert_array_equal(class_id, expected["class_id"])
    probabilities = np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows])
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-6)
    scores = np.array([[float(r[f"score_{n}"]) for n in names] for r in rows])
    np.testing.assert_allclose(scores, expected["decision_scores"], atol=1e-5)
    assert len(set(class_id.tolist())) > 1, "a model that decides more than one class"


def test_output_columns_probabilities_and_class_names(trained, runs):
    root, _, _ = trained
    with open(root / "out" / "pred.csv", newline="") as stream:
        header = next(csv.reader(stream))
    names = sorted(["high", "low", "mid"])
    assert header == (["id", "note", "class_name", "class_id"] + [f"probability_{n}" for n in names]
                      + [f"score_{n}" for n in names])
    rows = read_csv(root / "out" / "pred.csv")
    probabilities = np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert all(r["class_name"] == names[int(r["class_id"])] for r in rows), "names, not bytes"
    counts = {n: sum(r["class_name"] == n for r in rows) for n in names}
    assert (f"Wrote 60 rows to {root}/out/pred.csv" in runs["good"].stdout
            and "decided: " + ", ".join(f"{n} {counts[n]}" for n in names) in runs["good"].stdout)


def test_rows_keep_their_order_count_and_kept_columns(trained, runs):
    root, _, rows = trained
    out = read_csv(root / "out" / "pred.csv")
    assert len(out) == len(rows) == 60
    assert [(r["id"], r["note"]) for r in out] == [(r["id"], r["note"]) for r in rows]
    assert out[0]["note"] == 'row 0, "quoted"', "a cell with a comma and quotes comes back verbatim"


def test_bad_numeric_cells_exit_2_naming_every_column_and_write_nothing(trained, runs):
    root, _, _ = trained
    result = runs["bad"]
    assert result.returncode == EXIT_USAGE, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in result.stderr
    message = error[0]
    assert "column 'weight_kg' is numeric in the training data but has 2 cells" in message
    assert "row 3 (line 4), value 'abc'" in message
    assert "column 'size' is numeric in the training data but has 1 cell" in message
    assert "row 8 (line 9), value '1.2.3'" in message
    assert os.listdir(root / "bad_out") == [], "no output, no temporary file"


@pytest.mark.parametrize("columns, keep, flag, named", [
    (["id", "weight_kg", "note"], ("id",), "--input=", ["'color'", "'size'"]),
    (NEW_ORDER, ("id", "customer", "row_key"), "--keep_columns: ", ["'customer'", "'row_key'"]),
], ids=["missing feature columns", "unknown keep columns"])
def test_absent_columns_exit_2_naming_the_flag_and_every_column(trained, tmp_path, columns, keep, flag,
                                                                named):
    _, model_dir, _ = trained
    write_table(tmp_path / "in.csv", 5, 2, columns)
    config = predict_cli.PredictConfig(
        export_dir=os.path.join(model_dir, "export"), input=f"csv:{tmp_path}/in.csv",
        output=str(tmp_path / "out.csv"), keep_columns=keep, batch_size=256, feature_key="features",
        channels_first=None, refuse_missing=False)
    with pytest.raises(ValueError) as caught:
        predict_cli.run(config)
    status, message = exit_status_for(caught.value)
    assert status == EXIT_USAGE
    assert message.startswith("error: " + flag)
    for name in named:
        assert name in message
    assert sorted(os.listdir(tmp_path)) == ["in.csv"]


def test_help_lists_the_prediction_flags_and_leaves_training_help_alone():
    text = app.help_text(predict_cli.COMMAND)
    for flag in ("--input", "--output", "--keep_columns", "--batch_size", "--model_dir", "--export_dir",
                 "--feature_key", "score_<class>"):
        assert flag in text
    assert "  --allow_config_change:" not in text and "  --learning_rate:" not in text
    assert "  --keep_columns:" not in app.help_text(train_cli.COMMAND)
    assert "  --learning_rate:" in app.help_text(train_cli.COMMAND)
