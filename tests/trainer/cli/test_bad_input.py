"""The catalogue of bad input, driven through `python -m trainer.main` as a user meets it.

Every case runs against the run directory of a good, finished run: it must
exit non-zero within a bounded time, print a message naming the problem and
no traceback, and leave that directory as it was. The cases run in parallel
(a few processes at a time) to keep the suite fast.
"""

import collections
import hashlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cli_processes import REPO, cli_env, write_npz

PARALLEL = 3
CASE_TIME_LIMIT_S = 90  # generous: a loaded CI machine; a hang is what it catches


def _files(model_dir):
    """Every file under `model_dir` with its SHA-256."""
    digests = {}
    for root, _, names in os.walk(model_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                digests[os.path.relpath(path, model_dir)] = hashlib.sha256(stream.read()).hexdigest()
    return digests


def _run(args, env=None):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=REPO, env=env or cli_env(),
                            capture_output=True, text=True, timeout=CASE_TIME_LIMIT_S)
    return result, time.monotonic() - started


def _write_inputs(root):
    """The bad files, written here; returns their paths by name."""
    good = write_npz(root / "good.npz")
    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    y = np.arange(60) % 3
    files = {"good": good}
    np.savez(root / "label_out_of_range.npz", x=x, y=np.where(np.arange(60) == 17, 5, y))
    files["label_out_of_range"] = str(root / "label_out_of_range.npz")
    np.savez(root / "four_classes.npz", x=x, y=np.arange(60) % 4)
    files["four_classes"] = str(root / "four_classes.npz")
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    files["corrupt"] = str(root / "corrupt.npz")
    (root / "empty.csv").write_text("")
    files["empty_csv"] = str(root / "empty.csv")
    (root / "nan.csv").write_text("a,b,label\n1,2,0\n3,inf,1\n5,6,0\n")
    files["nan_csv"] = str(root / "nan.csv")
    (root / "a_file").write_text("not a directory")
    files["a_file"] = str(root / "a_file")
    files["fresh_dir"] = str(root / "fresh_run")
    return files


def _cases(files):
    """name -> (extra args, extra env, regex the output must match)."""
    npz = f"--dataset=npz:{files['good']}"
    bad_config = cli_env(TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:1"]}, "task": ')
    return {
        # Flags: unknown values, unknown names, ranges, combinations.
        "unknown_strategy": ([npz, "--strategy=bogus"], None, r"--strategy=bogus: value should be one of"),
        "unknown_flag": ([npz, "--epochz=3"], None, r"Unknown command line flag 'epochz'"),
        "zero_epochs": ([npz, "--epochs=0"], None, r"error: --epochs must be a positive integer, got 0"),
        "not_an_integer": ([npz, "--num_classes=fraud"], None,
                           r"error: flag --num_classes=fraud: invalid literal for int\(\)"),
        "unknown_class_name": ([npz, "--reweighting=target_class", "--target_class=fraud"], None,
                               r"error: --target_class=fraud does not exist: the data has 3 classes "
                               r"\(0\.\.2\); give a class index or a class name"),
        "unknown_allowed_change": ([npz, "--allow_config_change=lr"], None,
                                   r"--allow_config_change=lr: 'lr' is not something a resumed run "
                                   r"compares; choose from .*learning_rate"),
        "class_weights_without_manual": ([npz, "--class_weights=1,2,3"], None,
                                         r"--class_weights is only used with --reweighting=manual"),
        "tpu_without_tpu_strategy": ([npz, "--tpu=grpc://10.0.0.1:8470"], None,
                                     r"--tpu=grpc://10.0.0.1:8470 is only used with --strategy=tpu"),
        "wrong_class_weight_count": ([npz, "--reweighting=manual", "--class_weights=1,2"], None,
                                     r"2 values but there are 3 classes"),
        "target_class_that_does_not_exist": ([npz, "--reweighting=target_class", "--target_class=7"], None,
                                             r"--target_class=7 does not exist"),
        # Data.
        "label_out_of_range": ([f"--dataset=npz:{files['label_out_of_range']}", "--num_classes=3"], None,
                               r"label out of range \[0, 3\).*row 18.*value 5"),
        "corrupt_file": ([f"--dataset=npz:{files['corrupt']}"], None, r"cannot read as \.npz"),
        "empty_file": ([f"--dataset=csv:{files['empty_csv']}"], None, r"empty file"),
        "infinite_feature": ([f"--dataset=csv:{files['nan_csv']}"], None,
                             r"column 'b' has 1 infinite cells.*row 2.*'inf'"),
        "missing_file": (["--dataset=npz:/no/such/file.npz"], None, r"not found: '/no/such/file.npz'"),
        # The run directory and the cluster. A resume with other data or settings is refused
        # before training, naming each difference; let through, a checkpoint the model does not
        # fit is still refused when it is restored.
        "changed_data": ([f"--dataset=npz:{files['four_classes']}"], None,
                         r"error: --model_dir=.* holds a run with other settings.*"
                         r'class_names: \["0", "1", "2"\] -> \["0", "1", "2", "3"\]'),
        # (--loss=auto resolves to another loss once a rule is given: that difference is named too.)
        "changed_setting": ([npz, "--learning_rate=0.1", "--reweighting=inverse_frequency"], None,
                            r"loss: logit_adjusted -> cross_entropy; reweighting: none -> "
                            r"inverse_frequency; learning_rate: 0.001 -> 0.1\. "
                            r".*--allow_config_change=loss,reweighting,learning_rate"),
        "incompatible_checkpoint": ([f"--dataset=npz:{files['four_classes']}",
                                     "--allow_config_change=dataset,num_classes,files,class_names,"
                                     "class_counts"], None,
                                    r"does not match this run\. 'model' differs: 2 variable\(s\) of "
                                    r"another shape"),
        "unwritable_model_dir": ([npz, f"--model_dir={files['a_file']}/run"], None,
                                 r"--model_dir=.*a_file/run cannot be written"),
        # Training that diverges: status 3, the step and loss named (its own run directory).
        "nonfinite_loss": ([npz, "--learning_rate=1e30", f"--model_dir={files['fresh_dir']}"], None,
                           r"error: Training stopped: the loss or its gradients are not finite at step \d+ "
                           r"\(epoch 1\): loss="),
        "tf_config_not_json": ([npz, "--strategy=multi_worker"], bad_config, r"TF_CONFIG is not valid JSON"),
    }


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Runs every case (in parallel) against a finished run; returns the outcomes."""
    root = tmp_path_factory.mktemp("bad_input")
    files = _write_inputs(root)
    model_dir = root / "run"
    base = [f"--model_dir={model_dir}", "--epochs=1", "--batch_size=64", "--export_dir=none"]
    good, _ = _run(base + [f"--dataset=npz:{files['good']}"])
    assert good.returncode == 0, good.stderr[-3000:]
    before = _files(model_dir)

    cases = _cases(files)

    def run_case(name):
        args, env, _ = cases[name]
        return name, _run(base + args, env)

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        outcomes = dict(pool.map(run_case, sorted(cases)))
    return cases, outcomes, model_dir, before


CASE_NAMES = sorted(_cases(collections.defaultdict(str)))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_exits_nonzero_with_a_message_and_no_traceback(catalogue, name):
    cases, outcomes, _, _ = catalogue
    (result, seconds), pattern = outcomes[name], cases[name][2]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    assert re.search(pattern, output, flags=re.DOTALL), f"{pattern!r} not in:\n{result.stderr[-2000:]}"
    assert seconds < CASE_TIME_LIMIT_S


def test_bad_input_leaves_the_run_directory_intact(catalogue):
    _, _, model_dir, before = catalogue
    after = _files(model_dir)
    changed = sorted(path for path, digest in before.items() if after.get(path) != digest)
    assert changed == [], f"files changed or removed by bad runs: {changed}"
    assert sorted(set(after) - set(before)) == []


# In process (cheap): what the CLI cases above reach through a process start.


@pytest.mark.parametrize("config, message", [
    ('{"cluster": ', "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["h:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', "'chief' is not a job"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}', "index 3 is out of range"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker", "index": 0}}',
     "jobs ['ps'] are not used"),
])
def test_bad_tf_config_is_named(config, message):
    from trainer.distribute import check_tf_config
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        check_tf_config({"TF_CONFIG": config})
    assert "TF_CONFIG" in str(caught.value)
    check_tf_config({})  # absent: one worker


def test_runtime_errors_of_the_compiled_step_print_cleanly():
    """A label assertion failing inside the compiled loop maps to `error: ...`, status 2."""
    import keras
    import tensorflow as tf

    from trainer import Trainer
    from trainer.cli.errors import EXIT_NONFINITE, exit_status_for
    from trainer.nonfinite import NonFiniteLossError
    from trainer.preemption import EXIT_PREEMPTED, PreemptedError

    features = np.zeros((8, 3), np.float32)
    labels = np.array([0, 1, 2, 5, 0, 1, 2, 0], np.int32)
    trainer = Trainer(model=lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)]),
                      num_classes=3)
    with pytest.raises(tf.errors.OpError) as caught:
        trainer.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(4), epochs=1)
    status, message = exit_status_for(caught.value)
    assert status == 2 and message.startswith("error: ")
    assert "labels must be < num_classes=3" in message
    assert "[[" not in message and "File " not in message and "Graph execution error" not in message

    assert exit_status_for(NonFiniteLossError("x", step=1, loss=0.0, gradient_norm=0.0))[0] == EXIT_NONFINITE
    assert exit_status_for(PreemptedError("ckpt-3"))[0] == EXIT_PREEMPTED == 143
    assert exit_status_for(RuntimeError("a bug"))[0] is None  # re-raised with its traceback
