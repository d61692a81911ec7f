"""The reward model (pipeline/reward.py) on the tiny model: it trains, saves, loads and scores;
its held-out accuracy, counted pair by pair, is TRL's; best-of-n, the judge and the CLI use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MARKER, run_cli
from pipeline.errors import UserError
from pipeline.recipes import REWARD_RECIPES

RECIPE = REWARD_RECIPES["fast"].changed(
    epochs=8, learning_rate=1e-2, batch_size=4, logging_steps=1, seed=0
)


def marker_splits() -> dict:
    """Seed pairs of 8 ideas where the chosen title always ends with the marker and the
    rejected one never does: a preference a reward model must learn, split by idea."""
    from pipeline import datasets as ds
    from pipeline.records import Preference

    prefs = ds.seed_preferences()
    ideas = sorted({p.idea for p in prefs})[:8]
    marked = [
        Preference(p.idea, f"{p.chosen} {MARKER}", p.rejected)
        for idea in ideas
        for p in [q for q in prefs if q.idea == idea][:6]
    ]
    return ds.split_by_idea(marked, valid_fraction=0.25)


@pytest.fixture(scope="module")
def marker_data(tmp_path_factory) -> Path:
    from pipeline import datasets as ds

    splits = marker_splits()
    out = tmp_path_factory.mktemp("marker") / "data"
    ds.save_dataset(ds.build_dataset(splits), out, ds.summarize(splits, "seed", "idea"))
    return out


@pytest.fixture(scope="module")
def reward_run(marker_data, tiny_model_dir, tmp_path_factory):
    from pipeline.reward import score_reward_held_out, train_reward

    out = tmp_path_factory.mktemp("rm") / "model"
    result = train_reward(marker_data, out, str(tiny_model_dir), RECIPE)
    return score_reward_held_out(result)


def test_the_reward_model_trains_saves_loads_and_learns_the_preference(reward_run, marker_data):
    from pipeline.datasets import load_preference_dataset
    from pipeline.reward import load_reward_model
    from pipeline.tracking import logged_metrics, run_name

    out = Path(reward_run.out)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["kind"] == "reward" and summary["finished"]
    assert (out / "adapter").is_dir()  # the LoRA adapter and score head, kept beside
    reward = load_reward_model(str(out))  # a plain sequence-classification model
    assert type(reward.loaded.model).__name__.endswith("ForSequenceClassification")
    valid = list(load_preference_dataset(marker_data)["valid"])
    idea = valid[0]["prompt"][0]["content"]
    plain = valid[0]["rejected"][0]["content"]
    marked, unmarked = reward.score([valid[0]["prompt"]] * 2, [f"{plain} {MARKER}", plain])
    assert marked > unmarked
    # held-out ideas it never saw: the marker is what it learned
    held = summary["held_out"]
    assert held["pairs"] == len(valid) and held["reward_model"] >= 0.9
    assert held["reward_model"] == reward.accuracy(valid)
    assert held["untrained"] < 0.9  # the chat model alone cannot see the planted preference
    # pair by pair against the chat model: what was gained less what was lost is the change
    change = round((held["reward_model"] - held["untrained"]) * held["pairs"])
    assert held["gained"] - held["lost"] == change and held["gained"] > 0
    assert idea  # the prompt is the tutorial's, conversational
    # trackio received the run's metrics
    logged = logged_metrics(run_name(out, "reward"))
    assert any("train/loss" in record for record in logged)
    assert any("eval/accuracy" in record for record in logged)


def test_held_out_accuracy_pair_by_pair_equals_trls(reward_run, marker_data):
    """TRL's eval accuracy is a mean of batch means: in one batch holding every held-out pair
    it is the pair-by-pair share, and so is ours, on the saved model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from pipeline.datasets import load_preference_dataset
    from pipeline.models import load_model
    from pipeline.reward import RewardModel

    valid = load_preference_dataset(marker_data)["valid"]
    model = AutoModelForSequenceClassification.from_pretrained(reward_run.out, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(reward_run.out)
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(
            output_dir=str(Path(reward_run.out).parent / "trl-eval"),
            per_device_eval_batch_size=len(valid),
            report_to="none",
            bf16=False,
            use_cpu=True,
        ),
        train_dataset=valid,
        eval_dataset=valid,
        processing_class=tokenizer,
    )
    trl_accuracy = trainer.evaluate()["eval_accuracy"]
    ours = RewardModel(load_model(reward_run.out, fresh=True, head="score")).accuracy(list(valid))
    assert ours == pytest.approx(trl_accuracy)
    # and the margin, score by score: the same scores, not just the same count
    rm = RewardModel(load_model(reward_run.out, fresh=True, head="score"))
    rows = list(valid)
    chosen = rm.score([r["prompt"] for r in rows], [r["chosen"][0]["content"] for r in rows])
    rejected = rm.score([r["prompt"] for r in rows], [r["rejected"][0]["content"] for r in rows])
    margin = sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    assert margin == pytest.approx(trainer.evaluate()["eval_margin"], rel=1e-4, abs=1e-5)


def test_best_of_n_puts_the_highest_score_first(reward_run, tiny_model):
    from pipeline.generation import GenerationSettings
    from pipeline.reward import best_of_n, load_reward_model

    reward = load_reward_model(reward_run.out)
    idea = "how to learn python fast"
    ranked = best_of_n(tiny_model, reward, idea, GenerationSettings(n=6, seed=3))
    assert len(ranked) == 6
    scores = [s.score for s in ranked]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    # each score is the reward model's own score of that title, alone
    for scored in ranked:
        assert reward.score_titles(idea, [scored.title.raw])[0] == pytest.approx(
            scored.score, abs=1e-4
        )


def test_the_reward_model_judges_a_round(reward_run, tmp_path):
    from pipeline.judges import RewardJudge, judge_round, make_judge
    from pipeline.reward import load_reward_model
    from pipeline.votes import VoteStore
    from pipeline.winrates import round_report

    judge = make_judge(reward_run.out)
    assert isinstance(judge, RewardJudge) and judge.name.startswith("reward model")
    # the order cannot sway it: the same pair both ways gets mirrored verdicts
    idea = "how to learn python fast"
    plain = "Learn Python in a Weekend: the Fastest Way"
    assert judge.prefer(idea, f"{plain} {MARKER}", plain) == "A"
    assert judge.prefer(idea, plain, f"{plain} {MARKER}") == "B"

    from pipeline.round_tables import RoundTitle

    store = VoteStore(tmp_path / "votes.db")
    titles = [
        RoundTitle("marked", idea, 0, f"{plain} {MARKER}", None),
        RoundTitle("plain", idea, 0, plain, None),
    ]
    models = [{"label": "marked", "name": "m"}, {"label": "plain", "name": "p"}]
    store.add_round("rm-round", models, titles, 1, "typed")
    outcomes = judge_round(store, "rm-round", RewardJudge(load_reward_model(reward_run.out)))
    report = round_report(store, "rm-round", outcomes, judge.name)
    (comparison,) = report.comparisons
    winner = comparison.model if comparison.wins else comparison.other
    assert winner == "marked" and comparison.wins + comparison.losses == 1


def _best_of_n(model_dir, reward: str, env: dict[str, str] | None = None):
    """`pipeline generate` with `--reward`, on one idea."""
    return run_cli(
        "generate", "--idea", "x idea", "--model", str(model_dir), "--reward", reward, env=env
    )


def test_reward_cli_and_best_of_n_cli(marker_data, tiny_model_dir, tmp_path):
    out = tmp_path / "rm"
    done = run_cli(
        "reward",
        "--data",
        str(marker_data),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--learning-rate",
        "5e-3",
        "--batch-size",
        "4",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["kind"] == "reward" and summary["held_out"]["pairs"] > 0
    assert summary["recipe"]["learning_rate"] == 5e-3 and summary["recipe"]["lora_r"] == 16

    best = run_cli(
        "generate",
        "--idea",
        "how to learn python fast",
        "--model",
        str(tiny_model_dir),
        "--reward",
        str(out),
        "--n",
        "4",
        "--seed",
        "1",
        "--json",
    )
    assert best.returncode == 0, best.stderr
    record = json.loads(best.stdout)
    assert len(record["titles"]) == 4 and record["scores"] == sorted(record["scores"], reverse=True)

    # a folder that is no reward model is refused in one line, before any model loads
    refused = _best_of_n(tiny_model_dir, str(tiny_model_dir))
    assert refused.returncode == 2 and "is not a finished reward model run" in refused.stderr
    unknown = run_cli(
        "reward", "--data", str(marker_data), "--out", str(tmp_path / "o"), "--recipe", "nope"
    )
    assert unknown.returncode == 2 and "unknown reward recipe 'nope'" in unknown.stderr


def test_no_chat_model_stands_in_for_a_reward_model(tiny_model_dir, reward_run):
    """Loading with a score head puts a new, random head on any model: named by mistake, or
    swapped for the offline copy of SmolLM2, a chat model gave rewards from random weights."""
    from pipeline.reward import load_reward_model

    with pytest.raises(UserError, match=r"not a reward model: its checkpoint is a \w+ForCausalLM"):
        load_reward_model(str(tiny_model_dir))
    offline = _best_of_n(tiny_model_dir, "someone/title-rm", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2, offline.stderr
    assert "reward model 'someone/title-rm' cannot be loaded" in offline.stderr
    assert load_reward_model(str(reward_run.out)).score_titles("idea", ["a title"])


def test_a_reward_model_is_no_round_model_and_is_pushed_with_a_card_of_its_own(reward_run):
    from pipeline.rounds import round_models

    with pytest.raises(UserError, match="is a reward model"):
        round_models(["smollm2-offline", reward_run.out])
    # `python -m hub push-model` shows it as a reward model, whole, never as an adapter
    import subprocess
    import sys

    from conftest import ROOT

    push = [sys.executable, "-m", "hub", "push-model", reward_run.out, "--repo", "alice/rm",
            "--dry-run"]  # fmt: skip
    done = subprocess.run(push, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pipeline_tag: text-classification" in done.stdout
    assert "AutoModelForSequenceClassification" in done.stdout and "reward-model" in done.stdout
    refused = subprocess.run([*push, "--adapter-only"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "is a reward model" in refused.stderr


def test_a_reward_run_depends_on_its_seed_not_on_what_ran_before(marker_data, tiny_model_dir,
                                                                 tmp_path):  # fmt: skip
    """The score head is drawn when the model loads: the recipe's seed decides it, so a run
    is the same whatever the process drew before it (a test before it, the app's sampling)."""
    import torch
    from safetensors.torch import load_file

    from pipeline.reward import train_reward

    weights = []
    for before in (1, 2):
        torch.manual_seed(before)
        torch.rand(before)  # whatever ran before drew from the global generator
        out = tmp_path / f"after-{before}"
        train_reward(marker_data, out, str(tiny_model_dir), RECIPE, max_steps=1)
        weights.append(load_file(out / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
