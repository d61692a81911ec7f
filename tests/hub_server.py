"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for the tests.

The real clients (`huggingface_hub`, `datasets`, `transformers`) are pointed at it with
`HF_ENDPOINT=http://127.0.0.1:PORT` (see `hub_env`). It speaks the part of the Hub API those
clients use (see /work/shared/reference/hub-api.md): whoami, repo create/delete, repo info,
tree, paths-info, commits, refs, preupload, the basic LFS transfer (batch, PUT, verify),
ndjson commits, validate-yaml and HEAD/GET `resolve` with ranges; and Hugging Face Jobs
(tests/hub_jobs.py), whose jobs run as local processes.

Model:
- users and tokens come from a mapping `token -> (username, role)`, role "write" or "read";
- organisations are `hub.orgs = {org: {members}}`: a member sees the org's private repos,
  writes there with a write token and runs jobs there (whoami lists the member's orgs);
- a repo is `(repo_type, "namespace/name")` with a linear history on `main`; every commit is a
  full snapshot of the files and gets a 40-hex sha that is also accepted as a revision;
- file contents live in `storage/objects` by sha256; the repos and their history in
  `storage/state.json`, so they survive `stop()` / `start()` and a new server on the folder.

Errors carry `X-Error-Code` / `X-Error-Message` like the Hub, since the clients map their
exceptions from those headers (RepoNotFound, RevisionNotFound, EntryNotFound).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from hub_jobs import JobsError, JobsService

ROOT = Path(__file__).resolve().parent.parent

REPO_TYPES = ("model", "dataset", "space")
_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# The files a Hub repo gets in its "initial commit": the usual LFS patterns.
_LFS_SUFFIXES = [
    *("7z", "arrow", "bin", "bz2", "ckpt", "ftz", "gz", "h5", "joblib", "mlmodel", "model"),
    *("msgpack", "npy", "npz", "onnx", "ot", "parquet", "pb", "pickle", "pkl", "pt", "pth"),
    *("rar", "safetensors", "tar", "tflite", "tgz", "wasm", "xz", "zip", "zst"),
]
DEFAULT_GITATTRIBUTES = (
    "".join(f"*.{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in _LFS_SUFFIXES)
    + "*.lfs.* filter=lfs diff=lfs merge=lfs -text\n"
    + "*.tar.* filter=lfs diff=lfs merge=lfs -text\n"
    + "saved_model/**/* filter=lfs diff=lfs merge=lfs -text\n"
    + "*tfevents* filter=lfs diff=lfs merge=lfs -text\n"
)
REGULAR_FILE_MAX = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MiB

DEFAULT_TOKENS: dict[str, tuple[str, str]] = {
    "hf_alice_write": ("alice", "write"),
    "hf_alice_read": ("alice", "read"),
    "hf_bob_write": ("bob", "write"),
}

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _now() -> str:
    """The Hub's date format: ISO 8601 with milliseconds and a Z."""
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _front_matter(readme: bytes) -> dict | None:
    """The YAML block at the top of a README, or None when absent or not a mapping."""
    import yaml

    text = readme.decode("utf-8", errors="replace")
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.DOTALL)
    if match is None:
        return None
    loaded = yaml.safe_load(match.group(1))
    return loaded if isinstance(loaded, dict) else None


def _pattern_matches(pattern: str, path: str) -> bool:
    """gitattributes/gitignore-style match: a pattern without '/' applies to the base name."""
    pattern = pattern.removeprefix("/")
    if "/" not in pattern.rstrip("/"):
        return any(fnmatchcase(part, pattern.rstrip("/")) for part in path.split("/"))
    if pattern.endswith("/"):
        return path.startswith(pattern) or fnmatchcase(path, pattern + "*")
    return fnmatchcase(path, pattern)


class HubError(Exception):
    """An error answer: status, message (also sent as X-Error-Message) and X-Error-Code."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = dict(body or {})


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(
        status,
        json.dumps(obj).encode(),
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


class _HTTPServer(ThreadingHTTPServer):
    """Keeps track of its open connections so that `stop()` can really cut them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: HubServer):
        self.hub = hub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def handle_error(self, request, client_address):
        pass  # a client going away, or a connection cut by stop(): not worth a traceback


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestHub/1.0"
    timeout = 60  # idle keep-alive connections end after a minute
    server: _HTTPServer

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def log_message(self, format, *args):
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        hub.request_log.append((self.command, split.path, "authorization" in self.headers))
        body = self._read_body()
        if hub._take_cut(self.command, split.path):
            # No answer at all: the connection is closed and the server goes away.
            self.close_connection = True
            hub.stop()
            return
        try:
            reply = hub._handle(self.command, split.path, parse_qs(split.query), self.headers, body)
        except HubError as error:
            headers = {"X-Error-Message": _header_safe(error.message), **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            reply = _json_reply({"error": error.message, **error.body}, error.status, headers)
        except Exception:
            hub.errors.append(traceback.format_exc())
            reply = _json_reply({"error": "internal error in the test hub"}, 500)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


def _header_safe(text: str) -> str:
    return " ".join(text.split()).encode("latin-1", errors="replace").decode("latin-1")


class HubServer:
    """A Hub on 127.0.0.1 holding its repos under `storage`.

    `tokens` maps a token to `(username, role)` with role "write" or "read". `port=0` picks a
    free port on the first `start()`; later starts reuse it, so clients configured with `url`
    keep working after a `stop()` / `start()`.
    """

    def __init__(
        self,
        storage: str | os.PathLike,
        tokens: Mapping[str, tuple[str, str]] | None = None,
        port: int = 0,
    ):
        self.storage = Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        (self.storage / "objects").mkdir(exist_ok=True)
        self._tokens = {
            token: (user, role) for token, (user, role) in (tokens or DEFAULT_TOKENS).items()
        }
        for user, role in self._tokens.values():
            if role not in ("read", "write"):
                raise ValueError(f"role of {user}'s token must be 'read' or 'write', not {role!r}")
        self._port = port
        self._lock = threading.RLock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tickets: dict[str, tuple[str, str, int]] = {}  # upload ticket -> repo key, oid, size
        self._cut: tuple[str, str] | None = None
        #: (method, path, had an Authorization header) for every request; never the token itself.
        self.request_log: list[tuple[str, str, bool]] = []
        #: tracebacks of unexpected server errors (answered 500); a test can assert it is empty.
        self.errors: list[str] = []
        #: organisations, {org: its members}: a member reads and writes (a write token) in
        #: the org's namespace, and runs jobs there; a test adds its own
        self.orgs: dict[str, set[str]] = {}
        #: Hugging Face Jobs (tests/hub_jobs.py): submitted jobs run here as local processes
        self.jobs = JobsService(self.storage / "jobs", self._lock, self.member_of)
        state_file = self.storage / "state.json"
        self._state: dict[str, Any] = (
            json.loads(state_file.read_text()) if state_file.exists() else {"repos": {}}
        )

    # ----- lifecycle -----

    def start(self) -> HubServer:
        if self._httpd is not None:
            return self
        for attempt in range(50):
            try:
                httpd = _HTTPServer(("127.0.0.1", self._port), self)
                break
            except OSError:
                if self._port == 0 or attempt == 49:
                    raise
                time.sleep(0.1)
        self._port = httpd.server_port
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: the Hub is unreachable until `start()`."""
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"HubServer(url={self.url!r}, storage={str(self.storage)!r}, running={self.running})"

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def stop_on_request(self, method: str, path_contains: str) -> None:
        """Make the next `method` request whose path contains `path_contains` get no answer:
        its connection is closed and the server stops, as when the Hub becomes unreachable
        in the middle of a push (e.g. `stop_on_request("POST", "/commit/")`)."""
        with self._lock:
            self._cut = (method.upper(), path_contains)

    def _take_cut(self, method: str, path: str) -> bool:
        with self._lock:
            if self._cut is None or self._cut[0] != method or self._cut[1] not in unquote(path):
                return False
            self._cut = None
            return True

    # ----- inspection and seeding, for tests (no HTTP) -----

    def repo_exists(self, repo_type: str, repo_id: str) -> bool:
        with self._lock:
            return _key(repo_type, repo_id) in self._state["repos"]

    def is_private(self, repo_type: str, repo_id: str) -> bool:
        with self._lock:
            return bool(self._state["repos"][_key(repo_type, repo_id)]["private"])

    def repo_files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path -> content of every file at `revision` (a branch name or commit sha)."""
        with self._lock:
            repo = self._state["repos"].get(_key(repo_type, repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id}")
            commit = self._find_commit(repo, revision)
            if commit is None:
                raise KeyError(f"no revision {revision!r} in {repo_type} repo {repo_id}")
            files = dict(commit["files"])
        return {path: self._read_object(entry["sha256"]) for path, entry in files.items()}

    def commits(self, repo_type: str, repo_id: str) -> list[dict[str, Any]]:
        """The history of `main`, oldest first: dicts with oid, parent, title, message, author,
        date and files (path -> {sha256, size, lfs})."""
        with self._lock:
            repo = self._state["repos"].get(_key(repo_type, repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id}")
            return json.loads(json.dumps(repo["commits"]))

    def seed_repo(
        self,
        repo_type: str,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        private: bool = False,
        message: str = "Seed files",
    ) -> str:
        """Create the repo if needed and commit `files` to `main` directly; returns the sha.
        Files go to LFS by the same rule as preupload (patterns, binary or large)."""
        with self._lock:
            key = _key(repo_type, repo_id)
            if key not in self._state["repos"]:
                self._create_repo(repo_type, repo_id, private)
            repo = self._state["repos"][key]
            head = repo["commits"][-1]
            new_files = dict(head["files"])
            for path, content in files.items():
                lfs = self._upload_mode(head, path, len(content), content[:512]) == "lfs"
                new_files[path] = self._store_file(content, lfs)
                if lfs:
                    repo["lfs_objects"][new_files[path]["sha256"]] = len(content)
            commit = self._new_commit(repo, new_files, message, "", repo_id.split("/")[0])
            self._save()
            return commit["oid"]

    # ----- storage -----

    def _object_path(self, sha256: str) -> Path:
        return self.storage / "objects" / sha256[:2] / sha256[2:]

    def _write_object(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self._object_path(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
            temporary.write_bytes(content)
            os.replace(temporary, path)
        return sha256

    def _read_object(self, sha256: str) -> bytes:
        return self._object_path(sha256).read_bytes()

    def _store_file(self, content: bytes, lfs: bool) -> dict[str, Any]:
        sha256 = self._write_object(content)
        oid = git_blob_sha1(lfs_pointer(sha256, len(content)) if lfs else content)
        return {"sha256": sha256, "size": len(content), "lfs": lfs, "oid": oid}

    def _save(self) -> None:
        state_file = self.storage / "state.json"
        temporary = state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._state))
        os.replace(temporary, state_file)

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> dict[str, Any]:
        repo = {
            "type": repo_type,
            "id": repo_id,
            "private": private,
            "created_at": _now(),
            "commits": [],
            "lfs_objects": {},
        }
        self._state["repos"][_key(repo_type, repo_id)] = repo
        gitattributes = self._store_file(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
        self._new_commit(repo, {".gitattributes": gitattributes}, "initial commit", "", "system")
        return repo

    def _new_commit(
        self, repo: dict, files: dict[str, Any], title: str, message: str, author: str
    ) -> dict[str, Any]:
        parent = repo["commits"][-1]["oid"] if repo["commits"] else None
        date = _now()
        fingerprint = json.dumps(
            [repo["type"], repo["id"], parent, files, title, message, author, date],
            sort_keys=True,
        )
        commit = {
            "oid": hashlib.sha1(fingerprint.encode()).hexdigest(),
            "parent": parent,
            "title": title,
            "message": message,
            "author": author,
            "date": date,
            "files": files,
        }
        repo["commits"].append(commit)
        return commit

    @staticmethod
    def _find_commit(repo: dict, revision: str) -> dict | None:
        if revision in ("main", "refs/heads/main"):
            return repo["commits"][-1]
        if _HEX40.fullmatch(revision):
            for commit in repo["commits"]:
                if commit["oid"] == revision:
                    return commit
        return None

    # ----- access control -----

    def _identity(self, headers) -> tuple[str, str] | None:
        header = headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        identity = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return identity

    def member_of(self, user: str, namespace: str) -> bool:
        """Whether `user` acts in `namespace`: their own, or an org they belong to."""
        return namespace == user or user in self.orgs.get(namespace, ())

    def _visible_repo(self, repo_type: str, repo_id: str, identity) -> dict[str, Any]:
        repo = self._state["repos"].get(_key(repo_type, repo_id))
        owner = repo_id.split("/")[0]
        hidden = identity is None or not self.member_of(identity[0], owner)
        if repo is None or (repo["private"] and hidden):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _require_writer(self, identity, namespace: str, what: str) -> None:
        if identity is None:
            raise HubError(401, f"You must be authenticated with a 'write' token to {what}")
        user, role = identity
        if role != "write":
            raise HubError(
                403,
                f"Your token for {user} has the 'read' role: it cannot {what}. "
                "Use a token with the 'write' role.",
            )
        if not self.member_of(user, namespace):
            raise HubError(
                403, f"You don't have the rights to {what}: {user} cannot write to '{namespace}'"
            )

    def _writable_repo(self, repo_type: str, repo_id: str, identity, what: str) -> dict:
        if identity is None:
            raise HubError(401, f"You must be authenticated with a 'write' token to {what}")
        repo = self._visible_repo(repo_type, repo_id, identity)
        self._require_writer(identity, repo_id.split("/")[0], what)
        return repo

    def _resolve(self, repo: dict, revision: str) -> dict[str, Any]:
        commit = self._find_commit(repo, revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ----- routing -----

    def _handle(self, method: str, raw_path: str, query: dict, headers, body: bytes) -> _Reply:
        segments = raw_path.split("/")[1:]
        with self._lock:
            identity = self._identity(headers)
            if segments[:1] == ["api"]:
                return self._handle_api(method, segments[1:], query, identity, body)
            if segments[:1] == ["__lfs"] and len(segments) == 2 and method == "PUT":
                return self._lfs_put(unquote(segments[1]), body)
            repo_type = "model"
            if segments[:1] in (["datasets"], ["spaces"]):
                repo_type = _PLURAL_TO_TYPE[segments[0]]
                segments = segments[1:]
            if (
                len(segments) == 6
                and segments[1].endswith(".git")
                and segments[2:5] == ["info", "lfs", "objects"]
                and method == "POST"
            ):
                repo_id = unquote(f"{segments[0]}/{segments[1].removesuffix('.git')}")
                if segments[5] == "batch":
                    return self._lfs_batch(repo_type, repo_id, identity, body)
                if segments[5] == "verify":
                    return self._lfs_verify(repo_type, repo_id, identity, body)
            if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id = unquote(f"{segments[0]}/{segments[1]}")
                path = unquote("/".join(segments[4:]))
                return self._resolve_file(
                    repo_type, repo_id, unquote(segments[3]), path, identity, headers
                )
        raise HubError(404, f"Not found: {method} {raw_path}")

    def _handle_api(
        self, method: str, segments: list[str], query: dict, identity, body: bytes
    ) -> _Reply:
        if segments[:1] == ["jobs"]:
            try:
                answer = self.jobs.handle(method, segments[1:], query, identity, body)
            except JobsError as error:
                raise HubError(error.status, error.message, error.code) from None
            return _Reply(*answer)
        if segments == ["whoami-v2"] and method == "GET":
            return self._whoami(identity)
        if segments == ["repos", "create"] and method == "POST":
            return self._create(identity, _json_body(body))
        if segments == ["repos", "delete"] and method == "DELETE":
            return self._delete(identity, _json_body(body))
        if segments == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(_json_body(body))
        if len(segments) < 3 or segments[0] not in _PLURAL_TO_TYPE:
            raise HubError(404, f"Not found: {method} /api/{'/'.join(segments)}")
        repo_type = _PLURAL_TO_TYPE[segments[0]]
        repo_id = unquote(f"{segments[1]}/{segments[2]}")
        action, rest = (segments[3], segments[4:]) if len(segments) > 3 else ("", [])
        revision = unquote("/".join(rest)) if rest else "main"
        if method == "GET" and action == "":
            return self._info(repo_type, repo_id, "main", identity)
        if method == "GET" and action == "revision" and rest:
            return self._info(repo_type, repo_id, revision, identity)
        if method == "GET" and action == "tree" and rest:
            path = unquote("/".join(rest[1:])).strip("/")
            return self._tree(repo_type, repo_id, unquote(rest[0]), path, query, identity)
        if method == "GET" and action == "commits":
            return self._commit_list(repo_type, repo_id, revision, identity)
        if method == "GET" and action == "refs":
            return self._refs(repo_type, repo_id, identity)
        if method == "POST" and action == "paths-info" and rest:
            return self._paths_info(repo_type, repo_id, revision, identity, body)
        if method == "POST" and action == "preupload" and rest:
            return self._preupload(repo_type, repo_id, revision, identity, body, query)
        if method == "POST" and action == "commit" and rest:
            return self._commit(repo_type, repo_id, revision, identity, body, query)
        raise HubError(404, f"Not found: {method} /api/{'/'.join(segments)}")

    # ----- endpoints -----

    def _whoami(self, identity) -> _Reply:
        if identity is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        user, role = identity
        return _json_reply(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.capitalize(),
                "avatarUrl": f"/avatars/{user}.svg",
                "email": f"{user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "orgs": [
                    {"type": "org", "name": org, "roleInOrg": "write"}
                    for org, members in sorted(self.orgs.items())
                    if user in members
                ],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": f"{user}-{role}", "role": role},
                },
            }
        )

    def _create(self, identity, payload: dict) -> _Reply:
        repo_type = payload.get("type") or "model"
        name = payload.get("name")
        if repo_type not in REPO_TYPES or not isinstance(name, str) or not _NAME.fullmatch(name):
            raise HubError(400, f"Invalid repo type or name: {repo_type!r}, {name!r}")
        if identity is None:
            raise HubError(401, "You must be authenticated with a 'write' token to create a repo")
        namespace = payload.get("organization") or identity[0]
        repo_id = f"{namespace}/{name}"
        self._require_writer(identity, namespace, f"create a {repo_type} under '{namespace}'")
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        if _key(repo_type, repo_id) in self._state["repos"]:
            raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
        private = payload.get("visibility") == "private" or payload.get("private") is True
        self._create_repo(repo_type, repo_id, private)
        self._save()
        return _json_reply({"url": url, "name": repo_id, "id": repo_id})

    def _delete(self, identity, payload: dict) -> _Reply:
        repo_type = payload.get("type") or "model"
        if identity is None:
            raise HubError(401, "You must be authenticated with a 'write' token to delete a repo")
        repo_id = f"{payload.get('organization') or identity[0]}/{payload.get('name')}"
        self._writable_repo(repo_type, repo_id, identity, f"delete {repo_id}")
        del self._state["repos"][_key(repo_type, repo_id)]
        self._save()
        return _json_reply({})

    @staticmethod
    def _validate_yaml(payload: dict) -> _Reply:
        content = payload.get("content")
        try:
            _front_matter(content.encode() if isinstance(content, str) else b"")
        except Exception as error:  # yaml errors: answer like the Hub, with a list of messages
            return _json_reply({"errors": [{"message": f"Invalid YAML: {error}"}]}, 400)
        return _json_reply({})

    def _entry(self, path: str, entry: dict) -> dict[str, Any]:
        item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
            item["lfs"] = {
                "oid": entry["sha256"],
                "size": entry["size"],
                "pointerSize": pointer_size,
            }
        return item

    @staticmethod
    def _folder(path: str, files: dict) -> dict[str, Any]:
        inside = sorted((p, e["oid"]) for p, e in files.items() if p.startswith(path + "/"))
        return {
            "type": "directory",
            "oid": hashlib.sha1(repr(inside).encode()).hexdigest(),
            "path": path,
        }

    @staticmethod
    def _folders(files: dict) -> set[str]:
        folders = set()
        for path in files:
            parts = path.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return folders

    def _last_commit(self, repo: dict, commit: dict, path: str) -> dict[str, str]:
        """The newest commit, up to `commit`, that changed `path` (a file or a folder)."""
        history = repo["commits"][: repo["commits"].index(commit) + 1]

        def view(files: dict) -> list:
            return sorted(
                (p, e["oid"]) for p, e in files.items() if p == path or p.startswith(path + "/")
            )

        found = history[0]
        for older, newer in itertools.pairwise(history):
            if view(older["files"]) != view(newer["files"]):
                found = newer
        return {"id": found["oid"], "title": found["title"], "date": found["date"]}

    def _info(self, repo_type: str, repo_id: str, revision: str, identity) -> _Reply:
        repo = self._visible_repo(repo_type, repo_id, identity)
        commit = self._resolve(repo, revision)
        files = commit["files"]
        siblings = []
        for path in sorted(files):
            entry = files[path]
            sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry["lfs"]:
                pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
                sibling["lfs"] = {
                    "sha256": entry["sha256"],
                    "size": entry["size"],
                    "pointerSize": pointer_size,
                }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(_key(repo_type, repo_id).encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit["oid"],
            "createdAt": repo["created_at"],
            "lastModified": commit["date"],
            "private": repo["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        if "README.md" in files:
            try:
                card = _front_matter(self._read_object(files["README.md"]["sha256"]))
            except Exception:
                card = None
            if card is not None:
                info["cardData"] = card
        return _json_reply(info)

    def _tree(
        self, repo_type: str, repo_id: str, revision: str, path: str, query: dict, identity
    ) -> _Reply:
        repo = self._visible_repo(repo_type, repo_id, identity)
        commit = self._resolve(repo, revision)
        files = commit["files"]
        folders = self._folders(files)
        if path and path not in folders:
            raise HubError(
                404,
                f"{path} does not exist on {revision}",
                "EntryNotFound",
                {"X-Repo-Commit": commit["oid"]},
            )
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""

        def wanted(item: str) -> bool:
            return item.startswith(prefix) and (recursive or "/" not in item[len(prefix) :])

        items = [self._folder(p, files) for p in sorted(folders) if wanted(p)]
        items += [self._entry(p, files[p]) for p in sorted(files) if wanted(p)]
        if expand:
            for item in items:
                item["lastCommit"] = self._last_commit(repo, commit, item["path"])
        return _json_reply(items, headers={"X-Repo-Commit": commit["oid"]})

    def _paths_info(
        self, repo_type: str, repo_id: str, revision: str, identity, body: bytes
    ) -> _Reply:
        repo = self._visible_repo(repo_type, repo_id, identity)
        commit = self._resolve(repo, revision)
        files = commit["files"]
        if body.lstrip().startswith(b"{"):  # JSON, or a form as the client sends
            payload = _json_body(body)
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HubError(400, "paths must be a list of strings")
        folders = self._folders(files)
        items = []
        for path in dict.fromkeys(p.strip("/") for p in paths):
            if path in files:
                items.append(self._entry(path, files[path]))
            elif path in folders:
                items.append(self._folder(path, files))
            else:
                continue
            if expand:
                items[-1]["lastCommit"] = self._last_commit(repo, commit, path)
        return _json_reply(items, headers={"X-Repo-Commit": commit["oid"]})

    def _commit_list(self, repo_type: str, repo_id: str, revision: str, identity) -> _Reply:
        repo = self._visible_repo(repo_type, repo_id, identity)
        commit = self._resolve(repo, revision)
        history = repo["commits"][: repo["commits"].index(commit) + 1]
        return _json_reply(
            [
                {
                    "id": c["oid"],
                    "title": c["title"],
                    "message": c["message"],
                    "authors": [{"user": c["author"], "avatar": None}],
                    "date": c["date"],
                }
                for c in reversed(history)
            ]
        )

    def _refs(self, repo_type: str, repo_id: str, identity) -> _Reply:
        repo = self._visible_repo(repo_type, repo_id, identity)
        head = repo["commits"][-1]["oid"]
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": head}
        return _json_reply({"branches": [branch], "converts": [], "tags": []})

    def _upload_mode(self, commit: dict, path: str, size: int, sample: bytes) -> str:
        """'lfs' for large or binary files and paths the repo's .gitattributes puts in LFS."""
        if size > REGULAR_FILE_MAX or b"\0" in sample:
            return "lfs"
        attributes = commit["files"].get(".gitattributes")
        text = (
            self._read_object(attributes["sha256"]).decode("utf-8", errors="replace")
            if attributes is not None
            else DEFAULT_GITATTRIBUTES
        )
        for line in text.splitlines():
            parts = line.split()
            if len(parts) > 1 and "filter=lfs" in parts[1:] and _pattern_matches(parts[0], path):
                return "lfs"
        return "regular"

    def _ignored(self, commit: dict, path: str, gitignore: str | None) -> bool:
        if gitignore is None and ".gitignore" in commit["files"]:
            gitignore = self._read_object(commit["files"][".gitignore"]["sha256"]).decode()
        patterns = [
            line.strip()
            for line in (gitignore or "").splitlines()
            if line.strip() and not line.startswith(("#", "!"))
        ]
        return any(_pattern_matches(pattern, path) for pattern in patterns)

    def _preupload(
        self, repo_type: str, repo_id: str, revision: str, identity, body: bytes, query: dict
    ) -> _Reply:
        repo = self._writable_repo(repo_type, repo_id, identity, f"upload to {repo_id}")
        commit = self._resolve(repo, revision)
        payload = _json_body(body)
        answers = []
        for item in payload.get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample") or "")
            mode = self._upload_mode(commit, path, int(item.get("size", 0)), sample)
            answer = {
                "path": path,
                "uploadMode": mode,
                "shouldIgnore": self._ignored(commit, path, payload.get("gitIgnore")),
            }
            existing = commit["files"].get(path)
            if existing is not None:
                answer["oid"] = existing["sha256"] if existing["lfs"] else existing["oid"]
            answers.append(answer)
        return _json_reply({"files": answers, "commitOid": commit["oid"]})

    def _lfs_batch(self, repo_type: str, repo_id: str, identity, body: bytes) -> _Reply:
        repo = self._writable_repo(repo_type, repo_id, identity, f"upload to {repo_id}")
        payload = _json_body(body)
        if payload.get("operation") != "upload":
            raise HubError(400, "This hub only supports LFS uploads (downloads use /resolve)")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "This hub only supports the 'basic' LFS transfer")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item.get("oid"), item.get("size")
            if not isinstance(oid, str) or not _HEX64.fullmatch(oid) or not isinstance(size, int):
                objects.append(
                    {
                        "oid": str(oid),
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "oid must be a sha256, size an int"},
                    }
                )
            elif repo["lfs_objects"].get(oid) == size and self._object_path(oid).exists():
                objects.append({"oid": oid, "size": size})  # already stored: no actions
            else:
                ticket = secrets.token_urlsafe(16)
                self._tickets[ticket] = (_key(repo_type, repo_id), oid, size)
                git_url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}.git"
                objects.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": f"{self.url}/__lfs/{ticket}"},
                            "verify": {"href": f"{git_url}/info/lfs/objects/verify"},
                        },
                    }
                )
        return _json_reply(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_put(self, ticket: str, body: bytes) -> _Reply:
        target = self._tickets.get(ticket)
        if target is None:
            raise HubError(403, "Unknown or expired upload URL")
        key, oid, size = target
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} and size {size}")
        self._write_object(body)
        repo = self._state["repos"].get(key)
        if repo is not None:
            repo["lfs_objects"][oid] = size
            self._save()
        del self._tickets[ticket]
        return _Reply(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, identity, body: bytes) -> _Reply:
        repo = self._writable_repo(repo_type, repo_id, identity, f"upload to {repo_id}")
        payload = _json_body(body)
        oid, size = payload.get("oid"), payload.get("size")
        if repo["lfs_objects"].get(oid) != size or not self._object_path(str(oid)).exists():
            raise HubError(404, f"LFS object {oid} of size {size} was not uploaded")
        return _json_reply({"success": True})

    def _commit(
        self, repo_type: str, repo_id: str, revision: str, identity, body: bytes, query: dict
    ) -> _Reply:
        repo = self._writable_repo(repo_type, repo_id, identity, f"commit to {repo_id}")
        if query.get("create_pr", ["0"])[0] not in ("0", "false", ""):
            raise HubError(400, "Pull requests are not supported by the test hub")
        if revision not in ("main", "refs/heads/main"):
            raise HubError(
                404, f"Invalid rev id: {revision} (only 'main' is a branch)", "RevisionNotFound"
            )
        try:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except ValueError as error:
            raise HubError(400, f"The commit body is not ndjson: {error}") from error
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0].get("value") or {}
        if not isinstance(header.get("summary"), str) or not header["summary"].strip():
            raise HubError(400, "The commit header needs a summary")
        head = repo["commits"][-1]
        parent = header.get("parentCommit")
        if parent is not None and parent != head["oid"]:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head["files"])
        for line in lines[1:]:
            kind, value = line.get("key"), line.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or not path or path.startswith("/") or ".." in path:
                raise HubError(400, f"Invalid path in commit: {path!r}")
            if kind == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"{path}: only base64 content is supported")
                content = base64.b64decode(value.get("content") or "")
                if len(content) > REGULAR_FILE_MAX or b"\0" in content[:8000]:
                    raise HubError(
                        400,
                        f"Your push was rejected because {path} is a binary or large file: "
                        "upload it with LFS",
                    )
                files[path] = self._store_file(content, lfs=False)
            elif kind == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if repo["lfs_objects"].get(oid) != size or not self._object_path(str(oid)).exists():
                    raise HubError(
                        400,
                        f"Your push was rejected because the LFS object {oid} for {path} "
                        "was never uploaded",
                    )
                pointer = lfs_pointer(oid, size)
                files[path] = {
                    "sha256": oid,
                    "size": size,
                    "lfs": True,
                    "oid": git_blob_sha1(pointer),
                }
            elif kind == "deletedFile":
                if path not in files:
                    raise HubError(
                        404,
                        f"{path} does not exist",
                        "EntryNotFound",
                        {"X-Repo-Commit": head["oid"]},
                    )
                del files[path]
            elif kind == "deletedFolder":
                inside = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                if not inside:
                    raise HubError(
                        404,
                        f"{path} does not exist",
                        "EntryNotFound",
                        {"X-Repo-Commit": head["oid"]},
                    )
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {kind!r}")
        commit = self._new_commit(
            repo, files, header["summary"], header.get("description") or "", identity[0]
        )
        self._save()
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}/commit/{commit['oid']}"
        return _json_reply(
            {"commitOid": commit["oid"], "commitUrl": url, "success": True, "hookOutput": ""}
        )

    def _resolve_file(
        self, repo_type: str, repo_id: str, revision: str, path: str, identity, headers
    ) -> _Reply:
        repo = self._visible_repo(repo_type, repo_id, identity)
        commit = self._resolve(repo, revision)
        entry = commit["files"].get(path)
        if entry is None:
            raise HubError(
                404,
                f"{path} does not exist on {revision}",
                "EntryNotFound",
                {"X-Repo-Commit": commit["oid"]},
            )
        content = self._read_object(entry["sha256"])
        etag = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        reply_headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "X-Repo-Commit": commit["oid"],
        }
        if entry["lfs"]:
            reply_headers["X-Linked-Etag"] = etag
            reply_headers["X-Linked-Size"] = str(entry["size"])
        wanted = _byte_range(headers.get("Range"), len(content))
        if wanted is None:
            return _Reply(200, content, reply_headers)
        start, end = wanted
        if start >= len(content) or start > end:
            raise HubError(
                416,
                f"Range not satisfiable for {len(content)} bytes",
                headers={"Content-Range": f"bytes */{len(content)}"},
            )
        end = min(end, len(content) - 1)
        reply_headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        return _Reply(206, content[start : end + 1], reply_headers)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) from a single `bytes=` range, or None for no (usable) range."""
    if not header or size == 0:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        return max(size - int(last), 0), size - 1
    return int(first), int(last) if last else size - 1


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError as error:
        raise HubError(400, f"The request body is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise HubError(400, "The request body must be a JSON object")
    return payload


def _key(repo_type: str, repo_id: str) -> str:
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, not {repo_type!r}")
    return f"{repo_type}s/{repo_id}"


# ----- helpers for tests -----


def running_hub(
    tmp_path: str | os.PathLike, tokens: Mapping[str, tuple[str, str]] | None = None
) -> HubServer:
    """A started HubServer storing under `tmp_path/hub`; the caller stops it. In a fixture:

    @pytest.fixture
    def hub(tmp_path):
        server = running_hub(tmp_path)
        yield server
        server.stop()
    """
    return HubServer(Path(tmp_path) / "hub", tokens or DEFAULT_TOKENS).start()


def hub_env(
    server: HubServer, token: str | None = None, *, cache_dir: str | os.PathLike
) -> dict[str, str]:
    """A complete environment for a client subprocess pointed at `server`.

    It is the current environment without any HF_* / HUGGING_FACE_* variable (so HF_HUB_OFFLINE,
    a stray HF_TOKEN or a real cache never leak in), plus the endpoint, Xet disabled (the client
    would otherwise upload through Xet), caches under `cache_dir` and HF_TOKEN when given.
    """
    cache = Path(cache_dir)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_", "TRANSFORMERS_"))
    }
    env.update(
        {
            "HF_ENDPOINT": server.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "3",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10",
            "HF_HOME": str(cache / "hf-home"),
            "HF_HUB_CACHE": str(cache / "hf-home" / "hub"),
            "HF_DATASETS_CACHE": str(cache / "hf-home" / "datasets"),
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
        }
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def hub_cli(
    server: HubServer, cache_dir: str | os.PathLike, *args: str, token: str | None
) -> subprocess.CompletedProcess:
    """`python -m hub ARGS` as a user runs it against `server`, with only `token` (as HF_TOKEN);
    no token the server knows ever reaches what the user sees."""
    done = subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=ROOT,
        env=hub_env(server, token, cache_dir=cache_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    for secret in server._tokens:
        assert secret not in done.stdout + done.stderr
    return done


def run_python(
    code: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python -c code` from the project root with exactly `env` (see `hub_env`)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class HangUpHub:
    """A Hub that is down in the way a dropped connection is: it takes each connection and
    closes it unanswered, counting them (how many tries a client made)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._hang_up, daemon=True).start()

    def _hang_up(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._listener.close()


# --- a Space's sign-in, as the app sees it ---------------------------------------------------

OAUTH_SECRET = "oauth-client-secret-of-the-space"


def session_cookie(username: str, token: str, orgs: tuple[str, ...] = ()) -> str:
    """The cookie Gradio's SessionMiddleware sets after a Hugging Face sign-in on a Space
    (gradio.oauth: the key is sha256 of OAUTH_CLIENT_SECRET + "-v4"), holding the userinfo
    and access token the Hub's OAuth returns. Gradio reads it to inject gr.OAuthProfile and
    gr.OAuthToken, exactly as after a real sign-in."""
    import itsdangerous

    userinfo = {"sub": f"id-{username}", "name": username.title(), "preferred_username": username,
                "profile": f"https://huggingface.co/{username}", "picture": "",
                "orgs": [{"preferred_username": org, "name": org} for org in orgs]}  # fmt: skip
    session = {"oauth_info": {"access_token": token, "token_type": "bearer", "scope": "openid "
               "profile contribute-repos", "expires_at": int(time.time()) + 3600,
               "userinfo": userinfo}}  # fmt: skip
    key = hashlib.sha256((OAUTH_SECRET + "-v4").encode()).hexdigest()
    data = base64.b64encode(json.dumps(session).encode())
    return "session=" + itsdangerous.TimestampSigner(key).sign(data).decode()


def space_env(hub, **extra) -> dict[str, str]:
    """What a Space sets (SYSTEM=spaces is how Gradio knows it runs on one)."""
    return {
        "SYSTEM": "spaces", "SPACE_ID": "alice/title-dpo", "SPACE_AUTHOR_NAME": "alice",
        "OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": OAUTH_SECRET,
        "OAUTH_SCOPES": "openid profile contribute-repos", "OPENID_PROVIDER_URL": hub.url,
        "TITLE_DPO_SECRET": "s" * 32, **extra,
    }  # fmt: skip
