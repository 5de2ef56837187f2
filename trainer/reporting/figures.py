"""The report's figures, drawn with matplotlib (Agg, no display, no pyplot state); each returns PNG bytes.

matplotlib is the optional extra `report` (`pip install matplotlib`); `trainer.reporting.plotting_available`
says whether it is installed. The numbers come from `trainer.reporting.curves`.
"""

from __future__ import annotations

import io
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from trainer.reporting import curves

DPI = 100
_NAME_CHARS = 18


def short_name(name: str, limit: int = _NAME_CHARS) -> str:
    """`name` cut to `limit` characters (an ellipsis marks the cut)."""
    name = str(name)
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def _redundant_name(k: int, name: str) -> bool:
    """Whether `name` only repeats the index: `'3'` or `'class 3'` for class 3."""
    return name.strip().lower() in (str(k), f"class {k}")


def class_label(k: int, class_names: Sequence[str]) -> str:
    """`'name'` when it only repeats the index (`'3'`, `'class 3'`), else `'k name'` (cut)."""
    name = str(class_names[k])
    return name if _redundant_name(k, name) else f"{k} {short_name(name)}"


def class_words(k: int, class_names: Sequence[str], limit: Optional[int] = None) -> str:
    """`'class k'` in sentences, with the name in brackets (cut to `limit` characters) unless it only
    repeats the index (`'3'`, `'class 3'`)."""
    name = str(class_names[k]) if k < len(class_names) else str(k)
    if _redundant_name(k, name):
        return f"class {k}"
    return f"class {k} ({name if limit is None else short_name(name, limit)})"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _contrasting_text(rgba: Tuple[float, float, float, float]) -> str:
    """Black or white, whichever contrasts more with the colour (WCAG relative luminance)."""
    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4
    red, green, blue = (linear(c) for c in rgba[:3])
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def confusion_matrix_png(matrix: np.ndarray, class_names: Sequence[str],
                         classes: Optional[Sequence[int]] = None) -> bytes:
    """The confusion matrix: counts and row-normalised percentages, names on both axes, a colour scale.

    Cells are shaded by their share of the true class's row; each shows its
    count and whole percentage (rows add up to exactly 100, largest-remainder
    rounding). With `classes` (a subset), only those rows and columns are
    drawn, plus a last column "other classes" holding the rest of each row.

    Args:
      matrix: `[K, K]` counts, rows true class, columns predicted.
      class_names: K names.
      classes: The classes to draw (None: all).
    """
    matrix = np.asarray(matrix, np.int64)
    k = matrix.shape[0]
    chosen = np.arange(k) if classes is None else np.asarray(classes, np.int64)
    shown = matrix[np.ix_(chosen, chosen)]
    columns = [class_label(int(c), class_names) for c in chosen]
    if len(chosen) < k:
        shown = np.concatenate([shown, matrix[chosen].sum(axis=1, keepdims=True) - shown.sum(
            axis=1, keepdims=True)], axis=1)
        columns.append("other classes")
    rows = [f"{class_label(int(c), class_names)} (n={int(matrix[c].sum())})" for c in chosen]
    percent = curves.row_percentages(shown)
    n_rows, n_columns = shown.shape
    cell = 0.85 if n_rows <= 5 else (0.62 if n_rows <= 12 else 0.5)
    font = 9 if n_rows <= 10 else (7.5 if n_rows <= 20 else 6.5)
    tick_font = font + 1
    char = 0.55 * tick_font / 72  # inches per character, roughly
    rotate = max(len(label) for label in columns) > 3
    left = 0.45 + char * max(len(label) for label in rows)
    bottom = 0.5 + (0.7 * char * max(len(label) for label in columns) if rotate else 0.2)
    right, top = 1.25, 0.2
    width, height = left + cell * n_columns + right, bottom + cell * n_rows + top
    figure = Figure(figsize=(width, height))
    axes = figure.add_axes((left / width, bottom / height, cell * n_columns / width, cell * n_rows / height))
    colour_axes = figure.add_axes(((left + cell * n_columns + 0.15) / width, bottom / height,
                                   0.18 / width, cell * n_rows / height))
    cmap = colormaps["Blues"]
    image = axes.imshow(percent / 100.0, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                        interpolation="nearest")
    for row in range(n_rows):
        for column in range(n_columns):
            count, share = int(shown[row, column]), int(percent[row, column])
            text = "0" if count == 0 else f"{count}\n{share if share or not count else '<1'}%"
            axes.text(column, row, text, ha="center", va="center", fontsize=font, linespacing=1.1,
                      color=_contrasting_text(cmap(share / 100.0)) if count else "#9a9a9a")
    axes.set_xticks(range(n_columns), columns, rotation=45 if rotate else 0,
                    ha="right" if rotate else "center", rotation_mode="anchor", fontsize=tick_font)
    axes.set_yticks(range(n_rows), rows, fontsize=tick_font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class (n = its rows)")
    axes.set_xticks(np.arange(n_columns + 1) - 0.5, minor=True)
    axes.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    axes.grid(which="minor", color="white", linewidth=1.0)
    axes.tick_params(which="minor", length=0)
    colorbar = figure.colorbar(image, cax=colour_axes)
    colorbar.set_label("share of the true class's rows")
    colorbar.set_ticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0%", "25%", "50%", "75%", "100%"])
    return _png(figure)


def _margins(figure: Figure, *, left: float, right: float, top: float, bottom: float,
             **spacing: float) -> None:
    """Fixed margins in inches (cheaper than a layout engine, which measures every text twice)."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                           bottom=bottom / height, **spacing)


def pr_curves_png(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                  classes: Sequence[int], *, served: Mapping[str, np.ndarray],
                  argmax: Optional[Mapping[str, np.ndarray]] = None, target_class: Optional[int] = None,
                  target_recall: Optional[float] = None) -> bytes:
    """One panel per class: the one-vs-rest PR curve of its score, the served decision marked.

    Args:
      labels: `[N]` labels.
      scores: `[N, K]` per-class scores (probabilities).
      class_names: K names.
      classes: The classes to draw.
      served: `{'recall': [K], 'precision': [K]}` of the served decision (the marker).
      argmax: The same of the plain argmax, marked too when it differs from `served`.
      target_class: The class whose recall is targeted (its panel draws `target_recall`).
      target_recall: The target recall (a vertical line), or None.
    """
    labels = np.asarray(labels, np.int64)
    # At most 3 columns (2 x 2 for 4): 9.2 in at most, so the figure fits the page at its natural
    # size and still fits a narrow window shrunk by no more than the page allows (page.MIN_SCALE).
    columns = 2 if len(classes) == 4 else min(3, len(classes))
    rows = -(-len(classes) // columns)
    figure = Figure(figsize=(0.8 + 2.8 * columns, 0.9 + 2.6 * rows))
    _margins(figure, left=0.6, right=0.15, top=0.75, bottom=0.5, wspace=0.08, hspace=0.3)
    panels = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for panel in panels.flat[len(classes):]:
        panel.set_visible(False)
    handles = {}
    for panel, k in zip(panels.flat, classes):
        k = int(k)
        curve = curves.precision_recall_curve(scores[:, k], labels == k)
        # Up to the first cut-off of full recall (later ones only lose precision), as a step
        # function whose area is the average precision.
        full = np.flatnonzero(curve.recall >= 1.0)
        stop = full[0] + 1 if full.size else curve.recall.size
        recall, precision = curve.recall[:stop], curve.precision[:stop]
        handles["PR curve"], = panel.step(recall, precision, where="pre", color="tab:blue",
                                          linewidth=1.3)
        handles["chance (the class's share)"] = panel.axhline(
            curve.positives / max(len(labels), 1), color="grey", linestyle=":", linewidth=1)
        if target_recall is not None and target_class == k:
            handles[f"target recall {target_recall:g}"] = panel.axvline(
                target_recall, color="tab:red", linestyle="--", linewidth=1.2)
        if argmax is not None and not _same_point(argmax, served, k):
            handles["plain argmax"], = panel.plot(
                argmax["recall"][k], _finite(argmax["precision"][k]), marker="s", markerfacecolor="none",
                markeredgecolor="black", linestyle="none", markersize=7)
        handles["served decision"], = panel.plot(served["recall"][k], _finite(served["precision"][k]),
                                                 marker="o", color="tab:red", linestyle="none", markersize=7)
        panel.set_title(f"{class_label(k, class_names)}: n={curve.positives}, "
                        f"AP {curve.average_precision:.2f}", fontsize=9)
        panel.grid(alpha=0.3)
    first = panels[0, 0]
    first.set_xlim(-0.02, 1.02)
    first.set_ylim(-0.02, 1.05)
    first.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    first.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
    for panel in panels[:, 0]:
        panel.set_ylabel("precision", fontsize=9)
    for row in range(rows):  # the last visible panel of a column shows the recall axis
        for column in range(columns):
            below = row + 1 < rows and (row + 1) * columns + column < len(classes)
            panels[row, column].tick_params(labelbottom=not below, labelsize=9)
            if not below and row * columns + column < len(classes):
                panels[row, column].set_xlabel("recall", fontsize=9)
    width, height = figure.get_size_inches()
    legend_columns = _legend_columns(figure, list(handles), width - 0.3, fontsize=9)
    extra = 0.22 * (-(-len(handles) // legend_columns) - 1)  # inches for each further row of the legend
    if extra:
        figure.set_size_inches(width, height + extra)
        _margins(figure, left=0.6, right=0.15, top=0.75 + extra, bottom=0.5, wspace=0.08, hspace=0.3)
    figure.legend(list(handles.values()), list(handles), loc="upper center", ncol=legend_columns, fontsize=9,
                  frameon=False)
    return _png(figure)


def _legend_columns(figure: Figure, labels: Sequence[str], width: float, *, fontsize: float) -> int:
    """The most legend columns whose labels fit in `width` inches (matplotlib fills column by column),
    the labels measured by the figure's renderer (no draw). A figure's legend of `n` labels in `c`
    columns has `ceil(n / c)` rows."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    font = FontProperties(size=fontsize)
    text = [renderer.get_text_width_height_descent(label, font, ismath=False)[0] / figure.dpi
            for label in labels]
    em = fontsize / 72
    for columns in range(len(labels), 1, -1):
        rows, longer = divmod(len(labels), columns)  # as matplotlib: the first `longer` columns get one more
        sizes = [rows + 1] * longer + [rows] * (columns - longer)
        starts = np.cumsum([0] + sizes[:-1])
        # Each column: handle (2 em), pad (0.8 em), its widest label; 2 em between columns.
        widths = [max(text[start:start + size]) + 2.8 * em for start, size in zip(starts, sizes)]
        if sum(widths) + 2.0 * em * (columns - 1) <= width:
            return columns
    return 1


def _finite(value: float) -> float:
    """Precision of a class never predicted is NaN; it is drawn at 0."""
    return 0.0 if not np.isfinite(value) else float(value)


def _same_point(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray], k: int) -> bool:
    return bool(np.isclose(first["recall"][k], second["recall"][k])
                and np.isclose(_finite(first["precision"][k]), _finite(second["precision"][k])))


def reliability_png(panels: Sequence[Tuple[str, Sequence[Tuple[str, np.ndarray, np.ndarray]]]], *,
                    bins: int) -> bytes:
    """Reliability diagrams: observed frequency against mean predicted probability per bin, with counts.

    Args:
      panels: `(title, [(label, scores [N], outcomes [N]), ...])` per panel;
        each labelled series is one line (e.g. calibrated and uncalibrated).
      bins: Equal-width bins on [0, 1].
    """
    width, height = 0.3 + 4.4 * len(panels), 5.2
    figure = Figure(figsize=(width, height))
    grid = figure.add_gridspec(2, len(panels), height_ratios=(3, 1), left=0.8 / width, right=1 - 0.2 / width,
                               top=1 - 0.35 / height, bottom=0.55 / height, wspace=0.25, hspace=0.08)
    colours = ("tab:blue", "tab:orange", "tab:green")
    for index, (title, series) in enumerate(panels):
        top = figure.add_subplot(grid[0, index])
        bottom = figure.add_subplot(grid[1, index], sharex=top)
        top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
        width = 1.0 / bins / (len(series) + 0.5)
        for number, ((label, scores, outcomes), colour) in enumerate(zip(series, colours)):
            binned = curves.reliability_bins(scores, outcomes, bins)
            filled = binned.counts > 0
            top.plot(binned.mean_score[filled], binned.frequency[filled], marker="o", markersize=4,
                     color=colour, label=label)
            left = binned.edges[:-1] + (number + 0.25) * width
            bottom.bar(left, binned.counts, width=width, align="edge", color=colour, alpha=0.8)
        top.set_xlim(-0.02, 1.02)  # room for points at 0 and 1, as the other figures
        top.set_ylim(-0.02, 1.03)
        top.set_title(title, fontsize=10)
        top.set_ylabel("observed frequency")
        top.grid(alpha=0.3)
        top.legend(fontsize=8, loc="upper left")
        top.tick_params(labelbottom=False)
        bottom.set_yscale("log")
        bottom.set_xlabel("predicted probability")
        bottom.set_ylabel("rows per bin")
        bottom.grid(alpha=0.3)
    return _png(figure)


def history_png(series: Mapping[int, np.ndarray], class_names: Sequence[str], classes: Sequence[int], *,
                ylabel: str, target_class: Optional[int] = None, target_value: Optional[float] = None,
                log_scale: bool = False, unit_range: bool = False) -> bytes:
    """One line per class over the epochs (`series`: class -> `[E, 2]` `(epoch, value)` rows).

    Args:
      series: Per-class `(epoch, value)` rows.
      class_names: K names.
      classes: The classes to draw (those with a series).
      ylabel: The value's name.
      target_class: Drawn thicker, with `target_value` as a dashed line.
      target_value: A horizontal reference (e.g. the target recall), or None.
      log_scale: A log y axis (class weights spanning orders of magnitude).
      unit_range: A y axis from 0 to 1 (recall, precision).
    """
    legend_columns = 1 if len(classes) <= 14 else 2
    longest = max([len(class_label(int(k), class_names)) + (9 if int(k) == target_class else 0)
                   for k in classes] + [10])
    right = 0.25 + legend_columns * (0.55 + 0.062 * longest)
    figure = Figure(figsize=(6.5 + right, 4.0))
    _margins(figure, left=0.75, right=right, top=0.2, bottom=0.55)
    axes = figure.add_subplot()
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    epochs_max = 1
    for index, k in enumerate(classes):
        rows = series[int(k)]
        epochs_max = max(epochs_max, int(rows[:, 0].max()))
        thick = target_class is not None and int(k) == target_class
        axes.plot(rows[:, 0], rows[:, 1], marker="o" if len(rows) <= 30 else None, markersize=3,
                  linewidth=2.6 if thick else 1.4, color=palette(index % palette.N),
                  label=class_label(int(k), class_names) + (" (target)" if thick else ""))
    if target_value is not None:  # black: tab10 and tab20 give classes red, the target line must differ
        axes.axhline(target_value, color="black", linestyle="--", linewidth=1.2,
                     label=f"target {target_value:g}")
    if log_scale:
        axes.set_yscale("log")
        _plain_log_ticks(axes, [series[int(k)][:, 1] for k in classes])
    elif unit_range:
        axes.set_ylim(-0.02, 1.03)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_xlim(0.8, epochs_max + 0.2)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=legend_columns)
    return _png(figure)


def _plain_log_ticks(axes, values: Sequence[np.ndarray]) -> None:
    """A log y axis labelled in plain numbers: 1, 2 and 5 of each power of ten (1 only past 3 decades)."""
    positive = np.concatenate([np.asarray(v, np.float64).ravel() for v in values])
    positive = positive[np.isfinite(positive) & (positive > 0)]
    decades = np.log10(positive.max() / positive.min()) if positive.size else 0.0
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,),
                                            numticks=30))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
