"""The shared-prompt DPO forward computes exactly what TRL's forward computes, faster."""

import copy
import warnings
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head

from pipeline.prompts import title_messages
from pipeline.recipes import RECIPES
from pipeline.shared_prompt import add_shared_prompt_forward, plan_prompt_batch
from pipeline.stages import mute_library_deprecations
from pipeline.training import train_dpo

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def paired_batch(tokenizer, pairs):
    """TRL's collated batch for (idea, chosen, rejected) triples."""
    examples = []
    for idea, chosen, rejected in pairs:
        prompt = tokenizer.apply_chat_template(
            title_messages(idea), add_generation_prompt=True, tokenize=False
        )
        examples.append(
            {
                "prompt_ids": tokenizer(prompt)["input_ids"],
                "chosen_ids": tokenizer(chosen + "<|im_end|>")["input_ids"],
                "rejected_ids": tokenizer(rejected + "<|im_end|>")["input_ids"],
            }
        )
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    return batch, labels


@pytest.fixture
def models(tiny_model_dir):
    """TRL's fused-head model and a copy with the shared-prompt forward on top, same weights."""
    torch.manual_seed(1)
    trl_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for p in trl_model.parameters():  # the saved tiny model is near zero; make logits varied
        p.data.normal_(0, 0.5)
    shared_model = copy.deepcopy(trl_model)
    add_fused_lm_head(trl_model, outputs=OUTPUTS)
    add_fused_lm_head(shared_model, outputs=OUTPUTS)
    add_shared_prompt_forward(shared_model, OUTPUTS)
    return trl_model, shared_model


PAIRS = [
    ("intro to python", "Python in 10 Minutes", "python intro video for beginners to watch"),
    ("fine-tuning llms with lora on a laptop", "LoRA on a Laptop", "How To Fine Tune"),
    ("what is a vector database", "Vector Databases, Simply Explained", "Vectors"),
]


# Pairs of one idea in a batch (as the fast recipe's sampler makes them): the prompt runs once.
REPEATED = [
    PAIRS[0],
    ("intro to python", "Learn Python Today", "python"),
    PAIRS[2],
    ("intro to python", "Python, Start to Finish", "Python Python Python Python"),
]


@pytest.mark.parametrize(("pairs", "distinct"), [(PAIRS, 3), (REPEATED, 2)])
def test_same_outputs_and_gradients_as_trl(models, tiny_model_dir, pairs, distinct):
    trl_model, shared_model = models
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch, labels = paired_batch(tokenizer, pairs)
    plan = plan_prompt_batch(batch["input_ids"], batch["attention_mask"], labels)
    assert plan is not None and plan.prompts == len(pairs) and len(plan.distinct) == distinct
    assert 0 < plan.shared < min(plan.prompt_lengths)

    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    expected = trl_model(**kwargs, labels=labels, fused_lm_head=True, use_cache=False)
    got = shared_model(**kwargs, labels=labels, fused_lm_head=True, use_cache=False)
    assert torch.equal(got.label_mask, expected.label_mask)
    for field in ("log_probs", "entropy", "mean_logits", "log_sum_sq_probs"):
        got_field, expected_field = getattr(got, field), getattr(expected, field)
        torch.testing.assert_close(got_field, expected_field, atol=1e-5, rtol=1e-4)
    assert torch.equal(got.is_top1, expected.is_top1)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)

    # The DPO-shaped quantity: per-sequence sums, chosen minus rejected, then backward.
    def margin(out):
        sums = out.log_probs.sum(dim=1)
        chosen, rejected = sums.chunk(2)
        return (chosen - rejected).sigmoid().log().sum() + out.log_probs.sum()

    margin(expected).backward()
    margin(got).backward()
    for (name, p), q in zip(trl_model.named_parameters(), shared_model.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_batches_it_was_not_built_for_go_to_trls_forward(models, tiny_model_dir):
    trl_model, shared_model = models
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch, labels = paired_batch(tokenizer, PAIRS[:2])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # The two rows of a pair with different prompts: not TRL's paired layout.
    swapped = ids[[0, 1, 3, 2]]
    swapped_labels = labels[[0, 1, 3, 2]]
    swapped_mask = mask[[0, 1, 3, 2]]
    assert plan_prompt_batch(swapped, swapped_mask, swapped_labels) is None
    assert plan_prompt_batch(ids[:3], mask[:3], labels[:3]) is None  # odd rows
    no_completion = torch.full_like(labels, -100)
    no_completion[:, 2] = ids[:, 2]  # a "completion" in the middle of the prompt
    assert plan_prompt_batch(ids, mask, no_completion) is None

    kwargs = {"input_ids": swapped, "attention_mask": swapped_mask}
    expected = trl_model(**kwargs, labels=swapped_labels, fused_lm_head=True)
    got = shared_model(**kwargs, labels=swapped_labels, fused_lm_head=True)
    torch.testing.assert_close(got.log_probs, expected.log_probs)
    # Generation (no fused head) is the model's own forward.
    prompt = tokenizer("<|im_start|>user\nhi<|im_end|>\n", return_tensors="pt")
    a = trl_model.generate(**prompt, max_new_tokens=4, do_sample=False)
    b = shared_model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(a, b)


@pytest.fixture
def shared_calls(monkeypatch):
    """The plan of every batch that went the shared-prompt way (the real code still runs)."""
    from pipeline import shared_prompt

    calls = SharedCalls()
    real = shared_prompt.shared_prompt_logprobs

    def spy(*args):
        calls.append(args[2])
        calls.models.append(id(args[0]))
        return real(*args)

    monkeypatch.setattr(shared_prompt, "shared_prompt_logprobs", spy)
    return calls


class SharedCalls(list):
    """Plans of the batches that went the shared way; `models`: the model that ran each."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[int] = []

    def clear(self) -> None:
        super().clear()
        self.models.clear()


@pytest.mark.parametrize("lora_r", [16, None], ids=["lora", "full"])
def test_fast_recipe_trains_to_the_same_weights_with_and_without_it(
    small_data, tiny_model_dir, tmp_path, shared_calls, lora_r
):
    from safetensors.torch import load_file

    fast = RECIPES["fast"]
    assert fast.shared_prompt
    weights = {}
    for shared in (True, False):
        out = tmp_path / f"shared-{shared}"
        # the same batches both ways: plain random order (prompt_chunk 0)
        # (a full fine-tune at 1e-3: Adam turns float noise in near-zero gradients into
        # steps of about lr * 1e-3, which at 1e-2 exceed the tolerance below)
        recipe = replace(fast, shared_prompt=shared, prompt_chunk=0, lora_r=lora_r,
                         learning_rate=1e-2 if lora_r else 1e-3)  # fmt: skip
        result = train_dpo(small_data, out, str(tiny_model_dir), recipe, max_steps=3)
        assert result.steps == 3
        weights[shared] = load_file(out / "model.safetensors")
        if shared:
            # reference log-probs (16 train + 8 valid pairs) and 3 steps went the shared way
            assert len(shared_calls) >= 3 + 3, shared_calls
            assert {plan.prompts for plan in shared_calls} == {8}
            # LoRA: the reference is the policy, adapter off; a full fine-tune's reference
            # is a second model, and its passes went the shared way too
            dpo_models = {
                model
                for model, plan in zip(shared_calls.models, shared_calls, strict=True)
                if plan.rows_per_prompt == 2
            }
            assert len(dpo_models) == (1 if lora_r else 2)
            shared_calls.clear()
    assert shared_calls == []
    base = load_file(tiny_model_dir / "model.safetensors")
    moved = [k for k in base if not torch.equal(base[k], weights[True][k])]
    assert moved, "training did not change any weight"
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_sft_rows_same_outputs_as_trl(tiny_model_dir):
    torch.manual_seed(2)
    trl_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for p in trl_model.parameters():
        p.data.normal_(0, 0.5)
    shared_model = copy.deepcopy(trl_model)
    add_fused_lm_head(trl_model, outputs=OUTPUTS)
    add_fused_lm_head(shared_model, outputs=OUTPUTS)
    add_shared_prompt_forward(shared_model, OUTPUTS, rows_per_prompt=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch, labels = paired_batch(tokenizer, PAIRS)
    # the chosen rows alone are SFT rows: prompt + completion, one row per prompt
    ids, mask, labels = batch["input_ids"][:3], batch["attention_mask"][:3], labels[:3]
    plan = plan_prompt_batch(ids, mask, labels, rows_per_prompt=1)
    assert plan is not None and (plan.prompts, plan.rows_per_prompt) == (3, 1)
    expected = trl_model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    got = shared_model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    torch.testing.assert_close(got.log_probs, expected.log_probs, atol=1e-5, rtol=1e-4)
    got.loss.backward()
    expected.loss.backward()
    for (name, p), q in zip(trl_model.named_parameters(), shared_model.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_sft_stage_gives_the_same_weights_with_and_without_it(
    small_data, tiny_model_dir, tmp_path, shared_calls
):
    from pipeline.datasets import load_preference_dataset
    from pipeline.models import load_model
    from pipeline.training import sft_stage

    train_split = load_preference_dataset(small_data)["train"]
    weights = {}
    for shared in (True, False):
        recipe = replace(RECIPES["fast"], shared_prompt=shared, sft_epochs=1,
                         sft_learning_rate=1e-2, batch_size=4)  # fmt: skip
        policy = load_model(str(tiny_model_dir), fresh=True)
        tuned = sft_stage(policy, train_split, tmp_path / f"sft-{shared}", recipe).policy
        weights[shared] = {k: v.detach().clone() for k, v in tuned.model.state_dict().items()}
        if shared:
            assert shared_calls, "the SFT stage never used the shared-prompt forward"
            assert {plan.rows_per_prompt for plan in shared_calls} == {1}
            shared_calls.clear()
    assert shared_calls == []
    base = load_model(str(tiny_model_dir), fresh=True).model.state_dict()
    assert any(not torch.equal(weights[True][k], base[k]) for k in base), "SFT changed nothing"
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_after_an_sft_stage_dpo_still_goes_the_shared_way(
    small_data, tiny_model_dir, tmp_path, shared_calls
):
    recipe = replace(RECIPES["fast"], sft_epochs=1, batch_size=4)
    result = train_dpo(small_data, tmp_path / "run", str(tiny_model_dir), recipe, max_steps=2)
    assert result.steps == 2
    layouts = [plan.rows_per_prompt for plan in shared_calls]
    assert 1 in layouts, "the SFT stage did not use the shared-prompt forward"
    # reference log-probs (4 + 2 batches) and 2 steps, all as pairs
    assert layouts.count(2) >= 4 + 2 + 2, layouts
    assert layouts.index(2) > max(i for i, rows in enumerate(layouts) if rows == 1)


def test_prompt_grouped_order_is_random_whole_and_repeatable():
    from pipeline.shared_prompt import PromptGroupedSampler

    keys = ["a"] * 10 + ["b"] * 3 + ["c"] * 7
    sampler = PromptGroupedSampler(keys, chunk=4, seed=42)
    first = list(sampler)
    assert sorted(first) == list(range(20)) and len(sampler) == 20
    assert list(PromptGroupedSampler(keys, chunk=4, seed=42)) == first  # a resumed run's order
    sampler.set_epoch(1)
    assert list(sampler) != first
    # cut into runs of one prompt: none longer than the chunk
    runs, current = [], [first[0]]
    for index in first[1:]:
        if keys[index] == keys[current[-1]] and len(current) < 4:
            current.append(index)
        else:
            runs.append(current)
            current = [index]
    runs.append(current)
    assert all(len(run) <= 4 for run in runs) and len(runs) <= 3 + 1 + 2 + 2  # a: 4,4,2 ...


def test_fast_recipe_batches_share_prompts(small_data, tiny_model_dir, tmp_path, shared_calls):
    result = train_dpo(small_data, tmp_path / "out", str(tiny_model_dir), RECIPES["fast"],
                       max_steps=2)  # fmt: skip
    assert result.steps == 2
    # 16 train pairs of 2 ideas, 8 held-out of 1 idea: every batch computes at most a few
    # distinct prompts for its 8 pairs (reference pass, training and evaluation alike)
    assert shared_calls and all(len(plan.distinct) <= 3 for plan in shared_calls)
    assert any(len(plan.distinct) == 1 for plan in shared_calls)


def test_a_longer_run_logs_no_more_warnings(small_data, tiny_model_dir, tmp_path):
    """Our forward, and TRL's reference pass, read a renamed property that warns on every
    read: a line in the run's log at every step and every reference batch (2 and 4 here)."""
    counts = []
    for steps in (2, 4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every warning, each time (pytest's filters off)
            mute_library_deprecations()  # as pipeline.stages does when imported
            recipe = replace(RECIPES["fast"], batch_size=4)
            train_dpo(small_data, tmp_path / f"out-{steps}", str(tiny_model_dir), recipe,
                      max_steps=steps)  # fmt: skip
        counts.append(len([w for w in caught if issubclass(w.category, FutureWarning)]))
    assert counts[0] == counts[1], counts


def test_checkpointing_is_read_by_the_name_transformers_has():
    from pipeline.shared_prompt import _checkpointing

    class Before:  # a transformers release before the rename has only the old name
        is_gradient_checkpointing = True

    class After(Before):
        is_activation_checkpointing = False

    assert _checkpointing(Before()) is True and _checkpointing(After()) is False


def test_only_the_tested_trl_and_transformers_releases_get_it():
    from pipeline.shared_prompt import unsupported

    assert unsupported({"trl": "1.16.0", "transformers": "5.24.0"}) is None
    assert unsupported({"trl": "1.17.0", "transformers": "5.24.0"}) == (
        "trl 1.17.0 is outside the tested range <1.17,>=1.16"
    )
    assert unsupported({"trl": "1.16.1", "transformers": "6.0.0"}).startswith("transformers 6.0.0")
    assert unsupported() is None  # the installed ones are the tested ones


@pytest.mark.parametrize("lora_r", [16, None], ids=["lora", "full"])
def test_forced_fallback_is_trls_forward_said_once_and_trains_the_same(
    small_data, tiny_model_dir, tmp_path, shared_calls, monkeypatch, caplog, lora_r
):
    """Outside the tested releases the trainers are TRL's own: nothing goes the shared way,
    one log line says why, and the weights are those of the plain recipe."""
    import logging

    from safetensors.torch import load_file

    from pipeline import shared_prompt

    recipe = replace(RECIPES["fast"], prompt_chunk=0, lora_r=lora_r, learning_rate=1e-3)
    plain = train_dpo(small_data, tmp_path / "plain", str(tiny_model_dir),
                      replace(recipe, shared_prompt=False), max_steps=3)  # fmt: skip
    monkeypatch.setattr(shared_prompt, "UNSUPPORTED", "forced by the test")
    monkeypatch.setattr(shared_prompt, "_said", set())
    with caplog.at_level(logging.WARNING, logger="pipeline.shared_prompt"):
        forced = train_dpo(small_data, tmp_path / "forced", str(tiny_model_dir), recipe,
                           max_steps=3)  # fmt: skip
    assert (forced.steps, plain.steps) == (3, 3)
    assert shared_calls == []  # the SFT stage and DPO both ran TRL's forward
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.shared_prompt"]
    assert lines == [
        "shared-prompt forward not used: forced by the test; TRL's own forward runs instead"
    ]
    weights = load_file(tmp_path / "forced" / "model.safetensors")
    for key, value in load_file(tmp_path / "plain" / "model.safetensors").items():
        torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_a_model_without_trls_fused_head_is_left_alone(tiny_model_dir, caplog):
    import logging

    from pipeline import shared_prompt

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    forward = model.forward
    with caplog.at_level(logging.WARNING, logger="pipeline.shared_prompt"):
        assert shared_prompt.install(model, rows_per_prompt=2) is False
    assert model.forward == forward
    assert shared_prompt.requested_outputs(model) is None
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    assert shared_prompt.requested_outputs(model) == ("log_probs", "entropy")
    assert shared_prompt.install(model, rows_per_prompt=2) is True
    assert shared_prompt.has_shared_prompt_forward(model, 2)
