"""On-policy iterations: a policy's own titles go to the voters, and the next policy learns
from their votes. (An evaluation *round* measures models; an *iteration* trains one.)

One iteration, top to bottom:

    start: the policy writes K titles for new ideas -> their pairs join the vote pool
           (`iteration:NAME`, served first) -> collect: votes per pair against a target
    -> train: DPO on those votes from the policy, measured against itself (iterative DPO),
       by hand or once every pair has its target votes (`due_for_training`)
    -> judge: an evaluation round, the trained policy against the policy before it and the
       first iteration's, on ideas kept for judging (`judge_ideas`), in the same link
    -> the trained policy starts the next iteration; `pipeline.iteration_report` follows them

Its whole state is in the vote store (the `iterations` table, its pool, its judging round and
the votes) and in the run folder of its training.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.datasets import idea_key, write_dataset_folder
from pipeline.errors import UserError
from pipeline.generation import GenerationSettings
from pipeline.iteration_tables import IterationInfo
from pipeline.ratings import NO_SCREENING, Screening, agreement, tally
from pipeline.recipes import DPORecipe, RewardRecipe, RLRecipe, get_recipe
from pipeline.round_tables import RoundInfo, check_round_name
from pipeline.rounds import (
    Generate,
    RoundModel,
    RoundPlan,
    create_round,
    fresh_ideas,
    generate_with,
    short_name,
    unique_ideas,
)
from pipeline.runs import SFT_STAGE, run_ideas, run_summary
from pipeline.votes import VoteStore
from pipeline.wording import counted

log = logging.getLogger(__name__)

DEFAULT_K = 5  # titles per idea: 10 pairs per idea
DEFAULT_TARGET = 2  # votes per pair the owner aims for
DEFAULT_IDEAS = 16  # new ideas per iteration: the shipped ones last three iterations
JUDGE_K = 2  # titles per model per idea in a judging round
# Every fourth shipped fresh idea is kept for judging: no iteration asks about it, so every
# judging round measures every policy on the same ideas, none of which it trained on.
JUDGE_EVERY = 4
# How the next policy learns from an iteration's votes.
ITERATIVE_DPO, RLHF = "iterative-dpo", "rlhf"
WAYS = {
    ITERATIVE_DPO: "DPO on the iteration's votes, from the policy and against it",
    RLHF: "a reward model on every iteration's votes so far, then online RL against it",
}
# An iteration's pool is served before the tutorial's (0) and a plain round's (0), and each
# newer iteration or judging round before the ones already there, which keep collecting.
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
    for_judging: int = 0  # ideas dropped because they are kept for judging
    later: int = 0  # new ideas past `max_ideas`, left for the next iterations

    def describe_ideas(self) -> str:
        """How many ideas it asks about, and why any were left out."""
        why = [
            f"{self.left_out} trained on or asked before" if self.left_out else "",
            f"{self.for_judging} kept for judging" if self.for_judging else "",
            f"{self.later} left for later iterations" if self.later else "",
        ]
        why = [w for w in why if w]
        return f"{len(self.ideas)} ideas" + (f" ({'; '.join(why)})" if why else "")


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
            f"iteration {self.name}: {counted(self.votes, 'vote')} from "
            f"{counted(self.voters, 'voter')}; "
            f"{self.pairs_at_target} of {self.pairs} pairs have {self.target_votes}+ votes"
        )
        if self.unanimous is not None:
            line += f"; {self.unanimous:.0%} of pairs with 2+ votes unanimous"
        return line + (f"; trained: {self.trained}" if self.trained else "")


def trained_to_carry_on(store: VoteStore) -> str | None:
    """The policy a next iteration with no model named starts from: the last iteration's
    trained one; None before it is trained (or before any iteration)."""
    earlier = store.iterations()
    return (earlier[-1].trained or None) if earlier else None


def models_iterations_use(store: VoteStore) -> dict[str, str]:
    """The models the store's iterations stand on, each with what it is to them: a policy an
    iteration's titles came from, and a trained one the next starts from or a judging round
    asks about again."""
    uses: dict[str, str] = {}
    for info in store.iterations():
        uses[f"iteration {info.name}'s titles came from it"] = info.policy
        if info.trained:
            uses[f"iteration {info.name} trained it"] = info.trained
    return uses


def plan_iteration(
    store: VoteStore,
    policy: str | None,
    ideas: list[str],
    ideas_from: str,
    *,
    name: str | None = None,
    k: int = DEFAULT_K,
    target_votes: int = DEFAULT_TARGET,
    max_ideas: int = DEFAULT_IDEAS,
) -> IterationPlan:
    """The next iteration: from `policy`, or (None) from the last iteration's trained policy.
    Ideas the policy trained on, an earlier iteration asked about, or kept for judging are
    left out; of the rest, the first `max_ideas`."""
    earlier = store.iterations()
    parent = earlier[-1].name if earlier and policy is None else None
    if policy is None:
        policy = trained_to_carry_on(store)
        if policy is None:
            raise UserError(
                "name the model to start from: there is no trained iteration to carry on from"
            )
    else:
        from pipeline.models import refuse_stand_in

        refuse_stand_in(policy, "the titles voters see as the policy's")
    if not 2 <= k <= 10:
        raise UserError(f"an iteration's titles per idea are 2 to 10, not {k}")
    if target_votes < 1:
        raise UserError(f"the target is at least 1 vote per pair, not {target_votes}")
    if max_ideas < 1:
        raise UserError(f"an iteration asks about 1 idea at least, not {max_ideas}")
    seen = _ideas_seen(store, policy, earlier)
    judging = {idea_key(i) for i in judge_ideas()}
    asked = unique_ideas(ideas, ideas_from)
    unseen = [i for i in asked if idea_key(i) not in seen]
    fresh = [i for i in unseen if idea_key(i) not in judging]
    if not fresh:
        raise UserError(
            f"every idea of {ideas_from} was trained on, asked about already or is kept for "
            "judging: type new ones, or give a file of them"
        )
    name = name or time.strftime("iteration-%Y%m%d-%H%M%S")
    return IterationPlan(
        name, policy, parent, fresh[:max_ideas], ideas_from, k, target_votes,
        left_out=len(asked) - len(unseen), for_judging=len(unseen) - len(fresh),
        later=max(0, len(fresh) - max_ideas),
    )  # fmt: skip


def judge_ideas() -> list[str]:
    """The shipped fresh ideas kept for judging rounds (every JUDGE_EVERY-th one)."""
    return fresh_ideas()[JUDGE_EVERY - 1 :: JUDGE_EVERY]


def _next_priority(store: VoteStore) -> int:
    """Above every iteration's and judging round's pool so far: the newest is served first."""
    iterations = store.iterations()
    ours = {i.pool for i in iterations} | {f"round:{i.judge_round}" for i in iterations}
    return max([PRIORITY - 1, *(p.priority for p in store.pools() if p.name in ours)]) + 1


def _ideas_seen(store: VoteStore, policy: str, earlier: list[IterationInfo]) -> set[str]:
    """The ideas (keys) the policy trained on and those earlier iterations asked about."""
    asked = {idea_key(i) for i in store.pool_ideas([i.pool for i in earlier])}
    return asked | _trained_ideas(policy)


def _trained_ideas(model: str) -> set[str]:
    """The ideas (keys) of a finished run's training split; for a run's SFT stage (its
    model/sft folder), the run's. A Hub model's are unknown, and so are those of a run whose
    data is not on this disk (a policy restored from the mirror): the iterations' own ideas,
    which are asked about once, stand for them."""
    folder = Path(model).expanduser()
    run = next((f for f in (folder, folder.parent) if run_summary(f)), None)
    if run is None or (run != folder and folder.name != SFT_STAGE):
        return set()
    try:
        return {idea_key(i) for i in run_ideas(run, "train")}
    except UserError:
        return set()


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
        priority=_next_priority(store),
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


@dataclass(frozen=True)
class IterationData:
    """Which votes the next policy learns from: the iteration's (a pair's majority, at least
    `min_votes`, screened), with `earlier` the earlier iterations' too, and with `tutorial`
    the tutorial's 1,140 labelled pairs beside them."""

    min_votes: int = 1
    screening: Screening = NO_SCREENING
    earlier: bool = False
    tutorial: bool = False


def write_iteration_data(
    store: VoteStore, name: str, out: str | Path, data: IterationData = IterationData()
) -> dict:
    """The votes `data` names as a dataset folder, split by idea; its summary."""
    chosen = iteration_screening(store, name, data.screening, data.earlier)
    return write_dataset_folder(
        out, store.path, "idea", data.min_votes, chosen, with_tutorial=data.tutorial
    )


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
    data: IterationData = IterationData(),
    max_steps: int | None = None,
    judge: bool = True,
    generate: Generate = generate_with,
):
    """The next policy: the iteration's votes (`data`) in OUT/data, DPO from its policy in OUT/model
    (`iteration_recipe`), its held-out pairs scored; recorded as the iteration's trained
    policy, which the next iteration starts from; then, with `judge`, its judging round."""
    from pipeline.methods import score_run, train_run

    info = store.iteration_info(name)
    out = Path(out)
    write_iteration_data(store, name, out / "data", data)
    result = train_run(
        out / "data", out / "model", info.policy, iteration_recipe(recipe), max_steps=max_steps
    )
    result = score_run(result)
    if result.finished:
        trained(store, name, result.out, judge, generate)
    return result


def train_iteration_rlhf(
    store: VoteStore,
    name: str,
    out: str | Path,
    reward_recipe: RewardRecipe | None = None,
    rl_recipe: RLRecipe | None = None,
    *,
    data: IterationData = IterationData(),
    max_steps: int | None = None,
    judge: bool = True,
    generate: Generate = generate_with,
):
    """The next policy the RLHF way: every iteration's votes so far (`data`, always with the
    earlier iterations') in OUT/data, a reward model retrained on them from the policy
    (OUT/reward), then online RL of the policy against it (OUT/model); recorded and judged as
    `train_iteration` does. Returns the RL run (or the reward run, when that did not finish)."""
    from pipeline.methods import score_run, train_run

    info = store.iteration_info(name)
    out = Path(out)
    write_iteration_data(store, name, out / "data", replace(data, earlier=True))
    reward_recipe = reward_recipe or get_recipe(kind=RewardRecipe)
    reward = score_run(
        train_run(out / "data", out / "reward", info.policy, reward_recipe, max_steps=max_steps)
    )
    if not reward.finished:
        return reward
    rl_recipe = rl_recipe or get_recipe(kind=RLRecipe)
    result = train_run(out / "data", out / "model", info.policy, rl_recipe,
                       reward_model=reward.out, max_steps=max_steps)  # fmt: skip
    if result.finished:
        trained(store, name, result.out, judge, generate)
    return result


def trained(
    store: VoteStore, name: str, model: str, judge: bool = True, generate: Generate = generate_with
) -> RoundInfo | None:
    """What follows a finished training: the model recorded as the iteration's next policy,
    then (`judge`) its judging round created."""
    store.set_iteration_trained(name, model)
    return judge_iteration(store, name, generate) if judge else None


# --- judging ---------------------------------------------------------------------------------


def judging_plan(
    store: VoteStore, name: str, ideas: list[str] | None = None, k: int = JUDGE_K
) -> RoundPlan:
    """The round that judges an iteration's trained policy: against the policy it started
    from and against the first iteration's (when that is another model), on `ideas`
    (default: `judge_ideas`) less any a model in it trained on or an iteration asked about."""
    info = store.iteration_info(name)
    if not info.trained:
        raise UserError(f"iteration {name!r} has no trained policy to judge yet: train it first")
    chain = _chain(store, info)
    models = [RoundModel(f"after {name}", info.trained), RoundModel(f"before {name}", info.policy)]
    if chain[0].policy != info.policy:
        models.append(RoundModel(f"start: {short_name(chain[0].policy)}", chain[0].policy))
    asked = {idea_key(i) for i in store.pool_ideas([i.pool for i in store.iterations()])}
    seen = asked.union(*(_trained_ideas(m.name) for m in models))
    chosen = [i for i in unique_ideas(ideas or judge_ideas(), "the judging ideas")
              if idea_key(i) not in seen]  # fmt: skip
    if not chosen:
        raise UserError("every judging idea was trained on or asked about: give other ideas")
    taken = {r.name for r in store.rounds()}
    round_name = next(
        n
        for n in (f"judge-{name}"[:60] + (f"-{i}" if i > 1 else "") for i in range(1, 99))
        if n not in taken
    )  # a second judging of the same iteration (other ideas, say) gets its own round
    round_name = check_round_name(round_name)
    from_where = "ideas kept for judging" if ideas is None else "the ideas given"
    settings = GenerationSettings(n=k, seed=0)
    # served first among the iterations' pools, by `judge_iteration`
    return RoundPlan(round_name, models, chosen, from_where, k, settings, serve_first=False)


def judge_iteration(
    store: VoteStore,
    name: str,
    generate: Generate = generate_with,
    ideas: list[str] | None = None,
    k: int = JUDGE_K,
) -> RoundInfo:
    """The judging round (`judging_plan`) created and served to voters before anything else
    of the iterations so far; recorded as the iteration's."""
    plan = judging_plan(store, name, ideas, k)
    info = create_round(store, plan, generate)
    # No pool of its own: every pair was there already (an earlier judging of the same
    # titles) or the models wrote the very same titles; the report says so.
    if info.pool in {p.name for p in store.pools()}:
        store.set_pool(info.pool, priority=_next_priority(store))
    store.set_iteration_judge(name, info.name)
    return info


def _chain(store: VoteStore, info: IterationInfo) -> list[IterationInfo]:
    """The iterations that led to `info`, first one first (following `parent`)."""
    by_name = {i.name: i for i in store.iterations()}
    chain = [info]
    while chain[0].parent in by_name and len(chain) <= len(by_name):
        chain.insert(0, by_name[chain[0].parent])
    return chain


# --- training when the votes are in ----------------------------------------------------------


def wait_for_votes(
    store: VoteStore, name: str, every: float = 30.0, say: Callable[[str], Any] = log.info
) -> IterationStatus:
    """Return once every pair of the iteration has its target votes (looking every `every`
    seconds, saying how far it is when that changes)."""
    last = None
    while not (status := iteration_status(store, name)).ready:
        if status.votes != last:
            say(status.describe())
            last = status.votes
        time.sleep(every)
    return status


def due_for_training(store: VoteStore) -> list[IterationInfo]:
    """Iterations the owner asked to train at target, whose every pair has its target votes,
    not trained and not begun."""
    waiting = [i for i in store.iterations() if _waits(i)]
    if not waiting:
        return []
    ready = {s.name for s in iteration_statuses(store, waiting) if s.ready}
    return [i for i in waiting if i.name in ready]


def _waits(info: IterationInfo) -> bool:
    training = info.training or {}
    return bool(training.get("at_target")) and not training.get("runs") and not info.trained


def record_finished_runs(store: VoteStore) -> list[str]:
    """Iterations whose last run finished a policy without recording it (resumed from the
    Train tab, or the app stopped before it could), recorded as trained now; their names.
    Their judging round is left to the owner (Judge, or `iterate judge`)."""
    from pipeline.methods import method_of

    found = []
    for info in store.iterations():
        runs = (info.training or {}).get("runs") or []
        if info.trained or not runs:
            continue
        summary = run_summary(Path(runs[-1]) / "model")
        if summary and summary.get("finished") and method_of(summary).writes_titles:
            store.set_iteration_trained(info.name, str(Path(runs[-1]) / "model"))
            found.append(info.name)
    return found


def train_iteration_in_app(
    runner,
    store: VoteStore,
    name: str,
    runs: str | Path,
    recipe: DPORecipe | None = None,
    *,
    way: str = ITERATIVE_DPO,
    data: IterationData = IterationData(),
    max_steps: int | None = None,
    chunked: bool = False,
    judge: bool = True,
    generate: Generate = generate_with,
) -> Path:
    """`train_iteration` (or, `way` RLHF, `train_iteration_rlhf`) through the app's runner
    (`pipeline.runner.TrainingRunner`: run folders in `runs`, Stop and Resume, ZeroGPU
    chunks): when the run finishes, the next policy is recorded as the iteration's and
    (`judge`) its judging round is created with `generate` (the app's: a GPU call). The RLHF
    way is two runs, the reward model's and then the RL one, which starts once the first is
    done. Returns the (first) run folder."""
    if way not in WAYS:
        raise UserError(f"unknown way to train an iteration {way!r}: one of {', '.join(WAYS)}")
    info = store.iteration_info(name)

    if way == RLHF:  # the reward model learns from every iteration's votes so far
        data = replace(data, earlier=True)

    def write_data(out: Path) -> None:
        write_iteration_data(store, name, out, data)

    def done(result) -> None:
        trained(store, name, result.out, judge, generate)

    common = {"max_steps": max_steps, "chunked": chunked, "model_name": info.policy}
    if way == ITERATIVE_DPO:
        run = runner.start_run(
            runs, write_data, recipe=iteration_recipe(recipe), on_done=done, **common
        )
        store.add_iteration_run(name, run)  # a Resume on the Train tab is recognised
        return run

    def then_rl(reward) -> None:
        """Once the reward run is done (the runner is free), RL against its model."""

        def start_rl() -> None:
            runner.wait()
            try:
                run = runner.start_run(runs, write_data, recipe=get_recipe(kind=RLRecipe),
                                       reward_model=reward.out, on_done=done, **common)  # fmt: skip
                store.add_iteration_run(name, run)
            except UserError as exc:  # another run took the runner meanwhile
                log.warning("iteration %s: RL did not start after its reward model: %s",
                            name, exc)  # fmt: skip

        threading.Thread(target=start_rl, name="iteration-rl", daemon=True).start()

    reward_recipe = get_recipe(kind=RewardRecipe)
    run = runner.start_run(runs, write_data, recipe=reward_recipe, on_done=then_rl, **common)
    store.add_iteration_run(name, run)
    return run


class AutoTrainer:
    """Starts the training of each iteration the owner asked to train at target, once its
    votes are in (`due_for_training`), through `start(iteration) -> run folder`. A watcher
    thread checks every `every` seconds while such an iteration waits; `check` is one look."""

    def __init__(
        self, store: VoteStore, start: Callable[[IterationInfo], Path], every: float = 10.0
    ) -> None:
        self.store, self.start, self.every = store, start, every
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def check(self) -> list[str]:
        """Start what is due; the names started. A run going already: next time."""
        started = []
        with self._lock:
            for info in due_for_training(self.store):
                try:
                    run = self.start(info)  # records its run folder (`train_iteration_in_app`)
                except UserError as exc:
                    log.info("iteration %s waits to train: %s", info.name, exc)
                    break
                log.info("iteration %s has its votes: training in %s", info.name, run)
                started.append(info.name)
        return started

    def waiting(self) -> bool:
        """Some iteration is to be trained at target and has not started."""
        return any(_waits(i) for i in self.store.iterations())

    def watch(self) -> None:
        """Keep checking while something waits (a thread; started again when needed)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._loop, name="auto-train", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while self.waiting():
            time.sleep(self.every)
            try:
                self.check()
            except Exception:  # keep watching: a broken store shows in the owner's listing
                log.exception("checking the iterations to train failed")
