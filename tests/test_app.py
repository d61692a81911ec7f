"""The launched app, driven over real HTTP through gradio_client."""

import os
import random
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from app_process import free_port, start_app, stop_app
from pipeline.votes import VoteStore

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    """The app in this process (quick to start), with its own vote folder."""
    from app import build_app, serve

    data = tmp_path_factory.mktemp("app-data")
    app = build_app(str(tiny_model_dir), str(data))
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def client(app_url):
    return _client(app_url)


@pytest.fixture
def app_process(tiny_model_dir, tmp_path):
    """`python app.py` in its own process, for load and crash tests."""
    data = tmp_path / "data"
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "app.log"
    )
    yield process, url, data
    if process.poll() is None:
        stop_app(process)


# --- Generate --------------------------------------------------------------------------------


def test_every_font_the_page_declares_draws_every_latin_letter(app_url):
    """A font file missing letters draws a word in two fonts: Gradio 6.31's semibold Source
    Sans Pro holds "A" and "B" alone, and the Vote tab's "A is better" came out mixed."""
    import string
    from io import BytesIO

    import httpx
    from fontTools.ttLib import TTFont

    css = httpx.get(app_url + "theme.css").text
    files = re.findall(r"url\('([^']+\.woff2)'\)", css)
    assert len(files) >= 2, css[:500]
    letters = {ord(c) for c in string.ascii_letters + string.digits}
    for file in files:
        font = TTFont(BytesIO(httpx.get(app_url + file).raise_for_status().content))
        missing = sorted(chr(c) for c in letters - set(font.getBestCmap()))
        assert not missing, (file, "".join(missing))


def test_generate_returns_n_titles_and_names_the_model(client, tiny_model_dir):
    table, raw, status, _added = client.predict("Multimodal RAG", 3, 0.7, api_name="/generate")
    assert table["headers"] == ["Title", "Characters"]
    assert len(table["data"]) == 3
    assert all(row[1] == len(row[0]) for row in table["data"])
    assert len(raw) == 3
    assert str(tiny_model_dir) in status


def test_model_status_is_shown_on_load(client, tiny_model_dir):
    assert client.predict(api_name="/model_status").startswith(f"Model: {tiny_model_dir}")


@pytest.mark.parametrize(("idea", "message"), [("   ", "empty"), ("x" * 501, "limit is 500")])
def test_bad_ideas_get_a_clear_error(client, idea, message):
    with pytest.raises(Exception, match=message):
        client.predict(idea, 3, 0.7, api_name="/generate")


def test_generated_titles_join_the_voting_pool(app_url):
    c = _client(app_url)
    with pytest.raises(Exception, match="generate some first"):
        c.predict(api_name="/add_to_pool")
    c.predict("a brand new idea about pottery", 5, 1.0, api_name="/generate")
    message = c.predict(api_name="/add_to_pool")
    assert "new pairs" in message and "a brand new idea about pottery" in message


def test_a_pairs_csv_upload_joins_the_pool(app_url, tmp_path):
    from gradio_client import handle_file

    from pipeline.pairs import Pair, write_pairs_csv

    csv_path = tmp_path / "pairs.csv"
    write_pairs_csv([Pair("uploaded idea", "Title one", "Title two")], csv_path)
    c = _client(app_url)
    assert (
        c.predict(handle_file(str(csv_path)), api_name="/import_pairs") == "Imported 1 new pairs."
    )
    assert (
        c.predict(handle_file(str(csv_path)), api_name="/import_pairs") == "Imported 0 new pairs."
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("idea,title_a\nx,y\n")
    with pytest.raises(Exception) as refused:
        c.predict(handle_file(str(bad)), api_name="/import_pairs")
    # the file as the person named it, not the server's copy in Gradio's cache
    assert str(refused.value) == "bad.csv: missing column(s) title_b; found idea, title_a"


def test_an_unloadable_model_is_reported_not_crashed(tmp_path):
    from app import build_app, serve

    app = build_app(str(tmp_path / "missing"), str(tmp_path / "data"))
    serve(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True)
    try:
        c = _client(app.local_url)
        assert "could not be loaded" in c.predict(api_name="/model_status")
        with pytest.raises(Exception, match="does not exist"):
            c.predict("rag", 2, 0.7, api_name="/generate")
    finally:
        app.close()


# --- Vote ------------------------------------------------------------------------------------


def test_a_voter_sees_a_pair_votes_and_moves_on(client):
    voter, idea, left, right, pair_id, progress = client.predict(None, api_name="/start")
    assert voter.startswith("v-") and idea and left and right and left != right
    assert "voted on **0** pairs" in progress
    *_, next_id, progress = client.predict(voter, pair_id, api_name="/vote_left")
    assert next_id != pair_id and "Vote saved" in progress and "voted on **1** pair " in progress
    *_, after_skip, progress = client.predict(voter, api_name="/skip")
    assert after_skip != next_id and "Skipped" in progress
    *_, message = client.predict(voter, pair_id, api_name="/vote_right")
    assert message.startswith("Already voted")


def test_a_voter_undoes_a_slip_and_votes_on_that_pair_again(app_url):
    c = _client(app_url)
    voter, idea, left, right, pair_id, _ = c.predict(None, api_name="/start")
    *_, next_id, progress = c.predict(voter, pair_id, api_name="/vote_left")
    assert next_id != pair_id and "voted on **1** pair " in progress
    # the page that cast it undoes it; another tab of the same voter cast nothing to undo
    # refused in the progress line (an unqueued event's error shows nowhere on a page)
    *_, progress = _client(app_url).predict(voter, api_name="/undo_vote")
    assert progress.startswith("**Not undone.** No vote to undo"), progress
    *shown, progress = c.predict(voter, api_name="/undo_vote")
    assert shown == [idea, left, right, pair_id]  # the same pair, its titles where they were
    assert "Vote undone" in progress and "voted on **0** pairs" in progress
    *_, progress = c.predict(voter, api_name="/undo_vote")  # one step back, not a history
    assert progress.startswith("**Not undone.** No vote to undo"), progress
    *_, progress = c.predict(voter, pair_id, api_name="/vote_right")
    assert "Vote saved" in progress and "voted on **1** pair " in progress
    assert c.predict(voter, pair_id, api_name="/vote_left")[-1].startswith("Already voted")
    # the owner (this machine, no password set) sees who undid how many
    table = c.predict(api_name="/voter_quality")
    rows = {row[0]: dict(zip(table["headers"], row, strict=True)) for row in table["data"]}
    assert (rows[voter.split(".")[0]]["Votes"], rows[voter.split(".")[0]]["Undone"]) == (1, 1)


def _refused(answer, words: str) -> None:
    """A vote event's answer that refused it: said in its progress line (an unqueued event's
    error would show nowhere on a page), nothing else on the page changed."""
    *shown, progress = answer
    assert progress.startswith("**Not saved.** ") and words in progress.lower(), progress
    assert shown == [{"__type__": "update"}] * len(shown), shown  # each left as it was


@pytest.mark.parametrize("voter", ["", "x" * 200, "a b", "v-0123456789abcdef", "v-0.AAAA", 12345,
                                   ["v-0.AAAA"], {"id": "v-0"}])  # fmt: skip
def test_voter_ids_the_app_did_not_issue_are_refused(client, voter):
    _refused(client.predict(voter, 1, api_name="/vote_left"), "not issued by this app")


def test_a_pair_not_on_screen_or_unknown_is_refused(app_url):
    c = _client(app_url)
    voter, *_ = c.predict(None, api_name="/start")
    other = _client(app_url)  # the same voter in a tab that was shown nothing
    _refused(other.predict(voter, 1, api_name="/vote_tie"), "not the one on your screen")
    _refused(other.predict(voter, 10**9, api_name="/vote_tie"), "unknown pair id")
    # the vote events take the page's values raw: anything but a whole number is refused
    for bad in ("1", 1.5, True, [1], {"pair": 1}):
        _refused(c.predict(voter, bad, api_name="/vote_left"), "a pair id is a whole number")
    assert "voted on **0** pairs" in c.predict(voter, api_name="/skip")[-1]  # nothing stored


def test_leaderboard_reports_votes_agreement_and_scores(app_url):
    c = _client(app_url)
    voter, idea, *_, pair_id, _ = c.predict(None, api_name="/start")
    c.predict(voter, pair_id, api_name="/vote_left")
    summary, per_idea, top_idea = c.predict(api_name="/leaderboard")
    assert re.match(r"\*\*\d+ votes?\*\* from \*\*\d+ voters?\*\*\. ", summary), summary
    assert "Krippendorff" in summary or "No pair has 2+ votes yet" in summary
    assert per_idea["data"] and top_idea["value"] == per_idea["data"][0][0]
    scores = c.predict(idea, api_name="/idea_scores")
    assert scores["headers"][:2] == ["Title", "Score"] and len(scores["data"]) >= 2


def test_the_leaderboard_follows_every_vote_and_undo(app_url):
    """The overview is computed again only when the votes change: a vote, an undo, and a vote
    on another idea in its place (the same number of votes, perhaps the same row id)."""
    c = _client(app_url)

    def per_idea() -> dict[str, int]:
        _, table, _ = c.predict(api_name="/leaderboard")
        return {row[0]: row[1] for row in table["data"]}

    voter, first_idea, *_, pair_id, _ = c.predict(None, api_name="/start")
    before = per_idea()
    c.predict(voter, pair_id, api_name="/vote_left")
    assert per_idea() == {**before, first_idea: before.get(first_idea, 0) + 1}
    c.predict(voter, api_name="/undo_vote")  # then, unread, a vote on another idea
    idea = first_idea
    while idea == first_idea:
        idea, *_, pair_id, _ = c.predict(voter, api_name="/skip")
    c.predict(voter, pair_id, api_name="/vote_right")
    assert per_idea() == {**before, idea: before.get(idea, 0) + 1}
    c.predict(voter, api_name="/undo_vote")
    assert per_idea() == before


def test_fifty_voters_twenty_votes_each_all_stored_once(app_process):
    _process, url, data = app_process
    rng = random.Random(0)
    sides = ["/vote_left", "/vote_right", "/vote_tie", "/vote_both_bad"]
    plans = [[rng.choice(sides) for _ in range(20)] for _ in range(50)]

    def run_voter(index):
        # Fifty clients each fetch the app's whole API description as they start, which keeps
        # a slow 2-core machine busy past httpx's 5 s default: what this tests is that every
        # vote is stored once, not how fast (bench/votes.py measures that).
        from gradio_client import Client

        c = Client(url, verbose=False, httpx_kwargs={"timeout": 60})
        voter, *_, pair_id, _ = c.predict(None, api_name="/start")
        acknowledged = []
        for endpoint in plans[index]:
            *_, next_id, progress = c.predict(voter, pair_id, api_name=endpoint)
            assert progress.startswith("Vote saved"), progress
            acknowledged.append(pair_id)
            pair_id = next_id
        return voter, acknowledged

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(run_voter, range(50)))

    votes = VoteStore.open_existing(data).votes()
    assert len(votes) == 1000
    stored = {(v.voter, v.pair_id) for v in votes}
    assert len(stored) == 1000
    # the browser holds "ID.SIGNATURE"; votes are stored under the ID
    assert stored == {(token.split(".")[0], p) for token, acked in results for p in acked}


def test_one_voter_hammering_one_pair_gets_one_vote(app_process):
    _process, url, data = app_process
    c = _client(url)
    hammer, *_, pair_id, _ = c.predict(None, api_name="/start")
    jobs = [c.submit(hammer, pair_id, api_name=e) for e in ["/vote_left", "/vote_right"] * 10]
    other_tab = _client(url)  # same voter, another session that was never shown this pair
    for _ in range(5):
        try:
            other_tab.predict(hammer, pair_id, api_name="/vote_both_bad")
        except Exception as exc:
            assert "not the one on your screen" in str(exc) or "Already" in str(exc)
    outcomes = [job.result()[-1] for job in jobs]
    assert sum(o.startswith("Vote saved") for o in outcomes) == 1
    votes = [v for v in VoteStore.open_existing(data).votes() if hammer.startswith(v.voter)]
    assert [v.pair_id for v in votes] == [pair_id]


def test_acknowledged_votes_survive_sigkill(app_process, tiny_model_dir, tmp_path):
    process, url, data = app_process
    c = _client(url)
    durable, *_, pair_id, _ = c.predict(None, api_name="/start")
    acknowledged = []
    for _ in range(25):
        *_, next_id, progress = c.predict(durable, pair_id, api_name="/vote_left")
        assert progress.startswith("Vote saved")
        acknowledged.append(pair_id)
        pair_id = next_id
    os.kill(process.pid, signal.SIGKILL)  # no shutdown hooks, no flush
    process.wait()

    restarted, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "again.log"
    )
    try:
        kept, *_, progress = _client(url).predict(durable, api_name="/start")
        assert kept == durable and "voted on **25** pairs" in progress  # same secret on disk
        votes = VoteStore.open_existing(data).votes()
        assert len({v.voter for v in votes}) == 1
        assert sorted(v.pair_id for v in votes) == sorted(acknowledged)
    finally:
        stop_app(restarted)


# --- Train -----------------------------------------------------------------------------------


def _wait_for_training(c, until=("done", "stopped", "failed"), timeout=180):
    import time

    seen_steps, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the third chart is DPO's log-probabilities, a reward model's margin or RL's title
        # length; the samples are RL's
        progress, losses, rewards, _third, table, _samples, log = c.predict(
            api_name="/train_status"
        )
        if "step " in progress:
            seen_steps.append(int(progress.split("step ")[1].split("/")[0]))
        if any(progress.startswith(f"**{state}**") for state in until):
            return progress, losses, rewards, table, log, seen_steps
        time.sleep(0.3)
    raise AssertionError(f"training did not finish: {progress}")


TRAIN_FIELDS = {  # the Train tab's fields, in order, as a user leaves them for a fast run
    "kind": "The tutorial's 1,140 labelled pairs",
    "min_count": 1,
    "hub_id": "",
    "model": None,
    "name": "fast",
    "n_epochs": 1,
    "b": 0.5,
    "lr": 5e-5,
    "batch": 8,
    "use_lora": True,
    "r": 16,
    "alpha": 32,
    "step_limit": 0,
}


def _start(c, **fields):
    return c.predict(*{**TRAIN_FIELDS, **fields}.values(), api_name="/train_start")


def test_train_tab_runs_reports_and_hands_the_model_to_generate(app_url, tiny_model_dir):
    c = _client(app_url)
    base = str(tiny_model_dir)
    # choosing a recipe fills in its settings
    assert c.predict("tutorial", api_name="/recipe_settings") == (3, 0.1, 1e-6, 8, False, 16, 32)
    assert c.predict("fast", api_name="/recipe_settings") == (1, 0.5, 5e-5, 8, True, 16, 32)
    _start(c, model=base, step_limit=12)
    with pytest.raises(Exception, match="already going"):
        _start(c, model=base, step_limit=12)
    progress, losses, rewards, table, log, steps = _wait_for_training(c)
    assert progress.startswith("**done**") and "step 12/12" in progress, progress
    # the tutorial pairs split by idea, 120 held out: a 12-step run of 8 pairs a step reads
    # 96 of them (a step limit bounds the whole run), ranked by the saved model
    assert re.search(r"held-out pairs ranked as labelled: [01]\.\d{3} of 96 \(the untrained "
                     r"model: [01]\.\d{3}\); against it, \d+ pairs? gained and \d+ lost: "
                     r"(beyond|within) chance \(sign test p = [\d.e-]+\)  \n",
                     progress), progress  # fmt: skip
    # then what answers the question people ask: their blind votes, on the Evaluate tab
    assert progress.endswith("*Did people prefer its titles? On the Evaluate tab, tick this run "
                             "and create a round: voters judge them blind beside the titles of "
                             "the model it started from.*")  # fmt: skip
    assert steps == sorted(steps) and steps[-1] == 12
    assert {row[2] for row in losses["data"]} == {"train loss", "eval loss"}
    assert {"margin (eval)", "accuracy (eval)"} <= {row[2] for row in rewards["data"]}
    assert table["headers"][:3] == ["Epoch", "Training loss", "Validation loss"]
    assert len(table["data"]) == 1  # one evaluation, at the end of the (cut short) epoch
    assert "training: 12 steps" in log
    logps = c.predict(api_name="/train_status")[3]
    assert {row[2] for row in logps["data"]} == {
        "chosen (train)", "rejected (train)", "chosen (eval)", "rejected (eval)"
    }  # fmt: skip
    # the charts are the run's, titles and series alike: choosing another Method shows no
    # DPO series under RL's titles, and no empty table of RL's titles
    rl = "Online RL against a reward model (RLHF step 2: GRPO / RLOO)"
    *_, first, second, third, samples = c.predict(rl, api_name="/train_method")
    assert (first["label"], second["label"]) == ("Losses", "Rewards")
    assert third["label"].startswith("Log-probability") and samples["visible"] is False
    status = c.predict(api_name="/use_trained_model")
    assert status.startswith("Generate now uses") and status.endswith("/model")
    trained = status.removeprefix("Generate now uses ")
    with pytest.raises(Exception, match=r"is in use \(Generate writes with its model\)"):
        c.predict(trained, api_name="/run_delete")  # nor is a run Generate uses deleted
    *_, model_line, _ = c.predict("rag", 2, 0.7, api_name="/generate")
    assert model_line.startswith(f"Model: {trained} on ")


def test_train_tab_refuses_votes_that_make_no_rows(tmp_path, tiny_model_dir):
    from app import build_app, serve

    app = build_app(str(tiny_model_dir), str(tmp_path / "data"))
    serve(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True)
    try:
        c = _client(app.local_url)
        base = str(tiny_model_dir)
        # with no run yet, the charts take the chosen Method's titles
        rl = "Online RL against a reward model (RLHF step 2: GRPO / RLOO)"
        *_, first, second, third, samples = c.predict(rl, api_name="/train_method")
        assert (first["label"], second["label"]) == ("Reward", "KL to the starting model")
        assert third["label"] == "Completion length (tokens)" and samples["visible"] is True
        with pytest.raises(Exception, match="no preference rows from"):
            _start(c, kind="The votes collected here", model=base, step_limit=2)
        with pytest.raises(Exception, match="no earlier run"):
            c.predict(base, *list(TRAIN_FIELDS.values())[4:], api_name="/train_resume")
        for field, value, message in [
            ("b", -1, "less than minimum value 0"),  # Gradio checks the field itself
            ("lr", 2, "learning rate must be more than 0 and less than 1"),
            # a 0 is taken as typed, not swapped for the recipe's value
            ("lr", 0, r"learning rate must be more than 0 and less than 1, not 0\.0"),
            ("b", 0, r"beta must be positive, not 0\.0"),
            ("alpha", -3, "less than minimum value 0"),
        ]:
            with pytest.raises(Exception, match=message):
                _start(c, model=base, **{field: value})
        with pytest.raises(Exception, match="no Hub dataset id given"):
            _start(c, kind="A preference dataset on the Hub", model=base)
        with pytest.raises(Exception, match="not a valid Hub dataset id"):
            _start(c, kind="A preference dataset on the Hub", hub_id="a/b/c", model=base)
        assert not (tmp_path / "data" / "runs").exists()  # refused before any run folder
        _start(c, model="./no/such/model", step_limit=2)
        progress, *_ = _wait_for_training(c)
        assert progress.startswith("**failed**") and "does not exist" in progress
    finally:
        app.close()


def test_uploads_are_capped_for_every_visitor(app_url):
    import httpx

    small = httpx.post(app_url + "gradio_api/upload", files={"files": ("p.csv", b"idea\n")})
    assert small.status_code == 200
    too_big = {"files": ("big.csv", b"x" * (21 * 1024 * 1024))}
    huge = httpx.post(app_url + "gradio_api/upload", files=too_big, timeout=60)
    assert huge.status_code == 413
