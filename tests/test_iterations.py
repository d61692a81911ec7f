"""On-policy iterations (pipeline/iterations.py) on the tiny model: the policy's own titles go
to the voters first, voters with a planted taste vote through the app (gradio_client), and
two iterations of training on their votes move the policy towards that taste."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from gradio_client import Client
from playwright.sync_api import expect

from app_process import free_port
from conftest import run_cli
from pipeline.errors import UserError
from pipeline.generation import GenerationSettings
from pipeline.iterations import trained_to_carry_on
from pipeline.votes import VoteStore
from pipeline.wording import counted
from screens import owner_page, screenshot

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PASSWORD = "iterations owner password"
DPO_WAY = "DPO from the model itself (iterative DPO)"  # the Iterations tab's choices
RLHF_WAY = "RLHF: a reward model on every iteration's votes so far, then online RL"
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


def test_a_trained_model_that_writes_the_same_titles_is_reported_so_not_awaited(
    tiny_model_dir, tmp_path
):
    """A judging round pairs the two models' titles sample by sample, and the same title makes
    no pair: a trained policy that writes what its start wrote (here: the same weights) leaves
    nothing to vote on, and the report says so instead of "no pair decided yet"."""
    import shutil

    from pipeline.iteration_report import SAME_TITLES, iteration_report
    from pipeline.iterations import judge_iteration, plan_iteration, start_iteration

    store = VoteStore.in_folder(tmp_path / "data")
    plan = plan_iteration(store, str(tiny_model_dir), ROUND_ONE[:2], "typed ideas", name="one")
    start_iteration(store, plan, SHORT)
    same = shutil.copytree(tiny_model_dir, tmp_path / "trained")
    store.set_iteration_trained("one", str(same))
    judging = judge_iteration(store, "one", ideas=["kept for judging"], k=2)
    assert judging.pairs == 0 and "same titles for every idea" in judging.describe_pairs()
    (report,) = iteration_report(store)
    assert report.same_titles == ("over_before",) and report.over_start is None
    assert f"{SAME_TITLES} as the policy before: no pair to vote on" in report.describe()
    assert report.row()[5] == f"{SAME_TITLES}: no pair"


def test_an_iteration_asks_about_a_batch_of_new_ideas_and_never_the_judging_ones(tmp_path):
    from pipeline.iterations import judge_ideas, plan_iteration
    from pipeline.rounds import fresh_ideas

    store = VoteStore.in_folder(tmp_path)
    shipped, judging = fresh_ideas(), judge_ideas()
    assert len(judging) == len(shipped) // 4 and set(judging) < set(shipped)
    plan = plan_iteration(store, "smollm2-offline", shipped, "fresh", max_ideas=16)
    assert len(plan.ideas) == 16 and not set(plan.ideas) & set(judging)
    assert (plan.for_judging, plan.later) == (len(judging), len(shipped) - len(judging) - 16)
    assert plan.describe_ideas() == (
        f"16 ideas ({len(judging)} kept for judging; {plan.later} left for later iterations)"
    )
    with pytest.raises(UserError, match="kept for judging"):
        plan_iteration(store, "smollm2-offline", judging, "the judging ideas")
    with pytest.raises(UserError, match="1 idea at least"):
        plan_iteration(store, "smollm2-offline", shipped, "fresh", max_ideas=0)


def vote_by_taste(url: str, rng: random.Random, budget: int, noise: float = 0.2) -> int:
    """A simulated voter through the app: prefers the title with more of the planted letter
    (a random one of the two a fifth of the time, a tie when equal), for `budget` votes at
    most. The coin for a pair is the voter's and the pair's, not the next of a sequence: the
    voter votes the same on it whenever it is served, on whichever side, so voters voting at
    once cast the same votes in every run."""
    client = Client(url, verbose=False)
    voter, _idea, left, right, pair_id, _ = client.predict(None, api_name="/start")
    seed, cast = rng.random(), 0
    while pair_id is not None and cast < budget:
        more = share(left) - share(right)
        coin = random.Random(f"{seed}|{min(left, right)}|{max(left, right)}")
        if coin.random() < noise:
            more = 1 if coin.choice(sorted([left, right])) == left else -1
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
def voting_app(tiny_model_dir, tmp_path, monkeypatch):
    """The app without the tutorial pool, with an owner password (loopback clients vote),
    looking for iterations to train at target twice a second."""
    from app import build_app, serve
    from pipeline.access import AccessSettings
    from ui.tabs.iterations import AUTO_TRAIN_SETTING

    monkeypatch.setenv(AUTO_TRAIN_SETTING, "0.5")

    data = tmp_path / "data"
    store = VoteStore.in_folder(data)
    # simulated voters vote as fast as a script can: the per-voter limit is a person's
    access = AccessSettings(
        owner_password=PASSWORD, votes_per_minute=1000, address_votes_per_minute=5000
    )
    app = build_app(str(tiny_model_dir), str(data), access, tutorial_pool=False)
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/", store
    app.close()


def test_two_iterations_learn_the_voters_planted_taste(
    voting_app, tiny_model_dir, tmp_path, browser
):
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
        # its judging round: the trained policy against the one before (and the start)
        judging = store.round_info(store.iteration_info(info.name).judge_round)
        labels = [f"after it{number}", f"before it{number}"]
        assert judging.labels == labels + ([f"start: {tiny_model_dir.name}"] if number > 1 else [])
    # each iteration moves the policy towards the taste (seen: 0.088, 0.125, 0.173)
    print("the planted letter's share: start, after it1, after it2:", shares)
    assert shares[0] < shares[1] < shares[2] and shares[2] > shares[0] + 0.03, shares

    # three more voters judge; the owner retires the iterations' pools (Pools tab), so only
    # the judging rounds' pairs are served, the newest first
    from pipeline.iteration_report import iteration_report

    for name in ("it1", "it2"):
        store.set_pool(f"iteration:{name}", retired=True)
    judging_pairs = sum(p.pairs for p in store.pools() if p.name.startswith("round:judge-"))
    # each judges every pair: a voter is served the newest round's pairs before the older's
    judged = vote_together(url, [random.Random(rng.random()) for _ in range(3)], judging_pairs)
    reports = iteration_report(store)
    assert [r.name for r in reports] == ["it1", "it2"] and reports[1].policy_label == (
        "trained after it1"
    )
    pools = {p.name: p.votes for p in store.pools()}
    assert sum(v for name, v in pools.items() if name.startswith("round:")) == judged
    assert judged == 3 * judging_pairs
    for report in reports:
        assert report.votes == pools[f"iteration:{report.name}"] and report.voters == 3
        # (a judging round may reuse an earlier one's pair: the same two titles)
        assert report.judge_votes >= pools[f"round:judge-{report.name}"] > 0
        assert report.over_before.total > 0
        assert report.trained_titles.titles == 2 * len(judging_ideas_left(store))
    assert reports[0].over_start is None and reports[1].over_start.total > 0
    show_the_iterations_tab(browser, url, reports)


def show_the_iterations_tab(browser, url: str, reports) -> None:
    """The owner's Iterations tab in a real browser: the report's rows and the chart."""
    page = owner_page(browser, url, PASSWORD, width=1280, height=1100)
    # with a trained iteration, the Model field is left empty, which carries on from it; the
    # starting model put there (as the Train tab's base gets it) would start over instead
    page.get_by_role("tab", name="Train").click()
    expect(page.get_by_label("Base model (Hub id or folder)")).not_to_have_value("")
    page.get_by_role("tab", name="Iterations").click()
    expect(page.get_by_label("Model (empty: the last trained one)")).to_have_value("")
    for report in reports:  # each row says how the trained policy fared, by pair
        page.locator(f"text={_by_pair_text(report.over_before)} >> visible=true").first.wait_for()
    page.locator("img[src^='data:image']").first.wait_for()  # the chart (webp)
    page.get_by_text("Across iterations").wait_for(state="hidden")  # the figure's titles show
    # the window on the report and the chart (the docs' picture)
    page.evaluate("document.querySelector('#iteration-report').scrollIntoView()")
    screenshot(page, "iterations-tab.png")


def _by_pair_text(h) -> str:
    decided = h.pairs_won + h.pairs_lost
    return f"{h.pairs_won} of {counted(decided, 'pair')}" if decided else "no pair decided yet"


def judging_ideas_left(store: VoteStore) -> list[str]:
    """The judging ideas no iteration asked about (the ones a judging round uses)."""
    from pipeline.iterations import judge_ideas

    asked = set(store.pool_ideas([i.pool for i in store.iterations()]))
    return [i for i in judge_ideas() if i not in asked]


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
    # a mistyped folder is said to be one, and left as it was: no new empty store there
    typo = tmp_path / "dta"
    for command in (["iterate", "status"], ["iterate", "report"], ["pools"]):
        missed = run_cli(*command, "--data", str(typo))
        assert missed.returncode == 2 and f"{typo}: no vote store here" in missed.stderr
    assert not typo.exists()
    untrained = run_cli("iterate", "train", "cli-one", "--out", str(tmp_path / "o"),
                        "--data", str(data))  # fmt: skip
    assert untrained.returncode == 2 and "no preference rows from" in untrained.stderr
    unknown = run_cli("iterate", "status", "nope", "--data", str(data))
    assert unknown.returncode == 2 and "no iteration 'nope'" in unknown.stderr
    unjudged = run_cli("iterate", "judge", "cli-one", "--data", str(data))
    assert unjudged.returncode == 2 and "no trained policy to judge yet" in unjudged.stderr
    chart = tmp_path / "iterations.png"
    report = run_cli("iterate", "report", "--chart", str(chart), "--data", str(data), "--json")
    assert report.returncode == 0, report.stderr
    (found,) = json.loads(report.stdout)
    assert (found["name"], found["votes"], found["trained"]) == ("cli-one", 0, None)
    assert found["policy_titles"]["titles"] >= 2 and chart.stat().st_size > 10_000


def test_an_iteration_through_the_app(voting_app, tiny_model_dir, tmp_path):
    """The owner starts an iteration to be trained once its votes are in, from the Iterations
    tab's endpoints; a voter with the planted taste votes; the app trains on its own, puts
    the judging round to the voters, and the report shows what they said. A voter may do
    none of the owner's part."""
    import time

    url, store = voting_app
    visitor = Client(url, verbose=False)
    for endpoint in ("/iterations", "/iteration_report"):
        with pytest.raises(Exception, match="owner only"):
            visitor.predict(api_name=endpoint)
    with pytest.raises(Exception, match="owner only"):
        visitor.predict("app-one", api_name="/iteration_judge")
    owner = Client(url, verbose=False)
    owner.predict(PASSWORD, api_name="/owner_sign_in")
    assert trained_to_carry_on(store) is None  # no iteration yet: the owner names a model
    # how it learns, votes per pair, earlier iterations, the tutorial's pairs, steps, screening
    training = [DPO_WAY, 1, False, False, 2, False, 0, False]
    message, table, _ = owner.predict(str(tiny_model_dir), "Typed below, one per line",
                                      "\n".join(ROUND_ONE), None, 4, 1.2, 1, "app-one", 16, True,
                                      *training, api_name="/iteration_start")  # fmt: skip
    assert message.startswith("**app-one**") and "served to voters first" in message
    assert "trains once every pair has 1 vote." in message
    assert store.iteration_info("app-one").training["max_steps"] == 2
    assert store.iteration_info("app-one").settings["temperature"] == 1.2  # as the owner set it
    pairs = {p.name: p.pairs for p in store.pools()}["iteration:app-one"]
    cast = vote_by_taste(url, random.Random(1), budget=pairs - 1)
    table, _ = owner.predict(api_name="/iterations")
    assert table["data"][0][:5] == ["app-one", tiny_model_dir.name, pairs, cast, 1]
    time.sleep(1.5)  # three looks by the watcher: one pair short of the target, no training
    assert "runs" not in store.iteration_info("app-one").training
    assert trained_to_carry_on(store) is None  # not trained yet: nothing to carry on from

    vote_by_taste(url, random.Random(2), budget=1)  # a second voter: the last pair's vote
    for _ in range(240):  # the watcher starts the Train tab's runner; a tiny model is quick
        status = owner.predict(api_name="/train_status")[0]
        if store.iteration_info("app-one").judge_round or status.startswith("**failed**"):
            break
        time.sleep(0.5)
    info = store.iteration_info("app-one")
    assert info.trained and info.trained.endswith("/model"), status
    assert info.training["runs"] == [str(Path(info.trained).parent)]
    assert info.judge_round == "judge-app-one"
    assert trained_to_carry_on(store) == info.trained  # what a next iteration starts from
    table, _ = owner.predict(api_name="/iterations")
    assert table["data"][0][-1] == Path(info.trained).parent.name  # RUN/model, called by its RUN

    # the judging round's pairs come first now: a voter judges them
    judging = store.round_info("judge-app-one")
    judged = vote_by_taste(url, random.Random(3), budget=judging.pairs)
    assert judged == judging.pairs
    rows, chart = owner.predict(api_name="/iteration_report")
    (row,) = rows["data"]
    assert row[:2] == ["app-one", f"{cast + 1} (2)"] and row[4] == judged
    # by pair: each of the voter's judgements decides its pair (one vote each), or a tie
    said = r"better|worse|too close to call"
    assert re.fullmatch(
        rf"\d+% \(\d+%–\d+%\), \d+ of \d+ pairs?: ({said})|no pair decided yet.*", row[5]
    )
    assert chart is not None

    # judged again (the owner may, say after more training): a second round, which the
    # iteration now points to
    said, rows, _ = owner.predict("app-one", api_name="/iteration_judge")
    assert said.startswith("Round **judge-app-one-2**")
    assert store.iteration_info("app-one").judge_round == "judge-app-one-2"


def test_the_rlhf_way_through_the_app_and_the_command_line(voting_app, tiny_model_dir, tmp_path):
    """The other way to learn from an iteration's votes: a reward model on every iteration's
    votes so far, then online RL against it; two runs on the Train tab's runner, the second
    starting once the first is done; the same from the command line."""
    import time

    url, store = voting_app
    owner = Client(url, verbose=False)
    owner.predict(PASSWORD, api_name="/owner_sign_in")
    training = [RLHF_WAY, 1, True, True, 2, False, 0, False]  # with the tutorial's pairs
    owner.predict(str(tiny_model_dir), "Typed below, one per line", "\n".join(ROUND_ONE), None,
                  4, 0.7, 1, "rl-one", 16, False, *training,
                  api_name="/iteration_start")  # fmt: skip
    pairs = {p.name: p.pairs for p in store.pools()}["iteration:rl-one"]
    assert vote_by_taste(url, random.Random(4), budget=pairs) == pairs
    said = owner.predict("rl-one", *training, api_name="/iteration_train")
    assert "Training the model after **rl-one**" in said
    for _ in range(480):
        if store.iteration_info("rl-one").judge_round:
            break
        time.sleep(0.5)
    info = store.iteration_info("rl-one")
    assert info.trained and info.judge_round == "judge-rl-one", owner.predict(
        api_name="/train_status"
    )
    runs = sorted((tmp_path / "data" / "runs").iterdir())
    summaries = [json.loads((r / "model" / "train_summary.json").read_text()) for r in runs]
    assert [s["kind"] for s in summaries] == ["reward", "rl"]
    assert summaries[1]["reward_model"] == str(runs[0] / "model")
    data = json.loads((runs[0] / "data" / "summary.json").read_text())
    assert data["tutorial_pairs"] == 1140 and data["votes_used"] == pairs
    assert info.trained == str(runs[1] / "model")

    cli = run_cli("iterate", "train", "rl-one", "--rlhf", "--out", str(tmp_path / "cli-rl"),
                  "--max-steps", "2", "--no-judge", "--data", str(tmp_path / "data"))  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "cli-rl" / "reward" / "train_summary.json").is_file()
    assert store.iteration_info("rl-one").trained == str(tmp_path / "cli-rl" / "model")


def test_a_run_that_finished_without_recording_its_iteration_is_recorded_when_listed(
    voting_app, tiny_model_dir, tmp_path
):
    """A Resume on the Train tab finishes an iteration's run with no word to the iteration
    (nor does a run that outlived an app restart): the Iterations listing records it."""
    from pipeline.iterations import iteration_recipe, write_iteration_data
    from pipeline.runner import TrainingRunner

    url, store = voting_app
    plan = plan_iteration_for(store, tiny_model_dir, "resumed")
    pairs = {p.name: p.pairs for p in store.pools()}[f"iteration:{plan}"]
    assert vote_by_taste(url, random.Random(5), budget=pairs) == pairs
    runner = TrainingRunner()
    # no on_done: as a resumed run
    run = runner.start_run(tmp_path / "runs", lambda out: write_iteration_data(store, plan, out),
                           model_name=str(tiny_model_dir), recipe=iteration_recipe(),
                           max_steps=2)  # fmt: skip
    store.add_iteration_run(plan, run)
    assert runner.wait(timeout=300).state == "done"
    assert store.iteration_info(plan).trained is None
    owner = Client(url, verbose=False)
    owner.predict(PASSWORD, api_name="/owner_sign_in")
    table, _ = owner.predict(api_name="/iterations")
    assert table["data"][0][-1] == run.name  # RUN/model, called by its RUN
    assert store.iteration_info(plan).trained == str(run / "model")


def plan_iteration_for(store: VoteStore, model, name: str) -> str:
    """An iteration of the tiny model on ROUND_TWO's ideas, 4 titles each; its name."""
    from pipeline.iterations import plan_iteration, start_iteration

    plan = plan_iteration(store, str(model), ROUND_TWO, "typed ideas", name=name, k=4)
    return start_iteration(store, plan, SHORT).name


def test_an_iteration_from_a_runs_sft_stage_leaves_out_the_runs_training_ideas(
    tmp_path, tiny_model_dir, small_data
):
    """The policy may be a finished run's SFT stage (model/sft): the run's training ideas are
    its too. A run whose data is not on this disk (a policy restored from the mirror) still
    plans, on the iterations' own ideas."""
    import shutil

    from pipeline.iterations import plan_iteration

    model = tmp_path / "run" / "model"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_model_dir, model / "sft")
    summary = {"started_from": str(tiny_model_dir), "data": str(small_data)}
    (model / "train_summary.json").write_text(json.dumps(summary))
    ideas = json.loads((small_data / "summary.json").read_text())["ideas"]
    store = VoteStore.in_folder(tmp_path / "data")
    asked = [*ideas["train"][:2], *ideas["valid"][:1], "a brand new idea"]
    for policy in (model, model / "sft"):
        plan = plan_iteration(store, str(policy), asked, "typed ideas")
        assert plan.ideas == [ideas["valid"][0], "a brand new idea"] and plan.left_out == 2
    summary["data"] = str(tmp_path / "gone")
    (model / "train_summary.json").write_text(json.dumps(summary))
    assert plan_iteration(store, str(model), asked, "typed ideas").ideas == asked


def test_an_iterations_record_brings_it_back_and_fills_in_what_a_store_lacks(tmp_path):
    """`pipeline.mirror`'s iteration records, read back into an empty store and into one
    that has the iteration from before it was trained."""
    from pipeline.generation import Title
    from pipeline.mirror import iteration_records, restore_iterations

    def titles(*texts: str) -> list[Title]:
        return [Title("a mirrored idea", t, f" {t}\n", "policy-0", {"seed": 0}) for t in texts]

    store = VoteStore.in_folder(tmp_path / "here")
    store.add_iteration("one", "policy-0", titles("First title", "Second title", "Third"),
                        parent=None, k=3, ideas_from="typed", target_votes=2)  # fmt: skip
    before_training = iteration_records(store)
    store.set_iteration_training("one", {"at_target": True})
    store.set_iteration_trained("one", "runs/policy-1", at=1234.5)
    records = json.loads(json.dumps(iteration_records(store)))

    empty = VoteStore.in_folder(tmp_path / "empty")
    assert restore_iterations(empty, [*records, {"name": "broken"}, "not a record"]) == (1, 2)
    assert restore_iterations(empty, records) == (0, 0)  # once
    assert empty.iterations() == store.iterations()
    assert [(p.name, p.pairs, p.priority) for p in empty.pools()] == [("iteration:one", 3, 10)]
    assert sorted(empty.pool_titles("iteration:one")) == sorted(store.pool_titles("iteration:one"))

    behind = VoteStore.in_folder(tmp_path / "behind")
    assert restore_iterations(behind, before_training) == (1, 0)
    assert behind.iteration_info("one").trained is None
    assert restore_iterations(behind, records) == (0, 0)  # known: filled in, not added
    filled = behind.iteration_info("one")
    assert (filled.trained, filled.trained_at) == ("runs/policy-1", 1234.5)
    assert filled.training == {"at_target": True}


@pytest.mark.parametrize(
    ("won", "lost", "said"),
    [(8, 0, "better"), (1, 8, "worse"), (5, 4, "too close to call"), (4, 1, "too close to call")],
)
def test_the_report_says_in_a_word_whether_the_trained_policy_beat_the_one_before(won, lost, said):
    from pipeline.iteration_report import _by_pair_short
    from pipeline.winrates import HeadToHead, wilson

    h = HeadToHead("trained", "before", won, lost, 0, 0, pairs_won=won, pairs_lost=lost)
    low, high = wilson(won, won + lost)
    assert _by_pair_short(h) == (
        f"{won / (won + lost):.0%} ({low:.0%}–{high:.0%}), {won} of {won + lost} pairs: {said}"
    )
