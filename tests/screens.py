"""What the browser tests share (the `browser` fixture is conftest's): the owner's page, and
screenshots, every one in runs/screenshots/ and the docs' pictures in docs/images/ when asked."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "runs" / "screenshots"
# The docs' picture of the Iterations tab: written again by `UPDATE_DOCS_IMAGES=1 pytest
# tests/test_iterations.py` (the README's two come from docs/pictures.py, on the real model).
DOCS_IMAGES = {"iterations-tab.png"}


def screenshot(page, name: str) -> None:
    """The whole page in runs/screenshots/NAME; with UPDATE_DOCS_IMAGES=1, the docs'
    pictures (what the window shows) in docs/images/ too."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    if name in DOCS_IMAGES and os.environ.get("UPDATE_DOCS_IMAGES") == "1":
        page.screenshot(path=str(ROOT / "docs" / "images" / name))


def fill_kept(field, text: str, settle_ms: int = 500, tries: int = 3) -> None:
    """Fill FIELD and check the value is still there SETTLE_MS later, filling again if the
    page set it back. Seen here: after a full-page screenshot, a textbox in an accordion
    opened a moment before got its value set back to empty about 0.1 s after Playwright's
    fill (the same input node, no server event in between): 3 of 6 runs of the Train tab's
    browser test. A person cannot type that soon after opening the accordion; Playwright can."""
    for _ in range(tries):
        field.fill(text)
        field.page.wait_for_timeout(settle_ms)
        if field.input_value() == text:
            return
    raise AssertionError(f"the page kept setting the field back: {field.input_value()!r}")


def owner_page(browser, url: str, password: str, width: int = 1200, height: int = 1400):
    """A new page on the app, signed in as the owner with the password."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.get_by_text("Owner sign-in").click()
    page.get_by_label("Owner password").fill(password)
    page.get_by_role("button", name="Sign in as the owner").click()
    page.get_by_text("every tab is yours").wait_for()
    return page


def what_pages_show(browser, folder: Path | None, chars: int = 1500) -> str:
    """For a failed browser test's report: each open page's address, its selected tabs and the
    start of its visible text, and (where FOLDER is given) a screenshot of it there, so that a
    failure seen once in CI can still be read."""
    lines = []
    pages = [page for context in browser.contexts for page in context.pages]
    for number, page in enumerate(pages):
        try:
            selected = page.locator("[role=tab][aria-selected=true]").all_inner_texts()
            lines += [f"page {number}: {page.url}", f"selected tabs: {selected}"]
            lines.append(page.inner_text("body", timeout=2_000)[:chars])
            if folder is not None:
                shot = folder / f"failed-page-{number}.png"
                page.screenshot(path=str(shot), full_page=True, timeout=5_000)
                lines.append(f"(screenshot: {shot})")
        except Exception as error:  # a page the test closed, or a browser that crashed
            lines.append(f"page {number}: not readable ({error.__class__.__name__})")
    return "\n".join(lines) or "no open page"
