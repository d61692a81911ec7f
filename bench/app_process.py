"""Start `python app.py` as a separate process, as a user would, and wait until it serves.

Shared by the benchmarks (beside it) and the tests (pytest's `pythonpath` has bench/)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# Ports an app is started on: below the kernel's ephemeral range (32768 and up on Linux), from
# which outgoing connections and bind(("", 0)) draw theirs, so none of those takes the port
# between our check and the app's own bind (gradio's import takes seconds); and a block of its
# own for each pytest-xdist worker, so two workers never pick the same one.
APP_PORTS_FROM, APP_PORTS_PER_WORKER = 20000, 1000
_GIVEN: set[int] = set()  # every port handed out in this process: never twice


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, that no other caller will be given."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = APP_PORTS_FROM + APP_PORTS_PER_WORKER * (int(worker) % 12 if worker.isdigit() else 0)
    block = [p for p in range(first, first + APP_PORTS_PER_WORKER) if p not in _GIVEN]
    for port in random.sample(block, len(block)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken, or still closing after an earlier app
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port in {first}-{first + APP_PORTS_PER_WORKER - 1}")


def start_app(
    *args: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    wrapper: tuple[str, ...] = (),
) -> tuple[subprocess.Popen, str]:
    """Launch the app with ARGS on a free port; return the process and its URL once it answers.
    Gradio's cache of its files is its own, beside the log: an app removes its cached files
    when it stops, and apps that shared a cache would remove each other's. `wrapper`: a
    command that runs the app's as its last arguments and becomes it (`exec`), such as
    `unshare`: the process returned is still the app's."""
    import httpx

    port = free_port()
    full_env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(log_path.parent / f"{log_path.stem}-{port}.gradio"),
        **(env or {}),
    }
    log = log_path.open("a")
    process = subprocess.Popen(
        [*wrapper, sys.executable, "app.py", *args],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"app did not start in {timeout} s:\n{log_path.read_text()}")
        time.sleep(0.5)


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
