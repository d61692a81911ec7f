"""The app's entry: flags and settings, then `ui.shell` builds and serves it.

    python app.py [--model M] [--data DIR] [--share] [--no-tutorial-pool] [--hub-kernels]

Serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override, as on a Space).
Votes go to DIR/votes.db (default: TITLE_DPO_DATA, else ./app-data). A Space runs this file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from pipeline import hub_kernels
from pipeline.access import AccessSettings
from pipeline.errors import UserError
from pipeline.logs import log_to_stderr
from pipeline.models import DEFAULT_MODEL
from ui.shell import build_app, serve

__all__ = ["build_app", "main", "make_parser", "serve"]  # `from app import build_app` keeps working


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve the YouTube title DPO app.")
    parser.add_argument("--model", default=None, help=f"Hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--data", default=None, help="data folder for votes (default ./app-data)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--no-tutorial-pool",
        action="store_true",
        help="a fresh data folder starts without the tutorial's 1,140 pairs "
        "(as TITLE_DPO_TUTORIAL_POOL=0 does)",
    )
    parser.add_argument(
        "--hub-kernels",
        action="store_true",
        help=f"let transformers fetch and run its Hub kernels (as {hub_kernels.SETTING}=1 does)",
    )
    return parser


def main() -> None:
    args = make_parser().parse_args()
    log_to_stderr()  # the project's own lines, as the CLI shows them
    if args.hub_kernels:
        os.environ[hub_kernels.SETTING] = "1"
    try:
        access = AccessSettings.from_env(shared=args.share)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    # A Space (or `kill`) stops the app with SIGTERM: let it close like Ctrl-C, so the exit
    # hooks run (the last vote sync to the Hub).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tutorial_pool = False if args.no_tutorial_pool else None  # None: the environment decides
    serve(build_app(args.model, args.data, access, tutorial_pool), share=args.share)


if __name__ == "__main__":
    main()
