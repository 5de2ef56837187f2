"""Sample weights from NPZ and TFRecord files, `--weighted_metrics`, the one-logit `--binary_head=sigmoid`.

Oracles: Keras `fit(sample_weight=)` for a step on weights read by `trainer.data.load_data`; NumPy
confusion matrices (weighted: `np.add.at` of the weights) of the export's decisions on the rows the
run evaluated; for the sigmoid head, the decisions of the training process (metrics.json), of
`python -m trainer.evaluate` and of `python -m trainer.predict` (each a fresh process loading the
export) on the same rows, and the served threshold and probabilities against the scores.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
import tensorflow as tf

from cli_processes import checkpoint_values, model_weights, run_cli
from trainer import Trainer
from trainer.cli.errors import UsageError
from trainer.data import InputDataError, load_data
from trainer.export import FEATURES_SIGNATURE, load_serving_function
from trainer.metrics import ConfusionMatrix
from trainer.tasks import BinaryTask, OnTwoClassLogits, one_logit_loss

NUM_FEATURES = 4


def make_rows(n, num_classes, seed, *, weights=True):
    rng = np.random.default_rng(seed)
    prior = np.linspace(3, 1, num_classes)
    y = rng.choice(num_classes, size=n, p=prior / prior.sum())
    y[:num_classes] = np.arange(num_classes)
    x = (rng.normal(size=(n, NUM_FEATURES)) + 0.9 * y[:, None]).astype(np.float32)
    w = rng.uniform(0.1, 3.0, size=n) if weights else None
    return x, y.astype(np.int64), w


def write_npz(path, x, y, w=None, key="w"):
    arrays = {"x": x, "y": y}
    if w is not None:
        arrays[key] = w
    np.savez(path, **arrays)
    return str(path)


def write_tfrecord(path, x, y, w=None):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(len(y)):
            feature = {"features": tf.train.Feature(float_list=tf.train.FloatList(value=x[i])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])]))}
            if w is not None:
                feature["weight"] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(w[i])]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def rows_of(split):
    """(x, y, w) of a split, in order."""
    parts = list(split.dataset(1024, shuffle=False, seed=0))
    return tuple(np.concatenate([p[i].numpy() for p in parts]) for i in range(len(parts[0])))


def weighted_confusion(labels, predictions, weights, k):
    matrix = np.zeros((k, k))
    np.add.at(matrix, (labels, predictions), 1.0 if weights is None else weights)
    return matrix


def linear_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(3)])


# ------------------------------------------------------------------ the data layer


@pytest.mark.parametrize("kind", ["npz", "tfrecord"])
def test_weights_from_the_file_train_like_keras_fit_sample_weight(tmp_path, kind):
    x, y, w = make_rows(120, 3, seed=0)
    if kind == "npz":
        bundle = load_data(f"npz:{write_npz(tmp_path / 'd.npz', x, y, w)}", seed=0)
        assert "sample weights: array 'w'" in bundle.description and "found in the file" in bundle.description
    else:
        bundle = load_data(f"tfrecord:{write_tfrecord(tmp_path / 'd.tfrecord', x, y, w)}", seed=0,
                           weight_key="weight")
    assert bundle.train.weighted and bundle.validation.weighted and bundle.eval.weighted
    xs, ys, ws = rows_of(bundle.train)
    # Each weight rides with its row (the oracle: the file's weight of the row with those features).
    rows = [int(np.argmin(np.abs(x - row).sum(axis=1))) for row in xs]
    np.testing.assert_array_equal(y[rows], ys)
    np.testing.assert_allclose(ws, w[rows], rtol=1e-6)

    n = len(ys)
    trainer = Trainer(model=linear_model, num_classes=3, optimizer=lambda: keras.optimizers.SGD(0.1),
                      steps_per_loop=1)
    trainer.fit(bundle.train.dataset(n, shuffle=False, seed=0), epochs=1)  # one step, every row
    reference = linear_model()
    reference.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reference.fit(xs, ys, sample_weight=ws, batch_size=n, epochs=1, shuffle=False, verbose=0)
    unweighted = linear_model()
    unweighted.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    unweighted.fit(xs, ys, batch_size=n, epochs=1, shuffle=False, verbose=0)
    for ours, expected in zip(trainer.model.weights, reference.weights):
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    moved = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(reference.weights, unweighted.weights)]
    assert max(moved) > 1e-3, "the weights change the step"


def test_npz_weights_can_be_named_or_turned_off(tmp_path):
    x, y, w = make_rows(60, 2, seed=1)
    path = write_npz(tmp_path / "d.npz", x, y, w, key="importance")
    assert not load_data(f"npz:{path}", seed=0).train.weighted  # no 'w' array: no weights
    named = load_data(f"npz:{path}", seed=0, weight_key="importance")
    assert named.train.weighted and named.sample_weights == f"array 'importance' of {path}"
    plain = write_npz(tmp_path / "w.npz", x, y, w)
    off = load_data(f"npz:{plain}", seed=0, weight_key="none")
    assert not off.train.weighted and off.sample_weights is None and "sample weights" not in off.description
    # An eval file without the array: its rows are unweighted, and the description says so.
    unweighted = write_npz(tmp_path / "eval.npz", x, y)
    bundle = load_data(f"npz:{plain}", eval_dataset=f"npz:{unweighted}", seed=0)
    assert bundle.train.weighted and not bundle.eval.weighted
    assert "the eval rows (eval_dataset npz:" in bundle.description and "have none" in bundle.description


def test_csv_eval_file_with_the_weight_column_is_weighted(tmp_path):
    header = "a,b,w,label\n"
    rows = [f"{i % 7},{(i * 3) % 5},{0.5 + (i % 4)},{i % 2}\n" for i in range(40)]
    (tmp_path / "train.csv").write_text(header + "".join(rows))
    (tmp_path / "eval.csv").write_text(header + "".join(rows[:20]))
    (tmp_path / "eval_no_w.csv").write_text("a,b,label\n" + "".join(
        ",".join(r.split(",")[:2] + [r.split(",")[3]]) for r in rows[:20]))
    from trainer.data import ColumnOptions
    options = ColumnOptions(weight_column="w")
    bundle = load_data(f"csv:{tmp_path}/train.csv", eval_dataset=f"csv:{tmp_path}/eval.csv", columns=options)
    _, _, ws = rows_of(bundle.eval)
    np.testing.assert_allclose(ws, [0.5 + (i % 4) for i in range(20)])
    bundle = load_data(f"csv:{tmp_path}/train.csv", eval_dataset=f"csv:{tmp_path}/eval_no_w.csv",
                       columns=options)
    assert bundle.train.weighted and not bundle.eval.weighted


@pytest.mark.parametrize("case, pattern", [
    ("negative", r"^weight_key='w': 2 of 50 sample weights are negative or not finite .*the first: "
                 r"file '.*d.npz', row 4, column 'w\[3\]', value -1.0"),
    ("short", r"^weight_key='w': file '.*d.npz' has 49 sample weights in 'w' for 50 rows of 'x'"),
    ("text", r"^weight_key='w': array 'w' .* must hold numbers \(sample weights\), got dtype <U"),
    ("zero", r"^weight_key='w': every one of the 50 sample weights .* is 0"),
    ("missing", r"^weight_key='wt' is not an array of file '.*d.npz'; it has \['x', 'y', 'w'\]"),
    ("tfrecord", r"^weight_key='weight': 2 of 50 sample weights are negative or not finite .*the first: "
                 r"file '.*d.tfrecord', row 4, column 'weight', value nan"),
    ("tfrecord_key", r"^weight_key='wt' is not a key of file '.*d.tfrecord', row 1; the record has keys"),
    ("csv", r"^weight_key='w' names the sample weights of npz: and tfrecord: data; dataset csv:"),
])
def test_bad_weights_are_one_clear_error(tmp_path, case, pattern):
    x, y, w = make_rows(50, 2, seed=2)
    weight_key = None
    if case == "negative":
        w[3], w[6] = -1.0, np.inf
    if case == "short":
        w = w[:-1]
    if case == "text":
        w = np.array(["1"] * 50)
    if case == "zero":
        w = np.zeros(50)
    if case == "missing":
        weight_key = "wt"
    if case.startswith("tfrecord"):
        w[3], w[9] = np.nan, -2.0
        dataset = f"tfrecord:{write_tfrecord(tmp_path / 'd.tfrecord', x, y, w)}"
        weight_key = "weight" if case == "tfrecord" else "wt"
    elif case == "csv":
        (tmp_path / "d.csv").write_text("a,label\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n")
        dataset, weight_key = f"csv:{tmp_path / 'd.csv'}", "w"
    else:
        dataset = f"npz:{write_npz(tmp_path / 'd.npz', x, y, w)}"
    with pytest.raises(InputDataError, match=pattern) as raised:
        load_data(dataset, seed=0, weight_key=weight_key)
    assert raised.value.argument == "weight_key"


def test_confusion_matrix_metric_counts_weights_only_when_asked():
    labels = np.array([0, 1, 1, 2, 2, 2])
    logits = np.eye(3)[[0, 1, 2, 2, 0, 2]].astype(np.float32)
    weights = np.array([0.5, 2.0, 1.0, 3.0, 0.25, 1.5], np.float32)
    weighted = ConfusionMatrix(3, weighted=True)
    weighted.update_state(labels, logits, sample_weight=weights)
    np.testing.assert_allclose(weighted.result().numpy(),
                               weighted_confusion(labels, logits.argmax(1), weights, 3), rtol=1e-6)
    counted = ConfusionMatrix(3)
    with pytest.warns(UserWarning, match="counts examples and does not count the sample_weight"):
        counted.update_state(labels, logits, sample_weight=weights)
    np.testing.assert_array_equal(counted.result().numpy(),
                                  weighted_confusion(labels, logits.argmax(1), None, 3))


# ------------------------------------------------------------------ the one-logit losses


def test_two_class_losses_on_one_logit_are_their_binary_forms():
    from losses import make_loss
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3.0, size=(32, 1)).astype(np.float32)
    y = (rng.uniform(size=32) < 0.3).astype(np.float32)[:, None]
    counts = [70, 30]
    task = BinaryTask()
    bce = -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 / (1 + np.exp(z))))
    plain = one_logit_loss(make_loss("cross_entropy"))
    assert isinstance(plain, keras.losses.BinaryCrossentropy)
    np.testing.assert_allclose(task.per_example_loss(plain, y, z).numpy(), bce[:, 0], rtol=1e-5)
    # Logit adjustment on [0, z] is binary cross-entropy on z + tau * log(n1 / n0).
    adjusted = one_logit_loss(make_loss("logit_adjusted", class_counts=counts, tau=1.0))
    assert isinstance(adjusted, OnTwoClassLogits)
    shifted = z + np.log(counts[1] / counts[0])
    expected = -(y * np.log(1 / (1 + np.exp(-shifted))) + (1 - y) * np.log(1 / (1 + np.exp(shifted))))
    np.testing.assert_allclose(task.per_example_loss(adjusted, y, z).numpy(), expected[:, 0], rtol=1e-5)
    np.testing.assert_allclose(adjusted.logit_shift(), np.log(np.asarray(counts) / 100.0), rtol=1e-6)
    focal = make_loss("sigmoid_focal", gamma=2.0)
    assert one_logit_loss(focal) is focal  # already the binary focal loss


def test_binary_head_flags_are_checked_before_training(parse):
    with pytest.raises(UsageError, match=r"^--binary_head=sigmoid trains one logit for two classes, and the "
                                         r"data has 3 classes"):
        parse("--binary_head=sigmoid").with_data(3, (4,), True)
    assert parse("--binary_head=sigmoid").with_data(2, (4,), True).model.one_logit
    with pytest.raises(UsageError, match=r"^--reweighting=eqlv2 \(EQL v2\) acts on one sigmoid logit"):
        parse("--binary_head=sigmoid", "--reweighting=eqlv2", "--loss=sigmoid_focal")


# ------------------------------------------------------------------ command-line runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A weighted three-class NPZ run (--weighted_metrics) and a sigmoid-head target-recall run with
    cross-fitting, trained at the same time; then `trainer.evaluate` and `trainer.predict` on them."""
    root = tmp_path_factory.mktemp("weights_binary")
    x, y, w = make_rows(360, 3, seed=4)
    weighted_path = write_npz(root / "weighted.npz", x, y, w)
    bx, by, _ = make_rows(400, 2, seed=5, weights=False)
    ex, ey, _ = make_rows(160, 2, seed=6, weights=False)
    binary_path = write_npz(root / "binary.npz", bx, by)
    eval_path = write_npz(root / "binary_eval.npz", ex, ey)
    weighted_dir, binary_dir, bad_dir = str(root / "weighted"), str(root / "binary"), str(root / "bad")
    commands = [
        [f"--dataset=npz:{weighted_path}", f"--model_dir={weighted_dir}", "--epochs=2", "--batch_size=64",
         "--weighted_metrics"],
        [f"--dataset=npz:{binary_path}", f"--eval_dataset=npz:{eval_path}", f"--model_dir={binary_dir}",
         "--binary_head=sigmoid", "--target_class=1", "--target_recall=0.85", "--decision_folds=2",
         "--calibrate_probabilities=false", "--epochs=3", "--batch_size=64"],
        [f"--dataset=npz:{weighted_path}", f"--model_dir={bad_dir}", "--weight_key=wt", "--epochs=1"],
    ]
    with ThreadPoolExecutor(3) as pool:
        trained = list(pool.map(lambda args: run_cli(*args), commands))
    for result in trained[:2]:
        assert result.returncode == 0, result.stderr[-3000:]
    followers = [
        ("trainer.evaluate", [f"--model_dir={weighted_dir}", f"--report_dir={root / 'as_trained'}"]),
        ("trainer.evaluate", [f"--model_dir={weighted_dir}", f"--report_dir={root / 'counted'}",
                              "--weighted_metrics=false"]),
        ("trainer.evaluate", [f"--model_dir={binary_dir}"]),
        ("trainer.predict", [f"--model_dir={binary_dir}", f"--input=npz:{eval_path}",
                             f"--output={root / 'predicted.npz'}"]),
    ]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda item: run_cli(*item[1], module=item[0]), followers))
    for result in done:
        assert result.returncode == 0, result.stderr[-3000:]
    return dict(root=root, weighted=(weighted_path, weighted_dir), binary=(binary_dir, ex, ey),
                bad=(trained[2], bad_dir))


def read(path):
    with open(path) as stream:
        return json.load(stream)


def test_weighted_metrics_sum_the_weights_of_each_cell(runs):
    path, model_dir = runs["weighted"]
    bundle = load_data(f"npz:{path}", seed=0)  # the rows the run evaluated (its test split)
    xs, ys, ws = rows_of(bundle.eval)
    serve, _ = load_serving_function(os.path.join(model_dir, "export"), FEATURES_SIGNATURE)
    decided = serve(features=tf.constant(xs))["class_id"].numpy()
    metrics = read(os.path.join(model_dir, "metrics.json"))
    assert metrics["weighted"] is True and metrics["data_splits"]["eval"]["weighted"] is True
    assert metrics["data_splits"]["sample_weights"] == f"array 'w' of {path}"
    expected = weighted_confusion(ys, decided, ws, 3)
    np.testing.assert_allclose(metrics["confusion_matrix"], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["support"], expected.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(metrics["recall"], np.diag(expected) / expected.sum(axis=1), rtol=1e-5)
    # trainer.evaluate: weighted as trained, or counting rows when asked.
    as_trained = read(runs["root"] / "as_trained" / "evaluation.json")
    assert as_trained["weighted"] is True
    np.testing.assert_allclose(as_trained["confusion_matrix"], expected, rtol=1e-5)
    counted = read(runs["root"] / "counted" / "evaluation.json")
    assert counted["weighted"] is False
    np.testing.assert_array_equal(counted["confusion_matrix"], weighted_confusion(ys, decided, None, 3))


def test_a_missing_weight_array_stops_the_run_before_anything_is_written(runs):
    result, model_dir = runs["bad"]
    assert result.returncode == 2
    assert "error: --weight_key='wt' is not an array of file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(model_dir, "checkpoints"))


def test_sigmoid_head_trains_one_logit_and_serves_a_threshold_everywhere_alike(runs):
    model_dir, ex, ey = runs["binary"]
    shapes = [value.shape for value in model_weights(checkpoint_values(os.path.join(model_dir, "checkpoints"))
                                                     ).values()]
    assert (256, 1) in shapes and (1,) in shapes and (256, 2) not in shapes, shapes  # one logit
    metrics = read(os.path.join(model_dir, "metrics.json"))
    assert metrics["flags"]["binary_head"] == "sigmoid"
    assert metrics["decision_data"]["source"] == "out_of_fold" and metrics["decision_data"]["folds"] == 2
    point = read(os.path.join(model_dir, "operating_point.json"))
    assert point["kind"] == "threshold" and point["target_class"] == 1
    assert metrics["decision"].startswith(f"threshold {point['threshold']:.4g} on the probability of class 1")
    export_meta = read(os.path.join(model_dir, "export", "assets.extra", "metadata.json"))
    assert export_meta["head"] == "sigmoid" and export_meta["operating_point"]["kind"] == "threshold"

    predicted = np.load(runs["root"] / "predicted.npz")
    class_id, probabilities = predicted["class_id"], predicted["probabilities"]
    scores = predicted["decision_scores"][:, 1]  # the log-odds of class 1 after the offset
    assert probabilities.shape == (len(ey), 2) and len(set(class_id.tolist())) == 2
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probabilities[:, 1], 1 / (1 + np.exp(-(scores - point["offset"]))), atol=1e-5)
    np.testing.assert_array_equal(class_id, (scores >= 0).astype(int))
    clear = np.abs(probabilities[:, 1] - point["threshold"]) > 1e-6
    np.testing.assert_array_equal(class_id[clear],
                                  (probabilities[clear, 1] >= point["threshold"]).astype(int))
    assert list(predicted["class_name"][:5]) == [str(c) for c in class_id[:5]]
    # The same decisions in the training process (metrics.json), trainer.evaluate and trainer.predict.
    from_predict = weighted_confusion(ey, class_id, None, 2)
    np.testing.assert_array_equal(metrics["confusion_matrix"], from_predict)
    np.testing.assert_array_equal(read(os.path.join(model_dir, "evaluation.json"))["confusion_matrix"],
                                  from_predict)


def test_a_one_logit_export_serves_both_classes_probabilities(tmp_path):
    from trainer.export import export_saved_model
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(1)])
    export_saved_model(model, str(tmp_path / "export"), input_shape=[NUM_FEATURES], class_names=["no", "yes"])
    serve, metadata = load_serving_function(str(tmp_path / "export"))
    features = np.random.default_rng(0).normal(size=(64, NUM_FEATURES)).astype(np.float32) * 3
    z = model(features).numpy()[:, 0]
    out = serve(features=tf.constant(features))
    assert metadata["head"] == "sigmoid"
    np.testing.assert_allclose(out["logits"].numpy(), np.stack([np.zeros_like(z), z], axis=1), atol=1e-6)
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               np.stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))], axis=1), atol=1e-6)
    np.testing.assert_array_equal(out["class_id"].numpy(), (z > 0).astype(int))
    np.testing.assert_array_equal(out["class_name"].numpy(), np.array([b"no", b"yes"])[(z > 0).astype(int)])
