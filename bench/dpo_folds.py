"""DPO (and reward-model) held-out accuracy over K folds of ideas: every labelled pair is held
out once.

    python bench/dpo_folds.py [--folds 4] [--recipes tutorial,fast,reward:fast] [--epochs 1]
                              [--model smollm2-offline] [--as-is] [--reuse] [--out runs/folds]

One split's 120 held-out pairs (12 ideas) measure reward accuracy to about +-4 points, more
than the differences between recipes. Here the ideas are cut into K folds; each recipe trains
on K-1 of them and is evaluated on the last, K times, so all 1,140 pairs are scored by a model
that never saw their idea. Prints each fold's accuracies, then each recipe's pooled accuracy
with its standard error, and each recipe's difference from the first.

Accuracy is counted pair by pair (`pipeline.evaluation.ranking_accuracy`): a trained model's
implicit reward log(pi/pi_ref) against its own reference. Beside the recipes, "untrained" is
the base model ranking each pair by its own likelihood: what the model knew before any
training, which a recipe has to beat to have learned anything. A recipe named `reward:NAME` is
a reward-model recipe (pipeline/reward.py): its accuracy is the share of pairs whose chosen
title it scores higher. `--reuse` scores the models a previous run left in `--out` (same
recipe, finished) instead of training them again.

By default every recipe runs with the speed-ups that leave its arithmetic unchanged: the
shared-prompt forward (equal to TRL's outputs and gradients, tests/test_shared_prompt.py),
reference log-probs computed once (the reference is frozen), no gradient checkpointing (a
recompute of the same values), random batches kept as they are. That makes the tutorial recipe
affordable K times over; `--as-is` runs the recipes exactly as defined instead. This bench
measures accuracy, not speed: bench/dpo_speed.py does that.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

from pipeline import datasets as ds
from pipeline.evaluation import HeldOutRanking, held_out_ranking, pair_logps, ranking_accuracy
from pipeline.methods import train_run
from pipeline.models import load_model
from pipeline.recipes import DPORecipe, RewardRecipe, get_recipe
from pipeline.reward import RewardModel
from pipeline.stages import TrainResult


def idea_folds(prefs: list, k: int, seed: int = ds.SPLIT_SEED) -> list[dict[str, list]]:
    """K train/valid splits whose valid parts are disjoint sets of whole ideas."""
    import numpy as np

    ideas = sorted({ds.idea_key(p.idea) for p in prefs})
    order = np.random.RandomState(seed).permutation(len(ideas))
    folds = []
    for fold in range(k):
        valid = {ideas[i] for i in order[fold::k]}
        folds.append({
            "train": [p for p in prefs if ds.idea_key(p.idea) not in valid],
            "valid": [p for p in prefs if ds.idea_key(p.idea) in valid],
        })  # fmt: skip
    return folds


def finished_run(out: Path, recipe) -> TrainResult | None:
    """The run a previous call left in `out`, if it finished with this very recipe."""
    summary = out / "train_summary.json"
    if not summary.is_file():
        return None
    result = TrainResult(**json.loads(summary.read_text()))
    done = result.reference or result.kind == "reward"
    return result if result.recipe == asdict(recipe) and done else None


def held_out_accuracy(result: TrainResult, rows: list, model: str) -> float:
    """How the run ranks `rows`: a reward model by its scores, a DPO run by its implicit
    reward (a run scored by `score_held_out` carries its figure)."""
    if result.kind == "reward":
        return RewardModel(load_model(result.out, fresh=True, head="score")).accuracy(rows)
    ranking = HeldOutRanking(**result.held_out) if result.held_out else (
        held_out_ranking(rows, result.out, result.reference, model))  # fmt: skip
    return ranking.tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-offline")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--recipes", default="tutorial,fast", help="comma-separated")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--as-is", action="store_true", help="no arithmetic-preserving speed-ups")
    parser.add_argument("--reuse", action="store_true", help="score finished runs in --out")
    parser.add_argument("--out", type=Path, default=Path("runs/folds"))
    args = parser.parse_args()

    names = args.recipes.split(",")
    recipes = {}
    for name in names:
        kind = RewardRecipe if name.startswith("reward:") else DPORecipe
        recipe = replace(
            get_recipe(name.removeprefix("reward:"), kind), save_total_limit=1, epochs=args.epochs
        )
        if not args.as_is and kind is DPORecipe:
            recipe = replace(recipe, shared_prompt=True, precompute_ref_log_probs=True,
                             gradient_checkpointing=False)  # fmt: skip
        recipes[name] = recipe
    folds = idea_folds(ds.seed_preferences(), args.folds)
    columns = ["untrained", *names]
    correct = dict.fromkeys(columns, 0)
    scored = 0
    for i, split in enumerate(folds):
        data = args.out / f"fold{i}" / "data"
        if not (data / "dataset_dict.json").is_file():
            ds.save_dataset(ds.build_dataset(split), data, ds.summarize(split, "seed", "idea"))
        rows = list(ds.load_preference_dataset(data)["valid"])
        scored += len(rows)
        accuracy = {}
        line = [f"fold {i}: {len(split['train'])} train / {len(rows)} held-out pairs"]
        for name, recipe in recipes.items():
            started = time.perf_counter()
            out = args.out / f"fold{i}" / re.sub(r"[^\w.-]+", "-", name)  # a file's path too
            result = finished_run(out, recipe) if args.reuse else None
            trained = "reused" if result else None
            if result is None:
                result = train_run(data, out, args.model, recipe)
                trained = f"{time.perf_counter() - started:.0f} s"
            accuracy[name] = held_out_accuracy(result, rows, args.model)
            line.append(f"{name} {accuracy[name]:.3f} ({trained})")
        # the base model ranking each pair by its own likelihood: the same for every recipe
        accuracy["untrained"] = ranking_accuracy(pair_logps(load_model(args.model), rows))
        line.insert(1, f"untrained {accuracy['untrained']:.3f}")
        for name in columns:
            correct[name] += round(accuracy[name] * len(rows))
        print("; ".join(line), flush=True)

    pooled = {name: correct[name] / scored for name in columns}
    for name in columns:
        se = math.sqrt(pooled[name] * (1 - pooled[name]) / scored)
        print(f"{name:9s} held-out ranking accuracy {pooled[name]:.3f} +- {se:.3f} "
              f"({correct[name]}/{scored} pairs, {args.folds} folds)")  # fmt: skip
    for name in names:
        print(f"{name} - untrained: {pooled[name] - pooled['untrained']:+.3f}")
    for name in names[1:]:
        print(f"{name} - {names[0]}: {pooled[name] - pooled[names[0]]:+.3f}")
    print(json.dumps({"folds": args.folds, "pairs": scored, "accuracy": pooled}))


if __name__ == "__main__":
    main()
