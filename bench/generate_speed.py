"""Titles per second: the tutorial's way against the project's batched way, in one run.

    python bench/generate_speed.py [--model smollm2-offline] [--ideas 8] [--n 5]

The tutorial's way calls a `text-generation` pipeline once per title. The project's way asks
for all titles of many ideas in one batched `generate` call (left padding,
`num_return_sequences=n`). Both use the same loaded model, the same ideas and the same sampling
settings; the first call of each is a warm-up and is not timed. Prints both rates and the ratio.
"""

from __future__ import annotations

import argparse
import time

from pipeline.generation import GenerationSettings, generate_titles
from pipeline.models import load_model
from pipeline.pairs import read_ideas_csv
from pipeline.prompts import title_messages
from pipeline.records import SEED_DIR


def tutorial_titles(loaded, ideas: list[str], settings: GenerationSettings):
    """The tutorial's way: a `text-generation` pipeline called once per title; yields each
    title's text as it is written."""
    from transformers import pipeline

    generator = pipeline("text-generation", model=loaded.model, tokenizer=loaded.tokenizer)
    for idea in ideas:
        for _ in range(settings.n):
            answer = generator(
                title_messages(idea),
                max_new_tokens=settings.max_new_tokens,
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
            yield answer[0]["generated_text"][-1]["content"]


def tutorial_way(loaded, ideas: list[str], settings: GenerationSettings) -> int:
    return sum(1 for _ in tutorial_titles(loaded, ideas, settings))


def batched_way(loaded, ideas: list[str], settings: GenerationSettings) -> int:
    return sum(len(group) for group in generate_titles(loaded, ideas, settings))


def timed(fn, *args) -> tuple[int, float]:
    started = time.perf_counter()
    count = fn(*args)
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-offline")
    parser.add_argument("--ideas", type=int, default=8, help="how many ideas from ideas.csv")
    parser.add_argument("--n", type=int, default=5, help="titles per idea")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    import torch

    loaded = load_model(args.model)
    ideas = read_ideas_csv(SEED_DIR / "ideas.csv")[: args.ideas]
    settings = GenerationSettings(n=args.n, max_new_tokens=args.max_new_tokens, seed=0)
    warmup = GenerationSettings(n=2, max_new_tokens=4)
    tutorial_way(loaded, ideas[:1], warmup)
    batched_way(loaded, ideas[:1], warmup)

    torch.manual_seed(0)
    n_tutorial, s_tutorial = timed(tutorial_way, loaded, ideas, settings)
    n_batched, s_batched = timed(batched_way, loaded, ideas, settings)
    rate_tutorial, rate_batched = n_tutorial / s_tutorial, n_batched / s_batched

    print(
        f"model: {loaded.label}; device: {loaded.device.name}; threads: {torch.get_num_threads()}"
    )
    print(f"{len(ideas)} ideas x {args.n} titles, max_new_tokens={args.max_new_tokens}")
    print(
        f"tutorial (pipeline, one call per title): {n_tutorial} titles in {s_tutorial:.1f} s "
        f"= {rate_tutorial:.2f} titles/s"
    )
    print(
        f"batched (one generate call):             {n_batched} titles in {s_batched:.1f} s "
        f"= {rate_batched:.2f} titles/s"
    )
    print(f"ratio: {rate_batched / rate_tutorial:.1f}x")


if __name__ == "__main__":
    main()
