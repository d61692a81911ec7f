"""Recipes: one dataclass, YAML files, and the CLI flags and form fields made from it."""

import dataclasses
import json
import re

import pytest

from conftest import run_cli
from pipeline.errors import UserError
from pipeline.recipes import (
    DEFAULT_RECIPE,
    NOT_KNOBS,
    RECIPES,
    RECIPES_DIR,
    DPORecipe,
    RewardRecipe,
    RLRecipe,
    add_recipe_arguments,
    describe_recipe,
    for_device,
    form_values,
    get_recipe,
    knobs,
    load_recipe_file,
    parse_changes,
    recipe_changed,
    recipe_flags,
    recipe_from_args,
    recipe_from_form,
    shipped_recipes,
)


def test_the_shipped_recipes_are_the_yaml_files_and_fast_is_the_default():
    assert sorted(RECIPES) == sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    assert DEFAULT_RECIPE == "fast" and get_recipe() is RECIPES["fast"]
    assert RECIPES["tutorial"] == DPORecipe(name="tutorial")  # the field defaults, nothing else
    fast = RECIPES["fast"]
    assert (fast.lora_r, fast.beta, fast.learning_rate, fast.sft_epochs) == (16, 0.5, 5e-5, 1)
    assert fast.shared_prompt and fast.precompute_ref_log_probs


def test_every_field_has_help_and_is_a_flag():
    import argparse

    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    flags = {a.dest: a for a in parser._actions}
    fields = [f.name for f in dataclasses.fields(DPORecipe) if f.name not in NOT_KNOBS]
    assert [k.name for k in knobs()] == fields
    for k in knobs():
        assert k.help and k.name in flags
        # the help names each shipped recipe's value
        assert all(f"{name} " in flags[k.name].help for name in RECIPES)


def _each_refused(tmp_path, cases: list[tuple[str, str]]) -> None:
    """Each recipe file text is refused with its message."""
    for text, message in cases:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(UserError, match=re.escape(message)):
            load_recipe_file(bad)


def test_a_recipe_file_is_checked_key_by_key(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("beta: 0.3\nlearning_rate: 1e-5\nlora_r: 8\nshared_prompt: true\n")
    recipe = get_recipe(str(good))
    assert (recipe.name, recipe.beta, recipe.learning_rate, recipe.lora_r) == (
        "mine",
        0.3,
        1e-5,
        8,
    )
    assert recipe.epochs == DPORecipe().epochs  # unnamed: the field default
    _each_refused(tmp_path, [
        ("betta: 0.3\n", "unknown recipe key(s) betta"),
        ("batch_size: 2.5\n", "batch_size must be a whole number"),
        ("shared_prompt: sometimes\n", "shared_prompt must be a bool"),
        ("beta: -1\n", "beta must be positive"),
        ("loss: hinge_plus\n", "loss is one of"),
        ("- a list\n", "a mapping of knob: value"),
        ("beta: [\n", "not valid YAML"),
    ])  # fmt: skip
    with pytest.raises(UserError, match="unknown recipe 'nope'"):
        get_recipe("nope")
    with pytest.raises(UserError, match="cannot read the recipe"):
        get_recipe(str(tmp_path / "missing.yaml"))


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    file = tmp_path / "r.yaml"
    file.write_text("beta: 0.3\nepochs: 2\n")
    args = parser.parse_args(["--recipe", str(file), "--beta", "0.7", "--no-shared-prompt"])
    recipe = recipe_from_args(args)
    assert (recipe.beta, recipe.epochs, recipe.shared_prompt) == (0.7, 2, False)
    assert recipe_from_args(parser.parse_args(["--lora-r", "0"])).lora_r is None  # 0: none
    assert recipe_from_args(parser.parse_args([])) is RECIPES["fast"]


def test_the_cli_refuses_a_bad_flag_in_one_line(tmp_path):
    result = run_cli("train", "--data", "d", "--out", "o", "--batch-size", "2.5")
    assert result.returncode == 2
    assert "--batch-size: batch_size must be a whole number, not '2.5'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_changes_become_the_flags_that_make_the_same_recipe():
    """A job trains `--recipe NAME` plus flags: they must rebuild exactly the recipe asked
    for, for every kind of recipe and every kind of knob."""
    import argparse

    cases = [
        (DPORecipe, "fast", ["epochs=2", "lora_r=none", "shared_prompt=false",
                             "learning_rate=1e-5", "loss=ipo", "save_total_limit=none"]),
        (DPORecipe, "tutorial", ["lora_r=8", "gradient_checkpointing=true", "beta=0.25"]),
        (RewardRecipe, "fast", ["epochs=1.5", "center_rewards=0.01", "lora_r=none"]),
        (RLRecipe, "fast", ["method=rloo", "reward_weight=0", "temperature=0.7"]),
    ]  # fmt: skip
    for kind, name, texts in cases:
        base = shipped_recipes(kind)[name]
        changed = recipe_changed(base, parse_changes(texts, "--set"), "--set")
        assert changed != base and changed.name == base.name
        parser = argparse.ArgumentParser()
        add_recipe_arguments(parser, kind)
        flags = recipe_flags(base, changed)
        assert recipe_from_args(parser.parse_args(["--recipe", name, *flags]), kind) == changed
        assert recipe_flags(base, base) == []
    with pytest.raises(UserError, match="unknown recipe key"):
        recipe_changed(RECIPES["fast"], parse_changes(["epoch=2"], "--set"), "--set")
    with pytest.raises(UserError, match="batch_size must be a whole number"):
        recipe_changed(RECIPES["fast"], parse_changes(["batch_size=2.5"], "--set"), "--set")
    with pytest.raises(UserError, match="write KNOB=VALUE"):
        parse_changes(["epochs"], "--set")


def test_the_form_round_trips_a_recipe():
    for recipe in RECIPES.values():
        assert recipe_from_form(recipe.name, form_values(recipe)) == recipe
    assert form_values(RECIPES["tutorial"]) == (3, 0.1, 1e-6, 8, False, 16, 32)
    # switched on without a number: the field's starting number; switched off: none
    assert recipe_from_form("tutorial", (3, 0.1, 1e-6, 8, True, None, 32)).lora_r == 16
    assert recipe_from_form("fast", (1, 0.5, 5e-5, 8, False, 16, 32)).lora_r is None
    # an empty field: the recipe's own value
    assert recipe_from_form("fast", (None, None, "", None, True, 16, "")) == RECIPES["fast"]
    # a 0 is taken as typed, and refused where it makes no sense, never swapped for the
    # recipe's value behind the person's back
    with pytest.raises(
        UserError, match=r"learning rate must be more than 0 and less than 1, not 0\.0$"
    ):
        recipe_from_form("fast", (1, 0.5, 0, 8, True, 16, 32))
    with pytest.raises(UserError, match="epochs must be positive, not 0"):
        recipe_from_form("fast", (0, 0.5, 5e-5, 8, True, 16, 32))
    with pytest.raises(UserError, match=r"beta must be positive, not 0\.0$"):
        recipe_from_form("fast", (1, 0, 5e-5, 8, True, 16, 32))
    # where 0 means something (a reward weight switched off), it is that
    rl = recipe_from_form("fast", ("grpo", 1, 2e-5, 0, 16, 8, 0, 1, 0, True, 16), RLRecipe)
    assert (rl.beta, rl.reward_weight, rl.format_weight, rl.length_weight) == (0, 0, 1, 0)
    with pytest.raises(UserError, match="learning rate must be more than 0 and less than 1"):
        recipe_from_form("fast", (1, 0.5, 2, 8, True, 16, 32))


def test_a_recipe_takes_its_gpu_values_where_a_gpu_trains(tmp_path):
    """On a GPU the fast recipe runs TRL's own forward (bench/launches.py: the shared-prompt
    forward launches 2.7 times the kernels); a knob a person sets is theirs on every device."""
    import argparse

    fast = RECIPES["fast"]
    assert fast.on_gpu == (("shared_prompt", False),)
    assert for_device(fast, "cuda").shared_prompt is False and for_device(fast, "cpu") is fast
    assert describe_recipe(fast).endswith("; on a GPU: shared_prompt off")
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    shared_help = next(a.help for a in parser._actions if a.dest == "shared_prompt")
    assert "fast True (on a GPU False)" in shared_help
    flagged = recipe_from_args(parser.parse_args(["--shared-prompt"]))
    assert for_device(flagged, "cuda").shared_prompt is True
    changed = recipe_changed(fast, {"shared_prompt": True}, "--set")
    assert for_device(changed, "cuda").shared_prompt is True
    # the form (which has no shared-prompt field) left alone keeps the GPU values
    assert for_device(recipe_from_form("fast", form_values(fast)), "cuda").shared_prompt is False

    mine = tmp_path / "gpu.yaml"
    mine.write_text("batch_size: 8\non_gpu:\n  batch_size: 32\n  shared_prompt: false\n")
    recipe = get_recipe(str(mine))
    assert (for_device(recipe, "cuda").batch_size, for_device(recipe, "cpu").batch_size) == (32, 8)
    same = recipe_from_form(str(mine), form_values(recipe))  # the form's batch size untouched
    assert for_device(same, "cuda").batch_size == 32
    values = list(form_values(recipe))
    values[3] = 16  # the person's batch size, on every device
    assert for_device(recipe_from_form(str(mine), values), "cuda").batch_size == 16
    _each_refused(tmp_path, [
        ("on_gpu:\n  sharedprompt: false\n", "on_gpu: unknown knob(s) sharedprompt"),
        ("on_gpu:\n  batch_size: 2.5\n", "batch_size must be a whole number"),
        ("on_gpu: fast\n", "on_gpu: a mapping of knob: value"),
        ("on_gpu:\n  beta: -1\n", "beta must be positive"),
    ])  # fmt: skip


def test_a_run_on_a_gpu_trains_with_the_gpu_values(small_data, tiny_model_dir, tmp_path,
                                                    monkeypatch, caplog):  # fmt: skip
    """train_dpo reads the device the run trains on; here the device is said to be CUDA while
    the model stays on the CPU (only the recipe's choice is under test)."""
    import logging

    import torch

    from pipeline import dpo
    from pipeline.models import Device

    monkeypatch.setattr(dpo, "pick_device", lambda: Device("cuda", torch.float32))
    with caplog.at_level(logging.INFO, logger="pipeline.dpo"):
        result = dpo.train_dpo(small_data, tmp_path / "run", str(tiny_model_dir), max_steps=1)
    assert result.recipe["shared_prompt"] is False and result.recipe["name"] == "fast"
    assert "recipe fast on this GPU: shared_prompt off" in caplog.text


def test_a_run_summary_records_the_recipe_it_ran(small_data, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--data",
        str(small_data),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--recipe",
        "tutorial",
        "--beta",
        "0.25",
        "--max-steps",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    ran = dataclasses.asdict(RECIPES["tutorial"].changed(beta=0.25))
    assert summary["recipe"] == json.loads(json.dumps(ran))
