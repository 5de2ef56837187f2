"""Distribution: cluster facts (chief, workers, TF_CONFIG, directories), strategies, input sharding.

Modules: `cluster`, `strategies`, `batching` (global batches over replicas), `consistency` (workers agree).
"""

from trainer.distribute.batching import global_batch_size, shard_by_data
from trainer.distribute.cluster import (
    ClusterRole,
    ModelDirError,
    TFConfigError,
    check_model_dir_writable,
    check_tf_config,
    is_chief,
    is_multi_worker,
    remove_worker_directory,
    worker_directory,
)
from trainer.distribute.consistency import (
    InconsistentRestoreError,
    check_restored_consistently,
    weights_fingerprint,
)
from trainer.distribute.strategies import (
    STRATEGY_NAMES,
    make_strategy,
    new_mirrored_strategy,
    split_cpu_into_logical_devices,
)

__all__ = [
    "ClusterRole",
    "InconsistentRestoreError",
    "ModelDirError",
    "STRATEGY_NAMES",
    "TFConfigError",
    "check_model_dir_writable",
    "check_restored_consistently",
    "check_tf_config",
    "global_batch_size",
    "is_chief",
    "is_multi_worker",
    "make_strategy",
    "new_mirrored_strategy",
    "remove_worker_directory",
    "shard_by_data",
    "split_cpu_into_logical_devices",
    "weights_fingerprint",
    "worker_directory",
]
