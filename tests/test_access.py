"""Roles, signed voter ids and rate limits (pipeline.access), on the library itself."""

import os
import stat
import time

import pytest

from pipeline.access import (
    OWNER,
    VOTER,
    AccessSettings,
    Gatekeeper,
    Refused,
    RequestFacts,
    Voter,
    load_secret,
)
from pipeline.errors import UserError
from pipeline.rate_limits import LIMITS_FILE, LimitLog, RateLimiter

SECRET = b"s" * 32
LOCAL = RequestFacts("127.0.0.1", session="page-1")
REMOTE = RequestFacts("203.0.113.9", session="page-2")


def gate(**settings) -> Gatekeeper:
    return Gatekeeper(AccessSettings(**settings), SECRET)


def test_locally_the_person_at_the_machine_is_the_owner():
    keeper = gate()
    assert keeper.caller(LOCAL).role == OWNER
    assert keeper.caller(RequestFacts("::1")).role == OWNER
    assert keeper.caller(REMOTE).role == VOTER


@pytest.mark.parametrize("settings", [{"shared": True}, {"owner_password": "pw-123456"}])
def test_shared_or_with_a_password_loopback_is_a_voter_until_the_password(settings):
    keeper = gate(**settings)
    assert keeper.caller(LOCAL).role == VOTER
    with pytest.raises(Refused, match=r"owner only.*owner password"):
        keeper.require(keeper.caller(LOCAL), OWNER)
    if "owner_password" in settings:
        with pytest.raises(Refused, match="wrong owner password"):
            keeper.sign_in(LOCAL, "guess")
        caller, owner_pass = keeper.sign_in(LOCAL, "pw-123456")
        assert caller.how == "password" and "pw-123456" not in owner_pass
        assert keeper.caller(LOCAL).role == OWNER
        reloaded = RequestFacts("127.0.0.1", session="page-9")
        assert keeper.caller(reloaded).role == VOTER  # another page, until it shows the pass
        expires, signature = owner_pass.split(".")
        for bad in (None, "", "x.y", f"{expires}.{signature[::-1]}",
                    f"{int(expires) + 1}.{signature}", f"1.{signature}"):  # fmt: skip
            assert keeper.resume(reloaded, bad).role == VOTER
        assert keeper.resume(reloaded, owner_pass).role == OWNER
        assert keeper.caller(reloaded).role == OWNER  # for the rest of that page's session
        changed = gate(**{**settings, "owner_password": "a new password"})
        assert changed.resume(RequestFacts("127.0.0.1", session="p"), owner_pass).role == VOTER
    else:  # --share with no password set: nobody can become the owner through the link
        with pytest.raises(Refused, match="no owner password"):
            keeper.sign_in(LOCAL, "anything")


def test_password_guessing_is_limited_per_address():
    keeper = gate(owner_password="right-one", sign_ins_per_hour=3)
    for _ in range(3):
        with pytest.raises(Refused, match="wrong"):
            keeper.sign_in(REMOTE, "wrong")
    with pytest.raises(Refused, match="too many password attempts"):
        keeper.sign_in(REMOTE, "right-one")  # even the right one, once over the limit
    assert keeper.sign_in(LOCAL, "right-one")[0].role == OWNER  # another address: unaffected


def test_on_a_space_the_owner_is_who_signs_in_as_the_owner():
    keeper = gate(on_space=True, space_owner="team", owners=frozenset({"carol"}))
    proxy = "10.0.0.1"  # on a Space every request arrives from the proxy
    assert keeper.caller(RequestFacts("127.0.0.1")).role == VOTER  # loopback means nothing
    assert keeper.caller(RequestFacts(proxy, username="team")).role == OWNER
    assert keeper.caller(RequestFacts(proxy, username="carol")).role == OWNER
    member = keeper.caller(RequestFacts(proxy, username="dan", orgs=("team", "x")))
    assert (member.role, member.how) == (OWNER, "signed in as dan")
    assert keeper.caller(RequestFacts(proxy, username="eve", orgs=("x",))).role == VOTER


def test_settings_from_the_environment():
    env = {"SPACE_ID": "alice/titles", "TITLE_DPO_OWNERS": " bob, carol ,",
           "TITLE_DPO_VOTERS": "signed-in", "TITLE_DPO_VOTES_PER_MINUTE": "5"}  # fmt: skip
    s = AccessSettings.from_env(environ=env)
    assert (s.on_space, s.space_owner, s.owners) == (True, "alice", frozenset({"bob", "carol"}))
    assert s.voters_signed_in and s.votes_per_minute == 5 and not s.voters_may_generate
    assert "signed in with Hugging Face as alice, bob, carol" in s.describe()
    local = AccessSettings.from_env(shared=True, environ={"TITLE_DPO_OWNER_PASSWORD": "x" * 9})
    assert not local.on_space and local.password_required and "x" * 9 not in local.describe()
    for bad in ({"TITLE_DPO_VOTERS": "robots"}, {"TITLE_DPO_VOTES_PER_MINUTE": "lots"},
                {"TITLE_DPO_NEW_VOTERS_PER_HOUR": "0"},
                {"TITLE_DPO_VOTERS": "signed-in"}):  # fmt: skip  # signed-in off a Space
        with pytest.raises(UserError):
            AccessSettings.from_env(environ=bad)


def test_voter_ids_are_issued_signed_and_checked():
    keeper = gate()
    voter = keeper.caller(REMOTE)
    token, voter_id = keeper.voter_for_page(voter, None)
    assert voter_id.startswith("v-") and token.startswith(voter_id + ".")
    assert keeper.voter_id(token) == voter_id
    assert keeper.voter_for_page(voter, token) == (token, voter_id)  # a reload keeps it
    for forged in ("v-0123456789abcdef", "v-0123456789abcdef.AAAA", voter_id + ".x",
                   token.replace("v-", "v-f", 1), "hf:alice", ""):  # fmt: skip
        with pytest.raises(Refused, match="not issued by this app"):
            keeper.voter_id(forged)
    other_app = Gatekeeper(AccessSettings(), b"t" * 32)
    with pytest.raises(Refused):
        other_app.voter_id(token)
    fresh, fresh_id = keeper.voter_for_page(voter, "v-made.up")  # a bad id: a new one
    assert fresh_id != voter_id and keeper.voter_id(fresh) == fresh_id


def test_voters_minted_in_a_burst_from_one_address_are_marked():
    keeper = gate(burst_voters_per_minute=2)
    voter = keeper.caller(REMOTE)
    tokens = [keeper.voter_for_page(voter, None)[0] for _ in range(4)]
    assert [keeper.voter_of(voter, t).burst for t in tokens] == [False, False, True, True]
    marked = tokens[2]
    assert marked.split(".")[1] == "burst"
    # the mark is signed with the id: dropping it, or adding it to another, is a forgery
    voter_id, _, signature = marked.split(".")
    for forged in (f"{voter_id}.{signature}", f"{tokens[0].split('.')[0]}.burst.{signature}",
                   f"{voter_id}.fast.{signature}"):  # fmt: skip
        with pytest.raises(Refused, match="not issued by this app"):
            keeper.voter_of(voter, forged)
    assert keeper.voter_for_page(voter, marked) == (marked, voter_id)  # a reload keeps it
    # another address, and the owner, mint unmarked; so does --share, where all look alike
    assert not keeper.voter_of(voter, keeper.voter_for_page(keeper.caller(
        RequestFacts("198.51.100.7")), None)[0]).burst  # fmt: skip
    owner = keeper.caller(LOCAL)
    assert not any(keeper.voter_of(owner, keeper.voter_for_page(owner, None)[0]).burst
                   for _ in range(4))  # fmt: skip
    shared = gate(shared=True, owner_password="pw", burst_voters_per_minute=2)
    tunnel = shared.caller(LOCAL)
    assert not any(shared.voter_of(tunnel, shared.voter_for_page(tunnel, None)[0]).burst
                   for _ in range(4))  # fmt: skip


def test_new_voter_ids_per_address_are_limited():
    keeper = gate(new_voters_per_hour=3)
    voter = keeper.caller(REMOTE)
    ids = {keeper.voter_for_page(voter, None)[1] for _ in range(3)}
    assert len(ids) == 3
    with pytest.raises(Refused, match="too many new voters from your address"):
        keeper.voter_for_page(voter, None)
    elsewhere = keeper.caller(RequestFacts("198.51.100.7"))
    assert keeper.voter_for_page(elsewhere, None)[1] not in ids
    owner = keeper.caller(LOCAL)
    assert len({keeper.voter_for_page(owner, None)[1] for _ in range(5)}) == 5  # not limited


def test_behind_trusted_proxies_the_address_they_saw_counts():
    # a Space: its proxy appends the address it saw; what the client wrote before is not read
    keeper = gate(on_space=True, space_owner="alice", trusted_proxies=1, new_voters_per_hour=1)
    via_proxy = [RequestFacts("10.0.0.1", forwarded_for=f"1.2.3.4, 198.51.100.{i}")
                 for i in range(3)]  # fmt: skip
    assert [keeper.caller(f).address for f in via_proxy] == [f"198.51.100.{i}" for i in range(3)]
    for facts in via_proxy:  # three visitors: one new id each
        keeper.voter_for_page(keeper.caller(facts), None)
    claiming_another = RequestFacts("10.0.0.1", forwarded_for="203.0.113.50, 198.51.100.0")
    with pytest.raises(Refused, match="too many new voters"):  # claims change nothing
        keeper.voter_for_page(keeper.caller(claiming_another), None)
    # two proxies (say a CDN in front of the Space's): the entry two from the right
    two = gate(trusted_proxies=2)
    assert two.address(RequestFacts("10.0.0.1", forwarded_for="6.6.6.6, 198.51.100.7, "
                                    "10.0.0.2")) == "198.51.100.7"  # fmt: skip
    # fewer entries than trusted proxies: it did not come through them, its own address counts
    assert two.address(RequestFacts("10.0.0.1", forwarded_for="198.51.100.7")) == "10.0.0.1"
    assert keeper.address(RequestFacts("10.0.0.1")) == "10.0.0.1"
    # no trusted proxy (a laptop, a LAN): the header is the client's own word, never read
    local = gate(new_voters_per_hour=1)
    assert local.address(RequestFacts("203.0.113.9", forwarded_for="1.2.3.4")) == "203.0.113.9"


def test_trusted_proxies_from_the_environment():
    assert AccessSettings.from_env(environ={}).trusted_proxies == 0
    assert AccessSettings.from_env(environ={"SPACE_ID": "alice/t"}).trusted_proxies == 1
    assert (
        "entry 1 from the right" in AccessSettings.from_env(environ={"SPACE_ID": "a/t"}).describe()
    )
    two = AccessSettings.from_env(environ={"SPACE_ID": "alice/t", "TITLE_DPO_TRUSTED_PROXIES": "2"})
    assert two.trusted_proxies == 2
    none = AccessSettings.from_env(
        environ={"SPACE_ID": "alice/t", "TITLE_DPO_TRUSTED_PROXIES": "0"}
    )
    assert none.trusted_proxies == 0
    for bad in ("-1", "one"):
        with pytest.raises(UserError, match="TITLE_DPO_TRUSTED_PROXIES"):
            AccessSettings.from_env(environ={"TITLE_DPO_TRUSTED_PROXIES": bad})


def test_under_share_a_classroom_behind_one_tunnel_is_not_locked_out():
    """Through --share every visitor arrives from this machine: per-address limits would hold
    a whole class to one person's share. They are off; the per-voter limit still holds."""
    settings = AccessSettings(shared=True, owner_password="p" * 9, new_voters_per_hour=3,
                              votes_per_minute=2, address_votes_per_minute=5)  # fmt: skip
    assert "share tunnel" in settings.describe()
    keeper = Gatekeeper(settings, SECRET)
    tunnel = keeper.caller(RequestFacts("127.0.0.1", forwarded_for="1.2.3.4"))
    assert tunnel.role == VOTER and tunnel.address == "127.0.0.1"
    class_ids = {keeper.voter_for_page(tunnel, None)[1] for _ in range(40)}
    assert len(class_ids) == 40
    for i, voter in enumerate(sorted(class_ids)):  # 40 votes a minute from one address
        keeper.admit_vote(tunnel, voter, now=100.0 + i)
    keeper.admit_vote(tunnel, "v-one", now=150.0)
    keeper.admit_vote(tunnel, "v-one", now=151.0)
    with pytest.raises(Refused, match="faster than anyone can read"):
        keeper.admit_vote(tunnel, "v-one", now=152.0)
    for i in range(settings.generations_per_hour + 5):  # a class trying Generate
        keeper.admit_generation(tunnel, now=200.0 + i)


def test_voters_generating_are_limited_per_address_the_owner_not():
    keeper = gate(generations_per_hour=2)
    voter, owner = keeper.caller(REMOTE), keeper.caller(LOCAL)
    keeper.admit_generation(voter, now=100.0)
    keeper.admit_generation(voter, now=101.0)
    with pytest.raises(Refused, match="at most 2 times an hour"):
        keeper.admit_generation(voter, now=102.0)
    keeper.admit_generation(voter, now=3701.0)  # an hour on
    for i in range(5):
        keeper.admit_generation(owner, now=102.0 + i)


def test_votes_per_voter_and_per_address_are_limited():
    keeper = gate(votes_per_minute=3, address_votes_per_minute=5)
    voter = keeper.caller(REMOTE)
    for i in range(3):
        keeper.admit_vote(voter, "v-one", now=100.0 + i)
    with pytest.raises(Refused, match="faster than anyone can read"):
        keeper.admit_vote(voter, "v-one", now=104.0)
    keeper.admit_vote(voter, "v-two", now=105.0)
    keeper.admit_vote(voter, "v-two", now=105.5)
    with pytest.raises(Refused, match="too many votes from your address"):
        keeper.admit_vote(voter, "v-three", now=106.0)
    keeper.admit_vote(voter, "v-one", now=161.0)  # a minute on, the first votes have expired
    for _ in range(10):
        keeper.admit_vote(keeper.caller(LOCAL), "v-owner", now=106.0)  # the owner: no limit


def test_signed_in_voting_uses_the_username():
    keeper = gate(on_space=True, space_owner="alice", voters_signed_in=True)
    anonymous = keeper.caller(RequestFacts("10.0.0.1"))
    with pytest.raises(Refused, match="sign in with Hugging Face to vote"):
        keeper.voter_for_page(anonymous, None)
    bob = keeper.caller(RequestFacts("10.0.0.1", username="bob"))
    assert keeper.voter_for_page(bob, "v-whatever.sig") == ("", "hf:bob")
    assert keeper.voter_of(bob, "anything the client sends") == Voter("hf:bob")


def test_generate_is_the_owners_switch():
    keeper = gate()
    voter, owner = keeper.caller(REMOTE), keeper.caller(LOCAL)
    with pytest.raises(Refused, match="Generate is for the owner"):
        keeper.require(voter, "generate")
    keeper.require(owner, "generate")
    keeper.voters_may_generate = True
    keeper.require(voter, "generate")
    with pytest.raises(ValueError):
        keeper.require(voter, "superuser")


def test_rate_limiter_window_slides():
    limiter = RateLimiter(2, 10)
    assert [limiter.admit("k", t) for t in (0, 1, 2, 10.5, 11.5)] == [
        True, True, False, True, True,
    ]  # fmt: skip


def test_the_secret_is_made_once_and_kept_private(tmp_path):
    first = load_secret(tmp_path, environ={})
    assert load_secret(tmp_path, environ={}) == first and len(first) == 64
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600
    assert load_secret(tmp_path, environ={"TITLE_DPO_SECRET": "k" * 20}) == b"k" * 20
    with pytest.raises(UserError, match="at least 16"):
        load_secret(tmp_path, environ={"TITLE_DPO_SECRET": "short"})
    (tmp_path / "secret.key").write_text("")
    with pytest.raises(UserError, match="not a signing key"):
        load_secret(tmp_path, environ={})


def test_the_limits_counts_survive_a_restart(tmp_path):
    settings = AccessSettings(new_voters_per_hour=2, votes_per_minute=3)
    first = Gatekeeper.for_folder(settings, tmp_path)
    voter = first.caller(REMOTE)
    ids = [first.voter_for_page(voter, None)[1] for _ in range(2)]
    for _ in range(3):
        first.admit_vote(voter, ids[0])
    assert (tmp_path / LIMITS_FILE).is_file()

    again = Gatekeeper.for_folder(settings, tmp_path)  # the app, started again
    voter = again.caller(REMOTE)
    with pytest.raises(Refused, match="too many new voters"):
        again.voter_for_page(voter, None)
    with pytest.raises(Refused, match="faster than anyone can read"):
        again.admit_vote(voter, ids[0])
    again.admit_vote(voter, ids[1])  # each count is its own key's
    again.voter_for_page(again.caller(RequestFacts("198.51.100.7")), None)


def test_a_restart_reads_back_only_the_window(tmp_path):
    log = LimitLog.in_folder(tmp_path)
    old = RateLimiter(1, 10, log, "test")
    assert old.admit("k", now=time.time() - 20)  # outside the window by the time it restarts
    assert RateLimiter(1, 10, log, "test").admit("k")
    assert not RateLimiter(1, 10, log, "test").admit("k")  # that one is inside
    assert RateLimiter(1, 10, log, "other").admit("k")  # limiters keep apart
