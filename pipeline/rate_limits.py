"""Sliding-window rate limits whose counts survive a restart.

Each `RateLimiter` keeps its recent events in memory (every check reads only memory) and, with
a `LimitLog`, writes each admitted event to SQLite as well: `DATA/limits.db`, beside the votes.
A limiter made again after a restart reads its window's events back, so stopping and starting
the app does not hand a script a fresh allowance of voter ids or votes. Times are wall-clock
seconds, the only clock that means the same before and after a restart.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from pathlib import Path

LIMITS_FILE = "limits.db"


class LimitLog:
    """The events of every limiter of one app, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the request threads, each statement its own transaction;
        # WAL with synchronous=NORMAL: an insert costs no fsync (bench/votes.py).
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS events (limiter TEXT NOT NULL, key TEXT NOT NULL, "
                "at REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS events_by_time ON events (limiter, at)")

    @classmethod
    def in_folder(cls, folder: str | Path) -> LimitLog:
        return cls(Path(folder) / LIMITS_FILE)

    def since(self, limiter: str, cutoff: float) -> list[tuple[str, float]]:
        """(key, time) of `limiter`'s events after `cutoff`, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT key, at FROM events WHERE limiter = ? AND at > ? ORDER BY at",
                (limiter, cutoff),
            ).fetchall()

    def add(self, limiter: str, key: str, at: float) -> None:
        with self._lock:
            self._db.execute("INSERT INTO events VALUES (?, ?, ?)", (limiter, key, at))

    def forget(self, limiter: str, cutoff: float) -> None:
        """Drop `limiter`'s events at or before `cutoff`: outside every window from now on."""
        with self._lock:
            self._db.execute("DELETE FROM events WHERE limiter = ? AND at <= ?", (limiter, cutoff))


class RateLimiter:
    """At most `limit` events per key in any `window` seconds (a sliding log per key); with
    `log`, the events are kept there under `name` too, and read back when made."""

    def __init__(
        self, limit: int, window: float, log: LimitLog | None = None, name: str = ""
    ) -> None:
        self.limit, self.window = limit, window
        self._log, self._name = log, name
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._sweep_at = 0.0
        if log is not None:
            for key, at in log.since(name, time.time() - window):
                self._events.setdefault(key, deque()).append(at)

    def admit(self, key: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            cutoff = now - self.window
            if now >= self._sweep_at:  # drop idle keys now and then, so memory stays bounded
                self._events = {k: q for k, q in self._events.items() if q and q[-1] > cutoff}
                self._sweep_at = now + self.window
                if self._log is not None:
                    self._log.forget(self._name, cutoff)
            events = self._events.setdefault(key, deque())
            while events and events[0] <= cutoff:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if self._log is not None:
                self._log.add(self._name, key, now)
            return True
