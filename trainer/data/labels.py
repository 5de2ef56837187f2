"""Label spaces: how raw labels (integers or strings) map to class indices.

Integer-looking labels are canonicalised (' 07' -> '7'); string labels map to sorted names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Optional

import tensorflow as tf

_INT_RE = re.compile(r"[+-]?[0-9]+")


def canonical_label(raw: str) -> str:
    """Strips whitespace and writes integer-looking labels in canonical form."""
    s = raw.strip()
    if _INT_RE.fullmatch(s):
        return str(int(s))
    return s


def is_int_label(name: str) -> bool:
    """Whether a canonical label is an integer."""
    return bool(_INT_RE.fullmatch(name))


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The classes of a dataset.

    Attributes:
      mode: 'int' (label k is class k) or 'string' (label is looked up in `names`).
      names: Class names indexed by class.
    """

    mode: str
    names: List[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.names)

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
        """A tensor function: raw label strings [B] -> int32 class indices [B] (-1 if unknown)."""
        if self.mode == "int":
            @tf.autograph.experimental.do_not_convert
            def to_int(s):
                return tf.cast(tf.strings.to_number(tf.strings.strip(s), tf.int64), tf.int32)
            return to_int
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.names, tf.string),
                tf.range(len(self.names), dtype=tf.int32)), default_value=-1)

        @tf.autograph.experimental.do_not_convert
        def to_index(s):
            s = tf.strings.strip(s)
            is_int = tf.strings.regex_full_match(s, r"[+-]?[0-9]+")
            # Canonical integers: to_number on non-integers is avoided by substituting "0".
            as_int = tf.strings.as_string(
                tf.strings.to_number(tf.where(is_int, s, tf.fill(tf.shape(s), "0")), tf.int64))
            return table.lookup(tf.where(is_int, as_int, s))
        return to_index
