"""DPO with TRL on a preference dataset folder, from a recipe (`pipeline/recipes.py`).

`train_dpo` reads top to bottom as the stages of a run (`pipeline/stages.py`):

    open the run (data, model, SFT stage) -> DPO trainer -> train -> save -> summary

Scoring the held-out pairs afterwards (`score_held_out`) is the caller's choice. The `tutorial`
recipe is the tutorial's run: a full fine-tune, 3 epochs, batch 8, evaluated and saved every
epoch, the best `eval_loss` kept, TRL defaults otherwise. The `fast` recipe (the default)
trains a LoRA adapter after an SFT stage.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

from pipeline.metrics import METRICS_FILE
from pipeline.models import LoadedModel, load_model, pick_device
from pipeline.recipes import DPORecipe, for_device, get_recipe, gpu_changes
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
    trainer_class,
    watched,
)

log = logging.getLogger(__name__)


def train_dpo(
    data: str | Path,
    out: str | Path,
    model_name: str | None = None,
    recipe: DPORecipe | None = None,
    *,
    max_steps: int | None = None,
    callbacks: list | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on the dataset folder `data` with `recipe` (default: `fast`), write the best model
    to `out`, return a summary (also written to OUT/train_summary.json).

    Where a GPU trains, the recipe's GPU values apply (its `on_gpu`; `recipes.for_device`).
    `resume=True` carries on from the newest checkpoint in `out` (a stopped or crashed run).
    `stop_after=N` makes this call one chunk of a longer run: it saves a checkpoint and returns
    after N more steps, leaving the model unsaved until the chunk that reaches the last step.
    """
    recipe = recipe or get_recipe()
    if (device := pick_device().name) == "cuda" and gpu_changes(recipe):
        log.info("recipe %s on this GPU: %s", recipe.name, gpu_changes(recipe))
    recipe = for_device(recipe, device)
    run = open_run(
        data, out, model_name, recipe, max_steps=max_steps, resume=resume, callbacks=callbacks,
        stop_after=stop_after,
    )  # fmt: skip
    if run.sft_unfinished:  # a chunk that ended in the SFT stage
        return run.sft_unfinished
    # LoRA: the reference is the adapter switched off. A full fine-tune: a second frozen copy
    # of the starting point, loaded the same (offline-safe) way, rather than TRL re-reading
    # `config._name_or_path`, a Hub id it may not reach.
    reference = None if recipe.lora_r else load_model(run.reference_from, fresh=True).model
    trainer = dpo_trainer(
        run.policy, reference, recipe, run.out, run.train_split, run.eval_split,
        max_steps=max_steps, callbacks=callbacks,
    )  # fmt: skip
    return train_and_save(
        watched(trainer, run.steps_left), run.checkpoint, run.policy.tokenizer, recipe,
        run.out, data, run.start, stop_after=run.steps_left, kind=recipe.KIND,
        reference=run.reference_from, rows_limit=bounded_rows(recipe, max_steps),
    )  # fmt: skip


def dpo_trainer(
    policy: LoadedModel,
    reference,
    recipe: DPORecipe,
    out: Path,
    train_split,
    eval_split,
    *,
    max_steps: int | None = None,
    callbacks: list | None = None,
):
    """TRL's DPOTrainer for the recipe: evaluated and saved every epoch, the best `eval_loss`
    kept (where there is a held-out split), every logged record appended to OUT/metrics.jsonl."""
    from trl import DPOConfig, DPOTrainer

    from pipeline.shared_prompt import SharedPromptDPOTrainer

    has_eval = eval_split is not None
    planned = planned_steps(len(train_split), recipe.batch_size, recipe.epochs, max_steps)
    config = DPOConfig(
        output_dir=str(out),
        per_device_eval_batch_size=recipe.batch_size,
        beta=recipe.beta,
        **loop_args(recipe, max_steps, has_eval),
        precompute_ref_log_probs=recipe.precompute_ref_log_probs,
        loss_type=[recipe.loss, "sft"] if recipe.sft_weight else [recipe.loss],
        loss_weights=[1.0, recipe.sft_weight] if recipe.sft_weight else None,
        **common_args(recipe, policy, out, recipe.KIND, planned),
    )
    cls, extra = trainer_class(recipe, DPOTrainer, SharedPromptDPOTrainer)
    return cls(
        **extra,
        model=policy.model,
        ref_model=reference,
        peft_config=lora_config(recipe),
        args=config,
        train_dataset=train_split,
        eval_dataset=eval_split,
        processing_class=policy.tokenizer,
        callbacks=[MetricsFile(out / METRICS_FILE), *(callbacks or [])],
    )


def score_held_out(result: TrainResult) -> TrainResult:
    """The finished run `result` with its held-out pairs ranked pair by pair, beside what the
    untrained model knew (TRL's accuracy is a mean of batch means); its summary file updated.
    Unchanged for an unfinished chunk, a run without a held-out split, or a process other than
    the main one under a launcher."""
    from pipeline.datasets import load_preference_dataset
    from pipeline.evaluation import held_out_ranking

    if not result.finished or os.environ.get("RANK", "0") != "0" or result.data is None:
        return result
    valid = first_rows(load_preference_dataset(result.data).get("valid"), result.rows_limit)
    if valid is None or len(valid) == 0:
        return result
    started_from = result.started_from or result.base_model
    ranking = held_out_ranking(list(valid), result.out, result.reference, started_from)
    scored = replace(result, held_out=asdict(ranking))
    write_summary(scored)
    return scored
