"""`python -m hub SUBCOMMAND`: publish to the Hub and pull from it.

    python -m hub push-dataset --repo NAME [--votes app-data] [--private] [--dry-run | --zip F]
    python -m hub push-model FOLDER --repo NAME [--votes app-data] [--adapter-only] [--dry-run]
    python -m hub pull-dataset ID --out FOLDER
    python -m hub train-on-jobs --data ID --push-to REPO [--method M] [--flavor F] [--dry-run]
                                [--set KNOB=VALUE ...] [--namespace ORG]
    python -m hub jobs status|logs|cancel JOB (ID, or ORG/ID);  python -m hub jobs list|flavors

The token comes from HF_TOKEN or a saved `hf auth login`, never from the command line (where
shell history would keep it). A bare repo NAME goes to the token owner's namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from pipeline.cli import Parser, add_split, add_vote_screening, run, vote_screening
from pipeline.errors import UserError


def _add_push_options(p: argparse.ArgumentParser, what: str, instead=None) -> None:
    """The options every push takes; `instead`, a mutually exclusive group of other ways to
    send nothing (push-dataset's --zip), also takes --dry-run."""
    p.add_argument("--repo", required=True, help=f"{what} repo id: NAME or NAMESPACE/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    (instead or p).add_argument(
        "--dry-run", action="store_true", help="show what would be pushed; send nothing"
    )
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

    def finish(folder: Path) -> str:
        plan = dataset_plan(folder, args.repo, private=args.private, license=args.license)
        if args.zip:
            return f"wrote {plan.write_zip(args.zip)}: what the push would send, sent nowhere"
        return _finish(plan, args)

    if args.data:
        return finish(args.data)
    with built_dataset(args.votes, args.split, args.min_votes, vote_screening(args)) as folder:
        return finish(folder)


def cmd_push_model(args: argparse.Namespace) -> str:
    from hub.push import model_plan
    from pipeline.votes import VoteStore

    with model_plan(
        args.folder,
        args.repo,
        private=args.private,
        adapter_only=args.adapter_only,
        base_model=args.base_model,
        dataset_id=args.dataset,
        license=args.license,
        store=VoteStore.open_existing(args.votes) if args.votes else None,
    ) as plan:
        return _finish(plan, args)


def cmd_pull_dataset(args: argparse.Namespace) -> str:
    from hub.pull import pull_preference_dataset

    summary = pull_preference_dataset(args.repo, args.out, revision=args.revision)
    counts = ", ".join(f"{k} {v}" for k, v in summary["rows"].items())
    return f"wrote {args.out}: {counts} rows from {args.repo}"


def _job_request(args: argparse.Namespace):
    from hub.jobs import JobRequest
    from pipeline.recipes import parse_changes

    return JobRequest(
        data=args.data,
        push_to=args.push_to,
        method=args.method,
        recipe=args.recipe,
        changes=tuple(parse_changes(args.set, "--set").items()),
        model=args.model,
        flavor=args.flavor,
        timeout=args.timeout,
        reward=args.reward,
        max_steps=args.max_steps,
        private=args.private,
        image=args.image,
        namespace=args.namespace,
        push_sft_to=args.push_sft_to,
    )


def cmd_train_on_jobs(args: argparse.Namespace) -> str:
    from hub.jobs import dry_run, submit

    request = _job_request(args)
    if args.dry_run:
        return dry_run(request)
    submitted = submit(request)
    if args.follow:
        print(submitted.describe(), file=sys.__stdout__, flush=True)
        return _follow(submitted.ref)
    return json.dumps(asdict(submitted)) if args.json else submitted.describe()


def _follow(job_id: str) -> str:
    """Print the job's log as it comes; its end in one line (an error when it failed)."""
    from hub.jobs import job_logs, job_state

    last = None
    for line in job_logs(job_id, follow=True):
        print(line, file=sys.__stdout__, flush=True)
        last = line if line.strip() else last
    state = job_state(job_id)
    if state.stage != "COMPLETED":
        raise UserError(state.describe(last))
    return state.describe()


def cmd_jobs_status(args: argparse.Namespace) -> str:
    from hub.jobs import job_state, watch

    if args.json:
        return json.dumps(asdict(job_state(args.job)))
    return watch(args.job, lines=20).describe()  # an ended job's line names its last log line


def cmd_jobs_list(args: argparse.Namespace) -> str:
    from hub.jobs import list_jobs

    found = list_jobs(namespace=args.namespace)
    if args.json:
        return json.dumps([asdict(state) for state in found])
    return "\n".join(state.describe() for state in found) or "no jobs of this project here yet"


def cmd_jobs_logs(args: argparse.Namespace) -> str:
    from hub.jobs import job_logs

    if args.follow:
        return _follow(args.job)
    return "\n".join(job_logs(args.job, tail=args.tail))


def cmd_jobs_cancel(args: argparse.Namespace) -> str:
    from hub.jobs import cancel

    return cancel(args.job).describe()


def cmd_jobs_flavors(args: argparse.Namespace) -> str:
    from hub.jobs import flavors, prices_read

    rows = [
        f"{f.name:16} {f.gpus} GPU  ${f.usd_per_hour:6.2f}/h  {f.label}" for f in flavors().values()
    ]
    return "\n".join(
        [*rows, f"(prices as listed on {prices_read()}: huggingface.co/docs/hub/jobs-pricing)"]
    )


def add_train_on_jobs(sub) -> None:
    from hub.jobs import DEFAULT_FLAVOR, DEFAULT_IMAGE, DEFAULT_TIMEOUT
    from pipeline.methods import METHODS
    from pipeline.models import DEFAULT_MODEL

    p = sub.add_parser(
        "train-on-jobs", help="train on Hugging Face Jobs and push the model (see README)"
    )
    p.add_argument("--data", required=True, help="Hub dataset id (prompt / chosen / rejected)")
    p.add_argument("--push-to", required=True, metavar="REPO", help="model repo for the result")
    p.add_argument("--push-sft-to", metavar="REPO", help="model repo for its SFT stage, too")
    p.add_argument("--method", choices=list(METHODS), default="dpo", help="(default: dpo)")
    p.add_argument(
        "--recipe", default=None, help="a shipped recipe of the method (default: its default)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="change one of the recipe's knobs, as `pipeline train --KNOB VALUE` does (e.g. "
        "--set epochs=2 --set lora_r=none); repeatable",
    )
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"Hub id of the model (default: {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--reward", default=None, metavar="REPO", help="--method rl: the reward model's Hub id"
    )
    p.add_argument(
        "--flavor",
        default=DEFAULT_FLAVOR,
        help=f"Jobs hardware (default: {DEFAULT_FLAVOR}; `jobs flavors` lists them)",
    )
    p.add_argument(
        "--timeout", default=DEFAULT_TIMEOUT, help=f"e.g. 90m, 2h (default: {DEFAULT_TIMEOUT})"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--private", action="store_true", help="create the model repo private")
    p.add_argument(
        "--namespace",
        default=None,
        metavar="ORG",
        help="run the job in (and bill it to) an organisation you belong to; its code repo and "
        "a bare --push-to name go there too (default: your own namespace)",
    )
    p.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"Docker image with torch (default: {DEFAULT_IMAGE})"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the job and its cost; submit nothing"
    )
    p.add_argument("--follow", action="store_true", help="print its log until it ends")
    p.add_argument("--json", action="store_true", help="print the submitted job as JSON")
    p.set_defaults(run=cmd_train_on_jobs)


def add_jobs(sub) -> None:
    jobs = sub.add_parser("jobs", help="follow or stop a job: list, status, logs, cancel; flavors")
    steps = jobs.add_subparsers(dest="step", required=True, parser_class=Parser)
    p = steps.add_parser("list", help="this project's jobs, newest first")
    p.add_argument("--namespace", default=None, metavar="ORG", help="an organisation's jobs")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(run=cmd_jobs_list)
    p = steps.add_parser("status", help="where the job is; how it ended")
    p.add_argument("job", help="the job id (ORG/ID for an organisation's job)")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.set_defaults(run=cmd_jobs_status)
    p = steps.add_parser("logs", help="the job's log")
    p.add_argument("job", help="the job id (ORG/ID for an organisation's job)")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("--follow", action="store_true", help="go on until the job ends")
    p.set_defaults(run=cmd_jobs_logs)
    p = steps.add_parser("cancel", help="stop the job (nothing is pushed)")
    p.add_argument("job", help="the job id (ORG/ID for an organisation's job)")
    p.set_defaults(run=cmd_jobs_cancel)
    p = steps.add_parser("flavors", help="the hardware a job can run on, with prices")
    p.set_defaults(run=cmd_jobs_flavors)


def add_push_dataset(sub) -> None:
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
    send_nothing = p.add_mutually_exclusive_group()
    _add_push_options(p, "dataset", instead=send_nothing)
    send_nothing.add_argument(
        "--zip",
        type=Path,
        metavar="FILE",
        help="write what the push would send (data/*.parquet, README.md) into FILE instead",
    )
    p.set_defaults(run=cmd_push_dataset)


def add_push_model(sub) -> None:
    p = sub.add_parser("push-model", help="publish a tuned model with its card")
    p.add_argument(
        "folder",
        type=Path,
        help="a training run's model folder (train --out), or its SFT stage (OUT/sft): a "
        "model of its own, which blind votes may find as good",
    )
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
    p.add_argument(
        "--votes",
        type=Path,
        metavar="PATH",
        help="the app's vote database (votes.db or its folder): the card then says what "
        "people's blind votes in its evaluation rounds said of the model",
    )
    _add_push_options(p, "model")
    p.set_defaults(run=cmd_push_model)


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m hub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_push_dataset(sub)
    add_push_model(sub)
    p = sub.add_parser("pull-dataset", help="download a preference dataset for training")
    p.add_argument("repo", help="dataset id, e.g. shawhin/youtube-titles-dpo")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--revision", default=None, help="branch, tag or commit")
    p.set_defaults(run=cmd_pull_dataset)
    add_train_on_jobs(sub)
    add_jobs(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(make_parser(), argv)
