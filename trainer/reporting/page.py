"""`report.html`: one self-contained page (PNG figures embedded as base64, inline CSS, no script).

Sections (each a `<section id=...>`): `summary`, `per-class`, `confusion-matrix`, `pr-curves`,
`reliability`, `history`. Every figure's caption says which data it was measured on.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import struct
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from trainer.atomic_files import atomic_write
from trainer.checks import ArgumentError
from trainer.decisions import expected_calibration_error
from trainer.decisions.calibration import ECE_BINS
from trainer.metrics import count_confusion_matrix, per_class_metrics
from trainer.reporting import curves, figures
from trainer.reporting.history import EpochHistory

FILENAME = "report.html"
# Past these many classes a figure shows a subset (the worst-recall classes) and says so.
MAX_MATRIX_CLASSES = 30
MAX_PR_CLASSES = 12
PR_SUBSET = 8
MAX_HISTORY_CLASSES = 10
# A figure shrinks with a narrow window down to this share of its natural width (its text stays legible);
# narrower still, it scrolls sideways in its own box, as a wide table does, never the page.
MIN_SCALE = 0.8

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.facts { color: #444; } .facts dt { font-weight: 600; float: left; clear: left; width: 11em; }
.facts dd { margin-left: 11.5em; margin-bottom: 0.2em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f0f3f7; } td.name, th.name { text-align: left; }
tr.worst td { background: #fdecea; } tr.target td { font-weight: 600; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
figure img { display: block; box-sizing: border-box; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
.note { color: #555; font-style: italic; }
"""


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """What a report is drawn from: the reporting data's logits, labels and served decisions, and facts.

    Attributes:
      heading: The page's title, e.g. "Training report".
      model_dir: The run directory.
      dataset: The data spec (e.g. `synthetic`, `csv:data.csv`).
      class_names: K names.
      labels: `[N]` labels of the reporting data.
      logits: `[N, K]` the model's logits there.
      predictions: `[N]` the classes the served decision chose (the operating point's, or the argmax).
      measured_on: Which data these are (a sentence, e.g. `DataBundle.measured_on()`).
      decision: The served decision in words.
      probabilities: `[N, K]` calibrated probabilities when a calibration exists (None: softmax).
      calibration_note: What the calibration is and what it was fitted on.
      target_class: The class whose recall is targeted, or None.
      target_recall: Its target recall, or None.
      history: Per-class histories of the run, or None.
      history_note: Which data the per-epoch recall and precision were measured on.
      history_absent: Why there is no history (when `history` is None), e.g. no event files.
      facts: Further `(name, value)` lines for the header.
    """

    heading: str
    model_dir: str
    dataset: str
    class_names: Sequence[str]
    labels: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray
    measured_on: str
    decision: str = "argmax"
    probabilities: Optional[np.ndarray] = None
    calibration_note: str = ""
    target_class: Optional[int] = None
    target_recall: Optional[float] = None
    history: Optional[EpochHistory] = None
    history_note: str = ""
    history_absent: str = ""
    facts: Sequence[Tuple[str, str]] = ()

    def checked(self) -> "ReportInputs":
        """The inputs as arrays, after checking that their shapes agree.

        Raises:
          ArgumentError: naming `logits`, `labels`, `predictions`, `probabilities`,
            `class_names` or `target_class`, each shape or value that disagrees.
        """
        logits = np.asarray(self.logits, np.float64)
        labels = np.asarray(self.labels, np.int64).reshape(-1)
        predictions = np.asarray(self.predictions, np.int64).reshape(-1)
        k = len(self.class_names)
        problems = []
        if logits.ndim != 2 or logits.shape != (labels.size, k) or labels.size == 0:
            problems.append(("logits", logits.shape, f"must be [N, K] = [{labels.size}, {k}] with N > 0"))
        if predictions.shape != labels.shape:
            problems.append(("predictions", predictions.shape, f"must be [N] = [{labels.size}]"))
        for name, values in (("labels", labels), ("predictions", predictions)):
            outside = sorted(set(int(v) for v in values[(values < 0) | (values >= k)]))
            if outside:
                problems.append((name, outside, f"must be class indices in [0, {k})"))
        probabilities = None
        if self.probabilities is not None:
            probabilities = np.asarray(self.probabilities, np.float64)
            if probabilities.shape != logits.shape:
                problems.append(("probabilities", probabilities.shape, f"must be the logits' {logits.shape}"))
        if self.target_class is not None and not 0 <= int(self.target_class) < k:
            problems.append(("target_class", self.target_class, f"must be in [0, {k})"))
        if problems:
            argument, value, requirement = problems[0]
            if len(problems) > 1:
                value = "; ".join(f"{a}={v!r} ({r})" for a, v, r in problems)
                argument, requirement = problems[0][0], "must agree (each listed)"
            raise ArgumentError(argument, value, requirement)
        return dataclasses.replace(self, logits=logits, labels=labels, predictions=predictions,
                                   probabilities=probabilities)


def _img(png: bytes, alt: str) -> str:
    """The PNG embedded at its natural size, shrinking to fit its box down to `MIN_SCALE` of it."""
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk's first fields
    data = base64.b64encode(png).decode("ascii")
    return (f'<img alt="{html.escape(alt)}" width="{width}" height="{height}" '
            f'style="min-width: {round(MIN_SCALE * width)}px" src="data:image/png;base64,{data}">')


def _figure(png: bytes, alt: str, caption: str) -> str:
    return (f"<figure><div class='scroll'>{_img(png, alt)}</div>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: str) -> str:
    """A table in a box that scrolls sideways when the window is narrower than the table."""
    return f"<div class='scroll'><table>{rows}</table></div>"


def _names_are_indices(class_names: Sequence[str]) -> bool:
    """Whether every class's name is its index (`'0'`, `'1'`, ...): an index column would repeat it."""
    return all(str(name) == str(k) for k, name in enumerate(class_names))


def _number(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _summary(served: Dict, argmax: Dict, same: bool) -> str:
    keys = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro-F1"), ("min_recall", "worst-class recall"))
    head = "<tr><th class='name'>decision</th>" + "".join(f"<th>{label}</th>" for _, label in keys) + "</tr>"
    rows = [("served", served)] + ([] if same else [("plain argmax", argmax)])
    body = "".join(f"<tr><td class='name'>{name}</td>"
                   + "".join(f"<td>{_number(metrics[key])}</td>" for key, _ in keys) + "</tr>"
                   for name, metrics in rows)
    return _table(head + body)


def _per_class_table(served: Dict, argmax: Dict, same: bool, class_names: Sequence[str],
                     target_class: Optional[int]) -> str:
    recall = np.asarray(served["recall"], np.float64)
    worst = int(np.nanargmin(recall)) if np.any(np.isfinite(recall)) else None
    index_column = not _names_are_indices(class_names)  # else the names are the indices
    head = ("<tr>" + ("<th>#</th>" if index_column else "") + "<th class='name'>class</th><th>support</th>"
            "<th>precision</th><th>recall</th><th>F1</th>"
            + ("" if same else "<th>argmax precision</th><th>argmax recall</th>") + "</tr>")
    rows = []
    for k, name in enumerate(class_names):
        classes = [c for c, on in (("worst", k == worst), ("target", k == target_class)) if on]
        marks = "".join(f" ({c})" for c in classes)
        cells = [str(int(served["support"][k])), _number(served["precision"][k]), _number(recall[k]),
                 _number(served["f1"][k])]
        if not same:
            cells += [_number(argmax["precision"][k]), _number(argmax["recall"][k])]
        tds = ((f"<td>{k}</td>" if index_column else "")
               + f"<td class='name'>{html.escape(str(name)) + marks}</td>"
               + "".join(f"<td>{cell}</td>" for cell in cells))
        rows.append(f"<tr class='{' '.join(classes)}'>{tds}</tr>")
    return _table(head + "".join(rows))


def _subset_sentence(chosen: np.ndarray, total: int, what: str) -> str:
    if len(chosen) >= total:
        return ""
    return (f" Only {len(chosen)} of the {total} classes are drawn ({what}, lowest recall under the "
            f"served decision); the table above lists all.")


def _history_section(inputs: ReportInputs, recall: np.ndarray) -> str:
    history = inputs.history
    if history is None or not any(history.has(m) for m in ("recall", "precision", "class_weight")):
        reason = inputs.history_absent or "no per-class TensorBoard history was found for this run"
        return f"<p class='note'>No per-epoch figures: {html.escape(reason)}.</p>"
    k = len(inputs.class_names)
    parts = []
    measured = f"measured on {inputs.history_note or 'the per-epoch evaluation data'}"
    for metric, ylabel, where in (("recall", "recall", measured), ("precision", "precision", measured),
                                  ("class_weight", "class weight (gradient multiplier)",
                                   "the reweighting rule's weights at the end of each epoch, after its "
                                   "controller update: what the next epoch trains with (TensorBoard "
                                   "train/class_weight/<k>)")):
        if not history.has(metric):
            absent = ("this run's rule sets no per-class weights" if metric == "class_weight"
                      else "the run wrote no per-class evaluation history")
            parts.append(f"<p class='note'>No {html.escape(ylabel)} history: {absent}.</p>")
            continue
        series = history.series[metric]
        available = np.array(sorted(series), np.int64)
        chosen = curves.worst_recall_classes(recall[available], MAX_HISTORY_CLASSES,
                                             keep=None if inputs.target_class not in series
                                             else int(np.flatnonzero(available == inputs.target_class)[0]))
        chosen = available[chosen]
        values = np.concatenate([series[int(c)][:, 1] for c in chosen])
        log_scale = metric == "class_weight" and values.min() > 0 and values.max() / values.min() > 20
        target = inputs.target_recall if metric == "recall" else None
        png = figures.history_png(series, inputs.class_names, chosen, ylabel=ylabel,
                                  target_class=inputs.target_class, target_value=target,
                                  log_scale=log_scale, unit_range=metric != "class_weight")
        caption = (f"Per-class {ylabel} over the epochs, read from the run's TensorBoard event files in "
                   f"{history.model_dir}: {where}."
                   + _subset_sentence(chosen, k, "the target class and those"))
        parts.append(f"<h3>{html.escape(ylabel.split(' (')[0].capitalize())} per class over the epochs</h3>"
                     + _figure(png, f"{metric} per class over the epochs", caption))
    return "".join(parts)


def render(inputs: ReportInputs) -> str:
    """The page of `inputs` (checked with `ReportInputs.checked`), as an HTML string."""
    inputs = inputs.checked()
    names = [str(name) for name in inputs.class_names]
    k = len(names)
    labels, logits = inputs.labels, inputs.logits
    served_matrix = count_confusion_matrix(labels, inputs.predictions, k)
    argmax_predictions = logits.argmax(axis=1)
    served = per_class_metrics(served_matrix)
    argmax = per_class_metrics(count_confusion_matrix(labels, argmax_predictions, k))
    same = bool(np.array_equal(argmax_predictions, inputs.predictions))
    recall = np.asarray(served["recall"], np.float64)
    softmax = curves.softmax(logits)
    measured = inputs.measured_on

    facts: List[Tuple[str, str]] = [("run", inputs.model_dir), ("dataset", inputs.dataset),
                                    ("figures measured on", measured), ("served decision", inputs.decision)]
    if inputs.target_class is not None and inputs.target_recall is not None:
        facts.append(("target", f"recall {inputs.target_recall:g} on "
                                f"{figures.class_words(inputs.target_class, names)}"))
    if inputs.calibration_note:
        facts.append(("calibration", inputs.calibration_note))
    facts += list(inputs.facts)
    facts.append(("written", datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
    sections = [f"<h1>{html.escape(inputs.heading)}: {html.escape(inputs.model_dir)}</h1>",
                "<dl class='facts'>" + "".join(f"<dt>{html.escape(a)}</dt><dd>{html.escape(str(b))}</dd>"
                                               for a, b in facts) + "</dl>"]
    sections.append("<section id='summary'><h2>Summary</h2>" + _summary(served, argmax, same)
                    + f"<p>Measured on {html.escape(measured)}.</p></section>")
    sections.append("<section id='per-class'><h2>Per-class metrics</h2>"
                    + _per_class_table(served, argmax, same, names, inputs.target_class)
                    + f"<p>Support: rows of each class in the data measured on ({html.escape(measured)}). "
                      "Precision n/a: the class was never predicted.</p></section>")

    matrix_classes = curves.worst_recall_classes(recall, MAX_MATRIX_CLASSES, keep=inputs.target_class)
    matrix_png = figures.confusion_matrix_png(served_matrix, names,
                                              None if len(matrix_classes) == k else matrix_classes)
    sections.append("<section id='confusion-matrix'><h2>Confusion matrix</h2>" + _figure(
        matrix_png, "confusion matrix",
        f"Served decision ({inputs.decision}) on {measured}. Rows: true class; columns: predicted class; "
        f"each cell: count and share of its row (rows add up to 100%)."
        + _subset_sentence(matrix_classes, k, "the target class and those")
        + (" The last column holds each row's predictions of the classes not drawn."
           if len(matrix_classes) < k else "")) + "</section>")

    pr_classes = (np.arange(k) if k <= MAX_PR_CLASSES
                  else curves.worst_recall_classes(recall, PR_SUBSET, keep=inputs.target_class))
    pr_png = figures.pr_curves_png(labels, softmax, names, pr_classes, served=served,
                                   argmax=None if same else argmax, target_class=inputs.target_class,
                                   target_recall=inputs.target_recall)
    sections.append("<section id='pr-curves'><h2>Precision-recall curves</h2>" + _figure(
        pr_png, "precision-recall curve per class",
        f"One-vs-rest precision and recall at every cut-off of the class's softmax probability, on "
        f"{measured}. Red dot: the served decision's recall and precision of the class (it lies on the "
        f"curve when the decision is a threshold on this probability); square: the plain argmax's; "
        f"dashed line: the target recall; dotted: the class's share of the rows (chance precision)."
        + _subset_sentence(pr_classes, k, "the target class and those")) + "</section>")

    sections.append("<section id='reliability'><h2>Reliability</h2>" + _reliability(inputs, softmax, recall)
                    + "</section>")
    sections.append("<section id='history'><h2>Over the epochs</h2>" + _history_section(inputs, recall)
                    + "</section>")
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(inputs.heading)}: {html.escape(inputs.model_dir)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _reliability(inputs: ReportInputs, softmax: np.ndarray, recall: np.ndarray) -> str:
    labels = inputs.labels
    calibrated = inputs.probabilities
    focus = inputs.target_class
    if focus is None:
        focus = int(np.nanargmin(recall)) if np.any(np.isfinite(recall)) else 0
    focus_name = figures.class_words(focus, inputs.class_names, limit=18)  # a panel title
    series: Dict[str, list] = {"top": [], "focus": []}
    ece_lines = []
    for label, probabilities in ((("calibrated", calibrated), ("uncalibrated softmax", softmax))
                                 if calibrated is not None else (("softmax", softmax),)):
        top = probabilities.argmax(axis=1)
        ece = expected_calibration_error(probabilities, labels)
        series["top"].append((f"{label} (ECE {ece['ece']:.3f})", probabilities.max(axis=1), top == labels))
        series["focus"].append((f"{label} (ECE {ece['per_class_ece'][focus]:.3f})",
                                probabilities[:, focus], labels == focus))
        ece_lines.append(f"top-label ECE {ece['ece']:.4f} {label}")
    png = figures.reliability_png(
        [("top label: confidence vs accuracy", series["top"]),
         (f"{focus_name}: p(class) vs frequency", series["focus"])], bins=ECE_BINS)
    why = "the target class" if inputs.target_class is not None else "the class of lowest recall"
    caption = (f"On {inputs.measured_on}; {ECE_BINS} equal-width bins (as metrics.json's ECE). Left: the "
               f"largest probability against how often that class is the label. Right: {why}, one-vs-rest. "
               f"Bars: rows per bin (log scale). " + "; ".join(ece_lines) + "."
               + (" Calibrated: the probabilities the export serves (the plain softmax drawn too)."
                  if calibrated is not None
                  else " No calibration was fitted: the plain softmax."))
    return _figure(png, "reliability diagram", caption)


def write_report(path: str, inputs: ReportInputs) -> Tuple[str, float]:
    """Renders `inputs` and writes the page to `path` (atomically); returns `(path, seconds taken)`."""
    start = time.perf_counter()
    page = render(inputs)
    with atomic_write(path) as stream:
        stream.write(page)
    return path, time.perf_counter() - start
