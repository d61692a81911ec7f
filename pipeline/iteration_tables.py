"""On-policy iterations as the vote store keeps them: each iteration's record (its policy,
target, training and judging round), its titles' pairs in pool `iteration:NAME`.
`pipeline.iterations` runs them.

`IterationTables` is part of `VoteStore` (its `connection`, `write`, `add_titles` and
`set_pool`), in a module of its own."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.round_tables import check_round_name


@dataclass(frozen=True)
class IterationInfo:
    """An on-policy iteration as the owner sees it (`pipeline.iterations`)."""

    name: str
    policy: str
    parent: str | None
    k: int
    ideas_from: str | None
    target_votes: int
    settings: dict[str, Any] | None
    created_at: float
    trained: str | None
    trained_at: float | None
    judge_round: str | None = None  # the round judging its trained policy
    # its training: the options ("at_target": to start once every pair has its votes) and
    # "runs", the app's run folders, once begun
    training: dict[str, Any] | None = None

    @property
    def pool(self) -> str:
        return f"iteration:{self.name}"


class IterationTables:
    """The vote store's on-policy iterations (a part of `VoteStore`)."""

    # what it uses of VoteStore
    connection: Callable[[], sqlite3.Connection]
    write: Callable[[Callable[[sqlite3.Connection], Any]], Any]
    add_titles: Callable[..., int]
    set_pool: Callable[..., Any]

    def add_iteration(
        self,
        name: str,
        policy: str,
        titles: Sequence[Any],
        *,
        parent: str | None,
        k: int,
        ideas_from: str | None,
        target_votes: int,
        settings: dict[str, Any] | None = None,
        priority: int = 10,
    ) -> IterationInfo:
        """An iteration: the policy's titles (pipeline.generation.Title) as each idea's pairs
        in pool `iteration:NAME`, served at `priority`, then its record. Not one transaction:
        pairs added before a failure stay in their pool, and a retry under the same name
        reuses them."""
        name = check_round_name(name, "iteration")
        if name in {i.name for i in self.iterations()}:
            raise UserError(f"there is already an iteration called {name!r}")
        by_idea: dict[str, list[Any]] = {}
        for t in titles:
            if t.text.strip():  # a completion that was all whitespace is no title
                by_idea.setdefault(t.idea, []).append(t)
        pool = f"iteration:{name}"
        added = 0
        for group in by_idea.values():
            texts = {t.text for t in group}
            if len(texts) > 1:
                added += self.add_titles(group, pool=pool)
        if not added:
            raise UserError("the policy wrote the same title for every idea: no pairs to vote on")

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO iterations (name, policy, parent, k, ideas_from, target_votes,"
                " settings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, policy, parent, k, ideas_from, target_votes, json.dumps(settings),
                 time.time()),
            )  # fmt: skip

        self.write(insert)
        self.set_pool(pool, priority=priority)
        return self.iteration_info(name)

    def iterations(self) -> list[IterationInfo]:
        """Every iteration, oldest first."""
        rows = self.connection().execute(
            "SELECT name, policy, parent, k, ideas_from, target_votes, settings, created_at,"
            " trained, trained_at, judge_round, training FROM iterations ORDER BY id"
        )
        return [
            IterationInfo(*row[:6], _json_or_none(row[6]), *row[7:11], _json_or_none(row[11]))
            for row in rows.fetchall()
        ]

    def iteration_info(self, name: str) -> IterationInfo:
        found = {i.name: i for i in self.iterations()}
        if name not in found:
            known = ", ".join(found) or "none yet"
            raise UserError(f"no iteration {name!r}: iterations are {known}")
        return found[name]

    def set_iteration_trained(
        self, name: str, model: str, at: float | None = None
    ) -> IterationInfo:
        """Record the next policy trained on the iteration's votes (`at`: when, if not now)."""
        self.iteration_info(name)
        self.write(
            lambda db: db.execute(
                "UPDATE iterations SET trained = ?, trained_at = ? WHERE name = ?",
                (str(model), time.time() if at is None else at, name),
            )
        )
        return self.iteration_info(name)

    def set_iteration_judge(self, name: str, round_name: str) -> IterationInfo:
        """Record the evaluation round that judges the iteration's trained policy."""
        return self._set_iteration(name, "judge_round", round_name)

    def set_iteration_training(self, name: str, options: dict[str, Any] | None) -> IterationInfo:
        """How the iteration trains (`IterationInfo.training`; None: nothing said yet)."""
        return self._set_iteration(
            name, "training", None if options is None else json.dumps(options)
        )

    def add_iteration_run(self, name: str, run: str | Path) -> IterationInfo:
        """A run folder of the iteration's training, added to its `training["runs"]` in one
        transaction (the watcher, a handler and the RLHF way's second run may add at once)."""
        self.iteration_info(name)

        def add(db: sqlite3.Connection) -> None:
            (text,) = db.execute(
                "SELECT training FROM iterations WHERE name = ?", (name,)
            ).fetchone()
            training = _json_or_none(text) or {}
            training["runs"] = [*training.get("runs", []), str(run)]
            db.execute(
                "UPDATE iterations SET training = ? WHERE name = ?", (json.dumps(training), name)
            )

        self.write(add)
        return self.iteration_info(name)

    def _set_iteration(self, name: str, column: str, value: Any) -> IterationInfo:
        self.iteration_info(name)
        self.write(
            lambda db: db.execute(
                f"UPDATE iterations SET {column} = ? WHERE name = ?", (value, name)
            )
        )
        return self.iteration_info(name)


def _json_or_none(text: str | None) -> Any:
    """A JSON column's value: None where the column is empty."""
    return json.loads(text) if text else None
