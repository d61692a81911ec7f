"""`python -m hub SUBCOMMAND`: publish to the Hub and pull from it.

    python -m hub push-dataset --repo NAME [--votes app-data] [--private] [--dry-run]
    python -m hub push-model FOLDER --repo NAME [--adapter-only] [--private] [--dry-run]
    python -m hub pull-dataset ID --out FOLDER

The token comes from HF_TOKEN or a saved `hf auth login`, never from the command line (where
shell history would keep it). A bare repo NAME goes to the token owner's namespace.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from pipeline.cli import Parser, add_split, add_vote_screening, run, vote_screening


def _add_push_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--repo", required=True, help=f"{what} repo id: NAME or NAMESPACE/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--dry-run", action="store_true", help="show what would be pushed; send nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _finish(plan, args: argparse.Namespace) -> str:
    """Show the plan (dry run) or push it. Everything local was checked while planning, so a
    refusal for a bad folder or option comes before any network call."""
    from hub.push import push

    if args.dry_run:
        return plan.describe()
    result = push(plan)
    return json.dumps(asdict(result)) if args.json else result.describe()


def cmd_push_dataset(args: argparse.Namespace) -> str:
    from datasets.utils.logging import disable_progress_bar

    from hub.auth import check_repo_id
    from hub.push import built_dataset, dataset_plan

    check_repo_id(args.repo, "dataset")  # before building anything
    disable_progress_bar()
    if args.data:
        plan = dataset_plan(args.data, args.repo, private=args.private, license=args.license)
        return _finish(plan, args)
    with built_dataset(args.votes, args.split, args.min_votes, vote_screening(args)) as folder:
        plan = dataset_plan(folder, args.repo, private=args.private, license=args.license)
        return _finish(plan, args)


def cmd_push_model(args: argparse.Namespace) -> str:
    from hub.push import model_plan

    plan = model_plan(
        args.folder,
        args.repo,
        private=args.private,
        adapter_only=args.adapter_only,
        base_model=args.base_model,
        dataset_id=args.dataset,
        license=args.license,
    )
    return _finish(plan, args)


def cmd_pull_dataset(args: argparse.Namespace) -> str:
    from hub.pull import pull_preference_dataset

    summary = pull_preference_dataset(args.repo, args.out, revision=args.revision)
    counts = ", ".join(f"{k} {v}" for k, v in summary["rows"].items())
    return f"wrote {args.out}: {counts} rows from {args.repo}"


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m hub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("push-dataset", help="publish the preference dataset with its card")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--votes",
        type=Path,
        metavar="PATH",
        help="the app's vote database (votes.db or its folder) or a labelled "
        "CSV; default: the tutorial's 1,140 pairs",
    )
    source.add_argument(
        "--data", type=Path, metavar="FOLDER", help="a folder built by `python -m pipeline dataset`"
    )
    p.add_argument("--min-votes", type=int, default=1, help="with --votes (default: 1)")
    add_vote_screening(p)
    add_split(p)
    p.add_argument("--license", default="mit", help="the card's licence (default: mit)")
    _add_push_options(p, "dataset")
    p.set_defaults(run=cmd_push_dataset)

    p = sub.add_parser("push-model", help="publish a tuned model with its card")
    p.add_argument("folder", type=Path, help="a training run's model folder (train --out)")
    p.add_argument(
        "--adapter-only",
        action="store_true",
        help="push the LoRA adapter (base_model set), not the merged model",
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="Hub id of the model the run started from (default: the run's)",
    )
    p.add_argument(
        "--dataset", default=None, help="Hub id of the dataset it was trained on, for the card"
    )
    p.add_argument("--license", default=None, help="the card's licence (default: none given)")
    _add_push_options(p, "model")
    p.set_defaults(run=cmd_push_model)

    p = sub.add_parser("pull-dataset", help="download a preference dataset for training")
    p.add_argument("repo", help="dataset id, e.g. shawhin/youtube-titles-dpo")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--revision", default=None, help="branch, tag or commit")
    p.set_defaults(run=cmd_pull_dataset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(make_parser(), argv)
