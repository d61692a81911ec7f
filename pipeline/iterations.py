"""On-policy iterations: a policy's own titles go to the voters, and the next policy learns
from their votes. (An evaluation *round* measures models; an *iteration* trains one.)

One iteration, top to bottom:

    start: the policy writes K titles for new ideas -> their pairs join the vote pool
           (`iteration:NAME`, served first) -> collect: votes per pair against a target
    -> train: DPO on those votes from the policy, measured against itself (iterative DPO)
    -> the trained policy starts the next iteration

Its whole state is in the vote store (the `iterations` table, its pool and the votes) and in
the run folder of its training.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipeline.datasets import idea_key, write_dataset_folder
from pipeline.errors import UserError
from pipeline.generation import GenerationSettings
from pipeline.ratings import NO_SCREENING, Screening, agreement, tally
from pipeline.recipes import DPORecipe, get_recipe
from pipeline.rounds import Generate, generate_with, unique_ideas
from pipeline.runs import run_ideas, run_summary
from pipeline.votes import IterationInfo, VoteStore

DEFAULT_K = 5  # titles per idea: 10 pairs per idea
DEFAULT_TARGET = 2  # votes per pair the owner aims for
# An iteration's pool is served before the tutorial's (0) and a round's (say 1), and each
# iteration before the earlier ones, which keep collecting votes after it.
PRIORITY = 10


@dataclass(frozen=True)
class IterationPlan:
    """An iteration checked before its policy loads."""

    name: str
    policy: str  # the model that writes the titles: a Hub id, a folder, a finished run
    parent: str | None  # the iteration whose trained policy this is
    ideas: list[str]
    ideas_from: str
    k: int
    target_votes: int
    left_out: int  # ideas dropped because the policy (or an earlier iteration) had them


@dataclass(frozen=True)
class IterationStatus:
    """How far an iteration's voting has come."""

    name: str
    policy: str  # the model that wrote its titles
    pairs: int
    votes: int
    voters: int
    pairs_at_target: int
    target_votes: int
    unanimous: float | None  # share of pairs with 2+ votes where every vote agrees
    trained: str | None

    @property
    def ready(self) -> bool:
        """Every pair has its target votes."""
        return self.pairs > 0 and self.pairs_at_target == self.pairs

    def describe(self) -> str:
        line = (
            f"iteration {self.name}: {self.votes} votes from {self.voters} voters; "
            f"{self.pairs_at_target} of {self.pairs} pairs have {self.target_votes}+ votes"
        )
        if self.unanimous is not None:
            line += f"; {self.unanimous:.0%} of pairs with 2+ votes unanimous"
        return line + (f"; trained: {self.trained}" if self.trained else "")


def plan_iteration(
    store: VoteStore,
    policy: str | None,
    ideas: list[str],
    ideas_from: str,
    *,
    name: str | None = None,
    k: int = DEFAULT_K,
    target_votes: int = DEFAULT_TARGET,
) -> IterationPlan:
    """The next iteration: from `policy`, or (None) from the last iteration's trained policy.
    Ideas the policy trained on, or an earlier iteration already asked about, are left out."""
    earlier = store.iterations()
    parent = earlier[-1].name if earlier and policy is None else None
    if policy is None:
        if not earlier or not earlier[-1].trained:
            raise UserError(
                "name the model to start from: there is no trained iteration to carry on from"
            )
        policy = earlier[-1].trained
    if not 2 <= k <= 10:
        raise UserError(f"an iteration's titles per idea are 2 to 10, not {k}")
    if target_votes < 1:
        raise UserError(f"the target is at least 1 vote per pair, not {target_votes}")
    seen = _ideas_seen(store, policy, earlier)
    asked = unique_ideas(ideas, ideas_from)
    fresh = [i for i in asked if idea_key(i) not in seen]
    if not fresh:
        raise UserError(f"every idea of {ideas_from} was trained on or asked about already")
    name = name or time.strftime("iteration-%Y%m%d-%H%M%S")
    left_out = len(asked) - len(fresh)
    return IterationPlan(name, policy, parent, fresh, ideas_from, k, target_votes, left_out)


def _ideas_seen(store: VoteStore, policy: str, earlier: list[IterationInfo]) -> set[str]:
    """The ideas (keys) the policy trained on (a finished run's) and earlier iterations'."""
    seen = {idea_key(i) for i in run_ideas(policy, "train")} if run_summary(policy) else set()
    return seen | {idea_key(i) for i in store.pool_ideas([i.pool for i in earlier])}


def start_iteration(
    store: VoteStore,
    plan: IterationPlan,
    settings: GenerationSettings | None = None,
    generate: Generate = generate_with,
) -> IterationInfo:
    """The policy writes K titles for each idea in one batched call (`generate`: on ZeroGPU,
    a GPU call); their pairs join the pool, served first, before earlier iterations'."""
    settings = replace(settings or GenerationSettings(), n=plan.k)
    titles = generate(plan.policy, plan.ideas, settings)
    return store.add_iteration(
        plan.name,
        plan.policy,
        [t for group in titles for t in group],
        parent=plan.parent,
        k=plan.k,
        ideas_from=plan.ideas_from,
        target_votes=plan.target_votes,
        settings=asdict(settings),
        priority=PRIORITY + len(store.iterations()),
    )


def iteration_status(store: VoteStore, name: str) -> IterationStatus:
    return iteration_statuses(store, [store.iteration_info(name)])[0]


def iteration_statuses(
    store: VoteStore, iterations: list[IterationInfo] | None = None
) -> list[IterationStatus]:
    """The status of each iteration (default: every one), from one reading of the votes."""
    iterations = store.iterations() if iterations is None else iterations
    pairs = {p.name: p.pairs for p in store.pools()}
    every_vote = store.votes()
    found = []
    for info in iterations:
        votes = [v for v in every_vote if v.pool == info.pool]
        at_target = sum(t.total >= info.target_votes for t in tally(votes))
        found.append(
            IterationStatus(
                info.name,
                info.policy,
                pairs.get(info.pool, 0),
                len(votes),
                len({v.voter for v in votes}),
                at_target,
                info.target_votes,
                agreement(votes).unanimous,
                info.trained,
            )
        )
    return found


def iteration_screening(
    store: VoteStore, name: str, screening: Screening = NO_SCREENING, earlier: bool = False
) -> Screening:
    """`screening` restricted to the iteration's votes (and, with `earlier`, to those of the
    iterations before it too)."""
    names = [i.name for i in store.iterations()]
    chosen = names[: names.index(store.iteration_info(name).name) + 1] if earlier else [name]
    return replace(screening, pools=tuple(f"iteration:{n}" for n in chosen))


def write_iteration_data(
    store: VoteStore,
    name: str,
    out: str | Path,
    *,
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
    earlier: bool = False,
) -> dict:
    """The iteration's votes (majority per pair, screened) as a dataset folder, split by
    idea; with `earlier`, the earlier iterations' votes too."""
    chosen = iteration_screening(store, name, screening, earlier)
    return write_dataset_folder(out, store.path, "idea", min_votes, chosen)


def iteration_recipe(recipe: DPORecipe | None = None) -> DPORecipe:
    """The recipe of an iteration's training: DPO from the policy, measured against the
    policy itself (iterative DPO), so no SFT stage: the policy already answers in format."""
    return (recipe or get_recipe()).changed(sft_epochs=0)


def train_iteration(
    store: VoteStore,
    name: str,
    out: str | Path,
    recipe: DPORecipe | None = None,
    *,
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
    earlier: bool = False,
    max_steps: int | None = None,
):
    """The next policy: the iteration's votes in OUT/data, DPO from its policy in OUT/model
    (`iteration_recipe`), its held-out pairs scored; recorded as the iteration's trained
    policy, which the next iteration starts from."""
    from pipeline.methods import score_run, train_run

    info = store.iteration_info(name)
    out = Path(out)
    write_iteration_data(
        store, name, out / "data", min_votes=min_votes, screening=screening, earlier=earlier
    )
    result = train_run(
        out / "data", out / "model", info.policy, iteration_recipe(recipe), max_steps=max_steps
    )
    result = score_run(result)
    if result.finished:
        store.set_iteration_trained(name, result.out)
    return result


def train_iteration_in_app(
    runner,
    store: VoteStore,
    name: str,
    runs: str | Path,
    recipe: DPORecipe | None = None,
    *,
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
    earlier: bool = False,
    max_steps: int | None = None,
    chunked: bool = False,
) -> Path:
    """`train_iteration` through the app's runner (`pipeline.runner.TrainingRunner`: a run
    folder in `runs`, Stop and Resume, ZeroGPU chunks): the next policy is recorded as the
    iteration's when the run finishes. Returns the run folder."""
    info = store.iteration_info(name)

    def write_data(out: Path) -> None:
        write_iteration_data(
            store, name, out, min_votes=min_votes, screening=screening, earlier=earlier
        )

    return runner.start_run(
        runs,
        write_data,
        model_name=info.policy,
        recipe=iteration_recipe(recipe),
        max_steps=max_steps,
        chunked=chunked,
        on_done=lambda result: store.set_iteration_trained(name, result.out),
    )
