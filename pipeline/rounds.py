"""Evaluation rounds: two or more models write titles for the same ideas, and the titles go to
voters as blind pairs.

A round is planned (`plan_round`: which models, which ideas, K titles each) and then created
(`create_round`: each model writes its titles in one batched call, then the store adds the
round's pairs to the voting pool in one transaction). Models are named as `load_model` takes
them: a Hub id, a folder, or a finished run's model folder, which brings its stages along: the
model the run started from ("base") and, for a recipe with an SFT stage, that stage's model,
so that a round shows what the preference step adds beyond the format fix.

Ideas come from a run's held-out split (ideas no model in the round trained on), a file (one
idea per line), typed text, or the shipped fresh ideas (`data/fresh-ideas/ideas.txt`: written
for this project, none of them among the tutorial's 114).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.datasets import idea_key
from pipeline.errors import UserError
from pipeline.generation import GenerationSettings, Title, generate_titles
from pipeline.methods import refuse_reward_model
from pipeline.models import is_saved_model
from pipeline.prompts import check_idea
from pipeline.round_tables import RoundInfo, RoundTitle, check_round_name

# run_summary, run_ideas and run_model_folder moved to pipeline.runs; this module still
# answers for them (tests import them from here): drop them from here in 0.2
from pipeline.runs import (
    SFT_STAGE,
    model_place,
    model_version,
    run_ideas,
    run_model_folder,
    run_name,
    run_summary,
)
from pipeline.votes import VoteStore
from pipeline.wording import counted

FRESH_IDEAS = Path(__file__).resolve().parent.parent / "data" / "fresh-ideas" / "ideas.txt"
MAX_ROUND_IDEAS = 500
MAX_K = 8


@dataclass(frozen=True)
class RoundModel:
    label: str  # what the report calls it (never shown to voters)
    name: str  # what `load_model` takes
    # a run's model as it was when the round was made (`runs.model_version`): resumed and
    # trained on since, it is another model, which the round's votes do not speak for
    version: str | None = None


@dataclass(frozen=True)
class RoundPlan:
    name: str
    models: list[RoundModel]
    ideas: list[str]
    ideas_from: str
    k: int = 1
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    trained_on: list[str] = field(default_factory=list)  # ideas some model in it trained on
    # Its pairs served before every other pool's: a round is made to be voted on now, and
    # beside the tutorial's 1,140 pairs (same priority, fewest votes first) it would get few.
    serve_first: bool = True

    def describe(self) -> str:
        models = ", ".join(
            f"{m.label} ({m.name})" if m.label != m.name else m.name for m in self.models
        )
        line = (
            f"Round {self.name!r}: {models}; {counted(len(self.ideas), 'idea')} "
            f"({self.ideas_from}), {self.k} title(s) per model per idea"
        )
        if self.trained_on:
            line += f"; {len(self.trained_on)} of the ideas were in a model's training data"
        return line


# --- ideas -----------------------------------------------------------------------------------


def unique_ideas(ideas: Sequence[str], where: str) -> list[str]:
    """Ideas checked, in order, without repeats (ideas differing in case are one prompt)."""
    seen: dict[str, str] = {}
    for number, idea in enumerate(ideas, 1):
        try:
            checked = check_idea(idea)
        except UserError as exc:
            raise UserError(f"{where}, idea {number}: {exc}") from None
        seen.setdefault(idea_key(checked), checked)
    if not seen:
        raise UserError(f"{where}: no ideas")
    if len(seen) > MAX_ROUND_IDEAS:
        raise UserError(f"{where}: {len(seen)} ideas; a round takes at most {MAX_ROUND_IDEAS}")
    return list(seen.values())


def ideas_from_text(text: str, where: str = "the typed ideas") -> list[str]:
    """One idea per line; blank lines and lines starting with # are skipped."""
    lines = [line.strip() for line in text.splitlines()]
    return unique_ideas([line for line in lines if line and not line.startswith("#")], where)


def ideas_from_file(path: str | Path) -> list[str]:
    """A text file with one idea per line, or a CSV with an `Idea` column (the tutorial's)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        from pipeline.pairs import read_ideas_csv

        return unique_ideas(read_ideas_csv(path), str(path))
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return ideas_from_text(text, str(path))


def fresh_ideas() -> list[str]:
    """The shipped ideas for models trained on the tutorial's data."""
    return ideas_from_file(FRESH_IDEAS)


# Where a round's ideas come from: the shipped fresh ideas, the chosen runs' held-out split,
# typed text, or a file.
IDEA_SOURCES = ("fresh", "held-out", "typed", "file")


def round_ideas(
    source: str, text: str = "", path: str | Path | None = None
) -> tuple[list[str] | None, str | None]:
    """(the ideas, where they came from) for `source`, one of IDEA_SOURCES; (None, None) for
    the held-out split, which `plan_round` finds in the runs themselves."""
    if source == "fresh":
        return fresh_ideas(), f"the shipped fresh ideas ({FRESH_IDEAS.name})"
    if source == "held-out":
        return None, None
    if source == "typed":
        return ideas_from_text(text or ""), "typed ideas"
    if source == "file":
        return (ideas_from_file(path) if path else []), f"the ideas file {Path(path or '').name}"
    raise UserError(f"unknown source of ideas {source!r}: one of {', '.join(IDEA_SOURCES)}")


# --- runs: their stages and their data -------------------------------------------------------


def held_out_ideas(
    models: Sequence[RoundModel], trained: set[str], runs: Sequence[str] = ()
) -> list[str]:
    """The held-out ideas of `runs` (default: the round's runs) that are not in `trained`
    (what the round's models trained on, `trained_on`)."""
    runs = list(runs) or [m.name for m in models if run_summary(m.name)]
    if not runs:
        raise UserError(
            "held-out ideas come from a finished run: name one, or put one in the round"
        )
    ideas = [i for run in runs for i in run_ideas(run, "valid") if idea_key(i) not in trained]
    if not ideas:
        raise UserError("the runs hold out no idea that no model in the round trained on")
    return unique_ideas(ideas, "the held-out ideas")


def trained_on(models: Sequence[RoundModel]) -> set[str]:
    """The ideas (keys) any run in the round trained on; a Hub model's are unknown."""
    return {idea_key(i) for m in models if run_summary(m.name) for i in run_ideas(m.name, "train")}


def round_models(names: Sequence[str], stages: bool = True) -> list[RoundModel]:
    """The models named, in order, without repeats, each with the label the report uses: a
    Hub id itself, a folder its name. With `stages`, a finished run's model folder brings its
    starting model ("base: ...") and its SFT stage ("... SFT") ahead of it ("... tuned"),
    unless they are named already."""
    models: dict[str, RoundModel] = {}

    def add(label: str, name: str) -> None:
        key = model_place(name)
        if key not in models:
            models[key] = RoundModel(label, name, model_version(name))

    for raw in names:
        name = raw.strip()
        if not name:
            continue
        summary = run_summary(name)
        if summary is None:
            add(short_name(name), name)
            continue
        refuse_reward_model(summary, name, "use it as the round's judge")
        run = run_name(name)
        if stages and summary.get("started_from"):
            add(f"base: {summary['started_from']}", summary["started_from"])
        sft = Path(name) / SFT_STAGE
        if stages and is_saved_model(sft):
            add(f"{run} SFT", str(sft))
        add(f"{run} tuned", name)
    found = list(models.values())
    if len(found) < 2:
        raise UserError(f"a round compares two or more models; got {[m.name for m in found]}")
    # two folders of the same name: those are called by their whole path
    labels = [m.label for m in found]
    return [replace(m, label=m.name) if labels.count(m.label) > 1 else m for m in found]


def short_name(model: str) -> str:
    """How a report calls a model: a Hub id by its id, a folder by its name; but a run's model
    (RUN/model: every run's is called "model") by its run's, and a run's SFT stage (RUN/sft)
    as "RUN SFT", as a round of a finished run calls them."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    return f"{run_name(path)} SFT" if path.name == SFT_STAGE else run_name(path)


# --- planning and creating -------------------------------------------------------------------


def plan_round(
    names: Sequence[str],
    ideas: Sequence[str] | None = None,
    ideas_from: str | None = None,
    k: int = 1,
    name: str | None = None,
    stages: bool = True,
    seed: int | None = 0,
    held_out_of: str | None = None,
    serve_first: bool = True,
) -> RoundPlan:
    """Everything a round needs, checked before any model loads. `ideas=None`: the held-out
    ideas of the run `held_out_of` (default: of the round's runs)."""
    if not 1 <= k <= MAX_K:
        raise UserError(f"titles per model per idea must be between 1 and {MAX_K}, not {k}")
    from pipeline.models import refuse_stand_in

    name = check_round_name(name or time.strftime("round-%Y%m%d-%H%M%S"))
    models = round_models(names, stages)
    for model in models:  # a missing folder or an unknown Hub id, before any generation
        refuse_stand_in(model.name, "the round's titles for it")
    trained = trained_on(models)
    if ideas is None:
        runs = [run_model_folder(held_out_of)] if held_out_of else []
        ideas = held_out_ideas(models, trained, runs)
        ideas_from = f"held-out ideas of {run_name(runs[0]) if runs else 'the round runs'}"
    else:
        ideas = unique_ideas(ideas, ideas_from or "the ideas")
    return RoundPlan(
        name=name,
        models=models,
        ideas=list(ideas),
        ideas_from=ideas_from or "given",
        k=k,
        settings=GenerationSettings(n=k, seed=seed),
        trained_on=[i for i in ideas if idea_key(i) in trained],
        serve_first=serve_first,
    )


def generate_with(
    model_name: str, ideas: list[str], settings: GenerationSettings
) -> list[list[Title]]:
    """One model's titles for every idea, batched (`generate_titles`), from a private copy
    that is freed afterwards: a round may hold several models, and each is used once."""
    from pipeline.models import load_model

    return generate_titles(load_model(model_name, fresh=True), ideas, settings)


Generate = Callable[[str, list[str], GenerationSettings], list[list[Title]]]


def create_round(
    store: VoteStore,
    plan: RoundPlan,
    generate: Generate = generate_with,
    on_model: Callable[[RoundModel], None] = lambda model: None,
) -> RoundInfo:
    """Each model writes K titles per idea (`generate`: one batched call per model; the app
    passes the ZeroGPU one), then the round and its pairs are stored in one transaction:
    nothing is stored if any model fails."""
    if any(r.name == plan.name for r in store.rounds()):
        raise UserError(f"there is already a round called {plan.name!r}")
    titles: list[RoundTitle] = []
    for model in plan.models:
        on_model(model)
        for group in generate(model.name, plan.ideas, plan.settings):
            titles += [
                RoundTitle(model.label, t.idea, sample, t.text or "(no title)", t.raw)
                for sample, t in enumerate(group)
            ]
    settings = {**asdict(plan.settings), "trained_on": plan.trained_on}
    info = store.add_round(
        plan.name,
        [asdict(m) for m in plan.models],
        titles,
        plan.k,
        plan.ideas_from,
        settings,
    )
    if plan.serve_first and info.own_pairs:  # (none: every pair was in an earlier pool)
        store.serve_first(info.pool)
    return info
