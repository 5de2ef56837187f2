"""TensorBoard's HParams records of a run: the experiment config, the session's start and its end.

TensorBoard reads one experiment config per directory tree: it takes the first
`_hparams_/experiment` it finds among the runs. So a config here describes
settings, not one run: every run of a program that writes the same config
(`trainer.cli.tensorboard_run` writes every setting of the command line, with its
type and values) shows correctly next to the others, whichever TensorBoard picks.

Values are written so that TensorBoard shows them as they were given: integers
as their decimal text (TensorBoard formats every number with five significant
digits, `8.0000`), floats as numbers, booleans as booleans, and settings of a
feature that is off are left out (an empty cell).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import summary_v2 as hparams_summary

KINDS = ("bool", "int", "float", "str")
_TYPES = {"bool": api_pb2.DATA_TYPE_BOOL, "int": api_pb2.DATA_TYPE_STRING,
          "float": api_pb2.DATA_TYPE_FLOAT64, "str": api_pb2.DATA_TYPE_STRING}
STATUSES = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE,
            "running": api_pb2.STATUS_RUNNING, "unknown": api_pb2.STATUS_UNKNOWN}


def hparam_value(value: Any) -> Any:
    """The value as the session records it: bool, float, or text (integers as their digits)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def hparam_info(name: str, kind: str, *, values: Optional[Sequence[Any]] = None,
                display_name: Optional[str] = None, description: Optional[str] = None,
                differs: bool = False) -> api_pb2.HParamInfo:
    """One column of the HParams table.

    Args:
      name: The setting's name (the session's key).
      kind: `'bool'`, `'int'`, `'float'` or `'str'`.
      values: The values it can take, where known (an enum flag's choices);
        a bool's are False and True.
      display_name: The column title (default: `name`).
      description: What the setting is (Markdown).
      differs: Shown (ticked) by default: TensorBoard ticks the first five
        settings that differ between sessions, by name.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    info = api_pb2.HParamInfo(name=name, display_name=display_name or name, description=description or "",
                              type=_TYPES[kind], differs=bool(differs))
    if kind == "bool":
        info.domain_discrete.extend([False, True])
    elif values is not None:
        info.domain_discrete.extend([hparam_value(v) for v in values])
    return info


def metric_info(tag: str, display_name: Optional[str] = None, description: Optional[str] = None,
                group: str = "") -> api_pb2.MetricInfo:
    """One metric column: the last value of scalar `tag` in the session's run (`group`: a sub-run)."""
    return api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag),
                              display_name=display_name or tag, description=description or "")


def inferred_infos(values: Mapping[str, Any]) -> list:
    """Columns for `values` typed by their Python types (for callers without a schema)."""
    kinds = {bool: "bool", int: "int", float: "float"}
    infos = []
    for name in sorted(values):
        value = values[name]
        if isinstance(value, np.generic):
            value = value.item()
        infos.append(hparam_info(name, kinds.get(type(value), "str"),
                                 values=[value] if isinstance(value, str) else None))
    return infos


# Final metrics `TensorBoardExtras` writes from the last epoch's logs (the first five are shown).
FINAL_METRICS = (
    ("final/balanced_accuracy", "balanced accuracy", "Mean of the per-class recalls at the end of training."),
    ("final/min_recall", "worst-class recall", "The smallest per-class recall at the end of training."),
    ("final/macro_f1", "macro-F1", "Mean of the per-class F1 scores at the end of training."),
    ("final/accuracy", "accuracy", "Share of rows classified correctly at the end of training."),
)


@dataclasses.dataclass(frozen=True)
class Session:
    """One row of the HParams table: a run's settings, and the columns the experiment config declares.

    Attributes:
      values: Setting -> value (None values, features that are off, are left out).
      hparam_infos: The experiment's setting columns (`hparam_info`); None:
        typed from `values` (`inferred_infos`).
      metric_infos: The experiment's metric columns (`metric_info`), in the
        order TensorBoard shows them; None: `FINAL_METRICS`.
      trial_id: The session's name in the table (default: a hash of the values).
    """

    values: Mapping[str, Any]
    hparam_infos: Optional[Sequence[api_pb2.HParamInfo]] = None
    metric_infos: Optional[Sequence[api_pb2.MetricInfo]] = None
    trial_id: Optional[str] = None

    def recorded_values(self) -> dict:
        """The values as written (`hparam_value`), without the None ones."""
        return {name: hparam_value(value) for name, value in self.values.items() if value is not None}

    def experiment(self) -> api_pb2.Experiment:
        """The experiment config (`hparam_infos` and `metric_infos`)."""
        infos = self.hparam_infos if self.hparam_infos is not None else inferred_infos(
            self.recorded_values())
        metrics = self.metric_infos if self.metric_infos is not None else [
            metric_info(tag, name, text) for tag, name, text in FINAL_METRICS]
        return api_pb2.Experiment(hparam_infos=list(infos), metric_infos=list(metrics),
                                  time_created_secs=time.time())

    def write_start(self, writer: tf.summary.SummaryWriter, step: int = 0) -> None:
        """Writes the experiment config and the session start (the settings) with `writer`."""
        experiment = _summary(hparams_metadata.EXPERIMENT_TAG,
                              plugin_data_pb2.HParamsPluginData(experiment=self.experiment()))
        start = hparams_summary.hparams_pb(self.recorded_values(), trial_id=self.trial_id,
                                           start_time_secs=time.time())
        with writer.as_default():
            for summary in (experiment, start):
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
        writer.flush()


def _summary(tag: str, content: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=hparams_metadata.create_summary_metadata(content),
                      tensor=hparams_metadata.NULL_TENSOR)
    return summary


def write_session_end(writer: tf.summary.SummaryWriter, status: str = "success", step: int = 0) -> None:
    """Writes the session's end (`status`: success, failure, running or unknown) and its time.

    TensorBoard keeps the first end a run wrote: write it once the session
    is over (not when a run stops to be resumed).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
    content = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
        status=STATUSES[status], end_time_secs=time.time()))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(
            _summary(hparams_metadata.SESSION_END_INFO_TAG, content).SerializeToString(), step=step)
    writer.flush()
