"""Training recipes: one dataclass per kind of run, YAML files, and the CLI flags and form
fields made from the dataclass's own fields, so the four can never disagree.

Three kinds, each with its folder of YAML files:
- `DPORecipe` (`configs/recipes/*.yaml`): DPO, with its optional SFT stage;
- `RewardRecipe` (`configs/recipes/reward/*.yaml`): a reward model (`pipeline/reward.py`);
- `RLRecipe` (`configs/recipes/rl/*.yaml`): online RL against a reward model (`pipeline/rl.py`).

A field's default is TRL's (or the tutorial's) choice; a recipe file names only what it
changes. Precedence, as in TRL's scripts: field default < recipe file < CLI flag / form field.
A new recipe is a new YAML file; a new knob is one new field here, with its help text. Every
function below takes the recipe class (`kind`), DPO when not given.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs" / "recipes"
DEFAULT_RECIPE = "fast"
# TRL 1.16's paired loss types (DPOConfig.loss_type); "sft" is added by sft_weight instead
DPO_LOSSES = (
    "sigmoid",
    "sigmoid_norm",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "apo_zero",
    "apo_down",
    "discopop",
)


def knob(
    default: Any,
    help: str,
    *,
    label: str | None = None,
    choices: Sequence[str] = (),
    form: bool = False,
    switch: str | None = None,
    when_on: Any = None,
) -> Any:
    """A recipe field. `form=True`: the Train tab shows it (labelled `label`); an optional
    field there is a switch (labelled `switch`) and a number, `when_on` being the number a
    switch turned on starts from."""
    meta = {
        "help": help,
        "label": label,
        "choices": tuple(choices),
        "form": form,
        "switch": switch,
        "when_on": when_on,
    }
    return field(default=default, metadata=meta)


def check_common(recipe: Any) -> None:
    """The checks every kind of recipe shares, on the fields it has. A recipe comes from a
    file, the CLI and the Train tab: nonsense is refused up front, before a model is loaded or
    a run folder written."""
    if not recipe.epochs > 0:
        raise UserError(f"epochs must be positive, not {recipe.epochs}")
    if not (isinstance(recipe.batch_size, int) and recipe.batch_size >= 1):
        raise UserError(f"batch size must be a whole number >= 1, not {recipe.batch_size}")
    if not 0 < recipe.learning_rate < 1:
        raise UserError(
            f"learning rate must be more than 0 and less than 1, not {recipe.learning_rate}"
        )
    if recipe.lora_r is not None and not (isinstance(recipe.lora_r, int) and recipe.lora_r >= 1):
        raise UserError(f"LoRA r must be a whole number >= 1, not {recipe.lora_r}")
    if not recipe.lora_alpha > 0:
        raise UserError(f"LoRA alpha must be positive, not {recipe.lora_alpha}")
    for knob_ in knobs(kind=type(recipe)):
        value = getattr(recipe, knob_.name)
        if knob_.choices and value not in knob_.choices:
            raise UserError(f"{knob_.name} is one of {', '.join(knob_.choices)}, not {value!r}")


@dataclass(frozen=True)
class DPORecipe:
    """The knobs of a DPO run (with its optional SFT stage); anything not named is TRL's
    default. The form fields come first, in the order the Train tab shows them."""

    FOLDER: ClassVar[Path] = RECIPES_DIR
    KIND: ClassVar[str] = "dpo"

    name: str = "custom"
    epochs: float = knob(3, "passes over the training pairs", label="Epochs", form=True)
    beta: float = knob(
        0.1,
        "DPO beta: how far the policy may move from the reference (TRL's default)",
        label="Beta",
        form=True,
    )
    learning_rate: float = knob(
        1e-6,
        "TRL's default, which the tutorial kept; a LoRA run needs far more",
        label="Learning rate",
        form=True,
    )
    batch_size: int = knob(8, "pairs per optimizer step", label="Batch size", form=True)
    lora_r: int | None = knob(
        None,
        "LoRA rank; none (0 on the command line): a full fine-tune",
        label="LoRA r",
        form=True,
        switch="LoRA",
        when_on=16,
    )
    lora_alpha: float = knob(32, "LoRA alpha", label="LoRA alpha", form=True)
    logging_steps: int = knob(25, "log the metrics every N steps (a short run: 10 times)")
    save_total_limit: int | None = knob(
        2, "checkpoints kept (best + latest: a 0.5B model's are GBs); none: all"
    )
    seed: int = knob(42, "training seed (data order, LoRA initialisation)")
    gradient_checkpointing: bool = knob(
        True, "recompute activations to save memory (TRL's default)"
    )
    precompute_ref_log_probs: bool = knob(
        False, "the reference model's log-probs once, before training, not every step"
    )
    shared_prompt: bool = knob(
        False,
        "compute each prompt once per pair, and a batch's "
        "common prefix once (pipeline/shared_prompt.py)",
    )
    prompt_chunk: int = knob(
        0,
        "with shared_prompt: batches take one prompt's rows this many "
        "at a time, so the prompt is computed once for them; 0: plain "
        "random batches",
    )
    loss: str = knob(
        "sigmoid",
        "TRL's loss_type: sigmoid is DPO; sigmoid_norm averages per token",
        choices=DPO_LOSSES,
    )
    sft_weight: float = knob(
        0.0,
        "> 0: TRL's sft term (the chosen title's likelihood) added "
        "to the DPO loss with this weight",
    )
    sft_epochs: float = knob(
        0.0, "> 0: first fine-tune on the chosen titles for this many epochs, then DPO from there"
    )
    sft_learning_rate: float = knob(1e-4, "the SFT stage's learning rate")
    sft_titles: str = knob(
        "chosen",
        "what the SFT stage imitates: the chosen titles, or both sides",
        choices=("chosen", "both"),
    )
    # Knobs that take other values where a GPU trains ((knob, value) pairs; the file's `on_gpu:`
    # mapping): a setting that pays on a CPU may cost on a GPU. Not a knob itself.
    on_gpu: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_common(self)
        if not self.beta > 0:
            raise UserError(f"beta must be positive, not {self.beta}")
        if not (isinstance(self.prompt_chunk, int) and self.prompt_chunk >= 0):
            raise UserError(f"prompt_chunk must be a whole number >= 0, not {self.prompt_chunk}")

    def changed(self, **changes: Any) -> DPORecipe:
        """This recipe with the given knobs changed (None: keep this recipe's), checked."""
        return _changed(self, changes)


def _changed(recipe, changes: dict[str, Any]):
    given = {k: v for k, v in changes.items() if v is not None}
    return with_changes(recipe, given) if given else recipe


def with_changes(recipe, changes: Mapping[str, Any], *, only_if_different: bool = False):
    """`recipe` with `changes`: a knob a person sets is theirs on every device, so its GPU
    value goes (`only_if_different`: unless it is set to the recipe's own value, as a form
    left alone sends it)."""
    kept = _gpu_values_kept(recipe, changes, only_if_different)
    extra = {"on_gpu": kept} if kept != getattr(recipe, "on_gpu", ()) else {}
    return dataclasses.replace(recipe, **changes, **extra)


def _gpu_values_kept(recipe, changes: Mapping[str, Any], only_if_different: bool = False):
    """The recipe's GPU values that `changes` leave alone (see `with_changes`)."""
    return tuple(
        (knob_, value)
        for knob_, value in getattr(recipe, "on_gpu", ())
        if knob_ not in changes or (only_if_different and changes[knob_] == getattr(recipe, knob_))
    )


def for_device(recipe, device: str):
    """The recipe as it trains on `device` ("cuda" or "cpu"): on a GPU, with its GPU values."""
    on_gpu = getattr(recipe, "on_gpu", ())
    return dataclasses.replace(recipe, **dict(on_gpu)) if device == "cuda" and on_gpu else recipe


@dataclass(frozen=True)
class RewardRecipe:
    """The knobs of a reward model: TRL's RewardTrainer on the same preference folders,
    starting from the chat model with a one-output score head."""

    FOLDER: ClassVar[Path] = RECIPES_DIR / "reward"
    KIND: ClassVar[str] = "reward"

    name: str = "custom"
    epochs: float = knob(3, "passes over the training pairs", label="Epochs", form=True)
    learning_rate: float = knob(
        1e-4, "the adapter's (and score head's) learning rate", label="Learning rate", form=True
    )
    batch_size: int = knob(8, "pairs per optimizer step", label="Batch size", form=True)
    lora_r: int | None = knob(
        None,
        "LoRA rank (the score head is trained in full); none (0 on the command line): a "
        "full fine-tune",
        label="LoRA r",
        form=True,
        switch="LoRA",
        when_on=16,
    )
    lora_alpha: float = knob(32, "LoRA alpha", label="LoRA alpha", form=True)
    center_rewards: float = knob(
        0.0,
        "pull the scores' mean towards 0 with this weight (TRL's center_rewards_coefficient); "
        "0: off",
    )
    logging_steps: int = knob(10, "log the metrics every N steps (a short run: 10 times)")
    save_total_limit: int | None = knob(2, "checkpoints kept; none: all")
    seed: int = knob(42, "training seed (data order, LoRA and score head initialisation)")
    gradient_checkpointing: bool = knob(
        True, "recompute activations to save memory (TRL's default)"
    )

    def __post_init__(self) -> None:
        check_common(self)
        if self.center_rewards < 0:
            raise UserError(f"center_rewards must be >= 0, not {self.center_rewards}")

    def changed(self, **changes: Any) -> RewardRecipe:
        return _changed(self, changes)


RL_METHODS = ("grpo", "rloo")


@dataclass(frozen=True)
class RLRecipe:
    """The knobs of an online RL run: the policy writes titles for the dataset's ideas and is
    optimised against a reward model's score (plus optional rule terms), with a KL penalty
    to the model it started from. TRL's GRPOTrainer or RLOOTrainer (TRL 1.16 has no PPO)."""

    FOLDER: ClassVar[Path] = RECIPES_DIR / "rl"
    KIND: ClassVar[str] = "rl"

    name: str = "custom"
    method: str = knob(
        "grpo",
        "grpo: PPO's clipped objective with the group's mean reward as the baseline; rloo: a "
        "leave-one-out baseline",
        label="Method",
        choices=RL_METHODS,
        form=True,
    )
    epochs: float = knob(3, "passes over the training ideas", label="Epochs", form=True)
    learning_rate: float = knob(
        1e-6,
        "the policy's learning rate (TRL's default; LoRA needs more)",
        label="Learning rate",
        form=True,
    )
    beta: float = knob(
        0.0,
        "weight of the KL penalty to the starting model: the larger, the closer it stays",
        label="KL weight (beta)",
        form=True,
    )
    batch_size: int = knob(
        8, "titles per optimizer step (a multiple of generations)", label="Batch size", form=True
    )
    generations: int = knob(
        8,
        "titles sampled per idea: the group the baseline is taken over",
        label="Generations",
        form=True,
    )
    reward_weight: float = knob(
        1.0, "weight of the reward model's score", label="Reward model weight", form=True
    )
    format_weight: float = knob(
        0.0,
        "weight of the format rule (1 when a completion follows the prompt, else 0)",
        label="Format weight",
        form=True,
    )
    length_weight: float = knob(
        0.0,
        "weight of the length penalty (0 inside 30-75 characters, down to -1 far outside)",
        label="Length penalty weight",
        form=True,
    )
    lora_r: int | None = knob(
        None,
        "LoRA rank; none (0 on the command line): a full fine-tune",
        label="LoRA r",
        form=True,
        switch="LoRA",
        when_on=16,
    )
    lora_alpha: float = knob(32, "LoRA alpha", label="LoRA alpha")
    temperature: float = knob(1.0, "sampling temperature of the titles trained on")
    max_new_tokens: int = knob(512, "tokens a title may take (a longer one is cut)")
    logging_steps: int = knob(10, "log the metrics every N steps (a short run: 10 times)")
    save_total_limit: int | None = knob(2, "checkpoints kept; none: all")
    seed: int = knob(42, "training seed (data order, sampling, LoRA initialisation)")
    gradient_checkpointing: bool = knob(
        True, "recompute activations to save memory (TRL's default)"
    )
    sft_epochs: float = knob(
        0.0,
        "> 0: first fine-tune on the chosen titles for this many epochs, then RL from there "
        "(0: start from the given model, e.g. a DPO run's sft/ folder)",
    )
    sft_learning_rate: float = knob(1e-4, "the SFT stage's learning rate")
    sft_titles: str = knob(
        "chosen",
        "what the SFT stage imitates: the chosen titles, or both sides",
        choices=("chosen", "both"),
    )

    def __post_init__(self) -> None:
        check_common(self)
        if not self.beta >= 0:
            raise UserError(f"beta must be >= 0, not {self.beta}")
        if not (isinstance(self.generations, int) and self.generations >= 2):
            raise UserError(f"generations must be a whole number >= 2, not {self.generations}")
        if self.batch_size % self.generations:
            raise UserError(
                f"batch size ({self.batch_size}) must be a multiple of generations "
                f"({self.generations})"
            )
        if not self.temperature > 0:
            raise UserError(f"temperature must be positive, not {self.temperature}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise UserError(
                f"max_new_tokens must be a whole number >= 1, not {self.max_new_tokens}"
            )
        weights = (self.reward_weight, self.format_weight, self.length_weight)
        if min(weights) < 0 or not any(weights):
            raise UserError("the reward weights must be >= 0, and one of them > 0")

    def changed(self, **changes: Any) -> RLRecipe:
        return _changed(self, changes)


Recipe = DPORecipe | RewardRecipe | RLRecipe


@dataclass(frozen=True)
class Knob:
    """One recipe field as the CLI and the form see it."""

    name: str
    kind: type  # int, float, bool or str
    optional: bool  # None is a value (e.g. lora_r: no LoRA)
    default: Any
    help: str
    label: str | None
    choices: tuple[str, ...]
    form: bool
    switch: str | None
    when_on: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, value: Any, where: str) -> Any:
        """`value` as this field's type; a YAML `1e-6` (a string to YAML 1.1) is a float."""
        if value is None and self.optional:
            return None
        try:
            if self.kind is bool:
                if isinstance(value, bool):
                    return value
                raise ValueError
            if self.kind is int:
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                return int(float(value))
            if self.kind is float:
                if isinstance(value, bool):
                    raise ValueError
                return float(value)
            return str(value)
        except (TypeError, ValueError):
            kind = ("a whole number" if self.kind is int else f"a {self.kind.__name__}") + (
                " or null" if self.optional else ""
            )
            raise UserError(f"{where}: {self.name} must be {kind}, not {value!r}") from None


NOT_KNOBS = ("name", "on_gpu")


@functools.cache
def knobs(form_only: bool = False, kind: type = DPORecipe) -> tuple[Knob, ...]:
    """The recipe's fields other than its name, in declaration order (read once)."""
    hints = typing.get_type_hints(kind)
    found = []
    for f in dataclasses.fields(kind):
        if f.name in NOT_KNOBS or (form_only and not f.metadata["form"]):
            continue
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        kind = next(a for a in args if a is not type(None)) if args else hint
        found.append(
            Knob(
                f.name,
                kind,
                type(None) in args,
                f.default,
                f.metadata["help"],
                f.metadata["label"],
                f.metadata["choices"],
                f.metadata["form"],
                f.metadata["switch"],
                f.metadata["when_on"],
            )
        )
    return tuple(found)


# --- recipe files ----------------------------------------------------------------------------


def recipe_from_mapping(
    values: Mapping[str, Any], name: str, where: str, kind: type = DPORecipe
) -> Recipe:
    """A recipe from a file's keys: unknown keys refused, each value checked for its type."""
    known = {k.name: k for k in knobs(kind=kind)}
    allowed = {f.name for f in dataclasses.fields(kind)} & set(NOT_KNOBS)
    unknown = sorted(set(values) - set(known) - allowed)
    if unknown:
        raise UserError(
            f"{where}: unknown recipe key(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )
    checked = {
        key: known[key].coerce(value, where) for key, value in values.items() if key in known
    }
    if values.get("on_gpu"):
        checked["on_gpu"] = gpu_values(values["on_gpu"], known, f"{where}, on_gpu")
    recipe = kind(name=str(values.get("name") or name), **checked)
    for_device(recipe, "cuda")  # the GPU values checked here too, not first on a GPU
    return recipe


def gpu_values(given: Any, known: Mapping[str, Knob], where: str) -> tuple[tuple[str, Any], ...]:
    """A recipe file's `on_gpu:` mapping (or the pairs a recipe holds) as checked pairs, in the
    knobs' order."""
    try:
        values = dict(given)
    except (TypeError, ValueError):
        raise UserError(f"{where}: a mapping of knob: value, not {given!r}") from None
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown knob(s) {', '.join(map(str, unknown))}")
    return tuple((k, known[k].coerce(values[k], where)) for k in known if k in values)


def load_recipe_file(path: str | Path, kind: type = DPORecipe) -> Recipe:
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UserError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: a recipe file is a mapping of knob: value")
    return recipe_from_mapping(values, path.stem, str(path), kind)


@functools.cache
def shipped_recipes(kind: type) -> dict[str, Any]:
    """The recipes shipped for a recipe class: each YAML file in its FOLDER, by name. Read
    once; a new method's recipe class needs no list here, only its folder."""
    return {p.stem: load_recipe_file(p, kind) for p in sorted(kind.FOLDER.glob("*.yaml"))}


RECIPES: dict[str, DPORecipe] = shipped_recipes(DPORecipe)
REWARD_RECIPES: dict[str, RewardRecipe] = shipped_recipes(RewardRecipe)
RL_RECIPES: dict[str, RLRecipe] = shipped_recipes(RLRecipe)


def get_recipe(name: str | None = None, kind: type = DPORecipe) -> Any:
    """A shipped recipe of `kind` by name (default: `fast`), or a recipe file by path."""
    name, shipped = name or DEFAULT_RECIPE, shipped_recipes(kind)
    if name in shipped:
        return shipped[name]
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        return load_recipe_file(name, kind)
    what = "recipe" if kind is DPORecipe else f"{kind.KIND} recipe"
    raise UserError(
        f"unknown {what} {name!r}: choose one of {', '.join(shipped)}, "
        "or give a recipe file (.yaml)"
    )


# --- the CLI: one flag per field, its help from the field ------------------------------------


def add_recipe_arguments(parser: argparse.ArgumentParser, kind: type = DPORecipe) -> None:
    """`--recipe NAME|FILE` and one flag per recipe field (default: the recipe's value)."""
    recipes = shipped_recipes(kind)
    shipped = "; ".join(f"{n}: {describe_recipe(r)}" for n, r in recipes.items())
    parser.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        help=f"a recipe name or a YAML file (default: {DEFAULT_RECIPE}). Shipped: {shipped}",
    )
    group = parser.add_argument_group("recipe overrides (default: the recipe's value)")
    for k in knobs(kind=kind):
        values = ", ".join(
            f"{n} {_shown(getattr(r, k.name))}"
            + "".join(
                f" (on a GPU {_shown(v)})" for g, v in getattr(r, "on_gpu", ()) if g == k.name
            )
            for n, r in recipes.items()
        )
        help_text = f"{k.help} ({values})"
        if k.kind is bool:
            group.add_argument(
                k.flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(
                k.flag,
                type=_cli_type(k),
                default=None,
                help=help_text,
                choices=k.choices or None,
                metavar=None if k.choices else k.name.upper(),
            )


def recipe_from_args(args: argparse.Namespace, kind: type = DPORecipe) -> Any:
    """The recipe `--recipe` names, with every flag given on the command line applied."""
    recipe, fields = get_recipe(args.recipe, kind), knobs(kind=kind)
    changes = {k.name: getattr(args, k.name) for k in fields if getattr(args, k.name) is not None}
    # An optional knob's "none" on the command line is 0 (e.g. --lora-r 0: a full fine-tune).
    changes.update({k.name: None for k in fields if k.optional and changes.get(k.name) == 0})
    return with_changes(recipe, changes) if changes else recipe


# --- changes to a recipe, as KNOB=VALUE (`hub train-on-jobs --set`, the GPU bench's rows) ----


def parse_changes(texts: Sequence[str], where: str) -> dict[str, Any]:
    """KNOB=VALUE texts as {knob: value}, each value read as YAML ('none': null). Checked
    against a recipe kind by `recipe_changed`."""
    import yaml

    changes = {}
    for text in texts:
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            raise UserError(f"{where} {text!r}: write KNOB=VALUE, e.g. epochs=2")
        value = value.strip()
        changes[key.strip()] = None if value.lower() == "none" else yaml.safe_load(value)
    return changes


def recipe_changed(recipe: Recipe, changes: Mapping[str, Any], where: str) -> Recipe:
    """`recipe` with `changes` ({knob: value}), each checked as a recipe file's key is; it
    keeps its name (it is that recipe, changed)."""
    if not changes:
        return recipe
    values = {**dataclasses.asdict(recipe), **changes}
    if "on_gpu" in values:  # a knob changed here is the change's on every device
        values["on_gpu"] = _gpu_values_kept(recipe, changes)
    return recipe_from_mapping(values, recipe.name, where, type(recipe))


def changes_between(base: Recipe, recipe: Recipe) -> dict[str, Any]:
    """{knob: value} of each knob where `recipe` differs from `base`."""
    return {
        k.name: getattr(recipe, k.name)
        for k in knobs(kind=type(recipe))
        if getattr(recipe, k.name) != getattr(base, k.name)
    }


def recipe_flags(base: Recipe, recipe: Recipe) -> list[str]:
    """The command-line flags (`add_recipe_arguments`'s) that turn `base` into `recipe`: what
    a job's `pipeline train --recipe BASE ...` needs to train `recipe`."""
    flags: list[str] = []
    known = {k.name: k for k in knobs(kind=type(recipe))}
    for name, value in changes_between(base, recipe).items():
        k = known[name]
        if k.kind is bool:
            flags.append(k.flag if value else "--no-" + k.flag[2:])
        elif value is None:
            flags += [k.flag, "0"]  # `recipe_from_args`: 0 is an optional knob's none
        elif k.optional and value == 0:
            raise UserError(f"{k.name} 0 cannot be given on the command line (0 means none)")
        else:
            flags += [k.flag, repr(value) if isinstance(value, float) else str(value)]
    return flags


def _cli_type(k: Knob):
    def parse(text: str):
        try:
            return k.coerce(text, k.flag)
        except UserError as exc:  # argparse's own one-line error, with the usage hint
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = k.kind.__name__  # argparse names the type in its error
    return parse


def _shown(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def describe_recipe(recipe: Recipe) -> str:
    """What a recipe changes from the field defaults, in one line."""
    changed = [
        f"{k.name} {_shown(getattr(recipe, k.name))}"
        for k in knobs(kind=type(recipe))
        if getattr(recipe, k.name) != k.default
    ]
    gpu = gpu_changes(recipe)
    return (", ".join(changed) or "the defaults (TRL's)") + (f"; on a GPU: {gpu}" if gpu else "")


def gpu_changes(recipe: Recipe) -> str:
    """The values a recipe takes where a GPU trains, as "knob value, ..." ("" when none; a
    switch is on or off)."""
    return ", ".join(
        f"{k} {('on' if v else 'off') if isinstance(v, bool) else _shown(v)}"
        for k, v in getattr(recipe, "on_gpu", ())
    )


# --- the Train tab's form: the `form=True` fields -------------------------------------------


def form_values(recipe: Recipe) -> tuple:
    """The form's values for `recipe`, in `knobs(form_only=True)` order; an optional knob is
    two values: its switch and its number."""
    values: list[Any] = []
    for k in knobs(form_only=True, kind=type(recipe)):
        value = getattr(recipe, k.name)
        values += (
            [value is not None, value if value is not None else k.when_on]
            if k.optional
            else [value]
        )
    return tuple(values)


def recipe_from_form(name: str, values: Sequence[Any], kind: type = DPORecipe) -> Any:
    """The recipe `name` with the form's values applied (an empty field keeps the recipe's; an
    optional knob switched off: None). A 0 is a value like any other: where it makes no sense
    (a learning rate of 0) the recipe's own checks say so, rather than the run quietly
    training with the recipe's value instead."""
    recipe, changes, rest = get_recipe(name, kind), {}, list(values)
    for k in knobs(form_only=True, kind=kind):
        if k.optional:
            on, number = rest.pop(0), rest.pop(0)
            number = k.when_on if number in (None, "") else number
            changes[k.name] = k.coerce(number, k.label or k.name) if on else None
        else:
            value = rest.pop(0)
            if value not in (None, ""):
                changes[k.name] = k.coerce(value, k.label or k.name)
    return with_changes(recipe, changes, only_if_different=True)
