import pytest

from pipeline.errors import UserError
from pipeline.generation import GenerationSettings, generate_for_idea, generate_titles
from pipeline.prompts import display_title, title_messages

SHORT = GenerationSettings(n=5, max_new_tokens=6, seed=0)


def test_n_titles_for_one_idea_keep_raw_and_settings(tiny_model):
    titles = generate_for_idea(tiny_model, "  Multimodal RAG ", SHORT)
    assert len(titles) == 5
    for t in titles:
        assert t.idea == "Multimodal RAG"
        assert t.text == display_title(t.raw)
        assert t.model == tiny_model.label
        assert t.settings["temperature"] == 0.7 and t.settings["n"] == 5


def test_sampling_is_repeatable_with_a_seed(tiny_model):
    first = [t.raw for t in generate_for_idea(tiny_model, "rag", SHORT)]
    second = [t.raw for t in generate_for_idea(tiny_model, "rag", SHORT)]
    assert first == second
    assert len(set(first)) > 1  # sampled, not one answer repeated


def test_batched_ideas_match_one_at_a_time_under_left_padding(tiny_model):
    # Greedy decoding is deterministic, so a batch of prompts of different lengths must give
    # exactly what each prompt gives alone; wrong padding would change the continuations.
    greedy = GenerationSettings(n=2, temperature=0, max_new_tokens=8)
    ideas = ["rag", "a much longer idea about fine-tuning language models on a laptop", "dpo"]
    batched = generate_titles(tiny_model, ideas, greedy)
    alone = [generate_for_idea(tiny_model, idea, greedy) for idea in ideas]
    assert [[t.raw for t in g] for g in batched] == [[t.raw for t in g] for g in alone]
    assert [g[0].idea for g in batched] == ideas


def test_sampling_with_a_shared_prompt_cache_matches_plain_generate(tiny_model):
    # At a vanishing temperature sampling is argmax, so the shared-prefix path must give the
    # same tokens as `generate` running every copy of every prompt from scratch.
    import torch

    from pipeline.generation import _complete

    settings = GenerationSettings(n=3, temperature=1e-4, max_new_tokens=8)
    ideas = ["rag", "a much longer idea about fine-tuning language models", "dpo"]
    shared = _complete(tiny_model, ideas, settings)
    tokenizer = tiny_model.tokenizer
    prompts = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in (title_messages(i) for i in ideas)
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(
        tiny_model.device.name
    )
    with torch.inference_mode():
        plain = tiny_model.model.generate(
            **batch, do_sample=False, max_new_tokens=8, num_return_sequences=1,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    texts = tokenizer.batch_decode(
        plain[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert shared == [t for t in texts for _ in range(3)]


def test_many_ideas_are_chunked_and_keep_their_order(tiny_model):
    settings = GenerationSettings(n=3, max_new_tokens=4, seed=1, max_batch=7)  # 2 ideas a call
    ideas = [f"idea number {i}" for i in range(5)]
    groups = generate_titles(tiny_model, ideas, settings)
    assert [g[0].idea for g in groups] == ideas
    assert all(len(g) == 3 for g in groups)


def test_generate_is_one_batched_call_per_chunk(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.model.generate

    def counting_generate(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(tiny_model.model, "generate", counting_generate)
    generate_titles(tiny_model, ["a", "b", "c", "d"], GenerationSettings(n=5, max_new_tokens=3))
    assert calls == [20]


@pytest.mark.parametrize("idea", ["", "   ", "x" * 501])
def test_bad_ideas_are_refused_before_generating(tiny_model, idea):
    with pytest.raises(UserError):
        generate_for_idea(tiny_model, idea, SHORT)


def test_a_bad_idea_in_a_batch_is_refused(tiny_model):
    with pytest.raises(UserError, match="empty"):
        generate_titles(tiny_model, ["fine", " "], SHORT)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": 21}, {"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(UserError):
        GenerationSettings(**kwargs)
