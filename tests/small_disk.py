"""A small disk for one command: a tmpfs mounted over a folder in a mount namespace of the
command's own (`unshare`, in a user namespace, so no root is needed where the kernel lets
users have them), that a test can fill without filling the machine's disk.

From outside, the mounted disk is seen through the process's root (`/proc/PID/root`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MOUNT = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


def small_disk(folder: Path, size: str) -> tuple[str, ...]:
    """The wrapper that runs a command with a tmpfs of `size` ("64m") mounted over `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    unshare = ("unshare", "--user", "--map-root-user", "--mount")
    return (*unshare, "sh", "-c", MOUNT, "sh", size, str(folder))


def skip_without_small_disks(tmp_path: Path) -> None:
    """Skip the test where this machine cannot mount a tmpfs in a namespace of its own."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here (util-linux) to mount a small disk with")
    tried = subprocess.run([*small_disk(tmp_path / "probe", "1m"), "true"], capture_output=True)
    if tried.returncode != 0:
        pytest.skip(f"no mount namespace for a small disk here: {tried.stderr.decode().strip()}")


def seen_from_outside(pid: int, folder: Path) -> Path:
    """`folder` as the process `pid` sees it, its small disk mounted there."""
    return Path(f"/proc/{pid}/root") / folder.resolve().relative_to("/")


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the disk of `folder` up to `leave` bytes free, with one file; return it."""
    ballast = folder / "ballast"
    stat = os.statvfs(folder)
    size = max(stat.f_bavail * stat.f_frsize - leave, 0)
    with ballast.open("wb") as f:
        for start in range(0, size, 1 << 20):
            f.write(b"\0" * min(1 << 20, size - start))
    return ballast
