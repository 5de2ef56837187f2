"""Command line: evaluate an exported model on labelled data and write a report.

`python -m trainer.evaluate --model_dir=runs/x [--eval_dataset=csv:test.csv]`
prints the per-class table and writes `evaluation.json` and `evaluation.md`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from absl import app, flags

from trainer.flags import FLAGS  # noqa: F401  (the data flags are shared with training)

flags.DEFINE_string("report_dir", None, "Where evaluation.json/.md go (default: --model_dir).")


def _training_flags(model_dir: str) -> Dict[str, Any]:
    path = os.path.join(model_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as stream:
        return json.load(stream).get("flags", {})


def markdown_report(metrics: Dict[str, Any], class_names: List[str], *, source: str,
                    operating_point: Optional[Dict[str, Any]]) -> str:
    """Renders the evaluation as Markdown: summary, per-class table, confusion matrix."""
    lines = [f"# Evaluation of {source}", "",
             f"- accuracy: {metrics['accuracy']:.4f}",
             f"- balanced accuracy: {metrics['balanced_accuracy']:.4f}",
             f"- macro-F1: {metrics['macro_f1']:.4f}",
             f"- minimum recall: {metrics['min_recall']:.4f}",
             f"- operating point: {json.dumps(operating_point) if operating_point else 'argmax'}",
             "", "| class | support | recall | precision | F1 |", "|---|---:|---:|---:|---:|"]
    for k, name in enumerate(class_names):
        lines.append(f"| {name} | {int(metrics['support'][k])} | {metrics['recall'][k]:.4f} | "
                     f"{metrics['precision'][k]:.4f} | {metrics['f1'][k]:.4f} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(class_names) + " |",
              "|---|" + "---:|" * len(class_names)]
    for k, row in enumerate(metrics["confusion_matrix"]):
        lines.append(f"| {class_names[k]} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def run() -> Dict[str, Any]:
    """Evaluates the exported model as the flags say; returns the metrics."""
    import numpy as np

    from trainer import data as data_lib
    from trainer.export import load_serving_function
    from trainer.main import write_json_atomically
    from trainer.metrics import format_per_class_table, per_class_metrics

    model_dir = FLAGS.model_dir
    export_dir = FLAGS.export_dir or os.path.join(model_dir, "export")
    serve, metadata = load_serving_function(export_dir)
    class_names = metadata["class_names"]
    trained = _training_flags(model_dir)

    def setting(name):
        return FLAGS[name].value if FLAGS[name].present or name not in trained else trained[name]

    bundle = data_lib.load_data(
        setting("dataset"), eval_dataset=FLAGS.eval_dataset or trained.get("eval_dataset"),
        validation_split=setting("validation_split"), label_column=setting("label_column"),
        feature_key=setting("feature_key"), label_key=setting("label_key"),
        imbalance_ratio=setting("imbalance_ratio"), data_dir=setting("data_dir"),
        seed=setting("seed"), num_classes=len(class_names), cache_dir=model_dir)
    if list(bundle.class_names) != list(class_names):
        raise ValueError(f"The evaluation data's classes {bundle.class_names} differ from the "
                         f"model's {class_names}.")
    k = len(class_names)
    matrix = np.zeros((k, k), np.int64)
    for features, labels in bundle.eval.dataset(1024, shuffle=False, seed=0):
        predicted = serve(features=features)["class_id"].numpy()
        np.add.at(matrix, (labels.numpy(), predicted), 1)
    metrics = per_class_metrics(matrix)
    operating_point = metadata.get("operating_point")
    report = {key: metrics[key] for key in ("accuracy", "balanced_accuracy", "macro_f1", "min_recall",
                                            "recall", "precision", "f1", "support")}
    report.update(confusion_matrix=matrix, class_names=class_names, operating_point=operating_point,
                  export_dir=export_dir, data=bundle.description)
    report_dir = FLAGS.report_dir or model_dir
    os.makedirs(report_dir, exist_ok=True)
    write_json_atomically(os.path.join(report_dir, "evaluation.json"), report)
    with open(os.path.join(report_dir, "evaluation.md"), "w") as stream:
        stream.write(markdown_report({**metrics, "confusion_matrix": matrix}, class_names,
                                     source=export_dir, operating_point=operating_point))
    print(format_per_class_table(metrics, class_names))
    print("confusion matrix (rows: true, columns: predicted):")
    print(matrix)
    print(f"Wrote {os.path.join(report_dir, 'evaluation.json')} and evaluation.md")
    return report


def main(argv: List[str]) -> int:
    from trainer.main import run_command
    return run_command(run, argv)


if __name__ == "__main__":
    app.run(main)
