"""The run folder: where a training run lives, what it is called, and what it leaves behind.

A run of the app is RUNS/run-DATE-TIME/ with its dataset in data/ and its model in model/; any
run's model folder holds its summary (train_summary.json), what it logged (metrics.jsonl) and
its checkpoints (checkpoint-N/). Plain files, no model libraries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.metrics import METRICS_FILE, SUMMARY_FILE, read_metrics
from pipeline.models import is_saved_model
from pipeline.pairs import write_text_atomic
from pipeline.prompts import idea_in_prompt
from pipeline.recipes import DPORecipe
from pipeline.wording import file_size

log = logging.getLogger(__name__)

RUN_PREFIX = "run-"
# In a model folder: Stop pressed while a chunk trains in another process (a ZeroGPU worker),
# which ends the chunk at its next step, with a checkpoint.
STOP_FILE = "stop-requested"
# In a model folder: a recipe's SFT stage once it has ended (a model folder of its own, which
# DPO starts from and is measured against), and the stage's checkpoints while it has not.
SFT_STAGE = "sft"
SFT_CHECKPOINTS = "sft-checkpoints"
# In an SFT stage's folder: what the stage did (its steps, its examples, when it was saved),
# as a run's summary says it of the run: the stage's card reads it, and its version is its hash.
STAGE_SUMMARY = "stage_summary.json"
# In a model folder: how the run started (its method, model, recipe, reward model and step
# limit), so that a resumed run carries on as it began, whatever a form says by then.
RUN_START = "run_start.json"


# --- naming ----------------------------------------------------------------------------------


def new_run_folder(runs: str | Path, when: float | None = None) -> Path:
    """A new run's folder in `runs`: RUNS/run-DATE-TIME, of now or of `when` (not created
    here); RUN-2, RUN-3... when a run of that second is there already (one that failed at
    once, then a new start)."""
    first = Path(runs) / time.strftime(f"{RUN_PREFIX}%Y%m%d-%H%M%S", time.localtime(when))
    folder, n = first, 1
    while folder.exists():
        n += 1
        folder = first.with_name(f"{first.name}-{n}")
    return folder


def latest_run(runs: str | Path) -> Path | None:
    """The newest run folder (`RUNS/run-*`), finished or not."""
    return max(Path(runs).glob(f"{RUN_PREFIX}*"), default=None)


def model_place(name: str | Path) -> str:
    """What a model name points at: a folder by where it is (however it was written), else
    the name itself (a Hub id)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name)


def run_name(model: str | Path) -> str:
    """`runs/run-20261203-120105/model` → `run-20261203-120105`; a run's SFT stage (`OUT/sft`)
    → its run's name; any other folder: its name."""
    path = Path(model).expanduser().resolve()
    if path.name == SFT_STAGE:
        path = path.parent
    return path.parent.name if path.name == "model" else path.name


# --- what a finished run left ----------------------------------------------------------------


def run_summary(model: str | Path) -> dict[str, Any] | None:
    """A finished run's summary (its model folder's train_summary.json), or None; refused, by
    its file's name, when that file cannot be read as one."""
    path = Path(model).expanduser() / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable run summary ({error})") from None
    if not isinstance(summary, dict):
        raise UserError(f"{path}: not a readable run summary (not a JSON object)")
    return summary


def model_version(model: str | Path) -> str | None:
    """Which training of a run's model folder (or of its SFT stage) this is: a hash of its
    summary, which every save writes anew (a stopped run resumed and finished, a folder
    trained again). None for a folder without one (a stage saved before stages had one), or
    a Hub id."""
    folder = Path(model).expanduser()
    for path in (folder / SUMMARY_FILE, folder / STAGE_SUMMARY):
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return None


def stage_summary(stage: str | Path) -> dict[str, Any]:
    """What an SFT stage's folder says of its training ({} for a stage saved before stages
    said it, or a file that cannot be read: a card then says less)."""
    try:
        summary = json.loads((Path(stage) / STAGE_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def run_of_stage(stage: str | Path) -> Path | None:
    """The model folder of the finished run whose SFT stage `stage` is (RUN/model for
    RUN/model/sft), or None: `stage` is not a saved SFT stage of a finished run."""
    stage = Path(stage).expanduser()
    run = stage.parent
    if stage.name != SFT_STAGE or not is_saved_model(stage) or run_summary(run) is None:
        return None
    return run


def write_summary(result) -> Path:
    """`result` (a `stages.TrainResult`) as its run's summary file, written whole or not at all
    (a full disk or a killed GPU call leaves the summary that was there)."""
    path = Path(result.out) / SUMMARY_FILE
    write_text_atomic(path, json.dumps(asdict(result), indent=2) + "\n")
    return path


def run_kind(model: str | Path) -> str:
    """What a finished run trained: its summary's kind (DPO for runs from before kinds)."""
    return (run_summary(model) or {}).get("kind", DPORecipe.KIND)


def finished_runs(runs: str | Path, kind: str | None = None) -> list[Path]:
    """The model folders of the app's finished runs (`RUNS/run-*/model`), newest first; with
    `kind` (a recipe's KIND), only those of that kind. A run whose summary cannot be read is
    left out, and logged: one broken file does not take every list of runs down with it."""
    found = (p / "model" for p in Path(runs).glob(f"{RUN_PREFIX}*"))
    done = sorted((m for m in found if (m / SUMMARY_FILE).is_file()), reverse=True)
    summaries = ((m, _readable_summary(m)) for m in done)
    return [
        m
        for m, summary in summaries
        if summary is not None and (kind is None or summary.get("kind", DPORecipe.KIND) == kind)
    ]


def _readable_summary(model: Path) -> dict[str, Any] | None:
    try:
        return run_summary(model)
    except UserError as error:
        log.warning("Left out of the finished runs: %s", error)
        return None


def run_label(model: str | Path) -> str:
    """A finished run as the compare view names it: its folder and kind."""
    model = Path(model)
    folder = model.parent.name if model.name == "model" else model.name
    return f"{folder} ({run_kind(model)})"


def run_metrics(model: str | Path) -> list[dict[str, Any]]:
    """What a run logged (finished or not): its OUT/metrics.jsonl."""
    return read_metrics(Path(model) / METRICS_FILE)


def run_model_folder(run: str | Path) -> str:
    """A finished run's model folder, from it or from the run folder above it."""
    path = Path(run).expanduser()
    for folder in (path, path / "model"):
        if run_summary(folder):
            return str(folder)
    raise UserError(f"{run}: not a finished training run (no {SUMMARY_FILE} in it or its model/)")


def run_ideas(model: str | Path, split: str) -> list[str]:
    """The ideas of a finished run's dataset split ('train' or 'valid'), as written."""
    summary = run_summary(model)
    data = Path(summary["data"]) if summary and summary.get("data") else None
    if data is None or not data.is_dir():
        raise UserError(f"{model}: not a finished run whose dataset folder is still here")
    from pipeline.datasets import dataset_summary, load_preference_dataset

    ideas = dataset_summary(data).get("ideas", {})
    if split in ideas:
        return list(ideas[split])

    dataset = load_preference_dataset(data)
    if split not in dataset:
        return []
    found = (idea_in_prompt(row["prompt"]) for row in dataset[split])
    return sorted({idea for idea in found if idea})


# --- how a run started, for resuming it ----------------------------------------------------


@dataclass(frozen=True)
class RunStart:
    """What a run was started with: what resuming it must take again."""

    kind: str  # its method's name (a recipe's KIND)
    model: str  # the model it started from: a folder (by where it is) or a Hub id
    recipe: dict[str, Any]  # its recipe's fields
    reward_model: str | None = None  # the reward model an RL run is trained against
    max_steps: int | None = None  # its step limit

    def describe(self) -> str:
        """The settings in a few words, as a resumed run's log says them."""
        against = f", against the reward model {self.reward_model}" if self.reward_model else ""
        limit = f", at most {self.max_steps} steps" if self.max_steps else ""
        return f"the model {self.model}, the recipe {self.recipe.get('name')}{against}{limit}"


def record_run_start(out: str | Path, start: RunStart) -> None:
    """Keep how the run in `out` started (OUT/run_start.json), whole or not at all."""
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / RUN_START, json.dumps(asdict(start), indent=2) + "\n")


def run_start(out: str | Path) -> RunStart | None:
    """How the run in `out` started; None for a run from before runs kept it. Refused, by its
    file's name, when that file cannot be read as one."""
    path = Path(out) / RUN_START
    if not path.is_file():
        return None
    try:
        return RunStart(**json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise UserError(f"{path}: not a readable record of how the run started ({error})") from None


def run_to_resume(runs: str | Path) -> Path | None:
    """The newest run in `runs` that Resume carries on: one that has not finished and got as
    far as a checkpoint (of its loop or of its SFT stage) or its SFT stage's end. A run that
    failed before it trained (a mistyped model, say) holds nothing to resume, and is passed
    over rather than hiding the stopped run before it."""
    for run in sorted(Path(runs).glob(f"{RUN_PREFIX}*"), reverse=True):
        model = run / "model"
        # the summary last: read only for a run with a checkpoint (the Train tab asks each
        # second while idle, and a finished run keeps none)
        if left_at(model).stage and not (_readable_summary(model) or {}).get("finished"):
            return run
    return None


@dataclass(frozen=True)
class LeftAt:
    """How far a run got by its checkpoints, for one that kept no model there (stopped in its
    SFT stage, cut off, a ZeroGPU quota spent) or that Resume carries on."""

    stage: str  # "loop": a checkpoint of its own loop; "sft": of its SFT stage; "after sft":
    # the stage ended, no loop checkpoint yet; "": nothing to carry on from
    checkpoint: Path | None = None

    @functools.cached_property
    def _state(self) -> dict[str, Any]:
        # read only when a step is asked for: Resume's choice of a run, asked each second by
        # the idle Train tab, needs the stage alone
        if self.checkpoint is None:
            return {}
        try:
            return json.loads((self.checkpoint / CHECKPOINT_DONE).read_text())
        except (OSError, ValueError):
            return {}

    @property
    def step(self) -> int:
        """The checkpoint's optimizer step (0 without one)."""
        return self._state.get("global_step", 0)

    @property
    def total(self) -> int:
        """Of how many steps (the loop's, or the SFT stage's)."""
        return self._state.get("max_steps", 0)

    def where(self) -> str:
        """As in "left stopped {where}"."""
        if self.stage == "loop":
            return f"at step {self.step}"
        return "in its SFT stage" if self.stage == "sft" else "after its SFT stage"

    def resume_point(self) -> str | None:
        """Where a resumed run carries on from, in words ("step 4", "the end of its SFT
        stage"); None: nowhere, it starts again. From the checkpoint's name, unread."""
        if self.stage == "loop":
            return f"step {checkpoint_step(self.checkpoint)}"
        if self.stage == "sft":
            return f"step {checkpoint_step(self.checkpoint)} of its SFT stage"
        return "the end of its SFT stage" if self.stage == "after sft" else None


def left_at(model: str | Path) -> LeftAt:
    """How far the run in `model` got: its newest complete checkpoint, of its loop, else of
    its SFT stage, else the stage's end."""
    model = Path(model)
    if in_loop := latest_checkpoint(model):
        return LeftAt("loop", in_loop)
    if in_stage := latest_checkpoint(model / SFT_CHECKPOINTS):
        return LeftAt("sft", in_stage)
    return LeftAt("after sft" if is_saved_model(model / SFT_STAGE) else "")


def clear_for_new_run(model: str | Path) -> None:
    """Make a run's model folder ready for a new run in it (not a resumed one). An earlier run
    there that can still be carried on (its checkpoints, or its SFT stage with no summary yet)
    is refused, in words: it may be hours of training. A finished or stopped one's SFT stage
    and summary go: a new run would otherwise start from that stage whatever its own recipe,
    model or data, and be listed as the old run until it saved."""
    model = Path(model)
    left, summary = left_at(model), _readable_summary(model)
    if left.stage in ("loop", "sft") or (left.stage == "after sft" and summary is None):
        raise UserError(
            f"{model} holds an earlier run, left {left.where()}, that can still be carried on: "
            "resume it (--resume; Resume on the Train tab), or delete that folder (or choose "
            "another) to start a new run"
        )
    if left.stage == "after sft" or summary is not None:
        shutil.rmtree(model / SFT_STAGE, ignore_errors=True)
        shutil.rmtree(model / SFT_CHECKPOINTS, ignore_errors=True)  # none complete: see left_at
        (model / SUMMARY_FILE).unlink(missing_ok=True)
        log.info("A new run in %s: the earlier run's SFT stage and summary there are gone", model)


def resume_line(model: str | Path) -> str:
    """What a run cut off in `model` keeps for Resume, as a sentence to end a message with."""
    if (where := left_at(model).resume_point()) is None:
        return "The run had saved no checkpoint yet: start it again."
    return f"The run's last checkpoint is at {where}: Resume carries on from there."


def what_resuming_needs(runs: str | Path) -> dict[str, str | None]:
    """{what needs it: a model path} for the run Resume carries on: the model it started from
    and its reward model, which resuming it loads again."""
    run = run_to_resume(runs)
    start = run_start(run / "model") if run else None
    if run is None or start is None:
        return {}
    return {
        f"the stopped run {run.name} resumes from it": start.model,
        f"the stopped run {run.name} is trained against it": start.reward_model,
    }


def folder_size(folder: Path) -> int:
    """The bytes of the files in `folder` and below (a link counts as nothing: what it points
    at is not freed with the folder)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


# --- removing a run --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRemoval:
    """A run of the app that may go: its folder, what it holds on disk, and whether it is the
    stopped run that Resume carries on."""

    folder: Path
    size: int  # bytes
    has_model: bool = True  # finished, or stopped with its model saved: it can be pushed
    resumable: bool = False
    checkpoints: int = 0  # bytes of the loop's checkpoints, which only a resume reads

    @property
    def may_drop_checkpoints(self) -> bool:
        """Whether its checkpoints may go alone: it has them, and a model that stays (without
        one, its checkpoints are all it holds)."""
        return self.has_model and self.checkpoints > 0

    def describe(self, done: bool = False) -> str:
        size = file_size(self.size)
        if done:
            return f"Deleted **{self.folder.name}**: {size} freed."
        resume = (
            " *Resume the last run* carries it on: deleted, it cannot." if self.resumable else ""
        )
        push = " Push its model first to keep it." if self.has_model else ""
        keep = (
            f" Or keep the run and its model, and drop only its checkpoints "
            f"({file_size(self.checkpoints)}), which only a resume reads."
            if self.may_drop_checkpoints
            else ""
        )
        return (
            f"Delete **{self.folder.name}** ({size}: everything the run wrote, its model, "
            f"checkpoints and dataset included) for good?{resume}{push}{keep}"
        )


def run_removal(
    runs: str | Path, model: str | Path, in_use: Mapping[str, str | None] | None = None
) -> RunRemoval:
    """The run of `runs` whose model folder (or run folder) is `model`, finished or not (a
    run cut off or stopped without a model holds its checkpoints: gigabytes a Space's disk
    would otherwise keep for good), checked to be removable: refused, nothing touched, for any
    other folder, whatever a page sends, and for a run that one of `in_use` ({what uses it: a
    model path}) points into."""
    runs = Path(runs).resolve()
    given = Path(model).expanduser()
    run = given.parent if given.name == "model" else given
    if (
        run.is_symlink()
        or not run.is_dir()
        or run.resolve().parent != runs
        or not run.name.startswith(RUN_PREFIX)
    ):
        raise UserError(f"{model}: not one of this app's runs; nothing was deleted")
    run = run.resolve()
    for what, path in (in_use or {}).items():
        used = Path(path).expanduser().resolve() if path else None
        if used is not None and (used == run or run in used.parents):
            raise UserError(f"{run.name} is in use ({what}); nothing was deleted")
    resumable = (to_resume := run_to_resume(runs)) is not None and to_resume.resolve() == run
    has_model = (run / "model" / SUMMARY_FILE).is_file()
    checkpoints = sum(folder_size(c) for c in (run / "model").glob("checkpoint-*"))
    return RunRemoval(run, folder_size(run), has_model, resumable, checkpoints)


def delete_run(
    runs: str | Path, model: str | Path, in_use: Mapping[str, str | None] | None = None
) -> RunRemoval:
    """Remove the run `model` of `runs` for good, once `run_removal` allows it."""
    removal = run_removal(runs, model, in_use)
    shutil.rmtree(removal.folder)
    log.info("Deleted the run %s (%d bytes)", removal.folder, removal.size)
    return removal


def drop_run_checkpoints(runs: str | Path, model: str | Path, training: str | None) -> str:
    """Keep the run `model` of `runs` and its model, and remove its checkpoints, which only a
    resume reads (a stopped full fine-tune's each hold its model and the optimizer's state:
    1.6 GB for SmolLM2-135M). Refused, nothing touched, as `run_removal` refuses, for the run
    `training` (the model folder of the run going now), and for a run with no model or no
    checkpoints. Returns what was done, in words."""
    removal = run_removal(runs, model, {"it is training now": training})
    name = removal.folder.name
    if not removal.has_model:
        raise UserError(
            f"{name} has no model: its checkpoints are all it holds (delete the run instead); "
            "nothing was dropped"
        )
    if not removal.checkpoints:
        raise UserError(f"{name} keeps no checkpoints; nothing was dropped")
    freed = drop_checkpoints(removal.folder / "model")
    log.info("Dropped the checkpoints of the run %s (%d bytes)", removal.folder, freed)
    resume = " *Resume the last run* no longer carries it on." if removal.resumable else ""
    freed_line = f"Dropped the checkpoints of **{name}**: {file_size(freed)} freed"
    return f"{freed_line}; its model stays.{resume}"


# --- checkpoints -----------------------------------------------------------------------------


# The Trainer writes a checkpoint's files one by one and this one last: a folder without it was
# cut off while saving (a ZeroGPU worker aborted, the app's process killed) and holds no state.
CHECKPOINT_DONE = "trainer_state.json"


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` folder the Trainer wrote in `out`, if any."""
    done = (c for c in Path(out).glob("checkpoint-*") if (c / CHECKPOINT_DONE).is_file())
    return max(done, key=checkpoint_step, default=None)


def discard_unfinished_checkpoints(out: str | Path) -> list[Path]:
    """Remove the checkpoint folders in `out` that were cut off while saving (the Trainer would
    otherwise write into one again, or keep it over a complete one); return them."""
    import shutil

    cut = [c for c in Path(out).glob("checkpoint-*") if not (c / CHECKPOINT_DONE).is_file()]
    for checkpoint in cut:
        shutil.rmtree(checkpoint)
    return cut


def drop_checkpoints(out: str | Path) -> int:
    """Remove the checkpoints in `out`, which only a resume reads: a finished run's, which has
    nothing to resume, or a stopped one's its owner will not resume (`drop_run_checkpoints`).
    Returns the bytes freed."""
    freed = 0
    for checkpoint in Path(out).glob("checkpoint-*"):
        freed += folder_size(checkpoint)
        shutil.rmtree(checkpoint)
    return freed


def checkpoint_step(path: str | Path) -> int:
    """N of a `checkpoint-N` folder: the optimizer step it was saved at."""
    return int(Path(path).name.rsplit("-", 1)[-1])
