"""Evaluation rounds as the vote store keeps them: a round's record, the titles each of its
models wrote, and its pairs in the voting pool (pool `round:NAME`). `pipeline.rounds` makes
rounds; `pipeline.winrates` reads their votes.

`RoundTables` is part of `VoteStore` (its `connection` and `write`), in a module of its own."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import UserError
from pipeline.prompts import check_idea
from pipeline.rows import upsert_idea, upsert_pair, upsert_title


@dataclass(frozen=True)
class RoundInfo:
    """An evaluation round as the owner sees it."""

    round_id: int
    name: str
    models: list[dict[str, Any]]  # [{"label", "name", "version"}] (`rounds.RoundModel`)
    k: int | None
    ideas_from: str | None
    settings: dict[str, Any] | None
    created_at: float
    pairs: int
    # of those, pairs another pool held already (an earlier round's models wrote the same two
    # titles): they are served, and their votes counted, as that pool's
    pairs_elsewhere: int = 0

    @property
    def labels(self) -> list[str]:
        return [m["label"] for m in self.models]

    @property
    def pool(self) -> str:
        """The pool its own pairs are served from."""
        return f"round:{self.name}"

    @property
    def own_pairs(self) -> int:
        """The pairs in its own pool."""
        return self.pairs - self.pairs_elsewhere

    def describe_pairs(self, created: bool = False, first: bool = False) -> str:
        """How many pairs it serves, or why none (the same title makes no pair); when just
        `created`, that they are votable now, and served `first` if its pool was put first."""
        if not self.pairs:
            return "no pair: the models wrote the same titles for every idea, nothing to vote on"
        said = f"{self.pairs} pairs"
        if created:
            said += " in the voting pool now"
            said += ", served first" if first and self.own_pairs else ""
        if self.pairs_elsewhere:
            said += (
                f" ({self.pairs_elsewhere} of them already in an earlier pool: served, and "
                "voted on, as that pool's)"
            )
        return said


@dataclass(frozen=True)
class RoundTitle:
    model: str  # label
    idea: str
    sample: int
    text: str
    raw: str | None


@dataclass(frozen=True)
class RoundPair:
    pair_id: int
    idea: str
    model_a: str
    model_b: str
    title_a: str
    title_b: str


class RoundTables:
    """The vote store's evaluation rounds (a part of `VoteStore`)."""

    # what it uses of VoteStore
    connection: Callable[[], sqlite3.Connection]
    write: Callable[[Callable[[sqlite3.Connection], Any]], Any]

    def add_round(
        self,
        name: str,
        models: Sequence[dict[str, str]],
        titles: Sequence[RoundTitle],
        k: int,
        ideas_from: str,
        settings: dict[str, Any] | None = None,
    ) -> RoundInfo:
        """A round in one transaction: its titles, and for every idea and sample, a pair of
        each two models' titles in the voting pool (pool `round:NAME`). Two models that wrote
        the same title make no pair: there is nothing to choose between (the report counts
        them). Returns the round."""
        name = check_round_name(name)
        labels = [m["label"] for m in models]
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise UserError(f"a round needs two or more models with different labels: {labels}")
        written: dict[tuple[str, int], dict[str, RoundTitle]] = {}
        for t in titles:
            if t.model not in labels:
                raise UserError(f"a title from {t.model!r}, which is not in the round")
            written.setdefault((check_idea(t.idea), t.sample), {})[t.model] = t
        names = {m["label"]: m["name"] for m in models}

        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            if db.execute("SELECT 1 FROM rounds WHERE name = ?", (name,)).fetchone():
                raise UserError(f"there is already a round called {name!r}")
            round_id = db.execute(
                "INSERT INTO rounds (name, models, k, ideas_from, settings, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, json.dumps(list(models)), k, ideas_from, json.dumps(settings), now),
            ).lastrowid
            for (idea, sample), by_model in written.items():
                idea_id = upsert_idea(db, idea, now)
                ids = {}
                for label, t in by_model.items():
                    meta = {"raw": t.raw, "model": names[label], "settings": settings}
                    ids[label] = upsert_title(db, idea_id, t.text, "evaluation", meta, now)
                    db.execute(
                        "INSERT INTO round_titles VALUES (?, ?, ?, ?, ?, ?)",
                        (round_id, label, idea_id, ids[label], sample, t.raw),
                    )
                present = [label for label in labels if label in ids]
                for i, first in enumerate(present):
                    for second in present[i + 1 :]:
                        if ids[first] == ids[second]:
                            continue
                        pair_id, stored_a = upsert_pair(
                            db, idea_id, ids[first], ids[second], f"round:{name}", now
                        )
                        a, b = (first, second) if stored_a == ids[first] else (second, first)
                        db.execute(
                            "INSERT OR IGNORE INTO round_pairs VALUES (?, ?, ?, ?)",
                            (round_id, pair_id, a, b),
                        )
            return round_id

        self.write(insert)
        return self.round_info(name)

    def rounds(self) -> list[RoundInfo]:
        """Every round, newest first."""
        rows = self.connection().execute(
            """
            SELECT r.id, r.name, r.models, r.k, r.ideas_from, r.settings, r.created_at,
                   (SELECT count(*) FROM round_pairs rp WHERE rp.round_id = r.id),
                   (SELECT count(*) FROM round_pairs rp JOIN pairs p ON p.id = rp.pair_id
                    WHERE rp.round_id = r.id AND p.pool <> 'round:' || r.name)
            FROM rounds r ORDER BY r.created_at DESC, r.id DESC
            """
        )
        return [
            RoundInfo(i, n, json.loads(m), k, f, json.loads(s) if s else None, t, c, e)
            for i, n, m, k, f, s, t, c, e in rows.fetchall()
        ]

    def round_info(self, name: str) -> RoundInfo:
        """The round called `name` (or numbered so), or a UserError listing the rounds."""
        found = [r for r in self.rounds() if name in (r.name, str(r.round_id))]
        if not found:
            known = ", ".join(r.name for r in self.rounds()) or "none yet"
            raise UserError(f"no evaluation round {name!r} (rounds: {known})")
        return found[0]

    def round_titles(self, round_id: int) -> list[RoundTitle]:
        rows = self.connection().execute(
            """
            SELECT rt.model, i.text, rt.sample, t.text, rt.raw FROM round_titles rt
            JOIN ideas i ON i.id = rt.idea_id JOIN titles t ON t.id = rt.title_id
            WHERE rt.round_id = ? ORDER BY rt.idea_id, rt.sample, rt.model
            """,
            (round_id,),
        )
        return [RoundTitle(*row) for row in rows.fetchall()]

    def round_pairs(self, round_id: int) -> list[RoundPair]:
        """The round's pairs, each once for every two of its models it stands for. Two models
        that wrote the same title for an idea share that title's pairs with the others (the
        pool holds any two titles once), and a vote on such a pair judges both: the tuned
        model's title against the base's is also its title against the SFT stage's when the
        SFT stage wrote the base's title. A pair of the same two titles in another sample is
        another comparison, so writers are matched within a sample."""
        rows = self.connection().execute(
            """
            SELECT p.id, i.text, rp.model_a, rp.model_b, ta.text, tb.text FROM round_pairs rp
            JOIN pairs p ON p.id = rp.pair_id JOIN ideas i ON i.id = p.idea_id
            JOIN titles ta ON ta.id = p.title_a JOIN titles tb ON tb.id = p.title_b
            WHERE rp.round_id = ? ORDER BY p.idea_id, p.id
            """,
            (round_id,),
        )
        writers: dict[str, dict[int, dict[str, list[str]]]] = {}  # idea, sample, text: labels
        for t in self.round_titles(round_id):
            by_text = writers.setdefault(t.idea, {}).setdefault(t.sample, {})
            by_text.setdefault(t.text, []).append(t.model)
        found: list[RoundPair] = []
        for stored in (RoundPair(*row) for row in rows.fetchall()):
            sides = {(stored.model_a, stored.model_b)}  # (a round restored from votes alone)
            for wrote in writers.get(stored.idea, {}).values():
                if stored.title_a in wrote and stored.title_b in wrote:
                    sides.update(
                        (a, b) for a in wrote[stored.title_a] for b in wrote[stored.title_b]
                    )
            found += [replace(stored, model_a=a, model_b=b) for a, b in sorted(sides)]
        return found


ROUND_NAME = re.compile(r"^[\w][\w .:+-]{0,63}$")


def check_round_name(name: str | None, what: str = "round") -> str:
    """A round's (or an iteration's) name, checked: it becomes part of a pool's name."""
    name = (name or "").strip()
    if not ROUND_NAME.match(name):
        raise UserError(
            f"{what} name {name!r}: 1-64 letters, digits, spaces and . _ : + -, "
            "starting with a letter or digit"
        )
    return name
