"""Tests of `trainer.prediction`: exported models over CSV, NPZ and TFRecord rows, in process.

The oracle of a table model is a NumPy encoding written here from the schema's definition
(one-hot with index 0 for unknown categories, the training mean for missing numbers plus a 0/1
missing input), fed to the Keras model; the decisions are the operating point's NumPy `decide`.
"""

import csv
import glob
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from small_models import small_mlp
from trainer.data.errors import InputDataError
from trainer.data.schema import (
    CATEGORICAL,
    DEFAULT_MISSING_VALUES,
    NUMERIC,
    ColumnSchema,
    TabularSchema,
    missing_tokens,
)
from trainer.decisions import TargetRecallPoint
from trainer.export import export_saved_model
from trainer.prediction import output_columns, predict_file

CLASSES = ["a", "b", "c"]
TOKENS = missing_tokens(DEFAULT_MISSING_VALUES)
SCHEMA = TabularSchema(
    columns=(ColumnSchema("color", CATEGORICAL, rows=20, missing=2, vocabulary=("red", "green", "")),
             ColumnSchema("size", NUMERIC, rows=20, missing=3, mean=0.5, variance=2.0),
             ColumnSchema("count", NUMERIC, rows=20, missing=0, mean=1.0, variance=1.0)),
    label_column="label", weight_column=None, missing_values=TOKENS,
    header=("id", "color", "size", "count", "label"))
POINT = TargetRecallPoint("threshold", 1, len(CLASSES), offset=0.8, threshold=float(1 / (1 + np.exp(0.8))),
                          target_recall=0.9, validation_recall=0.9, validation_precision=0.5)

# The input: columns in another order than the training's, no label, an extra free-text column.
HEADER = ["count", "note", "size", "color", "id"]
ROWS = [["2", 'said "hi", left', "1.5", "red", "7"],
        ["0", "", "", "green", "3"],
        ["-1.25", "x", "NA", "blue", "11"],        # an unseen category: the 'other' input
        ["4e-1", "y", " nan ", "", "5"],          # missing size (a spelling, padded); missing color
        ["3", "z", "-2", " green ", "9"],         # padded category
        ["1", "w", "N/A", "?", "1"]]


def encode(rows):
    """The NumPy oracle of the encoder: `[N, 7]` (color one-hot with 'other' first, size and its
    missing input, count)."""
    out = []
    for row in rows:
        cell = dict(zip(HEADER, row))
        color = cell["color"].strip()
        color = "" if color.lower() in TOKENS else color
        one_hot = [0.0] * 4
        one_hot[1 + ("red", "green", "").index(color) if color in ("red", "green", "") else 0] = 1.0
        size = cell["size"].strip()
        missing = size.lower() in TOKENS
        out.append(one_hot + [0.5 if missing else float(size), float(missing), float(cell["count"])])
    return np.asarray(out, np.float32)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as stream:
        csv.writer(stream).writerows([header] + rows)
    return str(path)


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


@pytest.fixture(scope="module")
def table_export(tmp_path_factory):
    """A model over the schema's 7 inputs, exported with the schema and a threshold point."""
    model = small_mlp(SCHEMA.width, len(CLASSES), hidden=8, seed=1)
    export_dir = str(tmp_path_factory.mktemp("table") / "export")
    export_saved_model(model, export_dir, input_shape=[SCHEMA.width], class_names=CLASSES,
                       operating_point=POINT, schema=SCHEMA)
    return model, export_dir


@pytest.fixture(scope="module")
def array_export(tmp_path_factory):
    """A model over 4 features, exported without schema or operating point."""
    model = small_mlp(4, len(CLASSES), hidden=8, seed=2)
    export_dir = str(tmp_path_factory.mktemp("arrays") / "export")
    export_saved_model(model, export_dir, input_shape=[4], class_names=CLASSES)
    return model, export_dir


def softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def threshold_scores(logits):
    """The documented scores of the threshold rule: logits after the offset, the target's column
    its log-odds against the other classes."""
    adjusted = logits.astype(np.float64) + POINT.offsets()
    others = np.delete(adjusted, POINT.target_class, axis=1)
    scores = adjusted.copy()
    scores[:, POINT.target_class] = adjusted[:, 1] - np.log(np.exp(others).sum(axis=1))
    return scores


def test_csv_rows_are_read_by_name_and_served_as_the_training_encodes_them(table_export, tmp_path):
    model, export_dir = table_export
    source = write_csv(tmp_path / "new.csv", HEADER, ROWS)
    output = str(tmp_path / "out" / "pred.csv")
    summary = predict_file(export_dir, f"csv:{source}", output, keep_columns=["id", "note"], batch_size=4)
    table = read_csv(output)
    header, rows = table[0], table[1:]
    assert header == output_columns(["id", "note"], CLASSES, with_scores=True)
    assert header[:5] == ["id", "note", "class_name", "class_id", "probability_a"]
    assert [r[:2] for r in rows] == [[row[4], row[1]] for row in ROWS], "kept verbatim, in order"
    logits = model(encode(ROWS)).numpy()
    expected = POINT.decide(logits)
    class_id = np.array([int(r[3]) for r in rows])
    np.testing.assert_array_equal(class_id, expected)
    assert [r[2] for r in rows] == [CLASSES[k] for k in expected]
    probabilities = np.array([[float(v) for v in r[4:7]] for r in rows])
    np.testing.assert_allclose(probabilities, softmax(logits), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    scores = np.array([[float(v) for v in r[7:10]] for r in rows])
    np.testing.assert_allclose(scores, threshold_scores(logits), atol=1e-5)
    target = scores[:, POINT.target_class] >= 0
    others = np.where(np.arange(3) == POINT.target_class, -np.inf, scores).argmax(axis=1)
    np.testing.assert_array_equal(np.where(target, POINT.target_class, others), class_id)
    assert summary.rows == len(ROWS)
    assert summary.class_counts == {n: int(np.sum(expected == k)) for k, n in enumerate(CLASSES)}
    assert os.listdir(os.path.dirname(output)) == ["pred.csv"], "no temporary file left"


def test_npz_output_holds_the_csv_output_s_values(table_export, tmp_path):
    _, export_dir = table_export
    source = write_csv(tmp_path / "new.csv", HEADER, ROWS)
    predict_file(export_dir, f"csv:{source}", str(tmp_path / "p.csv"), keep_columns=["id"])
    predict_file(export_dir, f"csv:{source}", str(tmp_path / "p.npz"), keep_columns=["id"])
    rows = read_csv(tmp_path / "p.csv")[1:]
    with np.load(tmp_path / "p.npz") as data:
        assert list(data["class_names"]) == CLASSES
        assert list(data["keep_columns"]) == ["id"]
        assert data["kept"][:, 0].tolist() == [r[0] for r in rows]
        assert data["class_name"].tolist() == [r[1] for r in rows]
        assert data["class_id"].tolist() == [int(r[2]) for r in rows]
        np.testing.assert_array_equal(data["probabilities"], np.array([r[3:6] for r in rows], np.float32))
        np.testing.assert_array_equal(data["decision_scores"], np.array([r[6:9] for r in rows], np.float32))


def test_every_bad_numeric_column_is_listed_and_nothing_is_written(table_export, tmp_path):
    _, export_dir = table_export
    rows = [list(r) for _ in range(3) for r in ROWS]  # 18 rows, batches of 4: problems in several batches
    rows[1][2] = "abc"        # size, row 2
    rows[9][2] = "1e999"      # size: a number, but not a finite float32
    rows[4][0] = "twelve"     # count, row 5
    source = write_csv(tmp_path / "bad.csv", HEADER, rows)
    output = tmp_path / "pred.csv"
    output.write_text("an older result\n")
    with pytest.raises(InputDataError) as caught:
        predict_file(export_dir, f"csv:{source}", str(output), batch_size=4)
    message = str(caught.value)
    assert "column 'size' is numeric in the training data but has 2 cells" in message
    assert "row 2 (line 3), value 'abc'" in message
    assert "column 'count' is numeric in the training data but has 1 cell" in message
    assert "row 5 (line 6), value 'twelve'" in message
    assert "'color'" not in message
    assert output.read_text() == "an older result\n", "a failed run leaves the old output alone"
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "pred.csv"], "no temporary file left"


@pytest.mark.parametrize("keep, header, argument, named", [
    ((), ["id", "note"], "input", ["'color'", "'size'", "'count'"]),
    (("id", "nope", "other"), HEADER, "keep_columns", ["'nope'", "'other'"]),
    (("class_id",), HEADER + ["class_id"], "keep_columns", ["'class_id'", "clash"]),
    (("id", "note", "id"), HEADER, "keep_columns", ["'id' given more than once"]),
], ids=["feature columns", "keep columns", "clash", "twice"])
def test_absent_columns_are_all_named_before_anything_is_written(table_export, tmp_path, keep, header,
                                                                 argument, named):
    _, export_dir = table_export
    source = write_csv(tmp_path / "new.csv", header, [[str(i) for i in range(len(header))]])
    with pytest.raises(InputDataError) as caught:
        predict_file(export_dir, f"csv:{source}", str(tmp_path / "out.csv"), keep_columns=keep)
    assert caught.value.argument == argument
    for name in named:
        assert name in str(caught.value)
    assert not (tmp_path / "out.csv").exists()
    assert sorted(os.listdir(tmp_path)) == ["new.csv"]


def test_a_ragged_row_is_named(table_export, tmp_path):
    _, export_dir = table_export
    rows = [list(r) for r in ROWS]
    rows[3] = rows[3][:4]
    source = write_csv(tmp_path / "new.csv", HEADER, rows)
    ragged = r"ragged row: .*row 4 \(line 5\) has 4 fields, the header has 5"
    with pytest.raises(InputDataError, match=ragged):
        predict_file(export_dir, f"csv:{source}", str(tmp_path / "out.csv"), batch_size=2)
    assert not (tmp_path / "out.csv").exists()


def test_missing_cells_are_refused_for_a_model_trained_to_refuse_them(table_export, tmp_path):
    _, export_dir = table_export
    source = write_csv(tmp_path / "new.csv", HEADER, ROWS)
    with pytest.raises(InputDataError) as caught:
        predict_file(export_dir, f"csv:{source}", str(tmp_path / "out.csv"), refuse_missing=True)
    message = str(caught.value)
    assert "column 'color' has 2 missing cells (first: file" in message and "row 4 (line 5)" in message
    assert "column 'size' has 4 missing cells" in message and "row 2 (line 3)" in message
    assert "'count'" not in message


@pytest.mark.parametrize("which, spec, words", [
    ("table", "npz:{tmp}/x.npz", "trained on a table; give its rows as csv:PATH"),
    ("arrays", "csv:{tmp}/x.csv", "not trained on a table"),
    ("arrays", "synthetic", "not a file of rows"),
])
def test_an_input_the_model_cannot_read_is_refused(table_export, array_export, tmp_path, which, spec, words):
    export_dir = (table_export if which == "table" else array_export)[1]
    with pytest.raises(InputDataError, match=words) as caught:
        predict_file(export_dir, spec.format(tmp=tmp_path), str(tmp_path / "out.csv"))
    assert caught.value.argument == "input"


def test_npz_rows_and_kept_arrays(array_export, tmp_path):
    model, export_dir = array_export
    x = np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32) * 2
    ids = np.array([f"r{i}" for i in range(11)])
    np.savez(tmp_path / "x.npz", x=x, id=ids, n=np.arange(11) * 10)
    predict_file(export_dir, f"npz:{tmp_path}/x.npz", str(tmp_path / "p.csv"), keep_columns=["id", "n"],
                 batch_size=3)
    table = read_csv(tmp_path / "p.csv")
    assert table[0] == ["id", "n", "class_name", "class_id"] + [f"probability_{c}" for c in CLASSES]
    rows = table[1:]
    logits = model(x).numpy()
    assert [r[:2] for r in rows] == [[f"r{i}", str(10 * i)] for i in range(11)]
    assert [int(r[3]) for r in rows] == logits.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array([r[4:] for r in rows], float), softmax(logits), atol=1e-6)


def test_npz_of_another_shape_or_with_nan_is_refused(array_export, tmp_path):
    _, export_dir = array_export
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 5), np.float32))
    with pytest.raises(InputDataError, match=r"has shape \(3, 5\) but the model takes rows of shape \(4,\)"):
        predict_file(export_dir, f"npz:{tmp_path}/wide.npz", str(tmp_path / "p.csv"))
    x = np.zeros((6, 4), np.float32)
    x[2, 1] = x[4, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, id=np.arange(5))
    with pytest.raises(InputDataError, match=r"2 rows of 'x' hold NaN or Inf \(first: .*row 3, column 1"):
        predict_file(export_dir, f"npz:{tmp_path}/nan.npz", str(tmp_path / "p.csv"))
    np.savez(tmp_path / "ids.npz", x=np.zeros((6, 4), np.float32), id=np.arange(5))
    with pytest.raises(InputDataError, match=r"keep_columns: array 'id' \(5,\)") as caught:
        predict_file(export_dir, f"npz:{tmp_path}/ids.npz", str(tmp_path / "p.csv"), keep_columns=["id"])
    assert caught.value.argument == "keep_columns"
    assert not (tmp_path / "p.csv").exists()


def test_image_npz_gets_its_channel_axis_as_in_training(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    export_dir = str(tmp_path / "export")
    export_saved_model(model, export_dir, input_shape=[4, 4, 1], class_names=CLASSES)
    x = np.random.default_rng(1).integers(0, 255, size=(5, 4, 4)).astype(np.uint8)
    np.savez(tmp_path / "img.npz", x=x)
    predict_file(export_dir, f"npz:{tmp_path}/img.npz", str(tmp_path / "p.csv"))
    rows = read_csv(tmp_path / "p.csv")[1:]
    expected = model(x[..., None].astype(np.float32)).numpy().argmax(axis=1)
    assert [int(r[1]) for r in rows] == expected.tolist()
    np.savez(tmp_path / "first.npz", x=x[:, None])
    with pytest.raises(InputDataError, match=r"looks channels-first .* np.transpose\(x, \(0, 2, 3, 1\)\)"):
        predict_file(export_dir, f"npz:{tmp_path}/first.npz", str(tmp_path / "p2.csv"))


def _example(features, key, n):
    feature = {"features": tf.train.Feature(float_list=tf.train.FloatList(value=features)),
               "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
               "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[n]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_rows_in_file_order_with_kept_keys(array_export, tmp_path):
    model, export_dir = array_export
    x = np.random.default_rng(4).normal(size=(9, 4)).astype(np.float32)
    for part, rows in (("b", range(5, 9)), ("a", range(5))):  # sorted file order: a then b
        with tf.io.TFRecordWriter(str(tmp_path / f"{part}.tfrecord")) as writer:
            for i in rows:
                writer.write(_example(x[i], f"k{i}", i))
    predict_file(export_dir, f"tfrecord:{tmp_path}/*.tfrecord", str(tmp_path / "p.csv"),
                 keep_columns=["key", "n"], batch_size=4)
    rows = read_csv(tmp_path / "p.csv")[1:]
    assert [r[:2] for r in rows] == [[f"k{i}", str(i)] for i in range(9)]
    assert [int(r[3]) for r in rows] == model(x).numpy().argmax(axis=1).tolist()
    with pytest.raises(InputDataError, match="feature_key='pixels' is not a key") as caught:
        predict_file(export_dir, f"tfrecord:{tmp_path}/*.tfrecord", str(tmp_path / "q.csv"),
                     feature_key="pixels")
    assert caught.value.argument == "feature_key"
    with pytest.raises(InputDataError, match="keep_columns: 'id' is not a key") as caught:
        predict_file(export_dir, f"tfrecord:{tmp_path}/*.tfrecord", str(tmp_path / "q.csv"),
                     keep_columns=["id"])
    assert not (tmp_path / "q.csv").exists()


def test_a_progress_line_and_the_output_arguments(array_export, tmp_path, caplog):
    _, export_dir = array_export
    np.savez(tmp_path / "x.npz", x=np.zeros((10, 4), np.float32))
    caplog.set_level(logging.INFO, logger="absl")
    predict_file(export_dir, f"npz:{tmp_path}/x.npz", str(tmp_path / "p.csv"), batch_size=4,
                 progress_seconds=0)
    assert [m for m in caplog.messages if m.startswith("predicted 4 rows (")]
    assert [m for m in caplog.messages if m.startswith("predicted 10 rows (") and m.endswith(" rows/s)")]
    with pytest.raises(ValueError, match="output must be a file name ending in .csv or .npz, got"):
        predict_file(export_dir, f"npz:{tmp_path}/x.npz", str(tmp_path / "p.txt"))
    with pytest.raises(ValueError, match="output must not be the input file"):
        predict_file(export_dir, f"npz:{tmp_path}/x.npz", str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict_file(export_dir, f"npz:{tmp_path}/x.npz", str(tmp_path / "p.csv"), batch_size=0)
    assert glob.glob(str(tmp_path / ".*")) == []
