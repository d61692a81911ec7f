"""The vote store's schema: numbered migrations, each applied once, in order, and recorded in
the database's `_migrations` table. A change to the schema is a new `mNNN_...` function at the
end; an applied one is never edited (a database that had it would not get the change).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE ideas (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL
        );
        CREATE TABLE titles (
            id INTEGER PRIMARY KEY,
            idea_id INTEGER NOT NULL REFERENCES ideas(id),
            text TEXT NOT NULL,
            raw TEXT,               -- the model's completion exactly as written
            model TEXT,             -- which model wrote it; never shown before a vote
            settings TEXT,          -- JSON of the sampling settings
            source TEXT NOT NULL,   -- 'tutorial', 'generated', 'imported'
            created_at REAL NOT NULL,
            UNIQUE (idea_id, text)
        );
        CREATE TABLE pairs (
            id INTEGER PRIMARY KEY,
            idea_id INTEGER NOT NULL REFERENCES ideas(id),
            title_a INTEGER NOT NULL REFERENCES titles(id),
            title_b INTEGER NOT NULL REFERENCES titles(id),
            pool TEXT NOT NULL,
            vote_count INTEGER NOT NULL DEFAULT 0,  -- kept with each vote, for scheduling
            created_at REAL NOT NULL,
            CHECK (title_a <> title_b)
        );
        -- a pair is unordered: (a, b) and (b, a) are the same pair
        CREATE UNIQUE INDEX pairs_unordered ON pairs (min(title_a, title_b), max(title_a, title_b));
        CREATE INDEX pairs_by_votes ON pairs (vote_count);
        CREATE TABLE votes (
            id TEXT PRIMARY KEY,
            voter TEXT NOT NULL,
            pair_id INTEGER NOT NULL REFERENCES pairs(id),
            choice TEXT NOT NULL CHECK (choice IN ('a_better', 'b_better', 'tie', 'both_bad')),
            shown_left TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
            created_at REAL NOT NULL,
            seconds_taken REAL,
            UNIQUE (voter, pair_id)
        );
        CREATE INDEX votes_by_pair ON votes (pair_id);
        """
    )


@migration
def m002_flags_and_gold(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- why a vote is doubtful ('fast': cast before a person could read both titles);
        -- a flagged vote is kept, and a dataset can leave it out
        ALTER TABLE votes ADD COLUMN flag TEXT;
        -- a check with a known answer: which of the pair's titles is the better one
        ALTER TABLE pairs ADD COLUMN gold TEXT CHECK (gold IN ('a', 'b'));
        """
    )


@migration
def m003_evaluation_rounds(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- an evaluation round: models' titles for the same ideas, put to voters blind
        CREATE TABLE rounds (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            models TEXT NOT NULL,     -- JSON [{"label", "name"}], in the order given
            k INTEGER,                -- titles per model per idea
            ideas_from TEXT,          -- where the ideas came from, for people
            settings TEXT,            -- JSON of the sampling settings
            created_at REAL NOT NULL
        );
        -- which model wrote which title in a round (two models may write the same title)
        CREATE TABLE round_titles (
            round_id INTEGER NOT NULL REFERENCES rounds(id),
            model TEXT NOT NULL,      -- the model's label in the round
            idea_id INTEGER NOT NULL REFERENCES ideas(id),
            title_id INTEGER NOT NULL REFERENCES titles(id),
            sample INTEGER NOT NULL,  -- 0..k-1: the model's k-th title for the idea
            raw TEXT,                 -- the completion exactly as this model wrote it
            PRIMARY KEY (round_id, model, idea_id, sample)
        );
        -- a round's pairs and who wrote each side; votes on them are evaluation votes
        CREATE TABLE round_pairs (
            round_id INTEGER NOT NULL REFERENCES rounds(id),
            pair_id INTEGER NOT NULL REFERENCES pairs(id),
            model_a TEXT NOT NULL,    -- the label of the model that wrote the pair's title_a
            model_b TEXT NOT NULL,
            PRIMARY KEY (round_id, pair_id)
        );
        CREATE INDEX round_pairs_by_pair ON round_pairs (pair_id);
        """
    )


@migration
def m004_pool_settings(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- what the owner decided about a pool; a pool with no row: priority 0, served
        CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            priority INTEGER NOT NULL DEFAULT 0,  -- higher is served first
            retired INTEGER NOT NULL DEFAULT 0 CHECK (retired IN (0, 1)),  -- 1: not served
            updated_at REAL NOT NULL
        );
        """
    )


@migration
def m005_iterations(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- an iteration of on-policy training: a policy's own titles put to the voters (pool
        -- `iteration:NAME`), then the next policy trained on their votes
        CREATE TABLE iterations (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            policy TEXT NOT NULL,     -- the model that wrote the titles (a Hub id or folder)
            parent TEXT,              -- the iteration whose trained policy this one starts from
            k INTEGER NOT NULL,       -- titles per idea
            ideas_from TEXT,          -- where the ideas came from, for people
            target_votes INTEGER NOT NULL,  -- votes per pair the owner aims for
            settings TEXT,            -- JSON of the sampling settings
            created_at REAL NOT NULL,
            trained TEXT,             -- the next policy's model folder, once trained
            trained_at REAL
        );
        """
    )


@migration
def m006_iteration_judging(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- the evaluation round that judges an iteration's trained policy (against the
        -- policy it started from, and the first iteration's), once created
        ALTER TABLE iterations ADD COLUMN judge_round TEXT;
        -- JSON of its training: the options ("at_target": true when the owner asked for it
        -- once every pair has its target votes) and "runs", the app's run folders once begun
        ALTER TABLE iterations ADD COLUMN training TEXT;
        """
    )


@migration
def m007_retractions(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        -- votes their voters took back (the Vote tab's Undo), kept so that a vote mirrored
        -- before it was taken back stays out when the mirror is restored
        CREATE TABLE retractions (
            vote_id TEXT PRIMARY KEY,
            voter TEXT NOT NULL,
            choice TEXT NOT NULL,       -- what the vote said
            created_at REAL NOT NULL,   -- when it was cast
            retracted_at REAL NOT NULL
        );
        """
    )


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database has not had; return their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for step in MIGRATIONS:
        if step.__name__ in done:
            continue
        with db:  # one transaction per migration
            step(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (step.__name__, time.time()))
        applied.append(step.__name__)
    return applied
