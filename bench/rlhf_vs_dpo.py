"""RLHF against DPO on the same data, from the same SFT model: what each preference step buys.

    python bench/rlhf_vs_dpo.py [--model smollm2-offline] [--dpo-run DIR] [--reward-run DIR]
                                [--rl-minutes 12] [--judge MODEL] [--out runs/rlhf-vs-dpo]

Both arms use the tutorial's pairs split by idea (1,020 train / 120 held-out pairs, 12 held-out
ideas) and start from the same SFT model (the fast DPO recipe's SFT stage: OUT/dpo/sft):
(a) DPO, the fast recipe; (b) RLHF: a reward model (the fast reward recipe, from the chat
model) and online RL against it (the fast RL recipe, GRPO), stopped at `--rl-minutes` of wall
time. `--dpo-run` / `--reward-run` reuse finished runs (their wall times are read from their
summaries) instead of training them again.

For base, SFT, DPO and RL it reports: the share of titles that follow the prompt on the
held-out ideas (8 per idea), their length, how each ranks the held-out pairs, and the win rate
of the DPO and RL models over the base and over the SFT model on the 60 shipped fresh ideas (2
titles per idea each), judged by the reward model through the judge interface (ties, the same
title included, counted apart) and by `--judge` (a chat model) when given. The reward model
judges the RL policy it was optimised against: that figure flatters RL, and the table says so.
Saves the curves of both runs as PNG files in --out, and prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import TrainerCallback

from pipeline import datasets as ds
from pipeline.dpo import score_held_out, train_dpo
from pipeline.evaluation import auto_measures, labelled_ranking
from pipeline.generation import GenerationSettings, generate_titles
from pipeline.judges import ChatJudge, RewardJudge
from pipeline.metrics import read_metrics
from pipeline.models import load_model
from pipeline.recipes import RECIPES, REWARD_RECIPES, RL_RECIPES
from pipeline.reward import load_reward_model, score_reward_held_out, train_reward
from pipeline.rl import read_samples, train_rl
from pipeline.rounds import fresh_ideas
from pipeline.stages import TrainResult
from pipeline.winrates import wilson


class TimeLimit(TrainerCallback):
    """Ends training (the model is still saved) once `seconds` of wall time have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.began = seconds, time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.began > self.seconds:
            control.should_training_stop = True
        return control


def finished(out: Path) -> TrainResult | None:
    summary = out / "train_summary.json"
    return TrainResult(**json.loads(summary.read_text())) if summary.is_file() else None


def head_to_head(judge, ideas, model_titles, other_titles) -> dict:
    """Wins, losses and ties of `model_titles` against `other_titles` (one list per idea)."""
    pairs = [
        (idea, a.text, b.text)
        for idea, mine, theirs in zip(ideas, model_titles, other_titles, strict=True)
        for a, b in zip(mine, theirs, strict=True)
    ]
    same = sum(a == b for _, a, b in pairs)
    verdicts = judge.prefer_many(pairs)
    wins, losses = verdicts.count("A"), verdicts.count("B")
    low, high = wilson(wins, wins + losses) or (0.0, 1.0)
    rate = wins / (wins + losses) if wins + losses else None
    return {"wins": wins, "losses": losses, "ties": len(pairs) - wins - losses,
            "same_title": same, "rate": rate, "interval": [low, high]}  # fmt: skip


def curves(metrics_file: str, keys: dict[str, str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_file)
    shown = [(key, label) for key, label in keys.items() if any(key in r for r in records)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 2.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], shown, strict=True):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points, strict=True), marker="o", markersize=2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-offline")
    parser.add_argument("--dpo-run", type=Path, default=None, help="a finished fast DPO run")
    parser.add_argument("--reward-run", type=Path, default=None, help="a finished reward model")
    parser.add_argument("--rl-minutes", type=float, default=12.0, help="RL's wall-time budget")
    parser.add_argument("--judge", default=None, help="also judge with this chat model")
    parser.add_argument("--titles-per-idea", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/rlhf-vs-dpo"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": args.model, "rl_minutes": args.rl_minutes}

    # (a) DPO, the fast recipe (its SFT stage is the start of both arms)
    dpo = finished(args.dpo_run) if args.dpo_run else None
    if dpo is None:
        data = args.out / "data"
        if not (data / "dataset_dict.json").is_file():
            splits = ds.split_preferences(ds.seed_preferences(), "idea")
            ds.save_dataset(ds.build_dataset(splits), data, ds.summarize(splits, "seed", "idea"))
        dpo = score_held_out(train_dpo(data, args.out / "dpo", args.model, RECIPES["fast"]))
    data, sft = Path(dpo.data), str(Path(dpo.out) / "sft")
    held_out_ideas = json.loads((data / "summary.json").read_text())["ideas"]["valid"]
    valid = list(ds.load_preference_dataset(data)["valid"])
    print(f"DPO: {dpo.steps} steps, {dpo.seconds:.0f} s (the DPO loop)", flush=True)

    # (b) RLHF: the reward model, then RL from the SFT model against it
    rm = finished(args.reward_run) if args.reward_run else None
    if rm is None:
        rm = train_reward(data, args.out / "reward", args.model, REWARD_RECIPES["fast"])
        rm = score_reward_held_out(rm, dpo.out)
    print(f"reward model: {rm.steps} steps, {rm.seconds:.0f} s; {rm.held_out}", flush=True)
    rl = finished(args.out / "rl")
    if rl is None:
        rl = train_rl(data, args.out / "rl", sft, rm.out, RL_RECIPES["fast"],
                      callbacks=[TimeLimit(args.rl_minutes * 60)])  # fmt: skip
    print(f"RL: {rl.steps}/{rl.max_steps} steps, {rl.seconds:.0f} s", flush=True)
    report["seconds"] = {"dpo": dpo.seconds, "reward_model": rm.seconds, "rl": rl.seconds}
    report["steps"] = {"dpo": dpo.steps, "reward_model": rm.steps, "rl": rl.steps}

    models = {"base": args.model, "SFT": sft, "DPO": dpo.out, "RL": rl.out}
    # held-out ideas: format and length; held-out pairs: ranked as labelled
    measures = {}
    for name, model in models.items():
        loaded = load_model(model)
        m = auto_measures(loaded, held_out_ideas, k=args.titles_per_idea)
        accuracy, by = labelled_ranking(model, valid)
        measures[name] = {
            "follows_prompt": m.follows_prompt,
            "mean_length": m.mean_length,
            "length_spread": m.length_spread,
            "ranking": accuracy,
            "ranked_by": by,
        }
        print(f"{name}: {m.describe()}; ranks {accuracy:.3f} of the held-out pairs ({by})",
              flush=True)  # fmt: skip
    measures["reward model"] = {"ranking": rm.held_out["reward_model"], "ranked_by": "its score"}
    report["measures"] = measures

    # win rates on fresh ideas, judged by the reward model (and a chat model when given)
    ideas = fresh_ideas()
    settings = GenerationSettings(n=2, temperature=0.7, seed=0)
    titles = {name: generate_titles(load_model(m), ideas, settings) for name, m in models.items()}
    judges = [RewardJudge(load_reward_model(rm.out))]
    if args.judge:
        judges.append(ChatJudge(load_model(args.judge)))
    report["win_rates"] = {}
    for judge in judges:
        for tuned in ("DPO", "RL"):
            for other in ("base", "SFT"):
                h2h = head_to_head(judge, ideas, titles[tuned], titles[other])
                report["win_rates"][f"{tuned} vs {other} ({judge.name})"] = h2h
                rate = "n/a" if h2h["rate"] is None else f"{h2h['rate']:.0%}"
                low, high = h2h["interval"]
                print(f"{tuned} vs {other}, judged by {judge.name}: {rate} "
                      f"({h2h['wins']}-{h2h['losses']}, CI {low:.0%}-{high:.0%}; "
                      f"{h2h['ties']} ties of which {h2h['same_title']} the same title)",
                      flush=True)  # fmt: skip

    # what the RL policy learned to write: the samples it was rewarded most for
    samples = read_samples(rl.out)
    logged = [r for r in read_metrics(rl.metrics_file) if "reward" in r]
    if logged:
        terms = ("reward", "reward/model", "reward/format", "reward/length", "kl")
        terms += ("completions/mean_length",)
        report["rl_terms"] = {k: [logged[0].get(k), logged[-1].get(k)] for k in terms}
    report["rl_top_samples"] = sorted(samples, key=lambda s: -s.get("model", 0))[:8]
    report["rl_last_samples"] = samples[-8:]

    curves(dpo.metrics_file, {"loss": "train loss", "eval_loss": "eval loss",
                              "rewards/margins": "margin", "rewards/accuracies": "accuracy"},
           "DPO (fast recipe)", args.out / "dpo_curves.png")  # fmt: skip
    curves(rl.metrics_file, {"reward": "total reward", "reward/model": "reward model",
                             "reward/format": "follows the prompt", "kl": "KL to SFT",
                             "completions/mean_length": "tokens per title"},
           "Online RL (GRPO, fast recipe)", args.out / "rl_curves.png")  # fmt: skip
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
