"""One-pass statistics of a stream of batches: per-class counts, split parts, mean and variance.

Also the JSON cache of those statistics, keyed by each file's path, mtime and size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from trainer.atomic_files import atomic_write

from . import splits


class Moments:
    """Running mean and population variance over all axes but the last (Chan et al. merge)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Optional[np.ndarray] = None
        self.m2: Optional[np.ndarray] = None

    def add(self, x: np.ndarray) -> None:
        """Adds a batch of examples [B, ..., C]."""
        if x.size == 0:
            return
        flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        n = flat.shape[0]
        mean = flat.mean(axis=0)
        m2 = ((flat - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def result(self) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """Returns (mean, variance) as float32 arrays [C], or (None, None) if empty."""
        if self.count == 0:
            return None, None
        return self.mean.astype(np.float32), (self.m2 / self.count).astype(np.float32)


def first_nonfinite(x: np.ndarray) -> Optional[Tuple[int, int]]:
    """Returns (example index, flat feature index) of the first NaN/Inf in [B, ...], or None."""
    flat = x.reshape(x.shape[0], -1)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return None
    row = int(np.argmax(bad.any(axis=1)))
    return row, int(np.argmax(bad[row]))


class SplitCounter:
    """Counts examples per class key in stream order and decides the streamed split.

    Keys are canonical class names (str). With `rule` None nothing is held out.
    Moments are accumulated over training-side examples.

    Attributes:
      seen: Rows per key.
      held: Validation rows per key.
      test: Test rows per key.
    """

    def __init__(self, rule: Optional[splits.SplitRule], moments: bool = True) -> None:
        self.rule = rule
        self.seen: Dict[str, int] = {}
        self.held: Dict[str, int] = {}
        self.test: Dict[str, int] = {}
        self.first_row: Dict[str, int] = {}
        self.batch_histograms: List[Dict[str, int]] = []
        self._offsets: Dict[str, Tuple[float, float]] = {}
        self.moments = Moments() if moments else None

    def add(self, x: np.ndarray, uniq: Sequence[str], inverse: np.ndarray,
            first_row: int) -> np.ndarray:
        """Adds a batch in stream order; returns its parts (int8 [B]: `splits.TRAIN`, ...).

        Args:
          x: Features [B, ...].
          uniq: Distinct canonical class names in this batch.
          inverse: int [B]: each example's position in `uniq`.
          first_row: 1-based row number of the batch's first example.
        """
        inverse = np.asarray(inverse).reshape(-1)
        for j, k in enumerate(uniq):
            if k not in self.first_row:
                self.first_row[k] = first_row + int(np.argmax(inverse == j))
        order = np.argsort(inverse, kind="stable")
        sorted_inv = inverse[order]
        first = np.searchsorted(sorted_inv, sorted_inv, side="left")
        ranks = np.empty(len(inverse), dtype=np.int64)
        ranks[order] = np.arange(len(inverse)) - first
        base = np.array([self.seen.get(k, 0) for k in uniq], dtype=np.int64)
        ranks += base[inverse]
        per_key = np.bincount(inverse, minlength=len(uniq))
        for k, n in zip(uniq, per_key):
            self.seen[k] = self.seen.get(k, 0) + int(n)
        self.batch_histograms.append({k: int(n) for k, n in zip(uniq, per_key)})
        if self.rule is None:
            parts = np.full(len(inverse), splits.TRAIN, dtype=np.int8)
        else:
            for k in uniq:
                if k not in self._offsets:
                    self._offsets[k] = self.rule.class_offset(k)
            u = np.array([self._offsets[k][0] for k in uniq])[inverse]
            b = np.array([self._offsets[k][1] for k in uniq])[inverse]
            parts = self.rule.assign(ranks, u, b)
            for part, store in ((splits.VALIDATION, self.held), (splits.TEST, self.test)):
                per_part = np.bincount(inverse[parts == part], minlength=len(uniq))
                for k, n in zip(uniq, per_part):
                    store[k] = store.get(k, 0) + int(n)
        if self.moments is not None:
            self.moments.add(x[parts == splits.TRAIN])
        return parts


def order_skew(counter: SplitCounter) -> float:
    """Median total-variation distance between each batch's class mix and the whole stream's.

    Near 0 for a file in random order; near 1 for a file sorted by class.
    """
    total = sum(counter.seen.values())
    if total == 0 or len(counter.batch_histograms) < 2:
        return 0.0
    overall = {k: n / total for k, n in counter.seen.items()}
    distances = []
    for hist in counter.batch_histograms:
        n = sum(hist.values())
        distances.append(0.5 * sum(abs(hist.get(k, 0) / n - p) for k, p in overall.items()))
    return float(np.median(distances))


@dataclasses.dataclass
class StreamSummary:
    """What one statistics pass over a streamed source found (JSON-serialisable).

    Attributes:
      class_names: Names indexed by class.
      label_mode: 'int' (labels are class indices) or 'string' (mapped by name).
      input_shape: Per-example feature shape.
      train_counts: Per-class counts of the training side.
      held_counts: Per-class counts of the validation part (all zero without a split).
      mean: Training-side feature mean (list) or None.
      variance: Training-side feature variance (list) or None.
      first_rows: Per-class 1-based row of the class's first example (0 if absent).
      test_counts: Per-class counts of the test part (all zero without one).
      schema: A table's column schema (`TabularSchema.to_json()`), or None.
    """

    class_names: List[str]
    label_mode: str
    input_shape: Tuple[int, ...]
    train_counts: List[int]
    held_counts: List[int]
    mean: Optional[List[float]]
    variance: Optional[List[float]]
    first_rows: List[int]
    test_counts: List[int] = dataclasses.field(default_factory=list)
    schema: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        """Returns a JSON-compatible dict."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "StreamSummary":
        """Inverse of `to_json`."""
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def rule_key(rule: Optional[splits.SplitRule]) -> Optional[Dict[str, Any]]:
    """The cache-key form of a split rule (None: no split)."""
    if rule is None:
        return None
    return {"validation_split": rule.validation, "test_split": rule.test, "seed": rule.seed}


def file_signature(paths: Sequence[str]) -> List[List[Any]]:
    """[[absolute path, mtime_ns, size], ...] for a cache key."""
    sig = []
    for p in paths:
        st = os.stat(p)
        sig.append([os.path.abspath(p), st.st_mtime_ns, st.st_size])
    return sig


def _cache_path(cache_dir: str, key: Dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return os.path.join(cache_dir, f"data_stats_{digest}.json")


def load_cached(cache_dir: Optional[str], key: Dict[str, Any]) -> Optional[StreamSummary]:
    """Returns the cached summary for `key`, or None (no cache dir, miss, or unreadable)."""
    if not cache_dir:
        return None
    path = _cache_path(cache_dir, key)
    try:
        with open(path, "r", encoding="utf-8") as f:
            entry = json.load(f)
        if entry.get("key") != json.loads(json.dumps(key)):
            return None
        return StreamSummary.from_json(entry["summary"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_cached(cache_dir: Optional[str], key: Dict[str, Any], summary: StreamSummary) -> None:
    """Writes the summary for `key` as JSON under `cache_dir` (atomically); no-op without one."""
    if not cache_dir:
        return
    with atomic_write(_cache_path(cache_dir, key)) as stream:
        json.dump({"key": key, "summary": summary.to_json()}, stream, indent=1)
