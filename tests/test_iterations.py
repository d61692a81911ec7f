"""On-policy iterations (pipeline/iterations.py) on the tiny model: the policy's own titles go
to the voters first, voters with a planted taste vote through the app (gradio_client), and
two iterations of training on their votes move the policy towards that taste."""

from __future__ import annotations

import json
import os
import random

import pytest
from gradio_client import Client

from app_process import free_port
from conftest import run_cli
from pipeline.errors import UserError
from pipeline.generation import GenerationSettings
from pipeline.votes import VoteStore

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PASSWORD = "iterations owner password"
PLANTED = "e"  # the voters' taste: the title with the larger share of this letter
SHORT = GenerationSettings(max_new_tokens=12, seed=0)
ROUND_ONE = [f"iteration one idea {i}" for i in range(6)]
ROUND_TWO = [f"iteration two idea {i}" for i in range(6)]
MEASURED = ["how to learn python fast", "ai for small business", "data science careers"]


def share(text: str) -> float:
    return text.count(PLANTED) / max(1, len(text))


def planted_share(model: str) -> float:
    """The planted letter's mean share over 48 titles sampled from `model`, fixed seed."""
    from pipeline.generation import generate_titles
    from pipeline.models import load_model

    settings = GenerationSettings(n=16, seed=0, max_new_tokens=12, temperature=1.0)
    groups = generate_titles(load_model(model, fresh=True), MEASURED, settings)
    raws = [t.raw for group in groups for t in group]
    return sum(map(share, raws)) / len(raws)


def test_an_iteration_is_served_first_and_refuses_what_it_cannot_do(tiny_model_dir, tmp_path):
    from pipeline.iterations import iteration_status, plan_iteration, start_iteration

    store = VoteStore.in_folder(tmp_path)
    store.seed_if_empty()
    with pytest.raises(UserError, match="name the model to start from"):
        plan_iteration(store, None, ROUND_ONE, "typed ideas")
    with pytest.raises(UserError, match="2 to 10"):
        plan_iteration(store, str(tiny_model_dir), ROUND_ONE, "typed ideas", k=1)
    plan = plan_iteration(store, str(tiny_model_dir), ROUND_ONE, "typed ideas", name="one", k=3)
    info = start_iteration(store, plan, SHORT)
    assert (info.name, info.policy, info.k, info.target_votes) == ("one", str(tiny_model_dir), 3, 2)
    pool = {p.name: p for p in store.pools()}[info.pool]
    assert pool.priority == 10 and 0 < pool.pairs <= 6 * 3  # C(3, 2) pairs per idea, at most
    assert next(p.name for p in store.pools()) == "iteration:one"  # before the tutorial
    view = store.next_pair("voter-0123456789abcdef", rng=random.Random(0))
    assert view.idea in ROUND_ONE

    # an idea asked about before is not asked again; the name is taken
    again = plan_iteration(store, str(tiny_model_dir), [*ROUND_ONE, "a new idea"], "typed ideas")
    assert again.ideas == ["a new idea"] and again.left_out == 6
    with pytest.raises(UserError, match="already an iteration called 'one'"):
        start_iteration(store, plan, SHORT)
    status = iteration_status(store, "one")
    assert (status.pairs, status.votes, status.ready) == (pool.pairs, 0, False)


def vote_by_taste(url: str, rng: random.Random, budget: int, noise: float = 0.2) -> int:
    """A simulated voter through the app: prefers the title with more of the planted letter
    (a random side a fifth of the time, a tie when equal), for `budget` votes at most."""
    client = Client(url, verbose=False)
    voter, _idea, left, right, pair_id, _ = client.predict(None, api_name="/start")
    cast = 0
    while pair_id is not None and cast < budget:
        more = share(left) - share(right)
        if rng.random() < noise:
            more = rng.choice([-1, 1])
        side = "/vote_left" if more > 0 else "/vote_right" if more < 0 else "/vote_tie"
        _idea, left, right, pair_id, _ = client.predict(voter, pair_id, api_name=side)
        cast += 1
    return cast


def vote_together(url: str, rngs: list[random.Random], budget: int) -> int:
    """One simulated voter per rng, voting at the same time (as a class does); votes cast."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(rngs)) as pool:
        return sum(pool.map(lambda rng: vote_by_taste(url, rng, budget), rngs))


@pytest.fixture
def voting_app(tiny_model_dir, tmp_path):
    """The app without the tutorial pool, with an owner password (loopback clients vote)."""
    from app import build_app, serve
    from pipeline.access import AccessSettings

    data = tmp_path / "data"
    store = VoteStore.in_folder(data)
    # simulated voters vote as fast as a script can: the per-voter limit is a person's
    access = AccessSettings(owner_password=PASSWORD, votes_per_minute=1000)
    app = build_app(str(tiny_model_dir), str(data), access, tutorial_pool=False)
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/", store
    app.close()


def test_two_iterations_learn_the_voters_planted_taste(voting_app, tiny_model_dir, tmp_path):
    from pipeline.iterations import (
        iteration_status,
        plan_iteration,
        start_iteration,
        train_iteration,
    )
    from pipeline.recipes import get_recipe

    url, store = voting_app
    rng = random.Random(0)
    # a full fine-tune at a high rate: the tiny model is too small for LoRA to move quickly
    recipe = get_recipe("tutorial").changed(
        epochs=6, batch_size=4, learning_rate=2e-3, logging_steps=1, seed=0, sft_weight=1.0
    )
    shares = [planted_share(str(tiny_model_dir))]
    policies = []
    for number, ideas in enumerate((ROUND_ONE, ROUND_TWO), start=1):
        start = str(tiny_model_dir) if number == 1 else None  # then: the last trained policy
        plan = plan_iteration(store, start, ideas, "typed ideas", name=f"it{number}", k=5)
        info = start_iteration(store, plan, SHORT)
        assert info.policy == (policies[-1] if policies else str(tiny_model_dir))
        pairs = {p.name: p.pairs for p in store.pools()}[info.pool]
        # served first, before the last iteration's pairs: the voters' first votes are its
        cast = vote_together(url, [random.Random(rng.random()) for _ in range(3)], pairs)
        status = iteration_status(store, info.name)
        assert status.votes == cast and status.voters == 3 and status.ready
        result = train_iteration(store, info.name, tmp_path / f"it{number}", recipe)
        assert result.finished and store.iteration_info(info.name).trained == result.out
        # trained on its own iteration's votes only, from its own policy, no SFT stage
        summary = json.loads((tmp_path / f"it{number}" / "data" / "summary.json").read_text())
        assert summary["votes_used"] == cast and result.started_from == info.policy
        assert result.recipe["sft_epochs"] == 0 and result.reference == info.policy
        policies.append(result.out)
        shares.append(planted_share(result.out))
    # each iteration moves the policy towards the taste (seen: 0.088, 0.122, 0.160)
    assert shares[0] < shares[1] < shares[2] and shares[2] > shares[0] + 0.03, shares


def test_iterate_from_the_command_line(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    ideas = tmp_path / "ideas.txt"
    ideas.write_text("\n".join(ROUND_ONE[:3]) + "\n")
    started = run_cli("iterate", "start", "--model", str(tiny_model_dir), "--ideas", str(ideas),
                      "--n", "3", "--max-new-tokens", "12", "--name", "cli-one", "--data",
                      str(data), "--json")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["name"] == "cli-one"
    status = run_cli("iterate", "status", "--data", str(data))
    assert status.returncode == 0 and status.stdout.startswith("iteration cli-one: 0 votes")
    untrained = run_cli("iterate", "train", "cli-one", "--out", str(tmp_path / "o"),
                        "--data", str(data))  # fmt: skip
    assert untrained.returncode == 2 and "give no preference rows" in untrained.stderr
    unknown = run_cli("iterate", "status", "nope", "--data", str(data))
    assert unknown.returncode == 2 and "no iteration 'nope'" in unknown.stderr


def test_an_iteration_through_the_app(voting_app, tiny_model_dir, tmp_path):
    """The owner starts an iteration and trains on it from the Iterations tab's endpoints;
    voters with the planted taste vote in between; a voter may do neither."""
    import time

    url, store = voting_app
    visitor = Client(url, verbose=False)
    with pytest.raises(Exception, match="owner only"):
        visitor.predict(api_name="/iterations")
    owner = Client(url, verbose=False)
    owner.predict(PASSWORD, api_name="/owner_sign_in")
    message, table, _ = owner.predict(str(tiny_model_dir), "Typed below, one per line",
                                      "\n".join(ROUND_ONE), None, 4, 1, "app-one",
                                      api_name="/iteration_start")  # fmt: skip
    assert message.startswith("**app-one**") and "served to voters first" in message
    pairs = {p.name: p.pairs for p in store.pools()}["iteration:app-one"]
    cast = vote_by_taste(url, random.Random(1), budget=pairs)
    table, _ = owner.predict(api_name="/iterations")
    assert table["data"][0][:5] == ["app-one", str(tiny_model_dir), pairs, cast, 1]

    said = owner.predict("app-one", 1, False, 2, False, 0, False, api_name="/iteration_train")
    assert "Training the model after **app-one**" in said
    for _ in range(240):  # the Train tab's runner; a tiny model trains in seconds
        status = owner.predict(api_name="/train_status")[0]
        if status.startswith(("**done**", "**failed**")):
            break
        time.sleep(0.5)
    assert status.startswith("**done**"), status
    trained = store.iteration_info("app-one").trained
    assert trained and trained.endswith("/model") and (tmp_path / "data" / "runs").is_dir()
    table, _ = owner.predict(api_name="/iterations")
    assert table["data"][0][-1] == trained
