"""Hub kernels (pipeline/hub_kernels.py): off for every model every kind of run loads (TRL's
own loads included) unless the owner opts in; opted in offline, a logged fallback.

transformers decides each model's kernels at the end of `from_pretrained` with a call to
`set_use_kernels(value, ...)` (and again on each change of mode while they are on): the tests
record every such call, ours and TRL's alike.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
from transformers import PreTrainedModel

from conftest import run_cli
from pipeline import hub_kernels
from pipeline.recipes import REWARD_RECIPES, RL_RECIPES, get_recipe


@pytest.fixture
def kernel_choices(monkeypatch) -> list[tuple[str, bool]]:
    """(model class, kernels on?) for every model loaded while the test runs."""
    seen: list[tuple[str, bool]] = []
    original = PreTrainedModel.set_use_kernels

    def recording(self, use_kernels, *args, **kwargs):
        seen.append((type(self).__name__, bool(use_kernels)))
        return original(self, use_kernels, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "set_use_kernels", recording)
    monkeypatch.delenv(hub_kernels.SETTING, raising=False)
    # transformers' own default (on), restored after the test whatever the project sets
    monkeypatch.setenv(hub_kernels.TRANSFORMERS_SETTING, "1")
    monkeypatch.setattr(hub_kernels, "_logged", None)
    return seen


def test_every_kind_of_run_loads_its_models_without_hub_kernels(
    kernel_choices, small_data, tiny_model_dir, tmp_path, monkeypatch
):
    from pipeline.methods import score_run, train_run
    from pipeline.reward import train_reward
    from pipeline.rl import RewardTerm

    tiny = str(tiny_model_dir)

    dpo = train_run(small_data, tmp_path / "dpo", tiny, get_recipe("fast"), max_steps=1)
    assert (tmp_path / "dpo" / "sft" / "config.json").is_file()  # the SFT stage ran
    score_run(dpo)
    reward = train_reward(small_data, tmp_path / "rm", tiny, REWARD_RECIPES["fast"], max_steps=1)
    # a full fine-tune with a KL term: TRL loads the reference model itself, by path
    rl = dataclasses.replace(RL_RECIPES["fast"], lora_r=None, beta=0.04, max_new_tokens=8)
    from pipeline.rl import train_rl

    train_rl(
        small_data,
        tmp_path / "rl",
        tiny,
        None,
        rl,
        terms=[RewardTerm("length", 1.0, lambda prompts, completions: [0.0] * len(completions))],
        max_steps=1,
    )

    classes = {name for name, _ in kernel_choices}
    assert {"Qwen2ForCausalLM", "Qwen2ForSequenceClassification"} <= classes
    # at least the loads no process cache can spare: DPO's policy and its reload after the
    # SFT stage, the reward model, RL's policy and the reference copy TRL loads by path
    assert len(kernel_choices) >= 5, kernel_choices
    assert not any(on for _, on in kernel_choices), kernel_choices
    assert reward.finished
    import os

    assert os.environ[hub_kernels.TRANSFORMERS_SETTING] == "0"


def test_the_owner_can_opt_in_and_the_choice_is_logged_once(
    kernel_choices, tiny_model_dir, monkeypatch, caplog
):
    from pipeline.models import load_model

    monkeypatch.setenv(hub_kernels.SETTING, "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with caplog.at_level(logging.INFO, logger="pipeline.hub_kernels"):
        first = load_model(str(tiny_model_dir), fresh=True)
        load_model(str(tiny_model_dir), fresh=True, head="score")
    assert first.model.use_kernels  # on a CPU no kernel is fetched; the choice is what counts
    # (fetching the training kernels at load time kernelizes a second time, in training mode)
    assert set(kernel_choices) == {
        ("Qwen2ForCausalLM", True),
        ("Qwen2ForSequenceClassification", True),
    }
    said = [r.getMessage() for r in caplog.records if "Hub kernels" in r.getMessage()]
    assert said == [
        f"Hub kernels on: {hub_kernels.SETTING}=1: transformers fetches and runs its Hub kernels"
    ]


def test_opted_in_offline_falls_back_with_one_line(
    kernel_choices, tiny_model_dir, monkeypatch, caplog
):
    from pipeline.models import load_model

    monkeypatch.setenv(hub_kernels.SETTING, "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="pipeline.hub_kernels"):
        loaded = load_model(str(tiny_model_dir), fresh=True)
    assert not loaded.model.use_kernels
    assert kernel_choices == [("Qwen2ForCausalLM", False)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "HF_HUB_OFFLINE=1" in line and "cannot be fetched" in line


def test_a_kernel_that_cannot_be_had_is_a_logged_fallback(
    kernel_choices, tiny_model_dir, monkeypatch, caplog
):
    """What happened on the GPU offline, on a CPU: kernels asked for a CUDA device fail (here
    because this torch has no CUDA, there because the Hub was out of reach). The load goes on
    with the PyTorch layers and says why in one line."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_kernels=True)
    model._kernels_device = "cuda"  # what a model moved to a GPU is kernelized for
    with pytest.raises(Exception):  # noqa: B017 - whatever the kernels library raises
        model.train()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_kernels=True)
    model._kernels_device = "cuda"
    with caplog.at_level(logging.WARNING, logger="pipeline.hub_kernels"):
        hub_kernels.fetch_training_kernels(model)
    assert not model.use_kernels
    model.train()  # the Trainer's call now reaches for nothing
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("Hub kernels could not be loaded (") and "\n" not in line


@pytest.mark.parametrize("flag", ["--hub-kernels", None])
def test_the_cli_opt_in_offline_trains_without_a_traceback(
    flag, small_data, tiny_model_dir, tmp_path
):
    args = ["train", "--data", str(small_data), "--out", str(tmp_path / "run")]
    args += ["--model", str(tiny_model_dir), "--recipe", "tutorial", "--max-steps", "1"]
    result = run_cli(*args, *([flag] if flag else []), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Hub kernels")]
    assert len(lines) == 1, lines
    assert ("HF_HUB_OFFLINE=1" in lines[0]) == bool(flag)
