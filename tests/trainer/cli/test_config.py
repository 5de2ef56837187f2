"""The command line's config in process: flags -> RunConfig, the cross-flag checks, argument -> flag."""

import dataclasses

import pytest
from absl import flags

from trainer.checks import ArgumentError, check_positive
from trainer.cli import config as config_lib
from trainer.cli import errors
from trainer.cli.flag_groups import GROUPS

FLAGS = flags.FLAGS


def test_defaults_fill_every_group(parse):
    config = parse()
    assert config.training.epochs == 10 and config.training.learning_rate == 1e-3
    assert config.data.dataset == "synthetic" and config.model.model is None
    assert config.loss.reweighting == "none" and config.loss.class_weights is None
    assert config.recall.calibrate is False and config.recall.monitor_key == "val_min_recall"
    assert config.output.verbosity == 1 and config.output.allow_config_change == ()
    assert not config.needs_held_out_split
    # Every project flag is a config field under its own name (and nothing else is).
    flag_names = {flag.name for group in GROUPS for flag in FLAGS.get_flags_for_module(group.__name__)}
    assert set(config.values()) == flag_names | {"verbosity"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.epochs = 3


def test_values_are_typed(parse):
    config = parse("--reweighting=manual", "--class_weights=1,2.5,3", "--epochs=4",
                   "--allow_config_change=learning_rate,class_names", "--verbosity=0")
    assert config.loss.class_weights == (1.0, 2.5, 3.0)
    assert config.output.allow_config_change == ("learning_rate", "class_names")
    assert config.output.verbosity == 0  # given explicitly: honoured


@pytest.mark.parametrize("args, message", [
    (["--reweighting=eqlv2", "--loss=cross_entropy"], "needs a sigmoid (one-vs-all) loss"),
    (["--reweighting=drw", "--drw_rule=eqlv2", "--loss=cross_entropy"],
         "EQL v2 (--reweighting=drw)"),
    (["--reweighting=manual"], "--reweighting=manual needs --class_weights"),
    (["--reweighting=drw", "--drw_rule=manual"], "--reweighting=drw needs --class_weights"),
    (["--class_weights=1,2"], "--class_weights is only used with --reweighting=manual (got "
                              "--reweighting=none)"),
    (["--reweighting=manual", "--class_weights=1,x"], "--class_weights must be comma-separated "
                                                       "numbers, got '1,x'"),
    (["--reweighting=target_class"], "--reweighting=target_class needs --target_class."),
    (["--reweighting=drw", "--drw_rule=target_class"], "--reweighting=drw needs --target_class."),
    (["--epochs=0"], "--epochs must be a positive integer, got 0."),
    (["--batch_size=-3"], "--batch_size must be a positive integer, got -3."),
    (["--steps_per_loop=0"], "--steps_per_loop must be a positive integer, got 0."),
    (["--learning_rate=0"], "--learning_rate must be a positive number, got 0.0."),
    (["--seed=-1"], "--seed must be an integer in [0, 4294967295], got -1."),
    (["--num_cpu_devices=0"], "--num_cpu_devices must be a positive integer, got 0."),
    (["--tpu=grpc://x:1"], "--tpu=grpc://x:1 is only used with --strategy=tpu (got --strategy=default)"),
    (["--target_class=-1"], "--target_class must be a non-negative integer, got -1."),
    (["--target_recall=0"], "--target_recall must be in (0.0, 1.0], got 0.0."),
    (["--early_stopping_patience=-1"], "--early_stopping_patience must be a non-negative integer"),
    (["--reduce_lr_factor=1"], "--reduce_lr_factor must be in (0.0, 1.0), got 1.0."),
    (["--allow_config_change=learning_rate,lr"], "--allow_config_change=learning_rate,lr: 'lr' is not "
                                                 "something a resumed run compares"),
    (["--allow_config_change=epochs"], "'epochs' is not something a resumed run compares"),
])
def test_flags_that_do_not_fit_are_named(parse, args, message):
    with pytest.raises(ValueError) as caught:
        parse(*args)
    assert message in str(caught.value)


def test_recall_flag_combinations_are_checked(parse):
    """Moved from tests/callbacks/test_callbacks.py (callbacks/cli.check_flags)."""
    with pytest.raises(ValueError, match="needs --target_class and --target_recall"):
        parse("--reweighting=recall_target", "--target_class=2")
    config = parse("--reweighting=recall_target", "--target_class=2", "--target_recall=0.9")
    assert config.recall.calibrate, "on by default with a target recall"
    assert config.uses_controller and config.needs_held_out_split
    assert config.recall.monitor_key == "val_recall/2"
    assert parse("--monitor=min_recall", "--target_class=2").recall.monitor_key == "val_min_recall"
    with pytest.raises(ValueError, match="without the val_ prefix"):
        parse("--monitor=val_recall/1")


def test_calibration_kind_follows_the_flags(parse):
    """Moved from tests/callbacks/test_callbacks.py (callbacks/cli.calibration_kind)."""
    with pytest.raises(ValueError, match="--recall_target_mode=worst_class"):
        parse("--calibrate")
    config = parse("--calibrate", "--recall_target_mode=worst_class")
    assert config.recall.calibration_kind == "worst_class" and config.needs_held_out_split
    assert not parse("--recall_target_mode=worst_class").recall.calibrate, \
        "off by default without the controller"
    assert parse("--reweighting=recall_target", "--recall_target_mode=worst_class").recall.calibrate, \
        "on by default with the worst-class controller"
    config = parse("--reweighting=recall_target", "--recall_target_mode=worst_class",
                   "--target_class=2", "--target_recall=0.9")
    assert config.recall.calibration_kind == "target_recall", "a target recall comes first"
    assert not parse("--target_class=2", "--target_recall=0.9", "--nocalibrate").recall.calibrate
    with pytest.raises(ValueError, match="--max_balanced_accuracy_drop must be in"):
        parse("--max_balanced_accuracy_drop=-0.1")
    with pytest.raises(ValueError, match="--recall_target_step_size must be a positive number"):
        parse("--recall_target_step_size=0")


@pytest.mark.parametrize("args", [["--early_stopping_patience=2"], ["--stop_at_recall=0.9"],
                                  ["--reduce_lr_patience=1"]])
def test_every_recall_callback_needs_the_held_out_split(parse, args):
    assert parse(*args).needs_held_out_split
    assert not parse().needs_held_out_split


def test_checks_against_the_data(parse):
    config = parse("--reweighting=target_class", "--target_class=7")
    with pytest.raises(ValueError, match=r"--target_class=7 does not exist: the data has 3 classes \("):
        config.with_data(3, (8,), True)
    config = parse("--reweighting=manual", "--class_weights=1,2")
    with pytest.raises(ValueError, match="--class_weights has 2 values but there are 3 classes"):
        config.with_data(3, (8,), True)
    config = parse("--early_stopping_patience=1", "--eval_dataset=npz:x.npz")
    with pytest.raises(ValueError, match="need a held-out split"):
        config.with_data(3, (8,), False)
    resolved = parse().with_data(4, (28, 28, 1), True)
    assert resolved.data.num_classes == 4 and resolved.model.model == "cnn"
    assert parse().with_data(3, (20,), True).model.model == "mlp"
    assert parse("--model=mlp").with_data(3, (28, 28, 1), True).model.model == "mlp"


def test_compared_values_leave_out_what_only_extends_or_observes_the_run(parse):
    config = parse("--epochs=3", "--export_dir=none")
    compared = config.compared_values()
    for name in ("epochs", "model_dir", "export_dir", "allow_config_change", "verbosity", "strategy"):
        assert name not in compared
    assert compared["learning_rate"] == 1e-3 and compared["reweighting"] == "none"
    names = config_lib.allowed_change_names(config)
    assert "learning_rate" in names and "class_names" in names and "epochs" not in names


# ------------------------------------------------------------------ argument -> flag


def test_library_arguments_are_named_by_their_flags(parse):
    parse()  # the flags are defined and parsed
    assert errors.flag_for("scale") == "--ldam_scale"
    assert errors.flag_for("num_devices") == "--num_cpu_devices"
    assert errors.flag_for("label_column") == "--label_column"
    assert errors.flag_for("class_counts") is None  # no flag sets it
    assert errors.flag_for("name", {"name": "strategy"}) == "--strategy"
    # Every table entry names a project flag.
    assert {f"--{flag}" for flag in errors.ARGUMENT_FLAGS.values()} <= {
        f"--{name}" for name in errors.project_flag_names()}

    status, message = errors.exit_status_for(ArgumentError("scale", -2.0, "must be a positive number"))
    assert (status, message) == (2, "error: --ldam_scale must be a positive number, got -2.0.")
    status, message = errors.exit_status_for(ArgumentError("class_counts", [1], "must have 3 entries"))
    assert message == "error: class_counts must have 3 entries, got [1]."


def test_flags_named_renames_errors_raised_inside(parse):
    parse()
    from trainer.distribute import make_strategy
    with pytest.raises(ArgumentError) as caught, errors.flags_named(name="strategy"):
        make_strategy("bogus")
    assert str(caught.value).startswith("--strategy must be one of default, ")
    with pytest.raises(ArgumentError, match=r"^--early_stopping_patience must be a positive number"), \
            errors.flags_named(patience="early_stopping_patience"):
        check_positive(0, "patience")
    with pytest.raises(RuntimeError, match="a bug"), errors.flags_named(name="strategy"):
        raise RuntimeError("a bug")


def test_data_and_directory_errors_name_the_flag(parse, tmp_path):
    parse()
    from trainer import data as data_lib
    from trainer.distribute import check_model_dir_writable
    with pytest.raises(ValueError) as caught:
        data_lib.load_data("parquet:x")
    assert errors.exit_status_for(caught.value)[1].startswith("error: --dataset='parquet:x' is not a dataset")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OSError) as caught:
        check_model_dir_writable(str(tmp_path / "a_file" / "run"))
    status, message = errors.exit_status_for(caught.value)
    assert status == 2 and message.startswith(f"error: --model_dir={tmp_path / 'a_file' / 'run'} cannot "
                                              f"be written")


def test_messages_are_one_line():
    assert errors.exit_status_for(ValueError("first\n  second\n"))[1] == "error: first second"
