"""A ZeroGPU Space on a CPU, for the tests: put this folder first on PYTHONPATH of the app's
process (tests/test_space.py) and the app runs under the two things a ZeroGPU Space changes.

The real ZeroGPU runtime cannot run here (`spaces.zero` patches CUDA torch at import), so this
does what `spaces` 0.51.3 does around a `spaces.GPU` call (spaces/zero/wrappers.py,
`regular_function_wrapper`), with the same pieces where they import without CUDA:

- the duration is computed in the app's process, from the call's own arguments;
- the call runs in a forked worker process: its arguments and its result cross as pickles
  (spaces' fork-context `SimpleQueue`), so nothing the worker changes in memory comes back;
- an exception in the worker comes back as a `gr.Error`: a `gr.Error` keeps its message, any
  other exception only its class name ("ZeroGPU worker error": spaces' own `error`);
- a call made inside the worker runs there directly.
What differs: spaces keeps an idle worker for the next call; this forks one per call (state in
a worker is never relied on either way). Durations are recorded, not enforced (a CPU is not
the GPU they are planned for); instead a test aborts a call as ZeroGPU does one that outlives
its duration: it writes the function's name to the file ZEROGPU_EMULATOR_ABORT names, and the
worker running it is killed (spaces then raises "GPU task aborted"). And a test spends the
visitor's quota (ZEROGPU_EMULATOR_QUOTA, see `_quota_left`): calls asking for more than is
left are then refused as spaces refuses them, before any worker starts.
ZEROGPU_EMULATOR_START_SECONDS: how long a call waits for its GPU and worker before it runs
(seconds on a Space; 0 unless set). ZEROGPU_EMULATOR_HOLD names a file: while it exists, a call
waits there too (a call that lasts as long as a test needs it to, whatever the machine's pace).
With ZEROGPU_EMULATOR_LOG set, every call adds a JSON line: the function, the seconds asked
for, the caller's ZeroGPU token, and how it ended.

And it sets SPACES_ZERO_GPU=true once `spaces` is imported without it, as a Space's environment
has it: the app then trains in chunks, and Gradio configures its queue as on ZeroGPU.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import multiprocessing
import os
import pickle
import threading
import time
import traceback
from pathlib import Path

import spaces
from spaces.utils import SimpleQueue, gradio_request_var

_in_worker = False


def _record(entry: dict) -> None:
    if path := os.environ.get("ZEROGPU_EMULATOR_LOG"):
        with open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")


def _run_in_worker(task, payload: bytes, results: SimpleQueue) -> None:
    global _in_worker
    _in_worker = True
    args, kwargs = pickle.loads(payload)
    try:
        outcome = ("ok", task(*args, **kwargs))
    except Exception as exc:  # what spaces' `exception_result` keeps of it
        import gradio as gr

        kept = exc if isinstance(exc, gr.Error) else None
        outcome = ("error", (type(exc).__name__, traceback.format_exc(), kept))
    try:
        results.put(outcome)
    except Exception as exc:  # an unpicklable result: spaces reports the PicklingError
        results.put(("error", (type(exc).__name__, traceback.format_exc(), None)))


def _quota_left(task_name: str, seconds: float) -> int | None:
    """What is left of the visitor's quota if ZeroGPU refuses this call; None if it runs.
    ZEROGPU_EMULATOR_QUOTA names a file "TASK N [LEFT]": N more calls of TASK run, whatever
    they ask for; after them a call asking for at most LEFT seconds (0 unless given) runs and
    spends them, and any other is refused, until the file goes."""
    path = Path(os.environ.get("ZEROGPU_EMULATOR_QUOTA") or "/nonexistent")
    try:
        task, calls, *more = path.read_text().split()
        left = int(more[0]) if more else 0
    except (OSError, ValueError):
        return None
    if task != task_name:
        return None
    if int(calls) > 0:
        path.write_text(f"{task} {int(calls) - 1} {left}")
        return None
    if seconds <= left:
        path.write_text(f"{task} 0 {left - math.ceil(seconds)}")
        return None
    return left


def _watch(task_name: str, worker, results: SimpleQueue) -> None:
    """What spaces' sentinel does (a None once the worker process has ended, after any result
    it sent), and ZeroGPU aborting the call when the test asks (ZEROGPU_EMULATOR_ABORT)."""
    trigger = os.environ.get("ZEROGPU_EMULATOR_ABORT")
    while worker.is_alive():
        try:
            asked = trigger is not None and Path(trigger).read_text().strip() == task_name
        except OSError:
            asked = False
        if asked:
            os.unlink(trigger)
            worker.kill()
        worker.join(0.1)
    results.put(None)


def _on_gpu(task, duration):
    if inspect.iscoroutinefunction(task) or inspect.isgeneratorfunction(task):
        raise NotImplementedError("the emulated ZeroGPU runs plain functions only")

    @functools.wraps(task)
    def call(*args, **kwargs):
        if _in_worker:
            return task(*args, **kwargs)
        from spaces.zero.gradio import error

        seconds = duration(*args, **kwargs) if callable(duration) else duration
        request = gradio_request_var().get(None)
        entry = {
            "task": task.__name__,
            "seconds": seconds,
            "ip_token": request and request.headers.get("x-ip-token"),
        }
        left = _quota_left(task.__name__, seconds)
        if left is not None:  # spaces' words (spaces/zero/client.py, `schedule`)
            _record({**entry, "outcome": "quota exceeded"})
            raise error(
                "ZeroGPU quota exceeded",
                f"You have exceeded your free ZeroGPU quota ({round(seconds)}s requested vs. "
                f"{left}s left). Try again in 0:09:59. ",
            )
        payload = pickle.dumps((args, kwargs))  # spaces puts them on a queue to the worker
        time.sleep(float(os.environ.get("ZEROGPU_EMULATOR_START_SECONDS", 0)))
        hold = Path(os.environ.get("ZEROGPU_EMULATOR_HOLD") or "/nonexistent")
        while hold.exists():
            time.sleep(0.05)
        results = SimpleQueue()
        worker = multiprocessing.get_context("fork").Process(
            target=_run_in_worker, args=(task, payload, results), daemon=True
        )
        worker.start()
        threading.Thread(target=_watch, args=(task.__name__, worker, results)).start()
        outcome = results.get()
        worker.join()
        if outcome is None:  # the worker ended without a result
            _record({**entry, "outcome": "aborted"})
            raise error("ZeroGPU worker error", "GPU task aborted")
        kind, value = outcome
        entry["outcome"] = kind if kind == "ok" else value[0]
        _record(entry)
        if kind == "ok":
            return value
        name, trace, kept = value
        if kept is not None:
            raise kept
        print(trace, flush=True)  # spaces prints the worker's traceback to the Space's log
        raise error("ZeroGPU worker error", name)

    return call


def GPU(task=None, *, duration=None, size=None, **kwargs):  # spaces' name
    if not callable(task):
        return functools.partial(GPU, duration=duration, size=size)
    return _on_gpu(task, duration)


spaces.GPU = GPU
os.environ["SPACES_ZERO_GPU"] = "true"
