"""`trainer.cli.build` in process: the objects a config makes, which data each reads, one pass per epoch."""

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from callbacks import (
    RecallEarlyStopping,
    RecallReduceLROnPlateau,
    RecallTarget,
    RecallTargetController,
    TensorBoardExtras,
)
from cli_processes import write_npz
from losses import ClassWeights, DeferredReweighting
from trainer.cli import build, errors
from trainer.cli import config as config_lib

FLAGS = flags.FLAGS
BATCH = 32


@pytest.fixture
def configure(tmp_path):
    """`configure(*flags)` -> (config checked against its data, bundle), on a small NPZ."""
    data = write_npz(tmp_path / "data.npz", num_examples=300, num_features=6)

    def make(*args):
        FLAGS.unparse_flags()
        FLAGS(["trainer.main", f"--dataset=npz:{data}", f"--model_dir={tmp_path / 'run'}",
               f"--batch_size={BATCH}", *args])
        config = config_lib.from_flags()
        bundle = build.load_bundle(config)
        return config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                                bundle.validation is not None), bundle

    yield make
    FLAGS.unparse_flags()


class CountedBatches:
    """The held-out split's examples as a dataset that counts every batch read from it."""

    def __init__(self, dataset):
        self.batches = [(features.numpy(), labels.numpy()) for features, labels in dataset]
        self.reads = 0
        spec = dataset.element_spec
        self.dataset = tf.data.Dataset.from_generator(
            self._batches, output_signature=(tf.TensorSpec(spec[0].shape, spec[0].dtype),
                                             tf.TensorSpec(spec[1].shape, spec[1].dtype)))

    def _batches(self):
        for batch in self.batches:
            self.reads += 1
            yield batch


def test_every_recall_feature_reads_the_one_evaluation_per_epoch(configure):
    config, bundle = configure("--reweighting=recall_target", "--target_class=2", "--target_recall=0.9",
                               "--early_stopping_patience=5", "--reduce_lr_patience=5",
                               "--steps_per_loop=4", "--verbosity=0")
    parts = build.build(config, bundle, tf.distribute.get_strategy())
    assert config.recall.calibrate and parts.data.validation is parts.data.held_out
    assert [type(c) for c in parts.callbacks] == [RecallTargetController, RecallEarlyStopping,
                                                  RecallReduceLROnPlateau, TensorBoardExtras]
    assert parts.callbacks[1].monitor == parts.callbacks[2].monitor == "val_recall/2"
    held_out = CountedBatches(parts.data.held_out)
    parts.trainer.fit(parts.data.train, total_epochs=3, validation_data=held_out.dataset)
    assert int(parts.rule.num_updates.numpy()) == 3, "the controller updated once per epoch"
    assert held_out.reads == 3 * len(held_out.batches), (
        f"{held_out.reads} batches read in 3 epochs of {len(held_out.batches)}: one pass per epoch")


def test_without_recall_features_fit_validates_on_the_evaluation_data(configure):
    config, bundle = configure()
    data = build.make_datasets(config, bundle)
    assert data.validation is data.eval and not config.needs_held_out_split
    assert [type(c) for c in build.make_callbacks(config, bundle, None, chief=True)] == [TensorBoardExtras]


def test_rules_are_built_from_their_flags(configure):
    config, bundle = configure("--reweighting=drw", "--drw_rule=manual", "--class_weights=1,2,4",
                               "--drw_start_epoch=2")
    counts = bundle.train.class_counts
    rule = build.make_rule(config, counts, 3, build.make_loss(config.loss, counts))
    assert isinstance(rule, DeferredReweighting) and rule.start_epoch == 2
    assert isinstance(rule.rule, ClassWeights)
    rule.rule.build(3)
    np.testing.assert_allclose(rule.rule.class_weights().numpy(), [1.0, 2.0, 4.0])
    config, _ = configure("--reweighting=recall_target", "--recall_target_mode=worst_class",
                          "--recall_target_step_size=0.25")
    target = build.make_rule(config, counts, 3, build.make_loss(config.loss, counts))
    assert isinstance(target, RecallTarget) and target.mode == "worst_class" and target.step_size == 0.25


def test_library_errors_come_back_naming_the_flag(configure):
    config, bundle = configure("--loss=ldam", "--ldam_scale=-2")
    with pytest.raises(ValueError) as caught:
        build.make_loss(config.loss, bundle.train.class_counts)
    assert errors.exit_status_for(caught.value) == (
        2, "error: --ldam_scale must be a positive number, got -2.0.")
    config, bundle = configure("--reweighting=target_class", "--target_class=1", "--target_weight=0")
    counts = bundle.train.class_counts
    with pytest.raises(ValueError) as caught:
        build.make_rule(config, counts, 3, build.make_loss(config.loss, counts))
    assert errors.exit_status_for(caught.value)[1] == \
        "error: --target_weight must be a positive number, got 0.0."
