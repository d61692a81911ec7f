"""Every training stage (SFT, DPO, reward model, RL) reports to trackio through transformers'
`report_to="trackio"`, as well as to its own OUT/metrics.jsonl (which the app's charts read).

Where the runs go: trackio keeps a local SQLite database per project in TRACKIO_DIR, which it
reads once, when it is first imported. `use_tracking_dir` points it inside the app's data folder
(DATA/trackio) before that happens; `trackio show --project title-dpo` (with the same
TRACKIO_DIR) opens trackio's own dashboard. On a Space, TRACKIO_SPACE_ID names the owner's
trackio Space, which then receives the runs as well. TITLE_DPO_TRACKING=0 turns reporting off,
and without the trackio package installed runs are not reported (a warning says so).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from pipeline.runs import run_name as run_folder_name  # tracking's run_name is the trackio run's

log = logging.getLogger(__name__)

PROJECT = "title-dpo"
TRACKING_DIR = "trackio"  # inside the app's data folder


def use_tracking_dir(data: str | Path) -> Path:
    """Point trackio at DATA/trackio unless TRACKIO_DIR already names a folder. Only the first
    call before trackio is imported can take effect: the folder it will use is returned."""
    if not os.environ.get("TRACKIO_DIR") and "trackio" not in sys.modules:
        os.environ["TRACKIO_DIR"] = str(Path(data).resolve() / TRACKING_DIR)
    return tracking_dir()


def tracking_dir() -> Path:
    """The folder trackio writes to (its own default when TRACKIO_DIR is unset)."""
    if "trackio" in sys.modules:
        from trackio.utils import TRACKIO_DIR

        return Path(TRACKIO_DIR)
    if os.environ.get("TRACKIO_DIR"):
        return Path(os.environ["TRACKIO_DIR"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "trackio"


def tracking_on() -> bool:
    if os.environ.get("TITLE_DPO_TRACKING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if importlib.util.find_spec("trackio") is None:
        log.warning("trackio is not installed: this run is not reported to trackio")
        return False
    return True


RUN_FILE = "trackio_run.json"  # in a stage's folder: the name its run has in trackio


def base_run_name(out: str | Path, stage: str) -> str:
    """A run's name in trackio before any numbering: its folder (the app's RUN of RUN/model)
    and the stage."""
    return f"{run_folder_name(out)} {stage}"


def run_name(out: str | Path, stage: str) -> str:
    """The name the run of `stage` in `out` has in trackio: the one it was given when it
    started (kept in OUT/trackio_run.json, so a resumed run or a later chunk carries on the
    same run), else its base name."""
    given = _given_names(Path(out))
    return given.get(stage) or base_run_name(out, stage)


def forget_run_name(out: str | Path) -> None:
    """A fresh start in `out`: its run gets a new name rather than appending to the last one."""
    (Path(out) / RUN_FILE).unlink(missing_ok=True)


def claim_run_name(out: str | Path, stage: str) -> str:
    """The run name for this stage: the one it was given (a resumed run), or its base name,
    numbered "#2", "#3"... past the runs trackio already holds, so two folders of the same name
    (or a fresh start in a used folder) never merge their curves into one run."""
    out = Path(out)
    given = _given_names(out)
    if stage in given:
        return given[stage]
    base, taken = base_run_name(out, stage), set(_runs_in_trackio())
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} #{n}"
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps({**given, stage: name}))
    return name


def _given_names(out: Path) -> dict[str, str]:
    try:
        names = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return names if isinstance(names, dict) else {}


def _runs_in_trackio(project: str = PROJECT) -> list[str]:
    from trackio.sqlite_storage import SQLiteStorage

    try:
        return SQLiteStorage.get_runs(project)
    except Exception:  # no database yet, or one trackio cannot read: nothing to avoid
        return []


def tracking_args(out: str | Path, stage: str) -> dict[str, Any]:
    """The TrainingArguments fields that report a stage to trackio (or to nothing)."""
    if not tracking_on():
        return {"report_to": "none"}
    return {
        "report_to": "trackio",
        "project": PROJECT,
        "run_name": claim_run_name(out, stage),
        "trackio_space_id": os.environ.get("TRACKIO_SPACE_ID") or None,
        # transformers would otherwise copy the runs to a new static Space after training
        "trackio_static_space_id": False,
    }


def logged_metrics(run: str, project: str = PROJECT) -> list[dict[str, Any]]:
    """What trackio stored for `run` (its local database), oldest first: for tests and checks."""
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_logs(project, run)


GLOBAL_STEP = "train/global_step"  # the trainer's step, in every record transformers logs


def forget_logged_after(out: str | Path, step: int) -> int:
    """A run cut off (a ZeroGPU chunk aborted, the process killed) logged steps past its last
    checkpoint, and resumed, trains them again: what the stages of `out` (their names in
    OUT/trackio_run.json) logged to trackio past `step` goes from the local database, so their
    curves hold each step once. Returns how many records went. A trackio Space keeps what it
    was sent. trackio has no public call for this: the SQL is checked against the trackio
    release the project pins, and where it fails the records stay, with a warning."""
    names = _given_names(Path(out))
    if not names or not tracking_on():
        return 0
    from trackio.sqlite_storage import SQLiteStorage

    db = SQLiteStorage.get_project_db_path(PROJECT)
    if not db.is_file():
        return 0
    past: list[tuple[int]] = []
    try:
        with closing(sqlite3.connect(db, timeout=30)) as conn, conn:
            for name in names.values():
                rows = conn.execute("SELECT id, metrics FROM metrics WHERE run_name = ?", (name,))
                past += [
                    (i,) for i, record in rows if json.loads(record).get(GLOBAL_STEP, 0) > step
                ]
            conn.executemany("DELETE FROM metrics WHERE id = ?", past)
    except (sqlite3.Error, ValueError, TypeError, AttributeError) as e:
        log.warning("trackio keeps what was logged past step %s, which trains again: %s", step, e)
        return 0
    return len(past)
