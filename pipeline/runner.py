"""One training run at a time (DPO, a reward model or online RL: the recipe's kind), in a
background thread, watched and stopped from anywhere.

The app keeps one `TrainingRunner`; every page (a reloaded one too) reads the same status, so
it reattaches to a running job. Stop asks the trainer to save a checkpoint and end after the
current step; a later start with `resume=True` carries on from the last checkpoint.
"""

from __future__ import annotations

import contextvars
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pipeline.errors import GpuCallError, UserError
from pipeline.methods import method_for, method_of, resumed_settings
from pipeline.metrics import read_metrics
from pipeline.models import pick_device
from pipeline.recipes import gpu_changes

# finished_runs, latest_run, run_label... are re-exported for tests that import them from here
# (they moved to pipeline.runs): drop in 0.2
from pipeline.runs import (  # noqa: F401
    RUN_START,
    STOP_FILE,
    finished_runs,
    latest_run,
    left_at,
    new_run_folder,
    run_kind,
    run_label,
    run_metrics,
    run_start,
    run_to_resume,
)
from pipeline.wording import counted

MAX_LOG_LINES = 200


@dataclass(frozen=True)
class JobStatus:
    state: str = "idle"  # idle, running, stopping, done, stopped, failed
    stage: str = ""  # "sft" while a recipe's SFT stage runs, then its method's stage
    kind: str = ""  # the run's method (its recipe's KIND); "" before the first run
    step: int = 0
    total: int = 0
    started_at: float | None = None
    loop_started: tuple[float, int] | None = None  # (time, step) when the training loop began
    out: str | None = None
    message: str = ""
    metrics: tuple[dict[str, Any], ...] = ()  # every logged metrics dict, in order
    log: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state in ("running", "stopping")

    @property
    def eta_seconds(self) -> float | None:
        """From the loop's own pace: model loading and a resumed run's earlier steps excluded."""
        if self.loop_started is None or not self.total:
            return None
        began, first_step = self.loop_started
        done = self.step - first_step
        if done <= 0:
            return None
        return (time.time() - began) / done * (self.total - self.step)

    def describe(self) -> str:
        """One line: state, stage and step, time left, the latest message."""
        if self.state == "idle":
            return self.message or "No training run yet."
        bar = f"step {self.step}/{self.total}" if self.total else "preparing"
        if self.stage == "sft" and self.running:
            bar = f"SFT stage {self.step}/{self.total}"
        left = self.eta_seconds if self.running else None
        eta = f" · about {left / 60:.1f} min left" if left else ""
        return f"**{self.state}** · {bar}{eta} · {self.message}"


class TrainingRunner:
    """Starts `pipeline.methods.train_run` in a thread; `status()` is safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_stage = ""  # the stage of the run's own loop, after any SFT stage
        self._stop_file: Path | None = None  # how Stop reaches a chunk in a ZeroGPU worker

    def status(self) -> JobStatus:
        with self._lock:
            return self._status

    def start(self, **train_kwargs: Any) -> None:
        """Begin a run with `train_run(**train_kwargs)`; refused while one is running.

        `on_done(result)` is called once a run has finished (not when stopped or failed).
        `chunked=True` runs it as ZeroGPU chunks (`pipeline.zerogpu.train_in_chunks`, with an
        optional `chunk_steps`): progress then moves a chunk at a time, read from the run's
        metrics file, since a chunk may run in another process.
        """
        with self._lock:
            if self._status.running:
                raise UserError("a training run is already going: stop it or wait for it")
            self._stop.clear()
            self._stop_file = None
            recipe = train_kwargs.get("recipe")
            method = method_for(recipe)
            self._run_stage = method.stage(recipe or method.recipe())
            self._status = JobStatus(
                state="running",
                kind=method.kind,
                stage=self._run_stage,
                started_at=time.time(),
                out=str(train_kwargs.get("out")),
                message="Loading the model and the data…",
            )
        # The run carries the context of the call that started it: on a ZeroGPU Space,
        # `spaces.GPU` finds whose quota a chunk is charged to in the Gradio request held in
        # a context variable, and a new thread would start with an empty context (every chunk
        # then the Space's anonymous quota, whoever started the run).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), kwargs=train_kwargs, daemon=True
        )
        self._thread.start()

    def start_run(self, runs: str | Path, write_data: Callable[[Path], Any], **train_kwargs):
        """A new run folder in `runs` (RUNS/run-DATE-TIME): `write_data(RUN/data)` fills its
        data, then training writes RUN/model. Refused before anything is written while a run
        is going."""
        if self.status().running:
            raise UserError("a training run is already going: stop it or wait for it")
        run = new_run_folder(runs)
        write_data(run / "data")
        self.start(data=run / "data", out=run / "model", **train_kwargs)
        return run

    def resume_latest(
        self,
        runs: str | Path,
        kind: str | None = None,
        form: Callable[[], dict[str, Any]] | None = None,
        **train_kwargs: Any,
    ) -> Path:
        """Carry on the newest stopped run in `runs` (`runs.run_to_resume`) from its last
        checkpoint, as it started: its method (refused unless it is `kind`), model, recipe,
        reward model and step limit (`resumed_settings`). `train_kwargs` add how it trains
        (chunked, callbacks); `form` gives the settings of a run that kept no record of its
        start."""
        run = run_to_resume(runs)
        if run is None:
            raise UserError(
                "there is no earlier run to resume: none was stopped (or cut off) after its "
                "first checkpoint, and a finished run has nothing to resume"
            )
        settings, line = resumed_settings(run / "model", kind, form)
        self.start(data=run / "data", out=run / "model", resume=True, **settings, **train_kwargs)
        self._log(line)
        return run

    def finished_model(self) -> str:
        """The model folder of the run this runner finished last."""
        job = self.status()
        if job.state != "done" or not job.out:
            raise UserError("no finished run yet: train a model first")
        if not method_of(job.kind).writes_titles:
            raise UserError(
                "the last run trained a reward model, which scores titles and writes none: use "
                "it for best of n on the Generate tab, as a judge, or for online RL"
            )
        return job.out

    def stop(self) -> None:
        with self._lock:
            if self._status.running:
                self._status = replace(self._status, state="stopping", message="Stopping…")
                self._stop.set()
                if self._stop_file is not None:  # a chunk training in another process
                    self._stop_file.touch()

    def wait(self, timeout: float | None = None) -> JobStatus:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _log(self, line: str) -> None:
        with self._lock:
            log = (*self._status.log, line)[-MAX_LOG_LINES:]
            self._status = replace(self._status, log=log)

    def _run(self, chunked: bool = False, chunk_steps: int | None = None, **train_kwargs: Any):
        from pipeline.methods import describe_held_out, score_run, train_run

        callbacks = [_Progress(self), *train_kwargs.pop("callbacks", [])]
        on_done = train_kwargs.pop("on_done", None)  # told of the finished run, if any
        on_gpu = gpu_changes(train_kwargs["recipe"]) if train_kwargs.get("recipe") else ""
        if on_gpu and (chunked or pick_device().name == "cuda"):
            self._log(f"on a GPU the recipe trains with {on_gpu}")
        try:
            if chunked:
                result = self._run_chunks(chunk_steps, **train_kwargs)
            else:
                result = train_run(**train_kwargs, callbacks=callbacks)
            scored = method_of(result.kind).held_out is not None
            if scored and not self._stop.is_set():  # Stop stays quick
                self._update(message="Ranking the held-out pairs…")
                result = self._score_on_gpu(result) if chunked else score_run(result)
        except UserError as exc:
            self._update(state="stopped" if self._stop.is_set() else "failed", message=str(exc))
            self._log(f"error: {exc}")
            return
        except Exception as exc:  # a bug or a broken model: keep the app alive, show it
            self._update(state="failed", message=f"training failed: {exc}")
            # raised in a ZeroGPU worker: where it was raised there, not where it came back
            worker = isinstance(exc, GpuCallError)
            self._log(exc.worker_traceback if worker else traceback.format_exc())
            return
        # Stop pressed as the last step ended: the run finished all the same, and is done
        # (its model offered to Generate; a finished run has nothing to resume)
        stopped = self._stop.is_set() and not result.finished
        if self._stop.is_set() and result.finished:
            self._log("Stop came as the run finished: it is done, its held-out pairs unranked")
        if on_done is not None and result.finished and not stopped:
            self._update(message="The run is done; finishing what follows it…")
            try:
                on_done(result)
            except UserError as exc:
                self._log(f"error: {exc}")
            except Exception as exc:  # the model is saved: the run stays done, the log says
                self._log(f"error after the run: {exc}\n{traceback.format_exc()}")
        ranking = describe_held_out(result)
        if ranking and not stopped:
            self._log(ranking)
        self._update(
            state="stopped" if stopped else "done",
            step=result.steps,
            message=ended_line(result, stopped, ranking),
        )

    def _score_on_gpu(self, result):
        """The held-out ranking in a GPU call of its own; a run ZeroGPU then refuses a GPU
        (the quota its chunks spent, say) is still done, unranked."""
        from pipeline.zerogpu import score_on_gpu, zerogpu_refusal

        try:
            return score_on_gpu(result)
        except Exception as exc:
            if (refusal := zerogpu_refusal(exc)) is None:
                raise
            self._log(f"the held-out pairs were not ranked: {refusal}")
            return result

    def _run_chunks(self, chunk_steps, **train_kwargs):
        from pipeline.zerogpu import chunk_pace, train_in_chunks, whose_quota

        began = time.time()
        self._log("training in GPU chunks, each resuming the last one's checkpoint")
        self._stop_file = Path(train_kwargs["out"]) / STOP_FILE
        self._stop_file.parent.mkdir(parents=True, exist_ok=True)
        self._stop_file.unlink(missing_ok=True)  # an earlier Stop of this run, now resumed
        if self._stop.is_set():  # Stop pressed while the run was starting
            self._stop_file.touch()
        self._log(whose_quota())
        pace = chunk_pace(
            train_kwargs["data"], train_kwargs.get("model_name"), train_kwargs.get("recipe")
        )
        self._log(f"GPU time asked for each chunk: {pace.source}")

        def on_chunk(result) -> None:
            in_sft = result.stage == "sft"
            self._update(
                stage=result.stage or self._run_stage,
                step=result.steps,
                total=result.max_steps,
                loop_started=None if in_sft else (began, 0),
                metrics=tuple(read_metrics(result.metrics_file)),
                message="Fine-tuning on the chosen titles first…" if in_sft else "Training…",
            )
            where = "SFT stage" if in_sft else "step"
            self._log(f"chunk done: {where} {result.steps}/{result.max_steps}")

        return train_in_chunks(
            train_kwargs.pop("data"),
            train_kwargs.pop("out"),
            train_kwargs.pop("model_name", None),
            train_kwargs.pop("recipe", None),
            chunk_steps=chunk_steps,
            pace=pace,
            should_stop=self._stop.is_set,
            on_chunk=on_chunk,
            on_retry=self._log,
            **train_kwargs,
        )


def ended_line(result, stopped: bool, ranking: str | None = None) -> str:
    """How a run ended, in one line: done, or stopped and what it left to use and resume."""
    steps = counted(result.steps, "step")
    if not stopped:
        return f"Done: {steps}{_took(result)}; model in {result.out}" + (
            f"; {ranking}" if ranking else ""
        )
    if result.stage == "sft":
        return (
            f"Stopped in the SFT stage at step {result.steps} of {result.max_steps}; Resume "
            "carries on from there"
        )
    if result.model_saved:  # Stop saves the model where it stopped, in a chunk too
        return (
            f"Stopped at step {result.steps} of {result.max_steps}: the model as it stands is in "
            f"{result.out} (Evaluate and the Hub list it), and Resume carries on from there"
        )
    return f"Stopped after {steps}; the last checkpoint is in {result.out}"


def _took(result) -> str:
    """How long the call that saved a run trained, as its result can say: a resumed run's
    (a ZeroGPU chunk resumes the last one's checkpoint) is only its last steps' time."""
    this_call, seconds = result.steps_this_call, f"{result.seconds:.0f} s"
    if this_call >= result.steps:
        return f" in {seconds}"
    if this_call == 0:
        return " (resumed at its last checkpoint, at the end)"
    return f" (the last {this_call} in {seconds}, resumed from a checkpoint)"


def shown_status(job: JobStatus, runs: str | Path) -> JobStatus:
    """What the Train tab shows: the job, or, while this process has run nothing (an app
    restarted, a Space woken from sleep), the run left stopped in `runs` that *Resume the last
    run* carries on, with its step, charts and titles as they were: the page would otherwise
    say there has been no run."""
    if job.state != "idle":
        return job
    run = run_to_resume(runs)
    if run is None:
        return job if latest_run(runs) is None else replace(job, message="No run is going.")
    model = run / "model"
    try:
        start = run_start(model)
    except UserError:  # Resume says so; a line read every second does not
        start = None
    left = left_at(model)
    what = ""
    if start is not None:
        what = f" ({method_of(start.kind).label}, the recipe {start.recipe.get('name')})"
    return JobStatus(
        state="stopped",
        stage="sft" if left.stage == "sft" else "",
        kind=start.kind if start else "",
        step=left.step,
        total=left.total,
        out=str(model),
        message=f"{run.name}{what} was left stopped {left.where()}: *Resume the last run* "
        "carries it on.",
        metrics=tuple(run_metrics(model)),
    )


class _Progress(TrainerCallback):
    def __init__(self, runner: TrainingRunner) -> None:
        self.runner = runner

    @staticmethod
    def _is_sft(args) -> bool:
        return type(args).__name__ == "SFTConfig"

    def on_train_begin(self, args, state, control, **kwargs):
        if self._is_sft(args):
            self.runner._update(
                stage="sft",
                total=state.max_steps,
                step=state.global_step,
                message="Fine-tuning on the chosen titles first…",
            )
            self.runner._log(f"SFT stage: {counted(state.max_steps, 'step')}")
            return
        self.runner._update(
            stage=self.runner._run_stage,
            total=state.max_steps,
            step=state.global_step,
            loop_started=(time.time(), state.global_step),
            message="Training…",
        )
        self.runner._log(f"training: {counted(state.max_steps, 'step')}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._is_sft(args):
            self.runner._update(message="SFT stage done; the preference training follows…")

    def on_step_end(self, args, state, control, **kwargs):
        self.runner._update(step=state.global_step)
        if self.runner._stop.is_set():
            control.should_save = True  # a checkpoint to resume from
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if self._is_sft(args):  # the charts are the run's; the SFT stage only logs a line
            shown = ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, float))
            self.runner._log(f"SFT step {state.global_step}: {shown}")
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.runner._lock:
            status = self.runner._status
            self.runner._status = replace(status, metrics=(*status.metrics, record))
        shown = ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, int | float))
        self.runner._log(f"step {state.global_step}: {shown}")
