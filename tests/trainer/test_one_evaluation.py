"""One evaluation per epoch: every recall feature reads the Trainer's single pass over the held-out data."""

import numpy as np
import tensorflow as tf

from callbacks import RecallEarlyStopping, RecallReduceLROnPlateau, RecallTarget, TensorBoardExtras
from small_models import batched, small_mlp
from trainer import Trainer
from trainer.metrics import count_confusion_matrix

NUM_FEATURES, NUM_CLASSES, BATCH = 6, 3, 32


def make_data(num_examples, seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(NUM_CLASSES, size=num_examples, p=[0.6, 0.3, 0.1]).astype(np.int64)
    centres = rng.normal(size=(NUM_CLASSES, NUM_FEATURES)) * 1.5
    features = (centres[labels] + rng.normal(size=(num_examples, NUM_FEATURES))).astype(np.float32)
    return features, labels


class CountedBatches:
    """A dataset of batches that counts every batch anything reads from it."""

    def __init__(self, features, labels):
        self.features, self.labels, self.reads = features, labels, 0
        self.num_batches = -(-len(labels) // BATCH)
        self.dataset = tf.data.Dataset.from_generator(
            self._batches, output_signature=(tf.TensorSpec([None, NUM_FEATURES], tf.float32),
                                             tf.TensorSpec([None], tf.int64)))

    def _batches(self):
        for start in range(0, len(self.labels), BATCH):
            self.reads += 1
            yield self.features[start:start + BATCH], self.labels[start:start + BATCH]


def make_model():
    return small_mlp(NUM_FEATURES, NUM_CLASSES, hidden=8, seed=0)


def recall_callbacks(rule, log_dir, controller_data=None, extras_data=None):
    return [rule.controller(validation_data=controller_data),
            TensorBoardExtras(str(log_dir), extras_data, class_names=["a", "b", "c"]),
            RecallEarlyStopping(monitor="val_recall/2", patience=5),
            RecallReduceLROnPlateau(monitor="val_recall/2", patience=5)]


def test_every_recall_feature_reads_one_pass_per_epoch(tmp_path):
    train = batched(*make_data(256, seed=0), BATCH)
    held_out = CountedBatches(*make_data(96, seed=1))
    rule = RecallTarget(target_class=2, target_recall=0.9)
    trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=rule,
                      model_dir=str(tmp_path / "run"),
                      callbacks=recall_callbacks(rule, tmp_path / "run"))
    trainer.fit(train, epochs=3, validation_data=held_out.dataset)
    assert int(rule.num_updates.numpy()) == 3, "the controller updated once per epoch"
    assert held_out.reads == 3 * held_out.num_batches, (
        f"{held_out.reads} batches read over 3 epochs of {held_out.num_batches} batches each")


def test_the_shared_evaluation_drives_the_controller_as_its_own_pass_would(tmp_path):
    """Oracle: the same run with each callback running the model itself (the model.fit way)."""
    train = batched(*make_data(256, seed=0), BATCH)
    features, labels = make_data(96, seed=1)
    held_out = batched(features, labels, BATCH)

    def run(name, shared):
        rule = RecallTarget(target_class=2, target_recall=0.9)
        callbacks = (recall_callbacks(rule, tmp_path / name) if shared else
                     recall_callbacks(rule, tmp_path / name, held_out, held_out))
        trainer = Trainer(model=make_model, num_classes=NUM_CLASSES, reweighting=rule,
                          callbacks=callbacks)
        history = trainer.fit(train, epochs=3, validation_data=held_out)
        return rule, trainer, history

    shared_rule, shared_trainer, history = run("shared", True)
    own_rule, own_trainer, _ = run("own", False)
    np.testing.assert_allclose(shared_rule.weights.numpy(), own_rule.weights.numpy(), rtol=1e-6)
    for a, b in zip(shared_trainer.model.weights, own_trainer.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # The logged recall is the hand-counted recall of the final model on the held-out data.
    predictions = shared_trainer.predict_logits(features).argmax(axis=1)
    matrix = count_confusion_matrix(labels, predictions, NUM_CLASSES)
    assert history["val_recall/2"][-1] == matrix[2, 2] / matrix[2].sum()
