"""Helpers for tests that run `python -m trainer.main` (or `trainer.evaluate`) in real processes.

Small NPZ data, free localhost ports, processes started with a time bound and
always reaped, checkpoint values read back for comparisons.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(**extra: str) -> Dict[str, str]:
    """The environment of a CLI process: quiet TensorFlow, this checkout first on the path."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_cli(*args: str, module: str = "trainer.main", timeout: float = 300,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Runs `python -m MODULE ARGS` to the end (at most `timeout` seconds); returns its result."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env or cli_env())


def write_npz(path, *, num_examples: int = 480, num_features: int = 8, num_classes: int = 3,
              seed: int = 0) -> str:
    """Writes a small, learnable, imbalanced NPZ data set (`x`, `y`); returns its path."""
    rng = np.random.default_rng(seed)
    priors = np.linspace(2.0, 1.0, num_classes) ** 2
    labels = rng.choice(num_classes, size=num_examples, p=priors / priors.sum()).astype(np.int64)
    labels[:num_classes] = np.arange(num_classes)  # every class present
    features = rng.normal(size=(num_examples, num_features)) + 0.8 * labels[:, None]
    np.savez(path, x=features.astype(np.float32), y=labels)
    return str(path)


def start_cli(args: Sequence[str], *, env: Optional[Dict[str, str]] = None,
              log_path=None) -> subprocess.Popen:
    """Starts `python -m trainer.main ARGS`; output goes to `log_path` (or pipes)."""
    stream = open(log_path, "w") if log_path else subprocess.PIPE
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *args], cwd=REPO, env=env or cli_env(),
        stdout=stream, stderr=subprocess.STDOUT if log_path else subprocess.PIPE, text=True,
        start_new_session=True)
    process.log_stream = stream if log_path else None
    return process


def reap(processes: Sequence[subprocess.Popen]) -> None:
    """Kills (SIGKILL, whole session) whatever is still running and waits for it."""
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
        stream = getattr(process, "log_stream", None)
        if stream is not None:
            stream.close()


def wait_all(processes: Sequence[subprocess.Popen], deadline: float) -> List[int]:
    """Waits for all processes until `deadline` (time.monotonic()); returns their exit codes.

    Raises:
      TimeoutError: When one is still running at the deadline.
    """
    codes = []
    for process in processes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"process {process.args} still running at the time limit")
        try:
            codes.append(process.wait(timeout=remaining))
        except subprocess.TimeoutExpired as error:
            raise TimeoutError(f"process {process.args} still running at the time limit") from error
    return codes


def free_ports(count: int) -> List[int]:
    """Ports free on 127.0.0.1 now (all bound at once, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    """TF_CONFIG of worker `index` of a localhost cluster."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def checkpoint_values(checkpoint_dir) -> Dict[str, np.ndarray]:
    """Every value of the latest checkpoint in `checkpoint_dir`, by key."""
    import tensorflow as tf
    path = tf.train.latest_checkpoint(str(checkpoint_dir))
    assert path is not None, f"no checkpoint in {checkpoint_dir}"
    reader = tf.train.load_checkpoint(path)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if not key.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def model_weights(values: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The trainable weights among checkpoint values (Keras saves them under the optimizer)."""
    weights = {k: v for k, v in values.items() if "_trainable_variables/" in k}
    assert weights, f"no trainable weights among {sorted(values)[:10]}"
    return weights


def read_log(path) -> str:
    with open(path) as stream:
        return stream.read()


def serve_in_fresh_process(export_dir, features: np.ndarray, work_dir,
                           signature: str = "serving_default") -> Dict[str, object]:
    """Serves `features` with the SavedModel in `export_dir`, loaded in a new Python process.

    Returns every output of the signature as NumPy arrays (strings decoded to `str`).
    """
    inputs = os.path.join(str(work_dir), "served_features.npy")
    np.save(inputs, np.asarray(features, np.float32))
    script = (
        "import json, numpy as np, tensorflow as tf\n"
        f"serve = tf.saved_model.load({str(export_dir)!r}).signatures[{signature!r}]\n"
        f"out = serve(tf.constant(np.load({inputs!r})))\n"
        "print(json.dumps({k: [s.decode() for s in v.numpy()] if v.dtype == tf.string"
        " else v.numpy().tolist() for k, v in out.items()}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=cli_env(), cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(f"serving in a fresh process failed:\n{result.stderr[-3000:]}")
    served = json.loads(result.stdout.strip().splitlines()[-1])
    return {k: np.asarray(v) for k, v in served.items()}
