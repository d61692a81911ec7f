"""The lock on every event: `Guard` wraps each handler with the role it demands and is the
only place where an error becomes the `gr.Error` a page shows; `RoleFirstBlocks` checks the
role before Gradio even reads an event's inputs; `UploadGate` holds Gradio's routes that
take files, which are no events, to the roles too, and `BodyLimit` bounds what any other
request may send."""

from __future__ import annotations

import inspect
import logging
import re
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.access import OPEN_ROLES, Gatekeeper, Refused, RequestFacts, TooMany
from pipeline.errors import GpuCallError, UserError, is_full_disk

log = logging.getLogger(__name__)

# What anyone is told whose request found the app's disk full, a voter included: nothing of it
# was kept (SQLite rolls the vote back), and who can fix it.
FULL_DISK = (
    "The app's disk is full, so nothing was saved. Whoever runs the app can free space: the "
    "Hub tab's *Runs on this disk* lists every run with its size."
)


@dataclass(frozen=True)
class Said:
    """Where an event's refusal or failure is said on its page: `output`, after `before`."""

    output: Any  # a Gradio component the event updates
    before: str


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

    def __call__(
        self, role: str, fn: Callable, spread: int = 0, says_in: Said | None = None
    ) -> Callable:
        """`spread`: for an fn with `*values`, how many inputs those are (Gradio passes each
        input as a parameter of its own). A keyword-only parameter after them (an OAuth
        token) is one more input for Gradio, handed to `fn` by its name. `says_in`: for an
        unqueued event, whose page shows no error (Gradio 6.31 shows an unqueued event's
        `gr.Error` nowhere, and puts an "Error" badge over its outputs), the output and the
        words before the message it is shown in instead."""
        keeper = self.keeper
        signature = inspect.signature(fn)
        wants = [name for name in ("caller", "facts") if name in signature.parameters]
        params, by_name = _inputs_of(fn, signature, wants, spread)
        extra = [
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=hint
            )
            for name, hint in self.EXTRA
        ]

        def handler(*args):
            *args, request, profile = args
            named = dict(zip(by_name, args[len(args) - len(by_name) :], strict=True))
            args = args[: len(args) - len(by_name)]
            facts = request_facts(request, profile)
            caller = keeper.caller(facts)
            given = {"caller": caller, "facts": facts}
            try:
                keeper.require(caller, role)
                return fn(*args, **named, **{name: given[name] for name in wants})
            except Exception as exc:
                if (shown := page_error(exc, handler.__name__)) is None:
                    raise  # a bug: Gradio logs its traceback
                if says_in is not None:
                    words = shown.message[:1].upper() + shown.message[1:]
                    return {says_in.output: f"{says_in.before} {words}"}
                raise shown from None

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
        if role is None or role in OPEN_ROLES:  # nobody to refuse: spare the vote path
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


def _inputs_of(
    fn: Callable, signature: inspect.Signature, wants: list[str], spread: int
) -> tuple[list[inspect.Parameter], list[str]]:
    """The parameters Gradio passes `fn`'s inputs to, in order (`*values` spread into as many,
    the injected `wants` left out), and the names of those `fn` takes by keyword only."""
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    params, by_name = [], []
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            if not spread:
                raise TypeError(f"{fn.__name__}(*{p.name}): say how many inputs (spread=)")
            params += [
                inspect.Parameter(f"{p.name}_{i}", p.POSITIONAL_OR_KEYWORD) for i in range(spread)
            ]
        elif p.name not in wants:
            if p.kind is p.KEYWORD_ONLY:
                by_name.append(p.name)
                p = p.replace(kind=p.POSITIONAL_OR_KEYWORD)
            params.append(p.replace(annotation=hints.get(p.name, inspect.Parameter.empty)))
    return params, by_name


def page_error(exc: Exception, event: str) -> gr.Error | None:
    """What the page shows for `exc`, raised by the handler of `event`: a UserError's or a GPU
    call's words, or that the disk is full; None for a bug."""
    if isinstance(exc, UserError | GpuCallError):
        return gr.Error(as_the_person_named_it(str(exc)))
    if is_full_disk(exc):
        log.exception("%s: the disk is full", event)  # where the owner reads what failed
        return gr.Error(FULL_DISK)
    return None


# Gradio hands a handler an uploaded file as its copy in Gradio's cache, inside a folder
# named by the file's SHA-256.
GRADIO_COPY = re.compile(r"/\S*/[0-9a-f]{64}/")


def as_the_person_named_it(message: str) -> str:
    """`message` with each uploaded file named as the person's own file was ("pairs.csv:
    missing column ..."), not by the server's copy of it."""
    return GRADIO_COPY.sub("", message)


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


class UploadGate:
    """ASGI middleware in front of Gradio's routes that take files, which are no events: any
    page, or script, can reach them. The upload route keeps every file it is sent on the
    server's disk; the screen-recording route runs ffmpeg on what it is sent. The caller is
    resolved from the request as for an event, and `Gatekeeper.admit_upload` decides.
    Refused: 403 (429 over the limit), with the reason as text, before a byte of the file is
    read. It sits inside Gradio's session middleware, so a Hugging Face sign-in is known
    here."""

    ROUTES = ("/gradio_api/upload", "/gradio_api/process_recording")

    def __init__(self, app: ASGIApp, keeper: Gatekeeper) -> None:
        self.app, self.keeper = app, keeper

    @classmethod
    def guards(cls, scope: Scope) -> bool:
        """Whether the request is one to a route that takes files."""
        return scope["type"] == "http" and scope["path"].rstrip("/").endswith(cls.ROUTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.guards(scope):
            request = Request(scope)
            caller = self.keeper.caller(request_facts(request, signed_in_profile(request)))
            try:  # the limit's count is written to disk: off the event loop
                await run_in_threadpool(self.keeper.admit_upload, caller)
            except Refused as exc:
                status = 429 if isinstance(exc, TooMany) else 403
                await PlainTextResponse(str(exc), status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware that refuses a request body over `limit` bytes (413), read no further:
    Gradio reads an event's whole JSON into memory and keeps it queued until the event runs,
    so one script sending a few hundred MB as a vote would take the server's memory. The
    routes that take files are left to Gradio's own limit, which it checks as it streams
    them to disk (`max_file_size`)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or UploadGate.guards(scope):
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        # No length declared (or a false one): read the body here, up to the limit, and hand
        # the app what was read, then the connection's own messages (a disconnect).
        messages, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            messages.append(message)
            more = message.get("more_body", False)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        text = f"request too large: at most {self.limit // 2**20} MB"
        await PlainTextResponse(text, status_code=413)(scope, receive, send)


def signed_in_profile(request: gr.Request | Request) -> gr.OAuthProfile | None:
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


def request_facts(
    request: gr.Request | Request | None, profile: gr.OAuthProfile | None
) -> RequestFacts:
    """What the server knows of a request's sender, in the library's terms (a plain HTTP
    request, not an event's, belongs to no page: no session)."""
    if request is None:  # called from Python, not over HTTP
        return RequestFacts(None)
    orgs = (profile or {}).get("orgs") or []
    return RequestFacts(
        client_host=request.client.host if request.client else None,
        forwarded_for=request.headers.get("x-forwarded-for"),
        session=getattr(request, "session_hash", None),
        username=profile.username if profile is not None else None,
        orgs=tuple(o["preferred_username"] for o in orgs if o.get("preferred_username")),
    )
