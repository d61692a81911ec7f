"""What the voting link serves first: pool priorities and retired pools, in the store and
through the app over real HTTP (gradio_client), and a fresh app without the tutorial pool."""

import os
import random

import pytest
from gradio_client import Client

from app_process import free_port
from pipeline.appdata import tutorial_pool_wanted
from pipeline.errors import UserError
from pipeline.mirror import pool_records, restore_pools
from pipeline.pairs import Pair
from pipeline.votes import VoteStore

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PASSWORD = "pools owner password"
VOTER = "voter-0123456789abcdef"


def pairs(prefix: str, count: int) -> list[Pair]:
    return [Pair(f"{prefix} idea {i}", f"{prefix} title {i} one", f"{prefix} title {i} two")
            for i in range(count)]  # fmt: skip


def pool_of(store: VoteStore, pair_id: int) -> str:
    sql = "SELECT pool FROM pairs WHERE id = ?"
    return store.connection().execute(sql, (pair_id,)).fetchone()[0]


def test_a_pool_served_first_goes_above_every_pool_still_served(tmp_path):
    store = VoteStore.in_folder(tmp_path)
    for name in ("a", "b", "c"):
        store.add_pairs(pairs(name, 1), name, "imported")
    store.set_pool("a", priority=4)
    store.set_pool("b", priority=9, retired=True)  # not served: not counted
    assert (store.serve_first("c").priority, store.serve_first("a").priority) == (5, 6)
    store.set_pool("b", priority=1000, retired=False)
    first = store.serve_first("c")  # the highest a pool may have: level with it
    assert (first.priority, first.retired) == (1000, False)
    store.set_pool("c", retired=True)
    assert store.serve_first("c").retired is False  # served again
    with pytest.raises(UserError, match="no pool 'd'"):
        store.serve_first("d")


def test_pool_settings_mirrored_come_back_the_latest_of_each_last(tmp_path):
    store = VoteStore.in_folder(tmp_path / "a")
    for name in ("a", "b"):
        store.add_pairs(pairs(name, 1), name, "imported")
    store.set_pool("a", priority=3)
    store.set_pool("b", retired=True)
    older = pool_records(store)
    assert [(r["name"], r["priority"], r["retired"]) for r in older] == [
        ("a", 3, False), ("b", 0, True)]  # fmt: skip
    store.set_pool("a", priority=0)  # set back to the default: still recorded, and newer
    newer = pool_records(store)
    fresh = VoteStore.in_folder(tmp_path / "b")
    fresh.add_pairs(pairs("a", 1), "a", "imported")  # b's pairs were not mirrored
    bad = [{"name": "a"}, "not a record", {**newer[0], "priority": 5000}]
    assert restore_pools(fresh, [*newer, *bad, *older]) == (2, 3)
    assert [(p.name, p.priority, p.retired) for p in fresh.pools()] == [("a", 0, False)]


def test_the_highest_priority_pool_is_served_first_and_a_retired_one_never(tmp_path):
    store = VoteStore.in_folder(tmp_path)
    store.add_pairs(pairs("old", 6), "old", "imported")
    store.add_pairs(pairs("new", 3), "round:new", "generated")
    assert [p.name for p in store.pools()] == ["old", "round:new"]  # equal priority: by name

    store.set_pool("round:new", priority=5)
    assert [p.name for p in store.pools()] == ["round:new", "old"]
    rng = random.Random(0)
    served = []
    for _ in range(4):
        view = store.next_pair(VOTER, rng=rng)
        served.append(pool_of(store, view.pair_id))
        store.record_vote(VOTER, view.pair_id, "a_better", "a")
    # the prioritised pool's three pairs come first, then the next pool down
    assert served == ["round:new"] * 3 + ["old"]
    assert store.voter_progress(VOTER) == (4, 5)

    store.set_pool("old", retired=True)
    assert store.next_pair(VOTER, rng=rng) is None and store.voter_progress(VOTER) == (4, 0)
    info = {p.name: p for p in store.pools()}
    assert info["old"].retired and info["old"].votes == 1  # retiring keeps its votes
    assert info["round:new"].priority == 5 and info["round:new"].unvoted == 0
    assert len(store.votes()) == 4

    store.set_pool("old", retired=False)  # served again, its priority as it was
    assert pool_of(store, store.next_pair(VOTER, rng=rng).pair_id) == "old"
    assert {p.name: p.priority for p in store.pools()} == {"round:new": 5, "old": 0}


def test_pool_settings_refuse_what_is_not_there_and_change_nothing(tmp_path):
    store = VoteStore.in_folder(tmp_path)
    store.add_pairs(pairs("old", 2), "old", "imported")
    with pytest.raises(UserError, match="no pool 'nope': pools are old"):
        store.set_pool("nope", priority=1)
    for bad in (2.5, 5000):
        with pytest.raises(UserError, match="whole number"):
            store.set_pool("old", priority=bad)
    assert [(p.priority, p.retired) for p in store.pools()] == [(0, False)]


def test_the_tutorial_pool_is_loaded_unless_switched_off():
    assert tutorial_pool_wanted({}) and tutorial_pool_wanted({"TITLE_DPO_TUTORIAL_POOL": "1"})
    for off in ("0", "off", "No", "false"):
        assert not tutorial_pool_wanted({"TITLE_DPO_TUTORIAL_POOL": off})


@pytest.fixture
def pools_app(tiny_model_dir, tmp_path):
    """The app with an owner password (loopback clients are voters until they sign in) and
    without the tutorial pool: its store holds a warm-up pool and a later one."""
    from app import build_app, serve
    from pipeline.access import AccessSettings

    data = tmp_path / "data"
    store = VoteStore.in_folder(data)
    store.add_pairs(pairs("warm-up", 4), "warm-up", "imported")
    store.add_pairs(pairs("later", 2), "later", "imported")
    access = AccessSettings(owner_password=PASSWORD)
    app = build_app(str(tiny_model_dir), str(data), access, tutorial_pool=False)
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/", store
    app.close()


def test_the_owner_decides_what_voters_are_served_first(pools_app):
    url, store = pools_app
    assert store.counts()["pairs"] == 6  # the tutorial's pairs were not added

    visitor = Client(url, verbose=False)
    with pytest.raises(Exception, match="owner only"):
        visitor.predict("later", 9, True, api_name="/pool_set")
    with pytest.raises(Exception, match="owner only"):
        visitor.predict(api_name="/pools")
    assert [(p.priority, p.retired) for p in store.pools()] == [(0, False), (0, False)]

    owner = Client(url, verbose=False)
    owner.predict(PASSWORD, api_name="/owner_sign_in")
    message, table, _ = owner.predict("later", 3, True, api_name="/pool_set")
    assert message == "Saved. later: 2 pairs, 0 votes (priority 3)"
    assert [row[0] for row in table["data"]] == ["later", "warm-up"]
    owner.predict("warm-up", 0, False, api_name="/pool_set")  # retired

    # a voter's first votes land on the prioritised pool; the retired one is never served
    voter_client = Client(url, verbose=False)
    voter, _idea, _left, _right, pair_id, _progress = voter_client.predict(None, api_name="/start")
    voted = []
    while pair_id is not None:
        voted.append(pair_id)
        *_, pair_id, _progress = voter_client.predict(voter, pair_id, api_name="/vote_left")
    assert [pool_of(store, p) for p in voted] == ["later", "later"]
    table, _ = owner.predict(api_name="/pools")
    assert [row[:3] + row[4:] for row in table["data"]] == [
        ["later", 2, 2, 3, "yes"],
        ["warm-up", 4, 0, 0, "no"],
    ]
