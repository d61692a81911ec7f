import json
import shutil
from pathlib import Path

import pytest

from pipeline import datasets as ds
from pipeline.errors import UserError
from pipeline.recipes import RECIPES, get_recipe
from pipeline.training import score_held_out, train_dpo


def test_small_data_is_16_train_8_valid_pairs_of_unseen_ideas(small_data):
    data = ds.load_preference_dataset(small_data)
    assert (len(data["train"]), len(data["valid"])) == (16, 8)
    assert not {r["prompt"][0]["content"] for r in data["train"]} & {
        r["prompt"][0]["content"] for r in data["valid"]
    }


def test_two_steps_then_reload_with_chat_template(small_data, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "dpo"
    result = train_dpo(small_data, out, str(tiny_model_dir), RECIPES["tutorial"], max_steps=2)
    assert result.steps == 2

    tuned = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    changed = [
        name
        for (name, p), (_, q) in zip(tuned.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed, "training did not change any weight"

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] >= 1 and "loss" in records[0] and "rewards/margins" in records[0]
    # a run shorter than the recipe's logging interval (25) charts every step
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["recipe"]["name"] == "tutorial"


def test_a_full_epoch_evaluates_and_keeps_the_best_checkpoint(small_data, tiny_model_dir, tmp_path):
    tutorial = RECIPES["tutorial"].changed(epochs=1)
    result = train_dpo(small_data, tmp_path / "dpo", str(tiny_model_dir), tutorial)
    assert result.steps == 2  # 16 train pairs / batch 8
    assert result.eval_loss is not None
    assert result.best_checkpoint and result.best_checkpoint.endswith("checkpoint-2")
    # the best epoch's weights are the saved model's; the finished run's checkpoints are gone
    assert not [*(tmp_path / "dpo").glob("checkpoint-*")]
    records = [
        json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("eval_rewards/accuracies" in r for r in records)
    # two steps planned, no step limit: both are logged, not only the epoch's evaluation
    assert [r["step"] for r in records if "loss" in r] == [1, 2]


def test_the_tutorial_recipe_is_the_reference():
    recipe = get_recipe("tutorial")
    assert recipe is RECIPES["tutorial"]
    assert (recipe.epochs, recipe.batch_size) == (3, 8)
    with pytest.raises(UserError, match="unknown recipe"):
        get_recipe("nope")


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"epochs": 0}, "epochs"), ({"max_steps": -1}, "max-steps")]
)
def test_bad_numbers_are_refused(small_data, tiny_model_dir, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        max_steps = kwargs.pop("max_steps", None)
        recipe = get_recipe("tutorial").changed(**kwargs)
        train_dpo(small_data, tmp_path / "o", str(tiny_model_dir), recipe, max_steps=max_steps)


def test_missing_data_is_refused_before_loading_a_model(tmp_path):
    with pytest.raises(UserError, match="not a dataset folder"):
        train_dpo(tmp_path, tmp_path / "o", "./no/such/model")


def test_fast_recipe_trains_lora_and_saves_a_merged_model(small_data, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "fast"
    result = train_dpo(small_data, out, str(tiny_model_dir), get_recipe("fast").changed(epochs=1))
    assert result.steps == 2 and result.eval_loss is not None
    assert result.reference == str(out / "sft")  # the fast recipe's DPO starts from its SFT
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "adapter_config.json").exists()  # the root is a plain merged model
    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(dict(tuned.named_parameters())) == set(dict(base.named_parameters()))
    moved = [
        n
        for n, p in tuned.named_parameters()
        if not torch.equal(p, dict(base.named_parameters())[n])
    ]
    assert moved and all("proj" in n for n in moved)  # LoRA touched the linear layers only


# Loads the two runs' SFT stages offline (the cache only) and says how they compare.
COMPARE_SFT_STAGES = """
import json, sys, shutil, torch
from pipeline.errors import UserError
from pipeline.models import load_model
from_hub, from_folder, base, orphan = sys.argv[1:]
kept, merged = load_model(from_hub), load_model(from_folder)
a, b = kept.model.state_dict(), merged.model.state_dict()
base = load_model(base).model.state_dict()
# a reward model may start from it: the same weights under a score head
scored = load_model(from_hub, head="score").model.state_dict()
same_scored = all(torch.equal(scored[k], b[k]) for k in scored
                  if not k.startswith("score"))
try:
    load_model(orphan)
    refused = None
except UserError as exc:
    refused = str(exc)
print(json.dumps({
    "kind": kept.source.kind, "label": kept.label,
    "same": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
    "moved": sum(not torch.equal(a[k], base[k]) for k in a),
    "template": kept.tokenizer.chat_template == merged.tokenizer.chat_template,
    "same_scored": same_scored,
    "refused": refused,
}))
"""


def test_an_sft_stage_on_a_hub_model_is_kept_as_its_adapter_and_loads_as_trained(
    hub, tiny_model_dir, small_data, tmp_path
):
    """Each fast run kept its SFT stage as a second full model (536 MB of a 1.1 GB SmolLM2
    run). On a model that loads again by name (a Hub id at its commit, the offline copy) the
    stage keeps its adapter alone, and loads, from the cache, as the merged stage would."""
    import subprocess
    import sys

    from conftest import ROOT
    from hub_server import hub_env

    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    commit = hub.seed_repo("model", "alice/tiny-chat", files)
    env = {**hub_env(hub, cache_dir=tmp_path / "cache"), "TITLE_DPO_CACHE": str(tmp_path / "c")}

    def python(*args: str, **extra: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    train = ("-m", "pipeline", "train", "--data", str(small_data), "--max-steps", "1")
    python(*train, "--out", str(tmp_path / "from-hub"), "--model", "alice/tiny-chat")
    python(*train, "--out", str(tmp_path / "from-folder"), "--model", str(tiny_model_dir))
    kept, merged = tmp_path / "from-hub" / "sft", tmp_path / "from-folder" / "sft"
    assert json.loads((kept / "adapter_base.json").read_text()) == {
        "base_model": f"alice/tiny-chat@{commit}"
    }
    assert (kept / "adapter" / "adapter_model.safetensors").is_file()
    # the run's own adapter names what it trained on: the stage, not the stage's bare base
    dpo_adapter = tmp_path / "from-hub" / "adapter" / "adapter_config.json"
    assert json.loads(dpo_adapter.read_text())["base_model_name_or_path"] == str(kept)
    assert not list(kept.glob("*.safetensors"))  # no second full model
    # a folder may be trained on again or deleted: a stage on one is kept merged
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_base.json").exists()

    orphan = tmp_path / "orphan"
    shutil.copytree(kept, orphan)
    (orphan / "adapter_base.json").write_text(json.dumps({"base_model": "alice/never-cached"}))
    seen = json.loads(python("-c", COMPARE_SFT_STAGES, str(kept), str(merged),
                             str(tiny_model_dir), str(orphan), HF_HUB_OFFLINE="1"))  # fmt: skip
    assert seen["kind"] == "adapter" and seen["label"] == str(kept)
    assert seen["same"] and seen["moved"] > 0 and seen["template"] and seen["same_scored"], seen
    assert "LoRA adapter on 'alice/never-cached', which cannot be loaded here" in seen["refused"]


def test_a_new_run_in_a_used_folder_trains_its_own_sft_stage_or_is_refused(
    small_data, tiny_model_dir, tmp_path
):
    """A new run in the folder of a finished one took that run's SFT stage as its own, whatever
    its own recipe: a 50 times higher SFT learning rate trained nothing new. It now trains its
    own stage. A run there that can still be carried on is refused, and kept for --resume."""
    import hashlib

    from pipeline.methods import train_run

    def stage_weights(out):
        return hashlib.sha256((out / "sft" / "model.safetensors").read_bytes()).hexdigest()

    out, model = tmp_path / "used", str(tiny_model_dir)
    train_run(small_data, out, model, RECIPES["fast"], max_steps=1)
    first = stage_weights(out)
    faster = RECIPES["fast"].changed(sft_learning_rate=5e-3)
    again = train_run(small_data, out, model, faster, max_steps=1)
    assert stage_weights(out) != first and again.recipe["sft_learning_rate"] == 5e-3
    assert json.loads((out / "sft" / "stage_summary.json").read_text())["steps"] == 1

    stopped = tmp_path / "stopped"
    cut = train_run(small_data, stopped, model, RECIPES["fast"], max_steps=4, stop_after=2)
    assert cut.stage == "sft" and not cut.model_saved
    kept = sorted(p.name for p in (stopped / "sft-checkpoints").iterdir())
    with pytest.raises(UserError, match="left in its SFT stage, that can still be carried on"):
        train_run(small_data, stopped, model, RECIPES["fast"], max_steps=4)
    assert sorted(p.name for p in (stopped / "sft-checkpoints").iterdir()) == kept
    resumed = train_run(small_data, stopped, model, RECIPES["fast"], max_steps=4, resume=True)
    assert resumed.finished and resumed.steps == 4


def test_fewer_pairs_than_a_batch_is_refused(tmp_path, tiny_model_dir):
    prefs = ds.seed_preferences()[:12]
    splits = ds.split_preferences(prefs, "seed")  # 10 train pairs, batch 8 is fine...
    splits["train"] = splits["train"][:5]  # ...5 are not
    data = tmp_path / "d"
    ds.save_dataset(ds.build_dataset(splits), data, {})
    with pytest.raises(UserError, match="fewer than one batch of 8"):
        train_dpo(data, tmp_path / "o", str(tiny_model_dir), RECIPES["tutorial"])


def test_epoch_table_pairs_each_evaluation_with_the_last_training_loss():
    from pipeline.metrics import epoch_table

    metrics = [
        {"step": 1, "epoch": 0.5, "loss": 0.69},
        {"step": 2, "epoch": 1.0, "loss": 0.60},
        {"step": 2, "epoch": 1.0, "eval_loss": 0.65, "eval_rewards/accuracies": 0.7},
        {"step": 4, "epoch": 2.0, "loss": 0.50},
        {"step": 4, "epoch": 2.0, "eval_loss": 0.62, "eval_rewards/accuracies": 0.75},
    ]
    rows = epoch_table(metrics)
    assert [(r["Epoch"], r["Training loss"], r["Validation loss"]) for r in rows] == [
        (1.0, 0.60, 0.65),
        (2.0, 0.50, 0.62),
    ]
    assert rows[1]["Rewards/accuracies"] == 0.75 and rows[1]["Rewards/margins"] is None


def test_full_fine_tune_with_an_sft_stage_uses_the_sft_model_as_reference(
    small_data, tiny_model_dir, tmp_path
):
    from dataclasses import replace

    recipe = replace(get_recipe("tutorial"), sft_epochs=1, sft_learning_rate=1e-2, batch_size=4)
    result = train_dpo(small_data, tmp_path / "dpo", str(tiny_model_dir), recipe, max_steps=1)
    assert result.steps == 1
    lines = Path(result.metrics_file).read_text().splitlines()
    # step 1's rewards come from the forward before its update, when the policy still is the
    # SFT model: zero against it as reference; against the base they would not be
    rewards = [r["rewards/chosen"] for r in map(json.loads, lines) if "rewards/chosen" in r]
    assert rewards and abs(rewards[0]) < 1e-4, rewards
    assert (tmp_path / "dpo" / "sft" / "config.json").is_file()


def test_a_step_limit_bounds_the_whole_run(small_data, tiny_model_dir, tmp_path):
    """--max-steps 1 is a quick run: the SFT stage takes one step too, and the reference pass,
    the evaluation and the held-out figure read one batch of pairs, not the whole splits."""
    from dataclasses import replace

    from transformers import TrainerCallback

    from pipeline.datasets import load_preference_dataset
    from pipeline.methods import describe_run

    class Stages(TrainerCallback):
        def __init__(self) -> None:
            self.seen: list[tuple[str, int]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.seen.append((type(args).__name__, state.max_steps))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.seen.append(("evaluated", kwargs["eval_dataloader"].dataset.num_rows))

    recipe = replace(get_recipe("tutorial"), sft_epochs=2, batch_size=2)
    splits = load_preference_dataset(small_data)
    assert len(splits["train"]) > 2 and len(splits["valid"]) > 2  # so that the bound shows
    stages = Stages()
    result = train_dpo(small_data, tmp_path / "quick", str(tiny_model_dir), recipe,
                       max_steps=1, callbacks=[stages])  # fmt: skip
    assert stages.seen == [("SFTConfig", 1), ("DPOConfig", 1), ("evaluated", 2)]
    assert result.rows_limit == 2
    scored = score_held_out(result)
    assert scored.held_out["pairs"] == 2
    assert "a step-limited run" in describe_run(scored)
