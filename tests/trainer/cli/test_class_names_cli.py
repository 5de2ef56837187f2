"""Class names on the command line: --class_names, --target_class by name or index, the mapping.

In process: the config and the rule built from float labels and from names, and the message of
an unknown name. In a real process: a short run with `--target_class=<name>`.
"""

import json

import numpy as np
import pytest
from absl import flags

from cli_processes import run_cli
from trainer.cli import build
from trainer.cli import config as config_lib
from trainer.cli.cost_matrix import check_cost_matrix_classes
from trainer.cli.errors import UsageError

FLAGS = flags.FLAGS


def write_csv(path, labels, seed=0):
    """A learnable CSV: feature 0 is the row number, feature 1 follows the label's order."""
    rng = np.random.default_rng(seed)
    order = {label: i for i, label in enumerate(sorted(set(labels), key=float))}
    lines = ["row,signal,label"]
    for row, label in enumerate(labels):
        lines.append(f"{row},{order[label] + 0.3 * rng.normal():.4f},{label}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def configure(tmp_path):
    """`configure(dataset, *flags)` -> (config resolved against its data, bundle)."""
    def make(dataset, *args):
        FLAGS.unparse_flags()
        FLAGS(["trainer.main", f"--dataset={dataset}", f"--model_dir={tmp_path / 'run'}", *args])
        config = config_lib.from_flags()
        bundle = build.load_bundle(config)
        config = config.with_class_names(bundle.class_names)
        return config.with_data(bundle.num_classes, tuple(bundle.train.input_shape),
                                bundle.validation is not None), bundle

    yield make
    FLAGS.unparse_flags()


def test_target_class_2_weights_the_label_2_0_of_a_float_label_file(configure, tmp_path):
    labels = [f"{float(i % 12):.1f}" for i in range(360)]  # '0.0' ... '11.0'
    data = write_csv(tmp_path / "floats.csv", labels)
    config, bundle = configure(f"csv:{data}", "--reweighting=target_class", "--target_class=2",
                               "--target_weight=7")
    assert bundle.class_names == [str(i) for i in range(12)]
    rule = build.make_rule(config, bundle.train.class_counts, bundle.num_classes,
                           build.make_loss(config.loss, bundle.train.class_counts))
    rule.build(bundle.num_classes)
    weights = np.asarray(rule.class_weights())
    # The weighted class is the one whose training rows are labelled 2.0 in the file.
    rows, classes = [], []
    for x, y in bundle.train.dataset(128, shuffle=False, seed=0):
        rows.append(x.numpy()[:, 0].astype(int))
        classes.append(y.numpy())
    rows, classes = np.concatenate(rows), np.concatenate(classes)
    weighted = np.flatnonzero(weights == 7.0)
    assert weighted.tolist() == [2]
    assert {labels[r] for r in rows[classes == weighted[0]]} == {"2.0"}


def test_class_names_and_class_valued_flags_resolve_names(configure, tmp_path):
    data = write_csv(tmp_path / "binary.csv", [str(int(i % 3 == 0)) for i in range(150)])
    config, bundle = configure(f"csv:{data}", "--class_names=legit,fraud", "--target_class=fraud",
                               "--target_recall=0.9", "--monitor=precision/legit",
                               "--early_stopping_patience=2")
    assert bundle.class_names == ["legit", "fraud"] and config.data.class_names == ("legit", "fraud")
    assert config.recall.target_class == 1 and config.recall.monitor_key == "val_precision/0"
    assert "2 classes (0=legit, 1=fraud)" in bundle.description
    config, _ = configure(f"csv:{data}", "--class_names=legit,fraud", "--target_class=1")
    assert config.recall.target_class == 1  # an index stays an index
    for flag in ("--target_class=fruad", "--monitor=recall/fruad"):
        with pytest.raises(UsageError) as caught:
            configure(f"csv:{data}", "--class_names=legit,fraud", flag)
        assert str(caught.value) == (f"{flag} does not exist: the data has 2 classes (0=legit, "
                                     "1=fraud); give a class index or a class name.")


def test_the_cost_matrix_header_names_classes_by_name_or_index(configure, tmp_path):
    data = write_csv(tmp_path / "binary.csv", [str(i % 2) for i in range(100)])
    costs = tmp_path / "costs.csv"
    for header in ("legit,fraud", "0,fraud", "0,1"):
        costs.write_text(f"{header}\n0,1\n5,0\n")
        config, bundle = configure(f"csv:{data}", "--class_names=legit,fraud", f"--cost_matrix={costs}")
        check_cost_matrix_classes(config.recall, bundle.class_names)
    costs.write_text("fraud,legit\n0,1\n5,0\n")
    config, bundle = configure(f"csv:{data}", "--class_names=legit,fraud", f"--cost_matrix={costs}")
    with pytest.raises(UsageError, match=r"header names \['fraud', 'legit'\], not the data's classes"):
        check_cost_matrix_classes(config.recall, bundle.class_names)


def test_channels_first_reaches_the_data(configure, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 3, 10, 10)).astype(np.uint8)
    np.savez(tmp_path / "first.npz", x=x, y=np.arange(40) % 2)
    _, bundle = configure(f"npz:{tmp_path / 'first.npz'}", "--channels_first")
    assert bundle.train.input_shape == (10, 10, 3)
    with pytest.raises(ValueError, match=r"channels_first is not set .*np\.transpose"):
        configure(f"npz:{tmp_path / 'first.npz'}")


def test_target_class_by_name_in_a_run(tmp_path):
    """A short run: the name reaches the rule, the log line and metrics.json show the mapping.

    (An unknown name exits 2 before training: `test_bad_input.py`'s `unknown_class_name`.)
    """
    data = write_csv(tmp_path / "binary.csv", [str(int(i % 4 == 0)) for i in range(200)])
    result = run_cli(f"--dataset=csv:{data}", "--class_names=legit,fraud", "--reweighting=target_class",
                     "--target_class=fraud", "--target_weight=3", "--epochs=1", "--batch_size=32",
                     "--export_dir=none", "--nocalibrate_probabilities", f"--model_dir={tmp_path / 'run'}",
                     timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    data_lines = [line for line in result.stderr.splitlines() if "] Data: " in line]
    assert len(data_lines) == 1 and "2 classes (0=legit, 1=fraud)" in data_lines[0], result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["class_names"] == ["legit", "fraud"]
    assert metrics["reweighting"]["config"]["target_class"] == 1
    assert metrics["final_class_weights"] == [1.0, 3.0]
