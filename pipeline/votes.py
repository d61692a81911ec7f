"""The vote store: ideas, titles, pairs and blind A/B votes in SQLite.

One file (`votes.db` in a data folder), WAL journal with `synchronous=FULL`, so a vote that
`record_vote` acknowledges has been committed to disk. The schema grows by numbered migrations
(`pipeline.migrations`). A connection is opened per thread (SQLite connections must not
be shared across threads); writes take the lock up front (`BEGIN IMMEDIATE`) so concurrent
voters queue instead of failing. The store's evaluation rounds and on-policy iterations:
`pipeline.round_tables`, `pipeline.iteration_tables`. The store as records for a mirror, and
back: `pipeline.mirror`.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.iteration_tables import IterationTables
from pipeline.migrations import migrate
from pipeline.pairs import Pair, pairs_for_idea, read_pairs_csv
from pipeline.records import (
    SEED_PAIRS,
    VoteRow,
    check_choice,
    check_flag,
    check_voter,
    checked_pair,
)
from pipeline.round_tables import RoundTables
from pipeline.rows import remove_vote, upsert_idea, upsert_pair, upsert_title

DB_NAME = "votes.db"


# The pairs a voter may be served: those of pools not retired, with their pool's priority.
SERVED_PAIRS = """
    SELECT p.id, p.vote_count, coalesce(s.priority, 0) AS priority FROM pairs p
    LEFT JOIN pools s ON s.name = p.pool
    WHERE coalesce(s.retired, 0) = 0
"""


# --- what the store hands out ----------------------------------------------------------------


@dataclass(frozen=True)
class PairView:
    """A pair as a voter sees it: the idea and two titles, nothing about where they came from."""

    pair_id: int
    idea: str
    left: str
    right: str
    shown_left: str  # 'a' or 'b': which of the pair's titles is on the left


@dataclass(frozen=True)
class PoolInfo:
    """A pool as the owner sees it: how big, how voted, and how it is served."""

    name: str
    pairs: int
    votes: int
    unvoted: int  # pairs without a vote yet
    priority: int  # higher is served first
    retired: bool  # no longer served; its votes are kept

    def describe(self) -> str:
        state = "retired" if self.retired else f"priority {self.priority}"
        return f"{self.name}: {self.pairs} pairs, {self.votes} votes ({state})"


@dataclass(frozen=True)
class VoteResult:
    recorded: bool  # False: this voter had already voted on this pair; nothing changed
    vote_id: str | None


@dataclass(frozen=True)
class Retracted:
    """A vote its voter took back: the pair it was on, and the side shown on the left."""

    pair_id: int
    shown_left: str


# --- the store -------------------------------------------------------------------------------


class VoteStore(RoundTables, IterationTables):
    """A vote database at `path` (a file; its folder is created). Its evaluation rounds and
    on-policy iterations are kept by the parts in `pipeline.round_tables` and
    `pipeline.iteration_tables`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Writers in this process queue on a Python lock: SQLite's own busy handler waits by
        # sleeping in growing steps (up to 100 ms), which under many voters is the tail latency.
        self._write_lock = threading.Lock()
        migrate(self.connection())

    @classmethod
    def in_folder(cls, folder: str | Path) -> VoteStore:
        return cls(Path(folder) / DB_NAME)

    @classmethod
    def open_existing(cls, path: str | Path) -> VoteStore:
        """A store that must already exist: a votes.db file or a data folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / DB_NAME
        if not path.is_file():
            raise UserError(f"{path}: no vote database here")
        try:
            return cls(path)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path}: not a vote database ({exc})") from None

    def connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed vote survives a power cut
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """`fn(db)` in one write transaction, the lock taken up front; its result."""
        db = self.connection()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")  # other processes still wait on SQLite's lock
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    # -- pools --------------------------------------------------------------------------------

    def add_pairs(
        self,
        pairs: Iterable[Pair],
        pool: str,
        source: str,
        title_meta: dict[tuple[str, str], dict[str, Any]] | None = None,
    ) -> int:
        """Add pairs (and their ideas and titles) in one transaction; return how many are new.

        `title_meta` maps (idea, title text) to {"raw", "model", "settings"} where known.
        """
        rows = [checked_pair(p) for p in pairs]
        meta = title_meta or {}

        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            added = 0
            for pair in rows:
                idea_id = upsert_idea(db, pair.idea, now)
                a = upsert_title(
                    db, idea_id, pair.title_a, source, meta.get((pair.idea, pair.title_a)), now
                )
                b = upsert_title(
                    db, idea_id, pair.title_b, source, meta.get((pair.idea, pair.title_b)), now
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO pairs (idea_id, title_a, title_b, pool, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (idea_id, a, b, pool, now),
                )
                added += cursor.rowcount
            return added

        return self.write(insert)

    def add_titles(self, titles: Sequence[Any], pool: str = "generated") -> int:
        """Titles of one idea from the Generate tab (pipeline.generation.Title) → their pairs."""
        if not titles:
            raise UserError("no titles to add: generate some first")
        meta = {
            (t.idea, t.text): {"raw": t.raw, "model": t.model, "settings": t.settings}
            for t in titles
        }
        by_idea: dict[str, list[str]] = {}
        for t in titles:
            by_idea.setdefault(t.idea, []).append(t.text)
        pairs = [p for idea, texts in by_idea.items() for p in pairs_for_idea(idea, texts)]
        if not pairs:
            raise UserError("these titles are all the same: there is nothing to compare")
        return self.add_pairs(pairs, pool, "generated", meta)

    def import_pairs_csv(self, path: str | Path, pool: str | None = None) -> int:
        """A `pairs` command output (idea,title_a,title_b); its OUT.titles.jsonl if present."""
        path = Path(path)
        pairs = read_pairs_csv(path)
        meta: dict[tuple[str, str], dict[str, Any]] = {}
        sidecar = path.with_suffix(".titles.jsonl")
        if sidecar.is_file():
            for number, line in enumerate(sidecar.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    t = json.loads(line)
                    meta[(t["idea"], t["text"])] = t
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{sidecar}, line {number}: not a title record") from None
        return self.add_pairs(pairs, pool or f"imported:{path.name}", "imported", meta)

    def import_tutorial_pool(self) -> int:
        """The tutorial's 1,140 pairs (Qwen2.5-7B-Instruct titles), as pool 'tutorial'."""
        meta_model = {"model": "Qwen/Qwen2.5-7B-Instruct (tutorial)"}
        pairs = read_pairs_csv(SEED_PAIRS)
        meta = {(p.idea, t): meta_model for p in pairs for t in (p.title_a, p.title_b)}
        return self.add_pairs(pairs, "tutorial", "tutorial", meta)

    def seed_if_empty(self) -> int:
        """A store without pairs gets the tutorial's as its first pool; how many were added."""
        return self.import_tutorial_pool() if self.counts()["pairs"] == 0 else 0

    def pools(self) -> list[PoolInfo]:
        """Every pool with pairs in it, served first at the top (retired ones last)."""
        rows = self.connection().execute(
            """
            SELECT p.pool, count(*), sum(p.vote_count), sum(p.vote_count = 0),
                   coalesce(s.priority, 0), coalesce(s.retired, 0)
            FROM pairs p LEFT JOIN pools s ON s.name = p.pool
            GROUP BY p.pool
            """
        )
        found = [PoolInfo(n, c, v, u, pr, bool(r)) for n, c, v, u, pr, r in rows.fetchall()]
        return sorted(found, key=lambda p: (p.retired, -p.priority, p.name))

    def set_pool(self, name: str, priority: int | None = None, retired: bool | None = None):
        """Change how the pool `name` is served: its priority (higher first) and whether it is
        retired (no longer served; its pairs and votes stay). Refused for a pool with no pairs."""
        known = {p.name: p for p in self.pools()}
        if name not in known:
            raise UserError(f"no pool {name!r}: pools are {', '.join(known) or 'none yet'}")
        whole = priority is None or (float(priority).is_integer() and abs(priority) <= 1000)
        if not whole:
            raise UserError(f"a pool's priority is a whole number, -1000 to 1000, not {priority}")
        now = known[name]
        changed = (
            now.priority if priority is None else int(priority),
            now.retired if retired is None else bool(retired),
        )

        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO pools (name, priority, retired, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET priority = excluded.priority,"
                " retired = excluded.retired, updated_at = excluded.updated_at",
                (name, changed[0], int(changed[1]), time.time()),
            )

        self.write(upsert)
        return next(p for p in self.pools() if p.name == name)

    def serve_first(self, name: str) -> PoolInfo:
        """Serve the pool `name` before every other pool still served: a priority above
        theirs (at most 1000, the highest a pool may have)."""
        others = [p.priority for p in self.pools() if p.name != name and not p.retired]
        return self.set_pool(name, priority=min(1000, max([0, *others]) + 1), retired=False)

    def pool_ideas(self, pools: Sequence[str]) -> list[str]:
        """The ideas of the pairs in `pools`."""
        if not pools:
            return []
        marks = ", ".join("?" for _ in pools)
        rows = self.connection().execute(
            "SELECT DISTINCT i.text FROM pairs p JOIN ideas i ON i.id = p.idea_id"
            f" WHERE p.pool IN ({marks})",
            tuple(pools),
        )
        return [row[0] for row in rows.fetchall()]

    def pool_titles(self, pool: str) -> list[tuple[str, str, str | None]]:
        """(idea, title, the completion as written) of every title in a pool's pairs."""
        rows = self.connection().execute(
            "SELECT DISTINCT i.text, t.text, t.raw FROM pairs p JOIN ideas i ON i.id = p.idea_id"
            " JOIN titles t ON t.id IN (p.title_a, p.title_b) WHERE p.pool = ? ORDER BY t.id",
            (pool,),
        )
        return [tuple(row) for row in rows.fetchall()]

    # -- voting -------------------------------------------------------------------------------

    def next_pair(
        self, voter: str, skip: Iterable[int] = (), rng: random.Random | None = None
    ) -> PairView | None:
        """A pair this voter has not judged (nor skipped), from the served pools of the
        highest priority that has one left, fewest votes first, sides at random.

        `rng` decides the sides (tests pass a seeded one); the pair is drawn by SQLite.
        """
        voter = check_voter(voter)
        rng = rng or random
        skipped = json.dumps([int(p) for p in skip])
        db = self.connection()
        # Pick the pair in SQL (only its id leaves SQLite), then read its texts.
        picked = db.execute(
            f"""
            WITH served AS ({SERVED_PAIRS}),
            open AS (
                SELECT id, vote_count, priority FROM served
                WHERE id NOT IN (SELECT pair_id FROM votes WHERE voter = :voter)
                AND id NOT IN (SELECT value FROM json_each(:skipped))
            ),
            first AS (SELECT * FROM open WHERE priority = (SELECT max(priority) FROM open))
            SELECT id FROM first WHERE vote_count = (SELECT min(vote_count) FROM first)
            ORDER BY random() LIMIT 1
            """,
            {"voter": voter, "skipped": skipped},
        ).fetchone()
        if picked is None:
            return None
        return self.pair_view(picked[0], "a" if rng.random() < 0.5 else "b")

    def pair_view(self, pair_id: int, shown_left: str) -> PairView:
        """The pair as a voter sees it, its title `shown_left` ('a' or 'b') on the left."""
        idea, a, b = (
            self.connection()
            .execute(
                """
            SELECT i.text, ta.text, tb.text FROM pairs p
            JOIN ideas i ON i.id = p.idea_id
            JOIN titles ta ON ta.id = p.title_a
            JOIN titles tb ON tb.id = p.title_b
            WHERE p.id = ?
            """,
                (pair_id,),
            )
            .fetchone()
        )
        return PairView(pair_id, idea, a, b, "a") if shown_left == "a" else (
            PairView(pair_id, idea, b, a, "b"))  # fmt: skip

    def record_vote(
        self,
        voter: str,
        pair_id: int,
        choice: str,
        shown_left: str,
        seconds_taken: float | None = None,
        flag: str | None = None,
    ) -> VoteResult:
        """Store one vote; a repeat by the same voter on the same pair changes nothing."""
        voter = check_voter(voter)
        check_choice(choice, shown_left)
        if not isinstance(pair_id, int) or isinstance(pair_id, bool):
            raise UserError(f"pair id must be a whole number, not {pair_id!r}")
        check_flag(flag)
        if seconds_taken is not None and not 0 <= seconds_taken < 7 * 86400:
            seconds_taken = None  # a clock jump is not worth refusing a vote over
        vote_id = uuid.uuid4().hex

        def insert(db: sqlite3.Connection) -> VoteResult:
            if db.execute("SELECT 1 FROM pairs WHERE id = ?", (pair_id,)).fetchone() is None:
                raise UserError(f"unknown pair id {pair_id}")
            cursor = db.execute(
                "INSERT INTO votes (id, voter, pair_id, choice, shown_left, created_at,"
                " seconds_taken, flag) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (voter, pair_id) DO NOTHING",
                (vote_id, voter, pair_id, choice, shown_left, time.time(), seconds_taken, flag),
            )
            if cursor.rowcount == 0:
                return VoteResult(False, None)
            db.execute("UPDATE pairs SET vote_count = vote_count + 1 WHERE id = ?", (pair_id,))
            return VoteResult(True, vote_id)

        return self.write(insert)

    def retract_vote(self, voter: str, vote_id: str, cast_after: float) -> Retracted:
        """Take back `voter`'s vote `vote_id` if it was cast after `cast_after`: the vote goes,
        its pair counts one vote fewer and is open to the voter again, and the retraction is
        kept (the mirror restores without it). A UserError says why not, and changes nothing."""
        voter = check_voter(voter)

        def retract(db: sqlite3.Connection) -> Retracted:
            row = db.execute(
                "SELECT pair_id, choice, shown_left, created_at FROM votes"
                " WHERE id = ? AND voter = ?",
                (vote_id, voter),
            ).fetchone()
            if row is None:
                raise UserError("that vote is not yours to undo, or was undone already")
            pair_id, choice, shown_left, created_at = row
            if created_at <= cast_after:
                raise UserError("that vote is too old to undo")
            remove_vote(db, vote_id)
            db.execute(
                "INSERT INTO retractions VALUES (?, ?, ?, ?, ?)",
                (vote_id, voter, choice, created_at, time.time()),
            )
            return Retracted(pair_id, shown_left)

        return self.write(retract)

    def votes_version(self) -> tuple[int, int, int]:
        """Changes whenever the votes do: a vote added, restored or taken back. (A taken-back
        vote's row id may be reused by the next vote, so the retractions count too.)"""
        row = (
            self.connection()
            .execute(
                "SELECT count(*), coalesce(max(rowid), 0), (SELECT count(*) FROM retractions)"
                " FROM votes"
            )
            .fetchone()
        )
        return tuple(row)

    def undone_votes(self) -> dict[str, int]:
        """How many votes each voter took back (only voters who took any back)."""
        rows = self.connection().execute("SELECT voter, count(*) FROM retractions GROUP BY voter")
        return dict(rows.fetchall())

    def add_gold_pair(self, idea: str, better: str, worse: str, pool: str = "gold") -> int:
        """A check with a known answer (say a good title against a deliberately broken one):
        voters see it like any pair, and their accuracy on such pairs is kept. An existing
        pair of the same two titles becomes the check. Returns the pair's id."""
        pair = checked_pair(Pair(idea, better, worse))

        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            idea_id = upsert_idea(db, pair.idea, now)
            good = upsert_title(db, idea_id, pair.title_a, "gold", None, now)
            bad = upsert_title(db, idea_id, pair.title_b, "gold", None, now)
            pair_id, stored_a = upsert_pair(db, idea_id, good, bad, pool, now)
            db.execute(
                "UPDATE pairs SET gold = ? WHERE id = ?",
                ("a" if stored_a == good else "b", pair_id),
            )
            return pair_id

        return self.write(insert)

    def pair_exists(self, pair_id: int) -> bool:
        row = self.connection().execute("SELECT 1 FROM pairs WHERE id = ?", (pair_id,))
        return row.fetchone() is not None

    def has_voted(self, voter: str, pair_id: int) -> bool:
        row = (
            self.connection()
            .execute("SELECT 1 FROM votes WHERE voter = ? AND pair_id = ?", (voter, pair_id))
            .fetchone()
        )
        return row is not None

    # -- reading ------------------------------------------------------------------------------

    def voter_progress(self, voter: str) -> tuple[int, int]:
        """(votes this voter has cast, served pairs still open to them)."""
        voter = check_voter(voter)
        db = self.connection()
        done = db.execute("SELECT count(*) FROM votes WHERE voter = ?", (voter,)).fetchone()[0]
        # served pairs, less those this voter judged: two counts, no scan of pairs per voter
        retired = "SELECT name FROM pools WHERE retired = 1"
        served = db.execute(f"SELECT count(*) FROM pairs WHERE pool NOT IN ({retired})")
        judged = db.execute(
            f"SELECT count(*) FROM votes v JOIN pairs p ON p.id = v.pair_id"
            f" WHERE v.voter = ? AND p.pool NOT IN ({retired})",
            (voter,),
        )
        return done, served.fetchone()[0] - judged.fetchone()[0]

    def counts(self) -> dict[str, int]:
        db = self.connection()
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("ideas", "titles", "pairs", "votes")
        }

    def votes(self, idea: str | None = None) -> list[VoteRow]:
        """Every vote, oldest first; or only those on pairs of `idea`."""
        rows = (
            self.connection()
            .execute(
                """
            SELECT v.id, v.voter, v.pair_id, i.text, ta.text, tb.text, v.choice, v.shown_left,
                   v.created_at, v.seconds_taken, v.flag, p.gold, r.name, rp.model_a, rp.model_b,
                   p.pool
            FROM votes v
            JOIN pairs p ON p.id = v.pair_id
            JOIN ideas i ON i.id = p.idea_id
            JOIN titles ta ON ta.id = p.title_a
            JOIN titles tb ON tb.id = p.title_b
            -- a pair in a round (in the first, should two rounds share it)
            LEFT JOIN round_pairs rp ON rp.pair_id = p.id AND rp.round_id =
                (SELECT min(round_id) FROM round_pairs WHERE pair_id = p.id)
            LEFT JOIN rounds r ON r.id = rp.round_id
            WHERE :idea IS NULL OR i.text = :idea
            ORDER BY v.created_at, v.id
            """,
                {"idea": idea},
            )
            .fetchall()
        )
        return [VoteRow(*row) for row in rows]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
