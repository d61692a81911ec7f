"""Writing candidate titles: N per idea in one batched `generate` call, many ideas at once.

Every title keeps the model's raw completion next to the cleaned text shown to people, so
evaluation can always see exactly what the model wrote.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.models import LoadedModel
from pipeline.prompts import check_idea, display_title, title_messages

MAX_TITLES_PER_IDEA = 20


@dataclass(frozen=True)
class GenerationSettings:
    n: int = 5  # titles per idea
    temperature: float = 0.7  # the tutorial's; 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 48  # a 75-character title is ~20 tokens; room for off-format answers
    seed: int | None = None
    max_batch: int = 64  # sequences per generate call when many ideas are batched

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_TITLES_PER_IDEA:
            raise UserError(f"n must be between 1 and {MAX_TITLES_PER_IDEA}, not {self.n}")
        if self.temperature < 0:
            raise UserError(f"temperature must be 0 or more, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], not {self.top_p}")
        if not 1 <= self.max_new_tokens <= 512:
            raise UserError(f"max_new_tokens must be between 1 and 512, not {self.max_new_tokens}")


@dataclass(frozen=True)
class Title:
    idea: str
    text: str  # for display: no surrounding whitespace or quotes
    raw: str  # the completion exactly as decoded
    model: str
    settings: dict[str, Any]


def generate_titles(
    loaded: LoadedModel, ideas: list[str], settings: GenerationSettings = GenerationSettings()
) -> list[list[Title]]:
    """`settings.n` titles for each idea, in the order of `ideas`."""
    ideas = [check_idea(idea) for idea in ideas]
    if not ideas:
        raise UserError("no video ideas given")
    import torch

    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    ideas_per_call = _ideas_per_call(settings)
    results: list[list[Title]] = []
    for start in range(0, len(ideas), ideas_per_call):
        chunk = ideas[start : start + ideas_per_call]
        completions = _complete(loaded, chunk, settings)
        for i, idea in enumerate(chunk):
            raws = completions[i * settings.n : (i + 1) * settings.n]
            results.append([_title(loaded, idea, raw, settings) for raw in raws])
    return results


def _ideas_per_call(settings: GenerationSettings) -> int:
    return max(1, settings.max_batch // settings.n)


def generate_calls(ideas: int, settings: GenerationSettings = GenerationSettings()) -> int:
    """The model's generate calls (batches) that `generate_titles` makes for `ideas` ideas."""
    return math.ceil(ideas / _ideas_per_call(settings))


def generate_for_idea(
    loaded: LoadedModel, idea: str, settings: GenerationSettings = GenerationSettings()
) -> list[Title]:
    return generate_titles(loaded, [idea], settings)[0]


def _complete(loaded: LoadedModel, ideas: list[str], settings: GenerationSettings) -> list[str]:
    """One generate call: n sampled completions per idea, grouped by idea."""
    import torch

    tokenizer = loaded.tokenizer
    prompts = [
        tokenizer.apply_chat_template(
            title_messages(idea), tokenize=False, add_generation_prompt=True
        )
        for idea in ideas
    ]
    # Left padding so every prompt ends where generation starts. The chat template already
    # holds the special tokens, so the tokenizer must not add its own.
    batch = tokenizer(
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    ).to(loaded.device.name)
    sampled = settings.temperature > 0
    with torch.inference_mode():
        if sampled:
            output = loaded.model.generate(
                **_shared_prefix(loaded.model, batch, settings.n),
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        else:  # greedy gives one answer per prompt; it is repeated below
            output = loaded.model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return texts if sampled else [text for text in texts for _ in range(settings.n)]


def _shared_prefix(model, batch, n: int) -> dict:
    """Inputs for `generate` with each prompt's cache computed once and copied n times.

    `num_return_sequences=n` would run the prompt through the model n times; the prompt is
    most of the tokens, so this saves about a fifth of the time. All but the last prompt token
    go through the model here (positions counted as `generate` counts them under left
    padding); `generate` then feeds the last token and samples as usual.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    prefill = model(
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, :-1],
        use_cache=True,
    )
    cache = prefill.past_key_values
    cache.batch_repeat_interleave(n)
    return {
        "input_ids": ids.repeat_interleave(n, dim=0),
        "attention_mask": mask.repeat_interleave(n, dim=0),
        # `cache` is the newer name, but `past_key_values` works on every transformers 5.x.
        "past_key_values": cache,
    }


def _title(loaded: LoadedModel, idea: str, raw: str, settings: GenerationSettings) -> Title:
    recorded = {k: v for k, v in asdict(settings).items() if k not in ("max_batch",)}
    return Title(idea, display_title(raw), raw, loaded.label, recorded)
