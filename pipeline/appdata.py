"""Where the app keeps its state: one data folder (TITLE_DPO_DATA, else ./app-data) holding
the vote database (`votes.db`), the training runs (`runs/run-DATE-TIME/`) and the app's own
key (`secret.key`, see `pipeline.access`). Read at call time, so a test can point it away."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The app's data folder: TITLE_DPO_DATA, else ./app-data."""
    return Path(os.environ.get("TITLE_DPO_DATA") or "app-data")


def runs_dir(folder: str | Path) -> Path:
    """Where the app's training runs go inside its data folder."""
    return Path(folder) / "runs"
