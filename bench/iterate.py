"""On-policy iterations against the same votes spent off-policy, with voters of a planted taste.

    python bench/iterate.py [--model smollm2-offline] [--start DIR] [--iterations 3]
                            [--ideas 16] [--k 5] [--voters 4] [--noise 0.2] [--epochs 3]
                            [--learning-rate R] [--out runs/iterate-bench]

The voters prefer titles that contain a number (a digit), a taste the SFT model does not
already have; a fifth of their votes are random, and where both titles (or neither) have a
number they pick a side at random, so they disagree as real voters do. They vote through the
app's endpoints (`python app.py` in its own process, `gradio_client`), as a browser does.

1. The start: the fast recipe's SFT stage on the tutorial's training split (`--start` reuses
   one), the model an owner would begin iterating from.
2. Off-policy: the tutorial's pairs (another model's titles) are the only pool; the voters
   label as many of them as the iterations will get votes in all, and DPO runs on the first
   third and on all of them (the recipe of an iteration: `iteration_recipe`).
3. On-policy: `--iterations` iterations, each on `--ideas` new shipped ideas, K titles per
   idea, one vote per pair, DPO from the last policy on its own iteration's votes.
4. Every policy writes 8 titles for each idea kept for judging (none of them asked about or
   trained on); the table gives the share with a number and the share in the prompt's format,
   each with its Wilson 95% interval, and the votes spent to get there (and how many of them
   were on pairs whose titles differ on the rule: only those carry the taste).

The question: do on-policy iterations learn the voters' taste with fewer votes than
off-policy labels? The baseline (the start, and off-policy DPO at equal votes) is measured in
the same run. Prints the table and one JSON line; writes OUT/result.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app_process import start_app, stop_app
from pipeline import datasets as ds
from pipeline.evaluation import follows_prompt
from pipeline.generation import GenerationSettings, generate_titles
from pipeline.iterations import (
    iteration_recipe,
    iteration_status,
    judge_ideas,
    plan_iteration,
    start_iteration,
    train_iteration,
)
from pipeline.models import load_model
from pipeline.ratings import Screening
from pipeline.recipes import get_recipe
from pipeline.rounds import fresh_ideas
from pipeline.votes import VoteStore
from pipeline.winrates import wilson

PASSWORD = "iterate bench owner"
SAMPLES = 8  # titles per judging idea when a policy is measured


def has_number(title: str) -> bool:
    return any(ch.isdigit() for ch in title)


def vote(url: str, seed: int, budget: int, noise: float) -> int:
    """One voter through the app: the title with a number wins; a coin decides a tie on the
    rule, and `noise` of the votes."""
    from gradio_client import Client

    rng = random.Random(seed)
    client = Client(url, verbose=False)
    voter, _idea, left, right, pair_id, _ = client.predict(None, api_name="/start")
    cast = 0
    while pair_id is not None and cast < budget:
        lean = has_number(left) - has_number(right)
        if lean == 0 or rng.random() < noise:
            lean = rng.choice([-1, 1])
        side = "/vote_left" if lean > 0 else "/vote_right"
        _idea, left, right, pair_id, progress = client.predict(voter, pair_id, api_name=side)
        if progress.startswith("**Not saved.**"):  # a refusal: the page's line says why
            raise RuntimeError(progress)
        cast += 1
    return cast


def class_votes(url: str, voters: int, budget: int, noise: float, seed: int) -> int:
    """`voters` voters at once, `budget` votes in all (each pair once: fewest votes first)."""
    shares = [budget // voters + (i < budget % voters) for i in range(voters)]
    with ThreadPoolExecutor(voters) as pool:
        return sum(pool.map(lambda i: vote(url, seed * 100 + i, shares[i], noise), range(voters)))


def telling_votes(store: VoteStore, pools: set[str]) -> tuple[int, int]:
    """(votes on pairs whose titles differ on the rule, all votes) in `pools`: only those
    votes carry the taste; the rest are coin flips."""
    votes = [v for v in store.votes() if v.pool in pools]
    return sum(has_number(v.title_a) != has_number(v.title_b) for v in votes), len(votes)


def measure(model: str, ideas: list[str]) -> dict:
    """The policy's titles for the judging ideas: share with a number, share in format."""
    settings = GenerationSettings(n=SAMPLES, temperature=0.7, seed=0)
    groups = generate_titles(load_model(model, fresh=True), ideas, settings)
    titles = [t for group in groups for t in group]
    numbered = sum(has_number(t.text) for t in titles)
    in_format = sum(follows_prompt(t.raw) for t in titles)
    return {
        "titles": len(titles),
        "number": numbered / len(titles),
        "number_ci": wilson(numbered, len(titles)),
        "format": in_format / len(titles),
        "format_ci": wilson(in_format, len(titles)),
        "mean_length": sum(len(t.text) for t in titles) / len(titles),
    }


def sft_start(model: str, out: Path) -> str:
    """The fast recipe's SFT stage on the tutorial's training split, as a DPO run starts."""
    from pipeline.stages import sft_stage, training_splits

    target = out / "start"
    if (target / "config.json").is_file():
        return str(target)
    data = out / "tutorial-data"
    if not (data / "dataset_dict.json").is_file():
        ds.write_dataset_folder(data)  # the tutorial's pairs, split by idea
    recipe = get_recipe("fast")
    train_split, _ = training_splits(data, recipe)
    sft_stage(load_model(model, fresh=True), train_split, target, recipe)
    return str(target)


def labelled_so_far(store: VoteStore, out: Path) -> Path:
    """The votes on the tutorial's pairs so far, as a dataset folder (split by idea)."""
    ds.write_dataset_folder(out, store.path, "idea", 1, Screening(pools=("tutorial",)))
    return out


def vote_until_ready(url: str, store: VoteStore, name: str, voters: int, noise: float) -> int:
    """The class votes until every pair of the iteration has a vote (two voters can take the
    same pair at once: the ones left get another pass); the iteration's votes."""
    for attempt in range(5):
        status = iteration_status(store, name)
        if status.ready:
            return status.votes
        left = status.pairs - status.pairs_at_target
        class_votes(url, min(voters, left), left, noise, seed=hash((name, attempt)) % 10_000)
    raise RuntimeError(f"iteration {name}: pairs still without a vote after 5 passes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-offline")
    parser.add_argument("--start", default=None, help="an SFT model to start from (default: train)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--ideas", type=int, default=16, help="new ideas per iteration")
    parser.add_argument("--k", type=int, default=5, help="titles per idea (C(k,2) pairs each)")
    parser.add_argument("--voters", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--epochs", type=float, default=3, help="DPO epochs, both arms")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="both arms (default: the fast recipe's)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/iterate-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    start = args.start or sft_start(args.model, args.out)
    fast = get_recipe("fast")
    rate = args.learning_rate or fast.learning_rate
    recipe = iteration_recipe(fast.changed(epochs=args.epochs, learning_rate=rate))
    judging = judge_ideas()
    rows = [{"policy": "start (SFT)", "votes": 0, **measure(start, judging)}]
    print(json.dumps(rows[-1]), flush=True)

    data = args.out / "app-data"
    store = VoteStore.in_folder(data)
    store.import_tutorial_pool()
    process, url = start_app(
        "--model", start, "--data", str(data), log_path=args.out / "app.log",
        env={"TITLE_DPO_OWNER_PASSWORD": PASSWORD, "TITLE_DPO_VOTES_PER_MINUTE": "100000",
             "TITLE_DPO_ADDRESS_VOTES_PER_MINUTE": "100000"},
    )  # fmt: skip
    try:
        # on-policy first: each iteration's pairs are served before the tutorial's
        policy, budgets = start, []
        for number in range(1, args.iterations + 1):
            plan = plan_iteration(store, None if number > 1 else start, fresh_ideas(),
                                  "fresh", name=f"it{number}", k=args.k, target_votes=1,
                                  max_ideas=args.ideas)  # fmt: skip
            info = start_iteration(store, plan, GenerationSettings(seed=number))
            votes = vote_until_ready(url, store, info.name, args.voters, args.noise)
            budgets.append(votes + (budgets[-1] if budgets else 0))
            result = train_iteration(store, info.name, args.out / info.name, recipe, judge=False)
            policy = result.out
            telling, _ = telling_votes(store, {i.pool for i in store.iterations()})
            rows.append({"policy": f"on-policy, iteration {number}", "votes": budgets[-1],
                         "telling": telling, **measure(policy, judging)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        # off-policy: only the tutorial's pairs are served now; the same kind of voters label
        # as many as the first iteration got, then as many as all of them
        for info in store.iterations():
            store.set_pool(info.pool, retired=True)
        snapshots, telling = {}, {}
        for votes in sorted({budgets[0], budgets[-1]}):
            done = sum(v.pool == "tutorial" for v in store.votes())
            class_votes(url, args.voters, votes - done, args.noise, seed=votes)
            snapshots[votes] = labelled_so_far(store, args.out / f"off-policy-{votes}" / "data")
            telling[votes] = telling_votes(store, {"tutorial"})[0]
    finally:
        stop_app(process)
    from pipeline.methods import train_run

    for votes, data in snapshots.items():
        used = json.loads((data / "summary.json").read_text())["votes_used"]
        model = train_run(data, data.parent / "model", start, recipe).out
        rows.append({"policy": "off-policy (tutorial pairs)", "votes": used,
                     "telling": telling[votes], **measure(model, judging)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    print(f"\nHeld-out: {len(judging)} ideas kept for judging, {SAMPLES} titles each; voters "
          f"prefer a number, {args.noise:.0%} random; {args.voters} voters")  # fmt: skip
    print("| policy | votes (on pairs that differ on the rule) | titles with a number (95% CI) "
          "| in format (95% CI) | length |")  # fmt: skip
    print("|---|---:|---|---|---:|")
    for r in rows:
        n_low, n_high = r["number_ci"]
        f_low, f_high = r["format_ci"]
        number = f"{r['number']:.0%} ({n_low:.0%}–{n_high:.0%})"
        in_format = f"{r['format']:.0%} ({f_low:.0%}–{f_high:.0%})"
        votes = f"{r['votes']} ({r['telling']})" if "telling" in r else str(r["votes"])
        print(f"| {r['policy']} | {votes} | {number} | {in_format} | {r['mean_length']:.0f} |")
    result = {"rows": rows, "seconds": round(time.time() - began), "args": vars(args)}
    (args.out / "result.json").write_text(json.dumps(result, default=str, indent=1))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
