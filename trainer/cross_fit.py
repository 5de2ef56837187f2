"""Cross-fitting: K models on K stratified folds give each training row logits from a model that never saw it.

`out_of_fold_logits` trains the folds, each checkpointed in `<model_dir>/folds/<k>/` and resumable.
"""

# Why: an operating point chosen on a held-out fifth of the training data sees a fifth of a rare
# class (12-16 examples of a class with 60-80), too few to place a recall cut-off; chosen on
# out-of-fold logits it sees every training example of it (scikit-learn's
# TunedThresholdClassifierCV and CalibratedClassifierCV do this for binary thresholds). The served
# model is then either the K fold models' ensemble (`keep_models`, `trainer.fold_ensemble`), whose
# scores on new rows are distributed like the out-of-fold scores the point was chosen on, or the
# one trained on all the training data (the refit).
#
# Files of fold k (1-based, as logged) of a run with `model_dir`:
#   <model_dir>/folds/<k>/fold.json         written when the fold starts: which rows, folds, seed
#   <model_dir>/folds/<k>/checkpoints/      the fold Trainer's own checkpoints (it resumes from them)
#   <model_dir>/folds/<k>/out_of_fold.npz   written atomically when the fold is done: its logits
#   <model_dir>/folds/<k>/fold_model.weights.h5  written just before: the weights that gave them
# A rerun reuses every fold whose out_of_fold.npz matches (not retrained), and resumes the first
# unfinished fold from its checkpoint. In a multi-worker run every worker trains every fold (the
# Trainer's collectives need all of them); the chief writes the files, and every worker reads the
# chief's on a resume (a shared model_dir, as for checkpoints).

from __future__ import annotations

import dataclasses
import gc
import hashlib
import os
from typing import Any, Callable, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer.atomic_files import atomic_write
from trainer.checks import ArgumentError, check_integer, check_positive_integer
from trainer.determinism import MAX_SEED, seed_everything
from trainer.json_files import read_json, write_json_atomically
from trainer.trainer import Trainer

FOLDS_DIRNAME = "folds"
FOLD_FILENAME = "fold.json"
OUT_OF_FOLD_FILENAME = "out_of_fold.npz"
# The fold model's weights as its out-of-fold logits were computed (after any end-of-training
# callback, e.g. early stopping's best weights), for serving the folds' ensemble.
FOLD_WEIGHTS_FILENAME = "fold_model.weights.h5"
# Version of the fold files' format (fold.json, out_of_fold.npz).
FORMAT = 1
# `training_arrays` refuses to load more feature bytes than this into memory.
MAX_IN_MEMORY_BYTES = 4 << 30
# Rows per batch when reading a split into memory.
_READ_BATCH = 4096


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold of a cross-fit: the rows its model trains on and holds out, and where it checkpoints.

    Attributes:
      number: 1-based (as logged, and the name of its directory).
      num_folds: K.
      model_dir: `<model_dir>/folds/<number>`, or None without a `model_dir`;
        the fold's Trainer must checkpoint there.
      seed: The seed the fold was seeded with (`seed_everything`, just before
        `build_trainer` is called) and its shuffle seed.
      train_indices: Sorted rows (of the arrays given) the fold trains on.
      held_out_indices: Sorted rows it holds out (and gives logits for).
      class_counts: int64 `[num_classes]`: training rows per class.
      feature_mean: Mean of its training rows over all axes but the last
        (as `DataBundle.feature_mean`, for a `Normalization` layer).
      feature_variance: Their population variance, same shape.
    """

    number: int
    num_folds: int
    model_dir: Optional[str]
    seed: int
    train_indices: np.ndarray
    held_out_indices: np.ndarray
    class_counts: np.ndarray
    feature_mean: np.ndarray
    feature_variance: np.ndarray


@dataclasses.dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold logits of every row, in the rows' order.

    Attributes:
      logits: float32 `[N, K]`: row i's logits from the model of fold
        `fold_ids[i]`, which did not train on it.
      labels: int64 `[N]`.
      fold_ids: int64 `[N]`: the 0-based fold that held each row out.
      num_folds: Number of folds.
      models: The fold models in fold order (`keep_models=True`), else empty.
    """

    logits: np.ndarray
    labels: np.ndarray
    fold_ids: np.ndarray
    num_folds: int
    models: Tuple[keras.Model, ...] = ()

    @property
    def num_rows(self) -> int:
        return int(len(self.labels))

    def describe(self) -> str:
        """E.g. `out-of-fold logits of 3,064 training rows, 5 folds` (which data chose a decision)."""
        return f"out-of-fold logits of {self.num_rows:,} training rows, {self.num_folds} folds"


# ------------------------------------------------------------------ the folds


def stratified_fold_ids(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """The 0-based fold each row is held out in: stratified by class, seeded.

    Each class's rows go round the folds in a seeded random order, and the
    round continues from one class to the next, so every fold holds
    `floor(n_c / K)` or `ceil(n_c / K)` rows of each class `c` and the folds'
    sizes differ by at most one. The one place that decides the folds (to be
    switched to the data layer's stratified folds).

    Args:
      labels: int `[N]` class indices.
      num_folds: K, in [2, N].
      seed: Seed of the order.

    Raises:
      ArgumentError: naming `num_folds`, `seed` or `labels`.
    """
    labels = _checked_labels(labels)
    num_folds = check_integer(num_folds, "num_folds", minimum=2, maximum=max(2, len(labels)))
    seed = check_integer(seed, "seed", minimum=0, maximum=MAX_SEED)
    return _round_robin_fold_ids(labels, num_folds, seed)


def _round_robin_fold_ids(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0xF01D])
    fold_ids = np.empty(len(labels), np.int64)
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_ids[members] = (start + np.arange(len(members))) % num_folds
        start = (start + len(members)) % num_folds
    return fold_ids


def fold_seed(seed: int, number: int) -> int:
    """The seed of fold `number` (1-based) of a cross-fit seeded with `seed`."""
    return (int(seed) + int(number)) % (MAX_SEED + 1)


def _checked_labels(labels: Any) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) == 0 or array.dtype.kind not in "iu" or np.any(array < 0):
        raise ArgumentError("labels", f"array of shape {array.shape} and dtype {array.dtype}",
                            "must be a non-empty [N] array of non-negative integer class indices")
    return array.astype(np.int64)


# ------------------------------------------------------------------ data in memory


def training_arrays(split: Any, *, max_bytes: int = MAX_IN_MEMORY_BYTES) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a `trainer.data.DataSplit` into memory, in its order: `(features float32, labels int64)`.

    Cross-fitting needs rows by index, so every source (NPZ, synthetic, and
    the streamed CSV and TFRecord files too) is read into memory once, up to
    `max_bytes` of features; a larger split is refused.

    Args:
      split: A `DataSplit` (its `dataset(batch_size, shuffle=False, seed=0)`
        yields its rows in order).
      max_bytes: The most feature bytes to hold.

    Raises:
      ArgumentError: naming `split` when its features take more than `max_bytes`.
    """
    max_bytes = check_positive_integer(max_bytes, "max_bytes")
    row_bytes = 4 * int(np.prod(split.input_shape))
    needed = row_bytes * int(split.num_examples)
    if needed > max_bytes:
        raise ArgumentError(
            "split", f"{split.num_examples:,} rows of shape {tuple(split.input_shape)}",
            f"must fit in memory for cross-fitting: its features take {needed / 2**30:.1f} GiB, more "
            f"than the {max_bytes / 2**30:.1f} GiB allowed; choose the operating point on the "
            f"held-out split instead (no cross-fitting), or subsample the data")
    features, labels = [], []
    for batch in split.dataset(_READ_BATCH, shuffle=False, seed=0):
        if len(batch) > 2:
            raise ArgumentError("split", f"{split.num_examples:,} rows with sample weights",
                                "must be (features, labels) rows: cross-fitting does not carry sample "
                                "weights into the fold models yet")
        features.append(batch[0].numpy())
        labels.append(batch[1].numpy())
    return np.concatenate(features).astype(np.float32, copy=False), np.concatenate(labels).astype(np.int64)


def _moments(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).astype(np.float32), flat.var(axis=0).astype(np.float32)


def _dataset(features: np.ndarray, labels: np.ndarray, batch_size: int,
             shuffle_seed: Optional[int]) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((features, labels.astype(np.int32)))
    if shuffle_seed is not None:
        data = data.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------ fold files


def _signature(features: np.ndarray, labels: np.ndarray, fold_ids: np.ndarray, num_folds: int,
               seed: int) -> str:
    """A digest of what a cross-fit's folds are: its rows, their folds and the seed."""
    digest = hashlib.sha256()
    digest.update(f"format {FORMAT}; {num_folds} folds; seed {seed}; shape {features.shape}".encode())
    for array in (labels.astype(np.int64), fold_ids.astype(np.int64), features):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def fold_directory(model_dir: str, number: int) -> str:
    """`<model_dir>/folds/<number>`: where fold `number` (1-based) keeps its files."""
    return os.path.join(model_dir, FOLDS_DIRNAME, str(int(number)))


def _check_fold_file(directory: str, signature: str, number: int, num_folds: int, model_dir: str) -> None:
    """Refuses a fold directory written by another cross-fit; writes nothing."""
    path = os.path.join(directory, FOLD_FILENAME)
    if not os.path.isfile(path):
        return
    saved = read_json(path)
    if saved.get("signature") != signature:
        raise ArgumentError(
            "model_dir", model_dir,
            f"holds fold {number}/{num_folds} of another cross-fit ({path}: other rows, folds or "
            f"seed); remove {os.path.join(model_dir, FOLDS_DIRNAME)} to cross-fit again")


def _load_finished(directory: str, signature: str, epochs: int, held_out: np.ndarray, number: int,
                   num_folds: int, model_dir: str) -> Optional[np.ndarray]:
    """The saved out-of-fold logits of a finished fold, or None when it must (re)train."""
    path = os.path.join(directory, OUT_OF_FOLD_FILENAME)
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["signature"]) != signature or not np.array_equal(saved["indices"], held_out):
            raise ArgumentError(
                "model_dir", model_dir,
                f"holds fold {number}/{num_folds} of another cross-fit ({path}); remove "
                f"{os.path.join(model_dir, FOLDS_DIRNAME)} to cross-fit again")
        saved_epochs = int(saved["epochs"])
        if saved_epochs > epochs:
            raise ArgumentError(
                "epochs", epochs,
                f"must be at least the {saved_epochs} epochs fold {number}/{num_folds} of {model_dir} "
                f"was trained for")
        if saved_epochs < epochs:
            logging.info("Fold %d/%d: finished at %d epochs; training it on to %d.", number, num_folds,
                         saved_epochs, epochs)
            return None
        return np.asarray(saved["logits"], np.float32)


def _save_finished(directory: str, signature: str, epochs: int, held_out: np.ndarray,
                   logits: np.ndarray, labels: np.ndarray) -> str:
    """Writes a fold's out-of-fold logits through a temporary file and a rename; returns the path."""
    path = os.path.join(directory, OUT_OF_FOLD_FILENAME)
    with atomic_write(path, "wb", durable=True) as stream:
        np.savez(stream, format=np.int64(FORMAT), signature=np.str_(signature),
                 epochs=np.int64(epochs), indices=held_out, logits=logits, labels=labels)
    return path


def _save_weights(model: keras.Model, path: str) -> None:
    """`model.save_weights(path)` through a temporary file in the same directory and a rename."""
    temporary = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        model.save_weights(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# ------------------------------------------------------------------ cross-fitting


def _prepared(features: Any, labels: Any, num_folds: Any, seed: Any, fold_ids: Any
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Checked `(features float32, labels int64, fold_ids int64, signature)` of a cross-fit."""
    labels = _checked_labels(labels)
    features = np.asarray(features)
    if features.ndim < 2 or len(features) != len(labels) or not np.issubdtype(features.dtype, np.number):
        raise ArgumentError("features", f"array of shape {features.shape} and dtype {features.dtype}",
                            f"must be numeric [N, ...] with one row per label ({len(labels)})")
    features = features.astype(np.float32, copy=False)
    num_folds = check_integer(num_folds, "num_folds", minimum=2, maximum=max(2, len(labels)))
    seed = check_integer(seed, "seed", minimum=0, maximum=MAX_SEED)
    if fold_ids is None:
        fold_ids = _round_robin_fold_ids(labels, num_folds, seed)
    else:
        fold_ids = np.asarray(fold_ids)
        if fold_ids.shape != labels.shape or fold_ids.dtype.kind not in "iu" or not np.array_equal(
                np.unique(fold_ids), np.arange(num_folds)):
            raise ArgumentError("fold_ids", f"array of shape {fold_ids.shape}",
                                f"must give each of the {len(labels)} rows a fold in 0..{num_folds - 1}, "
                                f"every fold at least one row")
        fold_ids = fold_ids.astype(np.int64)
    return features, labels, fold_ids, _signature(features, labels, fold_ids, num_folds, seed)


def finished_folds(features: np.ndarray, labels: np.ndarray, *, num_folds: int, epochs: int, seed: int = 0,
                   model_dir: str, fold_ids: Optional[np.ndarray] = None) -> List[int]:
    """Checks `model_dir`'s fold files against a cross-fit before any training; returns the finished folds.

    `out_of_fold_logits` with the same arguments would reuse the returned
    folds (1-based) and train the others. Call it first to refuse a
    directory of another cross-fit before anything trains.

    Raises:
      ArgumentError: as `out_of_fold_logits` would (`model_dir` of another
        cross-fit, `epochs` fewer than a saved fold's, bad arguments).
    """
    epochs = check_positive_integer(epochs, "epochs")
    features, labels, fold_ids, signature = _prepared(features, labels, num_folds, seed, fold_ids)
    done = []
    for index in range(int(fold_ids.max()) + 1):
        number = index + 1
        directory = fold_directory(model_dir, number)
        _check_fold_file(directory, signature, number, num_folds, model_dir)
        held_out = np.flatnonzero(fold_ids == index)
        if _load_finished(directory, signature, epochs, held_out, number, num_folds, model_dir) is not None:
            done.append(number)
    return done


def out_of_fold_logits(build_trainer: Callable[[Fold], Trainer], features: np.ndarray,
                       labels: np.ndarray, *, num_folds: int = 5, epochs: int, batch_size: int,
                       seed: int = 0, model_dir: Optional[str] = None,
                       validation_data: Optional[tf.data.Dataset] = None,
                       fold_ids: Optional[np.ndarray] = None,
                       num_classes: Optional[int] = None, keep_models: bool = False) -> OutOfFold:
    """Trains one model per fold and returns every row's logits from the model that held it out.

    For fold k of K: seeds everything with `fold_seed(seed, k)`, calls
    `build_trainer(fold)` for a fresh Trainer (its model, loss, rule and
    callbacks built for that fold: its class counts and feature statistics
    are in `fold`), trains it on the other folds' rows for `epochs` (shuffled
    with the fold's seed, batches of `batch_size`, `validation_data` evaluated
    after each epoch as `Trainer.fit` does), and collects its logits on the
    rows it held out. The Trainer's strategy is whatever `build_trainer`
    gives it (pass the run's strategy through).

    With `model_dir`, each fold checkpoints in `<model_dir>/folds/<k>/` and a
    finished fold's logits are saved there atomically, so a rerun after a kill
    reuses the finished folds (not retrained) and resumes the interrupted one
    from its own checkpoint. A directory written for other rows, folds or
    seed is refused. Logs a `Fold k/K` line as each fold starts and ends.

    With `keep_models`, the fold models are returned too (to serve their
    ensemble): a finished fold's model is rebuilt with `build_trainer` and
    loaded from its saved weights (`FOLD_WEIGHTS_FILENAME`; its last
    checkpoint for a fold saved without them), and its logits on the rows it
    held out must match the saved ones (else it is refused).

    Args:
      build_trainer: `Fold -> Trainer`; the Trainer's `model_dir` must be
        `fold.model_dir`.
      features: float `[N, ...]` training rows (e.g. `training_arrays(bundle.train)`).
      labels: int `[N]` their class indices.
      num_folds: K, in [2, N].
      epochs: Epochs per fold model (as `Trainer.fit(total_epochs=...)`).
      batch_size: Global batch size of the fold models.
      seed: Seed of the folds (`stratified_fold_ids`) and of each fold's model.
      model_dir: Where the folds' directories go; None keeps nothing.
      validation_data: Batched data each fold's `fit` evaluates per epoch (for
        recall-driven callbacks); never rows of `features`.
      fold_ids: int `[N]` 0-based fold of each row, instead of
        `stratified_fold_ids(labels, num_folds, seed)`; every fold must hold
        out at least one row.
      num_classes: Length of each fold's `class_counts` (the model's classes);
        default the largest label + 1.
      keep_models: Whether to return the fold models (`OutOfFold.models`).

    Returns:
      The `OutOfFold` logits, labels and fold ids, in the rows' order (and the models).

    Raises:
      ArgumentError: naming the argument that is out of range, `model_dir`
        when it holds another cross-fit, `epochs` when a saved fold was
        trained for more.
      ValueError: when a fold's Trainer does not checkpoint in its fold's directory.
    """
    if not callable(build_trainer):
        raise ArgumentError("build_trainer", build_trainer, "must be a callable Fold -> Trainer")
    epochs = check_positive_integer(epochs, "epochs")
    batch_size = check_positive_integer(batch_size, "batch_size")
    features, labels, fold_ids, signature = _prepared(features, labels, num_folds, seed, fold_ids)
    num_folds = int(fold_ids.max()) + 1
    largest = int(labels.max()) + 1
    num_classes = largest if num_classes is None else check_integer(num_classes, "num_classes",
                                                                      minimum=largest)
    logits_by_row: Optional[np.ndarray] = None
    models: List[keras.Model] = []
    fold_args = dict(num_folds=num_folds, signature=signature, seed=seed, epochs=epochs,
                     batch_size=batch_size, num_classes=num_classes, validation_data=validation_data)

    for index in range(num_folds):
        number = index + 1
        held_out = np.flatnonzero(fold_ids == index)
        train = np.flatnonzero(fold_ids != index)
        directory = None if model_dir is None else fold_directory(model_dir, number)
        fold_logits = None
        if directory is not None:
            _check_fold_file(directory, signature, number, num_folds, model_dir)
            fold_logits = _load_finished(directory, signature, epochs, held_out, number, num_folds,
                                         model_dir)
        if fold_logits is not None:
            logging.info("Fold %d/%d: finished earlier (%s), not retrained.", number, num_folds,
                         os.path.join(directory, OUT_OF_FOLD_FILENAME))
            if keep_models:
                models.append(_restored_fold_model(build_trainer, features, labels, train, held_out,
                                                   fold_logits, number=number, directory=directory,
                                                   model_dir=model_dir, **fold_args))
        else:
            fold_logits, model = _train_fold(build_trainer, features, labels, train, held_out,
                                             number=number, directory=directory, **fold_args)
            if keep_models:
                models.append(model)
        if logits_by_row is None:
            logits_by_row = np.zeros((len(labels), fold_logits.shape[1]), np.float32)
        logits_by_row[held_out] = fold_logits
    return OutOfFold(logits=logits_by_row, labels=labels, fold_ids=fold_ids, num_folds=num_folds,
                     models=tuple(models))


def _fold_trainer(build_trainer: Callable[[Fold], Trainer], features: np.ndarray, labels: np.ndarray,
                  train: np.ndarray, held_out: np.ndarray, *, number: int, num_folds: int,
                  directory: Optional[str], seed: int, num_classes: int, warn: bool) -> Trainer:
    """Seeds fold `number` and builds its Trainer (checked: a Trainer in the fold's directory)."""
    class_counts = np.bincount(labels[train], minlength=num_classes).astype(np.int64)
    absent = [c for c in range(num_classes) if class_counts[c] == 0 and np.any(labels == c)]
    if absent and warn:
        logging.warning("Fold %d/%d trains on no example of class(es) %s (too few rows to share "
                        "among %d folds).", number, num_folds, absent, num_folds)
    mean, variance = _moments(features[train])
    this_seed = fold_seed(seed, number)
    fold = Fold(number=number, num_folds=num_folds, model_dir=directory, seed=this_seed,
                train_indices=train, held_out_indices=held_out, class_counts=class_counts,
                feature_mean=mean, feature_variance=variance)
    seed_everything(this_seed)
    trainer = build_trainer(fold)
    if not isinstance(trainer, Trainer):
        raise ValueError(f"build_trainer must return a trainer.Trainer, got {type(trainer).__name__}.")
    if trainer.model_dir != directory:
        raise ValueError(f"build_trainer must give fold {number}'s Trainer model_dir={directory!r} "
                         f"(fold.model_dir), got {trainer.model_dir!r}.")
    return trainer


def _restored_fold_model(build_trainer: Callable[[Fold], Trainer], features: np.ndarray,
                         labels: np.ndarray, train: np.ndarray, held_out: np.ndarray,
                         saved_logits: np.ndarray, *, number: int, num_folds: int, directory: str,
                         model_dir: str, signature: str, seed: int, epochs: int, batch_size: int,
                         num_classes: int, validation_data: Optional[tf.data.Dataset]) -> keras.Model:
    """A finished fold's model: its saved weights (else its last checkpoint), checked against its logits."""
    del signature, epochs, validation_data  # checked by the caller; nothing trains here
    trainer = _fold_trainer(build_trainer, features, labels, train, held_out, number=number,
                            num_folds=num_folds, directory=directory, seed=seed,
                            num_classes=num_classes, warn=False)
    trainer.predict_logits(features[held_out[:1]])  # builds the model and restores its last checkpoint
    weights = os.path.join(directory, FOLD_WEIGHTS_FILENAME)
    source = "its last checkpoint"
    if os.path.isfile(weights):
        trainer.model.load_weights(weights)
        source = weights
    logits, _ = trainer.collect_logits(_dataset(features[held_out], labels[held_out], batch_size, None))
    if not np.allclose(logits, saved_logits, rtol=1e-4, atol=1e-4):
        raise ArgumentError(
            "model_dir", model_dir,
            f"holds fold {number}/{num_folds} whose model ({source}) gives other logits than the "
            f"fold's saved out-of-fold logits (largest difference "
            f"{np.max(np.abs(logits - saved_logits)):.3g}); remove "
            f"{os.path.join(model_dir, FOLDS_DIRNAME)} to cross-fit again")
    logging.info("Fold %d/%d: model restored from %s (to serve the folds' ensemble).", number,
                 num_folds, source)
    return trainer.model


def _train_fold(build_trainer: Callable[[Fold], Trainer], features: np.ndarray, labels: np.ndarray,
                train: np.ndarray, held_out: np.ndarray, *, number: int, num_folds: int,
                directory: Optional[str], signature: str, seed: int, epochs: int, batch_size: int,
                num_classes: int, validation_data: Optional[tf.data.Dataset]
                ) -> Tuple[np.ndarray, keras.Model]:
    """Trains (or resumes) one fold; returns its logits on the rows it holds out, and its model."""
    trainer = _fold_trainer(build_trainer, features, labels, train, held_out, number=number,
                            num_folds=num_folds, directory=directory, seed=seed,
                            num_classes=num_classes, warn=True)
    this_seed = fold_seed(seed, number)
    if directory is not None and trainer.is_chief:
        write_json_atomically(os.path.join(directory, FOLD_FILENAME), {
            "format": FORMAT, "signature": signature, "fold": number, "num_folds": num_folds,
            "seed": this_seed, "train_rows": len(train), "held_out_rows": len(held_out)})
    logging.info("Fold %d/%d: training on %d rows, holding out %d (class counts held out: %s).",
                 number, num_folds, len(train), len(held_out),
                 np.bincount(labels[held_out], minlength=num_classes).tolist())
    trainer.fit(_dataset(features[train], labels[train], batch_size, this_seed),
                total_epochs=epochs, validation_data=validation_data)
    logits, got = trainer.collect_logits(_dataset(features[held_out], labels[held_out], batch_size, None))
    if not np.array_equal(got, labels[held_out]):
        raise RuntimeError(f"fold {number}: the held-out logits came back out of order.")
    logits = np.asarray(logits, np.float32)
    if directory is not None and trainer.is_chief:
        _save_weights(trainer.model, os.path.join(directory, FOLD_WEIGHTS_FILENAME))
        path = _save_finished(directory, signature, epochs, held_out, logits, labels[held_out])
        logging.info("Fold %d/%d: done; out-of-fold logits of %d rows saved to %s.", number, num_folds,
                     len(held_out), path)
    else:
        logging.info("Fold %d/%d: done.", number, num_folds)
    model = trainer.model
    del trainer
    gc.collect()
    return logits, model
