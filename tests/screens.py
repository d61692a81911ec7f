"""Screenshots from the browser tests (the `browser` fixture is conftest's): every one in
runs/screenshots/, and the docs' pictures in docs/images/ when asked."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "runs" / "screenshots"
# The docs' pictures: written again by `UPDATE_DOCS_IMAGES=1 pytest tests/test_browser.py
# tests/test_iterations.py`.
DOCS_IMAGES = {"vote-tab.png", "train-tab.png", "iterations-tab.png"}


def screenshot(page, name: str) -> None:
    """The whole page in runs/screenshots/NAME; with UPDATE_DOCS_IMAGES=1, the docs'
    pictures (what the window shows) in docs/images/ too."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    if name in DOCS_IMAGES and os.environ.get("UPDATE_DOCS_IMAGES") == "1":
        page.screenshot(path=str(ROOT / "docs" / "images" / name))
