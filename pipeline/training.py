"""DPO with TRL on a preference dataset folder, from a named recipe.

The reference recipe is the tutorial's: 3 epochs, batch 8, evaluate and save every epoch,
keep the model with the best `eval_loss`, TRL defaults otherwise. The only change is the one a
CPU forces: TRL 1.16 defaults to bf16, which fails without a GPU, so bf16 follows the device.

The `fast` recipe trains a LoRA adapter (the reference model is the adapter switched off: no
second copy), computes the reference log-probs once before training instead of every step,
and turns gradient checkpointing off (memory is not the constraint for these models). A LoRA
run is merged into the base weights when saved, so the output loads like any model; the adapter
alone is kept in OUT/adapter.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pipeline.errors import UserError
from pipeline.evaluation import HeldOutRanking, held_out_ranking
from pipeline.models import load_model


@dataclass(frozen=True)
class DPORecipe:
    """The knobs of a DPO run; anything not named here is TRL's default."""

    name: str
    epochs: float = 3
    batch_size: int = 8
    learning_rate: float = 1e-6  # TRL's default, which the tutorial kept
    beta: float = 0.1  # TRL's default
    logging_steps: int = 25
    save_total_limit: int | None = 2  # best + latest: full checkpoints of a 0.5B model are GBs
    seed: int = 42
    gradient_checkpointing: bool = True  # TRL's default: saves memory, costs a recompute
    precompute_ref_log_probs: bool = False  # TRL's default: reference forward every step
    lora_r: int | None = None  # None: full fine-tune
    lora_alpha: int = 32
    shared_prompt: bool = False  # each prompt computed once per pair (pipeline/shared_prompt.py)
    # > 0 (with shared_prompt): batches take the rows of one prompt this many at a time, so the
    # prompt is computed once for them; 0: plain random batches
    prompt_chunk: int = 0
    loss: str = "sigmoid"  # TRL's loss_type: "sigmoid" is DPO; "sigmoid_norm" per-token averages
    sft_weight: float = 0.0  # > 0: TRL's "sft" term (chosen likelihood) added to the DPO loss
    sft_epochs: float = 0.0  # > 0: first fine-tune on the chosen titles, then DPO from there
    sft_learning_rate: float = 1e-4
    sft_titles: str = "chosen"  # what the SFT stage imitates: "chosen", or "both" sides

    def __post_init__(self) -> None:
        # A recipe comes from the CLI and the Train tab's fields: refuse nonsense up front,
        # before a model is loaded or a run folder written.
        if not self.epochs > 0:
            raise UserError(f"epochs must be positive, not {self.epochs}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise UserError(f"batch size must be a whole number >= 1, not {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise UserError(f"learning rate must be between 0 and 1, not {self.learning_rate}")
        if not self.beta > 0:
            raise UserError(f"beta must be positive, not {self.beta}")
        if self.lora_r is not None and not (isinstance(self.lora_r, int) and self.lora_r >= 1):
            raise UserError(f"LoRA r must be a whole number >= 1, not {self.lora_r}")
        if not self.lora_alpha > 0:
            raise UserError(f"LoRA alpha must be positive, not {self.lora_alpha}")
        if not (isinstance(self.prompt_chunk, int) and self.prompt_chunk >= 0):
            raise UserError(f"prompt_chunk must be a whole number >= 0, not {self.prompt_chunk}")
        if self.sft_titles not in ("chosen", "both"):
            raise UserError(f"sft_titles is 'chosen' or 'both', not {self.sft_titles!r}")


RECIPES: dict[str, DPORecipe] = {
    "tutorial": DPORecipe(name="tutorial"),
    "fast": DPORecipe(
        name="fast",
        epochs=1,
        learning_rate=5e-5,  # LoRA moves few weights; 1e-6 would barely move them
        beta=0.5,  # keeps DPO near the SFT model: at 0.1 its titles drift short (bench/dpo_quality)
        gradient_checkpointing=False,
        precompute_ref_log_probs=True,
        lora_r=16,
        shared_prompt=True,
        prompt_chunk=4,  # a batch of 8 pairs holds ~2 ideas: ~2 prompts computed, not 8
        sft_epochs=1,  # DPO alone barely teaches the one-title format
    ),
}


@dataclass(frozen=True)
class TrainResult:
    out: str
    model: str
    recipe: dict[str, Any]
    steps: int
    train_loss: float | None
    eval_loss: float | None
    best_checkpoint: str | None
    seconds: float
    metrics_file: str
    finished: bool = True  # False: a chunk (`stop_after`) that ended before the last step
    max_steps: int = 0  # the whole run's steps
    base_model: str | None = None  # the Hub id of the starting model, where known
    data: str | None = None  # the dataset folder trained on
    # what its implicit reward log(pi/pi_ref) is measured against: the SFT stage's model, else
    # the model it started from (`python -m pipeline score --reference`)
    reference: str | None = None
    # pipeline.evaluation.HeldOutRanking as a dict: the valid split ranked by the saved model
    # and by the untrained one (None: no valid split, or not the main process)
    held_out: dict[str, Any] | None = None


def describe_held_out(result: TrainResult) -> str | None:
    """One line on how the run ranks its held-out pairs, or None when it has no figure."""
    return HeldOutRanking(**result.held_out).describe() if result.held_out else None


def get_recipe(name: str) -> DPORecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None


def sft_stage(policy, train_split, out: Path, recipe: DPORecipe, callbacks: list | None = None):
    """Fine-tune on each distinct (prompt, chosen) of the training split, once, and return the
    policy with those weights merged in: DPO then starts from, and is measured against, a model
    that already answers in the asked format. Kept in `out` so a resumed run reuses it."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from pipeline.shared_prompt import SharedPromptSFTTrainer

    if (out / "config.json").is_file():
        return load_model(str(out), fresh=True)
    seen, rows = set(), []
    sides = ("chosen", "rejected") if recipe.sft_titles == "both" else ("chosen",)
    for row in train_split:
        for side in sides:
            key = json.dumps([row["prompt"], row[side]])
            if key not in seen:
                seen.add(key)
                rows.append({"prompt": row["prompt"], "completion": row[side]})
    peft_config = None
    if recipe.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                                 target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
    config = SFTConfig(
        output_dir=str(out.parent / "sft-checkpoints"),
        num_train_epochs=recipe.sft_epochs,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.sft_learning_rate,
        logging_steps=recipe.logging_steps,
        save_strategy="no",
        bf16=policy.device.name == "cuda",
        use_cpu=policy.device.name == "cpu",
        seed=recipe.seed,
        report_to="none",
        gradient_checkpointing=recipe.gradient_checkpointing,
    )
    extra = {"prompt_chunk": recipe.prompt_chunk} if recipe.shared_prompt else {}
    trainer_class = SharedPromptSFTTrainer if recipe.shared_prompt else SFTTrainer
    trainer = trainer_class(
        **extra,
        model=policy.model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=policy.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.train()
    if trainer.state.global_step < trainer.state.max_steps:  # stopped from outside
        raise UserError("stopped during the SFT stage, before DPO began: start again to redo it")
    if peft_config is not None and trainer.is_world_process_zero():
        # kept so that an adapter-only push can add it to the DPO adapter (hub/push.py)
        trainer.model.save_pretrained(str(out / "adapter"))
    model = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    if trainer.is_world_process_zero():
        model.save_pretrained(str(out))
        policy.tokenizer.save_pretrained(str(out))
    trainer.accelerator.wait_for_everyone()
    # DPO starts from the saved model, loaded afresh: exactly what a resumed run starts from,
    # and free of the forward patches the SFT trainer put on this one.
    return load_model(str(out), fresh=True)


def customize(
    recipe: DPORecipe,
    *,
    epochs: float | None = None,
    beta: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    lora: bool | None = None,
    lora_r: int | None = None,
    lora_alpha: float | None = None,
) -> DPORecipe:
    """`recipe` with the given knobs changed (None: keep the recipe's); checked.

    `lora=False` makes it a full fine-tune; `lora=True` without an r uses r 16.
    """
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "epochs": epochs,
            "beta": beta,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "lora_alpha": lora_alpha,
        }.items()
        if value is not None
    }
    if lora is False:
        changes["lora_r"] = None
    elif lora_r is not None:
        changes["lora_r"] = lora_r
    elif lora and recipe.lora_r is None:
        changes["lora_r"] = 16
    return replace(recipe, **changes) if changes else recipe


def train_dpo(
    data: str | Path,
    out: str | Path,
    model_name: str | None = None,
    recipe: DPORecipe = RECIPES["tutorial"],
    *,
    epochs: float | None = None,
    max_steps: int | None = None,
    callbacks: list | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on the dataset folder `data`, write the best model to `out`, return a summary.

    `resume=True` carries on from the newest checkpoint in `out` (a stopped or crashed run).
    `stop_after=N` makes this call one chunk of a longer run: it saves a checkpoint and returns
    after N more steps, leaving the model unsaved until the chunk that reaches the last step.
    """
    from trl import DPOConfig, DPOTrainer

    from pipeline.datasets import load_preference_dataset
    from pipeline.shared_prompt import SharedPromptDPOTrainer

    if epochs is not None:
        recipe = customize(recipe, epochs=epochs)
    if max_steps is not None and max_steps <= 0:
        raise UserError(f"max-steps must be positive, not {max_steps}")
    dataset = load_preference_dataset(data)
    train_split, eval_split = dataset["train"], dataset.get("valid")
    if recipe.shared_prompt and recipe.prompt_chunk:
        # Rows of one prompt side by side: the reference pass and evaluation (which batch in
        # order) then compute each prompt once. Training order is the sampler's, not this.
        train_split, eval_split = _by_prompt(train_split), _by_prompt(eval_split)
    if len(train_split) < recipe.batch_size:
        raise UserError(
            f"{data}: {len(train_split)} training pairs, fewer than one batch of "
            f"{recipe.batch_size}: collect more votes first"
        )

    out = Path(out)
    policy = load_model(model_name, fresh=True)
    start = policy.source  # what the run started from, before any SFT stage
    reference_from = str(out / "sft") if recipe.sft_epochs else start.requested
    if recipe.sft_epochs:
        policy = sft_stage(policy, train_split, out / "sft", recipe, callbacks)
    peft_config = None
    reference = None
    if recipe.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    else:
        # The reference model is a second frozen copy of the starting point (the base, or the
        # SFT stage's model), loaded the same way (offline-safe), rather than TRL re-reading
        # `config._name_or_path`, a Hub id it may not reach.
        reference = load_model(reference_from, fresh=True).model
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.jsonl"
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise UserError(f"{out} has no checkpoint to resume from")
    if checkpoint is None:
        metrics_file.unlink(missing_ok=True)

    logging_steps = min(recipe.logging_steps, max_steps) if max_steps else recipe.logging_steps
    has_eval = eval_split is not None and len(eval_split) > 0
    config = DPOConfig(
        output_dir=str(out),
        num_train_epochs=recipe.epochs,
        max_steps=max_steps or -1,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        beta=recipe.beta,
        logging_steps=logging_steps,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        save_total_limit=recipe.save_total_limit,
        bf16=policy.device.name == "cuda",
        use_cpu=policy.device.name == "cpu",  # so processes under a launcher join with gloo
        seed=recipe.seed,
        report_to="none",
        gradient_checkpointing=recipe.gradient_checkpointing,
        precompute_ref_log_probs=recipe.precompute_ref_log_probs,
        loss_type=[recipe.loss, "sft"] if recipe.sft_weight else [recipe.loss],
        loss_weights=[1.0, recipe.sft_weight] if recipe.sft_weight else None,
    )
    extra = {"prompt_chunk": recipe.prompt_chunk} if recipe.shared_prompt else {}
    trainer_class = SharedPromptDPOTrainer if recipe.shared_prompt else DPOTrainer
    trainer = trainer_class(
        **extra,
        model=policy.model,
        ref_model=reference,
        peft_config=peft_config,
        args=config,
        train_dataset=train_split,
        eval_dataset=eval_split if has_eval else None,
        processing_class=policy.tokenizer,
        callbacks=[MetricsFile(metrics_file), *(callbacks or [])],
    )
    if stop_after is not None:
        trainer.add_callback(StopAfterSteps(stop_after))
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.monotonic() - started
    finished = trainer.state.global_step >= trainer.state.max_steps
    if stop_after is not None and not finished:
        return TrainResult(
            out=str(out),
            model=start.label,
            recipe=asdict(recipe),
            steps=trainer.state.global_step,
            train_loss=None,
            eval_loss=None,
            best_checkpoint=trainer.state.best_model_checkpoint,
            seconds=round(seconds, 2),
            metrics_file=str(metrics_file),
            finished=False,
            max_steps=trainer.state.max_steps,
            base_model=start.hub_id,
            data=str(data),
            reference=reference_from,
        )
    # Under `accelerate launch` every process gets here; one of them writes the model.
    if trainer.is_world_process_zero():
        if peft_config is not None:
            trainer.model.save_pretrained(str(out / "adapter"))
            trainer.model.merge_and_unload().save_pretrained(str(out))
        else:
            trainer.save_model(str(out))
        policy.tokenizer.save_pretrained(str(out))
    trainer.accelerator.wait_for_everyone()
    held_out = None
    if has_eval and finished and trainer.is_world_process_zero():
        # Pair by pair, beside what the model knew before training: the figure that says
        # whether the run learned the preferences (TRL's accuracy is a mean of batch means).
        ranking = held_out_ranking(eval_split, str(out), reference_from, start.requested)
        held_out = asdict(ranking)

    eval_losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    result = TrainResult(
        out=str(out),
        model=start.label,
        recipe=asdict(recipe),
        steps=trainer.state.global_step,
        train_loss=output.training_loss,
        eval_loss=min(eval_losses) if eval_losses else None,
        best_checkpoint=trainer.state.best_model_checkpoint,
        seconds=round(seconds, 2),
        metrics_file=str(metrics_file),
        max_steps=trainer.state.max_steps,
        base_model=start.hub_id,
        data=str(data),
        reference=reference_from,
        held_out=held_out,
    )
    if trainer.is_world_process_zero():
        (out / "train_summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _by_prompt(split):
    if split is None:
        return None
    keys = [json.dumps(prompt, sort_keys=True) for prompt in split["prompt"]]
    # flattened: TRL joins the cached reference log-probs to the table row by row, and a
    # `select` view's rows are not the table's
    return split.select(sorted(range(len(keys)), key=keys.__getitem__)).flatten_indices()


EPOCH_COLUMNS = {
    "Epoch": "epoch",
    "Training loss": "loss",
    "Validation loss": "eval_loss",
    "Rewards/chosen": "eval_rewards/chosen",
    "Rewards/rejected": "eval_rewards/rejected",
    "Rewards/accuracies": "eval_rewards/accuracies",
    "Rewards/margins": "eval_rewards/margins",
    "Logps/chosen": "eval_logps/chosen",
    "Logps/rejected": "eval_logps/rejected",
}


def epoch_table(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluation, like the tutorial's table: the last training loss logged
    before it, and the evaluation's losses, rewards and log-probs."""
    rows, last_loss = [], None
    for record in metrics:
        if "loss" in record:
            last_loss = record["loss"]
        if "eval_loss" in record:
            values = {**record, "loss": last_loss}
            rows.append({column: values.get(key) for column, key in EPOCH_COLUMNS.items()})
    return rows


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest `checkpoint-N` folder the Trainer wrote in `out`, if any."""
    found = sorted(Path(out).glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return found[-1] if found else None


class StopAfterSteps(TrainerCallback):
    """Ends training, with a checkpoint, once `steps` more optimizer steps are done."""

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise UserError(f"a chunk must be at least one step, not {steps}")
        self.steps = steps
        self.first_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - (self.first_step or 0)
        if done >= self.steps and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # Stopping mid-epoch ends the epoch loop, and an epoch's end means an evaluation: one
        # that a straight run never makes, and that could then win the best-model choice.
        stopped_mid_epoch = control.should_training_stop and state.epoch % 1 > 1e-6
        if stopped_mid_epoch and state.global_step < state.max_steps:
            control.should_evaluate = False
        return control


class MetricsFile(TrainerCallback):
    """Appends every logged metrics dict, with step and epoch, as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            record = {"step": state.global_step, "epoch": state.epoch, **logs}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
