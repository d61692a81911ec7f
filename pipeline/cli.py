"""`python -m pipeline SUBCOMMAND`: the pipeline from the command line.

Each subcommand is a thin layer over the library: parse, call, return the text to print.
Heavy imports happen inside the commands so that `--help` is instant. A mistake the user can
fix prints one line (`error: ...`) and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from pipeline import hub_kernels
from pipeline.appdata import data_dir
from pipeline.errors import UserError
from pipeline.logs import log_to_stderr
from pipeline.methods import METHODS, Method
from pipeline.recipes import add_recipe_arguments
from pipeline.tracking import use_tracking_dir
from pipeline.wording import counted

log = logging.getLogger("pipeline")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="Hub id, local folder, or 'smollm2-offline' (default: Qwen/Qwen2.5-0.5B-Instruct, "
        "falling back to the offline SmolLM2 when the Hub cannot be reached)",
    )
    p.add_argument(
        "--hub-kernels",
        action="store_true",
        help=f"let transformers fetch and run its Hub kernels (as {hub_kernels.SETTING}=1 "
        "does; off by default: the PyTorch layers, nothing fetched at run time)",
    )


def add_vote_screening(p: argparse.ArgumentParser) -> None:
    """--drop-fast, --drop-burst, --min-gold-accuracy and --include-evaluation, for commands
    that build a dataset from votes (`vote_screening` reads them back)."""
    p.add_argument(
        "--drop-fast",
        "--drop-flagged",  # its name before votes had more than one flag
        dest="drop_fast",
        action="store_true",
        help="with a vote database: leave out votes cast too fast to have read the titles",
    )
    p.add_argument(
        "--drop-burst",
        action="store_true",
        help="with a vote database: leave out the votes of voters whose ids were minted in a "
        "burst from one address (a script; or a classroom behind one router, so look first)",
    )
    p.add_argument(
        "--min-gold-accuracy",
        type=float,
        default=None,
        metavar="X",
        help="with a vote database: leave out every vote of voters whose accuracy on gold "
        "pairs (checks with a known answer) is below X, from 0 to 1",
    )
    p.add_argument(
        "--include-evaluation",
        action="store_true",
        help="with a vote database: also make rows from votes on evaluation rounds' pairs "
        "(left out by default: they measure models; the dataset card says when they are in)",
    )


def add_split(p: argparse.ArgumentParser) -> None:
    """--split, for commands that build a dataset."""
    p.add_argument(
        "--split",
        choices=["idea", "seed"],
        default="idea",
        help="held-out pairs: idea: whole ideas, no idea in both splits (default); seed: the "
        "tutorial's random split of pairs, exactly",
    )


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=5, help="titles per idea (default: 5)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default: 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default: 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="(default: 48)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, for repeatable runs")


def _settings(args: argparse.Namespace):
    from pipeline.generation import GenerationSettings

    return GenerationSettings(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )


def cmd_generate(args: argparse.Namespace) -> str:
    from pipeline.generation import generate_for_idea
    from pipeline.models import load_model
    from pipeline.prompts import check_idea

    idea = check_idea(args.idea)  # before the (slow) model load
    settings = _settings(args)
    if args.reward:
        return best_of_n_text(args, idea, settings)
    loaded = load_model(args.model)
    titles = generate_for_idea(loaded, idea, settings)
    if args.json:
        record = {
            "idea": idea,
            "model": loaded.label,
            "titles": [t.text for t in titles],
            "raw": [t.raw for t in titles],
        }
        return json.dumps(record, ensure_ascii=False)
    lines = [f"model: {loaded.label}"]
    lines += [f"{i}. {title.text}" for i, title in enumerate(titles, 1)]
    return "\n".join(lines)


def best_of_n_text(args: argparse.Namespace, idea: str, settings) -> str:
    """`generate --reward RM`: the n titles scored by the reward model, best first."""
    from pipeline.methods import check_reward_model
    from pipeline.models import load_model
    from pipeline.reward import best_of_n, load_reward_model

    reward = load_reward_model(check_reward_model(args.reward))
    loaded = load_model(args.model)
    ranked = best_of_n(loaded, reward, idea, settings)
    if args.json:
        record = {
            "idea": idea,
            "model": loaded.label,
            "reward_model": reward.name,
            "titles": [s.title.text for s in ranked],
            "raw": [s.title.raw for s in ranked],
            "scores": [s.score for s in ranked],
        }
        return json.dumps(record, ensure_ascii=False)
    lines = [f"model: {loaded.label}; best first by the reward model {reward.name}"]
    lines += [f"{i}. [{s.score:+.2f}] {s.title.text}" for i, s in enumerate(ranked, 1)]
    return "\n".join(lines)


def cmd_pairs(args: argparse.Namespace) -> str:
    from pipeline.generation import generate_titles
    from pipeline.models import load_model
    from pipeline.pairs import pairs_for_idea, read_ideas_csv, write_pairs_csv, write_text_atomic

    ideas = read_ideas_csv(args.ideas)
    settings = _settings(args)
    loaded = load_model(args.model)
    titles = generate_titles(loaded, ideas, settings)
    pairs = [p for group in titles for p in pairs_for_idea(group[0].idea, [t.text for t in group])]
    # Every title with its raw completion, model and settings, so nothing the model wrote is
    # lost; written (atomically) before the CSV, so a pairs CSV always has its titles beside it.
    raw_path = Path(args.out).with_suffix(".titles.jsonl")
    write_text_atomic(
        raw_path,
        "".join(json.dumps(asdict(t), ensure_ascii=False) + "\n" for g in titles for t in g),
    )
    count = write_pairs_csv(pairs, args.out)
    return (
        f"wrote {counted(count, 'pair')} for {counted(len(ideas), 'idea')} to {args.out} "
        f"(raw titles: {raw_path})"
    )


def vote_screening(args: argparse.Namespace):
    """The `pipeline.ratings.Screening` the flags of `add_vote_screening` ask for."""
    from pipeline.ratings import Screening

    return Screening(
        drop_fast=args.drop_fast,
        drop_burst=args.drop_burst,
        min_gold_accuracy=args.min_gold_accuracy,
        include_evaluation=args.include_evaluation,
    )


def cmd_dataset(args: argparse.Namespace) -> str:
    from pipeline.datasets import write_dataset_folder

    votes = None if args.from_seed else args.from_votes
    summary = write_dataset_folder(
        args.out,
        votes,
        args.split,
        args.min_votes,
        vote_screening(args),
    )
    if args.json:
        return json.dumps(summary, ensure_ascii=False)
    counts = ", ".join(f"{k} {v}" for k, v in summary["rows"].items())
    return f"wrote {args.out}: {counts} rows (split by {args.split})"


def cmd_run(args: argparse.Namespace) -> str:
    """`train`, `reward` or `rl`: the method `add_run_command` made the command for."""
    from pipeline.methods import describe_run, score_run, train_run
    from pipeline.recipes import recipe_from_args

    method = args.trains  # not `method`: the RL recipe has a --method flag
    # every check before the (slow) model load
    beside = getattr(args, "beside", None)
    if beside and not Path(beside).is_dir():
        raise UserError(f"--beside {beside}: no such run folder")
    if args.resume:
        settings = resumable(args.out, method)
    else:
        recipe = recipe_from_args(args, method.recipe)
        reward_model = method.check_reward_model(recipe, getattr(args, "reward", None))
        settings = {"model_name": args.model, "recipe": recipe, "reward_model": reward_model,
                    "max_steps": args.max_steps}  # fmt: skip
    use_tracking_dir(data_dir())
    result = train_run(args.data, args.out, **settings, resume=args.resume)
    result = score_run(result, beside)
    return json.dumps(asdict(result)) if args.json else describe_run(result)


def resumable(out: Path, method: Method) -> dict:
    """The settings that carry the run cut off in `out` on (`train --resume`): the ones it
    started with; refused for a run with nothing to carry on from, or finished."""
    from pipeline.methods import resumed_settings
    from pipeline.runs import left_at, run_summary

    if (run_summary(out) or {}).get("finished"):
        raise UserError(f"--resume: the run in {out} finished; nothing is left to train")
    if not left_at(out).stage:
        raise UserError(f"--resume: {out} holds no checkpoint to carry on from; start it again")
    settings, line = resumed_settings(out, method.recipe.KIND)
    log.info(line)
    return settings


def cmd_score(args: argparse.Namespace) -> str:
    from pipeline.datasets import load_preference_dataset
    from pipeline.evaluation import pair_logps, ranking_accuracy
    from pipeline.models import load_model

    dataset = load_preference_dataset(args.data)  # before the (slow) model loads
    if args.split not in dataset:
        raise UserError(f"{args.data} has no {args.split!r} split (it has {', '.join(dataset)})")
    rows = list(dataset[args.split])
    if not rows:
        raise UserError(f"{args.data}: the {args.split!r} split is empty")
    policy = pair_logps(load_model(args.model), rows)
    reference = pair_logps(load_model(args.reference), rows) if args.reference else None
    accuracy = ranking_accuracy(policy, reference)
    record = {
        "accuracy": accuracy,
        "pairs": len(rows),
        "split": args.split,
        "model": policy.model,
        "reference": reference.model if reference else None,
    }
    if args.json:
        return json.dumps(record)
    score = f"log pi/pi_ref against {reference.model}" if reference else "its own likelihood"
    right = round(accuracy * len(rows))
    return (
        f"{policy.model} ranks {right}/{len(rows)} {args.split} pairs as labelled "
        f"({accuracy:.3f}), scoring each title by {score}"
    )


def _model_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name one or more models, separated by commas")
    return names


def _round_ideas(args: argparse.Namespace) -> tuple[list[str] | None, str | None]:
    """The ideas the flags name: a file, the shipped fresh ideas, or None for a run's held-out
    split."""
    from pipeline.rounds import round_ideas

    if getattr(args, "held_out_of", None):
        return round_ideas("held-out")
    if args.ideas:
        return round_ideas("file", path=args.ideas)
    return round_ideas("fresh")


def _store(args: argparse.Namespace, create: bool = False):
    """The app's vote store in --data. Only a command that adds to it (`iterate start`,
    `evaluate create`) starts one where there is none: for any other, a mistyped folder would
    otherwise be left holding a new empty store, and the answer would be "nothing yet"."""
    from pipeline.appdata import data_dir
    from pipeline.votes import DB_NAME, VoteStore

    folder = Path(args.data or data_dir())
    if not create and not (folder / DB_NAME).is_file():
        raise UserError(
            f"{folder}: no vote store here ({DB_NAME}); --data names the app's data folder "
            "(default: TITLE_DPO_DATA, else ./app-data)"
        )
    return VoteStore.in_folder(folder)


def cmd_pools(args: argparse.Namespace) -> str:
    store = _store(args)
    if args.set:
        retired = True if args.retire else False if args.serve else None
        store.set_pool(args.set, priority=args.priority, retired=retired)
    elif args.priority is not None or args.retire or args.serve:
        raise UserError("--priority, --retire and --serve change the pool named by --set NAME")
    found = store.pools()
    if args.json:
        return json.dumps([asdict(p) for p in found], ensure_ascii=False)
    return "\n".join(p.describe() for p in found) or "no pools yet"


def cmd_iterate_start(args: argparse.Namespace) -> str:
    from pipeline.iterations import plan_iteration, start_iteration

    ideas, where = _round_ideas(args)
    store = _store(args, create=True)
    # every check is done before the policy loads
    plan = plan_iteration(
        store,
        args.model,
        ideas,
        where,
        name=args.name,
        k=args.n,
        target_votes=args.target,
        max_ideas=args.max_ideas,
    )
    info = start_iteration(store, plan, _settings(args))
    if args.json:
        return json.dumps(asdict(info), ensure_ascii=False)
    return (
        f"iteration {info.name!r}: {info.policy} wrote {info.k} titles for "
        f"{plan.describe_ideas()} of {where}; their pairs are served first (pool {info.pool})"
    )


def cmd_iterate_status(args: argparse.Namespace) -> str:
    from pipeline.iterations import iteration_statuses

    store = _store(args)
    found = iteration_statuses(store, [store.iteration_info(args.name)] if args.name else None)
    if args.json:
        return json.dumps([{**asdict(f), "ready": f.ready} for f in found], ensure_ascii=False)
    return "\n".join(f.describe() for f in found) or "no iterations yet"


def cmd_iterate_train(args: argparse.Namespace) -> str:
    from pipeline.iterations import (
        IterationData,
        train_iteration,
        train_iteration_rlhf,
        wait_for_votes,
    )
    from pipeline.methods import describe_run
    from pipeline.recipes import recipe_from_args

    recipe = recipe_from_args(args)  # checked before the (slow) model load
    store = _store(args)
    if args.wait:
        wait_for_votes(store, args.name, every=args.wait_seconds)
    use_tracking_dir(data_dir())
    data = IterationData(
        args.min_votes, vote_screening(args), args.with_earlier, args.with_tutorial
    )
    common = {"data": data, "max_steps": args.max_steps, "judge": not args.no_judge}
    if args.rlhf:  # the reward and RL recipes are the shipped fast ones
        result = train_iteration_rlhf(store, args.name, args.out, **common)
    else:
        result = train_iteration(store, args.name, args.out, recipe, **common)
    if args.json:
        return json.dumps(asdict(result))
    judged = store.iteration_info(args.name).judge_round
    return describe_run(result) + (
        f"\njudging round {judged!r} is served to voters" if judged else ""
    )


def cmd_iterate_judge(args: argparse.Namespace) -> str:
    from pipeline.iterations import judge_iteration
    from pipeline.rounds import ideas_from_file

    store = _store(args)
    ideas = ideas_from_file(args.ideas) if args.ideas else None
    info = judge_iteration(store, args.name, ideas=ideas, k=args.k)
    return (
        f"round {info.name!r}: {', '.join(info.labels)}; {info.describe_pairs()} "
        f"(report: python -m pipeline iterate report)"
    )


def cmd_iterate_report(args: argparse.Namespace) -> str:
    from pipeline.iteration_report import iteration_report, report_chart

    found = iteration_report(_store(args))
    if args.chart:
        if not found:
            raise UserError("no iterations yet: nothing to chart")
        report_chart(found).savefig(args.chart, dpi=120)
    if args.json:
        return json.dumps([r.as_dict() for r in found], ensure_ascii=False)
    return "\n".join(r.describe() for r in found) or "no iterations yet"


def cmd_evaluate_create(args: argparse.Namespace) -> str:
    from pipeline.rounds import create_round, plan_round

    ideas, where = _round_ideas(args)
    plan = plan_round(
        args.models,
        ideas,
        where,
        args.k,
        args.name,
        stages=not args.only_listed,
        held_out_of=args.held_out_of,
        serve_first=not args.not_first,
    )
    store = _store(args, create=True)  # every check above is done before a model loads
    info = create_round(
        store, plan, on_model=lambda m: log.info("writing titles with %s (%s)", m.label, m.name)
    )
    if args.json:
        return json.dumps({**asdict(info), "trained_on": plan.trained_on}, ensure_ascii=False)
    return (
        f"{plan.describe()}\ncreated round {info.name!r} in {store.path}: "
        f"{info.describe_pairs(created=True, first=plan.serve_first)}"
    )


def cmd_evaluate_report(args: argparse.Namespace) -> str:
    from pipeline.winrates import chart, round_report

    store = _store(args)
    store.round_info(args.round)  # an unknown round: before a judge loads
    if args.judge:
        from pipeline.judges import judge_round, make_judge

        judge = make_judge(args.judge)
        report = round_report(store, args.round, judge_round(store, args.round, judge), judge.name)
    else:
        report = round_report(store, args.round)
    if args.chart:
        chart(report).savefig(args.chart, dpi=120)
    if args.json:
        return json.dumps(report.as_dict(), ensure_ascii=False)
    return report.describe() + (f"\nchart: {args.chart}" if args.chart else "")


def cmd_evaluate_auto(args: argparse.Namespace) -> str:
    from pipeline.evaluation import auto_measures, labelled_ranking
    from pipeline.models import load_model

    ideas, where = _round_ideas(args)
    rows = None
    if args.pairs:
        from pipeline.datasets import load_preference_dataset

        dataset = load_preference_dataset(args.pairs)  # before the (slow) model loads
        if args.split not in dataset or not len(dataset[args.split]):
            raise UserError(f"{args.pairs} has no {args.split!r} pairs")
        rows = list(dataset[args.split])
    results = []
    for name in args.models:
        measures = auto_measures(load_model(name), ideas, k=args.k, seed=args.seed)
        if rows is not None:
            accuracy, ranked_by = labelled_ranking(name, rows)
            measures = replace(
                measures, ranking_accuracy=accuracy, ranked_pairs=len(rows), ranked_by=ranked_by
            )
        results.append(replace(measures, model=name))
    if args.json:
        return json.dumps({"ideas": where, "k": args.k, "models": [asdict(r) for r in results]})
    head = f"{counted(len(ideas), 'idea')} ({where}), {args.k} titles per idea per model"
    return "\n".join([head, *(r.describe() for r in results)])


def add_evaluate(sub) -> None:
    """`evaluate create | report | auto`: rounds of blind votes on models, and the measures
    that need no people."""
    # Over 60 lines: three steps' flags, each read top to bottom in its --help order.
    evaluate = sub.add_parser("evaluate", help="compare models: blind rounds, automatic measures")
    steps = evaluate.add_subparsers(dest="step", required=True, parser_class=Parser)
    data_help = "the app's data folder, holding votes.db (default: TITLE_DPO_DATA or ./app-data)"

    p = steps.add_parser("create", help="models write titles; their pairs join the voting pool")
    p.add_argument(
        "--models",
        required=True,
        type=_model_list,
        help="M1,M2,...: Hub ids, folders or 'smollm2-offline'; a finished run's model folder "
        "brings the model it started from and its SFT stage too (see --only-listed)",
    )
    ideas = p.add_mutually_exclusive_group(required=True)
    ideas.add_argument("--ideas", type=Path, help="a file with one idea per line (or a CSV)")
    ideas.add_argument(
        "--held-out-of",
        metavar="RUN",
        help="a finished run (its folder or model folder): its held-out ideas that no model "
        "in the round trained on",
    )
    ideas.add_argument(
        "--fresh-ideas", action="store_true", help="the shipped 60 ideas none of the data has"
    )
    p.add_argument("--k", type=int, default=1, help="titles per model per idea (default: 1)")
    p.add_argument("--name", default=None, help="the round's name (default: round-DATE-TIME)")
    p.add_argument(
        "--only-listed",
        action="store_true",
        help="exactly the models named: a run brings neither its base nor its SFT stage",
    )
    p.add_argument(
        "--not-first",
        action="store_true",
        help="serve its pairs beside the other pools' (default: before them, see `pools`)",
    )
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--json", action="store_true", help="print the round as JSON")
    p.set_defaults(run=cmd_evaluate_create)

    p = steps.add_parser("report", help="a round's win rates, arena and per-pair detail")
    p.add_argument("--round", required=True, help="the round's name (or number)")
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument(
        "--judge",
        default=None,
        metavar="MODEL",
        help="judge the round's pairs with this chat model (asked both ways; a flip is a tie) "
        "or reward model (a `reward` run's folder: the higher score wins) "
        "instead of the votes, and report its agreement with the people",
    )
    p.add_argument("--chart", type=Path, default=None, help="also save the bar chart (PNG)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(run=cmd_evaluate_report)

    p = steps.add_parser("auto", help="format, length and variety of models' titles, no people")
    p.add_argument("--models", required=True, type=_model_list, help="M1,M2,...")
    ideas = p.add_mutually_exclusive_group(required=True)
    ideas.add_argument("--ideas", type=Path, help="a file with one idea per line (or a CSV)")
    ideas.add_argument("--fresh-ideas", action="store_true", help="the shipped 60 fresh ideas")
    p.add_argument("--k", type=int, default=8, help="titles per idea per model (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument(
        "--pairs",
        type=Path,
        default=None,
        metavar="DATA",
        help="a dataset folder: also report how each model ranks its labelled pairs",
    )
    p.add_argument("--split", default="valid", help="which split of --pairs (default: valid)")
    p.add_argument("--json", action="store_true", help="print the measures as JSON")
    p.set_defaults(run=cmd_evaluate_auto)


def add_run_command(sub, method: Method) -> None:
    """The command that trains one method (`pipeline.methods`), with its recipe's flags."""
    p = sub.add_parser(method.command, help=method.command_help)
    p.add_argument("--data", required=True, type=Path, help="folder from `dataset`")
    if method.takes_reward_model:
        p.add_argument(
            "--reward",
            default=None,
            metavar="RM",
            help="the reward model: a `reward` run's folder (needed unless --reward-weight 0)",
        )
    p.add_argument("--out", required=True, type=Path, help=f"where the {method.makes} goes")
    _add_model(p)
    add_recipe_arguments(p, method.recipe)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument(
        "--resume",
        action="store_true",
        help="carry on the run in --out, cut off or stopped, from its last checkpoint, with "
        "the model, recipe and step limit it started with (those flags are not used)",
    )
    if method.scored_beside:
        p.add_argument(
            "--beside",
            default=None,
            metavar="RUN",
            help="a DPO run's model folder: its implicit-reward accuracy on the same held-out "
            "pairs is reported beside the reward model's",
        )
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(run=cmd_run, trains=method)


def add_iterate(sub) -> None:
    """`iterate start | status | train | judge | report`: on-policy iterations."""
    # Over 60 lines: five steps' flags, each read top to bottom in its --help order.
    iterate = sub.add_parser(
        "iterate", help="on-policy iterations: a policy's own titles voted on, then trained on"
    )
    steps = iterate.add_subparsers(dest="step", required=True, parser_class=Parser)
    data_help = "the app's data folder, holding votes.db (default: TITLE_DPO_DATA or ./app-data)"

    p = steps.add_parser("start", help="the policy writes titles; their pairs are served first")
    p.add_argument(
        "--model",
        default=None,
        help="the policy: a Hub id, folder or finished run (default: the last iteration's "
        "trained policy)",
    )
    ideas = p.add_mutually_exclusive_group(required=True)
    ideas.add_argument("--ideas", type=Path, help="a file with one idea per line (or a CSV)")
    ideas.add_argument("--fresh-ideas", action="store_true", help="the shipped 60 fresh ideas")
    p.add_argument("--target", type=int, default=2, help="votes per pair to aim for (default 2)")
    p.add_argument(
        "--max-ideas", type=int, default=16, help="new ideas it asks about, at most (default 16)"
    )
    p.add_argument("--name", default=None, help="its name (default: iteration-DATE-TIME)")
    _add_sampling(p)  # --n: titles per idea (5 make 10 pairs)
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--json", action="store_true", help="print the iteration as JSON")
    p.set_defaults(run=cmd_iterate_start)

    p = steps.add_parser("status", help="votes per pair against the target")
    p.add_argument("name", nargs="?", default=None, help="one iteration (default: every one)")
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(run=cmd_iterate_status)

    p = steps.add_parser("train", help="the next policy: DPO on the iteration's votes")
    p.add_argument("name", help="the iteration")
    p.add_argument("--out", required=True, type=Path, help="OUT/data and the policy in OUT/model")
    p.add_argument("--min-votes", type=int, default=1, help="votes a pair needs (default 1)")
    p.add_argument("--with-earlier", action="store_true", help="the earlier iterations' votes too")
    p.add_argument(
        "--with-tutorial", action="store_true", help="the tutorial's 1,140 labelled pairs too"
    )
    p.add_argument(
        "--wait", action="store_true", help="first wait until every pair has its target votes"
    )
    p.add_argument("--wait-seconds", type=float, default=30, help="--wait looks this often")
    p.add_argument(
        "--no-judge", action="store_true", help="no judging round for the trained policy"
    )
    p.add_argument(
        "--rlhf",
        action="store_true",
        help="the RLHF way: a reward model on every iteration's votes so far (OUT/reward), then "
        "online RL against it (OUT/model), with the fast reward and RL recipes",
    )
    add_vote_screening(p)
    add_recipe_arguments(p)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(run=cmd_iterate_train)

    p = steps.add_parser(
        "judge", help="a judging round: the trained policy against the one before and the start"
    )
    p.add_argument("name", help="the iteration (trained)")
    p.add_argument(
        "--ideas", type=Path, default=None, help="a file of ideas (default: those kept for judging)"
    )
    p.add_argument("--k", type=int, default=2, help="titles per model per idea (default 2)")
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.set_defaults(run=cmd_iterate_judge)

    p = steps.add_parser("report", help="every iteration: votes, titles, judged win rates")
    p.add_argument("--chart", type=Path, default=None, help="also save the chart (PNG) here")
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_iterate_report)


def add_pools(sub) -> None:
    """`pools`: the vote pools, and how each is served."""
    p = sub.add_parser(
        "pools", help="the vote pools and how each is served (priority: higher first; retired)"
    )
    p.add_argument("--set", metavar="POOL", help="the pool to change (as listed, e.g. round:NAME)")
    p.add_argument("--priority", type=int, help="with --set: higher is served first (default 0)")
    served = p.add_mutually_exclusive_group()
    served.add_argument("--retire", action="store_true", help="with --set: no longer serve it")
    served.add_argument("--serve", action="store_true", help="with --set: serve it again")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the app's data folder, holding votes.db (default: TITLE_DPO_DATA or ./app-data)",
    )
    p.add_argument("--json", action="store_true", help="print the pools as JSON")
    p.set_defaults(run=cmd_pools)


def make_parser() -> argparse.ArgumentParser:
    # Over 60 lines: every command's flags in one place, in the order `--help` lists them.
    parser = Parser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("generate", help="write titles for one video idea")
    p.add_argument("--idea", required=True, help="the video idea (1-500 characters)")
    _add_sampling(p)
    _add_model(p)
    p.add_argument(
        "--reward",
        default=None,
        metavar="RM",
        help="best-of-n: score the n titles with this reward model (a `reward` run's folder) "
        "and list them best first, with their scores",
    )
    p.add_argument("--json", action="store_true", help='print {"idea", "model", "titles"}')
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("pairs", help="titles for every idea in a CSV, as head-to-head pairs")
    p.add_argument("--ideas", required=True, type=Path, help="CSV with an 'Idea' column")
    p.add_argument("--out", required=True, type=Path, help="pairs CSV: idea,title_a,title_b")
    _add_sampling(p)
    _add_model(p)
    p.set_defaults(run=cmd_pairs)

    p = sub.add_parser("dataset", help="build the prompt/chosen/rejected DatasetDict")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-seed", action="store_true", help="the tutorial's 1,140 pairs")
    source.add_argument(
        "--from-votes",
        type=Path,
        metavar="PATH",
        help="the app's vote database (votes.db or its folder), or a labelled CSV "
        "(idea,title_a,title_b,title_b_preferred with 0/1)",
    )
    p.add_argument(
        "--min-votes",
        type=int,
        default=1,
        help="with a vote database: pairs with fewer votes make no row (default: 1)",
    )
    add_vote_screening(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_split(p)
    p.add_argument("--json", action="store_true", help="print a summary: rows and ideas per split")
    p.set_defaults(run=cmd_dataset)

    for method in METHODS.values():
        add_run_command(sub, method)

    p = sub.add_parser("score", help="how often a model ranks labelled pairs as people did")
    p.add_argument("--data", required=True, type=Path, help="folder from `dataset`")
    p.add_argument("--split", default="valid", help="which split to score (default: valid)")
    _add_model(p)
    p.add_argument(
        "--reference",
        default=None,
        help="the model training started from: the score is then DPO's implicit reward "
        "log pi/pi_ref (a run of the fast recipe: its sft/ folder); without it, the model's "
        "own likelihood",
    )
    p.add_argument("--json", action="store_true", help="print {accuracy, pairs, split, ...}")
    p.set_defaults(run=cmd_score)

    add_pools(sub)
    add_iterate(sub)
    add_evaluate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(make_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen command, print its result; `error: ...` and exit 2 for a
    UserError. Shared by `python -m pipeline` and `python -m hub`."""
    args = parser.parse_args(argv)
    if getattr(args, "hub_kernels", False):
        os.environ[hub_kernels.SETTING] = "1"
    log_to_stderr()  # our own log lines (such as the offline notice), one line each
    try:
        # Libraries print progress to stdout (the Trainer's metric dicts); keep stdout for the
        # command's result alone, so `--json` output can be piped.
        with contextlib.redirect_stdout(sys.stderr):
            output = args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, one process answers
        print(output)
    return 0
