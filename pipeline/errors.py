"""The one exception type for mistakes a user can fix (bad input, unknown model, bad file),
and the one for a failure inside a GPU call, which would otherwise reach the page as a bare
class name.

The CLI prints a UserError as one line and exits non-zero; the app shows either as a message.
Anything else that escapes is a bug and keeps its traceback.
"""

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input or an unusable resource, described in words the user can act on."""


class GpuCallError(RuntimeError):
    """An error raised inside a ZeroGPU call's worker, in its own words (ZeroGPU passes back
    only its class name: "ZeroGPU worker error: IndexError"). A bug or a broken model, not
    a user's mistake; `worker_traceback` says where it was raised."""

    def __init__(self, words: str, worker_traceback: str) -> None:
        super().__init__(f"error inside the GPU call: {words}")
        self.worker_traceback = worker_traceback


@contextmanager
def advice_on_out_of_memory(advice: str) -> Iterator[None]:
    """A device running out of memory in the block becomes a UserError that says what to
    change (`advice`, then torch's first line), not a traceback, nor on a ZeroGPU Space a bare
    "OutOfMemoryError". The memory the failed work held is given back first."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as exc:
        words = str(exc).splitlines()[0] if str(exc) else "out of memory"
    else:
        return
    # outside the handler: the failed work's frames (and tensors) are gone by now
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise UserError(f"the GPU ran out of memory: {advice} (torch: {words})")
