"""The one exception type for mistakes a user can fix (bad input, unknown model, bad file),
and the one for a failure inside a GPU call, which would otherwise reach the page as a bare
class name.

The CLI prints a UserError as one line and exits non-zero; the app shows either as a message.
Anything else that escapes is a bug and keeps its traceback. Two failures that are no bug are
turned into a UserError where they happen: a device out of memory, and a full disk.
"""

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.wording import file_size


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


# How each library says its write found the disk full: OSError's errno (Python, PEFT's JSON),
# SQLite's own words, safetensors' Rust error ("I/O error: No space left on device (os error
# 28)"). torch.save says only "unexpected pos 81984 vs 81872": for that, the free space.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FULL_DISK_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")
NEARLY_FULL = 1024 * 1024  # bytes free, below which a failed write is taken for a full disk


def free_space(folder: str | Path) -> int:
    """The bytes a process may still write on the disk that holds `folder` (or would hold it:
    its nearest existing parent)."""
    place = Path(folder).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def is_full_disk(exc: BaseException, folder: str | Path | None = None) -> bool:
    """Whether `exc` (or what it was raised from) is a write that found the disk full; with
    `folder`, also any OSError or RuntimeError on a disk left with next to nothing free."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_DISK_ERRNOS:
            return True
        if any(words in str(seen).lower() for words in FULL_DISK_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    if folder is None or not isinstance(exc, OSError | RuntimeError):
        return False
    try:
        return free_space(folder) < NEARLY_FULL
    except OSError:
        return False


@contextmanager
def advice_on_full_disk(folder: str | Path, advice: Callable[[], str]) -> Iterator[None]:
    """A write in the block that finds the disk of `folder` full becomes a UserError that
    says so, with the space left and `advice()` (asked then: what was kept, what to do), and
    the library's own first line; anything else passes as it was."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if not is_full_disk(exc, folder):
            raise
        words = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        return
    raise UserError(
        f"the disk is full: {file_size(free_space(folder))} free on the disk of {folder}. "
        f"{advice()} ({words})"
    )
