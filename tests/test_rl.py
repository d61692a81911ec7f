"""Online RL (pipeline/rl.py) on the tiny model: a planted reward rises, the reward terms are
what they say, a stopped or chunked run takes the same steps as a straight one, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import run_cli
from pipeline.recipes import RL_RECIPES

PLANTED = "e"  # the planted reward: the share of a title's characters that are this letter
IDEAS = ["how to learn python fast", "ai for small business", "data science careers"]
# Small and quick: 12 new tokens, 2 ideas x 8 titles per step, logged every step.
FAST = RL_RECIPES["fast"].changed(max_new_tokens=12, logging_steps=1, seed=0)


def planted(prompts, completions) -> list[float]:
    return [c.count(PLANTED) / max(1, len(c)) for c in completions]


def planted_share(model: str) -> float:
    """The planted reward's mean over 48 titles sampled from `model` with a fixed seed."""
    from pipeline.generation import GenerationSettings, generate_titles
    from pipeline.models import load_model

    settings = GenerationSettings(n=16, seed=0, max_new_tokens=12, temperature=1.0)
    groups = generate_titles(load_model(model, fresh=True), IDEAS, settings)
    raws = [t.raw for group in groups for t in group]
    return sum(planted(None, raws)) / len(raws)


def test_the_reward_terms():
    from pipeline.rl import format_score, length_score

    good = "How to Learn Python Fast: A Plan That Works"  # 43 characters
    assert format_score(None, [good, f"Title: {good}", "short", f"{good}\n{good}"]) == [
        1.0,
        0.0,
        0.0,
        0.0,
    ]
    lengths = length_score(None, [good, "x" * 15, "x" * 90, "x" * 200, "", f'"{good}"'])
    assert lengths == [0.0, -0.5, -0.5, -1.0, -1.0, 0.0]  # quotes are not counted


def test_a_planted_reward_rises_and_everything_is_logged(small_data, tiny_model_dir, tmp_path):
    from pipeline.metrics import read_metrics
    from pipeline.rl import RewardTerm, read_samples, train_rl
    from pipeline.tracking import logged_metrics, run_name

    # a full fine-tune (the tiny model is too small for LoRA to move it quickly), KL to a copy
    recipe = dataclasses.replace(FAST, lora_r=None, learning_rate=1e-2)
    out = tmp_path / "rl"
    result = train_rl(
        small_data,
        out,
        str(tiny_model_dir),
        None,
        recipe,
        terms=[RewardTerm("planted", 1.0, planted)],
        max_steps=16,
    )
    assert result.kind == "rl" and result.finished and result.steps == 16
    assert json.loads((out / "train_summary.json").read_text())["kind"] == "rl"
    before, after = planted_share(str(tiny_model_dir)), planted_share(str(out))
    assert after > before + 0.04, (before, after)

    metrics = [m for m in read_metrics(out / "metrics.jsonl") if "reward" in m]
    assert len(metrics) == 16
    for key in ("reward", "reward/planted", "kl", "completions/mean_length"):
        assert all(key in m for m in metrics), key
    assert metrics[-1]["kl"] > 0  # it moved away from where it started, and says how far
    samples = read_samples(out)
    assert {s["step"] for s in samples} == set(range(1, 17))
    assert all(s["idea"] and "planted" in s and "reward" in s for s in samples)
    logged = logged_metrics(run_name(out, "grpo"))
    assert sum("train/reward" in record for record in logged) == 16

    # a pushed RL policy's card says how it was trained
    from hub.cards import model_card

    summary = json.loads((out / "train_summary.json").read_text())
    card = model_card(summary, read_metrics(out / "metrics.jsonl"), "alice/rl", None, None)
    assert "online RL (GRPO) against a reward model" in card and "- grpo" in card


def test_a_full_fine_tune_from_an_sft_stage_kept_as_an_adapter_keeps_its_kl_to_that_stage(
    small_data, tiny_model_dir, tmp_path
):
    """TRL loads a full fine-tune's KL reference by the policy's name. A stage kept as its
    adapter is merged in at load; named as its bare base, the reference would be the base."""
    import torch
    from peft import LoraConfig, get_peft_model

    from pipeline.models import ADAPTER_BASE, load_model
    from pipeline.rl import RewardTerm, TitleReward, prompt_rows, rl_trainer
    from pipeline.stages import training_splits

    base = load_model(str(tiny_model_dir), fresh=True)
    torch.manual_seed(0)  # a LoRA whose B is not zero: the stage differs from its base
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)  # fmt: skip
    stage = tmp_path / "sft"
    get_peft_model(base.model, lora).save_pretrained(stage / "adapter")
    base.tokenizer.save_pretrained(stage)
    (stage / ADAPTER_BASE).write_text(json.dumps({"base_model": str(tiny_model_dir)}))

    policy = load_model(str(stage), fresh=True)
    recipe = dataclasses.replace(FAST, lora_r=None, beta=0.04)
    from datasets import Dataset

    prompts = Dataset.from_list(prompt_rows(training_splits(small_data, recipe)[0]))
    reward = TitleReward([RewardTerm("planted", 1.0, planted)], None)
    trainer = rl_trainer(policy, recipe, tmp_path / "rl", prompts, reward)
    ids = policy.tokenizer("How to learn Python fast", return_tensors="pt").input_ids
    with torch.no_grad():
        kl_to = trainer.ref_model(ids).logits.float()
        start = policy.model(ids).logits.float()
        bare = load_model(str(tiny_model_dir), fresh=True).model(ids).logits.float()
    assert (start - bare).abs().max() > 1e-2  # the stage is not its base
    assert torch.allclose(kl_to, start, atol=1e-4), (kl_to - start).abs().max()


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_stop_resume_and_chunks_take_the_same_steps_as_a_straight_run(
    method, small_data, tiny_model_dir, tmp_path
):
    from pipeline.metrics import read_metrics
    from pipeline.rl import RewardTerm, train_rl
    from pipeline.zerogpu import train_in_chunks

    recipe = FAST.changed(method=method, learning_rate=1e-2)
    terms = [RewardTerm("planted", 1.0, planted)]

    def rewards(out: Path) -> list[float]:
        return [m["reward"] for m in read_metrics(out / "metrics.jsonl") if "reward" in m]

    straight = train_rl(
        small_data,
        tmp_path / "straight",
        str(tiny_model_dir),
        None,
        recipe,
        terms=terms,
        max_steps=4,
    )
    first = train_rl(
        small_data,
        tmp_path / "resumed",
        str(tiny_model_dir),
        None,
        recipe,
        terms=terms,
        max_steps=4,
        stop_after=2,
    )
    assert (first.steps, first.finished) == (2, False)
    resumed = train_rl(
        small_data,
        tmp_path / "resumed",
        str(tiny_model_dir),
        None,
        recipe,
        terms=terms,
        max_steps=4,
        resume=True,
    )
    assert straight.steps == resumed.steps == 4
    # the same titles step for step, give or take a character: sampling after a reload can
    # part on a float's last bit (seen: one step 0.1% apart)
    assert rewards(tmp_path / "resumed") == pytest.approx(rewards(tmp_path / "straight"), rel=0.02)

    # ZeroGPU chunks go through train_run, which reads the kind from the recipe; the planted
    # reward cannot cross a GPU call, so these chunks use the recipe's own terms
    rule_recipe = recipe.changed(reward_weight=0.0, format_weight=1.0)
    rule_recipe = dataclasses.replace(rule_recipe, reward_weight=0.0)
    whole = train_rl(
        small_data, tmp_path / "whole", str(tiny_model_dir), None, rule_recipe, max_steps=4
    )
    chunks = []
    chunked = train_in_chunks(
        small_data,
        tmp_path / "chunked",
        str(tiny_model_dir),
        rule_recipe,
        max_steps=4,
        chunk_steps=1,
        on_chunk=chunks.append,
    )
    assert [c.steps for c in chunks] == [1, 2, 3, 4] and chunked.kind == "rl"
    assert whole.steps == chunked.steps == 4
    assert rewards(tmp_path / "chunked") == pytest.approx(rewards(tmp_path / "whole"), rel=0.02)


@pytest.fixture(scope="module")
def tiny_reward_model(small_data, tiny_model_dir, tmp_path_factory) -> Path:
    from pipeline.recipes import REWARD_RECIPES
    from pipeline.reward import train_reward

    out = tmp_path_factory.mktemp("rl-rm") / "rm"
    recipe = REWARD_RECIPES["fast"].changed(batch_size=4, learning_rate=5e-3)
    train_reward(small_data, out, str(tiny_model_dir), recipe)
    return out


def test_rl_cli_with_a_reward_model(small_data, tiny_model_dir, tiny_reward_model, tmp_path):
    out = tmp_path / "policy"
    common = ["--data", str(small_data), "--model", str(tiny_model_dir), "--max-new-tokens", "12"]
    done = run_cli(
        "rl",
        *common,
        "--reward",
        str(tiny_reward_model),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--method",
        "rloo",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["kind"] == "rl" and summary["steps"] == 2
    assert summary["reward_model"] == str(tiny_reward_model)
    assert summary["recipe"]["method"] == "rloo"
    from pipeline.metrics import read_metrics

    logged = [m for m in read_metrics(out / "metrics.jsonl") if "reward" in m]
    assert {"reward/model", "reward/format", "reward/length"} <= set(logged[-1])

    # refused in one line, before the policy loads
    no_reward = run_cli("rl", *common, "--out", str(tmp_path / "x"))
    assert no_reward.returncode == 2 and "needs a reward model" in no_reward.stderr
    not_reward = run_cli("rl", *common, "--out", str(tmp_path / "y"), "--reward", str(out))
    assert not_reward.returncode == 2 and "not a finished reward model run" in not_reward.stderr
    odd = run_cli("rl", *common, "--out", str(tmp_path / "z"), "--batch-size", "12")
    assert odd.returncode == 2 and "multiple of generations" in odd.stderr


def test_tracking_goes_under_the_data_folder_unless_told_otherwise(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    first, second = tmp_path / "a" / "run-1" / "model", tmp_path / "b" / "run-1" / "model"
    script = f"""
from pipeline.tracking import PROJECT, forget_run_name, tracking_args, use_tracking_dir
say = lambda x: print('=>', x)  # apart from trackio's own lines
say(use_tracking_dir({str(tmp_path)!r}))
say(tracking_args({str(first)!r}, 'grpo'))
import trackio
trackio.init(project=PROJECT, name='run-1 grpo')
trackio.log({{'train/reward': 1.0}})
trackio.finish()
say(tracking_args({str(second)!r}, 'grpo')['run_name'])  # another folder called run-1
say(tracking_args({str(first)!r}, 'grpo')['run_name'])  # the first one, resumed
forget_run_name({str(first)!r})  # the first one, started afresh
say(tracking_args({str(first)!r}, 'grpo')['run_name'])
"""
    env = {k: v for k, v in os.environ.items() if k != "TRACKIO_DIR"}
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, text=True,
                           capture_output=True, check=True).stdout.splitlines()  # fmt: skip
    shown = [line[3:] for line in shown if line.startswith("=> ")]
    assert shown[0] == str(tmp_path.resolve() / "trackio")
    assert "'report_to': 'trackio'" in shown[1] and "'run_name': 'run-1 grpo'" in shown[1]
    # one folder's run never appends to another's of the same name; a resume carries on its own
    assert shown[2:] == ["run-1 grpo #2", "run-1 grpo", "run-1 grpo #2"]
    script = f"from pipeline.tracking import tracking_args as t\nprint(t({str(first)!r}, 'x'))"
    off = subprocess.run([sys.executable, "-c", script], cwd=ROOT, text=True, check=True,
                         env={**env, "TITLE_DPO_TRACKING": "0"}, capture_output=True)  # fmt: skip
    assert off.stdout.strip() == "{'report_to': 'none'}"
