"""Labels per position: an NPZ file's `y` of shape `[N, H, W]` (masks) or `[N, T]` (token tags).

Every position is an example of its class (`trainer.tasks.PerPositionTask`): class counts count
positions, a position labelled `ignore_label` counts for nothing. `x` holds the features of the
same positions, `[N, H, W, C]` or `[N, T, F]` (a `[N, H, W]` or `[N, T]` `x` gets a channel
axis). The splits keep whole examples (images, sequences), stratified on each example's rarest
class present (by the file's position counts; an example with no counted position forms a
stratum of its own), with the seeded rule of single-label data.
"""

from __future__ import annotations

import warnings
import zipfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .arrays import ArrayPipeline, load_npz, validate_features
from .bundle import DataBundle, DataSplit
from .errors import DataWarning, InputDataError
from .sources import parse_spec, require_held_out, require_test, split_origins, split_rule
from .splits import stratified_parts
from .stats import Moments
from .weights import check_array

NO_CLASS_STRATUM = "(no counted position)"


def label_rank(path: str) -> int:
    """The rank of an NPZ file's `y` (1 for one label per example), without reading `x`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["y"].ndim) if "y" in data.files else 1
    except (OSError, ValueError, zipfile.BadZipFile):
        return 1  # the loader names what is wrong with the file


def position_counts(y: np.ndarray, num_classes: int, ignore_label: Optional[int]) -> np.ndarray:
    """int64 `[num_classes]`: counted positions of each class."""
    values = y.reshape(-1)
    if ignore_label is not None:
        values = values[values != ignore_label]
    return np.bincount(values, minlength=num_classes).astype(np.int64)


def strata(y: np.ndarray, counts: np.ndarray, ignore_label: Optional[int]) -> np.ndarray:
    """Each example's rarest class present (by `counts`), or `len(counts)` without counted positions."""
    flat = y.reshape(len(y), -1)
    k = len(counts)
    present = np.zeros((len(y), k + 1), bool)
    rows = np.repeat(np.arange(len(y)), flat.shape[1])
    codes = flat.reshape(-1)
    if ignore_label is not None:
        keep = codes != ignore_label
        rows, codes = rows[keep], codes[keep]
    present[rows, codes] = True
    rarity = np.where(present[:, :k], counts[None, :].astype(np.float64), np.inf)
    return np.where(np.isinf(rarity.min(axis=1)), k, np.argmin(rarity, axis=1)).astype(np.int64)


def _labels(y: np.ndarray, source: str, num_classes: Optional[int],
            ignore_label: Optional[int]) -> Tuple[np.ndarray, int]:
    """Checks integer labels per position; returns (int32 labels, the number of classes).

    Raises:
      InputDataError: non-integer labels, a negative label that is not `ignore_label`, a label
        >= `num_classes`, an `ignore_label` that is a class, or class codes with no position
        below the largest (a missing `--ignore_label` for 255, say).
    """
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or (y.dtype.kind == "f" and not np.all(np.isfinite(y))) \
            or (y.dtype.kind == "f" and np.any(y != np.round(y))):
        raise InputDataError(f"file {source!r}: labels per position 'y' {tuple(y.shape)} must be integer "
                             f"class indices, got dtype {y.dtype} with non-integer values")
    y = y.astype(np.int64)
    counted = y if ignore_label is None else y[y != ignore_label]
    if counted.size == 0:
        raise InputDataError(f"ignore_label={ignore_label}: every position of 'y' in file {source!r} has "
                             f"it, so nothing would be counted", argument="ignore_label", value=ignore_label)
    low = int(counted.min())
    if low < 0:
        where = list(int(v) for v in np.argwhere(y == low)[0])
        if ignore_label is None:
            raise InputDataError(f"ignore_label: file {source!r} has the negative label {low} at y{where}; "
                                 f"if it marks positions to leave out, pass ignore_label={low}",
                                 argument="ignore_label", value=ignore_label)
        raise InputDataError(f"file {source!r}: label {low} at y{where} is negative and not the "
                             f"ignore_label ({ignore_label})")
    k = int(counted.max()) + 1 if num_classes is None else int(num_classes)
    if int(counted.max()) >= k:
        raise InputDataError(f"num_classes={k}: file {source!r} has label {int(counted.max())} in 'y'",
                             argument="num_classes", value=k)
    if ignore_label is not None and 0 <= ignore_label < k:
        raise InputDataError(f"ignore_label={ignore_label} is a class index of the data (0..{k - 1}): its "
                             f"positions would be left out as well as counted", argument="ignore_label",
                             value=ignore_label)
    counts = np.bincount(counted.reshape(-1), minlength=k)
    gaps = np.flatnonzero(counts == 0)
    if num_classes is None and len(gaps) and len(gaps) >= max(2, k // 2):
        raise InputDataError(f"ignore_label: in file {source!r}, {len(gaps)} of the class codes 0..{k - 1} "
                             f"have no position "
                             f"(the largest label is {k - 1}); if {k - 1} marks positions to leave out, "
                             f"pass ignore_label={k - 1}, else give num_classes",
                             argument="ignore_label", value=ignore_label)
    return y.astype(np.int32), k


def _features(x: np.ndarray, y: np.ndarray, source: str, channels_first: Optional[bool]) -> np.ndarray:
    x = np.asarray(x)
    if x.shape == y.shape:
        x = x[..., None]  # one value per position: a channel axis
    x = validate_features(x, num_rows=len(y), source=source, channels_first=channels_first, images=False)
    if tuple(x.shape[1:y.ndim]) != tuple(y.shape[1:]) or x.ndim != y.ndim + 1:
        raise InputDataError(f"file {source!r}: labels per position 'y' {tuple(y.shape)} need features "
                             f"'x' of shape [N, {', '.join(map(str, y.shape[1:]))}, channels]; x has "
                             f"shape {tuple(x.shape)}")
    return x


def _split(name: str, x, y, w, k: int, ignore_label: Optional[int], origin: str) -> DataSplit:
    return DataSplit(name=name, input_shape=tuple(int(d) for d in x.shape[1:]),
                     class_counts=position_counts(y, k, ignore_label), num_examples=int(len(y)),
                     pipeline=ArrayPipeline(x, y, w), origin=origin, weighted=w is not None)


def _read(path: str, weight_key: Optional[str], channels_first: Optional[bool], *, required: bool = True):
    x, y, w, name = load_npz(path, weight_key, required=required)
    y = np.asarray(y)
    x = _features(x, y, path, channels_first)
    if w is not None:
        w = check_array(w, num_rows=len(y), argument="weight_key", value=weight_key or name, source=path,
                        name=name)
    return x, y, w, name


def _notes(names: Sequence[str], train: DataSplit, held: Sequence[Optional[DataSplit]]) -> List[str]:
    notes = []
    for c, name in enumerate(names):
        if train.class_counts[c] == 0:
            notes.append(f"class {c} ({name!r}) has no training position")
        for split in held:
            if split is not None and train.class_counts[c] and split.class_counts[c] == 0:
                notes.append(f"class {c} ({name!r}) has no position in the {split.name} split "
                             f"({split.origin})")
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return notes


def load_per_position_data(dataset: str, *, eval_dataset: Optional[str] = None,
                           validation_split: float = 0.2, test_split: float = 0.2, seed: int = 0,
                           num_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
                           ignore_label: Optional[int] = None, hold_out_validation: bool = False,
                           weight_key: Optional[str] = None,
                           channels_first: Optional[bool] = None) -> DataBundle:
    """Loads an NPZ file of labels per position (`y` `[N, d1, ..., dk]`) into a `DataBundle`.

    Args:
      dataset: `npz:PATH`.
      eval_dataset: Reporting data of the same form (`npz:PATH`); default a stratified test split.
      validation_split, test_split, seed, hold_out_validation, weight_key, channels_first: As for
        `load_data` (weights are per example).
      num_classes: The number of classes (default: the largest counted label + 1).
      class_names: Names of the classes 0..K-1.
      ignore_label: The label of positions to leave out (not a class index).

    Returns:
      The bundle: class counts count positions; `label_shape` is `(d1, ..., dk)` and
      `ignore_label` the label left out; batches are (features, int32 labels `[B, d1, ..., dk]`[, w]).

    Raises:
      InputDataError: naming the argument (`ignore_label`, `num_classes`, ...) or the file and value.
    """
    spec = parse_spec(dataset, "dataset")
    eval_spec = parse_spec(eval_dataset, "eval_dataset") if eval_dataset else None
    for argument, item in (("dataset", spec), ("eval_dataset", eval_spec)):
        if item is not None and item.kind != "npz":
            raise InputDataError(f"{argument}={item}: labels per position are read from npz: files "
                                 f"(arrays x and y)", argument=argument, value=str(item))
    rule, three_part = split_rule(spec, eval_spec, validation_split=validation_split, test_split=test_split,
                                  seed=seed, hold_out_validation=hold_out_validation)
    x, y, w, name = _read(spec.path, weight_key, channels_first)
    y, k = _labels(y, spec.path, num_classes, ignore_label)
    names = [str(c) for c in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise InputDataError(f"class_names has {len(names)} names for the {k} classes of {spec}",
                             argument="class_names", value=",".join(names))
    counts = position_counts(y, k, ignore_label)
    origins = split_origins(spec, eval_spec, rule)
    if rule is None:
        tr, va, te = np.arange(len(y)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    else:
        tr, va, te = stratified_parts(strata(y, counts, ignore_label), [*names, NO_CLASS_STRATUM], rule)

    def part(split_name, index, origin):
        weights = None if w is None else w[index]
        return _split(split_name, x[index], y[index], weights, k, ignore_label, origin)

    train = part("train", tr, origins["train"])
    validation = test = None
    if rule is not None:
        validation = part("validation", va, origins["validation"])
        require_held_out(validation, dataset, rule.validation)
        if three_part:
            test = part("eval", te, origins["eval"])
            require_test(test, dataset, rule.test)
    if eval_spec is not None:
        ex, ey, ew, _ = _read(eval_spec.path, weight_key if w is not None else "none", channels_first,
                              required=False)
        ey, _ = _labels(ey, eval_spec.path, k, ignore_label)
        if tuple(ex.shape[1:]) != tuple(x.shape[1:]):
            raise InputDataError(f"eval_dataset={eval_dataset!r} has feature shape {tuple(ex.shape[1:])}, "
                                 f"the training data {dataset!r} has {tuple(x.shape[1:])}",
                                 argument="eval_dataset", value=eval_dataset)
        test = _split("eval", ex, ey, ew, k, ignore_label, origins["eval"])
    moments = Moments()
    moments.add(x[tr])
    mean, variance = moments.result()
    notes = _notes(names, train, (validation, test))
    ignored = "" if ignore_label is None else f", label {ignore_label} ignored"
    held = "" if validation is None else f"; validation {validation.num_examples:,} (chooses)"
    description = (f"{spec}: {k} classes per position (labels {tuple(y.shape[1:])} per example{ignored}), "
                   f"input shape {tuple(train.input_shape)}; train {train.num_examples:,} examples, "
                   f"{int(train.class_counts.sum()):,} counted positions{held}; eval {test.num_examples:,} "
                   f"({origins['eval']}, reports); splits stratified on each example's rarest class")
    if w is not None:
        description += f"; sample weights (per example): array {name!r} of {spec.path}"
    return DataBundle(train=train, eval=test, num_classes=k, class_names=names, feature_mean=mean,
                      feature_variance=variance, description=description, validation=validation,
                      notes=notes, sample_weights=None if w is None else f"array {name!r} of {spec.path}",
                      label_shape=tuple(int(d) for d in y.shape[1:]), ignore_label=ignore_label)
