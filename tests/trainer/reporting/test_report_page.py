"""report.html rendered from known logits, read back: sections, per-class table, embedded figures."""

import sys
import time

import numpy as np
import pytest

from report_pages import ReportPage, check_figures, png_size, sample_report_inputs
from trainer.checks import ArgumentError
from trainer.reporting import page

SECTIONS = ["summary", "per-class", "confusion-matrix", "pr-curves", "reliability", "history"]


_inputs = sample_report_inputs


def test_the_page_has_every_section_the_table_and_six_figures():
    names = ["cat <b>&", "dog", "bird", "rare fish"]
    inputs = _inputs(names=names)
    rendered = page.render(inputs)
    parsed = ReportPage(rendered)
    assert parsed.sections == SECTIONS
    check_figures(parsed, minimum=6)
    assert [image["alt"] for image in parsed.images] == [
        "confusion matrix", "precision-recall curve per class", "reliability diagram",
        "recall per class over the epochs", "precision per class over the epochs",
        "class_weight per class over the epochs"]
    # The run, the data and the decision are in the header; the names survive escaping.
    for text in ("/runs/x", "synthetic", "the eval split (1,200 rows: test)", "threshold 0.3", "cat <b>&"):
        assert text in parsed.text, text
    assert "the validation split (300 rows)" in parsed.text
    # The per-class table against an independent count.
    table = parsed.tables[1]
    assert table[0][:6] == ["#", "class", "support", "precision", "recall", "F1"]
    labels, predictions = inputs.labels, inputs.predictions
    for k, row in enumerate(table[1:]):
        hits = np.sum((labels == k) & (predictions == k))
        assert row[1].startswith(names[k])
        assert int(row[2]) == np.sum(labels == k)
        assert float(row[4]) == pytest.approx(hits / np.sum(labels == k), abs=5e-5)
        assert float(row[3]) == pytest.approx(hits / np.sum(predictions == k), abs=5e-5)
    assert "(target)" in table[-1][1]
    assert "recall 0.8 on class 3 (rare fish)" in parsed.text
    # The served decision differs from the argmax here: both are in the summary.
    assert [row[0] for row in parsed.tables[0][1:]] == ["served", "plain argmax"]
    # Capitalised like the section headings.
    for heading in ("Recall per class over the epochs", "Precision per class over the epochs",
                    "Class weight per class over the epochs"):
        assert f"<h3>{heading}</h3>" in rendered


def test_names_that_repeat_the_index_are_not_repeated():
    # "class 3" names: the target is "class 3", once; the names differ from the indices: both columns.
    parsed = ReportPage(page.render(_inputs(history=False)))
    assert "recall 0.8 on class 3" in parsed.text and "class 3 class 3" not in parsed.text
    assert "class 3 (class 3)" not in parsed.text
    assert parsed.tables[1][0][:2] == ["#", "class"]
    # Names that are the indices: one column holds them (with the marks), no "#" column repeating it.
    parsed = ReportPage(page.render(_inputs(history=False, names=["0", "1", "2", "3"])))
    table = parsed.tables[1]
    assert table[0][:5] == ["class", "support", "precision", "recall", "F1"]
    assert [row[0].split(" (")[0] for row in table[1:]] == ["0", "1", "2", "3"]
    assert table[-1][0] == "3 (target)" and len(table[-1]) == len(table[0])
    assert "recall 0.8 on class 3" in parsed.text and "class 3 (3)" not in parsed.text


def test_many_classes_draw_a_bounded_subset_and_say_so():
    inputs = _inputs(num_classes=40, rows=4000, seed=1)
    parsed = ReportPage(page.render(inputs))
    check_figures(parsed, minimum=6)
    assert "Only 30 of the 40 classes are drawn" in parsed.text  # the confusion matrix
    assert "Only 8 of the 40 classes are drawn" in parsed.text  # the PR curves
    assert "Only 10 of the 40 classes are drawn" in parsed.text  # the histories
    width, height = png_size(parsed.images[0]["png"])
    assert width <= 2600 and height <= 2600
    assert len(parsed.tables[1]) == 41  # the table lists every class


def test_without_history_the_page_says_why_and_has_three_figures():
    inputs = _inputs(history=False, history_absent="no event files under /copied/train")
    parsed = ReportPage(page.render(inputs))
    assert parsed.sections == SECTIONS
    check_figures(parsed, minimum=3)
    assert len(parsed.images) == 3
    assert "No per-epoch figures: no event files under /copied/train." in parsed.text


def test_argmax_without_calibration_shows_one_summary_row_and_the_softmax():
    inputs = _inputs(history=False)
    inputs = page.ReportInputs(**{**inputs.__dict__, "predictions": inputs.logits.argmax(axis=1),
                                  "probabilities": None, "target_class": None, "target_recall": None})
    parsed = ReportPage(page.render(inputs))
    assert [row[0] for row in parsed.tables[0][1:]] == ["served"]
    assert "No calibration was fitted: the plain softmax." in parsed.text
    assert "the class of lowest recall" in parsed.text


def test_inputs_that_disagree_are_refused_naming_each_argument():
    with pytest.raises(ArgumentError) as error:
        page.render(_inputs(labels=np.array([0, 1, 9]), predictions=np.array([0, 1])))
    message = str(error.value)
    assert error.value.argument == "logits"
    assert "predictions" in message and "labels=[9]" in message


def test_a_report_takes_seconds_not_tens(tmp_path):
    inputs = _inputs(num_classes=10, rows=5000)
    start = time.perf_counter()
    path, seconds = page.write_report(str(tmp_path / "report.html"), inputs)
    assert time.perf_counter() - start < 15, "drawing the report got slow"
    assert ReportPage(open(path).read()).sections == SECTIONS
    print(f"report of 10 classes, 5000 rows: {seconds:.2f}s", file=sys.stderr)
