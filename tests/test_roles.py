"""Who may do what through the shared link, over real HTTP (gradio_client) with the loopback
Hub: every owner endpoint refuses a voter and changes nothing; the owner gets in locally, with
the password under --share, and signed in with Hugging Face on a simulated Space."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from app_process import start_app, stop_app
from hub_server import DEFAULT_TOKENS, hub_env, session_cookie, space_env
from pipeline.ballot import MIN_READ_SECONDS
from pipeline.votes import VoteStore
from ui.guard import Guard

PASSWORD = "correct horse battery staple"
# Endpoints a voter may call; every other endpoint the app exposes must refuse a voter.
VOTER_ENDPOINTS = {
    "/start", "/vote_left", "/vote_right", "/vote_tie", "/vote_both_bad", "/skip", "/undo_vote",
    "/leaderboard", "/idea_scores", "/my_role", "/model_status", "/owner_sign_in",
    "/owner_sign_out",  # it only ever takes the owner's role away, from the caller's own page
    *(f"/{name}" for name in Guard.HARMLESS),  # Gradio's own page-only events
}  # fmt: skip
TOKENS = {
    **DEFAULT_TOKENS,
    "hf_alice_oauth": ("alice", "write"),  # what alice's Sign-in gives the Space
    "hf_carol_oauth": ("carol", "write"),
    "hf_bob_oauth": ("bob", "write"),
}


@pytest.fixture
def hub_tokens():  # conftest's `hub` serves these users
    return TOKENS


def launch(hub, tmp_path, model, *args, token="hf_alice_write", **env):
    base = {**hub_env(hub, token, cache_dir=tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    return start_app("--model", str(model), "--data", str(tmp_path / "data"), *args,
                     log_path=tmp_path / "app.log", env={**base, **env})  # fmt: skip


def endpoints(client: Client) -> dict[str, dict]:
    """Every endpoint the running app exposes, from the app itself."""
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def example_args(info: dict, csv_path) -> list:
    """Inputs a client would plausibly send: the field's default, else Gradio's example."""
    args = []
    for p in info["parameters"]:
        if p["component"] == "File":
            args.append(handle_file(str(csv_path)))
        elif p.get("parameter_has_default"):
            args.append(p["parameter_default"])
        else:
            args.append(p["example_input"])
    return args


def snapshot(hub, data) -> dict:
    """What a refused call must not change: Hub repos, run folders, the pool, the votes."""
    store = VoteStore.open_existing(data)
    return {
        "hub_writes": [r for r in hub.request_log if r[0] in ("POST", "PUT", "DELETE")],
        "runs": sorted(p.name for p in (data / "runs").glob("*")),
        "counts": store.counts(),
        "gold": store.connection().execute("SELECT count(*) FROM pairs WHERE gold IS NOT NULL")
        .fetchone()[0],
        "rounds": [r.name for r in store.rounds()],
    }  # fmt: skip


def raw_call(client: Client, name: str, data: list) -> str:
    """Call endpoint `name` over plain HTTP with exactly `data` as its inputs (gradio_client
    insists on the right number of them): the text of the answer's event stream."""
    import httpx

    base = f"{client.src.rstrip('/')}/gradio_api/call/{name.lstrip('/')}"
    with httpx.Client(headers=client.headers, timeout=60) as http:
        event = http.post(base, json={"data": data}).json()["event_id"]
        return http.get(f"{base}/{event}").text


def upload(url: str, path, headers: dict | None = None, route: str = "upload",
           field: str = "files") -> httpx.Response:  # fmt: skip
    """Send a file to one of Gradio's routes that take files: the upload route, as a page's
    file box does (or its screen recorder's, `process_recording`, field `video`)."""
    with open(path, "rb") as f:
        return httpx.post(f"{url}gradio_api/{route}", files=[(field, (Path(path).name, f))],
                          headers=headers, timeout=60)  # fmt: skip


def assert_voter_refused_everywhere(client, hub, data, csv_path, uploads=True) -> set[str]:
    """Call every non-voter endpoint as this client, with plausible inputs, with inputs of
    the wrong kind (a number where a file, a list or a choice belongs) and with none at all;
    each must refuse with the one message, before Gradio reads the inputs, and leave
    everything as it was. `uploads`: whether this client may upload a file at all (without,
    a plausible file input is refused at its upload). Returns the endpoints tried."""
    before = snapshot(hub, data)
    owner_endpoints = {name: info for name, info in endpoints(client).items()
                       if name not in VOTER_ENDPOINTS}  # fmt: skip
    assert {"/train_start", "/hub_push_dataset", "/hub_download_dataset", "/use_trained_model",
            "/import_pairs", "/add_gold_pair", "/voters_may_generate", "/evaluate_create",
            "/evaluate_report", "/evaluate_judge", "/evaluate_choices", "/reward_start",
            "/reward_resume", "/rl_start", "/rl_resume", "/train_method", "/compare_runs",
            "/compare_choices", "/best_of_n", "/reward_models", "/pools", "/pool_set",
            "/iterations", "/iteration_start", "/iteration_train", "/jobs_preview",
            "/jobs_submit", "/jobs_status", "/jobs_cancel", "/jobs_use_model",
            "/run_delete_check", "/run_delete", "/run_drop_checkpoints", "/runs_on_disk",
            } <= set(owner_endpoints)  # fmt: skip
    for name, info in owner_endpoints.items():
        expected = "Generate is for the owner" if name == "/generate" else "owner only"
        wrong_kind = [12345] * len(info["parameters"])
        takes_file = any(p["component"] == "File" for p in info["parameters"])
        refused_upload = "403 Forbidden" if takes_file and not uploads else expected
        for args, refusal in ((example_args(info, csv_path), refused_upload),
                              (wrong_kind, expected)):  # fmt: skip
            with pytest.raises(Exception, match=refusal):
                client.predict(*args, api_name=name)
        if info["parameters"]:
            assert expected in raw_call(client, name, []), name
    # the switch was refused too: Generate is still closed to voters
    with pytest.raises(Exception, match="Generate is for the owner"):
        client.predict("an idea", 2, 0.7, api_name="/generate")
    assert snapshot(hub, data) == before
    return set(owner_endpoints)


@pytest.fixture
def pairs_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("idea,title_a,title_b\nuploaded idea,Title one,Title two\n")
    return path


def test_with_a_password_loopback_is_a_voter_until_the_password(
    hub, tmp_path, tiny_model_dir, pairs_csv
):
    process, url = launch(hub, tmp_path, tiny_model_dir, "--share",
                          TITLE_DPO_OWNER_PASSWORD=PASSWORD)  # fmt: skip
    data = tmp_path / "data"
    try:
        visitor = Client(url, verbose=False)
        assert visitor.predict(None, api_name="/my_role").startswith("You are voting")
        assert visitor.predict(api_name="/model_status") == ""  # no model loaded for a voter
        tried = assert_voter_refused_everywhere(visitor, hub, data, pairs_csv)
        assert len(tried) >= 15
        # the page's config, which every visitor reads, names no folder of the app's data,
        # nor trackio's (the app's inherits the tests' TRACKIO_DIR), nor the app's model
        config = httpx.get(url + "config").text
        assert str(tmp_path) not in config and os.environ["TRACKIO_DIR"] not in config
        assert str(tiny_model_dir) not in config
        *_, password_box, message = visitor.predict("guess", api_name="/owner_sign_in")
        assert message == "wrong owner password" and password_box == ""
        assert visitor.predict(None, api_name="/my_role").startswith("You are voting")  # still

        owner = Client(url, verbose=False)
        role, owner_pass, password_box, _ = owner.predict(PASSWORD, api_name="/owner_sign_in")
        assert role.startswith("**Owner** (owner password)")
        assert password_box == "" and PASSWORD not in owner_pass  # the password is not kept
        # The browser keeps the pass: its next page (a reload) is the owner's without the
        # password; a pass it did not get is worth nothing.
        forger = Client(url, verbose=False)
        assert forger.predict(f"{2**40}.forged", api_name="/my_role").startswith("You are")
        with pytest.raises(Exception, match="owner only"):
            forger.predict(api_name="/train_status")
        reloaded = Client(url, verbose=False)
        assert reloaded.predict(owner_pass, api_name="/my_role").startswith("**Owner**")
        reloaded.predict(api_name="/train_status")
        # The same calls now go through, for this session only.
        owner.predict(False, api_name="/voters_may_generate")
        assert "Gold pair" in owner.predict("gold idea", "A fine title", "a FINE title!!!!",
                                            api_name="/add_gold_pair")  # fmt: skip
        assert owner.predict(handle_file(str(pairs_csv)), api_name="/import_pairs").startswith(
            "Imported 1"
        )
        pushed = owner.predict("The tutorial's 1,140 labelled pairs", 1, "roles-ds", False,
                               False, 0, api_name="/hub_push_dataset")  # fmt: skip
        assert pushed.startswith("Pushed: [alice/roles-ds](")
        assert owner.predict(api_name="/model_status").startswith(f"Model: {tiny_model_dir}")
        with pytest.raises(Exception, match="no finished run yet"):  # past the guard
            owner.predict(api_name="/use_trained_model")
        for name in tried:  # no owner endpoint refuses the owner
            try:
                owner.predict(*example_args(endpoints(owner)[name], pairs_csv), api_name=name)
            except Exception as exc:
                assert "owner only" not in str(exc), name
        with pytest.raises(Exception, match="owner only"):  # another page is still a voter
            visitor.predict(api_name="/train_status")
        owner.predict(True, api_name="/voters_may_generate")  # the owner's switch
        table, *_ = visitor.predict("an idea", 2, 0.7, api_name="/generate")
        assert len(table["data"]) == 2
        # Signing out: this page is a voter's again and its browser drops the pass; a page
        # that already held the pass stays the owner's until it closes.
        assert visitor.predict(api_name="/owner_sign_out")[0].startswith("You are voting")
        role, kept_pass = owner.predict(api_name="/owner_sign_out")
        assert role.startswith("You are voting") and kept_pass == "signed out"  # no pass
        with pytest.raises(Exception, match="owner only"):
            owner.predict(api_name="/train_status")
        assert owner.predict(None, api_name="/my_role").startswith("You are voting")
        reloaded.predict(api_name="/train_status")
    finally:
        stop_app(process)
    log = (tmp_path / "app.log").read_text()
    assert PASSWORD not in log and "hf_alice_write" not in log


def test_share_without_a_password_does_not_start(tmp_path):
    import subprocess
    import sys

    from app_process import ROOT

    done = subprocess.run([sys.executable, "app.py", "--share", "--data", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().endswith("set TITLE_DPO_OWNER_PASSWORD first (owner actions will "
                                        "ask for it; voters need nothing)")  # fmt: skip
    assert not (tmp_path / "votes.db").exists()


def test_signed_in_voting_on_a_space_is_one_vote_per_person(hub, tmp_path, tiny_model_dir):
    env = space_env(hub, TITLE_DPO_VOTERS="signed-in")
    process, url = launch(hub, tmp_path, tiny_model_dir, token="hf_alice_read", **env)
    try:
        anonymous = Client(url, verbose=False)
        *_, pair_id, progress = anonymous.predict(None, api_name="/start")
        assert pair_id is None and "sign in with Hugging Face to vote" in progress
        *_, progress = anonymous.predict("v-0123456789abcdef.x", 1, api_name="/vote_left")
        assert progress.startswith("**Not saved.** Sign in with Hugging Face to vote"), progress
        cookie = {"Cookie": session_cookie("bob", "hf_bob_oauth")}
        bob = Client(url, verbose=False, headers=cookie)
        _token, *_, pair_id, _ = bob.predict(None, api_name="/start")
        *_, progress = bob.predict("anything", pair_id, api_name="/vote_left")
        assert progress.startswith("Vote saved")
        again = Client(url, verbose=False, headers=cookie)  # bob in a new tab, a new "voter"
        *_, progress = again.predict(None, api_name="/start")
        assert "voted on **1** pair " in progress
        *_, progress = again.predict("v-fresh", pair_id, api_name="/vote_right")
        assert progress.startswith("Already voted")
    finally:
        stop_app(process)
    votes = VoteStore.open_existing(tmp_path / "data").votes()
    assert [(v.voter, v.pair_id) for v in votes] == [("hf:bob", pair_id)]


def test_on_a_space_the_owner_signs_in_and_pushes_with_their_own_token(
    hub, tmp_path, tiny_model_dir, pairs_csv
):
    space = space_env(hub, TITLE_DPO_OWNERS="carol")
    # The Space's own HF_TOKEN (for the vote mirror) only reads here: a push that used it
    # instead of the signed-in owner's token would fail.
    process, url = launch(hub, tmp_path, tiny_model_dir, token="hf_alice_read", **space)
    data = tmp_path / "data"
    try:
        anonymous = Client(url, verbose=False)
        assert_voter_refused_everywhere(anonymous, hub, data, pairs_csv, uploads=False)
        # No voter needs to upload, and on a Space the owner is known by the sign-in: a
        # visitor's file never reaches the disk.
        refused = upload(url, pairs_csv)
        assert refused.status_code == 403
        assert refused.text.startswith("owner only") and "sign in with Hugging Face" in refused.text
        # nor has a voter Gradio run ffmpeg on a "screen recording" (its route takes a video)
        recording = upload(url, pairs_csv, route="process_recording", field="video")
        assert recording.status_code == 403 and recording.text == refused.text
        with pytest.raises(Exception, match=r"owner only.*sign in with Hugging Face"):
            anonymous.predict("The votes collected here", 1, "stolen", False, False, 0,
                              api_name="/hub_push_dataset")  # fmt: skip
        bob = Client(url, verbose=False, headers={"Cookie": session_cookie("bob", "hf_bob_oauth")})
        assert (
            bob.predict(None, api_name="/my_role")
            == "You are voting as bob. Thank you for helping!"
        )
        assert_voter_refused_everywhere(bob, hub, data, pairs_csv, uploads=False)
        assert not hub.repo_exists("dataset", "alice/stolen")
        assert upload(url, pairs_csv, bob.headers).status_code == 403

        for user in ("alice", "carol"):  # the Space's owner, and one named in TITLE_DPO_OWNERS
            cookie = session_cookie(user, f"hf_{user}_oauth")
            owner = Client(url, verbose=False, headers={"Cookie": cookie})
            assert owner.predict(None, api_name="/my_role").startswith(
                f"**Owner** (signed in as {user})"
            )
            pushed = owner.predict("The tutorial's 1,140 labelled pairs", 1, "space-ds", False,
                                   False, 0, api_name="/hub_push_dataset")  # fmt: skip
            assert pushed.startswith(f"Pushed: [{user}/space-ds](")  # their own namespace
            stored = upload(url, pairs_csv, {"Cookie": cookie})
            assert stored.status_code == 200 and stored.json()[0].endswith("/pairs.csv")
            assert owner.predict(handle_file(str(pairs_csv)), api_name="/import_pairs")
        member = Client(url, verbose=False, headers={
            "Cookie": session_cookie("dan", "hf_bob_oauth", orgs=("alice",))})  # fmt: skip
        assert member.predict(None, api_name="/my_role").startswith("**Owner** (signed in as dan)")
    finally:
        stop_app(process)
    assert "hf_alice_oauth" not in (tmp_path / "app.log").read_text()


def start_limited(tmp_path, model, **limits):
    """The app behind an owner password (so loopback is a voter) with these limits, e.g.
    new_voters_per_hour=3 for TITLE_DPO_NEW_VOTERS_PER_HOUR."""
    env = {"TITLE_DPO_OWNER_PASSWORD": PASSWORD}
    env.update({f"TITLE_DPO_{name.upper()}": str(value) for name, value in limits.items()})
    return start_app("--model", str(model), "--data", str(tmp_path / "data"),
                     log_path=tmp_path / "app.log", env=env)  # fmt: skip


def test_ballot_stuffing_is_held_to_the_limits(tmp_path, tiny_model_dir):
    process, url = start_limited(tmp_path, tiny_model_dir, new_voters_per_hour=3,
                                 votes_per_minute=5)  # fmt: skip
    try:
        minted = []
        for _ in range(6):  # a script minting voters from one address
            c = Client(url, verbose=False)
            token, *_, pair_id, progress = c.predict(None, api_name="/start")
            minted.append((c, token, pair_id, progress))
        assert [t is not None for _, t, _, _ in minted] == [True] * 3 + [False] * 3
        assert all("too many new voters" in p for *_, p in minted[3:])
        forged = minted[3][0].predict("v-0123456789abcdef.forgedsignature", 1,
                                      api_name="/vote_left")  # fmt: skip
        assert forged[-1].startswith("**Not saved.**") and "not issued by this app" in forged[-1]

        # a reader's pause on the first pair (minting the others may take less on a fast machine)
        time.sleep(MIN_READ_SECONDS)
        c, token, pair_id, _ = minted[0]
        for _ in range(5):
            *_, pair_id, progress = c.predict(token, pair_id, api_name="/vote_left")
            assert progress.startswith("Vote saved")
        *_, progress = c.predict(token, pair_id, api_name="/vote_left")
        assert progress.startswith("**Not saved.** You are voting faster than anyone can read")
        other_token = minted[1][1]  # another voter from the same address still votes
        *_, progress = minted[1][0].predict(other_token, minted[1][2], api_name="/vote_tie")
        assert progress.startswith("Vote saved")
    finally:
        stop_app(process)
    votes = VoteStore.open_existing(tmp_path / "data").votes()
    assert len(votes) == 6 and len({v.voter for v in votes}) == 2
    # Its first pair was on screen for a reader's pause; each later vote came
    # within a second of its pair, which no reader manages: stored, and flagged.
    first = token.split(".")[0]
    assert [v.flag for v in votes if v.voter == first] == [None] + ["fast"] * 4


def test_uploads_are_the_owners_and_a_page_that_may_be_one_is_held_to_a_limit(
    tmp_path, tiny_model_dir, pairs_csv
):
    """Gradio's upload route keeps every file on the disk, whoever sends it. Locally the
    owner uploads freely; behind a password a page signed in as the owner cannot be told
    from a voter's at the upload (it carries no page), so an address gets a few files an
    hour, and the limit, as every limit, outlives a restart."""
    process, url = start_app("--model", str(tiny_model_dir), "--data", str(tmp_path / "own"),
                             log_path=tmp_path / "own.log")  # fmt: skip
    try:
        sent = [upload(url, pairs_csv) for _ in range(12)]
        assert [r.status_code for r in sent] == [200] * 12
        too_big = tmp_path / "big.csv"
        too_big.write_bytes(b"x" * (5 * 2**20 + 1))
        assert upload(url, too_big).status_code == 413
        kept = Path(sent[0].json()[0])
        assert kept.read_text() == pairs_csv.read_text()
    finally:
        stop_app(process)
    assert not kept.exists()  # Gradio's cache of the app's files goes with the app

    process, url = start_limited(tmp_path, tiny_model_dir, uploads_per_hour=2)
    try:
        assert [upload(url, pairs_csv).status_code for _ in range(2)] == [200, 200]
        refused = upload(url, pairs_csv)
        assert refused.status_code == 429
        assert refused.text == (
            "too many files uploaded from your address: at most 2 an hour; try again later"
        )
        owner = Client(url, verbose=False)
        owner.predict(PASSWORD, api_name="/owner_sign_in")
        with pytest.raises(Exception, match="429 Too Many Requests"):  # the limit's cost
            owner.predict(handle_file(str(pairs_csv)), api_name="/import_pairs")
    finally:
        stop_app(process)
    process, url = start_limited(tmp_path, tiny_model_dir, uploads_per_hour=2)
    try:
        assert upload(url, pairs_csv).status_code == 429
    finally:
        stop_app(process)


def test_voters_generating_are_held_to_a_persons_use(tmp_path, tiny_model_dir):
    process, url = start_limited(tmp_path, tiny_model_dir, generations_per_hour=2)
    try:
        owner, voter = Client(url, verbose=False), Client(url, verbose=False)
        owner.predict(PASSWORD, api_name="/owner_sign_in")
        owner.predict(True, api_name="/voters_may_generate")
        for _ in range(2):
            table, *_ = voter.predict("an idea", 2, 0.7, api_name="/generate")
            assert len(table["data"]) == 2
        with pytest.raises(Exception, match="at most 2 times an hour; try again later"):
            voter.predict("an idea", 2, 0.7, api_name="/generate")
        for _ in range(3):  # the owner is not limited
            owner.predict("an idea", 1, 0.7, api_name="/generate")
    finally:
        stop_app(process)


def test_a_request_too_large_is_refused_before_it_is_read(tmp_path, tiny_model_dir):
    """Gradio reads an event's inputs whole into memory and keeps them queued: a body over
    the limit is refused at once, declared or not, and the app goes on serving."""
    from ui.shell import MAX_REQUEST

    process, url = start_limited(tmp_path, tiny_model_dir)
    try:
        voter = Client(url, verbose=False)
        token, *_, pair_id, _ = voter.predict(None, api_name="/start")
        join = f"{url}gradio_api/queue/join"
        vote = {"data": [token, pair_id], "fn_index": 0, "session_hash": "s", "trigger_id": 1}
        huge = json.dumps({**vote, "data": ["x" * MAX_REQUEST, pair_id]}).encode()
        declared = httpx.post(join, content=huge, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and declared.text == "request too large: at most 1 MB"

        def chunks():  # no Content-Length: sent in pieces, as a stream
            for start in range(0, len(huge), 64 * 1024):
                yield huge[start : start + 64 * 1024]

        streamed = httpx.post(join, content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413
        time.sleep(MIN_READ_SECONDS)
        *_, progress = voter.predict(token, pair_id, api_name="/vote_left")
        assert progress.startswith("Vote saved")
    finally:
        stop_app(process)


def test_flagged_votes_and_careless_voters_stay_out_of_the_dataset(tmp_path, tiny_model_dir):
    from conftest import run_cli
    from pipeline.pairs import Pair

    data = tmp_path / "data"
    store = VoteStore.in_folder(data)
    store.add_pairs([Pair(f"idea {i}", f"A good title {i}", f"A weak title {i}")
                     for i in range(3)], "test", "test")  # fmt: skip
    store.add_gold_pair("gold idea", "A good title for the check", "a GOOD title!!! check??")
    store.close()
    process, url = start_app("--model", str(tiny_model_dir), "--data", str(data),
                             log_path=tmp_path / "app.log",
                             env={"TITLE_DPO_OWNER_PASSWORD": PASSWORD})  # fmt: skip

    def vote_all(pick_good: bool, wait: float) -> str:
        c = Client(url, verbose=False)
        token, _idea, left, _right, pair_id, _ = c.predict(None, api_name="/start")
        while pair_id is not None:
            time.sleep(wait)
            good_on_left = left.startswith("A good")
            side = "/vote_left" if good_on_left == pick_good else "/vote_right"
            _idea, left, _right, pair_id, _ = c.predict(token, pair_id, api_name=side)
        return token.split(".")[0]

    try:
        careful = vote_all(pick_good=True, wait=1.1)
        careless = vote_all(pick_good=False, wait=1.1)
        hasty = vote_all(pick_good=True, wait=0)
        # The Train tab screens the votes the same way before it trains on them.
        owner = Client(url, verbose=False)
        owner.predict(PASSWORD, api_name="/owner_sign_in")
        owner.predict("The votes collected here", 1, "", str(tiny_model_dir), "fast", 1, 0.5,
                      5e-5, 8, True, 16, 32, 1, True, 0.5, False,
                      api_name="/train_start")  # fmt: skip
        (run,) = (data / "runs").glob("run-*")
        trained_on = json.loads((run / "data" / "summary.json").read_text())
        assert trained_on["votes_used"] == 3 and trained_on["left_out"]["voters_below_gold"] == 1
    finally:
        stop_app(process)
    flags = {(v.voter, v.flag) for v in VoteStore.open_existing(data).votes()}
    assert flags == {(careful, None), (careless, None), (hasty, "fast")}

    out = tmp_path / "screened"
    done = run_cli("dataset", "--from-votes", str(data), "--out", str(out), "--drop-fast",
                   "--drop-burst", "--min-gold-accuracy", "0.5", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    left_out = summary["left_out"]
    assert (left_out["voters_below_gold"], left_out["votes_of_voters_below_gold"]) == (1, 3)
    assert (left_out["fast_votes"], left_out["gold_pairs"]) == (3, 1)
    assert left_out["burst_votes"] == 0  # three voters in a minute: under the burst mark
    assert summary["votes"] == 12 and summary["votes_used"] == 3 and summary["voters"] == 1
    from datasets import load_from_disk

    rows = [r for split in load_from_disk(str(out)).values() for r in split]
    assert sorted(r["chosen"][0]["content"] for r in rows) == [
        f"A good title {i}" for i in range(3)
    ]

    card = run_cli("dataset", "--help")  # the push shows the same facts on the dataset card
    assert "--min-gold-accuracy" in card.stdout
    from hub.cards import dataset_card

    text = dataset_card(summary, "alice/screened")
    assert "after their pair was shown were **left out**: 3 votes." in text
    assert "below 50% were **left out**: 1 voter, 3 votes." in text  # never "1 voters"


def test_a_claimed_address_changes_no_limit_and_a_patient_bot_is_held(tmp_path, tiny_model_dir):
    """A local script writes any X-Forwarded-For it likes: no limit may move for it. Then a
    patient bot, its voter ids spread, voting one vote a second: held to the per-address rate.
    The ids it minted past the burst mark are marked, and the owner sees them."""
    process, url = start_limited(tmp_path, tiny_model_dir, new_voters_per_hour=3,
                                 address_votes_per_minute=4, burst_voters_per_minute=2)  # fmt: skip
    try:
        bots = []
        for i in range(4):  # each "from" another address, by its own say
            c = Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{i}"})
            token, *_, pair_id, progress = c.predict(None, api_name="/start")
            bots.append((c, token, pair_id, progress))
        assert [t is not None for _, t, _, _ in bots] == [True, True, True, False]
        assert "too many new voters from your address" in bots[3][3]

        answers = []
        for turn in range(6):  # round-robin over its three ids, one vote a second
            c, token, pair_id, _ = bots[turn % 3]
            *_, next_pair, progress = c.predict(token, pair_id, api_name="/vote_left")
            if progress.startswith("Vote saved"):  # (refused, the page keeps its pair)
                bots[turn % 3] = (c, token, next_pair, progress)
            answers.append("saved" if progress.startswith("Vote saved") else progress)
            time.sleep(1)
        owner = Client(url, verbose=False)
        owner.predict(PASSWORD, api_name="/owner_sign_in")
        table = owner.predict(api_name="/voter_quality")
    finally:
        stop_app(process)
    assert answers[:4] == ["saved"] * 4
    assert all("Too many votes from your address" in a for a in answers[4:]), answers
    votes = VoteStore.open_existing(tmp_path / "data").votes()
    ids = [token.split(".")[0] for _, token, _, _ in bots[:3]]
    assert len(votes) == 4 and {v.voter for v in votes} == set(ids)
    # the third id came past the burst mark (2 a minute): its vote is flagged, the others not
    marked = {v.voter: "burst" in v.flags for v in votes}
    assert marked == dict(zip(ids, [False, False, True], strict=True))
    headers = table["headers"]
    marks = {row[0]: row[headers.index("Burst")] for row in table["data"]}
    assert marks == dict(zip(ids, ["", "", "burst"], strict=True))


def test_behind_a_trusted_proxy_its_entry_counts(tmp_path, tiny_model_dir):
    """TITLE_DPO_TRUSTED_PROXIES=1 (a Space's default): the entry the proxy appended counts,
    whatever the client put before it."""
    process, url = start_limited(tmp_path, tiny_model_dir, new_voters_per_hour=1,
                                 trusted_proxies=1)  # fmt: skip
    try:

        def mint(chain: str):
            c = Client(url, verbose=False, headers={"X-Forwarded-For": chain})
            return c.predict(None, api_name="/start")[0]

        # two visitors the proxy saw at two addresses: one new voter each
        assert mint("198.51.100.1") and mint("203.0.113.7, 198.51.100.2")
        # the first again, claiming to be elsewhere: still the first, over its limit
        assert mint("203.0.113.99, 198.51.100.1") is None
    finally:
        stop_app(process)
    said = (tmp_path / "app.log").read_text()
    assert "Client address: X-Forwarded-For, entry 1 from the right" in said
    assert "Hub kernels off" in said  # the project's own lines reach the log


def test_a_restart_keeps_the_counters(tmp_path, tiny_model_dir):
    """Stopping and starting the app hands a script no fresh allowance of voter ids."""
    for minted_then in ([True, True, False], [False]):
        process, url = start_limited(tmp_path, tiny_model_dir, new_voters_per_hour=2)
        try:
            tokens = [Client(url, verbose=False).predict(None, api_name="/start")[0]
                      for _ in minted_then]  # fmt: skip
        finally:
            stop_app(process)
        assert [t is not None for t in tokens] == minted_then


def test_every_event_states_a_role_and_takes_the_inputs_it_is_given():
    """An app is refused at build time when an event has no role, or hands its handler more
    inputs than it takes (the spare one would land where the request belongs)."""
    import gradio as gr

    from pipeline.access import VOTER, AccessSettings, Gatekeeper

    guard = Guard(Gatekeeper(AccessSettings(), b"s" * 32))

    def echo(*texts):
        return texts[0]

    def app_with(handler, inputs: int) -> gr.Blocks:
        with gr.Blocks() as blocks:
            boxes = [gr.Textbox() for _ in range(inputs)]
            boxes[0].submit(handler, boxes, boxes[0])
        return blocks

    Guard.check_every_event(app_with(guard(VOTER, echo, spread=2), 2))
    with pytest.raises(RuntimeError, match="without a role"):
        Guard.check_every_event(app_with(echo, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gradio's own warning, when it gives one, says less
        miscounted = app_with(guard(VOTER, echo, spread=2), 3)
    with pytest.raises(RuntimeError, match="takes other inputs"):
        Guard.check_every_event(miscounted)
