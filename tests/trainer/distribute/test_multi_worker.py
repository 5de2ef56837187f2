"""Two real worker processes on 127.0.0.1 with --strategy=multi_worker against one process.

Both workers run `python -m trainer.main --strategy=multi_worker` with a
TF_CONFIG naming free ports; a third process trains with the default strategy
and the same global batch. Bounded in time; every process is reaped.
"""

import json
import os
import re
import time

import numpy as np

from cli_processes import (
    checkpoint_values,
    cli_env,
    free_ports,
    model_weights,
    read_log,
    reap,
    start_cli,
    tf_config,
    wait_all,
    write_npz,
)

TIME_LIMIT_S = 240


def _event_file_pids(model_dir):
    pids = set()
    for _, _, files in os.walk(model_dir):
        for name in files:
            match = re.match(r"events\.out\.tfevents\.\d+\.[^.]+\.(\d+)\.", name)
            if match:
                pids.add(int(match.group(1)))
    return pids


def test_two_workers_train_like_one_process_with_the_same_global_batch(tmp_path):
    data = write_npz(tmp_path / "data.npz", num_examples=400)
    common = [f"--dataset=npz:{data}", "--epochs=2", "--batch_size=32", "--steps_per_loop=5",
              "--seed=3", "--export_dir=none", "--verbosity=1"]
    cluster_dir, single_dir = tmp_path / "cluster", tmp_path / "single"
    ports = free_ports(2)
    processes = []
    try:
        for index in range(2):
            processes.append(start_cli(
                ["--strategy=multi_worker", f"--model_dir={cluster_dir}", *common],
                env=cli_env(TF_CONFIG=tf_config(ports, index)), log_path=tmp_path / f"worker{index}.log"))
        processes.append(start_cli([f"--model_dir={single_dir}", *common],
                                   log_path=tmp_path / "single.log"))
        codes = wait_all(processes, time.monotonic() + TIME_LIMIT_S)
    finally:
        reap(processes)
    logs = [read_log(tmp_path / name) for name in ("worker0.log", "worker1.log", "single.log")]
    for code, log in zip(codes, logs):
        assert code == 0, log[-3000:]

    # Both workers end with the same model (fingerprints logged by every worker).
    fingerprints = [re.findall(r"weights fingerprint (\w+)", log) for log in logs[:2]]
    assert fingerprints[0] and fingerprints[0] == fingerprints[1], fingerprints

    # ... which equals one process's with the same global batch.
    cluster = checkpoint_values(cluster_dir / "checkpoints")
    single = checkpoint_values(single_dir / "checkpoints")
    step_key = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
    assert int(cluster[step_key]) == int(single[step_key]) > 0
    for key, value in model_weights(single).items():
        np.testing.assert_allclose(cluster[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    cluster_metrics = json.loads((cluster_dir / "metrics.json").read_text())
    single_metrics = json.loads((single_dir / "metrics.json").read_text())
    assert cluster_metrics["confusion_matrix"] == single_metrics["confusion_matrix"]
    assert cluster_metrics["step"] == single_metrics["step"]

    # Only the chief (worker 0) wrote files: events, metrics.json; the other
    # worker's temporary checkpoint directory is gone.
    assert "Wrote" in logs[0] and "Wrote" not in logs[1]
    assert not (cluster_dir / "workers").exists()
    assert _event_file_pids(cluster_dir) == {processes[0].pid}


def test_mirrored_uneven_last_batch_matches_one_device():
    """A partial last batch splits unevenly over replicas; the loss must still use its real size."""
    import keras
    import tensorflow as tf

    from trainer import Trainer
    from trainer.determinism import seed_everything
    from trainer.distribute.strategies import new_mirrored_strategy

    rng = np.random.default_rng(1)
    features = rng.normal(size=(37, 6)).astype(np.float32)  # batches of 16, 16 and 5 (3 + 2)
    labels = rng.integers(0, 3, size=37).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(16)

    def train(strategy):
        def model():
            keras.utils.set_random_seed(0)
            return keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
        seed_everything(0)
        trainer = Trainer(model=model, optimizer=lambda: keras.optimizers.SGD(0.5), num_classes=3,
                          strategy=strategy, steps_per_loop=3)
        trainer.fit(dataset, epochs=2)
        return [v.numpy() for v in trainer.model.trainable_variables]

    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    expected = train(tf.distribute.get_strategy())
    for got, want in zip(train(new_mirrored_strategy(devices)), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
