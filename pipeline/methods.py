"""Every training method in one registry: what each is called, trains, scores and shows.

A recipe's KIND names its method. A new method is one module (its trainer) and one entry in
METHODS; the app's runner and Train tab, the ZeroGPU chunks, the CLI's run commands, model
cards and pushes, judges and rounds ask this module about a run's method and never check its
name. The trainers load lazily, so a model card or `--help` does not load transformers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.datasets import dataset_summary, source_in_brief
from pipeline.errors import UserError, advice_on_full_disk, advice_on_out_of_memory
from pipeline.metrics import LOGPS_KEYS, LOSS_KEYS, REWARD_KEYS
from pipeline.models import is_saved_model
from pipeline.recipes import DPORecipe, RewardRecipe, RLRecipe, recipe_from_mapping
from pipeline.runs import (
    RUN_PREFIX,
    RUN_START,
    SFT_STAGE,
    finished_runs,
    folder_size,
    left_at,
    resume_line,
    run_kind,
    run_name,
    run_start,
    run_summary,
    run_to_resume,
    stage_summary,
)
from pipeline.wording import counted, file_size

Chart = tuple[str, tuple[str, ...]]  # a Train tab chart: its title, the logged keys it draws


@dataclass(frozen=True)
class Method:
    recipe: type  # its recipe class (`pipeline.recipes`); recipe.KIND is the method's name
    label: str  # the Train tab's choice
    start_label: str  # the Train tab's Start button
    endpoints: tuple[str, str, str]  # the app's API names: start, resume, recipe settings
    command: str  # `python -m pipeline COMMAND`
    command_help: str
    makes: str  # what a run makes: "where the {makes} goes"
    saved_as: str  # "... steps in N s; {saved_as} OUT"
    charts: tuple[Chart, Chart, Chart]  # the Train tab's three charts
    train: Callable[..., Any]  # (data, out, model_name, recipe, reward_model, **kw) -> result
    score: Callable[..., Any]  # (result, beside) -> the result, its held-out pairs ranked
    held_out: Callable[[Mapping[str, Any]], str] | None  # its held-out figure, in words
    writes_titles: bool = True  # False: it makes a reward model, which scores titles
    takes_reward_model: bool = False  # trained against a reward model (`--reward`)
    samples: bool = False  # it writes titles as it trains (OUT/samples.jsonl), shown live
    scored_beside: bool = False  # its held-out figure can stand beside a DPO run's (`--beside`)
    stage: Callable[[Any], str] = lambda recipe: recipe.KIND  # its name in the status line
    report: Callable[[Any], list[str]] = lambda result: []  # more lines on a finished run
    # a model card's tag and training ("fine-tuned with {it}") from its recipe; None: not
    # pushed as a model that writes titles
    card: Callable[[Mapping[str, Any]], tuple[str, str]] | None = None
    # in a list of runs: what a run trained, from its recipe (None: the method's name), and
    # its held-out figure in a few words, from its summary's held_out
    brief: Callable[[Mapping[str, Any]], str] | None = None
    held_out_brief: Callable[[Mapping[str, Any]], str] | None = None
    # what to do with a finished run next, as the Train tab says it under the run's line: a
    # loss or a held-out figure is not the question people ask of their titles
    next_step: str = (
        "Did people prefer its titles? On the Evaluate tab, tick this run and create a round: "
        "voters judge them blind beside the titles of the model it started from."
    )

    @property
    def kind(self) -> str:
        return self.recipe.KIND

    def tag(self, recipe: Mapping[str, Any]) -> str | None:
        """What a run of it trained with, in one word (DPO, GRPO, RLOO); None: it writes no
        titles (a reward model)."""
        return self.card(recipe)[0].upper() if self.card else None

    def check_reward_model(self, recipe, reward_model: str | None) -> str | None:
        """The reward model a run is trained against, refused early when it is missing or not
        a reward run (before anything loads); None for a method that takes none."""
        if not self.takes_reward_model:
            return None
        from pipeline.rl import checked_reward_model

        return checked_reward_model(recipe, reward_model and check_reward_model(reward_model))


# --- each method's own parts -----------------------------------------------------------------


def _train_dpo(data, out, model_name, recipe, reward_model=None, **kwargs):
    from pipeline.dpo import train_dpo

    return train_dpo(data, out, model_name, recipe, **kwargs)


def _score_dpo(result, beside: str | None = None):
    from pipeline.dpo import score_held_out

    return score_held_out(result)


def _dpo_held_out(held_out: Mapping[str, Any]) -> str:
    from pipeline.evaluation import HeldOutRanking

    return HeldOutRanking(**held_out).describe()


def _dpo_brief(recipe: Mapping[str, Any]) -> str:
    return "SFT, then DPO" if recipe.get("sft_epochs") else "DPO"


def _ranked_brief(share: float, held_out: Mapping[str, Any]) -> str:
    return f"held-out {share:.2f} of {held_out['pairs']} (untrained {held_out['untrained']:.2f})"


def _dpo_card(recipe: Mapping[str, Any]) -> tuple[str, str]:
    sft = recipe.get("sft_epochs")
    return "dpo", "an SFT stage on the preferred titles, then DPO" if sft else "DPO"


def _train_reward(data, out, model_name, recipe, reward_model=None, **kwargs):
    from pipeline.reward import train_reward

    return train_reward(data, out, model_name, recipe, **kwargs)


def _score_reward(result, beside: str | None = None):
    from pipeline.reward import score_reward_held_out

    return score_reward_held_out(result, beside)


def _reward_held_out(held_out: Mapping[str, Any]) -> str:
    from pipeline.reward import RewardHeldOut

    return RewardHeldOut(**held_out).describe()


def _train_rl(data, out, model_name, recipe, reward_model=None, **kwargs):
    from pipeline.rl import train_rl

    return train_rl(data, out, model_name, reward_model, recipe, **kwargs)


def _score_rl(result, beside: str | None = None):
    # an RL run is measured by generating (`evaluate auto`, an evaluation round), not here
    return result


def _report_rl(result) -> list[str]:
    from pipeline.rl import rl_report

    return rl_report(result)


def _rl_brief(recipe: Mapping[str, Any]) -> str:
    online = str(recipe.get("method", "rl")).upper()
    return f"SFT, then {online}" if recipe.get("sft_epochs") else online


def _rl_card(recipe: Mapping[str, Any]) -> tuple[str, str]:
    online = (
        f"online RL ({recipe['method'].upper()}) against a reward model trained on the same "
        "preferences"
    )
    if recipe.get("sft_epochs"):
        online = f"an SFT stage on the preferred titles, then {online}"
    return recipe["method"], online


METHODS: dict[str, Method] = {
    DPORecipe.KIND: Method(
        recipe=DPORecipe,
        label="DPO",
        start_label="Start training",
        # DPO keeps the API names it had before the RLHF half came
        endpoints=("train_start", "train_resume", "recipe_settings"),
        command="train",
        command_help="DPO on a dataset folder",
        makes="tuned model",
        saved_as="model saved to",
        charts=(
            ("Losses", LOSS_KEYS),
            ("Rewards", REWARD_KEYS),
            ("Log-probability of the chosen and rejected titles", LOGPS_KEYS),
        ),
        train=_train_dpo,
        score=_score_dpo,
        held_out=_dpo_held_out,
        card=_dpo_card,
        brief=_dpo_brief,
        held_out_brief=lambda held: _ranked_brief(held["tuned"], held),
    ),
    RewardRecipe.KIND: Method(
        recipe=RewardRecipe,
        label="Reward model (RLHF step 1)",
        start_label="Start training the reward model",
        endpoints=("reward_start", "reward_resume", "reward_recipe_settings"),
        command="reward",
        command_help="a reward model on a dataset folder (TRL's RewardTrainer: the chat model "
        "with a score head)",
        makes="reward model",
        saved_as="reward model in",
        charts=(
            ("Losses", LOSS_KEYS),
            ("Accuracy", ("accuracy", "eval_accuracy")),
            ("Margin", ("margin", "eval_margin")),
        ),
        train=_train_reward,
        score=_score_reward,
        held_out=_reward_held_out,
        next_step="Use it: online RL against it (Method, above), or best of n on the Generate "
        "tab, which ranks a model's titles by its scores.",
        brief=lambda recipe: "reward model",
        held_out_brief=lambda held: _ranked_brief(held["reward_model"], held),
        writes_titles=False,
        scored_beside=True,
    ),
    RLRecipe.KIND: Method(
        recipe=RLRecipe,
        label="Online RL against a reward model (RLHF step 2: GRPO / RLOO)",
        start_label="Start online RL",
        endpoints=("rl_start", "rl_resume", "rl_recipe_settings"),
        command="rl",
        command_help="online RL (GRPO or RLOO) of a policy against a reward model, on a dataset "
        "folder's ideas",
        makes="policy",
        saved_as="policy in",
        charts=(
            ("Reward", ("reward", "reward/model", "reward/format", "reward/length")),
            ("KL to the starting model", ("kl",)),
            ("Completion length (tokens)", ("completions/mean_length",)),
        ),
        train=_train_rl,
        score=_score_rl,
        held_out=None,
        report=_report_rl,
        takes_reward_model=True,
        samples=True,
        stage=lambda recipe: recipe.method,  # "grpo" or "rloo"
        card=_rl_card,
        brief=_rl_brief,
    ),
}
DEFAULT = METHODS[DPORecipe.KIND]
# what to change when a run's model, batch and optimizer state do not fit on the GPU
TRAINING_OUT_OF_MEMORY = (
    "lower the batch size, turn LoRA on, or train a smaller model (on the command line, "
    "--set gradient_checkpointing=true also trades time for memory)"
)
FREE_SOME_SPACE = (
    "Free some space first: in the app, the Hub tab's *Runs on this disk* lists every run "
    "with its size (on the command line, run the same command with --resume after)."
)


# --- asking about a method -------------------------------------------------------------------


def method_for(recipe) -> Method:
    """The method a recipe trains (DPO when there is no recipe)."""
    return METHODS[getattr(recipe, "KIND", DEFAULT.kind)]


def method_of(run: Mapping[str, Any] | str | Path | None) -> Method:
    """The method of a run: its summary (a dict), its model folder, or its kind's name."""
    if isinstance(run, Mapping):
        kind = run.get("kind", DEFAULT.kind)
    elif isinstance(run, Path) or (isinstance(run, str) and run not in METHODS):
        kind = run_kind(run)
    else:
        kind = run or DEFAULT.kind
    if kind not in METHODS:
        raise UserError(f"a run of an unknown method {kind!r}: one of {', '.join(METHODS)}")
    return METHODS[kind]


def run_choice(model: str | Path) -> tuple[str, str]:
    """A finished run as a list of runs offers it: a line the owner tells it apart by (its
    folder, what it trained from what on which pairs, its steps and held-out figure), and its
    model folder."""
    return _choice(model, run_summary(model) or {})


def _choice(model: str | Path, summary: Mapping[str, Any]) -> tuple[str, str]:
    method, recipe = method_of(summary), summary.get("recipe") or {}
    what = _trained(method, recipe)
    start = _start_name(summary.get("started_from") or summary.get("base_model"))
    source = dataset_summary(summary.get("data")).get("source")
    steps = summary.get("steps")
    parts = [
        f"{run_name(model)}: {what}",
        *([f"from {start}"] if start else []),
        *([f"on {source_in_brief(source)}"] if source else []),
    ]
    if steps is not None and summary.get("finished") is False:  # Stop pressed: a part-trained model
        parts[-1] += f", stopped at {steps} of {counted(summary.get('max_steps'), 'step')}"
    elif steps is not None:
        parts[-1] += f", {counted(steps, 'step')}"
    line = " ".join(parts)
    held = summary.get("held_out")
    if held and method.held_out_brief:
        line += f"; {method.held_out_brief(held)}"
    return line, str(model)


def _trained(method: Method, recipe: Mapping[str, Any]) -> str:
    """What a run trains, in a few words: its method, briefly, and its recipe's name."""
    what = method.brief(recipe) if method.brief else method.kind
    return what + (f" ({recipe['name']})" if recipe.get("name") else "")


def _start_name(start: str | None) -> str | None:
    """A run's start model as a list names it: a folder by its run's name (or its own), not
    by a path."""
    return run_name(start) if start and Path(start).is_dir() else start


def run_choices(
    runs: str | Path, writes_titles: bool | None = None, stages: bool = False
) -> list[tuple[str, str]]:
    """`run_choice` for each of the app's finished runs, newest first; with `writes_titles`,
    only those whose method does (or, False, does not: reward models); with `stages`, each
    run's saved SFT stage after it, as a model of its own."""
    chosen = []
    for model in finished_runs(runs):
        summary = run_summary(model) or {}
        if writes_titles is None or method_of(summary).writes_titles == writes_titles:
            chosen.append(_choice(model, summary))
            if stages and is_saved_model(model / SFT_STAGE):
                chosen.append(_stage_choice(model, summary))
    return chosen


def _stage_choice(model: Path, summary: Mapping[str, Any]) -> tuple[str, str]:
    """A run's SFT stage as a list names it: its run, what trained it further, its steps."""
    then = method_of(summary).tag(summary.get("recipe") or {}) or "its training"
    steps = stage_summary(model / SFT_STAGE).get("steps")
    told = f", {counted(steps, 'step')}" if steps is not None else ""
    line = f"{run_name(model)} SFT stage: the run's model before {then}{told}"
    return line, str(model / SFT_STAGE)


@dataclass(frozen=True)
class StoredRuns:
    """The app's runs on this disk, for deleting one: `choices` as `stored_runs` makes them."""

    choices: list[tuple[str, str]]
    total: int  # bytes, all of them
    free: int  # bytes free on their disk

    def describe(self) -> str:
        if not self.choices:
            return f"No run on this disk yet; {file_size(self.free)} free on it."
        held = f"{counted(len(self.choices), 'run')} on this disk: {file_size(self.total)}"
        return f"{held}; {file_size(self.free)} free on it."


def stored_runs(runs: str | Path, training: str | None = None) -> StoredRuns:
    """Every run of the app on this disk, newest first, with a line each: its size and what it
    holds (a run with a model as `run_choice` says it; one without, how far it got and whether
    Resume carries it on; `training`, the model folder of the run going now, as such), and its
    run folder. A run with no model still holds its checkpoints."""
    runs = Path(runs)
    to_resume = run_to_resume(runs)
    choices, total = [], 0
    for run in sorted(runs.glob(f"{RUN_PREFIX}*"), reverse=True):
        if not run.is_dir() or run.is_symlink():
            continue
        model = run / "model"
        try:
            summary = run_summary(model)
            what = _choice(model, summary)[0] if summary else _held(run)
        except UserError as error:  # one broken file: the run can still go
            what = f"{run.name}: {error}"
        if training and Path(training).resolve() == model.resolve():
            what = f"{run.name}: training now"
        elif run == to_resume:
            what += "; Resume the last run carries it on"  # a choice's line: no Markdown
        size = folder_size(run)
        choices.append((f"{file_size(size)} · {what}", str(run)))
        total += size
    disk = next(folder for folder in (runs, *runs.absolute().parents) if folder.is_dir())
    return StoredRuns(choices, total, shutil.disk_usage(disk).free)


def _held(run: Path) -> str:
    """What a run without a model holds, in words: how far it got, from its checkpoints."""
    model = run / "model"
    start, left = run_start(model), left_at(model)
    what = ""
    if start is not None:
        trained = _trained(method_of(start.kind), start.recipe)
        what = f" {trained} from {_start_name(start.model)},"
    if not left.stage:
        return f"{run.name}:{what} no model and no checkpoint (its start failed, or it was cut off)"
    of = f" of {counted(left.total, 'step')}" if left.stage in ("loop", "sft") else ""
    return f"{run.name}:{what} left {left.where()}{of}, no model saved"


def check_reward_model(name: str) -> str:
    """`name` if it is a finished reward-model run's folder (a Hub id passes: it is checked
    when it loads); refused otherwise, before anything is loaded."""
    if Path(name).is_dir():
        summary = run_summary(name)
        if summary is None or method_of(summary).writes_titles:
            raise UserError(
                f"{name!r} is not a finished reward model run: train one with "
                "`python -m pipeline reward --data DIR --out DIR`"
            )
    return name


def refuse_reward_model(summary: Mapping[str, Any] | None, name: str, use: str) -> None:
    """Refused when the run `summary` made a reward model, which scores titles and writes
    none; `use` says what to do with one instead."""
    if summary is not None and not method_of(summary).writes_titles:
        raise UserError(f"{name} is a reward model: it scores titles and writes none ({use})")


# --- starting and scoring a run --------------------------------------------------------------


def train_run(
    data: str | Path,
    out: str | Path,
    model_name: str | None = None,
    recipe=None,
    *,
    reward_model: str | None = None,
    **kwargs: Any,
):
    """The run the recipe's method names (DPO when none is given); only a method that takes
    a reward model reads `reward_model`."""
    with (
        advice_on_out_of_memory(TRAINING_OUT_OF_MEMORY),
        advice_on_full_disk(out, lambda: f"{FREE_SOME_SPACE} {resume_line(out)}"),
    ):
        return method_for(recipe).train(data, out, model_name, recipe, reward_model, **kwargs)


def resumed_settings(
    out: Path, kind: str | None, form: Callable[[], dict[str, Any]] | None = None
) -> tuple[dict[str, Any], str]:
    """The settings that carry the run in `out` (a run's model folder) on (`train_run`'s
    model_name, recipe, reward_model and max_steps), and a line saying them. A resumed run
    takes the ones it started with, never a form's or the command line's, which may have
    changed since (an app restarted, a model picked for the next run): another model or
    recipe would train on from a checkpoint it does not fit, or against another reference,
    silently. Refused for another method's run, and for one that kept no start without a
    `form` to fall back on."""
    name, start = run_name(out), run_start(out)
    if start is None:  # a run from before runs kept their start
        if form is None:
            raise UserError(f"{name} kept no record of how it started: it cannot resume")
        kept = f"{name} kept no record of how it started"
        return form(), f"{kept}: resumed it with the form's settings"
    method = method_of(start.kind)
    if kind is not None and kind != start.kind:
        raise UserError(
            f"the run to resume, {name}, trains with the method {method.label!r}: pick "
            "that method to resume it"
        )
    recipe = recipe_from_mapping(start.recipe, "", str(out / RUN_START), method.recipe)
    settings = {
        "model_name": start.model,
        "recipe": recipe,
        "reward_model": start.reward_model,
        "max_steps": start.max_steps,
    }
    said = f"resumed {name} as it started: {start.describe()}"
    given = "the form's" if form is not None else "the command line's"
    return settings, f"{said} ({given} settings are not used)"


def score_run(result, beside: str | None = None):
    """A finished run with its held-out pairs ranked, as its method allows."""
    return method_of(result.kind).score(result, beside)


def describe_held_out(result) -> str | None:
    """One line on how the run ranks its held-out pairs, or None when it has no figure."""
    described = method_of(result.kind).held_out
    return described(result.held_out) if result.held_out and described else None


def describe_run(result) -> str:
    """A finished run in a few lines: its steps and time, where it went, what it showed."""
    method = method_of(result.kind)
    took = f"trained {counted(result.steps, 'step')} in {result.seconds:.0f} s"
    line = f"{took}; {method.saved_as} {result.out}"
    held_out = describe_held_out(result)
    quick = (
        [f"a step-limited run: its SFT stage took at most {counted(result.max_steps, 'step')}, "
         f"and it read at most {counted(result.rows_limit, 'pair')} of each split (reference "
         "pass, evaluation, held-out figure); without --max-steps it reads them all"]
        if result.rows_limit else []
    )  # fmt: skip
    return "\n".join([line, *quick, *([held_out] if held_out else []), *method.report(result)])
