"""Bad data and bad arguments of `load_data`: each raises `InputDataError` naming what is wrong.

The argument and its value, or the file, row, column and value; every bad file is written into `tmp_path`.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from trainer.checks import ArgumentError
from trainer.data import ColumnOptions, DataArgumentError, InputDataError, load_data, streaming

HEADER = "a,b,label\n"
GOOD_ROWS = "1,2,0\n3,4,1\n"

# name: (CSV text, load_data kwargs, fragments the message must contain)
CSV_CASES = {
    "missing_label_column": ("a,b,c\n1,2,3\n", {},
                             ["label_column='label' is not a column", "['a', 'b', 'c']"]),
    # A numeric column with a stray word and more distinct values than a vocabulary allows.
    "non_numeric": (HEADER + "".join(f"{i},{i},{i % 2}\n" for i in range(10)) + "5,abc,1\n",
                    {"columns": ColumnOptions(max_vocabulary=2)},
                    ["row 11", "line 12", "column 'b'", "'abc'", "not numbers", "more than 2 distinct"]),
    "nan_refused": (HEADER + GOOD_ROWS + "nan,6,1\n", {"columns": ColumnOptions(missing="error")},
                    ["column 'a'", "1 missing cells", "row 3", "missing='error'"]),
    "inf": (HEADER + GOOD_ROWS + "1,-inf,0\n", {}, ["row 3", "column 'b'", "-inf", "infinite"]),
    "negative_label": (HEADER + GOOD_ROWS + "5,6,-1\n", {}, ["negative", "row 3", "column 'label'", "'-1'"]),
    "label_out_of_range": (HEADER + GOOD_ROWS + "5,6,7\n", {"num_classes": 3},
                           ["num_classes=3", "out of range [0, 3)", "row 3", "'7'"]),
    "empty_file": ("", {}, ["empty file"]),
    "header_only": (HEADER, {}, ["no data rows"]),
    "ragged_short": (HEADER + GOOD_ROWS + "5,6\n", {}, ["ragged", "row 3", "2 fields", "header has 3"]),
    "ragged_long": (HEADER + "5,6,1,9\n", {}, ["ragged", "row 1", "4 fields"]),
    "missing_value": (HEADER + GOOD_ROWS + "5,,1\n", {"columns": ColumnOptions(missing="error")},
                      ["missing cells", "row 3", "column 'b'"]),
    "all_missing": ("a,b,label\n1,,0\n3,NA,1\n", {}, ["column 'b' is missing in every row"]),
    "blank_label": (HEADER + GOOD_ROWS + "5,6, \n", {}, ["empty label", "row 3"]),
    "too_many_string_classes": (HEADER + "1,2,x\n1,2,y\n", {"num_classes": 3},
                                ["num_classes=3 but", "['x', 'y']"]),
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_bad_csv(name, tmp_path):
    text, kwargs, fragments = CSV_CASES[name]
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    with pytest.raises(InputDataError) as info:
        load_data(f"csv:{path}", **kwargs)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_row_after_the_first_statistics_batch(tmp_path):
    n = streaming.STATS_BATCH + 100
    rows = ["1.0,2.0,0"] * n
    rows[n - 5] = "1.0,x7,1"
    path = tmp_path / "late.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    with pytest.raises(InputDataError, match=rf"row {n - 4} \(line {n - 3}\), column 'b', value 'x7'"):
        load_data(f"csv:{path}", columns=ColumnOptions(max_vocabulary=1))


def _example(features=None, label=None):
    feature = {}
    if features is not None:
        feature["features"] = features
    if label is not None:
        feature["label"] = label
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _floats(*v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=v))


def _ints(*v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=v))


TFRECORD_CASES = {
    "missing_label_key": (_example(_floats(1.0, 2.0)), ["label_key='label' is not a key", "row 3",
                                                        "['features']"]),
    "int_features": (_example(_ints(1, 2), _ints(0)), ["float_list", "row 3", "int64_list"]),
    "ragged": (_example(_floats(1.0, 2.0, 3.0), _ints(0)), ["ragged", "row 3", "3 values"]),
    "nan": (_example(_floats(1.0, float("nan")), _ints(0)), ["NaN", "row 3", "features[1]", "nan"]),
    "negative_label": (_example(_floats(1.0, 2.0), _ints(-2)), ["negative", "row 3", "'-2'"]),
    "float_label": (_example(_floats(1.0, 2.0), _floats(1.0)), ["int64", "row 3", "float_list"]),
}


@pytest.mark.parametrize("name", sorted(TFRECORD_CASES))
def test_bad_tfrecord(name, tmp_path):
    record, fragments = TFRECORD_CASES[name]
    path = tmp_path / f"{name}.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in [_example(_floats(1.0, 2.0), _ints(0))] * 2 + [record]:
            w.write(r)
    with pytest.raises(InputDataError) as info:
        load_data(f"tfrecord:{tmp_path}/*.tfrecord")
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_tfrecord_empty_corrupt_and_unmatched(tmp_path):
    empty = tmp_path / "empty.tfrecord"
    tf.io.TFRecordWriter(str(empty)).close()
    with pytest.raises(InputDataError, match="no records"):
        load_data(f"tfrecord:{empty}")
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(b"not a tfrecord" * 10)
    with pytest.raises(InputDataError, match=r"corrupt.tfrecord.*corrupted"):
        load_data(f"tfrecord:{corrupt}")
    with pytest.raises(InputDataError, match=r"no files match .*\*\.none"):
        load_data(f"tfrecord:{tmp_path}/*.none")


def test_bad_npz(tmp_path):
    np.savez(tmp_path / "no_y.npz", x=np.zeros((3, 2)))
    with pytest.raises(InputDataError, match=r"no_y.npz.*missing array\(s\) \['y'\]; it has \['x'\]"):
        load_data(f"npz:{tmp_path / 'no_y.npz'}")
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 2)), y=np.zeros(2, int))
    with pytest.raises(InputDataError, match=r"mismatch.npz.*x has 3 rows but y has 2"):
        load_data(f"npz:{tmp_path / 'mismatch.npz'}")
    np.savez(tmp_path / "nan.npz", x=np.array([[0.0, 1.0], [2.0, np.inf]]), y=np.zeros(2, int))
    with pytest.raises(InputDataError, match=r"nan.npz', row 2, column 1, value inf"):
        load_data(f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "neg.npz", x=np.zeros((3, 2)), y=np.array([0, -1, 0]))
    with pytest.raises(InputDataError, match=r"negative label.*neg.npz', row 2.*value -1"):
        load_data(f"npz:{tmp_path / 'neg.npz'}")
    np.savez(tmp_path / "range.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 4]))
    with pytest.raises(InputDataError, match=r"^num_classes=2, but label out of range \[0, 2\).*range.npz', "
                                             r"row 3.*value 4"):
        load_data(f"npz:{tmp_path / 'range.npz'}", num_classes=2)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 2)), y=np.zeros(0, int))
    with pytest.raises(InputDataError, match=r"empty.npz.*no examples"):
        load_data(f"npz:{tmp_path / 'empty.npz'}")
    with pytest.raises(InputDataError, match=r"not found: .*absent.npz"):
        load_data(f"npz:{tmp_path / 'absent.npz'}")


@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_eval_label_unseen_in_training(kind, tmp_path):
    if kind == "csv":
        (tmp_path / "train.csv").write_text("a,label\n1,cat\n2,dog\n")
        (tmp_path / "eval.csv").write_text("a,label\n1,cat\n2,emu\n")
        fragments = ["unseen in training", "eval.csv", "row 2", "'emu'"]
    else:
        np.savez(tmp_path / "train.npz", x=np.zeros((3, 1)), y=np.array([0, 2, 0]))
        np.savez(tmp_path / "eval.npz", x=np.zeros((3, 1)), y=np.array([0, 0, 1]))
        fragments = ["unseen in training", "eval.npz", "row 3", "value 1"]
    with pytest.raises(InputDataError) as info:
        load_data(f"{kind}:{tmp_path / ('train.' + kind)}",
                  eval_dataset=f"{kind}:{tmp_path / ('eval.' + kind)}")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("spec", ["parquet:x.parquet", "csv:", "mnist"])
def test_unknown_dataset_spec(spec):
    with pytest.raises(InputDataError, match=rf"^dataset={spec!r} is not a dataset; valid forms: synthetic, "
                                             r"fashion_mnist_lt, npz:PATH, csv:PATH, tfrecord:GLOB") as info:
        load_data(spec)
    assert (info.value.argument, info.value.value) == ("dataset", spec)
    with pytest.raises(InputDataError, match=r"^eval_dataset='nope' is not a dataset") as info:
        load_data("synthetic", eval_dataset="nope")
    assert (info.value.argument, info.value.value) == ("eval_dataset", "nope")


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.2", True])
def test_validation_split_out_of_range(value):
    expected = rf"^validation_split must be in \(0, 1\), got {re.escape(repr(value))}\.$"
    with pytest.raises(DataArgumentError, match=expected) as info:
        load_data("synthetic", validation_split=value)
    assert info.value.argument == "validation_split"
    assert info.value.value is value


def test_missing_csv_and_bad_flags(tmp_path):
    with pytest.raises(InputDataError, match=r"not found: .*nothing.csv"):
        load_data(f"csv:{tmp_path / 'nothing.csv'}")
    with pytest.raises(InputDataError, match=r"^num_classes must be a positive integer, got 0\."):
        load_data("synthetic", num_classes=0)
    with pytest.raises(InputDataError, match=r"^imbalance_ratio must be a finite number >= 1, got 0.5\."):
        load_data("synthetic", imbalance_ratio=0.5)
    with pytest.raises(InputDataError, match=r"^num_classes=3 but dataset synthetic has 10 classes"):
        load_data("synthetic", num_classes=3)
    (tmp_path / "one.csv").write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(InputDataError, match=r"^validation_split=0.2 holds out no examples of csv:.*one.csv"):
        load_data(f"csv:{tmp_path / 'one.csv'}")


# Errors about an argument name it first and carry it, so a caller (the command line) can rename it.

def _raised(call):
    with pytest.raises(InputDataError) as info:
        call()
    return info.value


def test_argument_errors_carry_the_argument_and_its_value(tmp_path):
    (tmp_path / "a.csv").write_text("a,b,c\n1,2,3\n")
    tfrecord = tmp_path / "r.tfrecord"
    with tf.io.TFRecordWriter(str(tfrecord)) as w:
        w.write(_example(_floats(1.0, 2.0), _ints(0)))
    np.savez(tmp_path / "big.npz", x=np.zeros((3, 1)), y=np.array([0, 1, 4]))
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 0]))
    wide = f"npz:{tmp_path / 'wide.npz'}"
    cases = [
        (lambda: load_data(f"csv:{tmp_path / 'a.csv'}", label_column="y"), "label_column", "y"),
        (lambda: load_data(f"tfrecord:{tfrecord}", feature_key="pixels"), "feature_key", "pixels"),
        (lambda: load_data(f"tfrecord:{tfrecord}", label_key="class"), "label_key", "class"),
        (lambda: load_data(f"npz:{tmp_path / 'big.npz'}", num_classes=2), "num_classes", 2),
        (lambda: load_data("synthetic", num_classes=2.5), "num_classes", 2.5),
        (lambda: load_data("fashion_mnist_lt", data_dir=str(tmp_path)), "data_dir", str(tmp_path)),
        (lambda: load_data("synthetic", imbalance_ratio=float("inf")), "imbalance_ratio", float("inf")),
        (lambda: load_data(f"npz:{tmp_path / 'big.npz'}", eval_dataset=wide), "eval_dataset", wide),
    ]
    for call, argument, value in cases:
        error = _raised(call)
        message = str(error)
        assert (error.argument, error.value) == (argument, value), message
        assert message.startswith(f"{argument}={value!r}") or message.startswith(f"{argument} must"), message
        assert repr(value) in message, message
        flagged = error.renamed(f"--{argument}")
        assert isinstance(flagged, InputDataError) and flagged.argument == f"--{argument}"
        assert str(flagged) == f"--{message}", (str(flagged), message)


def test_data_argument_error_is_both_kinds():
    error = _raised(lambda: load_data("synthetic", validation_split=2))
    assert isinstance(error, ArgumentError) and isinstance(error, DataArgumentError)
    assert (error.argument, error.value, error.requirement) == ("validation_split", 2, "must be in (0, 1)")
    flagged = error.renamed("--validation_split")
    assert isinstance(flagged, DataArgumentError)
    assert str(flagged) == "--validation_split must be in (0, 1), got 2."


def test_data_errors_without_an_argument_are_not_renamed(tmp_path):
    (tmp_path / "nan.csv").write_text("a,label\nnan,0\n")
    error = _raised(lambda: load_data(f"csv:{tmp_path / 'nan.csv'}"))
    assert error.argument is None and error.renamed("--anything") is error


def test_batch_size_must_be_a_positive_integer():
    bundle = load_data("synthetic")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataArgumentError, match=rf"^batch_size must be a positive integer, got {bad!r}"):
            bundle.train.dataset(bad, shuffle=False, seed=0)
