"""A real browser (Debian's chromium, driven by Playwright) votes in the app."""

import re
import sqlite3
import threading
import time

import httpx
from playwright.sync_api import expect

from app_process import start_app, stop_app
from pipeline.pairs import read_pairs_csv
from pipeline.records import SEED_PAIRS
from pipeline.votes import VoteStore
from screens import fill_kept, owner_page, screenshot


def test_vote_three_times_by_click_and_keyboard(browser, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "app.log"
    )
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        counter = page.get_by_text(re.compile(r"You have voted on"))
        counter.wait_for()
        assert "voted on 0 pairs" in counter.inner_text()

        def vote_with(action, expected):
            button = page.locator("#vote-left")
            button.wait_for()
            page.wait_for_function("!document.querySelector('#vote-left').disabled")
            first_title = page.get_by_label("Title A").input_value()
            action()
            page.get_by_text(re.compile(rf"voted on {expected} pairs? ")).wait_for()
            return first_title

        # Slow the first vote down: the buttons must be disabled while it is on its way, so a
        # second click or key press cannot vote twice. The server is slowed, not the browser:
        # another writer holds the vote database for a moment. (Holding the request in a
        # Playwright route handler blocks Playwright's own thread, and under load its click
        # then reached the page twice: a second request that no person could cause.)
        config = httpx.get(url + "config").json()
        events = {d["id"]: d.get("api_name") for d in config["dependencies"]}
        sent = []

        def watch(request):
            if "/gradio_api/run/" in request.url:  # unqueued events: votes, and a few others
                sent.append(events.get((request.post_data_json or {}).get("fn_index")))

        page.on("request", watch)
        writer = sqlite3.connect(data / "votes.db", isolation_level=None, check_same_thread=False)
        writer.execute("BEGIN IMMEDIATE")
        threading.Timer(2.0, writer.execute, ["COMMIT"]).start()

        def click_twice():
            page.locator("#vote-left").click()
            assert page.evaluate("document.querySelector('#vote-left').disabled")
            page.evaluate("document.querySelector('#vote-left').click()")  # ignored: disabled
            page.keyboard.press("a")  # ignored too

        vote_with(click_twice, 1)
        page.remove_listener("request", watch)
        writer.close()
        votes_sent = [name for name in sent if str(name).startswith("vote_")]
        assert votes_sent == ["vote_left"], sent  # one vote went out for three attempts
        assert len(VoteStore.open_existing(data).votes()) == 1
        vote_with(lambda: page.locator("#vote-both_bad").click(), 2)
        page.locator("body").click(position={"x": 5, "y": 5})  # focus off any text field
        vote_with(lambda: page.keyboard.press("b"), 3)

        screenshot(page, "vote-tab-owner.png")

        votes = VoteStore.open_existing(data).votes()
        assert len({v.voter for v in votes}) == 1 and votes[0].voter.startswith("v-")
        choices = [v.choice for v in votes]
        assert choices[1] == "both_bad" and choices[0] in ("a_better", "b_better")

        page.reload()  # the voter id survives a reload
        page.get_by_text("voted on 3 pairs").wait_for()
    finally:
        stop_app(process)


def test_a_refused_vote_says_why_and_keeps_the_pair_and_the_buttons(
    browser, tiny_model_dir, tmp_path
):
    """A voter over the votes-a-minute limit. The vote events are unqueued, and Gradio 6.31
    shows such an event's error nowhere: the page put an "Error" badge over the idea and both
    titles, said nothing, and left every button off."""
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log",
        env={"TITLE_DPO_OWNER_PASSWORD": "a password", "TITLE_DPO_VOTES_PER_MINUTE": "1"},
    )  # fmt: skip
    enabled = "!document.querySelector('#vote-left').disabled"
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        page.get_by_text("You are voting").wait_for()
        page.wait_for_function(enabled)
        page.locator("#vote-left").click()
        page.get_by_text(re.compile(r"voted on 1 pair ")).wait_for()
        page.wait_for_function(enabled)
        shown = [page.get_by_label(label).input_value() for label in ("Title A", "Title B")]
        page.locator("#vote-left").click()
        page.get_by_text("faster than anyone can read").wait_for()
        page.wait_for_function(enabled)  # the buttons are back, for a vote a minute later
        screenshot(page, "vote-refused.png")
        progress = page.locator("#vote-progress").inner_text()
        assert progress.startswith("Not saved. You are voting faster"), progress
        assert [page.get_by_label(label).input_value() for label in ("Title A", "Title B")] == shown
        assert page.get_by_text("Error", exact=True).count() == 0
    finally:
        stop_app(process)


def test_titles_are_shown_as_text_not_html(browser, tiny_model_dir, tmp_path):
    from pipeline.pairs import Pair

    data = tmp_path / "data"
    hostile = "<img src=x onerror=\"document.title='pwned'\">"
    VoteStore.in_folder(data).add_pairs([Pair("markup", "<b>Bold</b> title", hostile)], "t", "t")
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "app.log"
    )
    try:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text("You have voted on").wait_for()
        shown = {
            page.get_by_label("Title A").input_value(),
            page.get_by_label("Title B").input_value(),
        }
        assert shown == {"<b>Bold</b> title", hostile}
        assert page.title() != "pwned"
        assert page.locator("#vote-buttons").count() == 1
        assert page.locator("b", has_text="Bold").count() == 0
    finally:
        stop_app(process)


def test_the_last_pairs_vote_is_undone_by_its_key_and_cast_again(browser, tiny_model_dir, tmp_path):
    """Undo is on once the page has voted, not after a skip before that. With nothing left to
    judge the vote buttons are off, but Undo stays on: the slip may have been on the last pair."""
    from pipeline.pairs import Pair

    data = tmp_path / "data"
    pairs = [Pair("one idea", "First title", "Second title"), Pair("two", "Third", "Fourth")]
    VoteStore.in_folder(data).add_pairs(pairs, "t", "t")
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "app.log"
    )
    enabled = "(id) => !document.getElementById(id).disabled"
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        page.get_by_text("voted on 0 pairs").wait_for()
        page.wait_for_function(enabled, arg="vote-left")
        assert not page.evaluate(enabled, "vote-undo")  # nothing to undo yet
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("s")
        page.get_by_text("Skipped.").wait_for()
        page.wait_for_function(enabled, arg="vote-left")
        assert not page.evaluate(enabled, "vote-undo")  # a skip casts nothing to take back
        left = page.get_by_label("Title A").input_value()
        page.keyboard.press("a")
        page.get_by_text("Nothing left to judge").wait_for()
        page.wait_for_function(enabled, arg="vote-undo")
        assert not page.evaluate(enabled, "vote-left") and not page.evaluate(enabled, "vote-skip")
        page.keyboard.press("u")
        page.get_by_text("Vote undone").wait_for()
        assert "voted on 0 pairs" in page.locator("#vote-progress").inner_text()
        assert page.get_by_label("Title A").input_value() == left  # where it was
        page.wait_for_function(enabled, arg="vote-right")
        assert not page.evaluate(enabled, "vote-undo")  # one step back, not a history
        page.keyboard.press("b")
        page.get_by_text("Nothing left to judge").wait_for()
        [vote] = VoteStore.open_existing(data).votes()
        assert ("b_better" if left == vote.title_a else "a_better") == vote.choice
    finally:
        stop_app(process)


def test_a_vote_another_tab_cast_first_leaves_undo_off(browser, tiny_model_dir, tmp_path):
    """The same voter in two tabs on the same pair: the second vote is refused, and this
    page, which has cast nothing, still has nothing to undo."""
    from pipeline.pairs import Pair

    data = tmp_path / "data"
    VoteStore.in_folder(data).add_pairs([Pair("one idea", "First", "Second")], "t", "t")
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "app.log"
    )
    enabled = "(id) => !document.getElementById(id).disabled"
    try:
        tabs = browser.new_context(viewport={"width": 1200, "height": 900})
        this, other = tabs.new_page(), tabs.new_page()
        for page in (this, other):  # one after the other: the second finds the voter kept
            page.goto(url)
            page.locator("#vote-left").wait_for()
            page.wait_for_function(enabled, arg="vote-left")
        other.locator("#vote-left").click()
        other.get_by_text("Nothing left to judge").wait_for()
        this.locator("#vote-left").click()
        this.get_by_text("Already voted on that pair").wait_for()
        this.wait_for_function(enabled, arg="vote-left")
        assert not this.evaluate(enabled, "vote-undo")
        assert other.evaluate(enabled, "vote-undo")  # the tab that cast it may take it back
    finally:
        stop_app(process)


def test_a_button_names_its_key_only_where_there_is_a_keyboard(browser, tiny_model_dir, tmp_path):
    """ "A is better  [A]" on a phone named a key nobody can press there."""
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log",
    )  # fmt: skip
    hint = "getComputedStyle(document.querySelector('#vote-{}'), '::after').content"
    try:
        desktop = browser.new_page(viewport={"width": 1200, "height": 900})
        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        ).new_page()
        for page in (desktop, phone):
            page.goto(url)
            page.locator("#vote-left").wait_for()
        keys = {"left": "A", "right": "B", "tie": "T", "both_bad": "X", "skip": "S", "undo": "U"}
        for side, key in keys.items():
            assert desktop.evaluate(hint.format(side)) == f'"  [{key}]"', side
            assert phone.evaluate(hint.format(side)) == "none", side
        assert phone.locator("#vote-left").inner_text().strip() == "A is better"
        # the small Undo is still a finger's height on a touch screen
        height = "document.getElementById('vote-undo').getBoundingClientRect().height"
        assert phone.evaluate(height) >= 44 > desktop.evaluate(height)
    finally:
        stop_app(process)


# In a table's page: the table called `label`, and the words of `words` wider than the
# room in `cell` (in its own font), which the cell then breaks mid-word.
TABLE_AND_WIDE_WORDS_JS = """
  const table = [...document.querySelectorAll('.table-wrap')]
    .find((t) => t.getAttribute('aria-label') === label);
  const pen = document.createElement('canvas').getContext('2d');
  const wideWords = (cell, words) => {
    const wrap = cell.querySelector('.cell-wrap') || cell;
    const style = getComputedStyle(wrap);
    pen.font = style.font;
    const room = wrap.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return words.filter((word) => pen.measureText(word).width > room + 0.5);
  };"""
# Problems with how a table fits its box: a cell off to the right (the reader must scroll
# sideways to find it), or a column narrower than one of its words (which then breaks letter
# by letter: "S / c / o / r / e").
TABLE_FIT_JS = (
    "(label) => {"
    + TABLE_AND_WIDE_WORDS_JS
    + """
  const edge = table.getBoundingClientRect().right;
  const problems = [];
  for (const cell of table.querySelectorAll('th, td, .body-cell')) {  // headers, rows
    const box = cell.getBoundingClientRect();
    if (box.height === 0) continue;  // the hidden row that sizes the columns
    const text = cell.innerText.trim();
    if (box.right > edge + 1) problems.push(`"${text}" is off to the right`);
    // lines break at spaces (a zero-width one too) and dashes, not after a slash: Gradio's
    // cells break a word anywhere when it has to ("Rewards/cho / sen")
    for (const word of wideWords(cell, text.split(/[\\s\\u200b–-]+/))) {
      problems.push(`"${word}" is broken`);
    }
  }
  return problems;
}"""
)


def lasting_fit_problems(page, label: str, seconds: float = 3.0) -> list[str]:
    """TABLE_FIT_JS's problems with the table `label` that last: a table that has just had
    its rows measures its columns again, and a check in between saw one off to the right."""
    deadline = time.monotonic() + seconds
    while (found := page.evaluate(TABLE_FIT_JS, label)) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    return found


# The words of WORDS that would not fit, unbroken, in the column COLUMN of the table LABEL
# (measured in its first row's font and room).
WORDS_FIT_JS = (
    "([label, column, words]) => {"
    + TABLE_AND_WIDE_WORDS_JS
    + """
  const cells = [...table.querySelectorAll('.body-cell')]
    .filter((c) => c.getBoundingClientRect().height > 0);
  return wideWords(cells[column], words);
}"""
)


def words_of(texts) -> list[str]:
    """Each word of TEXTS once, split where a table's line may break (as TABLE_FIT_JS does)."""
    return sorted({w for text in texts for w in re.split(r"[\s\u200b–-]+", text) if w})


# The cells (headers and rows) of the table LABEL that are not in the page's own font: Gradio
# writes tables in its monospace one, which breaks long words sooner and looks out of place.
OTHER_FONT_CELLS_JS = """(label) => {
  const table = [...document.querySelectorAll('.table-wrap')]
    .find((t) => t.getAttribute('aria-label') === label);
  const font = getComputedStyle(document.querySelector('.gradio-container')).fontFamily;
  return [...table.querySelectorAll('th, .body-cell')]
    .filter((c) => c.getBoundingClientRect().height > 0)
    .filter((c) => getComputedStyle(c).fontFamily !== font)
    .map((c) => `"${c.innerText.trim()}" in ${getComputedStyle(c).fontFamily}`);
}"""

VISIBLE_TABLES_JS = """() => [...document.querySelectorAll('.table-wrap')]
  .filter((t) => t.offsetParent !== null).map((t) => t.getAttribute('aria-label'))"""


def test_a_voter_on_a_phone_reads_the_leaderboard_without_scrolling_sideways(
    browser, tiny_model_dir, tmp_path
):
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log", env={"TITLE_DPO_OWNER_PASSWORD": "phone owner password"},
    )  # fmt: skip
    try:
        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        ).new_page()
        phone.goto(url)
        phone.locator("#vote-left").wait_for()
        for n in (1, 2, 3):
            phone.wait_for_function("!document.querySelector('#vote-left').disabled")
            phone.locator("#vote-left").tap()
            phone.get_by_text(re.compile(rf"voted on {n} pairs? ")).wait_for()
        phone.get_by_role("tab", name="Leaderboard").tap()
        ideas = phone.get_by_role("grid", name="Votes per idea")
        expect(ideas.get_by_role("gridcell").first).not_to_have_text("")
        scores = phone.get_by_role("grid", name=re.compile("Bradley–Terry scores"))
        an_interval = scores.get_by_role("gridcell", name=re.compile(r"^\d+ ?– ?\d+$"))
        expect(an_interval.first).to_be_visible()
        for label in ["Votes per idea", "Bradley–Terry scores (1000 = the idea's average title)"]:
            assert lasting_fit_problems(phone, label) == [], label
        # Which ideas the three votes landed on is chance: every word of the tutorial's pool
        # must fit, whichever shows.
        pairs = read_pairs_csv(SEED_PAIRS)
        titles = words_of(t for p in pairs for t in (p.title_a, p.title_b))
        ideas_words = words_of(p.idea for p in pairs)
        assert phone.evaluate(WORDS_FIT_JS, ["Votes per idea", 0, ideas_words]) == []
        label = "Bradley–Terry scores (1000 = the idea's average title)"
        assert phone.evaluate(WORDS_FIT_JS, [label, 0, titles]) == []
    finally:
        stop_app(process)


def test_no_table_on_any_tab_hides_a_column_or_breaks_a_word_on_a_laptop(
    browser, tiny_model_dir, tmp_path
):
    """The narrowest laptop's width; empty tables show their headers, the widest words."""
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log",
    )  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1024, "height": 800})
        page.goto(url)
        page.locator("#vote-left").wait_for()
        checked, problems = [], {}
        for tab in ["Generate", "Leaderboard", "Train", "Evaluate", "Iterations", "Pools"]:
            page.get_by_role("tab", name=tab).click()
            page.locator(".table-wrap:visible").first.wait_for()
            if tab == "Pools":  # the one tab with rows here (the tutorial's pool): check them
                page.locator(".table-wrap:visible .body-cell").first.wait_for()
            for label in page.evaluate(VISIBLE_TABLES_JS):
                checked.append(label)
                found = lasting_fit_problems(page, label) + page.evaluate(
                    OTHER_FONT_CELLS_JS, label
                )
                if found:
                    problems[f"{tab}: {label}"] = found
        assert {"Per evaluation", "Iterations", "Did it get better?"} <= set(checked), checked
        assert problems == {}
    finally:
        stop_app(process)


def test_train_tab_shows_live_progress_until_done(browser, tiny_model_dir, tmp_path):
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log",
    )  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        # the owner's page gets the app's model as the base (a voter's config does not carry it)
        base = page.get_by_label("Base model (Hub id or folder)")
        expect(base).to_have_value(str(tiny_model_dir))
        page.get_by_label("Stop after steps (0: no limit)").fill("6")
        page.get_by_role("button", name="Start training").click()
        # Nothing but the tab's timer brings these updates to the page.
        page.get_by_text(re.compile(r"\*?\*?running|step \d+/6")).first.wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"Done: 6 steps")).wait_for(timeout=120_000)
        assert "training: 6 steps" in page.get_by_label("Log").input_value()
        # the log box shows its newest lines (Gradio's own autoscroll left it at the top)
        at = "t => [t.scrollTop + t.clientHeight, t.scrollHeight, t.clientHeight]"
        shown_to, height, window = page.locator("#train-log textarea").evaluate(at)
        assert height > window and shown_to >= height - 4
        screenshot(page, "train-tab.png")
        # a job on Hugging Face Jobs trains the recipe as the form above has it
        page.get_by_label("Epochs", exact=True).first.fill("2")
        page.get_by_text("Run on Hugging Face Jobs").first.click()
        fill_kept(page.get_by_label("Hub dataset id").nth(1), "alice/titles")
        page.get_by_label("Base model (Hub id or folder)").fill("alice/tiny-chat")  # a job's
        page.get_by_role("button", name="Show the job and its cost").click()
        page.get_by_text(re.compile(r"--recipe fast --epochs 2\.0")).wait_for(timeout=30_000)
        screenshot(page, "train-tab-jobs.png")
        # the RLHF half beside DPO: the Method choice swaps in its form and its Start
        page.get_by_role("radio", name=re.compile("Online RL against a reward model")).check()
        page.get_by_role("button", name="Start online RL").wait_for(timeout=10_000)
        page.get_by_label(re.compile("Reward model \\(a finished")).wait_for()
        assert not page.get_by_role("button", name="Start training", exact=True).is_visible()
        screenshot(page, "train-tab-rl.png")
    finally:
        stop_app(process)


def test_hub_tab_pushes_the_dataset_and_links_it(browser, hub, tiny_model_dir, tmp_path):
    from hub_server import hub_env

    env = {**hub_env(hub, "hf_alice_write", cache_dir=tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log", env=env,
    )  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        page.goto(url)
        page.get_by_role("tab", name="Hub").click()
        page.get_by_text("Votes are not mirrored to the Hub").wait_for()
        page.get_by_role("radio", name="The tutorial's 1,140 labelled pairs").last.check()
        page.get_by_label("Dataset repo (NAME or OWNER/NAME)").fill("browser-titles")
        page.get_by_role("button", name="Push the dataset").click()
        link = page.get_by_role("link", name="alice/browser-titles")
        link.wait_for(timeout=60_000)
        assert link.get_attribute("href").endswith("/datasets/alice/browser-titles")
        screenshot(page, "hub-tab.png")
    finally:
        stop_app(process)
    assert "README.md" in hub.repo_files("dataset", "alice/browser-titles")


def test_a_voter_sees_vote_and_leaderboard_the_owner_every_tab(browser, tiny_model_dir, tmp_path):
    password = "browser owner password"
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
        log_path=tmp_path / "app.log", env={"TITLE_DPO_OWNER_PASSWORD": password},
    )  # fmt: skip
    tab_names = ["Vote", "Generate", "Leaderboard", "Train", "Evaluate", "Hub"]

    def visible_tabs(page) -> list[str]:
        return [n for n in tab_names if page.get_by_role("tab", name=n).is_visible()]

    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        page.get_by_text("You are voting").wait_for()
        page.get_by_text("You have voted on").wait_for()
        assert visible_tabs(page) == ["Vote", "Leaderboard"]
        assert page.get_by_label("Title A").input_value()  # the first pair is on the screen
        screenshot(page, "vote-tab.png")  # the docs' picture: what anyone with the link sees
        page.get_by_role("tab", name="Leaderboard").click()
        page.get_by_text("Bradley–Terry scores").first.wait_for()
        assert not page.get_by_text("Voters (owner only)").is_visible()
        screenshot(page, "voter-view.png")

        page.get_by_text("Owner sign-in").click()
        box = page.get_by_label("Owner password")
        box.fill("not the password")
        page.get_by_role("button", name="Sign in as the owner").click()
        page.get_by_text("wrong owner password").first.wait_for()
        box.fill(password)
        page.get_by_role("button", name="Sign in as the owner").click()
        page.get_by_text("every tab is yours").wait_for()
        # the password is kept nowhere in the browser (Gradio's run history kept it, shown at
        # /gradio_api/runs to whoever uses this browser next)
        assert password not in page.evaluate("JSON.stringify(localStorage)")
        assert httpx.get(url + "gradio_api/runs").status_code == 404
        page.get_by_text(re.compile(r"^Model: ")).wait_for()  # the owner's Generate model
        page.get_by_role("tab", name="Hub").wait_for()
        assert visible_tabs(page) == tab_names
        assert not page.get_by_text("Owner sign-in").is_visible()  # the box is gone
        page.get_by_role("tab", name="Leaderboard").click()
        assert page.get_by_text("Voters (owner only)").is_visible()
        page.get_by_role("tab", name="Train").click()
        page.get_by_role("button", name="Start training").wait_for()
        screenshot(page, "owner-view.png")
        page.reload()  # the browser stays the owner's: no password again
        page.get_by_text("every tab is yours").wait_for()
        page.get_by_role("tab", name="Hub").wait_for()
        assert visible_tabs(page) == tab_names
        # Signing out leaves a voter's page, and a browser the next person cannot reuse.
        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("You are voting").wait_for()
        assert visible_tabs(page) == ["Vote", "Leaderboard"]
        assert page.get_by_text("Owner sign-in").is_visible()
        page.reload()  # the pass is gone: the page does not come back as the owner's
        page.get_by_text("You are voting").wait_for()
        assert visible_tabs(page) == ["Vote", "Leaderboard"]
        assert not page.get_by_role("button", name="Sign out").is_visible()
        other = browser.new_page()  # another browser profile's page is a voter's
        other.goto(url)
        other.get_by_text("You are voting").wait_for()
        assert visible_tabs(other) == ["Vote", "Leaderboard"]
    finally:
        stop_app(process)
    assert password not in (tmp_path / "app.log").read_text()


def test_the_owner_creates_a_round_a_voter_votes_on_it_and_the_owner_reads_it(
    browser, marked_models, tmp_path
):
    from conftest import MARKER
    from pipeline.pairs import Pair

    plain, marked = marked_models
    password = "round owner password"
    data = tmp_path / "data"
    warm_up = Pair("warm-up idea", f"A title with {MARKER}", "A title without")
    VoteStore.in_folder(data).add_pairs([warm_up], "warm-up", "imported")
    process, url = start_app(
        "--model", str(plain), "--data", str(data), log_path=tmp_path / "app.log",
        env={"TITLE_DPO_OWNER_PASSWORD": password},
    )  # fmt: skip
    try:
        owner = owner_page(browser, url, password)
        owner.get_by_role("tab", name="Evaluate").click()
        others = owner.get_by_label("Other models (Hub ids or folders, one per line)")
        # the app's model arrives just after the role (a person cannot type sooner)
        expect(others).to_have_value(str(plain))
        others.fill(f"{plain}\n{marked}")
        owner.get_by_role("radio", name="Typed below, one per line").check()
        owner.get_by_label("Ideas (one per line)").fill("Kalman filters\nContrastive learning")
        owner.get_by_label("Round name (empty: round-DATE-TIME)").fill("browser round")
        owner.get_by_role("button", name="Create the round").click()
        owner.get_by_text(re.compile(r"2 pairs")).wait_for(timeout=60_000)

        voter = browser.new_page(viewport={"width": 1200, "height": 900})  # another profile
        voter.goto(url)
        voter.get_by_text("You are voting").wait_for()
        for done in range(1, 4):  # the warm-up pair and the round's two, in any order
            voter.wait_for_function("!document.querySelector('#vote-left').disabled")
            left = voter.get_by_label("Title A").input_value()
            voter.keyboard.press("a" if MARKER in left else "b")
            voter.get_by_text(re.compile(rf"voted on {done} pairs? ")).wait_for()
        voter.get_by_text("Nothing left to judge").wait_for()
        assert str(marked) not in voter.content() and "browser round" not in voter.content()

        owner.get_by_role("button", name="Show the people's verdict").click()
        owner.get_by_text(re.compile(r"beats .* in 2 of 2 decisive votes")).wait_for()
        owner.locator("img[src^='data:image']").first.wait_for()  # the chart
        screenshot(owner, "evaluate-tab.png")
        # the tables of numbers fit the page (the tiny model's titles are 50-letter words)
        for label in ["Head to head", "Arena (Bradley–Terry)"]:
            assert lasting_fit_problems(owner, label) == [], label
    finally:
        stop_app(process)
    store = VoteStore.open_existing(data)
    assert sum(v.evaluation == "browser round" for v in store.votes()) == 2
