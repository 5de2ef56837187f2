"""The HParams row of each recipe (`trainer.cli.tensorboard_run`): what is on is there, what is off is not."""

import pytest
from absl import flags
from tensorboard.plugins.hparams import api_pb2, backend_context

from trainer.cli import config as config_lib
from trainer.cli import tensorboard_run

FLAGS = flags.FLAGS
NAMES = [str(k) for k in range(10)]


@pytest.fixture
def row():
    """`row(*flags)` -> the session values written for that command line (None values dropped)."""
    def make(*args):
        FLAGS.unparse_flags()
        FLAGS(["trainer.main", *args])
        config = config_lib.from_flags().with_class_names(NAMES)
        return {k: v for k, v in tensorboard_run.session_values(config, NAMES).items() if v is not None}

    yield make
    FLAGS.unparse_flags()


def test_each_feature_brings_its_own_settings(row):
    plain = row("--loss=cross_entropy")
    assert (plain["loss"], plain["reweighting"], plain["decision"]) == ("cross_entropy", "none", "argmax")
    for name in ("gamma", "tau", "beta", "drw_start_epoch", "target_class", "monitor", "recall_target_mode",
                 "decision_folds", "decision_confidence", "reduce_lr_factor"):
        assert name not in plain, name
    assert row("--loss=focal")["gamma"] == 2.0 and "gamma" not in row("--loss=logit_adjusted")
    assert row("--loss=logit_adjusted")["tau"] == 1.0
    drw = row("--reweighting=drw", "--drw_rule=effective_number", "--loss=cross_entropy")
    assert drw["drw_start_epoch"] == 5 and drw["beta"] == 0.9999 and drw["drw_rule"] == "effective_number"
    target = row("--reweighting=recall_target", "--target_class=3", "--target_recall=0.9")
    assert target["target_class"] == "3" and target["target_recall"] == 0.9
    assert target["decision"] == "target_recall" and target["recall_target_mode"] == "target_class"
    assert target["decision_confidence"] == 0.5 and "max_balanced_accuracy_drop" not in target
    stopping = row("--early_stopping_patience=3")
    assert stopping["monitor"] == "min_recall" and stopping["early_stopping_patience"] == 3
    assert "reduce_lr_factor" not in stopping
    worst = row("--reweighting=recall_target", "--recall_target_mode=worst_class")
    assert worst["decision"] == "worst_class" and "max_balanced_accuracy_drop" in worst
    assert "target_class" not in worst and "decision_confidence" not in worst


def test_every_setting_has_a_typed_column_and_the_recipe_is_shown_first(row):
    row()  # flags parsed
    infos = tensorboard_run.experiment_hparams()
    assert [info.name for info in infos] == [setting.name for setting in tensorboard_run.SETTINGS]
    by_name = {info.name: info for info in infos}
    assert by_name["batch_size"].type == api_pb2.DATA_TYPE_STRING  # integers shown as integers
    assert by_name["target_recall"].type == api_pb2.DATA_TYPE_FLOAT64
    assert [v.string_value for v in by_name["decision"].domain_discrete.values] == list(
        tensorboard_run.DECISIONS)
    experiment = api_pb2.Experiment(hparam_infos=infos)
    backend_context._sort_and_reduce_to_hparams_limit(experiment, 1000)  # TensorBoard's own order
    assert [info.name for info in experiment.hparam_infos[:5]] == sorted(tensorboard_run.HEADLINE)
