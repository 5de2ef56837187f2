"""`trainer.cross_fit`: stratified folds, out-of-fold logits against a NumPy forward pass, fold resumes."""

import hashlib
import os

import keras
import numpy as np
import pytest

from small_models import small_mlp
from trainer import Trainer, cross_fit
from trainer import data as data_lib
from trainer.checks import ArgumentError

NUM_FEATURES = 4
NUM_CLASSES = 3
BATCH = 16


def _data(num_examples=96, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(NUM_CLASSES, size=num_examples, p=[0.6, 0.3, 0.1]).astype(np.int64)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    features = (rng.normal(size=(num_examples, NUM_FEATURES)) + labels[:, None]).astype(np.float32)
    return features, labels


class _Recorder(keras.callbacks.Callback):
    """Records the epochs a fold's fit begins; raises `Injected` at the end of one (a crash)."""

    def __init__(self, epochs_begun, raise_at_epoch_end=None):
        super().__init__()
        self.epochs_begun = epochs_begun
        self.raise_at_epoch_end = raise_at_epoch_end

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs_begun.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.raise_at_epoch_end:
            raise Injected(f"crash at the end of epoch {epoch}")


class Injected(RuntimeError):
    pass


def _factory(calls, *, strategy=None, epochs_begun=None, crash=None):
    """`build_trainer`: a small MLP per fold; `crash=(fold, epoch)` raises at that epoch's end."""

    def build(fold):
        calls.append(fold)
        begun = epochs_begun.setdefault(fold.number, []) if epochs_begun is not None else []
        at = crash[1] if crash is not None and crash[0] == fold.number else None
        return Trainer(model=lambda: small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, seed=fold.seed),
                       optimizer=lambda: keras.optimizers.Adam(0.01), num_classes=NUM_CLASSES,
                       steps_per_loop=3, model_dir=fold.model_dir, strategy=strategy,
                       callbacks=[_Recorder(begun, at)])

    return build


def _numpy_logits(model, features):
    """The MLP's logits computed from its weights in NumPy: relu(x W1 + b1) W2 + b2."""
    w1, b1, w2, b2 = model.get_weights()
    return np.maximum(features @ w1 + b1, 0.0) @ w2 + b2


def _restored_fold_model(model_dir, number):
    trainer = Trainer(model=lambda: small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8),
                      optimizer=lambda: keras.optimizers.Adam(0.01), num_classes=NUM_CLASSES,
                      model_dir=cross_fit.fold_directory(str(model_dir), number))
    trainer.predict_logits(np.zeros((1, NUM_FEATURES), np.float32))  # restores the latest checkpoint
    return trainer.model


def _files_digest(directory):
    """{relative path: (sha256, mtime_ns)} of every file under `directory`."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, directory)] = (hashlib.sha256(stream.read()).hexdigest(),
                                                           os.stat(path).st_mtime_ns)
    return found


# ------------------------------------------------------------------ folds


def test_stratified_fold_ids_hold_each_class_evenly_and_are_seeded():
    labels = np.repeat(np.arange(4), [50, 23, 7, 2])
    np.random.default_rng(1).shuffle(labels)
    fold_ids = cross_fit.stratified_fold_ids(labels, 5, seed=3)
    assert fold_ids.shape == labels.shape and set(np.unique(fold_ids)) == set(range(5))
    for label, count in zip(range(4), (50, 23, 7, 2)):
        per_fold = np.bincount(fold_ids[labels == label], minlength=5)
        assert set(per_fold) <= {count // 5, -(-count // 5)}, (label, per_fold)
    sizes = np.bincount(fold_ids, minlength=5)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(labels)
    np.testing.assert_array_equal(fold_ids, cross_fit.stratified_fold_ids(labels, 5, seed=3))
    assert not np.array_equal(fold_ids, cross_fit.stratified_fold_ids(labels, 5, seed=4))


@pytest.mark.parametrize("call, argument", [
    (lambda: cross_fit.stratified_fold_ids(np.zeros(10, np.int64), 1, 0), "num_folds"),
    (lambda: cross_fit.stratified_fold_ids(np.zeros(3, np.int64), 4, 0), "num_folds"),
    (lambda: cross_fit.stratified_fold_ids(np.zeros((3, 2), np.int64), 2, 0), "labels"),
    (lambda: cross_fit.stratified_fold_ids(np.array([0.5, 1.0]), 2, 0), "labels"),
    (lambda: cross_fit.out_of_fold_logits(None, *_data(), epochs=1, batch_size=8), "build_trainer"),
    (lambda: cross_fit.out_of_fold_logits(_factory([]), *_data(), epochs=0, batch_size=8), "epochs"),
    (lambda: cross_fit.out_of_fold_logits(_factory([]), _data()[0][:5], _data()[1], epochs=1,
                                          batch_size=8), "features"),
    (lambda: cross_fit.out_of_fold_logits(_factory([]), *_data(), num_folds=2, epochs=1, batch_size=8,
                                          fold_ids=np.zeros(96, np.int64)), "fold_ids"),
    (lambda: cross_fit.out_of_fold_logits(_factory([]), *_data(), num_folds=2, epochs=1, batch_size=8,
                                          num_classes=2), "num_classes"),
])
def test_bad_arguments_name_themselves(call, argument):
    with pytest.raises(ArgumentError) as caught:
        call()
    assert caught.value.argument == argument


# ------------------------------------------------------------------ out-of-fold logits


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 3-fold cross-fit, 3 epochs per fold, with its model_dir and the folds its factory saw."""
    model_dir = tmp_path_factory.mktemp("cross_fit") / "straight"
    features, labels = _data()
    calls = []
    result = cross_fit.out_of_fold_logits(_factory(calls), features, labels, num_folds=3, epochs=3,
                                          batch_size=BATCH, seed=7, model_dir=str(model_dir))
    return model_dir, features, labels, calls, result


def test_each_row_is_held_out_once_and_has_the_logits_of_the_model_that_did_not_train_on_it(uninterrupted):
    model_dir, features, labels, calls, result = uninterrupted
    assert [fold.number for fold in calls] == [1, 2, 3]
    np.testing.assert_array_equal(result.labels, labels)
    held = np.concatenate([fold.held_out_indices for fold in calls])
    np.testing.assert_array_equal(np.sort(held), np.arange(len(labels)))  # every row exactly once
    for fold in calls:
        assert np.intersect1d(fold.train_indices, fold.held_out_indices).size == 0
        np.testing.assert_array_equal(np.union1d(fold.train_indices, fold.held_out_indices),
                                      np.arange(len(labels)))
        np.testing.assert_array_equal(np.flatnonzero(result.fold_ids == fold.number - 1),
                                      fold.held_out_indices)
        np.testing.assert_array_equal(fold.class_counts, np.bincount(labels[fold.train_indices],
                                                                     minlength=NUM_CLASSES))
        np.testing.assert_allclose(fold.feature_mean, features[fold.train_indices].mean(axis=0),
                                   rtol=1e-5, atol=1e-6)
        assert fold.model_dir == os.path.join(str(model_dir), "folds", str(fold.number))
        # The fold's model as its last checkpoint holds it, run in NumPy on the rows it held out.
        model = _restored_fold_model(model_dir, fold.number)
        rows = fold.held_out_indices
        np.testing.assert_allclose(result.logits[rows], _numpy_logits(model, features[rows]),
                                   rtol=1e-4, atol=1e-5)
        # ...and not the logits of another fold's model (the oracle tells the models apart).
        other = _restored_fold_model(model_dir, fold.number % 3 + 1)
        assert not np.allclose(result.logits[rows], _numpy_logits(other, features[rows]), atol=1e-3)
    assert result.describe() == f"out-of-fold logits of {len(labels)} training rows, 3 folds"


def test_a_crash_in_fold_2_resumes_there_without_retraining_fold_1(uninterrupted, tmp_path):
    _, features, labels, _, straight = uninterrupted
    model_dir = str(tmp_path / "crashed")
    first_calls, begun = [], {}
    with pytest.raises(Injected):
        cross_fit.out_of_fold_logits(_factory(first_calls, epochs_begun=begun, crash=(2, 1)), features,
                                     labels, num_folds=3, epochs=3, batch_size=BATCH, seed=7,
                                     model_dir=model_dir)
    assert begun == {1: [0, 1, 2], 2: [0, 1]}
    fold_1 = cross_fit.fold_directory(model_dir, 1)
    fold_2 = cross_fit.fold_directory(model_dir, 2)
    assert os.path.isfile(os.path.join(fold_1, cross_fit.OUT_OF_FOLD_FILENAME))
    assert not os.path.exists(os.path.join(fold_2, cross_fit.OUT_OF_FOLD_FILENAME))
    before = _files_digest(fold_1)
    assert cross_fit.finished_folds(features, labels, num_folds=3, epochs=3, seed=7,
                                    model_dir=model_dir) == [1]

    calls, begun = [], {}
    resumed = cross_fit.out_of_fold_logits(_factory(calls, epochs_begun=begun), features, labels,
                                           num_folds=3, epochs=3, batch_size=BATCH, seed=7,
                                           model_dir=model_dir)
    assert [fold.number for fold in calls] == [2, 3], "fold 1 is not rebuilt"
    assert begun == {2: [1, 2], 3: [0, 1, 2]}, "fold 2 resumes after its first epoch's checkpoint"
    assert _files_digest(fold_1) == before, "fold 1's files are untouched"
    np.testing.assert_array_equal(resumed.fold_ids, straight.fold_ids)
    np.testing.assert_allclose(resumed.logits, straight.logits, rtol=1e-6, atol=1e-6)

    # A third call reuses all three folds and builds nothing.
    calls = []
    again = cross_fit.out_of_fold_logits(_factory(calls), features, labels, num_folds=3, epochs=3,
                                         batch_size=BATCH, seed=7, model_dir=model_dir)
    assert calls == [] and np.array_equal(again.logits, resumed.logits)
    assert cross_fit.finished_folds(features, labels, num_folds=3, epochs=3, seed=7,
                                    model_dir=model_dir) == [1, 2, 3]


def test_a_model_dir_of_another_cross_fit_is_refused(uninterrupted):
    model_dir, features, labels, _, _ = uninterrupted
    calls = []
    with pytest.raises(ArgumentError, match="holds fold 1/3 of another cross-fit") as caught:
        cross_fit.out_of_fold_logits(_factory(calls), features, labels, num_folds=3, epochs=3,
                                     batch_size=BATCH, seed=8, model_dir=str(model_dir))
    assert caught.value.argument == "model_dir" and calls == []
    with pytest.raises(ArgumentError, match="holds fold 1/2 of another cross-fit"):
        cross_fit.finished_folds(features, labels, num_folds=2, epochs=3, seed=7, model_dir=str(model_dir))
    with pytest.raises(ArgumentError) as caught:
        cross_fit.out_of_fold_logits(_factory(calls), features, labels, num_folds=3, epochs=2,
                                     batch_size=BATCH, seed=7, model_dir=str(model_dir))
    assert caught.value.argument == "epochs" and calls == []


def test_a_trainer_outside_its_fold_directory_is_refused(tmp_path):
    def build(fold):
        return Trainer(model=lambda: small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=4),
                       num_classes=NUM_CLASSES, model_dir=str(tmp_path / "elsewhere"))

    with pytest.raises(ValueError, match="fold.model_dir"):
        cross_fit.out_of_fold_logits(build, *_data(), num_folds=2, epochs=1, batch_size=BATCH,
                                     model_dir=str(tmp_path / "run"))


def test_under_a_mirrored_strategy_each_row_has_its_fold_models_logits(mirrored, tmp_path):
    features, labels = _data(64)
    calls = []
    result = cross_fit.out_of_fold_logits(_factory(calls, strategy=mirrored), features, labels,
                                          num_folds=2, epochs=2, batch_size=BATCH, seed=1,
                                          model_dir=str(tmp_path))
    assert [fold.number for fold in calls] == [1, 2]
    for fold in calls:
        rows = fold.held_out_indices
        model = _restored_fold_model(tmp_path, fold.number)
        np.testing.assert_allclose(result.logits[rows], _numpy_logits(model, features[rows]),
                                   rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the fold models (to serve their ensemble)


class _BestWeightsAtEnd(keras.callbacks.Callback):
    """Puts back the first epoch's weights when training ends (as early stopping's best weights do)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.first = [w.copy() for w in self.model.get_weights()]

    def on_train_end(self, logs=None):
        self.model.set_weights(self.first)


def test_keep_models_returns_each_fold_model_and_a_rerun_restores_the_same_ones(uninterrupted, tmp_path):
    _, features, labels, _, _ = uninterrupted
    model_dir = str(tmp_path / "kept")
    new_rows = np.random.default_rng(5).normal(size=(40, NUM_FEATURES)).astype(np.float32)
    first = cross_fit.out_of_fold_logits(_factory([]), features, labels, num_folds=3, epochs=2,
                                         batch_size=BATCH, seed=7, model_dir=model_dir, keep_models=True)
    assert len(first.models) == 3
    first_logits = [_numpy_logits(model, new_rows) for model in first.models]
    for index, model in enumerate(first.models):  # model k gave the out-of-fold logits of fold k's rows
        rows = np.flatnonzero(first.fold_ids == index)
        np.testing.assert_allclose(first.logits[rows], _numpy_logits(model, features[rows]),
                                   rtol=1e-4, atol=1e-5)
        assert os.path.isfile(os.path.join(cross_fit.fold_directory(model_dir, index + 1),
                                           cross_fit.FOLD_WEIGHTS_FILENAME))
    assert cross_fit.out_of_fold_logits(_factory([]), features, labels, num_folds=3, epochs=2,
                                        batch_size=BATCH, seed=7, model_dir=model_dir).models == ()
    # A rerun trains nothing and rebuilds the same three models from the fold files.
    calls, begun = [], {}
    again = cross_fit.out_of_fold_logits(_factory(calls, epochs_begun=begun), features, labels,
                                         num_folds=3, epochs=2, batch_size=BATCH, seed=7,
                                         model_dir=model_dir, keep_models=True)
    assert [fold.number for fold in calls] == [1, 2, 3] and all(not e for e in begun.values())
    for model, want in zip(again.models, first_logits):
        np.testing.assert_allclose(_numpy_logits(model, new_rows), want, rtol=1e-6, atol=1e-6)
    # A fold file whose model does not give the saved logits is refused, naming model_dir.
    first.models[0].save_weights(os.path.join(cross_fit.fold_directory(model_dir, 2),
                                              cross_fit.FOLD_WEIGHTS_FILENAME))
    with pytest.raises(ArgumentError, match="holds fold 2/3 whose model") as caught:
        cross_fit.out_of_fold_logits(_factory([]), features, labels, num_folds=3, epochs=2,
                                     batch_size=BATCH, seed=7, model_dir=model_dir, keep_models=True)
    assert caught.value.argument == "model_dir"


def test_kept_models_are_the_weights_that_gave_the_logits_not_the_last_checkpoint(tmp_path):
    features, labels = _data()

    def build(fold):
        return Trainer(model=lambda: small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, seed=fold.seed),
                       optimizer=lambda: keras.optimizers.Adam(0.05), num_classes=NUM_CLASSES,
                       model_dir=fold.model_dir, callbacks=[_BestWeightsAtEnd()])

    model_dir = str(tmp_path / "best")
    first = cross_fit.out_of_fold_logits(build, features, labels, num_folds=2, epochs=3, batch_size=BATCH,
                                         seed=2, model_dir=model_dir, keep_models=True)
    again = cross_fit.out_of_fold_logits(build, features, labels, num_folds=2, epochs=3, batch_size=BATCH,
                                         seed=2, model_dir=model_dir, keep_models=True)
    for index, model in enumerate(again.models):
        rows = np.flatnonzero(first.fold_ids == index)
        np.testing.assert_allclose(_numpy_logits(model, features[rows]), first.logits[rows],
                                   rtol=1e-4, atol=1e-5)
        last = _restored_fold_model(model_dir, index + 1)  # the last checkpoint: epoch 3's weights
        assert not np.allclose(_numpy_logits(last, features[rows]), first.logits[rows], atol=1e-3)


# ------------------------------------------------------------------ data in memory


def test_training_arrays_reads_a_streamed_csv_split_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(float(a), float(b), int(c)) for a, b, c in zip(rng.normal(size=60), rng.normal(size=60),
                                                          rng.choice(3, size=60, p=[0.6, 0.3, 0.1]))]
    rows[0] = (rows[0][0], rows[0][1], 2)
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n" + "".join(f"{a:.6f},{b:.6f},{c}\n" for a, b, c in rows))
    bundle = data_lib.load_data(f"csv:{path}", validation_split=0.25, seed=0)
    splits = [bundle.train, bundle.eval] + ([bundle.validation] if bundle.validation is not None
                                            and bundle.validation is not bundle.eval else [])
    table = np.array([[a, b] for a, b, _ in rows], np.float32)
    seen = []
    for split in splits:
        side_x, side_y = cross_fit.training_arrays(split)
        assert len(side_y) == split.num_examples
        np.testing.assert_array_equal(np.bincount(side_y, minlength=3), split.class_counts)
        # Each side keeps the file's order and its labels.
        positions = [int(np.flatnonzero(np.all(np.isclose(table, row, atol=1e-6), axis=1))[0])
                     for row in side_x]
        assert positions == sorted(positions)
        np.testing.assert_array_equal(side_y, [rows[i][2] for i in positions])
        seen += positions
    assert sorted(seen) == list(range(len(rows))), "every file row is on exactly one side"
    with pytest.raises(ArgumentError, match="must fit in memory for cross-fitting") as caught:
        cross_fit.training_arrays(bundle.train, max_bytes=100)
    assert caught.value.argument == "split"
