"""Reads a `report.html` back for tests: its sections, text and embedded PNG figures (html.parser only)."""

from __future__ import annotations

import base64
import html.parser
import io
import struct
from typing import Dict, List

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportPage(html.parser.HTMLParser):
    """The parsed page: `sections` (ids), `images` (alt, PNG bytes), `tables` (rows of cell texts), `text`.

    `tags` and `external` (addresses of anything not embedded) are there to check what must not be.
    """

    def __init__(self, page: str):
        super().__init__()
        self.sections: List[str] = []
        self.tables: List[List[List[str]]] = []
        self._cell: List[str] = []
        self._in_cell = False
        self.images: List[Dict] = []
        self.tags: List[str] = []
        self.external: List[str] = []
        self._text: List[str] = []
        self.feed(page)
        self.close()
        self.text = " ".join(" ".join(self._text).split())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._in_cell, self._cell = True, []
        if tag == "img":
            source = attrs.get("src", "")
            prefix = "data:image/png;base64,"
            if not source.startswith(prefix):
                self.external.append(source)
                return
            self.images.append({"alt": attrs.get("alt", ""), "png": base64.b64decode(source[len(prefix):],
                                                                                      validate=True)})
        for key in ("href", "src"):
            value = attrs.get(key, "")
            if tag != "img" and value:
                self.external.append(value)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._in_cell:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._in_cell = False

    def handle_data(self, data):
        self._text.append(data)
        if self._in_cell:
            self._cell.append(data)


def png_size(png: bytes) -> tuple:
    """`(width, height)` from a PNG's IHDR chunk (after checking the signature)."""
    assert png[:8] == PNG_SIGNATURE, "not a PNG"
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def png_pixels(png: bytes) -> np.ndarray:
    """The decoded pixels (matplotlib's reader), `[H, W, channels]` floats."""
    from matplotlib import image
    return image.imread(io.BytesIO(png), format="png")


def check_figures(page: ReportPage, *, minimum: int) -> None:
    """At least `minimum` embedded PNGs, each of a sane size and not blank; nothing external, no script."""
    assert len(page.images) >= minimum, [image["alt"] for image in page.images]
    assert not page.external, page.external
    assert "script" not in page.tags and "link" not in page.tags
    for image in page.images:
        width, height = png_size(image["png"])
        assert 300 <= width <= 2600 and 200 <= height <= 2600, (image["alt"], width, height)
        pixels = png_pixels(image["png"])
        assert pixels.shape[:2] == (height, width)
        assert float(pixels[..., :3].std()) > 0.05, f"{image['alt']} looks blank"


def sample_report_inputs(num_classes: int = 4, rows: int = 1200, seed: int = 0, names=None,
                         history: bool = True, **overrides):
    """`trainer.reporting.page.ReportInputs` of known random logits: a threshold decision, a calibration,
    a target class and five epochs of history; `overrides` replace any of its fields.
    """
    from trainer.reporting import curves
    from trainer.reporting.history import EpochHistory
    from trainer.reporting.page import ReportInputs

    rng = np.random.default_rng(seed)
    prior = np.linspace(2.0, 0.4, num_classes) ** 2
    labels = rng.choice(num_classes, size=rows, p=prior / prior.sum())
    labels[:num_classes] = np.arange(num_classes)
    logits = rng.normal(size=(rows, num_classes))
    logits[np.arange(rows), labels] += 1.5
    target = num_classes - 1
    predictions = logits.argmax(axis=1)
    predictions[curves.softmax(logits)[:, target] > 0.3] = target  # a threshold on the target class
    epochs = np.arange(1, 6)
    series = {metric: {k: np.c_[epochs, rng.random(5)] for k in range(num_classes)}
              for metric in ("recall", "precision", "class_weight")}
    values = dict(
        heading="Training report", model_dir="/runs/x", dataset="synthetic",
        class_names=names or [f"class {k}" for k in range(num_classes)], labels=labels, logits=logits,
        predictions=predictions, measured_on="the eval split (1,200 rows: test)",
        decision="threshold 0.3 on the probability of the last class",
        probabilities=curves.softmax(logits / 1.5), calibration_note="temperature 1.5", target_class=target,
        target_recall=0.8, history=EpochHistory(series, "/runs/x") if history else None,
        history_note="the validation split (300 rows)")
    values.update(overrides)
    return ReportInputs(**values)
