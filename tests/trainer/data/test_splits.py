"""Honest splits: train / validation (chooses) / test (reports) by row identity, tiny classes, K folds.

Every file carries a unique row id (feature 0); oracles are the one-row bounds, ids and file-order counters.
"""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import DataArgumentError, DataWarning, InputDataError, load_data, splits

FORMATS = ["npz", "csv", "tfrecord"]


def make_data(n=900, num_classes=4, seed=0):
    """Imbalanced labels; feature 0 is the row id."""
    rng = np.random.default_rng(seed)
    prior = np.array([8.0, 4.0, 2.0, 1.0][:num_classes])
    y = rng.choice(num_classes, size=n, p=prior / prior.sum()).astype(np.int64)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x, y


def write_source(kind, tmp_path, x, y, name="data"):
    if kind == "npz":
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=x, y=y)
        return f"npz:{path}"
    if kind == "csv":
        path = tmp_path / f"{name}.csv"
        with open(path, "w") as f:
            f.write(",".join(f"f{i}" for i in range(x.shape[1])) + ",label\n")
            for row, label in zip(x, y):
                f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
        return f"csv:{path}"
    os.makedirs(tmp_path / name, exist_ok=True)
    half = len(y) // 2
    for part, rows in enumerate([slice(0, half), slice(half, None)]):
        with tf.io.TFRecordWriter(str(tmp_path / name / f"part-{part}.tfrecord")) as w:
            for row, label in zip(x[rows], y[rows]):
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "features": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                })).SerializeToString())
    return f"tfrecord:{tmp_path / name}/part-*.tfrecord"


def ids(split):
    """Row ids (feature 0) and labels of a split, in pipeline order."""
    got = [(x.numpy()[:, 0], y.numpy()) for x, y in split.dataset(128, shuffle=False, seed=0)]
    if not got:
        return np.zeros(0, int), np.zeros(0, int)
    return (np.concatenate([g[0] for g in got]).astype(int), np.concatenate([g[1] for g in got]))


def quiet_load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_data(*args, **kwargs)


# ------------------------------------------------------------------ the rule itself


@pytest.mark.parametrize("validation, test", [(0.2, 0.2), (0.1, 0.1), (0.25, 0.15), (0.15, 0.3),
                                              (0.05, 0.4), (0.3, 0.0), (0.45, 0.45)])
def test_every_prefix_of_every_class_is_within_one_row_of_each_fraction(validation, test):
    rule = splits.SplitRule(validation, test, seed=11)
    n = np.arange(1, 1501)
    for name in [str(c) for c in range(40)] + ["rare", "x y", "ü"]:
        u, b = rule.class_offset(name)
        parts = rule.assign(np.arange(1500), np.full(1500, u), np.full(1500, b))
        for part, fraction in ((splits.TRAIN, 1 - validation - test), (splits.VALIDATION, validation),
                               (splits.TEST, test)):
            deviation = np.abs(np.cumsum(parts == part) - n * fraction)
            assert deviation.max() < 1, (name, part, deviation.max())
        assert parts[0] == splits.TRAIN  # a class's first row always trains
        held = parts[parts != splits.TRAIN]
        if rule.validation_first and len(held):
            assert held[0] == splits.VALIDATION  # ... and its first held-out row validates
        # The closed-form counts are those of the sequence.
        for count in (1, 2, 3, 4, 5, 7, 13, 100, 1500):
            want = tuple(int(np.sum(parts[:count] == p)) for p in range(3))
            assert rule.counts(count, u, b) == want


def test_validation_first_holds_for_the_defaults_and_is_documented_otherwise():
    assert splits.SplitRule(0.2, splits.DEFAULT_TEST_SPLIT, 0).validation_first
    assert splits.DEFAULT_TEST_SPLIT == 0.2
    # p_v <= p_t * (p_v + p_t): the one-row bound wins (module comment of trainer.data.splits).
    assert not splits.SplitRule(0.05, 0.4, 0).validation_first


def test_streamed_part_matches_a_file_order_counter():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=3000).astype(np.int32)
    names = [str(c) for c in range(5)]
    rule = splits.SplitRule(0.2, 0.2, 7)
    u, b = rule.offsets(names)
    # Oracle: walk the rows in order with one counter per class, applying the documented rule.
    q, s = 0.4, 0.5
    seen = np.zeros(5, int)
    want = []
    for c in y:
        r = seen[c]
        seen[c] += 1
        if np.floor((r + 1) * q + u[c]) > np.floor(r * q + u[c]):
            j = np.floor(r * q + u[c])
            want.append(splits.VALIDATION if np.floor((j + 1) * s + b[c]) > np.floor(j * s + b[c])
                        else splits.TEST)
        else:
            want.append(splits.TRAIN)
    want = np.array(want)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(y), dtype=np.float32)[:, None], y)).batch(333)
    for part in range(3):
        got = np.concatenate([bx[0].numpy()[:, 0] for bx in
                              splits.streamed_part(ds, 5, rule, (u, b), part)]).astype(int)
        np.testing.assert_array_equal(got, np.flatnonzero(want == part))


# ------------------------------------------------------------------ load_data, by row identity


@pytest.mark.parametrize("kind", FORMATS)
def test_validation_and_test_splits_are_disjoint_stratified_and_deterministic(kind, tmp_path):
    x, y = make_data()
    spec = write_source(kind, tmp_path, x, y)
    bundle = quiet_load(spec, seed=5)
    train_ids, train_y = ids(bundle.train)
    val_ids, val_y = ids(bundle.validation)
    test_ids, test_y = ids(bundle.eval)
    assert bundle.validation is not bundle.eval
    assert not set(val_ids) & set(test_ids), "the validation split never overlaps the test split"
    assert not set(train_ids) & (set(val_ids) | set(test_ids))
    assert sorted(np.concatenate([train_ids, val_ids, test_ids]).tolist()) == list(range(len(y)))
    for got_ids, got_y in ((train_ids, train_y), (val_ids, val_y), (test_ids, test_y)):
        np.testing.assert_array_equal(got_y, y[got_ids])  # labels travel with their rows
    for c in range(4):
        n_c = int((y == c).sum())
        assert abs(np.sum(val_y == c) - 0.2 * n_c) < 1
        assert abs(np.sum(test_y == c) - 0.2 * n_c) < 1
        assert abs(np.sum(train_y == c) - 0.6 * n_c) < 1
    np.testing.assert_array_equal(bundle.validation.class_counts, np.bincount(val_y, minlength=4))
    np.testing.assert_array_equal(bundle.eval.class_counts, np.bincount(test_y, minlength=4))
    np.testing.assert_array_equal(bundle.train.class_counts, np.bincount(train_y, minlength=4))
    # Normalisation statistics are the training part's only.
    np.testing.assert_allclose(bundle.feature_mean, x[train_ids].mean(0, dtype=np.float64), rtol=1e-5)
    # Deterministic across two loads; another seed moves rows.
    again = quiet_load(spec, seed=5)
    np.testing.assert_array_equal(ids(again.validation)[0], val_ids)
    np.testing.assert_array_equal(ids(again.eval)[0], test_ids)
    other = quiet_load(spec, seed=6)
    assert set(ids(other.eval)[0]) != set(test_ids)


def test_npz_and_csv_of_the_same_rows_split_the_same_counts(tmp_path):
    x, y = make_data(n=700, seed=3)
    counts = []
    for kind in ("npz", "csv"):
        bundle = quiet_load(write_source(kind, tmp_path, x, y), seed=2, validation_split=0.15,
                            test_split=0.25)
        counts.append([s.class_counts.tolist() for s in (bundle.train, bundle.validation, bundle.eval)])
    assert counts[0] == counts[1]


def test_summary_and_description_say_which_split_is_which(tmp_path):
    x, y = make_data(n=500)
    spec = write_source("csv", tmp_path, x, y)
    bundle = quiet_load(spec, validation_split=0.2, test_split=0.2)
    summary = bundle.splits_summary()
    assert summary["validation_is_eval"] is False
    assert summary["eval"]["rows"] == bundle.eval.num_examples
    assert summary["validation"]["rows"] == bundle.validation.num_examples
    assert summary["eval"]["class_counts"] == dict(zip(bundle.class_names,
                                                       bundle.eval.class_counts.tolist()))
    assert "held-out test split" in summary["eval"]["origin"] and "reports" in summary["eval"]["role"]
    assert "validation split" in summary["validation"]["origin"]
    assert "chooses" in summary["validation"]["role"]
    sentence = bundle.measured_on()
    assert f"measured on the eval split ({bundle.eval.num_examples:,} rows" in sentence
    assert f"chosen on the validation split ({bundle.validation.num_examples:,} rows" in sentence
    assert (f"validation {bundle.validation.num_examples:,} (0.2 stratified, chooses), "
            f"eval {bundle.eval.num_examples:,} (0.2 stratified held-out test split, reports)"
            in bundle.description)


def test_benchmarks_and_explicit_eval_keep_their_evaluation_data(tmp_path):
    synthetic = quiet_load("synthetic", seed=0, test_split=0.3)
    assert synthetic.eval.num_examples == 2000 and synthetic.validation is not synthetic.eval
    assert synthetic.splits_summary()["eval"]["origin"] == "the balanced test set of synthetic"
    want = [int(2000 * 100 ** (-c / 9)) for c in range(10)]
    np.testing.assert_array_equal(synthetic.train.class_counts + synthetic.validation.class_counts, want)
    x, y = make_data(n=300)
    xe, ye = make_data(n=80, seed=1)
    explicit = quiet_load(write_source("npz", tmp_path, x, y),
                          eval_dataset=write_source("npz", tmp_path, xe, ye, name="eval"))
    assert explicit.validation is None and explicit.train.num_examples == 300
    assert explicit.eval.num_examples == 80
    assert "nothing was chosen on held-out data" in explicit.measured_on()


# ------------------------------------------------------------------ tiny and absent classes


def test_tiny_classes_fill_training_then_validation_and_are_named(tmp_path):
    # Classes 0 and 1 are large; class 2 has 2 rows, class 3 none (a gap in the label codes, kept
    # as an index by num_classes=5), class 4 has 3 rows.
    rng = np.random.default_rng(0)
    y = np.concatenate([np.zeros(200, int), np.ones(100, int), [2, 2], [4, 4, 4]])
    y = y[rng.permutation(len(y))]
    x = np.zeros((len(y), 2), np.float32)
    x[:, 0] = np.arange(len(y))
    spec = write_source("csv", tmp_path, x, y)
    with pytest.warns(DataWarning) as record:
        bundle = load_data(spec, seed=0, num_classes=5)
    messages = [str(w.message) for w in record]
    assert any("class 3 ('3') has no training example" in m for m in messages)
    assert any("class 2 ('2') has only" in m and "fewer than 5" in m for m in messages)
    for c in (2, 4):
        total = int((y == c).sum())
        n_train, n_val, n_test = (int(s.class_counts[c]) for s in (bundle.train, bundle.validation,
                                                                   bundle.eval))
        assert n_train + n_val + n_test == total and n_train >= 1
        assert n_test == 0 or n_val >= 1  # validation before test
        if n_test == 0:
            assert any(f"class {c} ('{c}') has {total} rows, too few for every split" in m
                       and "no test rows" in m for m in messages)
    # 3 rows: floor(3 * 0.4 + u) = 1 held out for every u < 0.6, and it validates first.
    assert [int(s.class_counts[4]) for s in (bundle.train, bundle.validation, bundle.eval)] == [2, 1, 0]
    assert bundle.notes == messages
    assert bundle.splits_summary()["notes"] == messages
    assert bundle.train.class_counts[3] == 0


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6])
def test_a_class_of_few_rows_trains_first_in_arrays_and_streams(rows, tmp_path):
    y = np.concatenate([np.zeros(60, int), np.ones(rows, int)])
    x = np.zeros((len(y), 2), np.float32)
    x[:, 0] = np.arange(len(y))
    parts = []
    for kind in ("npz", "csv"):
        bundle = quiet_load(write_source(kind, tmp_path, x, y), seed=1)
        parts.append(tuple(int(s.class_counts[1]) for s in (bundle.train, bundle.validation, bundle.eval)))
    assert parts[0] == parts[1]
    n_train, n_val, n_test = parts[0]
    assert n_train >= 1 and (n_test == 0 or n_val >= 1)
    for count, fraction in zip(parts[0], (0.6, 0.2, 0.2)):
        assert abs(count - fraction * rows) < 1


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs, argument, fragment", [
    ({"test_split": 0.0}, "test_split", "must be > 0 without separate evaluation data"),
    ({"test_split": 0.85}, "test_split", "plus validation_split=0.2 must be below 1"),
    ({"test_split": 1.5}, "test_split", "got 1.5"),
    ({"test_split": "x"}, "test_split", "got 'x'"),
])
def test_bad_test_split_names_the_argument(kwargs, argument, fragment, tmp_path):
    x, y = make_data(n=100)
    with pytest.raises(DataArgumentError, match=fragment) as info:
        load_data(write_source("npz", tmp_path, x, y), **kwargs)
    assert info.value.argument == argument and str(info.value).startswith(argument)


def test_an_empty_test_split_names_test_split(tmp_path):
    y = np.repeat(np.arange(5), 2)  # two rows per class: each keeps one to train, at most one validates
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(InputDataError, match=r"^test_split=0.2 holds out no examples") as info:
        quiet_load(write_source("npz", tmp_path, x, y), seed=0)
    assert info.value.argument == "test_split"


# ------------------------------------------------------------------ folds


@pytest.mark.parametrize("kind", FORMATS)
def test_folds_hold_out_every_training_row_once_stratified(kind, tmp_path):
    x, y = make_data(n=600)
    bundle = quiet_load(write_source(kind, tmp_path, x, y), seed=1)
    train_ids, _ = ids(bundle.train)
    k = 4
    folds = bundle.train.folds(k, seed=3)
    assert len(folds) == k
    held_all = []
    n_c = bundle.train.class_counts
    for j, (fold_train, fold_held) in enumerate(folds):
        a, ya = ids(fold_train)
        h, yh = ids(fold_held)
        assert not set(a) & set(h) and sorted(np.concatenate([a, h]).tolist()) == sorted(train_ids.tolist())
        np.testing.assert_array_equal(np.bincount(yh, minlength=4), fold_held.class_counts)
        np.testing.assert_array_equal(np.bincount(ya, minlength=4), fold_train.class_counts)
        assert fold_held.num_examples == len(h) and fold_train.num_examples == len(a)
        assert np.all((fold_held.class_counts == n_c // k) | (fold_held.class_counts == -(-n_c // k)))
        assert fold_held.name == f"held_fold{j}" and fold_train.name == f"train_fold{j}"
        held_all.extend(h.tolist())
    assert sorted(held_all) == sorted(train_ids.tolist())  # each training row held out exactly once
    again = bundle.train.folds(k, seed=3)
    np.testing.assert_array_equal(ids(again[2][1])[0], ids(folds[2][1])[0])


def test_stratified_folds_of_arrays():
    labels = np.array([0] * 23 + [1] * 7 + [2] * 2 + [3] * 1)
    folds = splits.stratified_folds(labels, 5, seed=0, num_classes=4)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(labels)))
    for train, h in folds:
        assert not set(train) & set(h) and len(train) + len(h) == len(labels)
    per_fold = np.array([np.bincount(labels[h], minlength=4) for _, h in folds])
    np.testing.assert_array_equal(per_fold.sum(0), [23, 7, 2, 1])
    assert set(per_fold[:, 0]) <= {4, 5} and set(per_fold[:, 1]) <= {1, 2}
    np.testing.assert_array_equal(per_fold, splits.fold_class_counts([23, 7, 2, 1], 5, 0))
    fold_ids = splits.stratified_fold_ids(labels, 5, seed=0, num_classes=4)
    for j, (_, h) in enumerate(folds):
        np.testing.assert_array_equal(np.flatnonzero(fold_ids == j), h)
    np.testing.assert_array_equal(fold_ids, splits.stratified_fold_ids(labels, 5, seed=0, num_classes=4))
    assert not np.array_equal(fold_ids, splits.stratified_fold_ids(labels, 5, seed=1, num_classes=4))


@pytest.mark.parametrize("labels, k, argument", [
    (np.zeros(10, np.int64), 1, "k"), (np.zeros(3, np.int64), 4, "k"),
    (np.zeros((3, 2), np.int64), 2, "labels"), (np.array([0.5, 1.0]), 2, "labels"),
    (np.array([0, -1, 1]), 2, "labels"),
])
def test_stratified_fold_ids_errors_name_the_argument(labels, k, argument):
    with pytest.raises(DataArgumentError) as info:
        splits.stratified_fold_ids(labels, k, seed=0)
    assert info.value.argument == argument and str(info.value).startswith(argument)


def test_fold_errors_and_singleton_warning(tmp_path):
    y = np.array([0] * 30 + [1] * 8 + [2])
    x = np.zeros((len(y), 2), np.float32)
    x[:, 0] = np.arange(len(y))
    bundle = quiet_load(write_source("npz", tmp_path, x, y), eval_dataset=write_source(
        "npz", tmp_path, x, y, name="eval"))
    with pytest.raises(DataArgumentError, match=r"^k must be an integer >= 2, got 1"):
        bundle.train.folds(1)
    with pytest.raises(DataArgumentError, match=r"^k must not exceed the split's 39 rows, got 40"):
        bundle.train.folds(40)
    with pytest.warns(DataWarning, match=r"class 2 \('2'\) has a single row in the train split"):
        bundle.train.folds(3, class_names=bundle.class_names)
