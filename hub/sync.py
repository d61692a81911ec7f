"""Keep the votes safe where the disk is not: mirror them to a Hub dataset repo, restore at start.

A Space's disk is wiped on restart, so the app mirrors its votes to a dataset repo:

- each process appends its new votes to its own shard, `votes/{shard}.jsonl`, one JSON record
  a line (`pipeline.records.vote_record`); a shard only ever grows, and no process touches
  another's, so replicas and restarts never conflict;
- a sync appends the votes not yet in any shard and uploads the shard, on a schedule and once
  more at shutdown; a failed upload is retried at the next sync (the lines are already in the
  local shard);
- at start-up every shard is read back and its votes restored, deduplicated by vote id; if
  the Hub cannot be reached then, each sync tries again first, and sends nothing before;
- the on-policy iterations (`pipeline.iterations`: each one's record and its pool's pairs)
  and the evaluation rounds (`pipeline.rounds`: each one's models and titles) go the same
  way, as `iterations/{shard}.json` and `rounds/{shard}.json`, uploaded when they change and
  restored before the votes, so that their votes count for them again and the pairs nobody
  voted on yet are served again;
- how each pool is served (its priority, retired or not: `pools/{shard}.json`), set again
  once the votes are back, the latest record of a pool last;
- the votes their voters took back (`retractions/{shard}.json`): a shard never loses a line,
  so these are read first and kept out of the restored votes.

`pipeline.mirror` makes the records of iterations, rounds and pools, and puts all of them back
in that order; this module moves them to and from the Hub.

`status()` says when the last sync succeeded, for the UI.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.auth import TRANSPORT_ERRORS, check_repo_id, hub_failure
from pipeline import mirror
from pipeline.errors import UserError
from pipeline.records import vote_record
from pipeline.votes import VoteStore
from pipeline.wording import counted

log = logging.getLogger("hub.sync")

SHARD_FOLDER = "votes"
SYNC_MINUTES = 5.0
SYNC_AGAIN = "The next sync tries again; the votes are kept here meanwhile"
REPO_README = """---
license: mit
tags:
- preference
- votes
---

# Votes mirrored by the title-dpo app

Append-only JSON-lines shards under `votes/`, one per app process. Each line is one blind A/B
vote: `vote_id`, `voter`, `idea`, `title_a`, `title_b`, `choice` (`a_better`, `b_better`, `tie`,
`both_bad`), `shown_left` (which title was on the left), `created_at` (Unix time),
`seconds_taken`. The app restores them at start-up; `python -m hub push-dataset --votes ...`
turns them into a preference dataset. `iterations/` holds the on-policy iterations (their
pairs, the policy that wrote them and what it was trained into) and `rounds/` the evaluation
rounds (their models and titles), `pools/` how each pool is served, `retractions/` the votes
their voters took back (a shard keeps a vote once written: these stay out); all restored with
the votes.
"""
ITERATIONS_FOLDER = "iterations"
ROUNDS_FOLDER = "rounds"
POOLS_FOLDER = "pools"  # how each pool is served: priority, retired
RETRACTIONS_FOLDER = "retractions"  # votes their voters took back (the Vote tab's Undo)
# beside the votes, by shard
RECORD_FOLDERS = (ITERATIONS_FOLDER, ROUNDS_FOLDER, POOLS_FOLDER, RETRACTIONS_FOLDER)
POLICIES_FOLDER = "policies"  # each trained iteration policy's loadable files, by iteration
POLICY_SUFFIXES = {".json", ".safetensors", ".jinja", ".txt", ".model"}


@dataclass(frozen=True)
class SyncStatus:
    repo_id: str
    last_success: float | None  # Unix time of the last sync that reached the Hub
    votes_mirrored: int  # votes in this process's view of the mirror, less those taken back
    restored: int  # votes put back into the store at start-up
    error: str | None  # the last failure, cleared by the next success

    def describe(self) -> str:
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.last_success))
            if self.last_success
            else "not yet"
        )
        line = (
            f"Votes are mirrored to the Hub dataset `{self.repo_id}`: last sync {when}, "
            f"{counted(self.votes_mirrored, 'vote')} there ({self.restored} restored at start-up)."
        )
        return f"{line} Last attempt failed: {self.error}" if self.error else line


class VoteMirror:
    """Mirrors one store's votes to `repo_id` (created private if missing)."""

    def __init__(self, store: VoteStore, repo_id: str, token: str, folder: str | Path) -> None:
        self.store = store
        self.repo_id = check_repo_id(repo_id, "dataset")
        if "/" not in self.repo_id:
            raise UserError(f"the votes repo needs a namespace: 'your-name/{self.repo_id}'")
        self._token = token
        self.shard = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.local_shard = Path(folder) / "hub-sync" / f"{self.shard}.jsonl"
        self.local_records = {  # the iterations, rounds, pools: this process's file of each
            folder: self.local_shard.with_suffix(f".{folder}.json") for folder in RECORD_FOLDERS
        }
        self._records_sent: dict[str, str] = {}  # each kind's records as last uploaded
        self._policies_sent: set[str] = set()  # iterations whose trained policy is there
        self._folder = Path(folder)
        self._known: set[str] = set()  # vote ids already in some shard (ours or restored)
        self._lock = threading.Lock()  # one sync at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_success: float | None = None
        self._restored = 0
        self._restored_ok = False
        self._error: str | None = None

    # -- the Hub side ------------------------------------------------------------------------

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(token=self._token)

    def restore(self) -> int:
        """Read every shard in the repo and put its votes back; return how many were new."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        api = self._api()
        try:
            try:
                # The repo's info names its files, in one request the client does not retry:
                # with the Hub down, a file listing retries with backoff for ~23 s, and the
                # app would not serve until then (start-up restores before serving).
                files = [f.rfilename for f in api.dataset_info(self.repo_id).siblings or []]
            except RepositoryNotFoundError:
                files = []  # nothing mirrored yet: the first sync creates the repo
            records, bad = [], 0
            kept: dict[str, list[Any]] = {folder: [] for folder in RECORD_FOLDERS}
            for name in sorted(f for f in files if f.startswith(f"{SHARD_FOLDER}/")):
                path = hf_hub_download(self.repo_id, name, repo_type="dataset", token=self._token)
                shard_records, shard_bad = _read_shard(Path(path))
                records += shard_records
                bad += shard_bad
            for folder, found in kept.items():
                for name in sorted(f for f in files if f.startswith(f"{folder}/")):
                    path = hf_hub_download(self.repo_id, name, repo_type="dataset",
                                           token=self._token)  # fmt: skip
                    listed, unreadable = _read_records(Path(path))
                    found += listed
                    bad += unreadable
        except (HfHubHTTPError, *TRANSPORT_ERRORS) as exc:
            self._error = hub_failure(exc, f"restore votes from {self.repo_id}", self._token,
                                      again=SYNC_AGAIN)  # fmt: skip
            raise UserError(self._error) from None
        policies = self._restore_policies(files)
        iterations = _with_local_policies(kept[ITERATIONS_FOLDER], policies)
        restored = mirror.restore(self.store, iterations, kept[ROUNDS_FOLDER], records,
                                  kept[POOLS_FOLDER], kept[RETRACTIONS_FOLDER])  # fmt: skip
        added = restored.votes
        if bad or restored.rejected:
            log.warning(
                "restoring votes from %s: left out %d unreadable lines and %d invalid records",
                self.repo_id,
                bad,
                restored.rejected,
            )
        with self._lock:
            self._known.update(
                r["vote_id"]
                for r in records
                if isinstance(r, dict) and isinstance(r.get("vote_id"), str)
            )
            self._restored = added
            self._restored_ok = True
            self._last_success = time.time()
            self._error = None
        return added

    def _restore_policies(self, files: list[str]) -> dict[str, Path]:
        """The mirrored trained policies this disk lacks, each downloaded into
        DATA/policies/NAME: {iteration name: its folder}."""
        from huggingface_hub import hf_hub_download

        by_name: dict[str, list[str]] = {}
        for path in files:
            parts = path.split("/")
            if len(parts) == 3 and parts[0] == POLICIES_FOLDER:
                by_name.setdefault(parts[1], []).append(path)
        here = {i.name for i in self.store.iterations() if i.trained and Path(i.trained).is_dir()}
        self._policies_sent.update(by_name)
        found = {}
        for name, paths in by_name.items():
            if name in here:  # this disk kept it: nothing to download
                continue
            target = self._folder / POLICIES_FOLDER / name
            for path in paths:
                if not (target / Path(path).name).is_file():
                    cached = hf_hub_download(self.repo_id, path, repo_type="dataset",
                                             token=self._token)  # fmt: skip
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(cached, target / Path(path).name)
            found[name] = target
        return found

    def _unsent_policies(self) -> list[tuple[str, list[Path]]]:
        """(iteration, the files to send) of each trained policy not mirrored yet."""
        unsent = []
        for info in self.store.iterations():
            folder = Path(info.trained) if info.trained else None
            if folder is None or info.name in self._policies_sent or not folder.is_dir():
                continue
            files = [p for p in sorted(folder.iterdir())
                     if p.is_file() and p.suffix in POLICY_SUFFIXES]  # fmt: skip
            if any(p.suffix == ".safetensors" for p in files):
                unsent.append((info.name, files))
        return unsent

    def sync(self) -> bool:
        """Append the votes no shard has yet, then upload this process's shard. Never raises
        for a Hub failure: it is kept in `status()` and the next sync tries again."""
        from huggingface_hub.errors import HfHubHTTPError

        if not self._restored_ok:
            # Until the mirror has been read, this process cannot know which votes it already
            # holds (the Hub was down at start-up): read it first, or wait for the next sync.
            try:
                self.restore()
            except UserError:
                return False
        with self._lock:
            new = [vote_record(v) for v in self.store.votes() if v.vote_id not in self._known]
            if new:
                self.local_shard.parent.mkdir(parents=True, exist_ok=True)
                with self.local_shard.open("a", encoding="utf-8") as shard:
                    shard.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
                    shard.flush()
                self._known.update(r["vote_id"] for r in new)
            changed = self._write_changed_records()
            policies = self._unsent_policies()
            nothing_new = not new and not changed and not policies and self._error is None
            if nothing_new or not (self.local_shard.exists() or changed or policies):
                return True  # nothing new since the last successful upload
            try:
                self._upload()
                self._records_sent.update(changed)
                self._upload_policies(policies)
            except (HfHubHTTPError, *TRANSPORT_ERRORS) as exc:
                self._error = hub_failure(exc, f"sync votes to {self.repo_id}", self._token,
                                          again=SYNC_AGAIN)  # fmt: skip
                return False
            self._last_success, self._error = time.time(), None
            return True

    def _upload(self) -> None:
        api = self._api()
        api.create_repo(self.repo_id, repo_type="dataset", private=True, exist_ok=True)
        if "README.md" not in api.list_repo_files(self.repo_id, repo_type="dataset"):
            api.upload_file(
                path_or_fileobj=REPO_README.encode(),
                path_in_repo="README.md",
                repo_id=self.repo_id,
                repo_type="dataset",
            )
        uploads = []
        if self.local_shard.exists():
            count = sum(1 for _ in self.local_shard.open(encoding="utf-8"))
            uploads.append((self.local_shard, f"{SHARD_FOLDER}/{self.shard}.jsonl",
                            f"Votes: shard {self.shard} now holds {count}"))  # fmt: skip
        for folder, local in self.local_records.items():
            # only what changed since it was last sent (or failed to be sent): a commit each
            if local.exists() and local.read_text("utf-8") != self._records_sent.get(folder):
                said = f"{folder.capitalize()}, as shard {self.shard} knows them"
                uploads.append((local, f"{folder}/{self.shard}.json", said))
        for local, path_in_repo, message in uploads:
            api.upload_file(
                path_or_fileobj=str(local),
                path_in_repo=path_in_repo,
                repo_id=self.repo_id,
                repo_type="dataset",
                commit_message=message,
            )

    def _write_changed_records(self) -> dict[str, str]:
        """Each kind of record (iterations, rounds, pools, retractions) that changed since its
        last upload, as JSON, written to this process's file of it: {folder: the JSON}."""
        now = {
            ITERATIONS_FOLDER: mirror.iteration_records(self.store),
            ROUNDS_FOLDER: mirror.round_records(self.store),
            POOLS_FOLDER: mirror.pool_records(self.store),
            RETRACTIONS_FOLDER: mirror.retraction_records(self.store),
        }
        changed = {}
        for folder, records in now.items():
            text = json.dumps(records, ensure_ascii=False)
            if records and text != self._records_sent.get(folder):
                local = self.local_records[folder]
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(text, encoding="utf-8")
                changed[folder] = text
        return changed

    def _upload_policies(self, policies: list[tuple[str, list[Path]]]) -> None:
        """Each trained policy as one commit under policies/NAME/ (once: the weights are big)."""
        from huggingface_hub import CommitOperationAdd

        api = self._api()
        for name, files in policies:
            operations = [
                CommitOperationAdd(f"{POLICIES_FOLDER}/{name}/{p.name}", str(p)) for p in files
            ]
            api.create_commit(self.repo_id, operations, repo_type="dataset",
                              commit_message=f"Iteration {name}: its trained policy")  # fmt: skip
            self._policies_sent.add(name)

    # -- schedule ----------------------------------------------------------------------------

    def start(self, every_seconds: float) -> None:
        """Sync every `every_seconds` in a daemon thread until `close()`."""

        def loop() -> None:
            while not self._stop.wait(every_seconds):
                self.sync()

        self._thread = threading.Thread(target=loop, name="vote-mirror", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the schedule and sync once more (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.sync()

    def status(self) -> SyncStatus:
        # A shard keeps the line of a vote its voter took back: that vote is not there.
        taken_back = {r["vote_id"] for r in mirror.retraction_records(self.store)}
        there = len(self._known - taken_back)
        return SyncStatus(self.repo_id, self._last_success, there, self._restored, self._error)


def _read_shard(path: Path) -> tuple[list[dict], int]:
    """The records of a shard, and how many lines were not JSON (e.g. cut short by a crash
    mid-write): those are left out, and the votes around them still count."""
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return records, bad


def _with_local_policies(records: list[Any], policies: dict[str, Path]) -> list[Any]:
    """The iteration records with each trained policy, and each policy an iteration started
    from that an earlier one trained, pointing at its restored copy in this data folder (the
    original folder was on a disk that is gone, or is another app's)."""
    moved = {}
    for r in records:
        trained = r.get("trained") if isinstance(r, dict) else None
        if isinstance(trained, str) and r.get("name") in policies:
            moved[trained] = str(policies[r["name"]])
    return [
        {**r, **{k: moved[r[k]] for k in ("trained", "policy") if r.get(k) in moved}}
        if isinstance(r, dict) else r
        for r in records
    ]  # fmt: skip


def _read_records(path: Path) -> tuple[list[Any], int]:
    """(the records, 1 if the file is unreadable) of one mirrored iterations or rounds file."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return [], 1
    return (found, 0) if isinstance(found, list) else ([], 1)


def mirror_for_app(store: VoteStore, folder: str | Path) -> VoteMirror | str | None:
    """`mirror_from_env`, for an app that serves either way: a misconfigured mirror is logged
    and comes back as the sentence the Hub tab shows instead of a mirror."""
    try:
        return mirror_from_env(store, folder)
    except UserError as exc:
        log.error("Votes are NOT mirrored to the Hub: %s", exc)
        return f"Votes are **not** mirrored to the Hub: {exc}"


def mirror_from_env(store: VoteStore, folder: str | Path) -> VoteMirror | None:
    """The app's mirror when TITLE_DPO_VOTES_REPO names a dataset repo (as on a Space, with
    HF_TOKEN a secret): restored now, synced every TITLE_DPO_SYNC_MINUTES (default 5) and at
    exit. None when no repo is set. A Hub that cannot be reached at start-up is logged, not
    fatal: the app serves, and the schedule restores and syncs once the Hub answers."""
    import atexit

    from hub.auth import find_token

    repo_id = os.environ.get("TITLE_DPO_VOTES_REPO", "").strip()
    if not repo_id:
        return None
    try:
        token = find_token()
    except UserError:
        raise UserError(
            f"TITLE_DPO_VOTES_REPO is {repo_id!r} but there is no HF_TOKEN to write it with: "
            "add a write token as the Space secret HF_TOKEN"
        ) from None
    raw_minutes = os.environ.get("TITLE_DPO_SYNC_MINUTES") or str(SYNC_MINUTES)
    try:
        minutes = float(raw_minutes)
    except ValueError:
        minutes = 0.0
    if not minutes > 0:
        raise UserError(f"TITLE_DPO_SYNC_MINUTES must be a positive number, not {raw_minutes!r}")
    mirror = VoteMirror(store, repo_id, token, folder)
    try:
        restored = mirror.restore()
        log.info("Restored %d votes from the Hub dataset %s", restored, repo_id)
    except UserError as exc:
        log.warning("%s", exc)
    mirror.start(minutes * 60)
    atexit.register(mirror.close)
    return mirror
