"""An evaluation round through the app over real HTTP (gradio_client): the owner creates it,
simulated voters who prefer one model's titles vote on it blind, and the round reports them."""

import json
import os

import pytest
from gradio_client import Client

from app_process import free_port
from conftest import MARKER, create_round_in_app, run_cli, vote_until_done
from pipeline.pairs import Pair
from pipeline.votes import VoteStore
from pipeline.winrates import wilson

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PASSWORD = "evaluation owner password"
IDEAS = ["Bootstrapping confidence intervals", "Vector databases compared",
         "Contrastive learning", "Kalman filters"]  # fmt: skip
# ordinary pairs, one title of each marked so that voters decide them
WARM_UP = [Pair("warm-up idea one", f"Warm-up title {MARKER}", "Warm-up title two"),
           Pair("warm-up idea two", "Another title", f"Yet another title {MARKER}")]  # fmt: skip


@pytest.fixture
def evaluation_app(marked_models, tmp_path):
    """The app with an owner password, so that loopback clients are voters until they sign
    in; its pool holds two ordinary pairs (so the tutorial's are not loaded)."""
    from app import build_app, serve
    from pipeline.access import AccessSettings

    plain, _ = marked_models
    data = tmp_path / "data"
    VoteStore.in_folder(data).add_pairs(WARM_UP, "warm-up", "imported")
    app = build_app(str(plain), str(data), AccessSettings(owner_password=PASSWORD))
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/", data
    app.close()


def test_a_round_through_the_app_reports_what_blind_voters_chose(evaluation_app, marked_models):
    url, data = evaluation_app
    plain, marked = marked_models
    owner = Client(url, verbose=False)
    owner.predict(PASSWORD, api_name="/owner_sign_in")
    runs, _ = owner.predict(api_name="/evaluate_choices")  # no run has finished yet
    assert runs["choices"] == [] and runs["info"].startswith("none yet: a run that finishes")
    message, picked = create_round_in_app(owner, [plain, marked], IDEAS, "app round")
    assert "**4 pairs in the voting pool now, served first**" in message
    assert picked["value"] == "app round"
    # the round's pool is served before the warm-up pool: every voter judges its pairs first
    table, _ = owner.predict(None, api_name="/pools")
    assert [(row[0], row[4]) for row in table["data"]] == [("round:app round", 1), ("warm-up", 0)]

    voters = [vote_until_done(url) for _ in range(3)]
    for responses in voters:  # [role, start, the response to each vote]: each names a pair
        start, *results = (json.loads(text) for text in responses[1:-1])
        served = [start[1], *(r[0] for r in results[:-1])]
        assert set(served[:4]) == set(IDEAS) and len(served) == 6, served
    seen = [text for responses in voters for text in responses]
    # Nothing a voter read names a model or the round.
    for secret in (str(plain), str(marked), plain.name, marked.name, "app round", "round:"):
        assert not any(secret in text for text in seen), secret

    summary, _chart, comparisons, arena, detail = owner.predict(
        "app round", api_name="/evaluate_report"
    )
    (row,) = comparisons["data"]
    assert row[:7] == ["marked", "plain", 12, 0, 0, 0, 0]
    low, high = wilson(12, 12)
    assert row[7] == "100%" and row[8] == f"{low:.0%} – {high:.0%}"
    assert row[9].startswith("4 of 4 (")  # each pair's 3 votes, as one verdict
    assert "12 votes from 3 voters" in summary
    # in words first: each pair's 3 votes are one verdict, and 4 pairs of 4 already tell
    assert "Verdict: people prefer marked to plain (4 of 4 decided pairs, 100%" in summary
    assert [r[0] for r in arena["data"]] == ["marked", "plain"]
    assert len(detail["data"]) == 4 and all(r[6] == 3 for r in detail["data"])
    # a judge model reads the same pairs: one verdict each, and its agreement with the voters
    judged, _chart, judged_rows, *_ = owner.predict(
        "app round", str(plain), api_name="/evaluate_judge"
    )
    assert "Judged by judge plain: 4 votes" in judged
    assert "Verdict: " in judged and "people prefer" not in judged  # the judge's, not people's
    assert "agrees with the people's majority on" in judged and "of 4 pairs" in judged
    assert sum(judged_rows["data"][0][2:6]) == 4  # wins, losses, ties, both bad
    # a voter may not read the results or create a round
    voter = Client(url, verbose=False)
    for args, name in ((("app round",), "/evaluate_report"), ((), "/evaluate_choices")):
        with pytest.raises(Exception, match="owner only"):
            voter.predict(*args, api_name=name)

    # The round's 12 votes make no rows; the two ordinary pairs' votes do.
    out = data.parent / "dataset"
    built = run_cli("dataset", "--from-votes", str(data), "--out", str(out), "--json")
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert sum(summary["rows"].values()) == 2
    assert summary["left_out"]["evaluation_votes"] == 12
