"""The RLHF half in the app, over real HTTP through gradio_client: a reward model on the Train
tab, best-of-n with it on the Generate tab, online RL against it, and the compare-runs view.
(A voter is refused by every one of these endpoints: tests/test_roles.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_app import _client, _wait_for_training

TUTORIAL = "The tutorial's 1,140 labelled pairs"
RL_METHOD = "Online RL against a reward model (RLHF step 2: GRPO / RLOO)"
# the data fields every Start takes first, then the method's own
DATA = [TUTORIAL, 1, ""]
REWARD_FORM = ["fast", 1, 1e-4, 8, True, 16, 32]  # recipe, epochs, lr, batch, LoRA, r, alpha
# recipe, method, epochs, lr, beta, batch, generations, weights (model, format, length), LoRA, r
RL_FORM = ["fast", "grpo", 1, 2e-5, 0.04, 16, 8, 1.0, 0.5, 0.5, True, 16]
SCREENING = [False, 0]


@pytest.fixture(scope="module")
def rlhf_app(tiny_model_dir, tmp_path_factory):
    from app import build_app, serve
    from app_process import free_port

    data = tmp_path_factory.mktemp("rlhf-app")
    app = build_app(str(tiny_model_dir), str(data))
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/", data
    app.close()


def test_reward_model_best_of_n_rl_and_compare_through_the_app(rlhf_app, tiny_model_dir):
    from pipeline.tracking import tracking_dir

    url, data = rlhf_app
    c = _client(url)
    base = str(tiny_model_dir)
    assert c.predict("fast", api_name="/reward_recipe_settings") == (1, 1e-4, 8, True, 16, 32)

    # 1. the reward model, on the tutorial's pairs, cut to 6 steps
    c.predict(*DATA, base, *REWARD_FORM, 6, *SCREENING, api_name="/reward_start")
    progress, _losses, accuracy, _table, log, _steps = _wait_for_training(c)
    assert progress.startswith("**done**") and "step 6/6" in progress, progress
    # held-out pairs, pair by pair: the 48 that 6 steps of 8 pairs read (of 120)
    assert "reward model" in progress and "of 48" in progress
    next_step = "*Use it: online RL against it (Method, above), or best of n on the Generate tab"
    assert progress.endswith(f"{next_step}, which ranks a model's titles by its scores.*")
    assert {"accuracy (train)", "accuracy (eval)"} <= {row[2] for row in accuracy["data"]}
    assert "training: 6 steps" in log
    with pytest.raises(Exception, match="scores titles and writes none"):
        c.predict(api_name="/use_trained_model")  # Generate keeps a model that writes
    (reward_run,) = sorted((data / "runs").glob("run-*/model"))
    assert json.loads((reward_run / "train_summary.json").read_text())["kind"] == "reward"

    # 2. best-of-n on the Generate tab, with that reward model
    found = c.predict(api_name="/reward_models")
    assert found["value"] == str(reward_run)
    # offered by what it is, not by its path: run, method, recipe, start, pairs, steps, figure
    ((offered_as, _),) = found["choices"]
    assert re.fullmatch(
        rf"{reward_run.parent.name}: reward model \(fast\) from {tiny_model_dir.name} on the "
        r"tutorial's pairs, 6 steps; held-out \d\.\d\d of 48 \(untrained \d\.\d\d\)",
        offered_as,
    ), offered_as
    ranked = c.predict("how to learn python fast", 4, 0.9, str(reward_run), api_name="/best_of_n")
    scores = [row[0] for row in ranked["data"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)

    # 3. online RL against it: the Method choice offers the reward model
    *_groups, offered, _c1, _c2, _c3, samples_shown = c.predict(RL_METHOD, api_name="/train_method")
    assert offered["value"] == str(reward_run)
    assert samples_shown["visible"] is False  # the reward run's view until RL starts
    with pytest.raises(Exception, match="choose the reward model"):
        c.predict(*DATA, base, "", *RL_FORM, 2, *SCREENING, api_name="/rl_start")
    c.predict(*DATA, base, str(reward_run), *RL_FORM, 3, *SCREENING, api_name="/rl_start")
    progress, reward_chart, kl_chart, _table, log, _steps = _wait_for_training(c)
    assert progress.startswith("**done**") and "step 3/3" in progress, progress
    lines = {row[2] for row in reward_chart["data"]}
    assert {"total reward", "reward model", "follows the prompt", "length penalty"} <= lines
    assert {row[2] for row in kl_chart["data"]} == {"KL to the start"}
    status = c.predict(api_name="/train_status")
    third, samples = status[3], status[5]
    assert {row[2] for row in third["data"]} == {"tokens per title"}
    assert samples["headers"][:3] == ["Step", "Idea", "Title"] and len(samples["data"]) == 24
    assert samples["data"][0][0] == 3  # newest first
    rl_run = max((data / "runs").glob("run-*/model"))
    summary = json.loads((rl_run / "train_summary.json").read_text())
    assert summary["kind"] == "rl" and summary["reward_model"] == str(reward_run)

    # 4. compare runs: both runs' curves of one metric on one chart
    runs, metrics, trackio = c.predict(api_name="/compare_choices")
    assert "trackio show --project title-dpo" in trackio and str(tracking_dir()) in trackio
    assert metrics["value"] == "loss" and "kl" in [m[0] for m in metrics["choices"]]
    names = [value for _line, value in runs["choices"]]  # the legend's short names
    assert {
        f"{Path(r).parent.name} ({k})" for r, k in ((reward_run, "reward"), (rl_run, "rl"))
    } == set(names)
    lines = [line for line, _value in runs["choices"]]  # what the owner reads: newest first
    # a round's models write titles: the Evaluate tab offers the RL run, not the reward model
    offered, _rounds = c.predict(api_name="/evaluate_choices")
    assert [value for _line, value in offered["choices"]] == [str(rl_run)]
    assert lines[0].startswith(f"{rl_run.parent.name}: GRPO (fast) from {tiny_model_dir.name}")
    assert lines[1] == offered_as
    compared = c.predict(names, "loss", api_name="/compare_runs")
    assert {row[2] for row in compared["data"]} == set(names)
    with pytest.raises(Exception, match="none of the chosen runs logged"):
        c.predict(names, "no-such-metric", api_name="/compare_runs")
