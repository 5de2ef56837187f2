"""The flags of `python -m trainer.main`, one module per topic; `GROUPS` is the order `--help` shows.

Importing this package defines every flag; `trainer.cli.config` reads them into a `RunConfig`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Tuple

from trainer.cli.flag_groups import data, distribution, loss, model, outputs, recall, training

GROUPS: Tuple[ModuleType, ...] = (data, model, loss, recall, training, distribution, outputs)
