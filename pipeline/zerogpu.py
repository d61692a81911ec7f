"""The GPU entry points, and training as a series of resumable chunks, for ZeroGPU Spaces.

On a ZeroGPU Space a function decorated with `spaces.GPU(duration=...)` gets a GPU for at most
`duration` seconds per call, and a user's daily quota is minutes. So:

- generation asks for a duration computed from the work (titles x tokens), not a flat minute;
- a training run is a series of GPU calls, each one chunk of steps that ends with a checkpoint
  (adapter or model, optimizer, scheduler, RNG and trainer state) which the next chunk resumes.
  The chunks add up to the same run, step for step, as one straight call (tested on the CPU).

Outside a ZeroGPU Space `spaces.GPU` returns the function unchanged, so the same code runs on a
laptop and in the tests. On ZeroGPU the call runs in a forked worker process: the entry points
take plain, picklable arguments (a model *name*, not a loaded model) and return picklable
values, and `gpu_call` carries a `UserError` back as a value and any other error's words
beside it, since ZeroGPU passes back nothing of an exception but a `gr.Error`'s message (of any
other, its class name). tests/test_space.py runs the app under an emulated ZeroGPU
(tests/zerogpu_site) to show all of it.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import spaces

from pipeline.errors import GpuCallError, UserError
from pipeline.generation import GenerationSettings, Title, generate_calls, generate_for_idea
from pipeline.gpu_rates import (
    MARGIN,
    STARTUP_SECONDS,
    GpuRates,
    Pace,
    held_out_seconds,
    model_params,
    plan_pace,
)
from pipeline.judges import PairwiseJudge, make_judge
from pipeline.methods import check_reward_model, score_run, train_run
from pipeline.models import load_model
from pipeline.recipes import Recipe
from pipeline.reward import ScoredTitle, best_of_n, load_reward_model
from pipeline.rounds import generate_with, short_name
from pipeline.runs import STOP_FILE, left_at, resume_line
from pipeline.stages import TrainResult
from pipeline.wording import counted

DEFAULT_SETTINGS = GenerationSettings()
ON_ZEROGPU = bool(os.environ.get("SPACES_ZERO_GPU"))

# What one GPU call may take: staff advice is "a couple of minutes"; the quota is per day.
MAX_CALL_SECONDS = 120
# Estimates, not measured on a Space (none can be reached from here): deliberately pessimistic
# for a 0.5B model. Training, the held-out ranking, generation and judging, where bench/gpu.py
# measured them, are planned from measured rates (`pipeline.gpu_rates`) instead.
SECONDS_PER_NEW_TOKEN = 0.03  # one decoding step of one generate call (up to max_batch titles)
JUDGE_SECONDS_PER_BATCH = 0.5  # one forward of 16 judge prompts (~150 tokens each)
# Ranking the held-out pairs loads up to three models and scores ~100 pairs with each.
SCORING_SECONDS = 60
HELD_OUT_MODELS = 3  # a DPO run's start, its reference where that differs, the tuned model
# What spaces raises when a call's worker ends without a result: the call ran past its
# duration, or ZeroGPU took the GPU back (spaces/zero/wrappers.py, "ZeroGPU worker error").
ABORTED = "GPU task aborted"


@dataclass(frozen=True)
class _Refused:
    """A `UserError` raised inside a GPU call, on its way back as a value."""

    message: str


def _worker_error(exc: BaseException) -> bool:
    """Whether `exc` is spaces' stand-in for an exception raised in the worker (not an abort)."""
    return getattr(exc, "title", None) == "ZeroGPU worker error" and ABORTED not in str(exc)


def gpu_call(duration):
    """`spaces.GPU(duration=duration)` whose errors reach the caller in words. In the ZeroGPU
    worker a `UserError` would come back as "ZeroGPU worker error: UserError", its words lost
    (a training run "failed: 'UserError'"); so the worker returns it, and the caller raises it.
    Any other error still fails the call (ZeroGPU then drops the worker, which may hold a
    broken CUDA context), but first the worker writes what it was to a file, which the caller
    raises as a `GpuCallError`. (The worker is a fork of this process: the disk is shared.)"""

    def decorate(task):
        @functools.wraps(task)
        def in_worker(*args, error_file: str, **kwargs):
            try:
                return task(*args, **kwargs)
            except UserError as exc:
                return _Refused(str(exc))
            except Exception as exc:
                words = f"{type(exc).__name__}: {exc}".splitlines()[0]
                Path(error_file).write_text(f"{words}\n{traceback.format_exc()}")
                raise

        def asked(*args, error_file: str, **kwargs):
            return duration(*args, **kwargs) if callable(duration) else duration

        on_device = spaces.GPU(duration=asked)(in_worker)

        @functools.wraps(task)
        def call(*args, **kwargs):
            with tempfile.TemporaryDirectory(prefix="gpu-call-") as folder:
                error_file = Path(folder) / "error.txt"
                try:
                    result = on_device(*args, error_file=str(error_file), **kwargs)
                except Exception as exc:
                    if not (_worker_error(exc) and error_file.is_file()):
                        raise
                    words, worker_traceback = error_file.read_text().split("\n", 1)
                    raise GpuCallError(words, worker_traceback) from None
            if isinstance(result, _Refused):
                raise UserError(result.message)
            return result

        return call

    return decorate


def decode_step_seconds(model_name: str) -> float:
    """One decoding step of one generate call: bench/gpu.py's `generate` row for this model's
    size, with the margin, where it was measured; else the estimate."""
    rates = GpuRates.load()
    params = model_params(model_name) if rates else None
    measured = rates.seconds(params, "generate", "decode_step_s") if params else None
    return MARGIN * measured if measured is not None else SECONDS_PER_NEW_TOKEN


def decoding_seconds(model_name: str, ideas: int, settings: GenerationSettings) -> int:
    """The GPU time to ask for titles for `ideas` ideas: start-up, then each generate call's
    `max_new_tokens` decoding steps."""
    decoding = generate_calls(ideas, settings) * settings.max_new_tokens
    return min(
        MAX_CALL_SECONDS, STARTUP_SECONDS + math.ceil(decoding * decode_step_seconds(model_name))
    )


def generation_seconds(
    model_name: str, idea: str, settings: GenerationSettings = DEFAULT_SETTINGS
) -> int:
    """The GPU time to ask for one idea's titles."""
    return decoding_seconds(model_name, 1, settings)


@gpu_call(duration=generation_seconds)
def generate_on_gpu(
    model_name: str, idea: str, settings: GenerationSettings = DEFAULT_SETTINGS
) -> list[Title]:
    """`generate_for_idea` with the model looked up by name (loaded once per process)."""
    return generate_for_idea(load_model(model_name), idea, settings)


@gpu_call(
    duration=lambda model_name, reward_name, idea, settings=DEFAULT_SETTINGS: (
        generation_seconds(model_name, idea, settings) + STARTUP_SECONDS
    )
)
def best_of_n_on_gpu(
    model_name: str, reward_name: str, idea: str, settings: GenerationSettings = DEFAULT_SETTINGS
) -> list[ScoredTitle]:
    """`reward.best_of_n`: the titles of `model_name` scored by the reward model `reward_name`
    (both loaded once per process), best first."""
    reward = load_reward_model(check_reward_model(reward_name))
    return best_of_n(load_model(model_name), reward, idea, settings)


def round_generation_seconds(
    model_name: str, ideas: list[str], settings: GenerationSettings = DEFAULT_SETTINGS
) -> int:
    """One model's titles for a round: its load, then one decode per batch of sequences."""
    return decoding_seconds(model_name, len(ideas), settings)


@gpu_call(duration=round_generation_seconds)
def generate_round_on_gpu(
    model_name: str, ideas: list[str], settings: GenerationSettings = DEFAULT_SETTINGS
) -> list[list[Title]]:
    """One model's titles for an evaluation round (`pipeline.rounds.generate_with`)."""
    return generate_with(model_name, ideas, settings)


def judging_seconds(model_name: str, pairs: list[tuple[str, str, str]]) -> int:
    """A judge's load, then its verdict on each pair (asked both ways, 16 questions a forward):
    at the pace bench/gpu.py's `judge` row measured for the model's size, with the margin,
    where it was measured; else one estimated forward per 16 questions."""
    judged = _judging(len(pairs), _judge_pair_seconds(model_name))
    return min(MAX_CALL_SECONDS, STARTUP_SECONDS + math.ceil(judged))


def _judge_pair_seconds(model_name: str) -> float | None:
    """The measured seconds of a verdict on one pair by a judge of the model's size, if any."""
    rates = GpuRates.load()
    params = model_params(model_name) if rates else None
    return rates.seconds(params, "judge", "judge_pair_s") if params else None


def _judging(pairs: int, per_pair: float | None) -> float:
    """Seconds to judge `pairs`: at the measured pace with the margin, else estimated."""
    if per_pair is not None:
        return MARGIN * per_pair * pairs
    return math.ceil(2 * pairs / 16) * JUDGE_SECONDS_PER_BATCH


@gpu_call(duration=judging_seconds)
def judge_pairs_on_gpu(model_name: str, pairs: list[tuple[str, str, str]]) -> list[str]:
    """The judge `model_name` names (a chat model, or a reward model: `judges.make_judge`),
    loaded once per process, on a batch of pairs."""
    return make_judge(model_name).prefer_many(pairs)


class JudgeOnGpu(PairwiseJudge):
    """The judge interface (`pipeline.judges.Judge`) for the app: the chat model `model_name`
    answers in GPU calls, a batch of pairs per call (outside ZeroGPU: plain calls)."""

    BATCH = 200  # pairs per GPU call at most

    def __init__(self, model_name: str) -> None:
        self.model_name, self.name = model_name, f"judge {short_name(model_name)}"

    def pairs_per_call(self) -> int:
        """As many pairs as one call's time holds at the judging pace (a larger judge is
        slower), BATCH at most: a call asking for more than a call may have is cut short."""
        count, per_pair = self.BATCH, _judge_pair_seconds(self.model_name)
        while count > 1 and STARTUP_SECONDS + _judging(count, per_pair) > MAX_CALL_SECONDS:
            count //= 2
        return count

    def prefer_many(self, pairs) -> list[str]:
        pairs, size = list(pairs), self.pairs_per_call()
        return [
            verdict
            for start in range(0, len(pairs), size)
            for verdict in judge_pairs_on_gpu(self.model_name, pairs[start : start + size])
        ]


IP_TOKEN_HEADER = "x-ip-token"  # what a Space's proxy adds to a visitor's request for ZeroGPU


def gpu_request():
    """The Gradio request a GPU call made now is scheduled under, as `spaces.GPU` reads it
    (None: no request, so on a Space the anonymous quota)."""
    from spaces.utils import gradio_request_var

    return gradio_request_var().get(None)


def whose_quota() -> str:
    """Whom ZeroGPU charges a GPU call made now to, in one line for the run's log."""
    request = gpu_request()
    if request is None:
        return "GPU calls carry no Gradio request: on a Space, the anonymous quota"
    if request.headers.get(IP_TOKEN_HEADER) is None:
        return "GPU calls carry the request that started the run (no ZeroGPU token in it)"
    return "GPU calls are charged to the person who started the run (their ZeroGPU token)"


def chunk_pace(data: str | Path, model_name: str | None, recipe: Recipe | None) -> Pace:
    """The pace a run's first chunk is planned at: the rates `bench/gpu.py` measured for this
    model's size and recipe, else a pessimistic estimate (`pipeline.gpu_rates`)."""
    from pipeline.datasets import load_preference_dataset
    from pipeline.recipes import get_recipe

    recipe = recipe or get_recipe()
    rates = GpuRates.load()
    params = model_params(model_name) if rates else None
    train_pairs = len(load_preference_dataset(data)["train"])
    return plan_pace(params, recipe, train_pairs, rates)


def _asked_seconds(
    data, out, model_name, recipe, max_steps, steps, gpu_seconds, resume, reward_model=None
) -> int:
    return gpu_seconds


@gpu_call(duration=_asked_seconds)
def train_chunk(
    data: str | Path,
    out: str | Path,
    model_name: str | None,
    recipe: Recipe | None,
    max_steps: int | None,
    steps: int,
    gpu_seconds: int,
    resume: bool,
    reward_model: str | None = None,
) -> TrainResult:
    """One GPU call of `gpu_seconds`: `steps` more steps of the run in `out` (of the recipe's
    kind: DPO, a reward model or RL), ending with a checkpoint."""
    return train_run(
        data,
        out,
        model_name,
        recipe,
        reward_model=reward_model,
        max_steps=max_steps,
        stop_after=steps,
        resume=resume,
    )


RETRIES_AFTER_ABORT = 2  # in a row; each retry's chunks are half as long


def zerogpu_refusal(exc: BaseException) -> str | None:
    """ZeroGPU's words when it refused a call rather than ran it: the visitor's quota spent,
    no GPU free in time, the page that asked closed while the call waited (spaces/zero/
    client.py, `schedule`). None for anything else, an error inside the call included."""
    title = getattr(exc, "title", None) or ""
    if title.startswith("ZeroGPU") and title != "ZeroGPU worker error":
        return f"{title}: {getattr(exc, 'message', exc)}".strip()
    if str(exc).startswith("Connection closed by visitor"):
        return f"{exc} (ZeroGPU runs a call for a page that is open)"
    return None


def seconds_allowed(refusal: str, asked: int) -> float | None:
    """The seconds a call may ask for, when ZeroGPU refused `asked` as too many: what is left
    of the visitor's quota ("(120s requested vs. 90s left)", in ZeroGPU's units, which may
    scale ours), or for a call longer than the visitor may make, half as many. None when the
    refusal is not about the call's length (no GPU free, the page closed)."""
    if said := re.search(r"\((\d+)s requested vs\. (\d+)s left\)", refusal):
        requested, left = int(said[1]), int(said[2])
        return asked * left / requested if requested else None
    if refusal.startswith("ZeroGPU illegal duration"):
        return asked / 2
    return None


def train_in_chunks(
    data: str | Path,
    out: str | Path,
    model_name: str | None,
    recipe: Recipe | None,
    *,
    reward_model: str | None = None,
    max_steps: int | None = None,
    chunk_steps: int | None = None,
    resume: bool = False,
    pace: Pace | None = None,
    should_stop=lambda: False,
    on_chunk=lambda result: None,
    on_retry=lambda line: None,
) -> TrainResult:
    """Run the whole training as chunks of `chunk_steps` steps (None: as many as fit in one GPU
    call, planned at `pace`, default `chunk_pace(...)`, then at the pace the last chunk
    measured). `should_stop()` is asked between chunks (a stopped run ends as a straight run's
    Stop leaves it: `_kept_where_stopped`); `on_chunk(result)` hears after each.
    A chunk that ZeroGPU aborts is tried again from the last complete checkpoint, with chunks
    half as long (`on_retry(line)` hears why), up to RETRIES_AFTER_ABORT times in a row.
    A chunk refused for asking more than the visitor has left is asked again as one that fits
    in what is left, from then on (the quota is better spent than left), if one step fits."""
    pace = pace or chunk_pace(data, model_name, recipe)
    aborts, left, closing = 0, None, False  # left: the run's steps to go, once a chunk says
    budget = MAX_CALL_SECONDS  # what a call may ask for; less once ZeroGPU has said so
    while True:
        steps = _chunk_size(pace, budget, chunk_steps, left)
        seconds = pace.chunk_seconds(steps)
        try:
            result = train_chunk(
                data, out, model_name, recipe, max_steps, steps, seconds, resume, reward_model
            )
        except Exception as exc:
            if refusal := zerogpu_refusal(exc):
                budget = _budget_after(refusal, seconds, pace, out)  # nothing ran: ask less
                on_retry(f"{refusal.split(':')[0]} for a chunk of {seconds} s: asking for "
                         f"chunks of at most {math.floor(budget)} s from now on")  # fmt: skip
                continue
            if ABORTED not in str(exc):
                raise
            aborts += 1
            resume = resume or left_at(out).stage != ""  # a new run over what it left: refused
            if should_stop() or aborts > RETRIES_AFTER_ABORT:
                raise UserError(_aborted(aborts, out, should_stop())) from None
            pace = pace.slower()
            chunk_steps = chunk_steps and max(1, chunk_steps // 2)
            on_retry(_retrying(steps, seconds, out, aborts))
            continue
        aborts = 0
        on_chunk(result)
        stopping = should_stop()
        if result.finished or (stopping and (closing or _kept_where_stopped(result))):
            return result
        if stopping:  # Stop came after the chunk's last step: a closing chunk of one step,
            (Path(out) / STOP_FILE).touch()  # which finds the stop file, saves the model
            closing, chunk_steps = True, 1
        pace = _pace_after(pace, result)
        left = None if result.stage == "sft" else result.max_steps - result.steps
        resume = True


def _kept_where_stopped(result: TrainResult) -> bool:
    """Whether a stopped run's last chunk left what a straight run's Stop leaves: its model
    and summary, or, in the SFT stage, the stage's checkpoint."""
    return result.model_saved or result.stage == "sft"


def _pace_after(pace: Pace, result: TrainResult) -> Pace:
    """The pace the next chunk is planned at: the one `result`'s chunk measured, with the SFT
    stage's steps still to go."""
    if result.steps_this_call:
        pace = pace.measured(result.seconds / result.steps_this_call, result.stage)
    return pace.with_sft_left(result.max_steps - result.steps if result.stage == "sft" else 0)


def _chunk_size(pace: Pace, budget: float, chunk_steps: int | None, left: int | None) -> int:
    """The next chunk's steps: `chunk_steps` if fixed, else as many as fit in `budget` seconds
    at `pace` (and no more than fit, once ZeroGPU has cut the budget); at most `left`."""
    steps = pace.chunk_steps(budget)
    if chunk_steps:
        steps = chunk_steps if budget == MAX_CALL_SECONDS else min(chunk_steps, steps)
    return min(steps, left or steps)  # the last chunk asks for its own steps' time only


def _retrying(steps: int, seconds: int, out, aborts: int) -> str:
    return (
        f"ZeroGPU aborted the chunk of {counted(steps, 'step')} ({seconds} s asked for): "
        "trying again "
        f"from {left_at(out).resume_point() or 'the start'} with chunks half as long "
        f"({aborts} of {RETRIES_AFTER_ABORT} tries)"
    )


def _budget_after(refusal: str, asked: int, pace: Pace, out) -> float:
    """The seconds a chunk may ask for after ZeroGPU refused one of `asked` seconds; a
    `UserError` when no chunk of one step fits, or the refusal is not about its length."""
    allowed = seconds_allowed(refusal, asked)
    if allowed is None or not pace.chunk_seconds(1) <= allowed < asked:
        raise UserError(f"{refusal} {resume_line(out)}")
    return allowed


def _aborted(aborts: int, out, stopping: bool) -> str:
    what = "the chunk" if aborts == 1 else f"{aborts} chunks in a row"
    why = " as the run was stopping" if stopping else ""
    return f"ZeroGPU aborted {what}{why} (GPU task aborted). {resume_line(out)}"


def scoring_seconds(result: TrainResult) -> int:
    """The GPU time to ask for ranking a finished run's held-out pairs: from the reference
    pass bench/gpu.py measured for the model's size, the estimate where none was."""
    from pipeline.datasets import load_preference_dataset
    from pipeline.stages import first_rows

    valid = load_preference_dataset(result.data).get("valid") if result.data else None
    pairs = len(first_rows(valid, result.rows_limit)) if valid is not None else 0
    rates = GpuRates.load()
    params = model_params(result.started_from or result.base_model) if rates else None
    measured = held_out_seconds(params, pairs, HELD_OUT_MODELS, rates)
    return SCORING_SECONDS if measured is None else min(MAX_CALL_SECONDS, math.ceil(measured))


@gpu_call(duration=scoring_seconds)
def score_on_gpu(result: TrainResult) -> TrainResult:
    """`score_run` (the held-out pairs) in a GPU call of its own, after the last chunk."""
    return score_run(result)
