"""Hugging Face Jobs for the loopback Hub (tests/hub_server.py): the endpoints huggingface_hub's
`run_job`, `inspect_job`, `list_jobs`, `fetch_job_logs` and `cancel_job` call, answering as the
Hub does (checked against huggingface_hub 2.4's `_jobs_api.py` and `hf_api.py`).

A submitted job really runs: its command is started in a fresh folder as a local process, with
the job's environment and its secrets as environment variables, its output becomes the job's
log, and its exit decides its stage (COMPLETED, or ERROR with the exit code). Its timeout stops
it (ERROR, "Job timeout"), as does a cancel (CANCELED). What stands in for the job's image is
`base_env`: the test's own Python on PATH and pip with no index, so a job that installs its
requirements finds them already there and never reaches the network.

Every request's spec is kept in `requests` (secrets included: it is the test's copy) so a test
can check what the client sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENDED = ("COMPLETED", "CANCELED", "ERROR", "DELETED")


class JobsError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Job:
    id: str
    namespace: str
    spec: dict[str, Any]
    folder: Path
    created: float = field(default_factory=time.time)
    stage: str = "SCHEDULING"
    message: str | None = None
    started: float | None = None
    finished: float | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    process: subprocess.Popen | None = None
    done: threading.Event = field(default_factory=threading.Event)  # its whole log is in

    def info(self) -> dict[str, Any]:
        now = time.time()
        running = None
        if self.started is not None:
            running = int((self.finished or now) - self.started)
        return {
            "id": self.id,
            "createdAt": _iso(self.created),
            "startedAt": _iso(self.started),
            "finishedAt": _iso(self.finished),
            "dockerImage": self.spec.get("dockerImage"),
            "spaceId": self.spec.get("spaceId"),
            "command": self.spec.get("command"),
            "arguments": self.spec.get("arguments", []),
            "environment": self.spec.get("environment", {}),
            # the Hub keeps secrets encrypted: their names come back, never their values
            "secrets": dict.fromkeys(self.spec.get("secrets") or {}),
            "flavor": self.spec.get("flavor"),
            "labels": self.spec.get("labels"),
            "status": {"stage": self.stage, "message": self.message},
            "durations": {
                "schedulingSecs": int((self.started or now) - self.created),
                "runningSecs": running,
                "totalSecs": int((self.finished or now) - self.created),
            },
            "owner": {"id": self.namespace, "name": self.namespace, "type": "user"},
        }


class JobsService:
    """The Jobs part of a loopback Hub: jobs by id, their processes and logs."""

    def __init__(self, folder: Path, lock: threading.RLock, member_of: Callable[[str, str], bool]):
        self.folder = folder
        self._lock = lock
        self._member_of = member_of  # (user, namespace): may the user run jobs there
        self.jobs: dict[str, Job] = {}
        #: every create request's JSON body, in order (a test reads what the client sent)
        self.requests: list[dict[str, Any]] = []
        #: flavors the test accounts may not use: creating a job on one is refused with 403
        self.refused_flavors: set[str] = {"h200x8", "a100x8"}
        #: a job's timeout is its timeoutSeconds times this (a test's clock can run fast)
        self.timeout_scale = 1.0
        #: the environment a job starts from (what its image would give it)
        self.base_env: dict[str, str] = default_base_env()

    # ----- requests -----

    def handle(
        self, method: str, segments: list[str], query: Mapping[str, list[str]], identity, body
    ) -> tuple[int, bytes, dict[str, str]]:
        if identity is None:
            raise JobsError(401, "You must be authenticated to use Jobs")
        if not segments:
            raise JobsError(404, "Not found")
        namespace, rest = segments[0], segments[1:]
        if not self._member_of(identity[0], namespace):
            raise JobsError(403, f"{identity[0]} cannot use the jobs of {namespace!r}")
        if method == "POST" and not rest:
            return _json(self._create(namespace, identity, json.loads(body or b"{}")))
        if method == "GET" and not rest:  # each `label=KEY=VALUE` must match, as the Hub's
            wanted = [label.split("=", 1) for label in query.get("label", [])]
            listed = [
                j.info()
                for j in self.jobs.values()
                if j.namespace == namespace
                and all((j.spec.get("labels") or {}).get(k) == v for k, v in wanted)
            ]
            return _json(listed)
        job = self.jobs.get(rest[0])
        if job is None or job.namespace != namespace:
            raise JobsError(404, f"Job {rest[0]} not found")
        if method == "GET" and len(rest) == 1:
            return _json(job.info())
        if method == "GET" and rest[1:] == ["logs"]:
            return self._logs(job, query)
        if method == "POST" and rest[1:] == ["cancel"]:
            self._stop(job, "CANCELED", None)
            return _json({})
        if method == "GET" and rest[1:] == ["metrics"]:
            if job.stage in ENDED:
                raise JobsError(406, "Job has finished")
            return 200, b"", {"Content-Type": "text/event-stream"}
        raise JobsError(404, f"Not found: {method} jobs/{'/'.join(segments)}")

    def _create(self, namespace: str, identity, spec: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(spec)
        if identity[1] != "write":
            raise JobsError(403, "Your token has the 'read' role: it cannot run jobs")
        command = spec.get("command")
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise JobsError(400, "command must be a list of strings")
        if not (spec.get("dockerImage") or spec.get("spaceId")):
            raise JobsError(400, "a job needs a dockerImage or a spaceId")
        flavor = spec.get("flavor")
        if flavor in self.refused_flavors:
            raise JobsError(
                403, f"You are not allowed to use the {flavor} hardware: add a payment method"
            )
        job_id = secrets.token_hex(12)
        job = Job(job_id, namespace, spec, self.folder / job_id)
        self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        return job.info()

    def _logs(self, job: Job, query: Mapping[str, list[str]]) -> tuple[int, bytes, dict]:
        events = list(job.events)
        tail = query.get("tail")
        if tail:
            events = events[-int(tail[0]) :]
        body = "".join(
            f"data: {json.dumps({'timestamp': _iso(t), 'data': line})}\n\n" for t, line in events
        )
        return 200, body.encode(), {"Content-Type": "text/event-stream"}

    # ----- running -----

    def _log(self, job: Job, line: str) -> None:
        with self._lock:
            job.events.append((time.time(), line))

    def _run(self, job: Job) -> None:
        job.folder.mkdir(parents=True)
        env = {
            **self.base_env,
            # a fresh machine: nothing cached from the test or from another job
            "HF_HOME": str(job.folder / "hf-home"),
            "HF_HUB_CACHE": str(job.folder / "hf-home" / "hub"),
            "HF_DATASETS_CACHE": str(job.folder / "hf-home" / "datasets"),
            **(job.spec.get("environment") or {}),
            **(job.spec.get("secrets") or {}),
        }
        with self._lock:
            if job.stage in ENDED:  # cancelled before it started
                job.done.set()
                return
            job.stage, job.started = "RUNNING", time.time()
            job.events.append((job.started, f"===== Job started at {_iso(job.started)} ====="))
            job.process = subprocess.Popen(
                [*job.spec["command"], *job.spec.get("arguments", [])],
                cwd=job.folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its whole process group can be stopped
            )
        timeout = job.spec.get("timeoutSeconds")
        if timeout:
            timer = threading.Timer(
                timeout * self.timeout_scale, self._stop, (job, "ERROR", "Job timeout")
            )
            timer.daemon = True
            timer.start()
        assert job.process.stdout is not None
        for line in job.process.stdout:
            self._log(job, line.rstrip("\n"))
        code = job.process.wait()
        with self._lock:
            if job.stage not in ENDED:
                job.stage = "COMPLETED" if code == 0 else "ERROR"
                job.message = None if code == 0 else f"Job failed with exit code: {code}"
                job.finished = time.time()
        job.done.set()

    def _stop(self, job: Job, stage: str, message: str | None) -> None:
        with self._lock:
            if job.stage in ENDED:
                return
            job.stage, job.message, job.finished = stage, message, time.time()
            process = job.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stop every job still running (a test's end)."""
        for job in list(self.jobs.values()):
            self._stop(job, "CANCELED", "the test hub stopped")

    def wait(self, job_id: str, timeout: float = 600) -> Job:
        """The job once it has ended and its output is all in the log (for tests)."""
        job = self.jobs[job_id]
        if not job.done.wait(timeout):
            raise TimeoutError(f"job {job_id} still {job.stage} after {timeout} s")
        return job


def default_base_env() -> dict[str, str]:
    """The job's starting environment: this Python first on PATH, pip that never looks for
    packages, and no Hugging Face settings of the caller's (the job's own environment gives
    those)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_", "TRANSFORMERS_", "TRACKIO"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "PIP_NO_INDEX": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "TITLE_DPO_TRACKING": "0",
        }
    )
    return env


def _json(obj: Any) -> tuple[int, bytes, dict[str, str]]:
    return 200, json.dumps(obj).encode(), {"Content-Type": "application/json"}
