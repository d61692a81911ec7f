"""What the shell gives every tab (`Context`), and what a tab gives back (`TabParts`): the
only contract between `ui.shell` and `ui/tabs/`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import gradio as gr

from hub.sync import VoteMirror
from pipeline.access import AccessSettings, Gatekeeper
from pipeline.models import ModelChoice
from pipeline.runner import TrainingRunner
from pipeline.votes import VoteStore
from ui.guard import Guard


@dataclass(frozen=True)
class AppParts:
    """The app's parts that are not on the page, made once at start-up (`shell.open_parts`)."""

    store: VoteStore
    keeper: Gatekeeper
    guard: Guard
    settings: AccessSettings
    folder: Path  # the data folder: votes, runs, limits
    generator: ModelChoice  # the model Generate uses; the Train tab can change it
    starting_model: ModelChoice  # the model the app started with, whatever Generate uses later
    runner: TrainingRunner
    mirror: VoteMirror | str | None  # the votes' Hub mirror, or why there is none, or None


@dataclass(frozen=True)
class Context(AppParts):
    """What every tab's `build` is given: the app's parts, and the page's shared components."""

    status: gr.Markdown  # the model line at the top of the page

    @classmethod
    def on_page(cls, parts: AppParts, status: gr.Markdown) -> Context:
        return cls(**{f.name: getattr(parts, f.name) for f in fields(AppParts)}, status=status)


@dataclass(frozen=True)
class Wiring:
    """A guarded handler and what it reads and writes, for an event the shell wires (a page
    load, a tab being opened, the caller's role becoming known)."""

    fn: Callable
    outputs: Sequence[Any]
    inputs: Sequence[Any] | None = None
    api_name: str | None = None  # None: not part of the app's API


@dataclass(frozen=True)
class TabParts:
    """What a tab's `build(ctx)` hands the shell."""

    owner_parts: Sequence[Any] = ()  # parts of a tab open to voters that only the owner sees
    # Fields filled in for the owner alone (a voter's page gets them empty): a value given
    # when the page is built is in its config, which every visitor can read, and the app's
    # model may be a folder on the owner's disk. A function gives its value when it is
    # filled in (what it asks, the Hub say, is asked only then, and only for the owner).
    owner_values: Mapping[Any, str | Callable[[], str]] = field(default_factory=dict)
    on_open: Sequence[Wiring] = ()  # run when the tab is opened
    on_load: Wiring | None = None  # run when the page loads
    on_role: Wiring | None = None  # run once the caller's role is known (page load, sign-in)
    poll: gr.Timer | None = None  # ticks only while the tab is open
