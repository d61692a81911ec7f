"""The vote store on real temporary SQLite databases."""

import json
import random
import sqlite3
import threading
import time

import pytest

from pipeline.ballot import UNDO_SECONDS, Shown, side_to_choice, undo_vote, vote_on_shown_pair
from pipeline.errors import UserError
from pipeline.migrations import MIGRATIONS, migrate
from pipeline.mirror import restore, restore_votes, retraction_records
from pipeline.pairs import Pair, write_pairs_csv
from pipeline.records import vote_record
from pipeline.votes import PairView, VoteStore

IDEA = "multimodal rag"


@pytest.fixture
def store(tmp_path):
    s = VoteStore.in_folder(tmp_path)
    s.add_pairs([Pair(IDEA, "A", "B"), Pair(IDEA, "A", "C"), Pair(IDEA, "B", "C")], "test", "test")
    return s


def test_migrations_apply_once_and_are_recorded(tmp_path):
    db = sqlite3.connect(tmp_path / "v.db")
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    names = [r[0] for r in db.execute("SELECT name FROM _migrations")]
    assert names == ["m001_initial", "m002_flags_and_gold", "m003_evaluation_rounds",
                     "m004_pool_settings", "m005_iterations", "m006_iteration_judging",
                     "m007_retractions"]  # fmt: skip


def test_a_database_from_before_flags_upgrades_with_its_votes(tmp_path):
    from pipeline.migrations import m001_initial

    db = sqlite3.connect(tmp_path / "votes.db", isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    m001_initial(db)
    db.execute("INSERT INTO _migrations VALUES ('m001_initial', 0)")
    db.execute("INSERT INTO ideas VALUES (1, 'old idea', 0)")
    db.executemany("INSERT INTO titles (id, idea_id, text, source, created_at) "
                   "VALUES (?, 1, ?, 'test', 0)", [(1, "Old A"), (2, "Old B")])  # fmt: skip
    db.execute("INSERT INTO pairs (id, idea_id, title_a, title_b, pool, vote_count, created_at)"
               " VALUES (1, 1, 1, 2, 'test', 1, 0)")  # fmt: skip
    db.execute("INSERT INTO votes VALUES ('x1', 'ann', 1, 'a_better', 'a', 0, 2.0)")
    db.close()
    (vote,) = VoteStore.in_folder(tmp_path).votes()
    assert (vote.vote_id, vote.choice, vote.flag, vote.gold) == ("x1", "a_better", None, None)
    assert vote.evaluation is None  # and the rounds' tables are there, empty
    assert VoteStore.in_folder(tmp_path).rounds() == []


def test_wal_and_durable_commits(store):
    db = store.connection()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_tutorial_pool_loads_once(tmp_path):
    s = VoteStore.in_folder(tmp_path)
    assert s.import_tutorial_pool() == 1140
    assert s.import_tutorial_pool() == 0
    assert s.counts() == {"ideas": 114, "titles": 570, "pairs": 1140, "votes": 0}


def test_pairs_are_unordered_and_deduplicated(store):
    assert store.add_pairs([Pair(IDEA, "B", "A"), Pair(IDEA, "A", "D")], "test", "test") == 1
    assert store.counts()["pairs"] == 4


def test_generated_titles_make_pairs_with_their_model_and_settings(tmp_path):
    from pipeline.generation import Title

    s = VoteStore.in_folder(tmp_path)
    settings = {"n": 5, "temperature": 0.7}
    titles = [Title("rag", t, f'"{t}"', "tiny", settings) for t in "VWXYZ"]
    assert s.add_titles(titles) == 10
    row = s.connection().execute("SELECT raw, model, settings, source FROM titles LIMIT 1")
    assert row.fetchone() == ('"V"', "tiny", '{"n": 5, "temperature": 0.7}', "generated")
    with pytest.raises(UserError, match="all the same"):
        s.add_titles([Title("rag", "same", "same", "tiny", settings)] * 3)


def test_pairs_csv_import_reads_the_raw_titles_beside_it(tmp_path):
    import json

    csv_path = tmp_path / "pairs.csv"
    write_pairs_csv([Pair("rag", "One", "Two")], csv_path)
    sidecar = [{"idea": "rag", "text": "One", "raw": " One\n", "model": "m", "settings": {}}]
    csv_path.with_suffix(".titles.jsonl").write_text(json.dumps(sidecar[0]) + "\n")
    s = VoteStore.in_folder(tmp_path / "db")
    assert s.import_pairs_csv(csv_path) == 1
    raws = dict(s.connection().execute("SELECT text, raw FROM titles").fetchall())
    assert raws == {"One": " One\n", "Two": None}


def test_a_broken_titles_sidecar_is_refused_and_nothing_imported(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    write_pairs_csv([Pair("rag", "One", "Two")], csv_path)
    csv_path.with_suffix(".titles.jsonl").write_text("{not json\n")
    s = VoteStore.in_folder(tmp_path / "db")
    with pytest.raises(UserError, match="line 1: not a title record"):
        s.import_pairs_csv(csv_path)
    assert s.counts()["pairs"] == 0


def test_a_bad_pair_in_a_batch_writes_nothing(tmp_path):
    s = VoteStore.in_folder(tmp_path)
    with pytest.raises(UserError, match="same title twice"):
        s.add_pairs([Pair(IDEA, "A", "B"), Pair(IDEA, "C", "C")], "test", "test")
    assert s.counts()["pairs"] == 0


def test_next_pair_skips_judged_and_prefers_fewest_votes(store):
    first = store.next_pair("alice", rng=random.Random(1))
    store.record_vote("bob", first.pair_id, "a_better", "a")
    seen = set()
    for _ in range(2):
        view = store.next_pair("alice")
        assert view.pair_id != first.pair_id  # bob's vote made it the most voted
        seen.add(view.pair_id)
        store.record_vote("alice", view.pair_id, "tie", view.shown_left)
    assert len(seen) == 2
    assert store.next_pair("alice").pair_id == first.pair_id
    store.record_vote("alice", first.pair_id, "tie", "a")
    assert store.next_pair("alice") is None


def test_next_pair_honours_skips(store):
    ids = {store.next_pair("carol", skip=[1, 2]).pair_id for _ in range(5)}
    assert ids == {3}
    assert store.next_pair("carol", skip=[1, 2, 3]) is None


def test_sides_are_swapped_at_random_and_reported(store):
    views = [store.next_pair("dave", rng=random.Random(seed)) for seed in range(20)]
    assert {v.shown_left for v in views} == {"a", "b"}
    for v in views:
        a, b = (v.left, v.right) if v.shown_left == "a" else (v.right, v.left)
        assert a < b  # the pairs were added as (A, B), (A, C), (B, C)


def test_one_vote_per_voter_and_pair(store):
    first = store.record_vote("erin", 1, "a_better", "a", 3.5)
    again = store.record_vote("erin", 1, "b_better", "b", 1.0)
    assert first.recorded and not again.recorded
    [vote] = store.votes()
    assert (vote.choice, vote.shown_left, vote.seconds_taken) == ("a_better", "a", 3.5)
    assert store.connection().execute("SELECT vote_count FROM pairs WHERE id=1").fetchone() == (1,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, "a_better", "a"), "missing voter"),
        (("x" * 129, 1, "a_better", "a"), "limit is 128"),
        (("<script>", 1, "a_better", "a"), "only letters"),
        (("frank", 99, "a_better", "a"), "unknown pair id 99"),
        (("frank", 1, "a_best", "a"), "unknown choice"),
        (("frank", 1, "a_better", "left"), "shown_left"),
        (("frank", "1; DROP TABLE votes", "a_better", "a"), "whole number"),
    ],
)
def test_bad_votes_are_refused_and_write_nothing(store, args, message):
    with pytest.raises(UserError, match=message):
        store.record_vote(*args)
    assert store.counts()["votes"] == 0


@pytest.mark.parametrize(
    ("side", "shown_left", "choice"),
    [
        ("left", "a", "a_better"),
        ("left", "b", "b_better"),
        ("right", "a", "b_better"),
        ("right", "b", "a_better"),
        ("tie", "b", "tie"),
        ("both_bad", "a", "both_bad"),
    ],
)
def test_screen_sides_map_to_the_pairs_own_titles(side, shown_left, choice):
    assert side_to_choice(side, shown_left) == choice


def test_only_the_pair_on_screen_can_be_voted_on(store):
    now = time.time()
    shown = Shown(2, "b", now - 4)
    with pytest.raises(UserError, match="not the one on your screen"):
        vote_on_shown_pair(store, "gina", 1, "left", shown, now)
    result = vote_on_shown_pair(store, "gina", 2, "left", shown, now)
    assert result.recorded
    [vote] = store.votes()
    assert (vote.pair_id, vote.choice, round(vote.seconds_taken)) == (2, "b_better", 4)
    # a double click arrives after the screen moved on: "already voted", nothing changes
    moved_on = Shown(3, "a", now)
    assert not vote_on_shown_pair(store, "gina", 2, "right", moved_on, now).recorded
    assert len(store.votes()) == 1
    with pytest.raises(UserError, match="unknown pair id"):
        vote_on_shown_pair(store, "gina", 42, "left", moved_on, now)


def test_a_voter_takes_back_the_vote_they_just_cast_and_votes_again(store):
    """Undo: only the voter's own vote, only while it is fresh, once; the pair is theirs to
    vote on again, and its vote count and the voter's progress go back."""
    now = time.time()
    cast = vote_on_shown_pair(store, "hana", 2, "left", Shown(2, "b", now - 3), now)
    assert store.voter_progress("hana") == (1, 2)
    with pytest.raises(UserError, match="not yours"):
        undo_vote(store, "ivan", cast.vote_id, now)  # someone else's vote
    with pytest.raises(UserError, match="too old"):
        undo_vote(store, "hana", cast.vote_id, now + UNDO_SECONDS + 1)
    with pytest.raises(UserError, match="no vote to undo"):
        undo_vote(store, "hana", None, now)
    assert len(store.votes()) == 1  # the refusals changed nothing

    taken_back = undo_vote(store, "hana", cast.vote_id, now + 5)
    assert (taken_back.pair_id, taken_back.shown_left) == (2, "b")
    assert store.pair_view(2, "b") == PairView(2, IDEA, "C", "A", "b")  # as it was shown
    assert store.votes() == [] and store.voter_progress("hana") == (0, 3)
    assert store.connection().execute("SELECT vote_count FROM pairs WHERE id=2").fetchone() == (0,)
    with pytest.raises(UserError, match="undone already"):
        undo_vote(store, "hana", cast.vote_id, now + 6)
    again = vote_on_shown_pair(store, "hana", 2, "right", Shown(2, "b", now + 6), now + 9)
    assert again.recorded
    assert [(v.pair_id, v.choice) for v in store.votes()] == [(2, "a_better")]


def test_a_vote_taken_back_stays_out_of_a_restored_store(tmp_path):
    """The mirror keeps every vote it was sent; the retractions beside them keep a vote taken
    back out of a restore, and leave in the vote its voter cast on that pair instead."""
    store = VoteStore.in_folder(tmp_path / "here")
    store.add_pairs([Pair(IDEA, "A", "B"), Pair(IDEA, "A", "C")], "test", "test")
    now = time.time()
    slip = vote_on_shown_pair(store, "jo", 1, "left", Shown(1, "a", now - 3), now)
    mirrored = [vote_record(v) for v in store.votes()]  # synced before the undo
    undo_vote(store, "jo", slip.vote_id, now + 1)
    vote_on_shown_pair(store, "jo", 1, "right", Shown(1, "a", now + 1), now + 4)
    vote_on_shown_pair(store, "kim", 1, "left", Shown(1, "b", now), now + 3)
    mirrored += [vote_record(v) for v in store.votes()]
    retractions = json.loads(json.dumps(retraction_records(store)))
    assert [(r["vote_id"], r["voter"], r["choice"]) for r in retractions] == [
        (slip.vote_id, "jo", "a_better")
    ]

    def kept(s: VoteStore) -> list[tuple[str, str]]:
        return sorted((v.voter, v.choice) for v in s.votes())

    empty = VoteStore.in_folder(tmp_path / "empty")
    restored = restore(empty, votes=mirrored, retractions=[*retractions, {"vote_id": 3}])
    assert (restored.retractions, restored.votes, restored.rejected) == (1, 2, 1)
    assert kept(empty) == [("jo", "b_better"), ("kim", "b_better")] == kept(store)
    # a disk that kept the slip (restarted before its undo was mirrored) loses it
    behind = VoteStore.in_folder(tmp_path / "behind")
    restore_votes(behind, mirrored[:1])
    assert restore(behind, votes=mirrored, retractions=retractions).retractions == 1
    assert kept(behind) == kept(store)
    assert behind.connection().execute("SELECT sum(vote_count) FROM pairs").fetchone() == (2,)
    assert restore(behind, votes=mirrored, retractions=retractions).retractions == 0  # once


def test_many_threads_many_votes_none_lost_none_doubled(tmp_path):
    s = VoteStore.in_folder(tmp_path)
    s.import_tutorial_pool()
    errors = []

    def voter(i):
        try:
            for _ in range(20):
                view = s.next_pair(f"voter-{i}")
                s.record_vote(f"voter-{i}", view.pair_id, "a_better", view.shown_left)
                s.record_vote(f"voter-{i}", view.pair_id, "b_better", view.shown_left)  # repeat
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=voter, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    votes = s.votes()
    assert len(votes) == 400
    assert len({(v.voter, v.pair_id) for v in votes}) == 400
    total = s.connection().execute("SELECT sum(vote_count) FROM pairs").fetchone()[0]
    assert total == 400
    # one idea's votes (a Leaderboard's idea) are read alone, in the same order
    idea = votes[-1].idea
    assert s.votes(idea=idea) == [v for v in votes if v.idea == idea] != votes
    assert s.votes(idea="no such idea") == []


def test_restored_votes_keep_their_ids_once_and_their_meaning(tmp_path):
    source = VoteStore.in_folder(tmp_path / "a")
    source.add_pairs([Pair("idea", "Title one", "Title two"), Pair("idea", "Title three",
                      "Title four")], "p", "test")  # fmt: skip
    source.record_vote("ann", 1, "a_better", "b", seconds_taken=2.5)
    source.record_vote("bob", 2, "both_bad", "a")
    records = [vote_record(v) for v in source.votes()]

    # The target holds the first pair the other way round: the restored vote must still say
    # that "Title one" won.
    target = VoteStore.in_folder(tmp_path / "b")
    target.add_pairs([Pair("idea", "Title two", "Title one")], "p", "test")
    broken = [{"vote_id": "x"}, "not a record", {**records[0], "choice": "maybe",
              "vote_id": "other"}]  # fmt: skip
    assert restore_votes(target, [*records, *broken]) == (2, 3)
    assert restore_votes(target, records) == (0, 0)  # again: nothing new
    restored = {v.vote_id: v for v in target.votes()}
    assert set(restored) == {r["vote_id"] for r in records}
    first = restored[records[0]["vote_id"]]
    assert (first.title_a, first.title_b, first.choice, first.shown_left) == (
        "Title two",
        "Title one",
        "b_better",
        "a",
    )
    assert first.seconds_taken == 2.5 and first.created_at == records[0]["created_at"]
    assert target.voter_progress("ann")[0] == 1
    assert target.has_voted("ann", first.pair_id)


def test_a_vote_faster_than_reading_is_stored_but_flagged(store):
    now = time.time()
    assert vote_on_shown_pair(store, "quick", 1, "left", Shown(1, "a", now - 0.3), now).recorded
    assert vote_on_shown_pair(store, "quick", 2, "left", Shown(2, "a", now - 2.0), now).recorded
    flags = {v.pair_id: v.flag for v in store.votes()}
    assert flags == {1: "fast", 2: None}


def test_a_burst_voters_votes_carry_both_marks_and_only_known_flags_are_stored(store):
    now = time.time()
    burst = dict(burst=True)
    assert vote_on_shown_pair(store, "bot", 1, "left", Shown(1, "a", now - 0.3), now, **burst)
    assert vote_on_shown_pair(store, "bot", 2, "left", Shown(2, "a", now - 2.0), now, **burst)
    assert {v.pair_id: v.flags for v in store.votes()} == {
        1: {"burst", "fast"}, 2: {"burst"},
    }  # fmt: skip
    for bad in ("slow", "fast,burst", "fast,fast", ""):
        with pytest.raises(UserError, match="flag"):
            store.record_vote("ann", 1, "a_better", "a", flag=bad)
    records = [vote_record(v) for v in store.votes()]
    assert {r["flag"] for r in records} == {"burst,fast", "burst"}
    forged = {**records[0], "vote_id": "x1", "voter": "eve", "flag": "trusted"}
    copy = VoteStore.in_folder(store.path.parent / "copy")
    assert restore_votes(copy, [*records, forged]) == (2, 1)


def test_gold_pairs_know_their_answer_and_survive_a_restore(tmp_path):
    store = VoteStore.in_folder(tmp_path / "a")
    store.add_pairs([Pair("idea", "Broken TITLE!!!", "A good title")], "p", "test")
    # the existing pair becomes the check, stored the other way round
    pair_id = store.add_gold_pair("idea", "A good title", "Broken TITLE!!!")
    new_pair = store.add_gold_pair("another idea", "Fine title", "fine title fine title")
    assert pair_id == 1 and new_pair == 2 and store.counts()["pairs"] == 2
    store.record_vote("ann", 1, "b_better", "a")
    store.record_vote("ann", 2, "b_better", "b", flag="fast")
    votes = {v.pair_id: v for v in store.votes()}
    assert (votes[1].gold, votes[2].gold) == ("b", "a")
    assert votes[2].flag == "fast"
    with pytest.raises(UserError, match="same title twice"):
        store.add_gold_pair("idea", "Same", "Same")

    target = VoteStore.in_folder(tmp_path / "b")
    target.add_pairs([Pair("another idea", "fine title fine title", "Fine title")], "p", "t")
    assert restore_votes(target, [vote_record(v) for v in store.votes()]) == (2, 0)
    restored = {v.idea: v for v in target.votes()}
    assert restored["another idea"].gold == "b"  # "Fine title" is b in the target
    assert restored["another idea"].flag == "fast"
    assert restored["idea"].gold == "b"
