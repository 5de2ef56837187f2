"""The evaluation command (`python -m trainer.evaluate`): an exported model on labelled data, as a report.

Data flags not given default to those the model was trained with (`metrics.json`); writes
evaluation.json, evaluation.md and evaluation.html.
"""

from __future__ import annotations

import dataclasses
import os
from types import ModuleType
from typing import Any, Dict, Mapping, Tuple

import numpy as np
from absl import flags

from trainer import data as data_lib
from trainer.cli import app, flag_groups, html_report, multi_label_train, report
from trainer.cli.config import DataConfig
from trainer.cli.errors import UsageError
from trainer.cli.flag_groups import evaluation as evaluation_flags
from trainer.data.schema import TabularSchema
from trainer.export import FEATURES_SIGNATURE, load_serving_function
from trainer.json_files import read_json, write_json_atomically
from trainer.metrics import (
    count_confusion_matrix,
    format_per_class_table,
    label_average_precision,
    per_class_metrics,
)

FLAGS = flags.FLAGS
# The flag groups `--help` shows for this command.
FLAG_GROUPS: Tuple[ModuleType, ...] = (flag_groups.data, flag_groups.outputs, evaluation_flags)
BATCH_SIZE = 1024
USAGE = """Evaluate an exported model on labelled data and write a report.

USAGE: python -m trainer.evaluate --model_dir=runs/x [--eval_dataset=csv:test.csv] [flags]

Prints the per-class table and confusion matrix and writes evaluation.json, evaluation.md and
evaluation.html (figures; needs matplotlib) to --report_dir, default --model_dir. Data flags not given
default to those the model was trained with.
"""


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What `python -m trainer.evaluate` was asked to do.

    Attributes:
      data: The data settings (as trained, unless given on the command line).
      seed: The training seed (it fixes the held-out split).
      model_dir: The training run's directory.
      export_dir: The exported model to evaluate.
      report_dir: Where the report goes.
    """

    data: DataConfig
    seed: int
    model_dir: str
    export_dir: str
    report_dir: str


def _trained_metrics(model_dir: str) -> Dict[str, Any]:
    path = os.path.join(model_dir, "metrics.json")
    return read_json(path) if os.path.isfile(path) else {}


def _trained_flags(model_dir: str) -> Dict[str, Any]:
    return _trained_metrics(model_dir).get("flags", {})


def from_flags(flag_values: flags.FlagValues = FLAGS) -> EvaluateConfig:
    """The evaluation config: each data flag as given, else as trained (`metrics.json`), else its default."""
    model_dir = flag_values.model_dir
    trained = _trained_flags(model_dir)

    def setting(name: str) -> Any:
        given = flag_values[name].present or name not in trained
        return flag_values[name].value if given else trained[name]

    data = DataConfig(**{field.name: setting(field.name) for field in dataclasses.fields(DataConfig)})
    return EvaluateConfig(data=data, seed=setting("seed"), model_dir=model_dir,
                          export_dir=flag_values.export_dir or os.path.join(model_dir, "export"),
                          report_dir=flag_values.report_dir or model_dir)


def _serve_all(serve: Any, dataset: Any) -> Dict[str, np.ndarray]:
    """The serving function over `dataset`: `labels`, `class_id`, `logits`, `probabilities` of every
    row, and `sample_weight` when the rows carry weights."""
    keys = ("class_id", "logits", "probabilities")
    parts: Dict[str, list] = {key: [] for key in ("labels", *keys)}
    for batch in dataset:
        served = serve(features=batch[0])
        parts["labels"].append(batch[1].numpy())
        if len(batch) > 2:
            parts.setdefault("sample_weight", []).append(batch[2].numpy())
        for key in keys:
            parts[key].append(served[key].numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


def run_multi_label(config: EvaluateConfig, serve: Any, metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """Evaluates an exported multi-label model: per-label figures of its served decisions and at 0.5."""
    data = config.data
    label_names = [str(n) for n in metadata["class_names"]]
    label_columns = list(data.label_columns or metadata.get("label_columns") or label_names)
    if list(label_columns) != label_names:
        raise UsageError(f"--label_columns={','.join(label_columns)} are not the model's labels "
                         f"({','.join(label_names)}).")
    bundle = data_lib.load_multi_label_data(
        data.dataset, label_columns=label_columns, eval_dataset=data.eval_dataset,
        validation_split=data.validation_split, test_split=data.test_split, seed=config.seed,
        columns=data.column_options(), weight_key=data.weight_key, channels_first=data.channels_first,
        schema=None if metadata.get("schema") is None else TabularSchema.from_json(metadata["schema"]))
    logits, labels, decided = [], [], []
    for batch in bundle.eval.dataset(BATCH_SIZE, shuffle=False, seed=0):
        served = serve(features=batch[0])
        labels.append(batch[1].numpy())
        logits.append(served["logits"].numpy())
        decided.append(served["decisions"].numpy())
    logits, labels, decided = (np.concatenate(parts) for parts in (logits, labels, decided))
    served = multi_label_train.label_results(logits, labels, decided, label_names)
    default = multi_label_train.label_results(logits, labels, (logits > 0).astype(np.int64), label_names)
    average_precision = [float(v) for v in label_average_precision(logits, labels)]
    point = metadata.get("operating_point")
    decision = "the exported per-label cut-offs" if point else "probability > 0.5 for every label"
    measured_on = report.describe_split(bundle.eval)
    evaluation: Dict[str, Any] = {"task": "multi_label", "label_names": label_names, **served,
                                  "average_precision": average_precision, "at_probability_0.5": default,
                                  "operating_point": point, "decision": decision, "measured_on": measured_on,
                                  "export_dir": config.export_dir, "data": bundle.description}
    write_json_atomically(os.path.join(config.report_dir, "evaluation.json"), evaluation)
    print(multi_label_train.format_label_table(served, default, average_precision, label_names,
                                               decision=decision, measured_on=measured_on))
    print(f"Wrote {os.path.join(config.report_dir, 'evaluation.json')}")
    return evaluation


def counted_positions(outputs: Mapping[str, np.ndarray], ignore_label: Any) -> Dict[str, np.ndarray]:
    """Per-position outputs (`labels` `[N, d1, ..., dk]`, `logits` `[N, d1, ..., dk, K]`, ...) as rows:
    one per position whose label is not `ignore_label` (a per-example sample weight spread over its
    positions)."""
    labels = outputs["labels"]
    keep = np.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label
    rows = {key: outputs[key][keep] for key in ("labels", "class_id", "logits", "probabilities")}
    if "sample_weight" in outputs:
        weights = outputs["sample_weight"].reshape((len(labels),) + (1,) * (labels.ndim - 1))
        rows["sample_weight"] = np.broadcast_to(weights, labels.shape)[keep]
    return rows


def run(config: EvaluateConfig) -> Dict[str, Any]:
    """Evaluates the exported model as `config` says; returns the report."""
    serve, metadata = load_serving_function(config.export_dir, FEATURES_SIGNATURE)
    if metadata.get("head") == "multi_label":
        return run_multi_label(config, serve, metadata)
    class_names = list(metadata["class_names"])
    data = config.data
    per_position = metadata.get("label_shape") is not None
    if per_position:  # every position an example (`trainer.data.per_position`)
        bundle = data_lib.load_per_position_data(
            data.dataset, eval_dataset=data.eval_dataset, validation_split=data.validation_split,
            test_split=data.test_split, seed=config.seed, num_classes=len(class_names),
            class_names=class_names, ignore_label=metadata.get("ignore_label"),
            weight_key=data.weight_key, channels_first=data.channels_first)
    else:
        bundle = data_lib.load_data(
            data.dataset, eval_dataset=data.eval_dataset, validation_split=data.validation_split,
            test_split=data.test_split, label_column=data.label_column, feature_key=data.feature_key,
            label_key=data.label_key,
            imbalance_ratio=data.imbalance_ratio, data_dir=data.data_dir, seed=config.seed,
            num_classes=len(class_names), cache_dir=config.model_dir, columns=data.column_options(),
            class_names=None if data.class_names is None else tuple(data.class_names),
            channels_first=data.channels_first, weight_key=data.weight_key,
            schema=None if metadata.get("schema") is None else TabularSchema.from_json(metadata["schema"]))
    if list(bundle.class_names) != class_names:
        raise UsageError(f"The evaluation data's classes {bundle.class_names} differ from the "
                         f"model's {class_names}.")
    if data.weighted_metrics and not bundle.eval.weighted:
        raise UsageError(f"--weighted_metrics counts sample weights, and the evaluation rows "
                         f"({bundle.eval.origin}) have none: give data with sample weights "
                         f"(--weight_column, --weight_key), or --weighted_metrics=false.")
    outputs = _serve_all(serve, bundle.eval.dataset(BATCH_SIZE, shuffle=False, seed=0))
    if per_position:
        outputs = counted_positions(outputs, metadata.get("ignore_label"))
    weights = outputs.get("sample_weight") if data.weighted_metrics else None
    matrix = count_confusion_matrix(outputs["labels"], outputs["class_id"], len(class_names), weights)
    metrics = per_class_metrics(matrix)
    operating_point = metadata.get("operating_point")
    evaluation: Dict[str, Any] = {key: metrics[key] for key in report.METRIC_KEYS
                                  if key != "confusion_matrix"}
    evaluation.update(confusion_matrix=matrix, class_names=class_names, operating_point=operating_point,
                      export_dir=config.export_dir, data=bundle.description,
                      weighted=weights is not None)
    write_json_atomically(os.path.join(config.report_dir, "evaluation.json"), evaluation)
    _write_markdown(config, {**metrics, "confusion_matrix": matrix}, class_names, operating_point)
    print(format_per_class_table(metrics, class_names))
    print("confusion matrix (rows: true, columns: predicted):")
    print(matrix)
    print(f"Wrote {os.path.join(config.report_dir, 'evaluation.json')} and evaluation.md")
    html_report.write_evaluation_report(config, bundle, metadata, outputs, _trained_metrics(config.model_dir))
    return evaluation


def _write_markdown(config: EvaluateConfig, metrics: Mapping[str, Any], class_names: list,
                    operating_point: Any) -> None:
    os.makedirs(config.report_dir, exist_ok=True)
    with open(os.path.join(config.report_dir, "evaluation.md"), "w") as stream:
        stream.write(report.markdown_report(metrics, class_names, source=config.export_dir,
                                            operating_point=operating_point))


def main(argv: Any = None) -> Dict[str, Any]:
    """Reads the parsed flags into a config and runs (the command `trainer.cli.app` calls)."""
    del argv  # positional arguments are refused by the flag parser
    return run(from_flags())


COMMAND = app.Command(main=main, groups=FLAG_GROUPS, usage=USAGE)
