"""DPO speed: the tutorial's recipe against the project's fast recipe, in one process.

    python bench/dpo_speed.py [--model smollm2-offline] [--train-pairs 64] [--eval-pairs 64]
                              [--recipes tutorial,fast] [--subset ideas|pairs]

Both recipes train for the same number of epochs on the same pairs (the tutorial's labels,
split by idea, so the held-out pairs are of ideas never trained on; whole ideas, 10 pairs each,
as in the full data) and are evaluated on the same held-out pairs. Prints for each: pairs per
second (wall time of the whole run: model load, reference log-probs, training, evaluation,
saving), seconds in the training loop alone, and held-out reward accuracy; then the speed
ratio and the accuracy difference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline import datasets as ds
from pipeline.dpo import score_held_out, train_dpo
from pipeline.recipes import get_recipe


def held_out_accuracy(metrics_file: str) -> float:
    records = [json.loads(line) for line in Path(metrics_file).read_text().splitlines()]
    evals = [r["eval_rewards/accuracies"] for r in records if "eval_rewards/accuracies" in r]
    return evals[-1]


def by_idea(prefs: list) -> list:
    first_seen: dict[str, int] = {}
    for p in prefs:
        first_seen.setdefault(p.idea, len(first_seen))
    return sorted(prefs, key=lambda p: first_seen[p.idea])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-offline")
    parser.add_argument("--train-pairs", type=int, default=64)
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument(
        "--recipes", default="tutorial,fast", help="comma-separated; the first is the baseline"
    )
    parser.add_argument("--subset", choices=["ideas", "pairs"], default="ideas",
                        help="whole ideas (default) or the first pairs across ideas")  # fmt: skip
    args = parser.parse_args()

    splits = ds.split_preferences(ds.seed_preferences(), "idea")
    # Default: whole ideas, as in the full data and in votes (10 pairs per idea): the first
    # ideas' pairs. `--subset pairs`: the first pairs in file order, ~1 per idea (this
    # bench's selection before 2026-11-25).
    pick = by_idea if args.subset == "ideas" else list
    splits = {
        "train": pick(splits["train"])[: args.train_pairs],
        "valid": pick(splits["valid"])[: args.eval_pairs],
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ds.save_dataset(ds.build_dataset(splits), data, ds.summarize(splits, "seed", "idea"))
        print(
            f"model: {args.model}; {len(splits['train'])} train pairs, {len(splits['valid'])} "
            f"held-out pairs (ideas not in train), {args.epochs:g} epoch(s), batch 8",
            flush=True,
        )
        results = {}
        names = args.recipes.split(",")
        for name in names:
            recipe = replace(get_recipe(name), save_total_limit=1, epochs=args.epochs)
            started = time.perf_counter()
            result = train_dpo(data, Path(tmp) / name, args.model, recipe)
            # the held-out ranking, as the app and the CLI do after every run (measured in the
            # wall time since this bench began)
            result = score_held_out(result)
            wall = time.perf_counter() - started
            rate = len(splits["train"]) * args.epochs / wall
            results[name] = (rate, held_out_accuracy(result.metrics_file))
            print(
                f"{name:9s} {rate:.3f} pairs/s ({wall:.0f} s in all, {result.seconds:.0f} s "
                f"training loop, {result.steps} steps); held-out reward accuracy "
                f"{results[name][1]:.3f}",
                flush=True,
            )
    (rate_t, acc_t) = results[names[0]]
    for name in names[1:]:
        rate, acc = results[name]
        print(
            f"speed ratio {name}/{names[0]}: {rate / rate_t:.1f}x; "
            f"accuracy difference {acc - acc_t:+.3f}"
        )


if __name__ == "__main__":
    main()
