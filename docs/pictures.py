"""The README's pictures of the app, taken in a real browser on the real offline model.

    .venv/bin/python docs/pictures.py [--steps N] [--only vote|train]

Starts the app as a user would (`--model smollm2-offline`, a fresh data folder, an owner
password so that this machine's browser is a voter until it signs in), then writes
docs/images/vote-tab.png (what anyone with the link sees) and docs/images/train-tab.png (the
owner's Train tab after a default DPO run on the tutorial's pairs, or one of N steps: its
charts, log and held-out figure). Needs `make setup-test` (Playwright, Debian's chromium).
The default run takes 15 to 18 minutes on a 2-core CPU (16 m 30 s, 14 m 26 s and 17 m 31 s
measured, `time`);
`--only vote` retakes the Vote tab alone, in seconds.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from app_process import start_app, stop_app  # noqa: E402  (bench/ is not a package)

IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pictures-owner-password"
WIDTH = 1200


def vote_tab(browser, url: str) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(url)
    page.get_by_text("You have voted on").wait_for()
    page.screenshot(path=str(IMAGES / "vote-tab.png"))
    page.close()


def train_tab(browser, url: str, steps: int) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(url)
    page.get_by_text("Owner sign-in").click()
    page.get_by_label("Owner password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in as the owner").click()
    page.get_by_text("every tab is yours").wait_for()
    page.get_by_role("tab", name="Train").click()
    # the base model arrives once the role is known: wait for it, as a person would
    expect(page.get_by_label("Base model (Hub id or folder)")).not_to_have_value("")
    page.get_by_label("Stop after steps (0: no limit)").fill(str(steps))
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Done: \d+ steps? ")).wait_for(timeout=60 * 60_000)
    page.wait_for_timeout(3000)  # the charts' last refresh
    # down to the log, above the accordions; in page coordinates (the page has scrolled)
    bottom = page.locator("#train-log").evaluate(
        "e => e.getBoundingClientRect().bottom + window.scrollY + 16"
    )
    page.screenshot(
        path=str(IMAGES / "train-tab.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": WIDTH, "height": bottom},
    )
    print(page.get_by_text(re.compile(r"held-out pairs")).first.inner_text())
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=0, help="stop the run after N steps (default 0: no limit)"
    )
    parser.add_argument("--only", choices=["vote", "train"], help="take this picture alone")
    args = parser.parse_args()
    wanted = [args.only] if args.only else ["vote", "train"]
    with tempfile.TemporaryDirectory(prefix="title-dpo-pictures-") as tmp:
        process, url = start_app(
            "--model", "smollm2-offline", "--data", str(Path(tmp) / "data"),
            log_path=Path(tmp) / "app.log", env={"TITLE_DPO_OWNER_PASSWORD": PASSWORD},
        )  # fmt: skip
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                if "vote" in wanted:
                    vote_tab(browser, url)
                if "train" in wanted:
                    train_tab(browser, url, args.steps)
                browser.close()
        finally:
            stop_app(process)
    print("wrote", " and ".join(str(IMAGES / f"{name}-tab.png") for name in wanted))


if __name__ == "__main__":
    main()
