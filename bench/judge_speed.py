"""The chat judge's pace: only the last position's logits against the whole forward's, in one run.

    python bench/judge_speed.py [--pairs 16] [--repeats 2]

A chat judge (`pipeline.judges.ChatJudge`) reads one next-token distribution per question, at
the last position. `last_logits` asks the model for that position's logits alone
(`logits_to_keep=1`); the baseline is the plain forward, which computes the whole vocabulary
at every position. Both judge the same seed pairs (each asked both ways, 16 questions a
forward) with the same model, alternately, best of `--repeats` each: on the offline
SmolLM2-135M (49,152 tokens), then on a random-weight model of Qwen2.5-0.5B's shape (its
151,936-token vocabulary; bench/gpu.py builds it, no download). Prints the seconds, the ratio,
and whether every verdict is the same.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gpu import build_model, tokenizer_folder  # beside this script

from pipeline import judges
from pipeline.datasets import seed_preferences
from pipeline.models import load_model


def whole_forward_logits(model, batch):
    """The baseline: the plain forward, every position's logits, the last one kept."""
    return model(**batch).logits[:, -1]


def timed(judge, pairs, forward) -> tuple[float, list[str]]:
    judges.last_logits = forward  # what ChatJudge calls, looked up at each call
    started = time.perf_counter()
    verdicts = judge.prefer_many(pairs)
    return time.perf_counter() - started, verdicts


def compare(name: str, folder: Path, pairs, repeats: int) -> None:
    loaded = load_model(str(folder), fresh=True)
    judge = judges.ChatJudge(loaded)
    kept_logits = judges.last_logits
    judge.prefer_many(pairs[:2])  # warm-up
    best = {"last": float("inf"), "whole": float("inf")}
    verdicts = {}
    for _ in range(repeats):
        for label, forward in (("whole", whole_forward_logits), ("last", kept_logits)):
            seconds, verdicts[label] = timed(judge, pairs, forward)
            best[label] = min(best[label], seconds)
    judges.last_logits = kept_logits
    same = verdicts["last"] == verdicts["whole"]
    print(
        f"{name:<32} {len(pairs)} pairs: last position only {best['last']:.2f} s, whole "
        f"forward {best['whole']:.2f} s ({best['whole'] / best['last']:.2f}x); "
        f"same verdicts: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    pairs = [(p.idea, p.chosen, p.rejected) for p in seed_preferences()[: args.pairs]]
    tokenizer = tokenizer_folder(None)
    compare("SmolLM2-135M-Instruct (offline)", tokenizer, pairs, args.repeats)
    with tempfile.TemporaryDirectory() as scratch:
        qwen_shape = build_model("qwen2.5-0.5b", tokenizer, Path(scratch), tiny=False)
        compare("Qwen2.5-0.5B shape, random", qwen_shape, pairs, args.repeats)


if __name__ == "__main__":
    main()
