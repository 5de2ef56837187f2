"""A pytest plugin: the largest difference each test's oracle comparisons saw, for closing notes.

Wraps `numpy.testing.assert_allclose` (looked up at call time by the tests) and records, per
test, the largest `|actual - desired|` and largest relative difference of every comparison it
made (the assertion still runs as written). At the end writes one tab-separated line per test
(largest absolute, largest relative, comparisons, test id) to `$ORACLE_DIFFERENCES` (default
`oracle_differences.tsv`), largest first.

    PYTHONPATH=scripts pytest -p record_oracle_differences tests/trainer/test_multi_label.py
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

import numpy as np
import pytest

_original = np.testing.assert_allclose
_current = {"test": ""}
RESULTS: Dict[str, Tuple[float, float, int]] = {}


def _recording(actual, desired, *args, **kwargs):
    try:
        a, d = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
        diff = np.abs(a - d)
        if diff.size:
            worst = float(np.nanmax(diff))
            relative = float(np.nanmax(diff / np.maximum(np.abs(d), 1e-12))) if worst > 0 else 0.0
            old = RESULTS.get(_current["test"], (0.0, 0.0, 0))
            RESULTS[_current["test"]] = (max(old[0], worst), max(old[1], relative), old[2] + 1)
    except (TypeError, ValueError):  # shapes that do not broadcast: the assertion reports them
        pass
    return _original(actual, desired, *args, **kwargs)


np.testing.assert_allclose = _recording


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _current["test"] = item.nodeid
    yield


def pytest_sessionfinish(session):
    path = os.environ.get("ORACLE_DIFFERENCES", "oracle_differences.tsv")
    with open(path, "w") as out:
        for test, (worst, relative, count) in sorted(RESULTS.items(), key=lambda kv: -kv[1][0]):
            out.write(f"{worst:.3g}\t{relative:.3g}\t{count}\t{test}\n")
