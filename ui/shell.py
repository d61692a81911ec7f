"""The app's frame: the parts every tab shares, the tabs themselves, what each visitor may see,
and `serve`. A new tab is a module in `ui/tabs/` and one entry in `TABS`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import ModuleType

import gradio as gr
from starlette.middleware import Middleware

from hub.sync import mirror_for_app
from pipeline import hub_kernels
from pipeline.access import (
    AccessSettings,
    Caller,
    Gatekeeper,
    RequestFacts,
    keep_server_from_trusting_forwarded_headers,
)
from pipeline.appdata import data_dir, tutorial_pool_wanted
from pipeline.models import ModelChoice
from pipeline.runner import TrainingRunner
from pipeline.tracking import use_tracking_dir
from pipeline.votes import VoteStore
from ui.context import AppParts, Context, TabParts, Wiring
from ui.guard import BodyLimit, Guard, RoleFirstBlocks, UploadGate
from ui.sign_in import OwnerSignIn, describe_caller
from ui.tabs import evaluate, generate, hub, iterations, leaderboard, pools, train, vote

# The project's own log lines go to the `pipeline` loggers (pipeline.logs).
log = logging.getLogger("pipeline.app")
# Events waiting at once, all visitors together: a class opening the link in the same second
# queues a few events per page; the bound only keeps a flood from growing without end.
QUEUE_MAX_SIZE = 2000
MAX_UPLOAD = "5mb"  # a pairs CSV of the tutorial's 1,140 pairs is about 150 KB
# Any other request: an event's inputs (a vote is some 200 bytes; the owner's longest, ideas
# typed one per line, are some 30 bytes an idea).
MAX_REQUEST = 2**20
# Every file a handler returns, or a page uploads, is copied into Gradio's cache: each hour,
# the copies over a day old go (a page open longer loses its download link).
CACHE_KEPT = (3600, 86400)
# Gradio writes a table, its headers and its rows, in its monospace font; titles and ideas are
# prose, and in the app's own font a word takes about a fifth less room: on a phone every word
# of the tutorial's titles then fits the Leaderboard's title column instead of breaking
# mid-word, and the headers match the rest of the page.
PAGE_CSS = ".table-wrap table, .table-wrap .body-cell { font-family: var(--font); }"


def page_theme() -> gr.themes.Base:
    """Gradio's default theme, its fonts' semibold (600) left out. Gradio 6.31 ships Source
    Sans Pro and IBM Plex Mono semibold files that hold a Cyrillic subset and two Latin
    letters each ("A" and "B"; "a" and "b"): "A is better" drew its A in Source Sans and the
    rest in whatever font the system had. Without a 600 face, a weight of 600 or more takes the
    complete bold file."""
    return gr.themes.Default(
        font=(gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif",
              "system-ui", "sans-serif"),
        font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700)), "ui-monospace",
                   "Consolas", "monospace"),
    )  # fmt: skip


TABS: tuple[ModuleType, ...] = (
    vote,
    generate,
    leaderboard,
    train,
    evaluate,
    iterations,
    pools,
    hub,
)


def build_app(
    model_name: str | None = None,
    data: str | None = None,
    access: AccessSettings | None = None,
    tutorial_pool: bool | None = None,
) -> gr.Blocks:
    """The app. `access` says who is the owner and how voters are held (default: from the
    environment, as `AccessSettings.from_env` reads it); `tutorial_pool` whether an empty
    store gets the tutorial's pairs (default: `appdata.tutorial_pool_wanted`)."""
    parts = open_parts(model_name, data, access, tutorial_pool)
    guard = parts.guard
    with RoleFirstBlocks(guard, title="YouTube title DPO", delete_cache=CACHE_KEPT) as app:
        gr.Markdown("# YouTube titles, tuned on human preferences")
        with gr.Row():
            role_line = gr.Markdown(elem_id="role-line")
            sign_out = gr.Button("Sign out", visible=False, size="sm", scale=0)
            if parts.settings.on_space:  # Gradio's sign-in needs a Space
                gr.LoginButton()
        sign_in = OwnerSignIn(parts.keeper, guard, sign_out)
        ctx = Context.on_page(parts, gr.Markdown("", elem_id="model-status"))
        owner_pass = gr.BrowserState(None, storage_key="title-dpo-owner")  # after the password
        pages: list[tuple[gr.Tab, ModuleType, TabParts]] = []
        for module in TABS:
            with gr.Tab(module.TITLE, visible=module.SHOWN_TO == "anyone") as page:
                pages.append((page, module, module.build(ctx)))
        wire_pages(app, ctx, pages, role_line, sign_in, owner_pass)
    guard.check_every_event(app)
    return app


def open_parts(
    model_name: str | None,
    data: str | None,
    access: AccessSettings | None,
    tutorial_pool: bool | None = None,
) -> AppParts:
    """The app's shared parts (all of `Context` but the page's own components), with the
    start-up work done: the data folder, the gatekeeper, the first pool, the vote mirror."""
    folder = Path(data or data_dir())
    use_tracking_dir(folder)  # every training run's trackio database: DATA/trackio
    store = VoteStore.in_folder(folder)
    settings = access or AccessSettings.from_env()
    keeper = Gatekeeper.for_folder(settings, folder)
    log.info("%s", settings.describe())
    hub_kernels.use_hub_kernels()  # decided and logged once, before any model loads
    if tutorial_pool is None:
        tutorial_pool = tutorial_pool_wanted()
    if tutorial_pool and (added := store.seed_if_empty()):
        log.info("Empty vote store: loaded the tutorial's %d pairs as the first pool", added)
    return AppParts(
        store=store,
        keeper=keeper,
        guard=Guard(keeper),
        settings=settings,
        folder=folder,
        # the model the Generate tab uses; the Train tab's "use this model" changes it
        generator=ModelChoice.for_app(model_name),
        starting_model=ModelChoice.for_app(model_name),
        runner=TrainingRunner(),
        # On a Space the disk is wiped on restart: the votes come back from their Hub mirror
        # (misconfigured: the app serves anyway, and says so on the Hub tab).
        mirror=mirror_for_app(store, folder),
    )


def wire_pages(
    app: gr.Blocks,
    ctx: Context,
    pages: list[tuple[gr.Tab, ModuleType, TabParts]],
    role_line: gr.Markdown,
    sign_in: OwnerSignIn,
    owner_pass: gr.BrowserState,
) -> None:
    """What each visitor sees (the server decides; hiding is a courtesy, not the lock), what
    runs when the page loads, and what runs when a tab is opened."""
    keeper, guard, settings = ctx.keeper, ctx.guard, ctx.settings
    guarded_pages = [(page, module.SHOWN_TO) for page, module, _ in pages
                     if module.SHOWN_TO != "anyone"]  # fmt: skip
    owner_parts = [part for _, _, parts in pages for part in parts.owner_parts]

    def show_role(*, caller: Caller) -> dict:
        can_sign_in = settings.owner_password is not None
        return {
            role_line: describe_caller(caller, settings),
            sign_in.box: gr.Accordion(visible=can_sign_in and not caller.is_owner),
            sign_in.sign_out: gr.Button(visible=caller.how == "password"),
            **{page: gr.Tab(visible=keeper.allows(caller, role)) for page, role in guarded_pages},
            **{part: gr.update(visible=caller.is_owner) for part in owner_parts},
        }

    def open_page(kept_pass: str | None, *, facts: RequestFacts) -> dict:
        return show_role(caller=keeper.resume(facts, kept_pass))

    role_outputs = [role_line, sign_in.box, sign_in.sign_out,
                    *(page for page, _ in guarded_pages), *owner_parts]  # fmt: skip
    after_role = [parts.on_role for _, _, parts in pages if parts.on_role]
    if filling := owner_values_filled(guard, pages):
        after_role.append(filling)
    # What follows the role waits for it: an owner pass may make this page the owner's.
    event = app.load(guard("anyone", open_page), owner_pass, role_outputs, api_name="my_role")
    for wiring in after_role:
        event = event.then(
            wiring.fn,
            wiring.inputs,
            wiring.outputs,
            api_name=wiring.api_name,
            api_visibility="public" if wiring.api_name else "private",
        )
    for _, _, parts in pages:
        if parts.on_load:
            w = parts.on_load
            app.load(w.fn, w.inputs, w.outputs, api_name=w.api_name)
    sign_in.wire(show_role, role_outputs, after_role, owner_pass)
    polls = [parts.poll for _, _, parts in pages if parts.poll]
    for page, _, parts in pages:
        # Only a page showing a polling tab polls.
        page.select(
            guard("anyone", lambda mine=parts.poll: {p: gr.Timer(active=p is mine) for p in polls}),
            None,
            polls,
            queue=False,
            api_visibility="private",
        )
        for w in parts.on_open:
            page.select(w.fn, w.inputs, w.outputs, api_visibility="private")


def owner_values_filled(
    guard: Guard, pages: list[tuple[gr.Tab, ModuleType, TabParts]]
) -> Wiring | None:
    """What fills the tabs' `owner_values` once the role is known: the owner's values on the
    owner's page (what the owner typed already is kept), nothing on a voter's."""
    values = {box: text for _, _, parts in pages for box, text in parts.owner_values.items()}
    if not values:
        return None

    def fill(*shown: str, caller: Caller) -> list[str]:
        if not caller.is_owner:
            return [""] * len(shown)
        return [
            now or (text() if callable(text) else text)
            for now, text in zip(shown, values.values(), strict=True)
        ]

    boxes = list(values)
    return Wiring(guard("anyone", fill, spread=len(boxes)), boxes, inputs=boxes)


def serve(app: RoleFirstBlocks, *, prevent_thread_lock: bool = False, **launch_kwargs) -> None:
    """Launch with the queue and the voting keyboard shortcuts (Gradio 6 takes `head` here),
    and serve until stopped (Ctrl-C, or the SIGTERM a Space sends); with
    `prevent_thread_lock`, return once it serves (an app in a test's own process)."""
    # Gradio's routes are open to every page, and script: `UploadGate` holds those that take
    # files to the roles, `BodyLimit` bounds what the others are sent, and the app's uploads
    # (ideas, pairs CSVs) are small.
    launch_kwargs.setdefault("max_file_size", MAX_UPLOAD)
    app_kwargs = launch_kwargs.setdefault("app_kwargs", {})
    app_kwargs["middleware"] = [
        *app_kwargs.get("middleware", []),
        Middleware(UploadGate, keeper=app.guard.keeper),
        Middleware(BodyLimit, limit=MAX_REQUEST),
    ]
    keep_server_from_trusting_forwarded_headers()
    # Gradio's run history keeps every call's inputs in the browser and shows them at
    # /gradio_api/runs: the owner password typed into the sign-in box too, readable by the
    # next person at a shared computer. Off: nothing recorded, the page gone, old runs deleted.
    launch_kwargs["run_history"] = False
    # On a ZeroGPU Space Gradio lets one event wait in the queue unless told otherwise: a second
    # visitor opening the page while another's page loads was refused "Queue is full".
    app.queue(max_size=QUEUE_MAX_SIZE).launch(
        head=vote.KEYBOARD_HEAD,
        css=PAGE_CSS,
        theme=page_theme(),
        prevent_thread_lock=True,
        **launch_kwargs,
    )
    if prevent_thread_lock:
        return
    try:
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        # `close` ends the open pages' heartbeat streams, then stops the server. Gradio's own
        # wait (`launch` without prevent_thread_lock) stops the server alone, which then
        # waits 5 s on those streams before the exit hooks (the last vote sync) can run.
        print("Stopping: closing the server.", flush=True)
        app.close()
