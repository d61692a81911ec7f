"""The vote store as records that stand on their own, and back: what `hub.sync` mirrors to a
dataset repo and restores when the app starts (iterations, rounds, votes taken back, votes,
pools).

Every record names what it needs by content (ideas and titles as text, models by label), so a
store restored from records, empty or not, reads the same results as the store they came from.
Restoring skips what the store has already and leaves out, and counts, records that are not
valid.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.iteration_tables import IterationInfo
from pipeline.pairs import Pair
from pipeline.records import checked_pair, checked_record
from pipeline.round_tables import RoundInfo, RoundTitle, check_round_name
from pipeline.rows import remove_vote, upsert_idea, upsert_pair, upsert_title
from pipeline.votes import PoolInfo, VoteStore

# A pair in an iteration's record: the idea, then each title with its completion and model.
PAIR_RECORD = ("idea", "title_a", "raw_a", "model_a", "title_b", "raw_b", "model_b")
ITERATION_COLUMNS = (
    "policy", "parent", "k", "ideas_from", "target_votes", "settings", "created_at",
    "trained", "trained_at", "judge_round", "training",
)  # fmt: skip


@dataclass(frozen=True)
class Restored:
    """What `restore` put back, and how many records it left out as not valid."""

    iterations: int
    rounds: int
    retractions: int
    votes: int
    pools: int
    rejected: int


def restore(
    store: VoteStore,
    iterations: Iterable[Any] = (),
    rounds: Iterable[Any] = (),
    votes: Iterable[Any] = (),
    pools: Iterable[Any] = (),
    retractions: Iterable[Any] = (),
) -> Restored:
    """Each kind of record put back, in the one order that works: iterations and rounds
    first, so that a vote on one of their pairs lands in its pool; the votes taken back
    before the votes, so that none of them comes back (nor keeps out the vote its voter cast
    on that pair instead); pools last, once their pairs are back."""
    iterations_added, rejected_iterations = restore_iterations(store, iterations)
    rounds_added, rejected_rounds = restore_rounds(store, rounds)
    retracted, rejected_retractions = restore_retractions(store, retractions)
    votes_added, rejected_votes = restore_votes(store, votes)
    pools_set, rejected_pools = restore_pools(store, pools)
    rejected = (rejected_iterations + rejected_rounds + rejected_retractions + rejected_votes
                + rejected_pools)  # fmt: skip
    return Restored(iterations_added, rounds_added, retracted, votes_added, pools_set, rejected)


# --- pools ------------------------------------------------------------------------------------


def pool_records(store: VoteStore) -> list[dict[str, Any]]:
    """How each pool is served where it was ever set (by the owner, or a round or an
    iteration), with when."""
    rows = store.connection().execute(
        "SELECT name, priority, retired, updated_at FROM pools ORDER BY name"
    )
    return [
        {"name": n, "priority": p, "retired": bool(r), "updated_at": u}
        for n, p, r, u in rows.fetchall()
    ]


def restore_pools(store: VoteStore, records: Iterable[Any]) -> tuple[int, int]:
    """Serve the pools as `pool_records` saved them, the latest record of a pool last (a
    mirror holds one file per process); a pool the store has no pairs in is passed over.
    Returns (pools set, records left out)."""
    checked, rejected = [], 0
    for r in records:
        try:
            when, name = float(r["updated_at"]), str(r["name"])
            checked.append((when, name, int(r["priority"]), bool(r["retired"])))
        except (TypeError, KeyError, ValueError):
            rejected += 1
    here, done = {p.name for p in store.pools()}, 0
    for _, name, priority, retired in sorted(checked):
        if name not in here:
            continue
        try:
            store.set_pool(name, priority=priority, retired=retired)
            done += 1
        except UserError:  # a priority out of range
            rejected += 1
    return done, rejected


# --- rounds -----------------------------------------------------------------------------------


def round_records(store: VoteStore) -> list[dict[str, Any]]:
    """Every evaluation round: its models, titles and how its pool is served. An iteration's
    judging round goes with the iteration's record instead."""
    served = {p.name: p for p in store.pools()}
    judging = {i.judge_round for i in store.iterations()}
    found = (_round_record(store, r, served) for r in store.rounds() if r.name not in judging)
    return [record for record in found if record is not None]


def restore_rounds(store: VoteStore, records: Iterable[Any]) -> tuple[int, int]:
    """Put back rounds saved by `round_records`: each one the store lacks. Returns (added,
    records left out)."""
    added = rejected = 0
    for record in records:
        try:
            if not isinstance(record, dict):
                raise TypeError("a round record is a JSON object")
            added += _restore_round(store, record)
        except (UserError, TypeError, KeyError, ValueError):
            rejected += 1
    return added, rejected


def _round_record(
    store: VoteStore, info: RoundInfo | None, served: dict[str, PoolInfo]
) -> dict[str, Any] | None:
    """A round as `add_round` takes it, with how its pool is served (None: no round, or one
    that only restored votes brought back: no titles to make it from)."""
    if info is None:
        return None
    titles = [asdict(t) for t in store.round_titles(info.round_id)]
    if not titles:
        return None
    pool = served.get(info.pool)
    return {
        "name": info.name,
        "models": info.models,
        "k": info.k,
        "ideas_from": info.ideas_from,
        "settings": info.settings,
        "titles": titles,
        "priority": pool.priority if pool else None,
        "retired": pool.retired if pool else False,
    }


def _restore_round(store: VoteStore, record: Any) -> bool:
    """A round from its record (`_round_record`), unless the store has it: its titles, its
    pairs and how its pool is served. Whether it was added."""
    if not isinstance(record, dict) or record.get("name") in {r.name for r in store.rounds()}:
        return False
    titles = [RoundTitle(**t) for t in record["titles"]]
    info = store.add_round(record["name"], record["models"], titles, record["k"],
                           record["ideas_from"], record.get("settings"))  # fmt: skip
    served = record.get("priority") is not None or record.get("retired")
    if served and info.pool in {p.name for p in store.pools()}:
        store.set_pool(info.pool, record.get("priority"), bool(record.get("retired")))
    return True


# --- iterations -------------------------------------------------------------------------------


def iteration_records(store: VoteStore) -> list[dict[str, Any]]:
    """Every iteration: its fields, its pool's pairs spelled out (each title with its
    completion and model), how the pool is served and its judging round."""
    db = store.connection()
    served = {p.name: p for p in store.pools()}
    rounds = {r.name: r for r in store.rounds()}
    records = []
    for info in store.iterations():
        rows = db.execute(
            "SELECT i.text, ta.text, ta.raw, ta.model, tb.text, tb.raw, tb.model FROM pairs p"
            " JOIN ideas i ON i.id = p.idea_id JOIN titles ta ON ta.id = p.title_a"
            " JOIN titles tb ON tb.id = p.title_b WHERE p.pool = ? ORDER BY p.id",
            (info.pool,),
        ).fetchall()
        pool = served.get(info.pool)
        records.append(
            {
                **asdict(info),
                "priority": pool.priority if pool else None,
                "retired": pool.retired if pool else False,
                "pairs": [dict(zip(PAIR_RECORD, row, strict=True)) for row in rows],
                "judge": _round_record(store, rounds.get(info.judge_round), served),
            }
        )
    return records


def restore_iterations(store: VoteStore, records: Iterable[Any]) -> tuple[int, int]:
    """Put back iterations saved by `iteration_records`: each one the store lacks, with its
    pairs (a pair restored earlier with its votes moves to the iteration's pool) and its
    pool's serving; one it has gains the trained policy, judging round and training-at-target
    it lacks. Returns (added, records left out)."""
    known = {i.name: i for i in store.iterations()}
    added = rejected = 0
    for record in records:
        try:
            name, pairs, meta = _checked_iteration(record)
        except (UserError, TypeError, ValueError, KeyError, AttributeError):
            rejected += 1
            continue
        try:
            _restore_round(store, record.get("judge"))
        except (UserError, TypeError, KeyError):
            rejected += 1  # the iteration still comes back; judge it again
        if name in known:
            _fill_iteration(store, known[name], record)
            continue
        store.write(lambda db, n=name, r=record, ps=pairs, m=meta: _insert_iteration(
            db, n, r, ps, m))  # fmt: skip
        if record.get("priority") is not None or record.get("retired"):
            store.set_pool(f"iteration:{name}", record.get("priority"), record.get("retired"))
        known[name] = store.iteration_info(name)
        added += 1
    return added, rejected


def _fill_iteration(store: VoteStore, info: IterationInfo, record: dict[str, Any]) -> None:
    if not info.trained and isinstance(record.get("trained"), str):
        at = record.get("trained_at")
        store.set_iteration_trained(info.name, record["trained"], at=_number_or_none(at))
    if not info.judge_round and isinstance(record.get("judge_round"), str):
        store.set_iteration_judge(info.name, record["judge_round"])
    if not info.training and isinstance(record.get("training"), dict):
        store.set_iteration_training(info.name, record["training"])


def _number_or_none(value: Any) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else None


def _checked_iteration(record: Any) -> tuple[str, list[Pair], dict[tuple[str, str], dict]]:
    """(name, pairs, title meta) of an iteration record, checked; else an error."""
    name = check_round_name(record["name"], "iteration")
    if not isinstance(record["policy"], str) or not record["policy"]:
        raise UserError(f"iteration {name}: no policy")
    for whole in ("k", "target_votes"):
        if not isinstance(record[whole], int) or record[whole] < 1:
            raise UserError(f"iteration {name}: {whole} is not a whole number")
    pairs, meta = [], {}
    for row in record["pairs"]:
        pair = checked_pair(Pair(row["idea"], row["title_a"], row["title_b"]))
        pairs.append(pair)
        for side in ("a", "b"):
            meta[(pair.idea, row[f"title_{side}"])] = {
                "raw": row.get(f"raw_{side}"),
                "model": row.get(f"model_{side}"),
            }
    if not pairs:
        raise UserError(f"iteration {name}: no pairs")
    return name, pairs, meta


def _insert_iteration(
    db: sqlite3.Connection, name: str, record: dict, pairs: list[Pair], meta: dict
) -> None:
    """One restored iteration: its pairs in its pool, then its row, in one transaction."""
    now, pool = time.time(), f"iteration:{name}"
    for pair in pairs:
        idea_id = upsert_idea(db, pair.idea, now)
        a = upsert_title(
            db, idea_id, pair.title_a, "generated", meta.get((pair.idea, pair.title_a)), now
        )
        b = upsert_title(
            db, idea_id, pair.title_b, "generated", meta.get((pair.idea, pair.title_b)), now
        )
        pair_id, _ = upsert_pair(db, idea_id, a, b, pool, now)
        db.execute("UPDATE pairs SET pool = ? WHERE id = ? AND pool = 'restored'", (pool, pair_id))
    values = [record.get(c) for c in ITERATION_COLUMNS]
    for i, column in enumerate(ITERATION_COLUMNS):
        if column in ("settings", "training") and values[i] is not None:
            values[i] = json.dumps(values[i])
    values[ITERATION_COLUMNS.index("created_at")] = float(record.get("created_at") or now)
    marks = ", ".join("?" for _ in ITERATION_COLUMNS)
    db.execute(
        f"INSERT INTO iterations (name, {', '.join(ITERATION_COLUMNS)}) VALUES (?, {marks})",
        (name, *values),
    )


# --- votes ------------------------------------------------------------------------------------


def retraction_records(store: VoteStore) -> list[dict[str, Any]]:
    """Every vote its voter took back (`VoteStore.retract_vote`), with what it said."""
    rows = store.connection().execute(
        "SELECT vote_id, voter, choice, created_at, retracted_at FROM retractions"
        " ORDER BY retracted_at, vote_id"
    )
    keys = ("vote_id", "voter", "choice", "created_at", "retracted_at")
    return [dict(zip(keys, row, strict=True)) for row in rows.fetchall()]


def restore_retractions(store: VoteStore, records: Iterable[Any]) -> tuple[int, int]:
    """Keep the retractions `retraction_records` saved, and take their votes out of the store
    where they are in it (a restart on a disk that kept them, before they were mirrored as
    taken back). Returns (retractions new here, records left out)."""
    checked, rejected = [], 0
    for r in records:
        try:
            vote_id, voter = r["vote_id"], r["voter"]
            if not (isinstance(vote_id, str) and isinstance(voter, str) and vote_id and voter):
                raise TypeError("a retraction names its vote and voter")
            when = (float(r["created_at"]), float(r["retracted_at"]))
            checked.append((vote_id, voter, str(r["choice"]), *when))
        except (TypeError, KeyError, ValueError):
            rejected += 1
    return store.write(lambda db: _insert_retractions(db, checked)), rejected


def _insert_retractions(db: sqlite3.Connection, checked: list[tuple]) -> int:
    added = 0
    for row in checked:
        added += db.execute("INSERT OR IGNORE INTO retractions VALUES (?, ?, ?, ?, ?)",
                            row).rowcount  # fmt: skip
        remove_vote(db, row[0])  # row[0]: the vote's id
    return added


def restore_votes(store: VoteStore, records: Iterable[Any]) -> tuple[int, int]:
    """Put back votes saved by `records.vote_record`, each under its own id; ones already here
    (same id, or same voter and pair) or taken back by their voter are skipped. Pairs and
    titles missing from the store are added (pool 'restored'); a round's vote brings back its
    round (the models it names) and the pair's place in it, so that it stays out of training
    data. Returns (votes added, records left out), in one transaction."""
    checked, rejected = [], 0
    for record in records:
        try:
            checked.append(checked_record(record))
        except (UserError, TypeError, ValueError, AttributeError):
            rejected += 1
    return store.write(lambda db: _insert_votes(db, checked)), rejected


def _insert_votes(db: sqlite3.Connection, checked: list[dict[str, Any]]) -> int:
    now, added = time.time(), 0
    retracted = {row[0] for row in db.execute("SELECT vote_id FROM retractions")}
    for r in checked:
        if r["vote_id"] in retracted:
            continue
        idea_id = upsert_idea(db, r["idea"], now)
        a = upsert_title(db, idea_id, r["title_a"], "restored", None, now)
        b = upsert_title(db, idea_id, r["title_b"], "restored", None, now)
        pair_id, stored_a = upsert_pair(db, idea_id, a, b, "restored", now)
        choice, shown_left, gold = r["choice"], r["shown_left"], r.get("gold")
        if stored_a != a:  # the pair is stored the other way round: so is the vote
            choice = {"a_better": "b_better", "b_better": "a_better"}.get(choice, choice)
            shown_left, gold = _other_side(shown_left), gold and _other_side(gold)
        if gold:  # the pair was a check where the vote was cast: it still is
            db.execute("UPDATE pairs SET gold = ? WHERE id = ? AND gold IS NULL", (gold, pair_id))
        if r.get("evaluation"):  # a round's vote stays the round's
            sides = [r["model_a"], r["model_b"]]
            if stored_a != a:
                sides.reverse()
            _restore_round_pair(db, r["evaluation"], pair_id, *sides, now)
        cursor = db.execute(
            "INSERT OR IGNORE INTO votes (id, voter, pair_id, choice, shown_left, created_at,"
            " seconds_taken, flag) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r["vote_id"], r["voter"], pair_id, choice, shown_left, r["created_at"],
             r.get("seconds_taken"), r.get("flag")),
        )  # fmt: skip
        if cursor.rowcount:
            db.execute("UPDATE pairs SET vote_count = vote_count + 1 WHERE id = ?", (pair_id,))
            added += 1
    return added


def _restore_round_pair(
    db: sqlite3.Connection, name: str, pair_id: int, model_a: str, model_b: str, now: float
) -> None:
    """The round `name` as far as a restored vote tells it: its models, and this pair."""
    row = db.execute("SELECT id, models FROM rounds WHERE name = ?", (name,)).fetchone()
    if row is None:
        round_id = db.execute(
            "INSERT INTO rounds (name, models, ideas_from, created_at) VALUES (?, '[]', ?, ?)",
            (name, "restored from the vote mirror", now),
        ).lastrowid
        models: list[dict[str, str]] = []
    else:
        round_id, models = row[0], json.loads(row[1])
    known = {m["label"] for m in models}
    for label in (model_a, model_b):
        if label not in known:
            models.append({"label": label, "name": label})
            known.add(label)
    db.execute("UPDATE rounds SET models = ? WHERE id = ?", (json.dumps(models), round_id))
    db.execute(
        "INSERT OR IGNORE INTO round_pairs VALUES (?, ?, ?, ?)",
        (round_id, pair_id, model_a, model_b),
    )


def _other_side(side: str) -> str:
    return "b" if side == "a" else "a"
