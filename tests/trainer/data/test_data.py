"""Tests of the input layer's sources: round trips, stratified splits, class counts and statistics.

Every file is written by the test into `tmp_path`; bad-data errors are in test_data_errors.py.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import DataBundle, DataSplit, fashion_mnist, load_data, splits, streaming, synthetic
from trainer.distribute.strategies import new_mirrored_strategy


def collect(split: DataSplit, batch_size: int = 97, **kwargs):
    """All (features, labels) of a split, in pipeline order."""
    kwargs.setdefault("shuffle", False)
    kwargs.setdefault("seed", 0)
    xs, ys = [], []
    for x, y in split.dataset(batch_size, **kwargs):
        assert x.dtype == tf.float32 and y.dtype == tf.int32
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def make_data(n=600, features=4, num_classes=3, seed=0):
    """Long-tailed-ish data whose feature 0 is the row id (to check splits)."""
    rng = np.random.default_rng(seed)
    prior = np.linspace(3, 1, num_classes)
    y = rng.choice(num_classes, size=n, p=prior / prior.sum())
    x = rng.normal(size=(n, features)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x, y.astype(np.int64)


def write_csv(path, x, labels, label_column="label", label_position=None):
    columns = [f"f{i}" for i in range(x.shape[1])]
    pos = len(columns) if label_position is None else label_position
    header = columns[:pos] + [label_column] + columns[pos:]
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row, label in zip(x, labels):
            values = [repr(float(v)) for v in row]
            f.write(",".join(values[:pos] + [str(label)] + values[pos:]) + "\n")
    return str(path)


def write_tfrecord(path, x, y, feature_key="features", label_key="label"):
    with tf.io.TFRecordWriter(str(path)) as w:
        for row, label in zip(x, y):
            ex = tf.train.Example(features=tf.train.Features(feature={
                feature_key: tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
                label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }))
            w.write(ex.SerializeToString())
    return str(path)


def write_source(kind, tmp_path, x, y, name="data"):
    if kind == "npz":
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=x, y=y)
        return f"npz:{path}"
    if kind == "csv":
        return "csv:" + write_csv(tmp_path / f"{name}.csv", x, y)
    half = len(y) // 2
    os.makedirs(tmp_path / name, exist_ok=True)
    write_tfrecord(tmp_path / name / "part-0.tfrecord", x[:half], y[:half])
    write_tfrecord(tmp_path / name / "part-1.tfrecord", x[half:], y[half:])
    return f"tfrecord:{tmp_path / name}/part-*.tfrecord"


FORMATS = ["npz", "csv", "tfrecord"]


@pytest.mark.parametrize("kind", FORMATS)
def test_round_trip_with_explicit_eval(kind, tmp_path):
    x, y = make_data(n=300)
    xe, ye = make_data(n=120, seed=1)
    bundle = load_data(write_source(kind, tmp_path, x, y),
                       eval_dataset=write_source(kind, tmp_path, xe, ye, name="eval"))
    assert isinstance(bundle, DataBundle)
    got_x, got_y = collect(bundle.train)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    got_xe, got_ye = collect(bundle.eval)
    np.testing.assert_array_equal(got_xe, xe)
    np.testing.assert_array_equal(got_ye, ye)
    assert bundle.num_classes == 3 and bundle.class_names == ["0", "1", "2"]
    assert bundle.train.input_shape == (4,) and bundle.train.num_examples == 300
    np.testing.assert_array_equal(bundle.train.class_counts, np.bincount(y, minlength=3))
    np.testing.assert_array_equal(bundle.eval.class_counts, np.bincount(ye, minlength=3))
    assert bundle.validation is None
    np.testing.assert_allclose(bundle.feature_mean, x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bundle.feature_variance, x.var(0), rtol=1e-5)


@pytest.mark.parametrize("kind", FORMATS)
def test_stratified_split_is_disjoint_exact_and_stats_are_train_only(kind, tmp_path):
    # Without eval data the held-out rows are two disjoint parts: validation (chooses) and eval
    # (a held-out test split, reports); tests/trainer/data/test_splits.py checks them by row id.
    x, y = make_data(n=2000)
    p, t = 0.25, 0.15
    bundle = load_data(write_source(kind, tmp_path, x, y), validation_split=p, test_split=t, seed=3)
    tx, ty = collect(bundle.train)
    vx, vy = collect(bundle.validation)
    ex, ey = collect(bundle.eval)
    train_ids, val_ids, eval_ids = (a[:, 0].astype(int) for a in (tx, vx, ex))
    assert not set(train_ids) & set(eval_ids) and not set(train_ids) & set(val_ids)
    assert not set(val_ids) & set(eval_ids)
    assert sorted(np.concatenate([train_ids, val_ids, eval_ids]).tolist()) == list(range(len(y)))
    np.testing.assert_array_equal(ty, y[train_ids])
    np.testing.assert_array_equal(vy, y[val_ids])
    np.testing.assert_array_equal(ey, y[eval_ids])
    rule = splits.SplitRule(p, t, 3)
    for c in range(3):
        n_c = int((y == c).sum())
        u, b = rule.class_offset(bundle.class_names[c])
        assert (bundle.train.class_counts[c], bundle.validation.class_counts[c],
                bundle.eval.class_counts[c]) == rule.counts(n_c, u, b)
        assert abs(bundle.validation.class_counts[c] - p * n_c) < 1
        assert abs(bundle.eval.class_counts[c] - t * n_c) < 1
        assert (bundle.train.class_counts[c] + bundle.validation.class_counts[c]
                + bundle.eval.class_counts[c]) == n_c
    np.testing.assert_array_equal(bundle.train.class_counts, np.bincount(ty, minlength=3))
    np.testing.assert_array_equal(bundle.validation.class_counts, np.bincount(vy, minlength=3))
    np.testing.assert_array_equal(bundle.eval.class_counts, np.bincount(ey, minlength=3))
    assert bundle.train.num_examples == len(ty) and bundle.eval.num_examples == len(ey)
    assert bundle.validation is not bundle.eval
    np.testing.assert_allclose(bundle.feature_mean, tx.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(bundle.feature_variance, tx.var(0, dtype=np.float64), rtol=1e-5)
    assert abs(bundle.feature_mean[0] - x[:, 0].mean()) > 1e-3  # not the full data's
    # The split is a function of the seed.
    other = load_data(write_source(kind, tmp_path, x, y), validation_split=p, test_split=t, seed=4)
    assert set(collect(other.eval)[0][:, 0].astype(int)) != set(eval_ids)


def test_streamed_split_rule_matches_numpy_across_batches():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=5000).astype(np.int32)
    names = [str(c) for c in range(4)]
    offsets = splits.class_offsets(names, 7, 0.3)
    counts = np.zeros(4, np.int64)
    ranks = np.empty(len(y), np.int64)
    for i, c in enumerate(y):
        ranks[i] = counts[c]
        counts[c] += 1
    want = splits.streamed_held_out_mask(ranks, offsets[y], 0.3)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(y), dtype=np.float32)[:, None], y)).batch(333)
    got = np.concatenate([b[0].numpy()[:, 0] for b in
                          splits.streamed_split(ds, 4, offsets, 0.3, held_out=True)]).astype(int)
    np.testing.assert_array_equal(got, np.flatnonzero(want))


def test_csv_string_labels_and_label_column_anywhere(tmp_path):
    x, y = make_data(n=200)
    names = np.array(["zebra", "ant", "mole"])[y]
    path = write_csv(tmp_path / "s.csv", x, names, label_column="kind", label_position=1)
    bundle = load_data(f"csv:{path}", label_column="kind", eval_dataset=f"csv:{path}")
    assert bundle.class_names == ["ant", "mole", "zebra"]
    got_x, got_y = collect(bundle.train)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(np.array(bundle.class_names)[got_y], names)


def test_csv_quoted_fields_crlf_and_whitespace(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'a,"b",label\r\n1.5, 2 ,"x"\r\n-3,4e2, y\r\n')
    bundle = load_data(f"csv:{path}", eval_dataset=f"csv:{path}")
    got_x, got_y = collect(bundle.train)
    np.testing.assert_array_equal(got_x, [[1.5, 2.0], [-3.0, 400.0]])
    assert bundle.class_names == ["x", "y"]
    np.testing.assert_array_equal(got_y, [0, 1])


def test_npz_string_labels_and_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(50, 6, 6, 2)).astype(np.float32)
    y = np.array(["b", "a"] * 25)
    np.savez(tmp_path / "i.npz", x=x, y=y)
    bundle = load_data(f"npz:{tmp_path / 'i.npz'}", eval_dataset=f"npz:{tmp_path / 'i.npz'}")
    assert bundle.class_names == ["a", "b"] and bundle.train.input_shape == (6, 6, 2)
    got_x, got_y = collect(bundle.train)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, (y == "b").astype(int))
    np.testing.assert_allclose(bundle.feature_mean, x.reshape(-1, 2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(bundle.feature_variance, x.reshape(-1, 2).var(0), rtol=1e-5)


@pytest.mark.parametrize("kind", FORMATS)
def test_shuffle_is_seeded_and_reshuffles_each_epoch(kind, tmp_path):
    x, y = make_data(n=300)
    bundle = load_data(write_source(kind, tmp_path, x, y))
    a = collect(bundle.train, shuffle=True, seed=5)[0][:, 0]
    b = collect(bundle.train, shuffle=True, seed=5)[0][:, 0]
    c = collect(bundle.train, shuffle=True, seed=6)[0][:, 0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a) == sorted(c)
    n = bundle.train.num_examples
    ds = bundle.train.dataset(n, shuffle=True, seed=5, repeat=True, drop_remainder=True)
    epochs = [x.numpy()[:, 0] for x, _ in ds.take(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and not np.array_equal(epochs[0], epochs[1])
    assert ds.element_spec[0].shape.as_list() == [n, 4]
    # Iterating the same dataset again (a new epoch for the Trainer) reshuffles too.
    once = bundle.train.dataset(n, shuffle=True, seed=5)
    first, second = (next(iter(once))[0].numpy()[:, 0] for _ in range(2))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


@pytest.mark.parametrize("kind", ["npz", "tfrecord"])
def test_input_context_shards_are_disjoint(kind, tmp_path):
    x, y = make_data(n=301)
    bundle = load_data(write_source(kind, tmp_path, x, y))
    ids = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        ids.append(set(collect(bundle.train, input_context=ctx)[0][:, 0].astype(int)))
    assert not ids[0] & ids[1]
    assert len(ids[0] | ids[1]) == bundle.train.num_examples


def test_streamed_stats_cross_parse_batches_and_cache(tmp_path):
    n = streaming.STATS_BATCH + 1500
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=n)
    path = write_csv(tmp_path / "big.csv", x, y)
    cache = tmp_path / "cache"
    bundle = load_data(f"csv:{path}", cache_dir=str(cache), seed=2)
    files = os.listdir(cache)
    assert len(files) == 1
    with open(cache / files[0]) as f:
        assert json.load(f)["summary"]["train_counts"] == bundle.train.class_counts.tolist()
    tx, ty = collect(bundle.train, batch_size=1000)
    np.testing.assert_array_equal(bundle.train.class_counts, np.bincount(ty, minlength=5))
    np.testing.assert_allclose(bundle.feature_mean, tx.mean(0, dtype=np.float64), rtol=1e-5, atol=1e-6)
    again = load_data(f"csv:{path}", cache_dir=str(cache), seed=2)
    np.testing.assert_array_equal(again.eval.class_counts, bundle.eval.class_counts)
    np.testing.assert_array_equal(again.feature_variance, bundle.feature_variance)
    # A changed file is scanned again (the key holds size and mtime).
    with open(path, "a") as f:
        f.write(",".join(["0.0"] * 3) + ",4\n")
    changed = load_data(f"csv:{path}", cache_dir=str(cache), seed=2)
    assert (changed.train.num_examples + changed.validation.num_examples
            + changed.eval.num_examples) == n + 1
    assert len(os.listdir(cache)) == 2


def test_synthetic_is_long_tailed_seeded_and_learnable():
    bundle = load_data("synthetic", seed=0)
    want = [int(2000 * 100 ** (-c / 9)) for c in range(10)]
    np.testing.assert_array_equal(bundle.train.class_counts + bundle.validation.class_counts, want)
    np.testing.assert_array_equal(bundle.eval.class_counts, [synthetic.EVAL_PER_CLASS] * 10)
    assert bundle.train.input_shape == (synthetic.NUM_FEATURES,) and bundle.num_classes == 10
    again = load_data("synthetic", seed=0)
    np.testing.assert_array_equal(collect(bundle.train)[0], collect(again.train)[0])
    other = load_data("synthetic", seed=1)
    assert not np.array_equal(collect(bundle.eval)[0], collect(other.eval)[0])
    flat = load_data("synthetic", imbalance_ratio=1.0)
    assert (flat.train.class_counts + flat.validation.class_counts == 2000).all()

    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(bundle.train.input_shape),
        keras.layers.Normalization(mean=bundle.feature_mean, variance=bundle.feature_variance),
        keras.layers.Dense(128, activation="relu"), keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(bundle.train.dataset(128, shuffle=True, seed=0), epochs=10, verbose=0, shuffle=False)
    _, accuracy = model.evaluate(bundle.eval.dataset(500, shuffle=False, seed=0), verbose=0)
    assert accuracy > 0.55  # balanced eval: chance is 0.1; this run gets about 0.65


@pytest.mark.skipif(not os.path.isfile(os.path.join(fashion_mnist.DEFAULT_DIR, "train-labels-idx1-ubyte.gz")),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_lt_counts_and_shapes():
    bundle = load_data("fashion_mnist_lt", imbalance_ratio=10.0, seed=0)
    want = [int(6000 * 10.0 ** (-c / 9)) for c in range(10)]
    np.testing.assert_array_equal(bundle.train.class_counts + bundle.validation.class_counts, want)
    np.testing.assert_array_equal(bundle.eval.class_counts, [1000] * 10)
    assert bundle.class_names[0] == "T-shirt/top" and bundle.class_names[-1] == "Ankle boot"
    assert bundle.train.input_shape == (28, 28, 1) and bundle.feature_mean.shape == (1,)
    x, y = next(iter(bundle.eval.dataset(256, shuffle=False, seed=0)))
    assert x.shape == (256, 28, 28, 1) and 0.0 <= float(tf.reduce_min(x)) <= float(tf.reduce_max(x)) <= 1.0


@pytest.mark.parametrize("kind", FORMATS)
def test_pipelines_distribute_over_two_cpu_replicas(kind, tmp_path):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py)")
    x, y = make_data(n=400)
    if kind == "csv":  # string labels go through a lookup table inside the pipeline
        spec = "csv:" + write_csv(tmp_path / "d.csv", x, np.array(["a", "b", "c"])[y])
    else:
        spec = write_source(kind, tmp_path, x, y)
    bundle = load_data(spec)
    strategy = new_mirrored_strategy(devices)
    seen = []
    dist = strategy.experimental_distribute_dataset(
        bundle.train.dataset(64, shuffle=True, seed=0, drop_remainder=True))
    for xb, _ in dist:
        seen.extend(np.concatenate([t.numpy() for t in strategy.experimental_local_results(xb)])[:, 0])
    assert len(seen) == bundle.train.num_examples // 64 * 64 and len(set(seen)) == len(seen)
    per_replica = strategy.distribute_datasets_from_function(
        lambda ctx: bundle.train.dataset(ctx.get_per_replica_batch_size(64), shuffle=True,
                                         seed=0, input_context=ctx))
    seen = []
    for xb, _ in per_replica:
        seen.extend(np.concatenate([t.numpy() for t in strategy.experimental_local_results(xb)])[:, 0])
    assert sorted(seen) == sorted(collect(bundle.train)[0][:, 0])


def test_warns_when_a_large_file_is_sorted_by_class(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(streaming, "STATS_BATCH", 500)
    monkeypatch.setattr(streaming, "SHUFFLE_WINDOW_MAX", 256)
    monkeypatch.setattr(streaming, "PARSE_BATCH", 256)
    n = 6000
    y = np.sort(np.random.default_rng(0).integers(0, 3, n))
    x = np.arange(n, dtype=np.float32)[:, None]
    sorted_path = write_csv(tmp_path / "sorted.csv", x, y)
    with caplog.at_level("WARNING", logger="trainer.data.streaming"):
        load_data(f"csv:{sorted_path}")
    assert "looks sorted by class" in caplog.text and "sorted.csv" in caplog.text
    caplog.clear()
    shuffled_path = write_csv(tmp_path / "shuffled.csv", x, np.random.default_rng(1).permutation(y))
    with caplog.at_level("WARNING", logger="trainer.data.streaming"):
        load_data(f"csv:{shuffled_path}")
    assert "sorted" not in caplog.text


def test_hold_out_validation_with_an_explicit_eval_dataset(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), [200, 70, 30]).astype(np.int64)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:50], y=y[:50])
    plain = load_data(f"npz:{tmp_path / 'train.npz'}", eval_dataset=f"npz:{tmp_path / 'test.npz'}")
    assert plain.validation is None and plain.train.num_examples == 300
    held = load_data(f"npz:{tmp_path / 'train.npz'}", eval_dataset=f"npz:{tmp_path / 'test.npz'}",
                     validation_split=0.2, hold_out_validation=True)
    assert held.eval.num_examples == 50
    assert held.validation is not None and held.validation is not held.eval
    assert held.train.num_examples + held.validation.num_examples == 300
    np.testing.assert_array_equal(held.train.class_counts + held.validation.class_counts, [200, 70, 30])
    assert all(held.validation.class_counts > 0)

    def rows(split):
        batches = split.dataset(64, shuffle=False, seed=0)
        return {tuple(r) for r in np.concatenate([b.numpy() for b, _ in batches])}
    train_rows, held_rows = rows(held.train), rows(held.validation)
    assert not train_rows & held_rows, "the held-out split is disjoint from training"
    assert "validation 60" in held.description
