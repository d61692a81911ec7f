"""Where the app keeps its state: one data folder (TITLE_DPO_DATA, else ./app-data) holding
the vote database (`votes.db`), the training runs (`runs/run-DATE-TIME/`) and the app's own
key (`secret.key`, see `pipeline.access`). Read at call time, so a test can point it away."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def data_dir() -> Path:
    """The app's data folder: TITLE_DPO_DATA, else ./app-data."""
    return Path(os.environ.get("TITLE_DPO_DATA") or "app-data")


def tutorial_pool_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a fresh app starts with the tutorial's 1,140 pairs as its first pool: yes,
    unless TITLE_DPO_TUTORIAL_POOL is 0, no, off or false (a class that votes only on its
    own model's titles)."""
    value = (environ if environ is not None else os.environ).get("TITLE_DPO_TUTORIAL_POOL", "")
    return value.strip().lower() not in ("0", "no", "off", "false")


def runs_dir(folder: str | Path) -> Path:
    """Where the app's training runs go inside its data folder."""
    return Path(folder) / "runs"
