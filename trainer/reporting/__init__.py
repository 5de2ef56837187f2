"""`report.html`: a self-contained page of figures of a trained classifier (matplotlib, an optional extra).

`curves` holds the numbers (NumPy), `figures` draws them (PNG bytes), `history` reads a run's per-class
TensorBoard scalars back, `page` assembles the page. Import `page` or `figures` only when
`plotting_available()`: without matplotlib the commands skip the report and say how to install it.
"""

from __future__ import annotations

import importlib

INSTALL_HINT = "pip install matplotlib (or: pip install 'imbalanced-trainer[report]')"


def plotting_available() -> bool:
    """Whether matplotlib can be imported (the report's figures need it)."""
    try:
        importlib.import_module("matplotlib.figure")
        importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError:
        return False
    return True
