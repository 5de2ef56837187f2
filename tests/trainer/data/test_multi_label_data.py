"""Multi-label data (`trainer.data.load_multi_label_data`): label cells, features, stratified splits, errors.

Oracles: the label matrix and counts written by NumPy; the rows of the three splits are the file's
rows, each once; every label's validation and test positives near the split fractions.
"""

import csv

import numpy as np
import pytest

from trainer.data import ColumnOptions, InputDataError, load_multi_label_data
from trainer.data.multi_label import label_value_counts, strata

TRUE_SPELLINGS = ("1", "1.0", "TRUE", "true", " 1 ")
FALSE_SPELLINGS = ("0", "0.0", "false", "False", "-0")


def make_table(n=1000, seed=0):
    """Features (two numbers, a category, an ID), three labels of different rarity."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = np.stack([x[:, 0] > 0.3, (x[:, 1] > 0.8) | (colour == "red"), x[:, 0] + x[:, 1] > 2.3],
                 axis=1).astype(np.int64)
    return x, colour, y


def write_table(path, x, colour, y, *, names=("a", "b", "c"), spell=True, extra=None):
    rng = np.random.default_rng(1)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["row_id", "f0", "f1", "colour", *names])
        for i in range(len(x)):
            cells = [(rng.choice(TRUE_SPELLINGS) if v else rng.choice(FALSE_SPELLINGS)) if spell else str(v)
                     for v in y[i]]
            writer.writerow([f"r{i}", f"{x[i, 0]:.6f}", f"{x[i, 1]:.6f}", colour[i], *cells])
        for row in extra or ():
            writer.writerow(row)
    return str(path)


def rows(split):
    xs, ys = [], []
    for batch in split.dataset(256, shuffle=False, seed=0):
        xs.append(batch[0].numpy())
        ys.append(batch[1].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_csv_labels_splits_and_features(tmp_path):
    x, colour, y = make_table()
    path = write_table(tmp_path / "t.csv", x, colour, y)
    bundle = load_multi_label_data(f"csv:{path}", label_columns=["a", "b", "c"],
                                   columns=ColumnOptions(exclude_columns=("row_id",)),
                                   validation_split=0.2, test_split=0.2, seed=3)
    # No label column is a feature; the schema says which columns are the labels.
    assert bundle.schema.feature_names == ["f0", "f1", "colour"]
    assert bundle.schema.label_columns == ["a", "b", "c"] and bundle.schema.excluded() == ["row_id"]
    assert bundle.label_names == ["a", "b", "c"]
    assert bundle.class_names == ["not a", "a", "not b", "b", "not c", "c"]
    assert bundle.num_classes == 6
    splits = [bundle.train, bundle.validation, bundle.eval]
    # Every row once: the label counts of the three splits add up to NumPy's count of the file.
    labels = {s.name: rows(s)[1] for s in splits}
    total = sum(label_value_counts(v) for v in labels.values())
    np.testing.assert_array_equal(total, np.stack([len(y) - y.sum(0), y.sum(0)], 1).reshape(-1))
    assert sum(s.num_examples for s in splits) == len(y)
    for split in splits:
        np.testing.assert_array_equal(split.class_counts, label_value_counts(labels[split.name]))
        assert labels[split.name].shape[1] == 3 and labels[split.name].dtype == np.int32
    # Each label's positives: about 20% in validation and in test (the rarest label exactly, +-1).
    for j in range(3):
        positives = int(y[:, j].sum())
        for split in (bundle.validation, bundle.eval):
            held = int(split.class_counts[2 * j + 1])
            assert abs(held - 0.2 * positives) <= max(2, 0.15 * 0.2 * positives), (j, split.name, held)
    rarest = int(np.argmin(y.sum(0)))
    assert abs(bundle.validation.class_counts[2 * rarest + 1] - 0.2 * y[:, rarest].sum()) <= 1


def test_strata_are_the_rarest_positive_label():
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0], [0, 1, 0]])
    # counts: a 3, b 3, c 1 -> rows: a, a (tie a/b goes to the first), c, none, b
    np.testing.assert_array_equal(strata(y), [0, 0, 2, 3, 1])


def test_eval_file_uses_the_training_schema(tmp_path):
    x, colour, y = make_table(400)
    train = write_table(tmp_path / "train.csv", x, colour, y)
    ex, ecolour, ey = make_table(120, seed=5)
    ecolour[:3] = "purple"  # unseen in training: the column's 'other' input
    test = write_table(tmp_path / "test.csv", ex, ecolour, ey)
    bundle = load_multi_label_data(f"csv:{train}", label_columns=["a", "b", "c"],
                                   eval_dataset=f"csv:{test}",
                                   columns=ColumnOptions(exclude_columns=("row_id",)))
    assert bundle.validation is None and bundle.eval.num_examples == 120
    assert bundle.train.num_examples == 400
    _, labels = rows(bundle.eval)
    np.testing.assert_array_equal(labels, ey)
    features, _ = rows(bundle.eval)
    assert features.shape[1] == bundle.train.input_shape[0]


@pytest.mark.parametrize("cell", ["2", "", "yes", "0.5", "nan"])
def test_a_label_cell_that_is_not_0_or_1_is_named(tmp_path, cell):
    x, colour, y = make_table(50)
    path = write_table(tmp_path / "t.csv", x, colour, y, spell=False,
                       extra=[["r50", "0.1", "0.2", "red", "1", cell, "0"]])
    with pytest.raises(InputDataError) as caught:
        load_multi_label_data(f"csv:{path}", label_columns=["a", "b", "c"])
    assert caught.value.argument == "label_columns"
    message = str(caught.value)
    assert "row 51" in message and "b" in message, message


def test_bad_column_choices_are_named(tmp_path):
    x, colour, y = make_table(50)
    path = write_table(tmp_path / "t.csv", x, colour, y, spell=False)
    with pytest.raises(InputDataError) as caught:
        load_multi_label_data(f"csv:{path}", label_columns=["a", "nope"])
    assert caught.value.argument == "label_columns" and "'nope'" in str(caught.value)
    with pytest.raises(InputDataError) as caught:
        load_multi_label_data(f"csv:{path}", label_columns=["a", "b"],
                              columns=ColumnOptions(feature_columns=("f0", "b")))
    assert caught.value.argument == "feature_columns" and "'b'" in str(caught.value)
    with pytest.raises(InputDataError) as caught:
        load_multi_label_data(f"csv:{path}", label_columns=["a", "a"])
    assert caught.value.argument == "label_columns"


def test_npz_multi_hot(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 1], 1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    bundle = load_multi_label_data(f"npz:{tmp_path / 'd.npz'}", label_columns=["p", "q"])
    total = sum(s.class_counts for s in (bundle.train, bundle.validation, bundle.eval))
    np.testing.assert_array_equal(total, label_value_counts(y.astype(int)))
    np.testing.assert_allclose(bundle.feature_mean, rows(bundle.train)[0].mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputDataError, match=r"\[N, 3\]") as caught:
        load_multi_label_data(f"npz:{tmp_path / 'd.npz'}", label_columns=["p", "q", "r"])
    assert caught.value.argument == "label_columns"
    np.savez(tmp_path / "bad.npz", x=x, y=np.where(y, 2, 0))
    with pytest.raises(InputDataError, match="0 or 1"):
        load_multi_label_data(f"npz:{tmp_path / 'bad.npz'}", label_columns=["p", "q"])
