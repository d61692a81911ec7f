"""The Vote tab: a voter sees two titles for one idea, blind, and picks (and may take the last
pick back); the server keeps which pair it showed and where, and which vote the page cast last,
and the vote is the fastest path in the app."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import gradio as gr

from pipeline.access import VOTER, Caller, Refused
from pipeline.ballot import Shown, undo_vote, vote_on_shown_pair
from pipeline.errors import UserError
from pipeline.votes import PairView
from pipeline.wording import counted
from ui.context import Context, TabParts, Wiring
from ui.guard import Said

TITLE = "Vote"
SHOWN_TO = "anyone"

# Buttons and what they send; their keys are bound, and shown, in KEYBOARD_HEAD.
VOTE_BUTTONS = [
    ("left", "A is better"),
    ("right", "B is better"),
    ("tie", "Tie"),
    ("both_bad", "Both bad"),
]
KEYS = {"left": "A", "right": "B", "tie": "T", "both_bad": "X", "skip": "S", "undo": "U"}
# A button names its key only where there is a keyboard to press it on: a phone (no hover, a
# coarse pointer) shows the bare words.
KEY_HINTS_CSS = "\n".join(
    f'  #vote-{side}::after {{ content: "  [{key}]"; white-space: pre; }}'
    for side, key in KEYS.items()
)
# Undo is small beside the choices, but a finger still needs room to hit it.
TOUCH_CSS = "@media (pointer: coarse) {\n  #vote-undo { min-height: 44px; }\n}"
KEYBOARD_HEAD = (
    "<style>\n@media (hover: hover) and (pointer: fine) {\n"
    + KEY_HINTS_CSS
    + "\n}\n"
    + TOUCH_CSS
    + "\n</style>"
    + """
<script>
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = target && ["INPUT", "TEXTAREA"].includes(target.tagName) && !target.readOnly;
  if (typing) return;
  const ids = {a: "vote-left", b: "vote-right", t: "vote-tie", x: "vote-both_bad", s: "vote-skip",
               u: "vote-undo"};
  const id = ids[event.key.toLowerCase()];
  const button = id && document.getElementById(id);
  if (button && !button.disabled) { event.preventDefault(); button.click(); }
});
</script>
"""
)
# Every button off while an event is on its way; Undo's state is kept for a skip to restore.
LOCK_BUTTONS_JS = """(...args) => {
  document.querySelectorAll("#vote-buttons button").forEach((b) => {
    if (b.id === "vote-undo") b.dataset.wasOn = String(!b.disabled);
    b.disabled = true;
  });
  return args;
}"""
UndoAfter = Literal["on if saved", "off if undone", "as it was"]
# The progress line's words the buttons' script reads: after a vote that was recorded, after
# one undone, and once the voter has no pair left.
VOTE_SAVED, VOTE_UNDONE, NOTHING_LEFT = "Vote saved.", "Vote undone:", "Nothing left to judge"


def unlock_buttons_js(undo: UndoAfter) -> str:
    """The buttons on again once an event is back, and Undo as `undo` says: on after a vote
    that was saved (one refused, or already cast by another tab, leaves it as it was), off
    after an undo (one step back; an undo refused leaves it), as it was after a skip (a skip
    casts nothing: before the page's first vote there is still nothing to take back). With
    nothing left to judge only Undo may be on: the last pair's vote may have been a slip."""
    was_on = 'b.dataset.wasOn === "true"'
    undo_on = {
        "on if saved": f"saved || {was_on}",
        "off if undone": f"!undone && {was_on}",
        "as it was": was_on,
    }[undo]
    return (
        """() => {
  const progress = document.getElementById("vote-progress");
  const over = progress && progress.innerText.includes("NOTHING_LEFT");
  const saved = progress && progress.innerText.startsWith("VOTE_SAVED");
  const undone = progress && progress.innerText.startsWith("VOTE_UNDONE");
  document.querySelectorAll("#vote-buttons button").forEach((b) => {
    b.disabled = b.id === "vote-undo" ? !(UNDO_ON) : over;
  });
}""".replace("UNDO_ON", undo_on)
        .replace("VOTE_SAVED", VOTE_SAVED)
        .replace("VOTE_UNDONE", VOTE_UNDONE)
        .replace("NOTHING_LEFT", NOTHING_LEFT)
    )


def shown_pair_id(value: object) -> int:
    """The pair id a voter's page says it shows, as sent (the vote events take raw values):
    a whole number, or -1 for none."""
    if value is None:
        return -1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"a pair id is a whole number, not {str(value)[:40]!r}")
    return value


@dataclass(frozen=True)
class Screen:
    """The tab's components."""

    voter: gr.BrowserState  # the voter token the server signed, kept by the browser
    idea: gr.Textbox
    left: gr.Textbox
    right: gr.Textbox
    pair_id: gr.Number
    buttons: dict[str, gr.Button]
    skip: gr.Button
    undo: gr.Button
    progress: gr.Markdown
    # {"pair_id", "shown_left", "shown_at", "skipped", "last_vote"}: server side only
    shown: gr.State

    @property
    def outputs(self) -> list:
        """What every vote, skip and page start sets."""
        return [self.idea, self.left, self.right, self.pair_id, self.progress, self.shown]

    @property
    def all_buttons(self) -> list[gr.Button]:
        return [*self.buttons.values(), self.skip, self.undo]


def layout() -> Screen:
    voter = gr.BrowserState(None, storage_key="title-dpo-voter")
    # Blind: no title says where it came from, before the vote or after it (an evaluation
    # round's later pairs would be judged by what a voter learnt of each model's style).
    gr.Markdown(
        "Which title would make you click? Judge the words alone: neither title says who or "
        "what wrote it, before your vote or after."
    )
    idea = gr.Textbox(label="Video idea", interactive=False)
    with gr.Row(equal_height=True):
        left = gr.Textbox(label="Title A", interactive=False, lines=2)
        right = gr.Textbox(label="Title B", interactive=False, lines=2)
    pair_id = gr.Number(visible=False, precision=0)
    with gr.Column(elem_id="vote-buttons"):  # every button here is locked while a vote goes
        with gr.Row():
            buttons = {
                side: gr.Button(label, elem_id=f"vote-{side}", interactive=False)
                for side, label in VOTE_BUTTONS
            }
            skip = gr.Button("Skip", elem_id="vote-skip", variant="secondary", interactive=False)
        with gr.Row():  # small: a way back from a slip, not a choice beside the others
            undo = gr.Button("Undo my last vote", elem_id="vote-undo", variant="secondary",
                             size="sm", scale=0, min_width=200, interactive=False)  # fmt: skip
    progress = gr.Markdown(elem_id="vote-progress")
    shown = gr.State(None)
    return Screen(voter, idea, left, right, pair_id, buttons, skip, undo, progress, shown)


class Ballot:
    """The tab's handlers: each turns what a page sent into a call into the library, and
    answers with the next pair to show."""

    def __init__(self, ctx: Context, screen: Screen) -> None:
        self.store, self.keeper, self.screen = ctx.store, ctx.keeper, screen

    def blank(self, message: str) -> dict:
        s = self.screen
        return {s.idea: "", s.left: "", s.right: "", s.pair_id: None, s.shown: None,
                s.progress: message}  # fmt: skip

    def show_next(
        self, voter_id: str, skipped: list[int], message: str = "", last_vote: str | None = None
    ) -> dict:
        """The voter's next pair; `last_vote`: the vote this page may still undo."""
        view = self.store.next_pair(voter_id, skip=skipped)
        return self.show(voter_id, view, skipped, message, last_vote)

    def show(
        self,
        voter_id: str,
        view: PairView | None,
        skipped: list[int],
        message: str,
        last_vote: str | None,
    ) -> dict:
        s = self.screen
        done, remaining = self.store.voter_progress(voter_id)
        counter = (
            f"You have voted on {counted(done, 'pair', bold=True)} · "
            f"**{remaining - len(skipped)}** left for you"
        )
        if view is None:
            over = self.blank(f"{message} {counter}. {NOTHING_LEFT}: thank you!".strip())
            undoable = {"pair_id": None, "skipped": skipped, "last_vote": last_vote}
            return {**over, s.shown: undoable if last_vote else None}
        state = {
            "pair_id": view.pair_id,
            "shown_left": view.shown_left,
            "shown_at": time.time(),
            "skipped": skipped,
            "last_vote": last_vote,
        }
        return {
            s.idea: view.idea,
            s.left: view.left,
            s.right: view.right,
            s.pair_id: view.pair_id,
            s.shown: state,
            s.progress: f"{message} {counter}".strip(),
        }

    def start(self, token: str | None, *, caller: Caller) -> dict:
        """A page opens: its voter (kept, or a new id) and their first pair. Buttons are
        enabled once a pair arrives and stay off when there is none."""
        s = self.screen
        try:
            token, voter_id = self.keeper.voter_for_page(caller, token)
        except Refused as exc:  # not signed in where that is required, or too many new ids
            return {s.voter: token, **self.blank(str(exc)),
                    **{b: gr.update(interactive=False) for b in s.all_buttons}}  # fmt: skip
        screen_now = self.show_next(voter_id, [])
        enabled = screen_now[s.shown] is not None  # Undo waits for this page's first vote
        return {s.voter: token, **screen_now,
                **{b: gr.update(interactive=enabled and b is not s.undo)
                   for b in s.all_buttons}}  # fmt: skip

    def vote_for(self, side: str) -> Callable:
        keeper, store, progress = self.keeper, self.store, self.screen.progress

        def vote(token: str, seen_pair: float | None, state: dict | None, *, caller: Caller):
            voter = keeper.voter_of(caller, token)
            keeper.admit_vote(caller, voter.id)
            on_screen = state and state.get("pair_id") is not None
            current = (
                Shown(state["pair_id"], state["shown_left"], state["shown_at"])
                if on_screen
                else None
            )
            seen = shown_pair_id(seen_pair)
            result = vote_on_shown_pair(
                store, voter.id, seen, side, current, time.time(), burst=voter.burst
            )
            if not result.recorded:
                return {progress: "Already voted on that pair: your first vote stands."}
            skipped = (state or {}).get("skipped", [])
            return self.show_next(voter.id, skipped, VOTE_SAVED, last_vote=result.vote_id)

        return vote

    def skip_pair(self, token: str, state: dict | None, *, caller: Caller) -> dict:
        voter_id = self.keeper.voter_of(caller, token).id
        skipped = list((state or {}).get("skipped", []))
        if state and state.get("pair_id") is not None:
            skipped.append(state["pair_id"])
        return self.show_next(voter_id, skipped, "Skipped.", (state or {}).get("last_vote"))

    def undo(self, token: str, state: dict | None, *, caller: Caller) -> dict:
        """Take back the vote this page cast last and show its pair again, sides as before."""
        voter_id = self.keeper.voter_of(caller, token).id
        state = state or {}
        retracted = undo_vote(self.store, voter_id, state.get("last_vote"), time.time())
        view = self.store.pair_view(retracted.pair_id, retracted.shown_left)
        skipped = state.get("skipped", [])  # the undone pair was voted on: never skipped here
        return self.show(voter_id, view, skipped, f"{VOTE_UNDONE} vote on this pair again.", None)


def build(ctx: Context) -> TabParts:
    screen, guard = layout(), ctx.guard
    ballot = Ballot(ctx, screen)
    # Unqueued: a vote is a few milliseconds of SQLite, and the queue's bookkeeping costs more.
    # Raw: Gradio's conversion of each input and output takes a trip through its thread pool;
    # the handlers read the values as the page sends them (checked there) and return them as
    # the page shows them (plain text, a whole number). bench/votes.py: about a third more
    # votes per second. A click disables the buttons in the browser at once, and the end of
    # the vote enables them again: no extra round trip, no button updates on the hot path.
    hot_path = {"queue": False, "preprocess": False, "postprocess": False}

    def on_click(button: gr.Button, handler: Callable, inputs: list, api_name: str,
                 undo_after: UndoAfter, not_done: str) -> None:  # fmt: skip
        # unqueued, a refusal (too fast, a full disk) is said in the progress line, the pair
        # left on screen; and a failure still gives the buttons back (Gradio 6.31 runs `then`
        # only after a success)
        said = Said(screen.progress, f"**{not_done}**")
        event = button.click(guard(VOTER, handler, says_in=said), inputs, screen.outputs,
                             api_name=api_name, js=LOCK_BUTTONS_JS, **hot_path)  # fmt: skip
        event.then(None, js=unlock_buttons_js(undo=undo_after))
        event.failure(None, js=unlock_buttons_js(undo="as it was"))

    for side, button in screen.buttons.items():
        on_click(button, ballot.vote_for(side), [screen.voter, screen.pair_id, screen.shown],
                 f"vote_{side}", "on if saved", "Not saved.")  # fmt: skip
    on_click(screen.skip, ballot.skip_pair, [screen.voter, screen.shown], "skip", "as it was",
             "Not skipped.")  # fmt: skip
    on_click(screen.undo, ballot.undo, [screen.voter, screen.shown], "undo_vote", "off if undone",
             "Not undone.")  # fmt: skip
    outputs = [screen.voter, *screen.outputs, *screen.all_buttons]
    start = Wiring(guard(VOTER, ballot.start), outputs, inputs=[screen.voter], api_name="start")
    return TabParts(on_load=start)
