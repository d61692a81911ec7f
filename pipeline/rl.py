"""Online RL against a reward model: the RLHF half's second step.

The policy writes titles for the ideas of the dataset's training split, a reward scores each,
and the policy moves towards the better ones, held near the model it started from by a KL
penalty. TRL 1.16 has no PPO trainer: `method="grpo"` is GRPO (PPO's clipped objective, with
the mean reward of the group of titles written for the same idea in place of a learned value
function), `method="rloo"` is RLOO (a leave-one-out baseline over the same group).

`train_rl` reads top to bottom like `dpo.train_dpo`:

    data (the ideas) -> reward -> open the run (policy, optional SFT stage) -> trainer
    -> train -> save -> summary

The reward is a weighted sum of terms (`reward_terms`): the reward model's score, the format
rule (`evaluation.follows_prompt`) and a length penalty. Each term's mean is logged on its own
(reward/model, reward/format, reward/length), and every batch of titles with its scores goes
to OUT/samples.jsonl as it is generated, so reward hacking shows while the run goes: titles
that please the reward model and break the prompt (very short, several titles, the idea
echoed) show as a rising model score beside a falling format share.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.evaluation import MAX_CHARS, MIN_CHARS, follows_prompt
from pipeline.metrics import METRICS_FILE, read_metrics
from pipeline.prompts import display_title, idea_in_prompt
from pipeline.recipes import RLRecipe, get_recipe
from pipeline.stages import (
    MetricsFile,
    TrainResult,
    common_args,
    loop_args,
    lora_config,
    open_run,
    planned_steps,
    train_and_save,
    training_splits,
    watched,
)

SAMPLES_FILE = "samples.jsonl"
SAMPLES_KEPT = 2000  # the newest lines kept in OUT/samples.jsonl
LENGTH_SLACK = 30  # characters outside 30-75 at which the length penalty reaches -1


@dataclass(frozen=True)
class RewardTerm:
    """One part of the reward: `score(prompts, completions) -> one float per completion`."""

    name: str
    weight: float
    score: Callable[[Sequence[list[dict[str, str]]], Sequence[str]], list[float]]


def format_score(prompts, completions) -> list[float]:
    """1 for a completion that is just one 30-75 character title, as the prompt asks; else 0."""
    return [float(follows_prompt(c)) for c in completions]


def length_score(prompts, completions) -> list[float]:
    """0 for a displayed title of 30-75 characters, falling linearly to -1 at 30 characters
    outside that range (a very short title is a classic reward hack)."""
    scores = []
    for completion in completions:
        n = len(display_title(completion))
        off = MIN_CHARS - n if n < MIN_CHARS else n - MAX_CHARS if n > MAX_CHARS else 0
        scores.append(-min(1.0, off / LENGTH_SLACK))
    return scores


def checked_reward_model(recipe: RLRecipe, reward_model: str | None) -> str | None:
    """The reward model a run of `recipe` is trained against: one is needed unless the
    recipe's reward_weight is 0. (That it is a reward run is `methods.check_reward_model`'s
    question, asked first by every caller that starts a run through the registry.)"""
    if reward_model:
        return reward_model
    if recipe.reward_weight:
        raise UserError(
            "choose the reward model the policy is trained against (`--reward RM_DIR` on the "
            "command line): an RL run needs a reward model unless its reward_weight is 0"
        )
    return None


def reward_terms(recipe: RLRecipe, reward_model: str | None) -> list[RewardTerm]:
    """The recipe's reward: the reward model's score (when its weight is not 0), the format
    rule and the length penalty. Terms of weight 0 are still computed and logged, so the
    format share can be watched in a run that does not reward it."""
    terms = []
    checked = checked_reward_model(recipe, reward_model)
    if recipe.reward_weight and checked:
        from pipeline.reward import load_reward_model

        scorer = load_reward_model(checked)
        terms.append(RewardTerm("model", recipe.reward_weight, scorer.score))
    terms.append(RewardTerm("format", recipe.format_weight, format_score))
    terms.append(RewardTerm("length", recipe.length_weight, length_score))
    return terms


class TitleReward:
    """The reward function handed to TRL: the weighted sum of the terms. It logs each term's
    mean (TRL's `log_metric`) and appends the batch's titles and scores to OUT/samples.jsonl."""

    __name__ = "title_reward"  # TRL logs rewards/<name>/mean

    def __init__(self, terms: Sequence[RewardTerm], samples: Path | None) -> None:
        if not terms:
            raise UserError("an RL run needs at least one reward term")
        self.terms, self.samples = list(terms), samples

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        texts = [_text(c) for c in completions]
        scored = {t.name: t.score(prompts, texts) for t in self.terms}
        totals = [sum(t.weight * scored[t.name][i] for t in self.terms) for i in range(len(texts))]
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, values in scored.items():
                log_metric(f"reward/{name}", sum(values) / len(values))
        if self.samples is not None:
            state = kwargs.get("trainer_state")
            step = (state.global_step + 1) if state is not None else None  # the step it feeds
            self._write(step, prompts, texts, scored, totals)
        return totals

    def _write(self, step, prompts, texts, scored, totals) -> None:
        lines = [
            json.dumps(
                {
                    "step": step,
                    "idea": idea_in_prompt(prompt),
                    "title": text,
                    "reward": round(total, 4),
                    **{name: round(values[i], 4) for name, values in scored.items()},
                },
                ensure_ascii=False,
            )
            for i, (prompt, text, total) in enumerate(zip(prompts, texts, totals, strict=True))
        ]
        path = self.samples
        kept = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        kept = (kept + lines)[-SAMPLES_KEPT:]
        path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _text(completion: Any) -> str:
    """A completion as TRL hands it over: text, or (conversational) a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion)


def read_samples(out: str | Path, last: int | None = None) -> list[dict[str, Any]]:
    """The titles an RL run has generated so far, with their scores (newest last)."""
    path = Path(out) / SAMPLES_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in (lines[-last:] if last else lines)]


SAMPLE_COLUMNS = {  # the Train tab's table of titles being written -> sample key
    "Step": "step",
    "Idea": "idea",
    "Title": "title",
    "Reward": "reward",
    "Reward model": "model",
    "Follows the prompt": "format",
    "Length penalty": "length",
}


def sample_rows(samples: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Samples as table rows in `SAMPLE_COLUMNS` order (a term the run has not: blank)."""
    return [[s.get(key) for key in SAMPLE_COLUMNS.values()] for s in samples]


def prompt_rows(split) -> list[dict[str, Any]]:
    """Each distinct prompt of a preference split once: what the policy writes titles for."""
    seen: dict[str, dict[str, Any]] = {}
    for prompt in split["prompt"]:
        seen.setdefault(json.dumps(prompt, sort_keys=True), {"prompt": prompt})
    return list(seen.values())


def train_rl(
    data: str | Path,
    out: str | Path,
    model_name: str | None = None,
    reward_model: str | None = None,
    recipe: RLRecipe | None = None,
    *,
    terms: Sequence[RewardTerm] | None = None,
    max_steps: int | None = None,
    callbacks: list | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Optimise the policy `model_name` against `reward_model` (a `reward` run's folder) plus
    the recipe's rule terms, on the training ideas of the dataset folder `data`; write it to
    `out` and return a summary (OUT/train_summary.json). `terms` replaces the
    recipe's reward (a planted reward in tests). `resume` and `stop_after` work as for DPO."""
    from datasets import Dataset

    recipe = recipe or get_recipe(kind=RLRecipe)

    # data: the training split's ideas, and the reward (refused when there is no reward
    # model, or it is not a reward run), both checked before the policy loads
    splits = training_splits(data, recipe)
    prompts = Dataset.from_list(prompt_rows(splits[0]))
    if len(prompts) * recipe.generations < recipe.batch_size:
        raise UserError(
            f"{data}: {len(prompts)} ideas x {recipe.generations} titles is less than one batch "
            f"of {recipe.batch_size}"
        )
    reward = TitleReward(terms or reward_terms(recipe, reward_model), Path(out) / SAMPLES_FILE)

    # policy (after the SFT stage, if any): the KL is taken against that start
    run = open_run(
        data, out, model_name, recipe, max_steps=max_steps, resume=resume, callbacks=callbacks,
        splits=splits, stop_after=stop_after, reward_model=reward_model,
    )  # fmt: skip
    if run.sft_unfinished:  # a chunk that ended in the SFT stage
        return run.sft_unfinished
    run.policy.tokenizer.padding_side = "left"  # generation pads on the left
    if not resume:
        (run.out / SAMPLES_FILE).unlink(missing_ok=True)
    trainer = rl_trainer(
        run.policy, recipe, run.out, prompts, reward, max_steps=max_steps, callbacks=callbacks
    )
    return train_and_save(
        watched(trainer, run.steps_left), run.checkpoint, run.policy.tokenizer, recipe, run.out,
        data, run.start, stop_after=run.steps_left, kind=recipe.KIND, reference=run.reference_from,
        reward_model=str(reward_model) if reward_model and recipe.reward_weight else None,
    )  # fmt: skip


def rl_report(result: TrainResult) -> list[str]:
    """How a finished run's reward terms and KL moved (first -> last logged), and the last
    few titles it wrote with their rewards."""
    logged = [m for m in read_metrics(result.metrics_file) if "reward" in m]
    lines = []
    if logged:
        first, last = logged[0], logged[-1]
        for key in ("reward", "reward/model", "reward/format", "reward/length", "kl"):
            if key in last:
                lines.append(f"{key}: {first.get(key, float('nan')):.3f} -> {last[key]:.3f}")
    samples = read_samples(result.out, 4)
    return lines + [f"  [{s['reward']:+.2f}] {s['title'].strip()}" for s in samples]


def rl_trainer(
    policy,
    recipe: RLRecipe,
    out: Path,
    prompts,
    reward: TitleReward,
    *,
    max_steps: int | None = None,
    callbacks: list | None = None,
):
    """TRL's GRPOTrainer or RLOOTrainer for the recipe, saved every epoch, every logged record
    appended to OUT/metrics.jsonl. With LoRA the KL reference is the adapter switched off."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = {
        "grpo": (GRPOConfig, GRPOTrainer),
        "rloo": (RLOOConfig, RLOOTrainer),
    }[recipe.method]
    # a step takes `batch_size` completions: `generations` for each of its prompts
    per_step = max(1, recipe.batch_size // recipe.generations)
    planned = planned_steps(len(prompts), per_step, recipe.epochs, max_steps)
    config = config_class(
        output_dir=str(out),
        beta=recipe.beta,
        num_generations=recipe.generations,
        max_completion_length=recipe.max_new_tokens,
        temperature=recipe.temperature,
        **loop_args(recipe, max_steps, has_eval=False),  # measured by generating, afterwards
        **common_args(recipe, policy, out, recipe.method, planned),
    )
    with loadable_by_name(policy, out, recipe.lora_r is None and recipe.beta > 0):
        return trainer_class(
            model=policy.model,
            reward_funcs=[reward],
            args=config,
            train_dataset=prompts,
            processing_class=policy.tokenizer,
            peft_config=lora_config(recipe),
            callbacks=[MetricsFile(out / METRICS_FILE), *(callbacks or [])],
        )


@contextlib.contextmanager
def loadable_by_name(policy, out: Path, needed: bool) -> Iterator[None]:
    """TRL builds a full fine-tune's KL reference itself, with `from_pretrained` of the
    policy's name. A policy merged from an adapter as it loaded (an SFT stage kept as its
    adapter) is named by a folder only `load_model` reads: while the trainer is built, its
    name is its weights saved aside in `out`, which go after."""
    if not needed or policy.source.kind != "adapter":
        yield
        return
    model = policy.model
    named = model.name_or_path
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kl-reference-", dir=out) as folder:
        model.save_pretrained(folder)
        model.name_or_path = model.config.name_or_path = folder
        try:
            yield
        finally:
            model.name_or_path = model.config.name_or_path = named
