"""Label spaces: how raw labels (integers, other numbers or strings) map to class indices.

Numbers are canonicalised (' 07' -> '7', '2.0' -> '2', '1.50' -> '1.5'). Labels that are all
integers 0..K-1 are class indices (`--class_names` may name them); integer codes with gaps or not
starting at 0 (1, 2, 3, 5, 6, 7) are class names in numeric order, with a warning (CSV, NPZ and
TFRecord alike; `num_classes` keeps them indices); other labels are class names, in
the order given or sorted (numbers by value, before text sorted as text).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import tensorflow as tf

from .errors import DataWarning, InputDataError

INT_PATTERN = r"[+-]?[0-9]+"
# A finite decimal number as both `float()` and `tf.strings.to_number` read it (no nan, inf, hex).
NUMBER_PATTERN = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
_INT_RE = re.compile(INT_PATTERN)
_NUMBER_RE = re.compile(NUMBER_PATTERN)
# Class names the data description lists before it abbreviates.
SHOWN_CLASSES = 20
# Integer labels are class indices 0..K-1; a label this large is no class index (an ID column?).
MAX_CLASSES = 100_000


def label_value(name: str) -> Optional[float]:
    """The finite number a label writes (-0.0 as 0.0), or None when it is not one."""
    s = name.strip()
    if not _NUMBER_RE.fullmatch(s):
        return None
    value = float(s) + 0.0
    return value if math.isfinite(value) else None


def canonical_label(raw: str) -> str:
    """Strips whitespace and writes numbers canonically: integral ones as integers ('2.0' -> '2')."""
    s = raw.strip()
    if _INT_RE.fullmatch(s):
        return str(int(s))
    value = label_value(s)
    if value is None:
        return s
    return str(int(value)) if value.is_integer() else repr(value)


def is_int_label(name: str) -> bool:
    """Whether a canonical label is an integer."""
    return bool(_INT_RE.fullmatch(name))


def sort_labels(names: Iterable[str]) -> List[str]:
    """Canonical labels in class order: numbers by value, then the rest sorted as text."""
    def key(name: str):
        value = label_value(name)
        return (0, value, name) if value is not None else (1, 0.0, name)
    return sorted(set(names), key=key)


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The classes of a dataset.

    Attributes:
      mode: 'int' (label k is class k, whatever the names) or 'string' (a label is looked up in
        `names`).
      names: Class names indexed by class: in 'int' mode display names (by default '0', '1',
        ...), in 'string' mode the canonical labels themselves.
    """

    mode: str
    names: List[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.names)

    @property
    def keys(self) -> List[str]:
        """The canonical label of each class ('0', '1', ... in 'int' mode): what splits seed from."""
        return [str(i) for i in range(len(self.names))] if self.mode == "int" else list(self.names)

    def index_of(self, name: str) -> Optional[int]:
        """Class index of a canonical label, or None if it is not a class."""
        if self.mode == "int":
            if not is_int_label(name):
                return None
            k = int(name)
            return k if 0 <= k < len(self.names) else None
        return self._index().get(name)

    def _index(self) -> Dict[str, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {n: i for i, n in enumerate(self.names)}
            object.__setattr__(self, "_cache", cache)
        return cache

    def to_indices_fn(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """A tensor function: raw label strings [B] -> int32 class indices [B] (-1 if unknown).

        Agrees with `index_of(canonical_label(raw))`: ' 07', '7.0' and '7e0' are all class 7.
        """
        k = len(self.names)
        if self.mode == "int":
            @tf.autograph.experimental.do_not_convert
            def to_int(s):
                s = tf.strings.strip(s)
                is_int = tf.strings.regex_full_match(s, INT_PATTERN)
                is_number = tf.strings.regex_full_match(s, NUMBER_PATTERN)
                zero = tf.fill(tf.shape(s), "0")
                as_int = tf.strings.to_number(tf.where(is_int, s, zero), tf.int64)
                value = tf.strings.to_number(tf.where(is_number, s, zero), tf.float64)
                integral = is_number & (tf.math.floor(value) == value) & (tf.abs(value) < 2.0 ** 62)
                index = tf.where(is_int, as_int,
                                 tf.where(integral, tf.cast(value, tf.int64), tf.constant(-1, tf.int64)))
                known = (is_int | integral) & (index >= 0) & (index < k)
                return tf.where(known, tf.cast(index, tf.int32), -1)
            return to_int
        names_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.names, tf.string), tf.range(k, dtype=tf.int32)), default_value=-1)
        # Numeric names are also found by value (their float64 bits), so '1.50' finds '1.5'.
        numeric = [(label_value(n), i) for i, n in enumerate(self.names) if label_value(n) is not None]
        values_table = None
        if numeric:
            bits = tf.bitcast(tf.constant([v for v, _ in numeric], tf.float64), tf.int64)
            values_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(bits, tf.constant([i for _, i in numeric], tf.int32)),
                default_value=-1)

        @tf.autograph.experimental.do_not_convert
        def to_index(s):
            s = tf.strings.strip(s)
            by_name = names_table.lookup(s)
            if values_table is None:
                return by_name
            is_number = tf.strings.regex_full_match(s, NUMBER_PATTERN)
            value = tf.strings.to_number(tf.where(is_number, s, tf.fill(tf.shape(s), "0")),
                                         tf.float64) + 0.0
            by_value = values_table.lookup(tf.bitcast(value, tf.int64))
            return tf.where(is_number & (by_value >= 0), by_value, by_name)
        return to_index


def class_index(value: object, class_names: Sequence[str]) -> Optional[int]:
    """The class a user names by name or by index, or None when it names none.

    A class name wins over an index: with string labels that look like numbers (classes
    '1.5', '2.5'), '2.5' is that class and '1' is class 1. With integer labels the two
    meanings agree (`int_space` refuses display names that are other integers).

    Args:
      value: A class name or an index (int, or a string such as '2' or '2.0').
      class_names: Names indexed by class.
    """
    names = [str(n) for n in class_names]
    text = str(value).strip()
    for candidate in (text, canonical_label(text)):
        if candidate in names:
            return names.index(candidate)
    c = canonical_label(text)
    if is_int_label(c) and 0 <= int(c) < len(names):
        return int(c)
    return None


def describe_classes(names: Sequence[str]) -> str:
    """'0=benign, 1=malignant' (abbreviated past `SHOWN_CLASSES`); '' when names are the indices."""
    if [str(n) for n in names] == [str(i) for i in range(len(names))]:
        return ""
    shown = [f"{i}={n}" for i, n in enumerate(names[:SHOWN_CLASSES])]
    if len(names) > SHOWN_CLASSES:
        shown.append(f"... {len(names) - 1}={names[-1]}")
    return ", ".join(shown)


def _names_argument(class_names: Sequence[str], canonical: bool) -> List[str]:
    """The stripped (or canonical) names of `class_names`; refuses empty and repeated names."""
    names = [canonical_label(str(n)) if canonical else str(n).strip() for n in class_names]
    given = list(class_names)
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise InputDataError(f"class_names={given!r} has an empty name at position(s) {empty}",
                             argument="class_names", value=given)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputDataError(f"class_names={given!r} repeats {repeated}: give each class once",
                             argument="class_names", value=given)
    return names


def int_space(num_classes: int, class_names: Optional[Sequence[str]] = None,
              source: str = "the data") -> LabelSpace:
    """The space of integer labels 0..num_classes-1, named by `class_names` (display names).

    Raises:
      InputDataError: (argument `class_names`) a count that is not `num_classes`, an empty or
        repeated name, or a name that is another class's index.
    """
    if class_names is None:
        return LabelSpace("int", [str(i) for i in range(num_classes)])
    given = list(class_names)
    names = _names_argument(class_names, canonical=False)
    if len(names) != num_classes:
        raise InputDataError(
            f"class_names={given!r} has {len(names)} names but the integer labels of {source} "
            f"make {num_classes} classes (0..{num_classes - 1}): give one name per class, in "
            "class order", argument="class_names", value=given)
    other = [f"{n!r} at position {i}" for i, n in enumerate(names)
             if is_int_label(canonical_label(n)) and canonical_label(n) != str(i)]
    if other:
        raise InputDataError(
            f"class_names={given!r}: the labels of {source} are integers (label k is class k), "
            f"so a name that is an integer must be its own index, not {', '.join(other)}",
            argument="class_names", value=given)
    return LabelSpace("int", names)


def string_space(found: Iterable[str], class_names: Optional[Sequence[str]] = None,
                 source: str = "the data") -> LabelSpace:
    """The space of string labels `found` (canonical): sorted, or in the order of `class_names`.

    Raises:
      InputDataError: (argument `class_names`) names that are not labels of the data, labels
        it does not name (each listed), or an empty or repeated name.
    """
    found = set(found)
    if class_names is None:
        return LabelSpace("string", sort_labels(found))
    given = list(class_names)
    names = _names_argument(class_names, canonical=True)
    unknown = [n for n in names if n not in found]
    missing = sort_labels(found - set(names))
    if unknown or missing:
        problems = []
        if unknown:
            verb = "is not a label" if len(unknown) == 1 else "are not labels"
            problems.append(f"{unknown} {verb} of {source}")
        if missing:
            problems.append(f"it does not name label(s) {missing}")
        raise InputDataError(
            f"class_names={given!r} must list every label of {source} once: "
            f"{'; '.join(problems)} (the labels are {sort_labels(found)})",
            argument="class_names", value=given)
    return LabelSpace("string", names)


def _listed(names: Sequence[str], at: Callable[[str], str], limit: int = 10) -> str:
    """The locations of `names` joined by '; ' (at most `limit`, then a count)."""
    shown = "; ".join(at(n) for n in names[:limit])
    return shown + (f"; and {len(names) - limit} more" if len(names) > limit else "")


def resolve(first_rows: Mapping[str, int], *, at: Callable[[str], str], source: str, column: str,
            known: Optional[LabelSpace], num_classes: Optional[int], allow_strings: bool,
            class_names: Optional[Sequence[str]] = None) -> LabelSpace:
    """Decides the label space of the labels found and checks each of them against it.

    Args:
      first_rows: Each distinct canonical label -> its first 1-based row.
      at: A label -> where it is, for messages (`describe_location(...)`).
      source: The data, for messages.
      column: Label column / key, for messages.
      known: The training label space, when this is an eval set (`class_names` unused).
      num_classes: If given, integer labels must lie in [0, num_classes).
      allow_strings: Whether labels may be other than integers.
      class_names: String labels: the class order (exactly the labels found); integer
        labels: the names of classes 0..K-1. Default: sorted labels, integers by index.

    Returns:
      The label space (`known` itself for an eval set).

    Raises:
      InputDataError: Listing each bad label where it first occurs (with `argument`
        "num_classes" or "class_names" when the labels do not fit those).
    """
    names = sorted(first_rows, key=lambda n: first_rows[n])
    if "" in first_rows:
        raise InputDataError(f"empty label: {at('')}")
    if known is not None:
        unseen = [n for n in names if known.index_of(n) is None]
        if unseen:
            raise InputDataError(
                f"label unseen in training: {_listed(unseen, at)}; training classes: {known.names}")
        return known
    where = f"{source!r}" + (f" (column {column!r})" if column else "")
    if not all(is_int_label(n) for n in names):
        if not allow_strings:
            bad = [n for n in names if not is_int_label(n)]
            raise InputDataError(f"label is not an integer: {_listed(bad, at)}")
        space = string_space(names, class_names, source=where)
        if num_classes is not None and num_classes != space.num_classes:
            raise InputDataError(
                f"num_classes={num_classes} but {source!r} has {space.num_classes} string labels "
                f"in column {column!r}: {space.names}", argument="num_classes", value=num_classes)
        return space
    negative = [n for n in names if int(n) < 0]
    if negative:
        raise InputDataError(f"negative label: {_listed(negative, at)}")
    k = max(int(n) for n in names) + 1
    if num_classes is not None:
        over = [n for n in names if int(n) >= num_classes]
        if over:
            raise InputDataError(
                f"num_classes={num_classes}, but label out of range [0, {num_classes}): "
                f"{_listed(over, at)}", argument="num_classes", value=num_classes)
        k = num_classes
    huge = [n for n in names if int(n) >= MAX_CLASSES]
    if huge:
        raise InputDataError(
            f"label too large for a class index: {_listed(huge, at)}; integer labels are class "
            f"indices 0..K-1 (at most {MAX_CLASSES:,} classes): is {column!r} the label?")
    codes = sorted(int(n) for n in names)
    if num_classes is None and class_names is None and codes != list(range(k)):
        # Codes such as 1, 2, 3, 5, 6, 7 (glass.csv): the codes found are the classes, in numeric
        # order, instead of indices 0..7 with classes 0 and 4 that no row has.
        space = string_space(names, None, source=where)
        absent = sorted(set(range(k)) - set(codes))
        warnings.warn(
            f"the integer labels of {where} are not 0..{len(codes) - 1} (no row has "
            f"{_shown(absent)}): the {len(codes)} codes found are the classes, in numeric order "
            f"({describe_classes(space.names)}); flags that take a class take the code (e.g. "
            f"--target_class={space.names[-1]}); --num_classes={k} keeps code k as class index k "
            f"instead", DataWarning, stacklevel=2)
        return space
    return int_space(k, class_names, source=where)


def _shown(codes: Sequence[int], limit: int = 10) -> str:
    """'0 and 4', or the first `limit` codes and a count."""
    shown = [str(c) for c in codes[:limit]]
    if len(codes) > limit:
        return ", ".join(shown) + f" and {len(codes) - limit} more"
    return " and ".join(shown) if len(shown) <= 2 else ", ".join(shown[:-1]) + " and " + shown[-1]
