"""Cluster facts: which process this is (chief or worker), TF_CONFIG's checks, and where each one writes.

Every worker computes the same steps; only the chief's files are kept (see docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Dict, Mapping, Optional, Sequence

import tensorflow as tf

# The jobs MultiWorkerMirroredStrategy reads from TF_CONFIG ("evaluator" is allowed and ignored).
TRAINING_JOBS = ("chief", "worker")
_KNOWN_JOBS = TRAINING_JOBS + ("evaluator",)
_EXAMPLE = ('e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}')


class TFConfigError(ValueError):
    """`TF_CONFIG` is malformed; the message names the field and its value.

    Attributes:
      field: The field at fault, as a dotted path ("" for the whole text, "cluster", "cluster.worker",
        "task", "task.type", "task.index").
      value: Its value.
    """

    def __init__(self, field: str, value: Any, message: str):
        super().__init__(message)
        self.field = field
        self.value = value


class ModelDirError(OSError):
    """The model directory cannot be written.

    Attributes:
      argument: The argument that named the directory ("model_dir").
      value: The directory.
      reason: Why it cannot be written (the operating system's words).
    """

    def __init__(self, argument: str, value: str, reason: str):
        super().__init__(f"{argument}={value} cannot be written: {reason}.")
        self.argument = argument
        self.value = value
        self.reason = reason

    def renamed(self, name: str) -> "ModelDirError":
        """The same error with the argument called `name` (e.g. its flag)."""
        return ModelDirError(name, self.value, self.reason)


def check_tf_config(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """Parses and checks `TF_CONFIG` before MultiWorkerMirroredStrategy reads it.

    Args:
      environ: The environment to read (default `os.environ`).

    Returns:
      The parsed configuration, or None when `TF_CONFIG` is absent or empty (one worker).

    Raises:
      TFConfigError: Naming the field of `TF_CONFIG` at fault and its value.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise TFConfigError("", text, f"TF_CONFIG is not valid JSON ({error}): {text!r}; "
                                      f"{_EXAMPLE}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise TFConfigError("cluster", cluster, f'TF_CONFIG has no "cluster" mapping of job names '
                                                f"to host:port lists (cluster={cluster!r}); {_EXAMPLE}.")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise TFConfigError("task", task, f'TF_CONFIG has no "task" with "type" and "index" '
                                          f"(task={task!r}); {_EXAMPLE}.")
    _check_cluster(cluster)
    _check_task(cluster, task["type"], task["index"])
    return config


def _check_cluster(cluster: Dict[str, Any]) -> None:
    unknown = sorted(set(cluster) - set(_KNOWN_JOBS))
    if unknown:
        raise TFConfigError("cluster", unknown,
                            f"TF_CONFIG: jobs {unknown} are not used by MultiWorkerMirroredStrategy "
                            f"(it takes 'chief' and 'worker').")
    for job in TRAINING_JOBS:
        hosts = cluster.get(job)
        if job in cluster and (not isinstance(hosts, list) or not hosts
                               or not all(isinstance(host, str) and host for host in hosts)):
            raise TFConfigError(f"cluster.{job}", hosts, f"TF_CONFIG: cluster.{job} must be a list of "
                                                         f"'host:port' strings, got {hosts!r}.")
    if len(cluster.get("chief") or ()) > 1:
        raise TFConfigError("cluster.chief", cluster["chief"],
                            f"TF_CONFIG: cluster.chief has {len(cluster['chief'])} tasks "
                            f"{cluster['chief']!r}; a cluster has at most one chief.")


def _check_task(cluster: Dict[str, Any], task_type: Any, index: Any) -> None:
    hosts = cluster.get(task_type) if isinstance(task_type, str) else None
    if not isinstance(hosts, list) or not hosts:
        raise TFConfigError("task.type", task_type, f"TF_CONFIG: task type {task_type!r} is not a job "
                                                    f"of the cluster {sorted(cluster)}.")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(hosts):
        raise TFConfigError("task.index", index, f"TF_CONFIG: task index {index!r} is out of range: "
                                                 f"job {task_type!r} has {len(hosts)} task(s).")


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """Where one process stands in its cluster: the jobs, and its own task.

    Attributes:
      jobs: Job name -> task addresses; empty outside a cluster.
      task_type: This process's job ("chief", "worker", ...), or None.
      task_id: Its index in that job, or None.
    """

    jobs: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    task_type: Optional[str] = None
    task_id: Optional[int] = None

    @classmethod
    def from_tf_config(cls, config: Optional[Mapping[str, Any]]) -> "ClusterRole":
        """The role a (checked, see `check_tf_config`) TF_CONFIG describes; None: no cluster."""
        if not config:
            return cls()
        task = config.get("task") or {}
        return cls(dict(config.get("cluster") or {}), task.get("type"), task.get("index"))

    @classmethod
    def from_resolver(cls, resolver: Optional[tf.distribute.cluster_resolver.ClusterResolver]
                      ) -> "ClusterRole":
        """The role a TensorFlow cluster resolver describes; None: no cluster."""
        if resolver is None or not getattr(resolver, "cluster_spec", None):
            return cls()
        jobs = resolver.cluster_spec().as_dict() or {}
        task_id = resolver.task_id
        return cls(jobs, resolver.task_type, None if task_id is None else int(task_id))

    @classmethod
    def of(cls, strategy: tf.distribute.Strategy) -> "ClusterRole":
        """The role of this process under `strategy` (from its cluster resolver, if any)."""
        return cls.from_resolver(getattr(strategy, "cluster_resolver", None))

    @property
    def num_workers(self) -> int:
        """The training processes of the cluster (its chief and worker tasks); 1 outside one."""
        return sum(len(self.jobs.get(job) or ()) for job in TRAINING_JOBS) or 1

    @property
    def is_chief(self) -> bool:
        """Whether this process writes summaries, metrics and exports.

        That is the `chief` task when the cluster has one, else worker 0; a
        process outside a cluster is its own chief.
        """
        if not self.jobs or self.task_type == "chief":
            return True
        return self.task_type in (None, "worker") and self.task_id == 0 and "chief" not in self.jobs

    @property
    def name(self) -> Optional[str]:
        """`<task type>_<task index>` (e.g. "worker_1"), or None without a task."""
        if self.task_type is None or self.task_id is None:
            return None
        return f"{self.task_type}_{self.task_id}"


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True when `strategy` is a MultiWorkerMirroredStrategy over several processes (from TF_CONFIG)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
        and ClusterRole.of(strategy).num_workers > 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the process that writes summaries, metrics and exports (see `ClusterRole.is_chief`)."""
    return ClusterRole.of(strategy).is_chief


def worker_directory(model_dir: str, strategy: tf.distribute.Strategy) -> Optional[str]:
    """The private directory of a worker other than the chief, or None on the chief.

    Such a worker must take part in every checkpoint save (it is a collective
    operation) but its files are never read: every worker restores from the
    chief's checkpoints, in `<model_dir>/checkpoints`.
    """
    if not is_multi_worker(strategy):
        return None
    role = ClusterRole.of(strategy)
    if role.is_chief or role.name is None:
        return None
    return os.path.join(model_dir, "workers", role.name)


def remove_worker_directory(model_dir: str, strategy: tf.distribute.Strategy) -> None:
    """Deletes this worker's private directory (and `workers/` once empty)."""
    directory = worker_directory(model_dir, strategy)
    if directory is None:
        return
    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(directory))
    except OSError:
        pass  # Another worker's directory is still there.


def check_model_dir_writable(model_dir: str) -> None:
    """Fails early, before any training, when `model_dir` cannot be written.

    A bucket (`gs://...`, any `scheme://`) is not probed: TensorFlow's file systems report their own
    errors.

    Raises:
      ModelDirError: Naming `model_dir` and the reason.
    """
    if "://" in model_dir:
        return
    probe = os.path.join(model_dir, f".write_test_{os.getpid()}")
    try:
        os.makedirs(model_dir, exist_ok=True)
        with open(probe, "w") as stream:
            stream.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ModelDirError("model_dir", model_dir, str(error.strerror or error)) from None
