"""Labels and class names: numeric order, integral floats as integers, `class_names`, the mapping.

Files are written by the tests; every expected class order is written out by hand or computed
from the raw values with plain Python (`float`, `sorted`), not with the code under test.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import DataWarning, InputDataError, load_data
from trainer.data.labels import (
    SHOWN_CLASSES,
    LabelSpace,
    canonical_label,
    class_index,
    describe_classes,
    sort_labels,
)


def collect(split):
    """All (features, labels) of a split, in file order."""
    xs, ys = [], []
    for x, y in split.dataset(64, shuffle=False, seed=0):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def write_csv(path, labels, num_features=2):
    """A CSV whose feature 0 is the row number and whose label cells are `labels` as written."""
    lines = [",".join([f"f{i}" for i in range(num_features)] + ["label"])]
    for row, label in enumerate(labels):
        lines.append(",".join([str(row)] + ["0.5"] * (num_features - 1) + [label]))
    path.write_text("\n".join(lines) + "\n")
    return f"csv:{path}"


def all_rows(spec, **kwargs):
    """A bundle whose training split is every row of `spec` (the same file is the eval data)."""
    return load_data(spec, eval_dataset=spec, **kwargs)


def test_canonical_labels():
    cases = {"2.0": "2", " 07": "7", "7e0": "7", "-0.0": "0", "+3": "3", "1.50": "1.5", ".5": "0.5",
             "1e-1": "0.1", "cat": "cat", " nan ": "nan", "1e999": "1e999", "": ""}
    assert {raw: canonical_label(raw) for raw in cases} == cases


def test_numbers_sort_by_value_then_text():
    assert sort_labels(["10.5", "b", "2.25", "A", "1.5", "3"]) == ["1.5", "2.25", "3", "10.5", "A", "b"]


@pytest.mark.parametrize("space", [LabelSpace("int", ["a", "b", "c", "d"]),
                                   LabelSpace("string", ["1.5", "2.25", "10.5", "x", "3"])])
def test_the_pipeline_lookup_agrees_with_index_of(space):
    raw = [" 2", "2.0", "1", "01", "2e0", "3.0", "-1", "4", "0.5", "1.5", "1.50", "15e-1", "10.5",
           "x", " x ", "y", "3", "+3", "nan", "1e999", ""]

    def expected(text):  # the oracle: by value for numbers, by name otherwise
        s = text.strip()
        try:
            value = float(s)
        except ValueError:
            value = None
        if space.mode == "int":
            ok = value is not None and np.isfinite(value) and value == int(value) and s != "nan"
            return int(value) if ok and 0 <= int(value) < len(space.names) else -1
        for i, name in enumerate(space.names):
            if s == name or (value is not None and np.isfinite(value) and s != "nan"
                             and name[0].isdigit() and float(name) == value):
                return i
        return -1

    got = space.to_indices_fn()(tf.constant(raw)).numpy().tolist()
    assert got == [expected(r) for r in raw]
    assert [-1 if space.index_of(canonical_label(r)) is None else space.index_of(canonical_label(r))
            for r in raw] == got


def test_float_labels_are_integer_classes_in_numeric_order(tmp_path):
    values = [float(v % 12) for v in range(240)]
    bundle = all_rows(write_csv(tmp_path / "f.csv", [repr(v) for v in values]))  # '0.0' ... '11.0'
    assert bundle.class_names == [str(i) for i in range(12)] and bundle.num_classes == 12
    x, y = collect(bundle.train)
    np.testing.assert_array_equal(y, np.array(values, dtype=np.int64)[x[:, 0].astype(int)])
    np.savez(tmp_path / "f.npz", x=np.zeros((240, 1)), y=np.array(values))
    npz = all_rows(f"npz:{tmp_path / 'f.npz'}")
    assert npz.class_names == bundle.class_names
    np.testing.assert_array_equal(collect(npz.train)[1], np.array(values, dtype=np.int64))


def test_non_integral_numbers_are_named_classes_in_numeric_order(tmp_path):
    written = ["10.5", "2.25", "1.5", "1.50", "2.250", "10.5"] * 20  # '1.50' is the number 1.5
    bundle = all_rows(write_csv(tmp_path / "n.csv", written))
    assert bundle.class_names == ["1.5", "2.25", "10.5"]
    x, y = collect(bundle.train)
    values = sorted({float(w) for w in written})
    expected = [values.index(float(written[r])) for r in x[:, 0].astype(int)]
    np.testing.assert_array_equal(y, expected)
    np.savez(tmp_path / "n.npz", x=np.zeros((120, 1)), y=np.array([float(w) for w in written]))
    assert all_rows(f"npz:{tmp_path / 'n.npz'}").class_names == ["1.5", "2.25", "10.5"]


def test_class_names_orders_string_labels(tmp_path):
    written = ["zebra", "ant", "mole", "ant"] * 15
    spec = write_csv(tmp_path / "s.csv", written)
    assert all_rows(spec).class_names == ["ant", "mole", "zebra"]
    bundle = all_rows(spec, class_names=["zebra", "ant", "mole"])
    assert bundle.class_names == ["zebra", "ant", "mole"]
    x, y = collect(bundle.train)
    np.testing.assert_array_equal(np.array(["zebra", "ant", "mole"])[y],
                                  np.array(written)[x[:, 0].astype(int)])
    assert "3 classes (0=zebra, 1=ant, 2=mole)" in bundle.description
    with pytest.raises(InputDataError) as caught:
        load_data(spec, class_names=["zebra", "antelope", "emu"])
    message = str(caught.value)
    assert caught.value.argument == "class_names" and message.startswith("class_names=")
    for fragment in ("['antelope', 'emu'] are not labels", "does not name label(s) ['ant', 'mole']"):
        assert fragment in message, message


def test_class_names_name_integer_classes(tmp_path):
    labels = [str(i % 2) for i in range(60)]
    np.savez(tmp_path / "b.npz", x=np.arange(60, dtype=np.float32)[:, None], y=np.arange(60) % 2)
    for spec in (write_csv(tmp_path / "b.csv", labels), f"npz:{tmp_path / 'b.npz'}"):
        bundle = all_rows(spec, class_names=["benign", "malignant"])
        assert bundle.class_names == ["benign", "malignant"]
        x, y = collect(bundle.train)
        np.testing.assert_array_equal(y, x[:, 0].astype(int) % 2)  # label k is still class k
        assert "2 classes (0=benign, 1=malignant)" in bundle.description
        assert "classes (" not in all_rows(spec).description  # names that are the indices
        for names, fragment in ((["benign"], "has 1 names but the integer labels"),
                                (["1", "0"], "not '1' at position 0, '0' at position 1"),
                                (["a", "a"], "repeats ['a']")):
            with pytest.raises(InputDataError, match="^class_names=") as caught:
                load_data(spec, class_names=names)
            assert fragment in str(caught.value) and caught.value.argument == "class_names"


def test_class_names_do_not_move_the_split(tmp_path):
    """The split seeds from the labels, so naming integer classes keeps every row where it was."""
    labels = [str(i % 3) for i in range(300)]
    spec = write_csv(tmp_path / "c.csv", labels)
    plain, named = load_data(spec), load_data(spec, class_names=["a", "b", "c"])
    for split in ("train", "validation", "eval"):
        np.testing.assert_array_equal(collect(getattr(plain, split))[0],
                                      collect(getattr(named, split))[0])


def test_an_eval_file_uses_the_training_classes(tmp_path):
    train = write_csv(tmp_path / "t.csv", ["b", "a", "c"] * 10)
    evaluation = write_csv(tmp_path / "e.csv", ["c", "c", "a"])
    bundle = load_data(train, eval_dataset=evaluation, class_names=["c", "b", "a"])
    assert bundle.class_names == ["c", "b", "a"]
    np.testing.assert_array_equal(collect(bundle.eval)[1], [0, 0, 2])


def test_class_index_takes_a_name_or_an_index():
    assert class_index("malignant", ["benign", "malignant"]) == 1
    assert class_index("1", ["benign", "malignant"]) == 1
    assert class_index(" 1.0", ["benign", "malignant"]) == 1
    assert class_index("2", ["benign", "malignant"]) is None
    assert class_index("fraud", ["benign", "malignant"]) is None
    # A name wins over an index: '2.5' is the class of that name, '1' is class 1.
    assert class_index("2.5", ["1.5", "2.5", "10.5"]) == 1
    assert class_index("2.50", ["1.5", "2.5", "10.5"]) == 1
    assert class_index("1", ["1.5", "2.5", "10.5"]) == 1
    assert class_index("0", ["other", "1", "0"]) == 2


def test_the_description_abbreviates_many_classes():
    names = [f"c{i}" for i in range(30)]
    text = describe_classes(names)
    assert text.startswith("0=c0, 1=c1, ") and f"{SHOWN_CLASSES - 1}=c{SHOWN_CLASSES - 1}, ... 29=c29" in text
    assert f"{SHOWN_CLASSES}=c{SHOWN_CLASSES}" not in text
    assert describe_classes(["0", "1", "2"]) == ""


def test_bad_labels_are_each_listed(tmp_path):
    np.savez(tmp_path / "nan.npz", x=np.zeros((4, 1)), y=np.array([0.0, np.nan, 1.0, np.inf]))
    with pytest.raises(InputDataError, match=r"not a finite number.*row 2.*value nan.*row 4.*value inf"):
        load_data(f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "neg.npz", x=np.zeros((4, 1)), y=np.array([0, -1, 1, -3]))
    with pytest.raises(InputDataError, match=r"negative label.*row 2.*value -1.*row 4.*value -3"):
        load_data(f"npz:{tmp_path / 'neg.npz'}")
    with pytest.raises(InputDataError, match=r"too large for a class index.*value '1000000'.*is 'label'"):
        load_data(write_csv(tmp_path / "id.csv", ["0", "1", "1e6", "1"]))


@pytest.mark.parametrize("kind", ["csv", "npz", "tfrecord"])
def test_integer_codes_with_gaps_are_the_classes_in_numeric_order(tmp_path, kind):
    # glass.csv's codes: 1, 2, 3, 5, 6, 7 (no 0, no 4).
    codes = [7, 1, 2, 3, 5, 6, 1, 2, 1, 10] * 6
    if kind == "csv":
        spec = write_csv(tmp_path / "gaps.csv", [str(c) for c in codes])
    elif kind == "tfrecord":
        from tests.trainer.data.test_data import write_tfrecord

        write_tfrecord(tmp_path / "gaps.tfrecord", np.zeros((len(codes), 2), np.float32), np.array(codes))
        spec = f"tfrecord:{tmp_path / 'gaps.tfrecord'}"
    else:
        np.savez(tmp_path / "gaps.npz", x=np.zeros((len(codes), 2), np.float32), y=np.array(codes))
        spec = f"npz:{tmp_path / 'gaps.npz'}"
    with pytest.warns(DataWarning, match=r"are not 0\.\.6 \(no row has 0, 4, 8 and 9\).*0=1, 1=2, 2=3, 3=5, "
                                         r"4=6, 5=7, 6=10.*--num_classes=11 keeps"):
        bundle = load_data(spec)
    assert bundle.class_names == ["1", "2", "3", "5", "6", "7", "10"]
    assert class_index("5", bundle.class_names) == 3 and class_index(10, bundle.class_names) == 6
    labels = np.concatenate([b[1].numpy() for split in (bundle.train, bundle.validation, bundle.eval)
                             for b in split.dataset(64, shuffle=False, seed=0)])
    order = sorted(set(codes))
    assert np.bincount(labels, minlength=7).tolist() == [codes.count(c) for c in order]  # numeric order
    # num_classes keeps the codes as indices (the absent ones as classes without rows).
    kept = load_data(spec, num_classes=11)
    assert kept.num_classes == 11 and kept.class_names[7] == "7"
    # Codes 0..K-1 stay indices, with no warning.
    np.savez(tmp_path / "plain.npz", x=np.zeros((30, 2), np.float32), y=np.arange(30) % 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert load_data(f"npz:{tmp_path / 'plain.npz'}").class_names == ["0", "1", "2"]
