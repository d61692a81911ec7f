"""The Gradio app. This file builds the Blocks and wires events; the work is in `pipeline/`.

    python app.py [--model M] [--data DIR] [--share]

Serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override, as on a Space).
Votes go to DIR/votes.db (default: TITLE_DPO_DATA, else ./app-data).

Every event handler is wired through `Guard` with the role it demands (`pipeline.access`):
the server checks it on each call, whatever the page shows, and `build_app` refuses to build
an app with an event that states no role.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from hub.pull import write_training_data
from hub.push import publish_dataset, publish_model
from hub.sync import VoteMirror, mirror_from_env
from pipeline import hub_kernels
from pipeline.access import OWNER, VOTER, AccessSettings, Caller, Gatekeeper, Refused, RequestFacts
from pipeline.appdata import data_dir, runs_dir
from pipeline.ballot import Shown, vote_on_shown_pair
from pipeline.errors import UserError
from pipeline.generation import MAX_TITLES_PER_IDEA, GenerationSettings
from pipeline.jobs import TrainingRunner, finished_runs, run_label, run_metrics
from pipeline.judges import judge_round
from pipeline.logs import log_to_stderr
from pipeline.metrics import (
    CHARTS,
    EPOCH_COLUMNS,
    chart_rows,
    compare_rows,
    epoch_table,
    numeric_keys,
)
from pipeline.models import DEFAULT_MODEL, ModelChoice
from pipeline.prompts import MAX_IDEA_CHARS
from pipeline.ratings import (
    Screening,
    agreement,
    leaderboard,
    voter_count,
    voter_stats,
    votes_per_idea,
)
from pipeline.recipes import (
    DEFAULT_RECIPE,
    SHIPPED,
    DPORecipe,
    RewardRecipe,
    RLRecipe,
    form_values,
    get_recipe,
    knobs,
    recipe_from_form,
)
from pipeline.reward import check_reward_model
from pipeline.rl import SAMPLE_COLUMNS, read_samples, sample_rows
from pipeline.rounds import (
    MAX_K,
    create_round,
    fresh_ideas,
    ideas_from_file,
    ideas_from_text,
    plan_round,
)
from pipeline.tracking import tracking_dir, use_tracking_dir
from pipeline.votes import VoteStore
from pipeline.winrates import ARENA_COLUMNS, COMPARISON_COLUMNS, DETAIL_COLUMNS, round_report
from pipeline.winrates import chart as round_chart
from pipeline.zerogpu import (
    ON_ZEROGPU,
    JudgeOnGpu,
    best_of_n_on_gpu,
    generate_on_gpu,
    generate_round_on_gpu,
)

log = logging.getLogger("pipeline.app")

EXAMPLE_IDEAS = [
    "intro independent component analysis",
    "how I track my habits with a spreadsheet",
    "why transformers replaced RNNs",
]

# Buttons, their keys, and what they send. The keys are bound in KEYBOARD_JS.
VOTE_BUTTONS = [
    ("left", "A is better  [A]"),
    ("right", "B is better  [B]"),
    ("tie", "Tie  [T]"),
    ("both_bad", "Both bad  [X]"),
]
KEYBOARD_JS = """
<script>
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = target && ["INPUT", "TEXTAREA"].includes(target.tagName) && !target.readOnly;
  if (typing) return;
  const ids = {a: "vote-left", b: "vote-right", t: "vote-tie", x: "vote-both_bad", s: "vote-skip"};
  const id = ids[event.key.toLowerCase()];
  const button = id && document.getElementById(id);
  if (button && !button.disabled) { event.preventDefault(); button.click(); }
});
</script>
"""
LOCK_BUTTONS_JS = """(...args) => {
  document.querySelectorAll("#vote-buttons button").forEach((b) => (b.disabled = true));
  return args;
}"""
UNLOCK_BUTTONS_JS = """() => {
  const progress = document.getElementById("vote-progress");
  if (progress && progress.innerText.includes("Nothing left")) return;
  document.querySelectorAll("#vote-buttons button").forEach((b) => (b.disabled = false));
}"""


def build_app(
    model_name: str | None = None, data: str | None = None, access: AccessSettings | None = None
) -> gr.Blocks:
    """The app. `access` says who is the owner and how voters are held (default: from the
    environment, as `AccessSettings.from_env` reads it)."""
    model_name = model_name or os.environ.get("TITLE_DPO_MODEL") or DEFAULT_MODEL
    folder = Path(data or data_dir())
    use_tracking_dir(folder)  # every training run's trackio database: DATA/trackio
    store = VoteStore.in_folder(folder)
    settings = access or AccessSettings.from_env()
    keeper = Gatekeeper.for_folder(settings, folder)
    guard = Guard(keeper)
    log.info("%s", settings.describe())
    hub_kernels.use_hub_kernels()  # decided and logged once, before any model loads
    if settings.on_space and not os.environ.get("TITLE_DPO_SECRET"):
        log.warning("TITLE_DPO_SECRET is not set: voter ids will not survive a Space restart")
    # The model the Generate tab uses; the Train tab's "use this model" changes it app-wide.
    generator = ModelChoice(model_name)
    runner = TrainingRunner()
    if added := store.seed_if_empty():
        log.info("Empty vote store: loaded the tutorial's %d pairs as the first pool", added)
    # On a Space the disk is wiped on restart: the votes come back from their Hub mirror.
    try:
        mirror = mirror_from_env(store, folder)
    except UserError as exc:  # misconfigured: serve anyway, and say so on the Hub tab
        log.error("Votes are NOT mirrored to the Hub: %s", exc)
        mirror = f"Votes are **not** mirrored to the Hub: {exc}"

    with RoleFirstBlocks(guard, title="YouTube title DPO") as app:
        gr.Markdown("# YouTube titles, tuned on human preferences")
        with gr.Row():
            role_line = gr.Markdown(elem_id="role-line")
            if settings.on_space:  # Gradio's sign-in needs a Space; locally the owner is here
                gr.LoginButton()
        sign_in = OwnerSignIn(keeper, guard)
        status = gr.Markdown("", elem_id="model-status")
        voter = gr.BrowserState(None, storage_key="title-dpo-voter")
        owner_pass = gr.BrowserState(None, storage_key="title-dpo-owner")  # after the password
        with gr.Tab("Vote") as vote_page:
            start_voting = vote_tab(store, keeper, guard, voter)
        with gr.Tab("Generate", visible=False) as generate_page:
            show_model, generate_owner = generate_tab(
                generator, store, keeper, guard, status, folder
            )
        with gr.Tab("Leaderboard") as board_tab:
            refresh_board, board_owner = leaderboard_tab(store, guard)
        with gr.Tab("Train", visible=False) as train_page:
            train_timer, refresh_compare = train_tab(
                runner, store, folder, generator, status, guard
            )
        with gr.Tab("Evaluate", visible=False) as evaluate_page:
            refresh_evaluate = evaluate_tab(store, folder, generator, guard)
        with gr.Tab("Hub", visible=False) as hub_page:
            refresh_hub = hub_tab(store, folder, mirror, settings, guard)
        # Only a page showing the Train tab polls the training status.
        pages = (vote_page, generate_page, board_tab, train_page, evaluate_page, hub_page)
        for page in pages:
            page.select(
                guard("anyone", lambda on=page is train_page: gr.Timer(active=on)),
                None,
                train_timer,
                queue=False,
                api_visibility="private",
            )

        # What this visitor may see: the server decides; hiding is a courtesy, not the lock.
        def show_role(*, caller: Caller) -> dict:
            owner = caller.is_owner
            may_generate = keeper.allows(caller, "generate")
            can_sign_in = settings.owner_password is not None
            return {
                role_line: describe_caller(caller, settings),
                sign_in.box: gr.Accordion(visible=can_sign_in and not owner),
                generate_page: gr.Tab(visible=may_generate),
                train_page: gr.Tab(visible=owner),
                evaluate_page: gr.Tab(visible=owner),
                hub_page: gr.Tab(visible=owner),
                generate_owner: gr.Column(visible=owner),
                board_owner: gr.Accordion(visible=owner),
            }

        def open_page(kept_pass: str | None, *, facts: RequestFacts) -> dict:
            return show_role(caller=keeper.resume(facts, kept_pass))

        role_outputs = [
            role_line,
            sign_in.box,
            generate_page,
            train_page,
            evaluate_page,
            hub_page,
            generate_owner,
            board_owner,
        ]
        # The model line waits for the role: an owner pass may make this page the owner's.
        app.load(guard("anyone", open_page), owner_pass, role_outputs, api_name="my_role").then(
            show_model.fn, None, show_model.outputs, api_name="model_status"
        )
        app.load(start_voting.fn, voter, start_voting.outputs, api_name="start")
        sign_in.wire(show_role, role_outputs, show_model, owner_pass)
        board_tab.select(refresh_board.fn, None, refresh_board.outputs, api_visibility="private")
        hub_page.select(refresh_hub.fn, None, refresh_hub.outputs, api_visibility="private")
        train_page.select(
            refresh_compare.fn, None, refresh_compare.outputs, api_visibility="private"
        )
        evaluate_page.select(
            refresh_evaluate.fn, None, refresh_evaluate.outputs, api_visibility="private"
        )
    guard.check_every_event(app)
    return app


def describe_caller(caller: Caller, settings: AccessSettings) -> str:
    if caller.is_owner:
        how = {"loopback": "this machine", "password": "owner password"}.get(caller.how, caller.how)
        return f"**Owner** ({how}): every tab is yours."
    if settings.voters_signed_in and not caller.username:
        return "Sign in with Hugging Face to vote: one vote per person per pair."
    who = f" as {caller.username}" if caller.username else ""
    return f"You are voting{who}. Thank you for helping!"


class Wiring:
    """A handler and its outputs, for events wired outside the tab that made them."""

    def __init__(self, fn, outputs) -> None:
        self.fn, self.outputs = fn, outputs


class Guard:
    """Event handlers that run only for callers with their role.

    `guard(role, fn)` is fn as Gradio should call it: Gradio injects the request and the
    OAuth profile (both server-side facts, never the client's say), the Gatekeeper resolves
    the caller and refuses one without the role, and a `UserError` from fn becomes the one
    message the page shows. fn may take keyword-only `caller` and `facts` to receive them.
    """

    EXTRA = (("request", gr.Request), ("profile", gr.OAuthProfile | None))
    # Gradio's own events that only update the page and change nothing on the server:
    # gr.Examples filling the idea box, gr.LoginButton showing who is signed in.
    HARMLESS = frozenset({"load_example", "_check_login_status"})

    def __init__(self, keeper: Gatekeeper) -> None:
        self.keeper = keeper

    def __call__(self, role: str, fn: Callable, spread: int = 0) -> Callable:
        """`spread`: for an fn with `*values`, how many inputs those are (Gradio passes each
        input as a parameter of its own)."""
        keeper = self.keeper
        signature = inspect.signature(fn)
        wants = [name for name in ("caller", "facts") if name in signature.parameters]
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, TypeError):
            hints = {}
        params = []
        for p in signature.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                if not spread:
                    raise TypeError(f"{fn.__name__}(*{p.name}): say how many inputs (spread=)")
                params += [
                    inspect.Parameter(f"{p.name}_{i}", p.POSITIONAL_OR_KEYWORD)
                    for i in range(spread)
                ]
            elif p.name not in wants:
                params.append(p.replace(annotation=hints.get(p.name, inspect.Parameter.empty)))
        extra = [
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=hint
            )
            for name, hint in self.EXTRA
        ]

        def handler(*args):
            *args, request, profile = args
            facts = request_facts(request, profile)
            caller = keeper.caller(facts)
            given = {"caller": caller, "facts": facts}
            try:
                keeper.require(caller, role)
                return fn(*args, **{name: given[name] for name in wants})
            except UserError as exc:
                raise gr.Error(str(exc)) from None

        handler.__signature__ = signature.replace(parameters=[*params, *extra])
        handler.__annotations__ = {
            p.name: p.annotation
            for p in [*params, *extra]
            if p.annotation is not inspect.Parameter.empty
        }
        handler.__name__ = getattr(fn, "__name__", "handler")
        handler.role = role
        taken = [p for p in params if not _injected(p.annotation)]
        handler.inputs = (sum(p.default is p.empty for p in taken), len(taken))
        return handler

    def refuse_early(self, handler: Callable | None, request: gr.Request) -> None:
        """Refuse the request before its inputs are read if `handler` (a guarded event's)
        demands a role the caller lacks (`RoleFirstBlocks`)."""
        role = getattr(handler, "role", None)
        if role is None:
            return
        caller = self.keeper.caller(request_facts(request, signed_in_profile(request)))
        try:
            self.keeper.require(caller, role)
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    @staticmethod
    def check_every_event(app: gr.Blocks) -> None:
        """Refuse an app with an event that states no role: a forgotten endpoint would be
        open to anyone with the link."""
        unguarded = [
            f"{block_fn.api_name or block_fn.name}"
            for block_fn in app.fns.values()
            if block_fn.fn is not None
            and not hasattr(block_fn.fn, "role")
            and block_fn.api_name not in Guard.HARMLESS
        ]
        if unguarded:
            raise RuntimeError(f"events without a role (wire them through Guard): {unguarded}")
        # Gradio hands the inputs over by position and the request by its parameter: one input
        # too many lands in the request's place, and the caller is no longer who they are.
        miscounted = [
            f"{block_fn.api_name or block_fn.name} ({len(block_fn.inputs)} inputs)"
            for block_fn in app.fns.values()
            if hasattr(block_fn.fn, "inputs")
            and not block_fn.fn.inputs[0] <= len(block_fn.inputs) <= block_fn.fn.inputs[1]
        ]
        if miscounted:
            raise RuntimeError(f"events whose handler takes other inputs: {miscounted}")


class RoleFirstBlocks(gr.Blocks):
    """gr.Blocks whose events check the caller's role before Gradio reads their inputs.

    Gradio checks and converts an event's inputs (their number, a file's payload, a choice
    among a dropdown's) before it calls the handler, and a failure there answers a caller
    with a generic "the upstream app has raised an exception", or with an error listing the
    dropdown's choices: a voter probing an owner endpoint with bad inputs would hear that
    rather than the refusal. So the role is checked first, from the same request. This only
    ever refuses sooner: the handler's own check (`Guard`) stays the lock, and where Gradio
    calls without a request (examples, internal calls) or no longer names it, nothing changes.
    """

    def __init__(self, guard: Guard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    async def process_api(self, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any):
        fn = self.fns.get(block_fn) if isinstance(block_fn, int) else block_fn
        request = kwargs.get("request")
        if isinstance(request, gr.Request):  # a list of requests: a batch, not ours
            self.guard.refuse_early(getattr(fn, "fn", None), request)
        return await super().process_api(block_fn, inputs, *args, **kwargs)


def signed_in_profile(request: gr.Request) -> gr.OAuthProfile | None:
    """The Hugging Face profile Gradio will hand a handler for this request: the session's
    sign-in, unless it has expired (read as Gradio reads it, for `RoleFirstBlocks`)."""
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None
    info = (session or {}).get("oauth_info")
    if not isinstance(info, dict) or not isinstance(info.get("userinfo"), dict):
        return None
    expires = info.get("expires_at")
    if expires is not None and expires < time.time():
        return None
    return gr.OAuthProfile(info["userinfo"])


def _injected(annotation: object) -> bool:
    """Whether Gradio fills a parameter so typed itself (the request, the OAuth sign-in)."""
    injected = (gr.Request, gr.OAuthProfile, gr.OAuthToken)
    return any(t in injected for t in (annotation, *typing.get_args(annotation)))


def request_facts(request: gr.Request | None, profile: gr.OAuthProfile | None) -> RequestFacts:
    """What the server knows of a request's sender, in the library's terms."""
    if request is None:  # called from Python, not over HTTP
        return RequestFacts(None)
    orgs = (profile or {}).get("orgs") or []
    return RequestFacts(
        client_host=request.client.host if request.client else None,
        forwarded_for=request.headers.get("x-forwarded-for"),
        session=request.session_hash,
        username=profile.username if profile is not None else None,
        orgs=tuple(o["preferred_username"] for o in orgs if o.get("preferred_username")),
    )


class OwnerSignIn:
    """The owner-password box: shown where a password is set and the visitor is no owner."""

    def __init__(self, keeper: Gatekeeper, guard: Guard) -> None:
        self.keeper, self.guard = keeper, guard
        with gr.Accordion("Owner sign-in", open=False, visible=False) as self.box:
            with gr.Row():
                self.password = gr.Textbox(
                    label="Owner password", type="password", max_lines=1, scale=3
                )
                self.button = gr.Button("Sign in as the owner", scale=1)
            self.message = gr.Markdown()

    def wire(
        self,
        show_role: Callable,
        role_outputs: list,
        show_model: Wiring,
        owner_pass: gr.BrowserState,
    ) -> None:
        """Sign-in updates what the page shows, and leaves a pass in the browser so that its
        next pages (a reload, another tab) need no password for a while."""
        keeper = self.keeper

        def sign_in(password: str, *, facts: RequestFacts) -> dict:
            try:
                caller, new_pass = keeper.sign_in(facts, password)
            except Refused as exc:  # said beside the box; the password is not kept
                return {self.password: "", self.message: str(exc)}
            return {
                **show_role(caller=caller),
                owner_pass: new_pass,
                self.password: "",
                self.message: "",
            }

        outputs = [*role_outputs, owner_pass, self.password, self.message]
        gr.on(
            [self.button.click, self.password.submit],
            self.guard("anyone", sign_in),
            self.password,
            outputs,
            api_name="owner_sign_in",
            queue=False,
        ).then(show_model.fn, None, show_model.outputs, api_visibility="private")


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


def vote_tab(store: VoteStore, keeper: Gatekeeper, guard: Guard, voter: gr.BrowserState) -> Wiring:
    gr.Markdown("Which title would make you click? The titles' source is hidden until you vote.")
    idea = gr.Textbox(label="Video idea", interactive=False)
    with gr.Row(equal_height=True):
        left = gr.Textbox(label="Title A", interactive=False, lines=2)
        right = gr.Textbox(label="Title B", interactive=False, lines=2)
    pair_id = gr.Number(visible=False, precision=0)
    with gr.Row(elem_id="vote-buttons"):
        buttons = {
            side: gr.Button(label, elem_id=f"vote-{side}", interactive=False)
            for side, label in VOTE_BUTTONS
        }
        skip = gr.Button("Skip  [S]", elem_id="vote-skip", variant="secondary", interactive=False)
    progress = gr.Markdown(elem_id="vote-progress")
    shown = gr.State(None)  # {"pair_id", "shown_left", "shown_at", "skipped"}: server side only
    all_buttons = [*buttons.values(), skip]
    screen = [idea, left, right, pair_id, progress, shown]
    # Buttons are enabled once the first pair arrives (`start`) and disabled when nothing is
    # left; in between, a click disables them in the browser at once and the end of the vote
    # enables them again, with no extra round trip and no button updates on the hot path.
    # The browser keeps a voter token the server signed; votes are stored under the id in it.

    def blank(message: str) -> dict:
        return {idea: "", left: "", right: "", pair_id: None, shown: None, progress: message}

    def show_next(voter_id: str, skipped: list[int], message: str = "") -> dict:
        view = store.next_pair(voter_id, skip=skipped)
        done, remaining = store.voter_progress(voter_id)
        counter = (
            f"You have voted on **{done}** pairs · **{remaining - len(skipped)}** left for you"
        )
        if view is None:
            return blank(f"{message} {counter}. Nothing left to judge: thank you!".strip())
        state = {
            "pair_id": view.pair_id,
            "shown_left": view.shown_left,
            "shown_at": time.time(),
            "skipped": skipped,
        }
        return {
            idea: view.idea,
            left: view.left,
            right: view.right,
            pair_id: view.pair_id,
            shown: state,
            progress: f"{message} {counter}".strip(),
        }

    def start(token: str | None, *, caller: Caller):
        try:
            token, voter_id = keeper.voter_for_page(caller, token)
        except Refused as exc:  # not signed in where that is required, or too many new ids
            return {
                voter: token,
                **blank(str(exc)),
                **{b: gr.update(interactive=False) for b in all_buttons},
            }
        screen_now = show_next(voter_id, [])
        enabled = screen_now[shown] is not None
        return {
            voter: token,
            **screen_now,
            **{b: gr.update(interactive=enabled) for b in all_buttons},
        }

    def vote_for(side: str) -> Callable:
        def vote(token: str, seen_pair: float | None, state: dict | None, *, caller: Caller):
            voter = keeper.voter_of(caller, token)
            keeper.admit_vote(caller, voter.id)
            current = (
                Shown(state["pair_id"], state["shown_left"], state["shown_at"]) if state else None
            )
            seen = shown_pair_id(seen_pair)
            result = vote_on_shown_pair(
                store, voter.id, seen, side, current, time.time(), burst=voter.burst
            )
            if not result.recorded:
                return {progress: "Already voted on that pair: your first vote stands."}
            return show_next(voter.id, (state or {}).get("skipped", []), "Vote saved.")

        return vote

    def skip_pair(token: str, state: dict | None, *, caller: Caller) -> dict:
        voter_id = keeper.voter_of(caller, token).id
        skipped = list((state or {}).get("skipped", []))
        if state:
            skipped.append(state["pair_id"])
        return show_next(voter_id, skipped, "Skipped.")

    # Unqueued: a vote is a few milliseconds of SQLite, and the queue's bookkeeping costs more.
    # Raw: Gradio's conversion of each input and output takes a trip through its thread pool;
    # the handlers read the values as the page sends them (checked there) and return them as
    # the page shows them (plain text, a whole number). bench/votes.py: about a third more
    # votes per second.
    hot_path = {"queue": False, "preprocess": False, "postprocess": False}
    for side, button in buttons.items():
        button.click(
            guard(VOTER, vote_for(side)),
            [voter, pair_id, shown],
            screen,
            api_name=f"vote_{side}",
            js=LOCK_BUTTONS_JS,
            **hot_path,
        ).then(None, js=UNLOCK_BUTTONS_JS)
    skip.click(
        guard(VOTER, skip_pair),
        [voter, shown],
        screen,
        api_name="skip",
        js=LOCK_BUTTONS_JS,
        **hot_path,
    ).then(None, js=UNLOCK_BUTTONS_JS)
    return Wiring(guard(VOTER, start), [voter, *screen, *all_buttons])


def generate_tab(
    generator: ModelChoice,
    store: VoteStore,
    keeper: Gatekeeper,
    guard: Guard,
    status: gr.Markdown,
    folder: Path,
) -> tuple[Wiring, gr.Column]:
    """The Generate tab, and its owner-only tools (the voting pool, gold pairs, the switch
    that opens Generate to voters)."""
    idea = gr.Textbox(
        label="Video idea",
        placeholder="e.g. intro independent component analysis",
        max_length=MAX_IDEA_CHARS,
    )
    with gr.Row():
        n = gr.Slider(1, MAX_TITLES_PER_IDEA, value=5, step=1, label="Titles")
        temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature")
    button = gr.Button("Generate titles", variant="primary")
    titles = gr.Dataframe(
        headers=["Title", "Characters"],
        datatype=["str", "number"],
        label="Titles (the prompt asks for 30–75 characters)",
        interactive=False,
        wrap=True,
        column_widths=["88%", "12%"],
    )
    with gr.Accordion("Raw model output", open=False):
        raw = gr.JSON(label="Exactly what the model wrote")
    gr.Examples(EXAMPLE_IDEAS, inputs=idea)
    with gr.Column(visible=False) as owner_tools:
        with gr.Row():
            add = gr.Button("Add these titles to the voting pool")
            added = gr.Markdown()
        with gr.Accordion("Best of n: rank the titles with a reward model", open=False):
            gr.Markdown(
                "Samples *Titles* titles for the idea, scores each with a reward model "
                "(train one on the Train tab) and lists them best first."
            )
            with gr.Row():
                reward_model = gr.Dropdown(
                    [], allow_custom_value=True, label="Reward model (a run, or a folder)"
                )
                find_rewards = gr.Button("Find reward models")
            rank = gr.Button("Generate and rank", variant="primary")
            ranked = gr.Dataframe(
                headers=["Score", "Title", "Characters"],
                datatype=["number", "str", "number"],
                label="Best first",
                interactive=False,
                wrap=True,
            )
        with gr.Accordion("Voting pool", open=False):
            gr.Markdown("Import a `python -m pipeline pairs` CSV (`idea,title_a,title_b`).")
            pairs_file = gr.File(label="Pairs CSV", file_types=[".csv"])
            tutorial = gr.Button("Load the tutorial's 1,140 pairs")
            pool_message = gr.Markdown()
        with gr.Accordion("Gold pairs: checks with a known answer", open=False):
            gr.Markdown(
                "Voters see a gold pair like any other; how often each voter picks the better "
                "title is on the Leaderboard, and a dataset can leave out voters who miss too "
                "many. Pair a good title with a deliberately broken one."
            )
            with gr.Row():
                gold_idea = gr.Textbox(label="Video idea")
                gold_good = gr.Textbox(label="The better title")
                gold_bad = gr.Textbox(label="The worse title (e.g. broken on purpose)")
            gold_button = gr.Button("Add the gold pair")
            gold_message = gr.Markdown()
        open_to_voters = gr.Checkbox(
            keeper.voters_may_generate, label="Voters may use Generate too (it costs GPU time)"
        )
    last_titles = gr.State([])

    def model_status(*, caller: Caller) -> str:
        if not keeper.allows(caller, "generate"):
            return ""  # a voter who cannot generate loads no model
        return generator.status()

    def generate(idea_text: str, count: float, temp: float):
        loaded = generator.load()
        settings = GenerationSettings(n=int(count), temperature=float(temp))
        result = generate_on_gpu(generator.name, idea_text, settings)  # ZeroGPU call
        table = [[t.text, len(t.text)] for t in result]
        return table, [t.raw for t in result], loaded.describe(), result, ""

    def reward_models():
        found = [str(m) for m in finished_runs(runs_dir(folder), "reward")]
        return gr.Dropdown(choices=found, value=found[0] if found else None)

    def generate_ranked(idea_text: str, count: float, temp: float, reward_name: str | None):
        if not reward_name:
            raise UserError("choose a reward model first (train one on the Train tab)")
        settings = GenerationSettings(n=int(count), temperature=float(temp))
        scored = best_of_n_on_gpu(generator.name, reward_name, idea_text, settings)
        rows = [[round(s.score, 3), s.title.text, len(s.title.text)] for s in scored]
        return rows, [s.title for s in scored]

    def add_to_pool(generated: list) -> str:
        count = store.add_titles(generated)
        return f"Added {count} new pairs for “{generated[0].idea}” to the voting pool."

    def import_pairs(path: str | None) -> str:
        if not path:
            raise UserError("choose a pairs CSV first")
        return f"Imported {store.import_pairs_csv(path)} new pairs."

    def add_gold(idea_text: str, good: str, bad: str) -> str:
        pair = store.add_gold_pair(idea_text, good, bad)
        return f"Gold pair {pair} added: voters who pick “{good}” are right."

    def set_open_to_voters(allowed: bool) -> None:
        keeper.voters_may_generate = bool(allowed)

    gr.on(
        [button.click, idea.submit],
        guard("generate", generate),
        inputs=[idea, n, temperature],
        outputs=[titles, raw, status, last_titles, added],
        api_name="generate",
        concurrency_limit=1,  # one model, one generation at a time
    )
    find_rewards.click(guard(OWNER, reward_models), None, reward_model, api_name="reward_models")
    rank.click(
        guard(OWNER, generate_ranked),
        [idea, n, temperature, reward_model],
        [ranked, last_titles],
        api_name="best_of_n",
        concurrency_limit=1,
    )
    add.click(guard(OWNER, add_to_pool), last_titles, added, api_name="add_to_pool")
    pairs_file.upload(guard(OWNER, import_pairs), pairs_file, pool_message, api_name="import_pairs")
    tutorial.click(
        guard(OWNER, lambda: f"Loaded {store.import_tutorial_pool()} new pairs."),
        None,
        pool_message,
        api_name="load_tutorial_pool",
    )
    gold_button.click(
        guard(OWNER, add_gold),
        [gold_idea, gold_good, gold_bad],
        gold_message,
        api_name="add_gold_pair",
    )
    open_to_voters.input(
        guard(OWNER, set_open_to_voters), open_to_voters, None, api_name="voters_may_generate"
    )
    return Wiring(guard("anyone", model_status), [status]), owner_tools


def leaderboard_tab(store: VoteStore, guard: Guard) -> tuple[Wiring, gr.Accordion]:
    """The Leaderboard, and its owner-only part: each voter's record."""
    summary = gr.Markdown()
    ideas = gr.Dataframe(
        headers=["Idea", "Votes", "Pairs voted on"],
        datatype=["str", "number", "number"],
        interactive=False,
        label="Votes per idea",
    )
    pick = gr.Dropdown(label="Idea", choices=[], interactive=True)
    scores = gr.Dataframe(
        headers=["Title", "Score", "95% interval", "Wins", "Losses", "Ties / both bad"],
        datatype=["str", "number", "str", "number", "number", "number"],
        interactive=False,
        wrap=True,
        label="Bradley–Terry scores (1000 = the idea's average title)",
    )
    refresh = gr.Button("Refresh")
    with gr.Accordion("Voters (owner only)", open=False, visible=False) as owner_part:
        gr.Markdown(
            "Per voter: votes, votes flagged as too fast to have read the titles, whether the "
            "voter's id was minted in a burst from one address (a script, or a classroom "
            "behind one router: look before leaving them out), and accuracy on gold pairs. "
            "`--drop-fast`, `--drop-burst` and `--min-gold-accuracy` (and the same switches "
            "on the Train and Hub tabs) leave them out of a dataset."
        )
        voters_table = gr.Dataframe(
            headers=["Voter", "Votes", "Too fast", "Burst", "Gold pairs voted", "Gold accuracy"],
            datatype=["str", "number", "number", "str", "number", "str"],
            interactive=False,
        )
        refresh_voters = gr.Button("Refresh the voters")

    def voters() -> list[list]:
        return [
            [
                s.voter,
                s.votes,
                s.fast,
                "burst" if s.burst else "",
                s.gold_votes,
                "n/a" if s.gold_accuracy is None else f"{s.gold_accuracy:.0%}",
            ]
            for s in voter_stats(store.votes())
        ]

    def overview():
        votes = store.votes()
        agree = agreement(votes)
        rows = [list(row) for row in votes_per_idea(votes)]
        alpha = "n/a" if agree.alpha is None else f"{agree.alpha:.2f}"
        unanimous = "n/a" if agree.unanimous is None else f"{agree.unanimous:.0%}"
        text = (
            f"**{len(votes)}** votes from **{voter_count(votes)}** voters. "
            f"Agreement over the {agree.pairs} pairs with 2+ votes: {unanimous} unanimous, "
            f"Krippendorff's alpha {alpha}."
        )
        choices = [r[0] for r in rows]
        return text, rows, gr.Dropdown(choices=choices, value=choices[0] if choices else None)

    def idea_scores(idea: str | None):
        if not idea:
            return []
        boards = leaderboard([v for v in store.votes() if v.idea == idea])
        return [
            [s.title, round(s.score), f"{s.low:.0f} – {s.high:.0f}", s.wins, s.losses, s.ties]
            for board in boards
            for s in board.titles
        ]

    refresh.click(guard(VOTER, overview), None, [summary, ideas, pick], api_name="leaderboard")
    pick.change(guard(VOTER, idea_scores), pick, scores, api_name="idea_scores")
    gr.on(
        [owner_part.expand, refresh_voters.click],
        guard(OWNER, voters),
        None,
        voters_table,
        api_name="voter_quality",
    )
    return Wiring(guard(VOTER, overview), [summary, ideas, pick]), owner_part


def vote_screening() -> tuple[gr.Checkbox, gr.Number, gr.Checkbox]:
    """The fields that screen votes before they become a dataset (ratings.Screening), in the
    order the endpoints take them (the burst switch came last, so it is last)."""
    with gr.Row():
        drop_fast = gr.Checkbox(False, label="Leave out votes cast too fast to read")
        drop_burst = gr.Checkbox(
            False, label="Leave out voters minted in a burst from one address (see Voters)"
        )
        min_gold = gr.Number(
            0, minimum=0, maximum=1, label="Leave out voters below this gold accuracy (0: none)"
        )
    return drop_fast, min_gold, drop_burst


def screening(
    drop_fast: bool | None, min_gold: float | None, drop_burst: bool | None = False
) -> Screening:
    """The fields' values as the dataset writers take them (0 or empty: no gold floor)."""
    return Screening(
        drop_fast=bool(drop_fast),
        drop_burst=bool(drop_burst),
        min_gold_accuracy=float(min_gold) if min_gold else None,
    )


# The Data choices on the Train and Hub tabs, and the source each one names.
TUTORIAL_DATA = "The tutorial's 1,140 labelled pairs"
VOTES_DATA = "The votes collected here"
HUB_DATA = "A preference dataset on the Hub"
DATA_SOURCES = {TUTORIAL_DATA: "tutorial", VOTES_DATA: "votes", HUB_DATA: "hub"}


# The methods of the Train tab, and the recipe kind each one trains.
METHODS = {
    "DPO": DPORecipe,
    "Reward model (RLHF step 1)": RewardRecipe,
    "Online RL against a reward model (RLHF step 2: GRPO / RLOO)": RLRecipe,
}
START_LABELS = {
    DPORecipe: "Start training",
    RewardRecipe: "Start training the reward model",
    RLRecipe: "Start online RL",
}
# Each method's endpoints: DPO keeps the names it had before the RLHF half came.
ENDPOINTS = {
    DPORecipe: ("train_start", "train_resume", "recipe_settings"),
    RewardRecipe: ("reward_start", "reward_resume", "reward_recipe_settings"),
    RLRecipe: ("rl_start", "rl_resume", "rl_recipe_settings"),
}


def recipe_form(kind: type = DPORecipe) -> tuple[gr.Dropdown, list[gr.components.Component]]:
    """The recipe choice and one field per recipe knob marked for the form (an optional knob:
    a switch and a number; a knob with choices: a dropdown), made from the recipe's own
    fields, in `form_values` order."""
    default = get_recipe(DEFAULT_RECIPE, kind)
    recipe = gr.Dropdown(list(SHIPPED[kind]), value=DEFAULT_RECIPE, label="Recipe")
    values = iter(form_values(default))
    fields: list[gr.components.Component] = []
    with gr.Row():
        for knob in knobs(form_only=True, kind=kind):
            if knob.optional:
                fields.append(gr.Checkbox(next(values), label=knob.switch))
            if knob.choices:
                fields.append(
                    gr.Dropdown(
                        list(knob.choices), value=next(values), label=knob.label, info=knob.help
                    )
                )
                continue
            whole = knob.kind is int
            fields.append(
                gr.Number(
                    next(values),
                    precision=0 if whole else None,
                    minimum=1 if whole else 0,
                    label=knob.label,
                    info=knob.help,  # the field's own help, as `--help` shows it
                )
            )
    return recipe, fields


def train_tab(
    runner: TrainingRunner,
    store: VoteStore,
    folder: Path,
    generator: ModelChoice,
    status_line: gr.Markdown,
    guard: Guard,
) -> tuple[gr.Timer, Wiring]:
    """The Train tab: every event on it is the owner's (GPU time, disk, the Generate model).
    One runner serves the three methods; each has its recipe form and its Start/Resume."""
    gr.Markdown(
        "**DPO** learns from the preference pairs directly. **RLHF** takes two steps on the "
        "same pairs: a *reward model* learns to score titles as people chose, then *online "
        "RL* lets the model write titles and moves it towards those the reward model scores "
        "higher, kept near where it started by a KL penalty. TRL has no PPO any more: GRPO "
        "keeps PPO's clipped update and uses the average reward of the titles written for "
        "the same idea as the baseline; RLOO leaves each title out of its own baseline."
    )
    with gr.Row():
        source = gr.Radio(list(DATA_SOURCES), value=TUTORIAL_DATA, label="Data")
        min_votes = gr.Number(1, precision=0, minimum=1, label="Votes per pair at least")
        hub_dataset = gr.Textbox(
            "", label="Hub dataset id", placeholder="shawhin/youtube-titles-dpo"
        )
    screen_in = list(vote_screening())  # for the votes collected here
    with gr.Row():
        base = gr.Textbox(generator.name, label="Base model (Hub id or folder)")
        max_steps = gr.Number(0, precision=0, minimum=0, label="Stop after steps (0: no limit)")
    method = gr.Radio(list(METHODS), value="DPO", label="Method")
    forms: dict[type, dict[str, Any]] = {}
    for kind in METHODS.values():
        with gr.Group(visible=kind is DPORecipe) as group:
            reward_model = None
            if kind is RLRecipe:
                reward_model = gr.Dropdown(
                    [],
                    value=None,
                    allow_custom_value=True,
                    label="Reward model (a finished reward-model run, or a folder)",
                )
            recipe, fields = recipe_form(kind)
            with gr.Row():
                start = gr.Button(START_LABELS[kind], variant="primary")
                resume = gr.Button("Resume the last run")
        forms[kind] = {
            "group": group,
            "recipe": recipe,
            "fields": fields,
            "start": start,
            "resume": resume,
            "reward_model": reward_model,
        }
    with gr.Row():
        stop = gr.Button("Stop", variant="stop")
        use = gr.Button("Use this model for Generate")
    progress = gr.Markdown("No training run yet.")
    with gr.Row():
        charts = [
            gr.LinePlot(x="step", y="value", color="metric", label=title)
            for title, _ in CHARTS["dpo"]
        ]
    epochs_table = gr.Dataframe(label="Per evaluation", interactive=False)
    samples = gr.Dataframe(
        headers=list(SAMPLE_COLUMNS),
        label="Titles the policy is writing (online RL), newest first",
        interactive=False,
        wrap=True,
    )
    log_tail = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, interactive=False)
    compare_view = compare_runs_view(folder, guard)
    timer = gr.Timer(1.0, active=False)  # ticks only while the Train tab is open

    def run_settings(kind: type, name: str, *values) -> dict:
        """What `runner.start` takes from a form (a step limit of 0 or empty: none)."""
        *fields, step_limit = values
        return {
            "recipe": recipe_from_form(name, fields, kind),
            "max_steps": int(step_limit) if step_limit else None,
            "chunked": ON_ZEROGPU,
        }

    def settings_for(kind: type, values: list) -> dict:
        """What `runner.start` takes from a form; an RL form's first value is its reward model,
        checked (bad settings are refused before any download)."""
        if kind is not RLRecipe:
            return run_settings(kind, *values)
        chosen, *values = values
        settings = run_settings(kind, *values)
        if chosen:
            settings["reward_model"] = check_reward_model(chosen)
        elif settings["recipe"].reward_weight:
            raise UserError("choose the reward model the policy is trained against")
        return settings

    def begin_for(kind: type) -> Callable:
        def begin(data_kind, min_count, hub_id, model, *values):
            *values, screen_fast, gold_floor, screen_burst = values
            settings = settings_for(kind, values)

            def write_data(out: Path) -> None:
                write_training_data(
                    DATA_SOURCES[data_kind],
                    out,
                    votes=store.path,
                    hub_id=hub_id,
                    min_votes=int(min_count or 1),
                    screening=screening(screen_fast, gold_floor, screen_burst),
                )

            runner.start_run(runs_dir(folder), write_data, model_name=model, **settings)
            return show()

        return begin

    def carry_on_for(kind: type) -> Callable:
        def carry_on(model, *values):
            settings = settings_for(kind, list(values))
            runner.resume_latest(runs_dir(folder), model_name=model, **settings)
            return show()

        return carry_on

    def halt():
        runner.stop()
        return show()

    def show():
        import pandas as pd

        job = runner.status()
        kind = job.kind if job.kind in CHARTS else "dpo"
        # the charts' titles follow the Method choice (`pick_method`)
        plots = [
            pd.DataFrame(chart_rows(job.metrics, keys), columns=["step", "value", "metric"])
            for _, keys in CHARTS[kind]
        ]
        table = pd.DataFrame(epoch_table(job.metrics), columns=list(EPOCH_COLUMNS))
        written = read_samples(job.out, 24)[::-1] if job.out and kind == "rl" else []
        return (
            job.describe(),
            *plots,
            table.map(lambda v: float(f"{v:.4g}") if isinstance(v, float) else v),
            pd.DataFrame(sample_rows(written), columns=list(SAMPLE_COLUMNS)),
            "\n".join(job.log[-40:]),
        )

    def use_trained():
        return generator.use(runner.finished_model())

    def pick_method(label: str):
        chosen = METHODS[label]
        reward_runs = [str(m) for m in finished_runs(runs_dir(folder), "reward")]
        return [
            *(gr.Group(visible=kind is chosen) for kind in forms),
            gr.Dropdown(choices=reward_runs, value=reward_runs[0] if reward_runs else None),
            *(gr.LinePlot(label=title or " ") for title, _ in CHARTS[chosen.KIND]),
        ]

    outputs = [progress, *charts, epochs_table, samples, log_tail]
    data_in = [source, min_votes, hub_dataset, base]
    method.change(
        guard(OWNER, pick_method),
        method,
        [*(f["group"] for f in forms.values()), forms[RLRecipe]["reward_model"], *charts],
        api_name="train_method",
    )
    for kind, form in forms.items():
        start_name, resume_name, settings_name = ENDPOINTS[kind]
        extra = [form["reward_model"]] if form["reward_model"] is not None else []
        knobs_in = [*extra, form["recipe"], *form["fields"], max_steps]  # the API's order
        form["recipe"].change(
            guard(OWNER, lambda name, kind=kind: form_values(get_recipe(name, kind))),
            form["recipe"],
            form["fields"],
            api_name=settings_name,
            queue=False,
        )
        form["start"].click(
            guard(OWNER, begin_for(kind), spread=len(knobs_in) + len(screen_in)),
            [*data_in, *knobs_in, *screen_in],
            outputs,
            api_name=start_name,
        )
        form["resume"].click(
            guard(OWNER, carry_on_for(kind), spread=len(knobs_in)),
            [base, *knobs_in],
            outputs,
            api_name=resume_name,
        )
    stop.click(guard(OWNER, halt), None, outputs, api_name="train_stop", queue=False)
    timer.tick(guard(OWNER, show), None, outputs, api_name="train_status", queue=False)
    use.click(guard(OWNER, use_trained), None, status_line, api_name="use_trained_model")
    return timer, compare_view


def compare_runs_view(folder: Path, guard: Guard) -> Wiring:
    """'Compare runs': the chosen runs' curves of one logged metric on one chart (every run
    also reports to trackio: `trackio show --project title-dpo` opens its dashboard)."""
    with gr.Accordion("Compare runs", open=False):
        with gr.Row():
            chosen = gr.CheckboxGroup([], label="Runs")
            metric = gr.Dropdown([], label="Metric", allow_custom_value=True)
        with gr.Row():
            refresh = gr.Button("Refresh the list of runs")
            button = gr.Button("Compare", variant="primary")
        chart = gr.LinePlot(x="step", y="value", color="run", label="The metric, run by run")
        gr.Markdown(
            f"Every run also reports to trackio (`{tracking_dir()}`): "
            "`trackio show --project title-dpo` opens its dashboard."
        )

    def choices():
        runs = [run_label(m) for m in finished_runs(runs_dir(folder))]
        logged = (run_metrics(m) for m in finished_runs(runs_dir(folder)))
        keys = sorted({key for metrics in logged for key in numeric_keys(metrics)})
        return gr.CheckboxGroup(choices=runs), gr.Dropdown(
            choices=keys, value="loss" if "loss" in keys else (keys[0] if keys else None)
        )

    def compare(names: list[str], key: str):
        import pandas as pd

        if not names or not key:
            raise UserError("choose one or more runs and a metric")
        by_label = {run_label(m): m for m in finished_runs(runs_dir(folder))}
        runs = {name: run_metrics(by_label[name]) for name in names if name in by_label}
        rows = compare_rows(runs, key)
        if not rows:
            raise UserError(f"none of the chosen runs logged {key!r}")
        return pd.DataFrame(rows, columns=["step", "value", "run"])

    refresh.click(guard(OWNER, choices), None, [chosen, metric], api_name="compare_choices")
    button.click(guard(OWNER, compare), [chosen, metric], chart, api_name="compare_runs")
    return Wiring(guard(OWNER, choices), [chosen, metric])


# Where an evaluation round's ideas come from (pipeline.rounds).
FRESH_IDEAS = "The shipped fresh ideas (none is in the tutorial's data)"
HELD_OUT_IDEAS = "The held-out ideas of the chosen runs"
TYPED_IDEAS = "Typed below, one per line"
FILE_IDEAS = "A file, one idea per line"
IDEA_SOURCES = [FRESH_IDEAS, HELD_OUT_IDEAS, TYPED_IDEAS, FILE_IDEAS]


def evaluate_tab(store: VoteStore, folder: Path, generator: ModelChoice, guard: Guard) -> Wiring:
    """The Evaluate tab, the owner's: rounds of models' titles put to voters blind, and what
    the votes (or a judge model) say about the models."""
    gr.Markdown(
        "A round: each model writes titles for the same ideas, and every two models' titles "
        "for an idea become a pair in the voting pool. Voters see them like any pair: blind, "
        "sides at random. A finished run brings its base model and its SFT stage, so the "
        "round shows what the preference step adds beyond the format fix. Votes on a round "
        "stay out of training data (`dataset --include-evaluation` puts them in)."
    )
    with gr.Row():
        runs = gr.CheckboxGroup([], label="Finished runs")
        others = gr.Textbox(
            generator.name,
            label="Other models (Hub ids or folders, one per line)",
            lines=2,
        )
    with gr.Row():
        stages = gr.Checkbox(True, label="A run brings its base model and its SFT stage")
        k = gr.Number(1, precision=0, minimum=1, maximum=MAX_K, label="Titles per model per idea")
        name = gr.Textbox("", label="Round name (empty: round-DATE-TIME)")
    with gr.Row():
        source = gr.Radio(IDEA_SOURCES, value=FRESH_IDEAS, label="Ideas")
        typed = gr.Textbox("", label="Ideas (one per line)", lines=4)
        ideas_file = gr.File(label="Ideas file", file_types=[".txt", ".csv"])
    with gr.Row():
        create = gr.Button("Create the round", variant="primary")
        refresh = gr.Button("Refresh the runs and rounds")
    created = gr.Markdown()
    gr.Markdown("### Results")
    with gr.Row():
        pick = gr.Dropdown([], label="Round", allow_custom_value=True)
        judge = gr.Textbox("", label="Judge model (optional: judge the pairs with it)")
    with gr.Row():
        show = gr.Button("Show the people's verdict")
        judged = gr.Button("Judge the round with the model")
    summary = gr.Markdown()
    chart = gr.Plot(label="Win rates (Wilson 95%) and arena scores (bootstrap 95%)")
    comparisons = gr.Dataframe(
        headers=COMPARISON_COLUMNS, interactive=False, label="Head to head", wrap=True
    )
    ranking = gr.Dataframe(headers=ARENA_COLUMNS, interactive=False, label="Arena (Bradley–Terry)")
    detail = gr.Dataframe(headers=DETAIL_COLUMNS, interactive=False, label="Per pair", wrap=True)

    def choices():
        finished = [str(p) for p in finished_runs(runs_dir(folder))]
        rounds = [r.name for r in store.rounds()]
        return gr.CheckboxGroup(choices=finished), gr.Dropdown(
            choices=rounds, value=rounds[0] if rounds else None
        )

    def make_round(chosen, other_text, with_stages, count, round_name, where, text, path):
        names = [*(chosen or []), *(line.strip() for line in (other_text or "").splitlines())]
        ideas, ideas_from = {
            FRESH_IDEAS: lambda: (fresh_ideas(), "the shipped fresh ideas"),
            HELD_OUT_IDEAS: lambda: (None, None),
            TYPED_IDEAS: lambda: (ideas_from_text(text or ""), "typed ideas"),
            FILE_IDEAS: lambda: (ideas_from_file(path) if path else [], "an ideas file"),
        }[where]()
        plan = plan_round(
            [n for n in names if n],
            ideas,
            ideas_from,
            int(count or 1),
            round_name or None,
            stages=bool(with_stages),
        )
        info = create_round(store, plan, generate=generate_round_on_gpu)
        rounds = [r.name for r in store.rounds()]
        message = f"{plan.describe()}. **{info.pairs} pairs** are in the voting pool now."
        return message, gr.Dropdown(choices=rounds, value=info.name)

    def report(round_name, judge_name=None):
        if not round_name:
            raise UserError("no round chosen: create one first")
        if judge_name:
            model_judge = JudgeOnGpu(judge_name)
            verdicts = judge_round(store, round_name, model_judge)
            result = round_report(store, round_name, verdicts, model_judge.name)
        else:
            result = round_report(store, round_name)
        tables = result.tables()
        return (
            result.describe().replace("\n", "  \n"),
            round_chart(result),
            tables["comparisons"],
            tables["arena"],
            tables["detail"],
        )

    def judge_report(round_name, judge_name):
        if not (judge_name or "").strip():
            raise UserError("name a judge model (a Hub id or a folder) first")
        return report(round_name, judge_name.strip())

    outputs = [summary, chart, comparisons, ranking, detail]
    create.click(
        guard(OWNER, make_round),
        [runs, others, stages, k, name, source, typed, ideas_file],
        [created, pick],
        api_name="evaluate_create",
        concurrency_limit=1,  # the models share one GPU
    )
    show.click(guard(OWNER, report), pick, outputs, api_name="evaluate_report")
    pick.input(guard(OWNER, report), pick, outputs, api_visibility="private")
    judged.click(
        guard(OWNER, judge_report),
        [pick, judge],
        outputs,
        api_name="evaluate_judge",
        concurrency_limit=1,
    )
    refresh.click(guard(OWNER, choices), None, [runs, pick], api_name="evaluate_choices")
    return Wiring(guard(OWNER, choices), [runs, pick])


def hub_tab(
    store: VoteStore,
    folder: Path,
    mirror: VoteMirror | str | None,
    settings: AccessSettings,
    guard: Guard,
) -> Wiring:
    """The Hub tab, the owner's. `mirror`: the votes' Hub mirror, or why there is none (a
    message), or None (not set). On a Space a push uses the signed-in owner's own token;
    locally, HF_TOKEN. The app's HF_TOKEN on a Space is the vote mirror's, and nobody's else."""
    how = (
        "Sign in with Hugging Face (the button at the top): pushes use your own token."
        if settings.on_space
        else "The app pushes with `HF_TOKEN` (a token with write access)."
    )
    gr.Markdown(
        "Publish the preference dataset and a tuned model to your Hugging Face namespace, with "
        f"their cards. {how}"
    )
    with gr.Row():
        data_source = gr.Radio([VOTES_DATA, TUTORIAL_DATA], value=VOTES_DATA, label="Dataset")
        min_votes = gr.Number(1, precision=0, minimum=1, label="Votes per pair at least")
        dataset_repo = gr.Textbox("youtube-titles-dpo", label="Dataset repo (NAME or OWNER/NAME)")
        dataset_private = gr.Checkbox(False, label="Private")
    screen_in = list(vote_screening())
    push_data = gr.Button("Push the dataset", variant="primary")
    with gr.Row():
        run = gr.Dropdown([], label="Model (a finished training run)", allow_custom_value=True)
        model_repo = gr.Textbox("youtube-titles-dpo-model", label="Model repo (NAME or OWNER/NAME)")
        base_model = gr.Textbox("", label="Base model id (if the run started from a folder)")
        adapter_only = gr.Checkbox(False, label="LoRA adapter only")
        model_private = gr.Checkbox(False, label="Private")
    push_run = gr.Button("Push the model", variant="primary")
    result = gr.Markdown()
    sync_line = gr.Markdown()

    def token_of(oauth_token: gr.OAuthToken | None) -> str | None:
        """The owner's token: their sign-in on a Space; locally None, which is HF_TOKEN."""
        if oauth_token is not None:
            return oauth_token.token
        if settings.on_space:  # the Space's HF_TOKEN belongs to the vote mirror, not visitors
            raise UserError("sign in with Hugging Face (the button at the top) to push")
        return None

    def send_dataset(
        kind,
        min_count,
        repo,
        private,
        screen_fast,
        gold_floor,
        screen_burst,
        oauth_token: gr.OAuthToken | None = None,
    ):
        votes = store.path if kind == VOTES_DATA else None
        pushed = publish_dataset(
            repo,
            votes=votes,
            min_votes=int(min_count or 1),
            private=bool(private),
            token=token_of(oauth_token),
            screening=screening(screen_fast, gold_floor, screen_burst),
        )
        return pushed.describe(markdown=True)

    def send_model(
        folder_path, repo, base, adapter, private, oauth_token: gr.OAuthToken | None = None
    ):
        if not folder_path:
            raise UserError("no finished training run to push: train a model first")
        pushed = publish_model(
            folder_path,
            repo,
            adapter_only=bool(adapter),
            base_model=base or None,
            private=bool(private),
            token=token_of(oauth_token),
        )
        return pushed.describe(markdown=True)

    def refresh():
        runs = [str(p) for p in finished_runs(runs_dir(folder))]
        if isinstance(mirror, VoteMirror):
            line = mirror.status().describe()
        else:
            line = mirror or (
                "Votes are not mirrored to the Hub (set TITLE_DPO_VOTES_REPO and HF_TOKEN to "
                "keep them safe on a Space)."
            )
        return gr.Dropdown(choices=runs, value=runs[0] if runs else None), line

    push_data.click(
        guard(OWNER, send_dataset),
        [data_source, min_votes, dataset_repo, dataset_private, *screen_in],
        result,
        api_name="hub_push_dataset",
    )
    push_run.click(
        guard(OWNER, send_model),
        [run, model_repo, base_model, adapter_only, model_private],
        result,
        api_name="hub_push_model",
    )
    gr.Button("Refresh").click(guard(OWNER, refresh), None, [run, sync_line], api_name="hub_status")
    return Wiring(guard(OWNER, refresh), [run, sync_line])


def serve(app: gr.Blocks, **launch_kwargs):
    """Launch with the queue and the voting keyboard shortcuts (Gradio 6 takes `head` here)."""
    # Gradio's upload route is open to every visitor; the app's only upload is a pairs CSV.
    launch_kwargs.setdefault("max_file_size", "20mb")
    # uvicorn would replace a loopback client's address with whatever its X-Forwarded-For
    # claims (a local script, or anyone through the --share tunnel): the app reads that header
    # itself, trusting only the proxies it is told of (`pipeline.access`).
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    return app.queue().launch(head=KEYBOARD_JS, **launch_kwargs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the YouTube title DPO app.")
    parser.add_argument("--model", default=None, help=f"Hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--data", default=None, help="data folder for votes (default ./app-data)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--hub-kernels",
        action="store_true",
        help=f"let transformers fetch and run its Hub kernels (as {hub_kernels.SETTING}=1 does)",
    )
    args = parser.parse_args()
    log_to_stderr()  # the project's own lines, as the CLI shows them
    if args.hub_kernels:
        os.environ[hub_kernels.SETTING] = "1"
    try:
        access = AccessSettings.from_env(shared=args.share)
        if access.shared and access.owner_password is None:
            # Through the share tunnel every visitor arrives on loopback, like the owner.
            raise UserError(
                "--share makes the app public: set TITLE_DPO_OWNER_PASSWORD first (owner "
                "actions will ask for it; voters need nothing)"
            )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    # A Space (or `kill`) stops the app with SIGTERM: let it close like Ctrl-C, so the exit
    # hooks run (the last vote sync to the Hub).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    serve(build_app(args.model, args.data, access), share=args.share)
