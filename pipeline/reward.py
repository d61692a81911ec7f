"""A reward model: the RLHF half's first step. People's votes (the same preference folders DPO
trains on, split by idea the same way) teach a model to give a title a score, such that the
chosen title of a pair scores higher than the rejected one.

`train_reward` reads top to bottom as the stages of a run, like `dpo.train_dpo`:

    open the run (data, the chat model + a one-output score head) -> RewardTrainer -> train
    -> save -> summary

A LoRA run trains the adapter and, in full, the new score head, then merges both into a plain
sequence-classification model in OUT. Its uses, through `RewardModel.score`:
- the judge of an evaluation round (`judges.RewardJudge`);
- best-of-n: sample n titles and show them by score (`best_of_n`);
- the reward of an online RL run (`pipeline/rl.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.generation import GenerationSettings, Title, generate_titles
from pipeline.metrics import METRICS_FILE
from pipeline.models import LoadedModel, load_model
from pipeline.prompts import title_messages
from pipeline.recipes import RewardRecipe, get_recipe
from pipeline.runs import write_summary
from pipeline.stages import (
    MetricsFile,
    TrainResult,
    bounded_rows,
    common_args,
    first_rows,
    loop_args,
    lora_config,
    open_run,
    planned_steps,
    train_and_save,
    watched,
)


def train_reward(
    data: str | Path,
    out: str | Path,
    model_name: str | None = None,
    recipe: RewardRecipe | None = None,
    *,
    max_steps: int | None = None,
    callbacks: list | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a reward model on the dataset folder `data`, write it to `out`, return a summary
    (also OUT/train_summary.json). `resume` and `stop_after` work as for
    `train_dpo`: a stopped run carries on from its last checkpoint, a chunk ends with one."""
    from trl import RewardConfig, RewardTrainer

    recipe = recipe or get_recipe(kind=RewardRecipe)
    # the model: the chat model with a new one-output head (the head is what the score is
    # read from); a reward recipe has no SFT stage
    run = open_run(data, out, model_name, recipe, max_steps=max_steps, resume=resume, head="score")
    planned = planned_steps(len(run.train_split), recipe.batch_size, recipe.epochs, max_steps)
    config = RewardConfig(
        output_dir=str(run.out),
        per_device_eval_batch_size=recipe.batch_size,
        center_rewards_coefficient=recipe.center_rewards or None,
        **loop_args(recipe, max_steps, run.eval_split is not None),
        **common_args(recipe, run.policy, run.out, recipe.KIND, planned),
    )
    trainer = RewardTrainer(
        model=run.policy.model,
        args=config,
        train_dataset=run.train_split,
        eval_dataset=run.eval_split,
        processing_class=run.policy.tokenizer,
        peft_config=lora_config(recipe, task="SEQ_CLS"),
        callbacks=[MetricsFile(run.out / METRICS_FILE), *(callbacks or [])],
    )
    # train, save (merged into a plain sequence-classification model), summary
    return train_and_save(
        watched(trainer, stop_after), run.checkpoint, run.policy.tokenizer, recipe, run.out,
        data, run.start, stop_after=stop_after, kind=recipe.KIND,
        rows_limit=bounded_rows(recipe, max_steps),
    )  # fmt: skip


# --- using a reward model --------------------------------------------------------------------


@dataclass
class RewardModel:
    """A trained reward model, loaded once: a score for a completion of a prompt."""

    loaded: LoadedModel
    batch_size: int = 16

    @property
    def name(self) -> str:
        return self.loaded.label

    def score(
        self, prompts: Sequence[list[dict[str, str]]], completions: Sequence[str]
    ) -> list[float]:
        """The score of each completion after its prompt (conversational: the chat template of
        prompt + assistant reply, tokenized exactly as TRL's RewardTrainer did in training)."""
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        sequences = [
            list(
                tokenizer.apply_chat_template(
                    [*prompt, {"role": "assistant", "content": completion}],
                    tokenize=True,
                    return_dict=True,
                )["input_ids"]
            )
            for prompt, completion in zip(prompts, completions, strict=True)
        ]
        pad = tokenizer.pad_token_id
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(sequences), self.batch_size):
                batch = sequences[start : start + self.batch_size]
                width = max(len(ids) for ids in batch)
                # right-padded, as TRL's collator pads: the score is read at the last real token
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(batch):
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    mask[row, : len(ids)] = 1
                device = self.loaded.device.name
                output = model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                scores += output.logits[:, 0].float().tolist()
        return scores

    def score_titles(self, idea: str, titles: Sequence[str]) -> list[float]:
        """The score of each title written for `idea` with the tutorial's prompt."""
        prompt = title_messages(idea)
        return self.score([prompt] * len(titles), list(titles))

    def ranked_right(self, rows: Sequence[dict[str, Any]]) -> list[bool]:
        """Per labelled pair (prompt/chosen/rejected rows): whether the chosen completion
        scores strictly higher."""
        prompts = [row["prompt"] for row in rows]
        chosen = self.score(prompts, [row["chosen"][0]["content"] for row in rows])
        rejected = self.score(prompts, [row["rejected"][0]["content"] for row in rows])
        return [c > r for c, r in zip(chosen, rejected, strict=True)]

    def accuracy(self, rows: Sequence[dict[str, Any]]) -> float:
        """Share of labelled pairs `ranked_right`, counted pair by pair (0 without rows)."""
        return sum(self.ranked_right(rows)) / len(rows) if rows else 0.0


@functools.cache
def load_reward_model(name: str) -> RewardModel:
    """The reward model in folder (or Hub repo) `name`, loaded once per process. Loading puts
    a one-output head on any model, new if the checkpoint has none: so the checkpoint itself
    must be a scorer, or the rewards would come from random weights (a chat model named by
    mistake, or the offline stand-in for a Hub id that cannot be reached)."""
    loaded = load_model(name, head="score")
    if loaded.source.notice:  # the offline stand-in, a chat model
        raise UserError(
            f"reward model {name!r} cannot be loaded: it is not in the local cache and the Hub "
            "is offline or cannot be reached (no chat model can stand in for a reward model)"
        )
    architectures = getattr(loaded.model.config, "architectures", None) or []
    if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        raise UserError(
            f"{name!r} is not a reward model: its checkpoint is a "
            f"{', '.join(architectures) or 'model'} with no score head"
        )
    if getattr(loaded.model.config, "num_labels", None) != 1:
        raise UserError(f"{name!r} is not a reward model (a one-output score head)")
    return RewardModel(loaded)


@dataclass(frozen=True)
class ScoredTitle:
    title: Title
    score: float


def best_of_n(
    loaded: LoadedModel,
    reward: RewardModel,
    idea: str,
    settings: GenerationSettings | None = None,
) -> list[ScoredTitle]:
    """`settings.n` sampled titles for `idea`, scored by the reward model, best first."""
    titles = generate_titles(loaded, [idea], settings or GenerationSettings())[0]
    scores = reward.score_titles(idea, [t.raw for t in titles])
    ranked = sorted(zip(titles, scores, strict=True), key=lambda pair: -pair[1])
    return [ScoredTitle(title, score) for title, score in ranked]


@dataclass(frozen=True)
class RewardHeldOut:
    """How a reward model ranks the held-out pairs, beside the starting model's likelihood
    and, when given, a DPO run's implicit reward on the same pairs."""

    pairs: int
    reward_model: float
    untrained: float
    dpo: float | None = None
    dpo_run: str | None = None
    gained: int | None = None  # against the untrained model, pair by pair (None: older runs)
    lost: int | None = None

    def describe(self) -> str:
        from pipeline.evaluation import paired_change

        line = (
            f"held-out pairs ranked as labelled: reward model {self.reward_model:.3f} of "
            f"{self.pairs} (the untrained model's likelihood: {self.untrained:.3f}"
        )
        if self.dpo is not None:
            line += f"; the DPO run {self.dpo_run}: {self.dpo:.3f}"
        return line + ")" + paired_change(self.gained, self.lost)


def score_reward_held_out(result: TrainResult, dpo_run: str | None = None) -> TrainResult:
    """The finished reward run `result` with its held-out pairs ranked pair by pair (and a DPO
    run's figure on the same pairs, when given); its summary file updated."""
    from dataclasses import replace

    from pipeline.datasets import load_preference_dataset
    from pipeline.evaluation import gained_and_lost, labelled_ranking, pair_logps, ranked_right

    if not result.finished or result.data is None:
        return result
    valid = first_rows(load_preference_dataset(result.data).get("valid"), result.rows_limit)
    if valid is None or len(valid) == 0:
        return result
    rows = list(valid)
    now = RewardModel(load_model(result.out, fresh=True, head="score")).ranked_right(rows)
    start = result.started_from or result.base_model
    before = ranked_right(pair_logps(load_model(start), rows))
    dpo = labelled_ranking(dpo_run, rows)[0] if dpo_run else None
    held_out = RewardHeldOut(
        len(rows),
        sum(now) / len(rows),
        sum(before) / len(rows),
        dpo,
        dpo_run,
        *gained_and_lost(now, before),
    )
    scored = replace(result, held_out=asdict(held_out))
    write_summary(scored)
    return scored
