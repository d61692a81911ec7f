"""The rows every write of the vote database goes through (the store's own, its round and
iteration tables', and `pipeline.mirror`'s restore): each added unless there, or removed."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def upsert_idea(db: sqlite3.Connection, text: str, now: float) -> int:
    db.execute("INSERT OR IGNORE INTO ideas (text, created_at) VALUES (?, ?)", (text, now))
    return db.execute("SELECT id FROM ideas WHERE text = ?", (text,)).fetchone()[0]


def remove_vote(db: sqlite3.Connection, vote_id: str) -> None:
    """The vote `vote_id` gone, if here, and its pair counted one vote fewer."""
    held = db.execute("SELECT pair_id FROM votes WHERE id = ?", (vote_id,)).fetchone()
    if held:
        db.execute("DELETE FROM votes WHERE id = ?", (vote_id,))
        db.execute("UPDATE pairs SET vote_count = vote_count - 1 WHERE id = ?", held)


def upsert_pair(
    db: sqlite3.Connection, idea_id: int, a: int, b: int, pool: str, now: float
) -> tuple[int, int]:
    """The pair of titles a and b, added if new: (its id, its stored title_a), since a pair
    is unordered and may be stored the other way round."""
    db.execute(
        "INSERT OR IGNORE INTO pairs (idea_id, title_a, title_b, pool, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (idea_id, a, b, pool, now),
    )
    return db.execute(
        "SELECT id, title_a FROM pairs WHERE min(title_a, title_b) = min(?, ?)"
        " AND max(title_a, title_b) = max(?, ?)",
        (a, b, a, b),
    ).fetchone()


def upsert_title(
    db: sqlite3.Connection,
    idea_id: int,
    text: str,
    source: str,
    meta: dict[str, Any] | None,
    now: float,
) -> int:
    meta = meta or {}
    settings = meta.get("settings")
    db.execute(
        "INSERT OR IGNORE INTO titles (idea_id, text, raw, model, settings, source, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            idea_id,
            text,
            meta.get("raw"),
            meta.get("model"),
            json.dumps(settings) if settings is not None else None,
            source,
            now,
        ),
    )
    row = db.execute("SELECT id FROM titles WHERE idea_id = ? AND text = ?", (idea_id, text))
    return row.fetchone()[0]
