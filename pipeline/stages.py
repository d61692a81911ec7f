"""The stages every training method shares, and the one way a run opens.

`open_run` is how DPO (`pipeline/dpo.py`), a reward model (`pipeline/reward.py`) and online RL
(`pipeline/rl.py`) all begin: the step check, the data splits, the model, the SFT stage (when
the recipe has one) and the checkpoint to resume; `train_and_save` is how they all end: train,
save, summary. Each stage is a short function in the alignment-handbook style.

A LoRA run is merged into the base weights when saved, so the output loads like any model, and
the adapter alone is kept in OUT/adapter. bf16 follows the device (TRL 1.16 defaults to bf16,
which fails without a GPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pipeline.errors import UserError
from pipeline.metrics import (
    METRICS_FILE,
    PRINT_METRICS,
    SUMMARY_FILE,
    drop_records_after,
    metrics_line,
)
from pipeline.models import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelSource,
    is_saved_model,
    load_model,
    write_adapter_base,
)
from pipeline.recipes import DPORecipe
from pipeline.runs import (
    SFT_CHECKPOINTS,
    SFT_STAGE,
    STAGE_SUMMARY,
    STOP_FILE,
    RunStart,
    checkpoint_step,
    clear_for_new_run,
    discard_unfinished_checkpoints,
    drop_checkpoints,
    latest_checkpoint,
    model_place,
    record_run_start,
    write_summary,
)
from pipeline.tracking import forget_logged_after, forget_run_name, tracking_args
from pipeline.wording import file_size

log = logging.getLogger(__name__)


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
    # and by the untrained one (None: not scored, or no valid split; see `score_held_out`)
    held_out: dict[str, Any] | None = None
    # the name that loads the model it started from (a Hub id or folder; the offline copy's
    # own where the name it was given fell back to it: `ModelSource.loads_as`)
    started_from: str | None = None
    # a step-limited run's bound on the pairs of each split it read (its reference pass, its
    # evaluations, its held-out figure); None: every pair (`bounded_rows`)
    rows_limit: int | None = None
    kind: str = DPORecipe.KIND  # its recipe's KIND: the method (`pipeline.methods`)
    reward_model: str | None = None  # an RL run's reward model folder
    # "sft": a chunk that ended inside the recipe's SFT stage (steps and max_steps are then
    # the stage's); "": the run's own loop
    stage: str = ""
    steps_this_call: int = 0  # the steps this call trained, of `seconds` (a chunk's pace)
    # False: a chunk that ended before the last step, unstopped (or in the SFT stage), and
    # kept its checkpoint only
    model_saved: bool = True


@dataclass(frozen=True)
class OpenedRun:
    """A run ready for its trainer: what `open_run` checked, loaded and found."""

    out: Path
    train_split: Any
    eval_split: Any
    policy: LoadedModel  # after the SFT stage, when the recipe has one
    start: ModelSource  # what the run started from, before any SFT stage
    reference_from: str  # what its policy is measured against: the SFT stage, else the start
    checkpoint: Path | None  # the checkpoint a resumed run carries on from
    steps_left: int | None = None  # of a chunk's steps, after those its SFT stage took
    # a chunk whose steps ran out in the SFT stage or at its end (or that was stopped there):
    # what it did, to return as it is; the run's own loop has not begun
    sft_unfinished: TrainResult | None = None


def open_run(
    data: str | Path,
    out: str | Path,
    model_name: str | None,
    recipe,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    callbacks: list | None = None,
    head: str = "lm",
    splits: tuple[Any, Any] | None = None,
    stop_after: int | None = None,
    reward_model: str | None = None,
) -> OpenedRun:
    """How every run begins, in order: the step limit, the folder (`clear_for_new_run`) and the
    data checked before any model loads (`splits` if the caller has read them), the model
    (with a score `head` for a reward model), how a new run started (`runs.RunStart`, which
    Resume takes again), the recipe's SFT stage, and the checkpoint a resumed run needs.
    A step limit bounds the whole run: the SFT stage takes at most that many steps too, and
    the splits only the pairs those steps can use (`bounded_rows`). In a chunk of
    `stop_after` steps, the SFT stage's steps count: the loop gets what is left, if any
    (else the chunk ends with the stage: `sft_unfinished`)."""
    if max_steps is not None and max_steps <= 0:
        raise UserError(f"max-steps must be positive, not {max_steps}")
    out = Path(out)
    if not resume:
        clear_for_new_run(out)
    train_split, eval_split = splits or training_splits(data, recipe, max_steps)
    # A reward model's score head is drawn as the model loads, before any Trainer seeds:
    # seeded here, the recipe's seed decides it, not whatever the process drew before.
    from transformers import set_seed

    set_seed(recipe.seed)
    policy = load_model(model_name, fresh=True, head=head)
    start = policy.source
    if not resume:  # what Resume takes again; a start refused for its data or model keeps none
        record_run_start(out, RunStart(
            kind=recipe.KIND, model=model_place(model_name or DEFAULT_MODEL), recipe=asdict(recipe),
            reward_model=model_place(reward_model) if reward_model else None, max_steps=max_steps,
        ))  # fmt: skip
    sft_epochs = getattr(recipe, "sft_epochs", 0)
    reference_from = str(out / SFT_STAGE) if sft_epochs else start.requested
    steps_left = stop_after
    if sft_epochs:
        stage = sft_stage(
            policy, train_split, out / SFT_STAGE, recipe, callbacks, max_steps, stop_after
        )
        spent = stop_after is not None and stage.steps_this_call >= stop_after
        if stage.policy is None or spent:  # the chunk ends in the stage, or at its end
            unfinished = stage_result(stage, out, start, recipe, data)
            return OpenedRun(out, train_split, eval_split, policy, start, reference_from, None,
                             sft_unfinished=unfinished)  # fmt: skip
        policy = stage.policy
        if stop_after is not None:
            steps_left = stop_after - stage.steps_this_call
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_to_resume(out, resume)
    return OpenedRun(
        out, train_split, eval_split, policy, start, reference_from, checkpoint, steps_left
    )


def watched(trainer, stop_after: int | None, stop_file: Path | None = None):
    """`trainer` with a chunk's stop (`stop_after` more steps, then a checkpoint), if asked:
    sooner if the run's STOP_FILE appears (Stop, pressed in the app's process; by default in
    the trainer's output folder)."""
    if stop_after is not None:
        stop_file = stop_file or Path(trainer.args.output_dir) / STOP_FILE
        trainer.add_callback(StopAfterSteps(stop_after, stop_file))
    return trainer


# --- the stages ------------------------------------------------------------------------------


def train_and_save(
    trainer,
    checkpoint: Path | None,
    tokenizer,
    recipe,
    out: Path,
    data: str | Path,
    start,
    *,
    stop_after: int | None,
    kind: str,
    rows_limit: int | None = None,
    **summary: Any,
) -> TrainResult:
    """The stages every kind of run ends with: train (from `checkpoint` when resuming), save
    (a run stopped from outside keeps what it has, and so does a chunk that Stop ended, as
    its stop file says; a chunk that ends before the last step otherwise leaves its checkpoint
    only, for the next chunk), and the summary (OUT/train_summary.json; `summary` adds the
    kind's own fields)."""
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.monotonic() - started
    began = checkpoint_step(checkpoint) if checkpoint else 0
    state = trainer.state
    finished = state.global_step >= state.max_steps
    # Stop ends a chunk on a Space as it ends a straight run: with the model where it stopped
    # and a summary, so the stopped run is listed (evaluated, pushed, deleted) on either
    stopped = stop_after is not None and (out / STOP_FILE).is_file()
    saved = finished or stop_after is None or stopped
    if saved:
        # the summary says a whole model is here: gone while the files are rewritten, so a
        # save cut off (a full disk) leaves a run that no list offers, and Resume carries on
        (out / SUMMARY_FILE).unlink(missing_ok=True)
        save_policy(trainer, tokenizer, out, merge=recipe.lora_r is not None)
    eval_losses = [e["eval_loss"] for e in state.log_history if "eval_loss" in e]
    result = run_result(
        out, start, recipe, data,
        steps=state.global_step,
        train_loss=output.training_loss if saved else None,
        eval_loss=min(eval_losses) if saved and eval_losses else None,
        best_checkpoint=state.best_model_checkpoint,
        seconds=round(seconds, 2),
        finished=finished,
        max_steps=state.max_steps,
        kind=kind,
        rows_limit=rows_limit,
        steps_this_call=state.global_step - began,
        model_saved=saved,
        **summary,
    )  # fmt: skip
    if saved and trainer.is_world_process_zero():
        write_summary(result)
        if finished:
            freed = drop_checkpoints(out)
            log.info("%s finished: its checkpoints removed, %s freed", out, file_size(freed))
    return result


def loop_args(recipe, max_steps: int | None, has_eval: bool) -> dict[str, Any]:
    """The TrainingArguments of a run's main loop: its length and rate, a checkpoint each
    epoch and, with a held-out split, an evaluation each epoch and the best `eval_loss` kept."""
    return {
        "num_train_epochs": recipe.epochs,
        "max_steps": max_steps or -1,
        "learning_rate": recipe.learning_rate,
        "save_strategy": "epoch",
        "save_total_limit": recipe.save_total_limit,
        "eval_strategy": "epoch" if has_eval else "no",
        "load_best_model_at_end": has_eval,
        "metric_for_best_model": "eval_loss" if has_eval else None,
        "greater_is_better": False if has_eval else None,
    }


def bounded_rows(recipe, max_steps: int | None) -> int | None:
    """How many pairs of each split a run of `max_steps` steps reads: the pairs those steps
    train on (steps x batch x processes); None without a step limit. A quick run then makes
    its reference pass, its evaluations and its held-out figure on that many pairs only."""
    if max_steps is None:
        return None
    return max_steps * recipe.batch_size * int(os.environ.get("WORLD_SIZE", "1"))


def first_rows(split, rows: int | None):
    """The first `rows` rows of `split` (all of it when rows is None or it is shorter),
    flattened: TRL joins cached reference log-probs to the table row by row."""
    if split is None or rows is None or len(split) <= rows:
        return split
    return split.select(range(rows)).flatten_indices()


def training_splits(data: str | Path, recipe, max_steps: int | None = None):
    """The train split and the held-out one (None when the folder has none or it is empty),
    each cut to what `max_steps` steps can use (`bounded_rows`), ordered as the recipe wants
    them; refused when train is smaller than one batch."""
    from pipeline.datasets import load_preference_dataset

    dataset = load_preference_dataset(data)
    rows = bounded_rows(recipe, max_steps)
    train_split, eval_split = first_rows(dataset["train"], rows), dataset.get("valid")
    eval_split = first_rows(eval_split, rows)
    if eval_split is not None and len(eval_split) == 0:
        eval_split = None
    if getattr(recipe, "shared_prompt", False) and recipe.prompt_chunk:
        # Rows of one prompt side by side: the reference pass and evaluation (which batch in
        # order) then compute each prompt once. Training order is the sampler's, not this.
        train_split, eval_split = by_prompt(train_split), by_prompt(eval_split)
    if len(train_split) < recipe.batch_size:
        raise UserError(
            f"{data}: {len(train_split)} training pairs, fewer than one batch of "
            f"{recipe.batch_size}: collect more votes first"
        )
    return train_split, eval_split


def by_prompt(split):
    """`split` with the rows of one prompt side by side (None stays None)."""
    if split is None:
        return None
    keys = [json.dumps(prompt, sort_keys=True) for prompt in split["prompt"]]
    # flattened: TRL joins the cached reference log-probs to the table row by row, and a
    # `select` view's rows are not the table's
    return split.select(sorted(range(len(keys)), key=keys.__getitem__)).flatten_indices()


def lora_config(recipe, task: str = "CAUSAL_LM"):
    """The recipe's LoRA adapter on every linear layer, or None for a full fine-tune. A reward
    model's (`task="SEQ_CLS"`) new score head is trained in full beside the adapter."""
    if not recipe.lora_r:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        target_modules="all-linear",
        task_type=task,
        modules_to_save=["score"] if task == "SEQ_CLS" else None,
    )


def mute_library_deprecations() -> None:
    """TRL 1.16 reads the property transformers 5.25 renamed at every batch of DPO's
    reference pass, and each read warns: the app's output got a FutureWarning per batch (128
    in a default run), burying its own lines. Nothing here can act on it; that message alone
    is muted, for the whole process (a filter set inside a run's thread would race)."""
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )


mute_library_deprecations()

# A run's charts get at least this many points along the way, however short the run: a run on
# a hundred votes (13 steps) logged every 25 steps would show its training loss only at the end.
LOGGED_POINTS = 10


def planned_steps(rows: int, per_step: int, epochs: float, max_steps: int | None = None) -> int:
    """The optimizer steps a stage plans: `max_steps`, else `epochs` over `rows` examples,
    `per_step` a step (one process; under a launcher there are fewer)."""
    return max_steps or max(1, math.ceil(math.ceil(rows / per_step) * epochs))


def logging_every(recipe, planned: int | None) -> int:
    """Every `recipe.logging_steps` steps, or often enough for LOGGED_POINTS points in a run of
    `planned` steps (None: not known)."""
    if not planned:
        return recipe.logging_steps
    return max(1, min(recipe.logging_steps, math.ceil(planned / LOGGED_POINTS)))


def _checkpointing_arg() -> str:
    """The TrainingArguments field for activation checkpointing: transformers 5.25 renamed
    `gradient_checkpointing`, and the old name warns each time a stage's arguments are made."""
    from transformers import TrainingArguments

    renamed = "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if renamed else "gradient_checkpointing"


def common_args(
    recipe, policy: LoadedModel, out: Path, stage: str, planned: int | None = None
) -> dict[str, Any]:
    """The TrainingArguments every stage shares: batch, logging (`logging_every`, in a stage
    of `planned` steps) and its report to trackio (`pipeline.tracking`), seed and device
    flags."""
    return {
        "per_device_train_batch_size": recipe.batch_size,
        "logging_steps": logging_every(recipe, planned),
        "seed": recipe.seed,
        **tracking_args(out, stage),
        _checkpointing_arg(): recipe.gradient_checkpointing,
        "bf16": policy.device.name == "cuda",
        "use_cpu": policy.device.name == "cpu",  # so processes under a launcher join with gloo
    }


def trainer_class(recipe, plain: type, shared: type) -> tuple[type, dict[str, Any]]:
    """TRL's trainer, or its shared-prompt variant with its extra keyword, per the recipe."""
    if getattr(recipe, "shared_prompt", False):
        return shared, {"prompt_chunk": recipe.prompt_chunk}
    return plain, {}


@dataclass(frozen=True)
class SFTStage:
    """What one call of `sft_stage` did: the policy after the stage (None: the stage stopped
    before its end, its checkpoint saved for the next call), where the stage stands, and the
    steps and seconds of this call."""

    policy: LoadedModel | None
    step: int
    total: int
    steps_this_call: int
    seconds: float


def sft_stage(
    policy,
    train_split,
    out: Path,
    recipe,
    callbacks: list | None = None,
    max_steps: int | None = None,
    stop_after: int | None = None,
) -> SFTStage:
    """Fine-tune on each distinct (prompt, chosen) of the training split, once (at most
    `max_steps` steps), and return the policy with those weights merged in: DPO then starts
    from, and is measured against, a model that already answers in the asked format. Kept in
    `out` so a resumed run reuses it. Like the run's own loop, the stage can end early with a
    checkpoint (a chunk of `stop_after` steps, Stop) that the next call carries on from."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from pipeline.shared_prompt import SharedPromptSFTTrainer

    if is_saved_model(out):
        return SFTStage(load_model(str(out), fresh=True), 0, 0, 0, 0.0)
    checkpoints = out.parent / SFT_CHECKPOINTS
    checkpoint = sft_checkpoint(checkpoints, out)
    rows = sft_rows(train_split, recipe)
    sft_steps = planned_steps(len(rows), recipe.batch_size, recipe.sft_epochs, max_steps)
    config = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=recipe.sft_epochs,
        max_steps=max_steps or -1,
        learning_rate=recipe.sft_learning_rate,
        save_strategy="no",  # a checkpoint only where the stage stops early
        save_total_limit=1,
        **common_args(recipe, policy, out, "sft", sft_steps),
    )
    cls, extra = trainer_class(recipe, SFTTrainer, SharedPromptSFTTrainer)
    trainer = cls(
        **extra,
        model=policy.model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=policy.tokenizer,
        peft_config=lora_config(recipe),
        callbacks=callbacks,
    )
    watched(trainer, stop_after, stop_file=out.parent / STOP_FILE)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state, seconds = trainer.state, time.monotonic() - started
    taken = state.global_step - (checkpoint_step(checkpoint) if checkpoint else 0)
    if state.global_step < state.max_steps:  # a chunk's steps ran out, or Stop
        return SFTStage(None, state.global_step, state.max_steps, taken, seconds)
    save_stage(trainer, policy.tokenizer, out, recipe, policy.source)
    # DPO starts from the saved model, loaded afresh: exactly what a resumed run starts from,
    # and free of the forward patches the SFT trainer put on this one.
    policy = load_model(str(out), fresh=True)
    return SFTStage(policy, state.global_step, state.max_steps, taken, seconds)


def sft_checkpoint(checkpoints: Path, out: Path) -> Path | None:
    """Where the SFT stage in `out` carries on from: its last complete checkpoint (what a
    cut-off call logged to trackio past it goes), or None: the stage starts, and starts a new
    trackio run."""
    discard_unfinished_checkpoints(checkpoints)
    checkpoint = latest_checkpoint(checkpoints)
    if checkpoint is None:
        forget_run_name(out)
    else:
        forget_logged_after(out, checkpoint_step(checkpoint))
    return checkpoint


def sft_rows(train_split, recipe) -> list[dict[str, str]]:
    """The SFT stage's examples: each distinct (prompt, title) of the recipe's `sft_titles`."""
    seen, rows = set(), []
    sides = ("chosen", "rejected") if recipe.sft_titles == "both" else ("chosen",)
    for row in train_split:
        for side in sides:
            key = json.dumps([row["prompt"], row[side]])
            if key not in seen:
                seen.add(key)
                rows.append({"prompt": row["prompt"], "completion": row[side]})
    return rows


def save_stage(trainer, tokenizer, out: Path, recipe, start: ModelSource) -> None:
    """The finished SFT stage's model in `out`. A LoRA stage on a model that loads again by
    name (a Hub id at its commit, the offline copy) keeps its adapter alone (in out/adapter,
    which an adapter-only push also stacks onto the DPO one: hub/push.py) and the name: every
    loader merges it in (`models.ADAPTER_BASE`), and the run holds one full model, not two.
    On a folder (another run's model, which may be trained on or deleted) it is kept merged.
    Beside it, what the stage did (`stage_record`). Saved aside, then renamed: a stage cut
    off while saving leaves no `out` that looks done. Its checkpoints go."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    lora = recipe.lora_r is not None
    adapter_only = lora and start.lasting_name is not None
    save_policy(trainer, tokenizer, partial, merge=lora, adapter_only=adapter_only)
    if trainer.is_world_process_zero():
        if adapter_only:
            write_adapter_base(partial, start)
        (partial / STAGE_SUMMARY).write_text(json.dumps(stage_record(trainer), indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)  # what it held: the stage's trackio run name
        partial.rename(out)
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def stage_record(trainer) -> dict[str, Any]:
    """What a finished SFT stage says of itself (`runs.STAGE_SUMMARY`): its steps, its
    examples, its last logged loss, and when it was saved (a stage trained again in its
    folder is another model, even with the same steps)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "steps": trainer.state.global_step,
        "examples": len(trainer.train_dataset),
        "last_loss": losses[-1] if losses else None,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_result(out: Path, start, recipe, data, **fields: Any) -> TrainResult:
    """A run's summary, with what every run says of itself (where, from what, with what)
    beside the `fields` of how it went."""
    return TrainResult(
        out=str(out),
        model=start.label,
        recipe=asdict(recipe),
        metrics_file=str(out / METRICS_FILE),
        base_model=start.hub_id,
        data=str(data),
        started_from=start.loads_as,
        **fields,
    )


def stage_result(stage: SFTStage, out: Path, start, recipe, data) -> TrainResult:
    """A chunk that ended inside the SFT stage, as a run's chunk reports itself."""
    return run_result(
        out, start, recipe, data,
        steps=stage.step, train_loss=None, eval_loss=None, best_checkpoint=None,
        seconds=round(stage.seconds, 2), finished=False, max_steps=stage.total,
        kind=recipe.KIND, stage="sft", steps_this_call=stage.steps_this_call, model_saved=False,
    )  # fmt: skip


def checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The checkpoint a resumed run carries on from; a fresh run starts a new metrics file."""
    if not resume:
        (out / METRICS_FILE).unlink(missing_ok=True)
        forget_run_name(out)
        return None
    # A run cut off (a ZeroGPU chunk aborted, the app's process killed) may have left a
    # checkpoint half-written and logged steps that it will now train again.
    discard_unfinished_checkpoints(out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None and (out / SFT_STAGE).is_dir():  # stopped in or right after the SFT stage
        return checkpoint_to_resume(out, resume=False)
    if checkpoint is None:
        raise UserError(f"{out} has no checkpoint to resume from")
    drop_records_after(out / METRICS_FILE, checkpoint_step(checkpoint))
    forget_logged_after(out, checkpoint_step(checkpoint))
    return checkpoint


def save_policy(trainer, tokenizer, out: Path, merge: bool, adapter_only: bool = False) -> None:
    """The trained model in `out` (a LoRA run merged into its base, the adapter alone in
    OUT/adapter; with `adapter_only`, that adapter and no merged model), with its tokenizer.
    Under `accelerate launch` one process writes."""
    if trainer.is_world_process_zero():
        if merge:
            trainer.model.save_pretrained(str(out / "adapter"))
            if not adapter_only:
                trainer.model.merge_and_unload().save_pretrained(str(out))
        else:
            trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))
    trainer.accelerator.wait_for_everyone()


class StopAfterSteps(TrainerCallback):
    """Ends training, with a checkpoint, once `steps` more optimizer steps are done, or at the
    first step end that finds `stop_file`."""

    def __init__(self, steps: int, stop_file: Path | None = None) -> None:
        if steps < 1:
            raise UserError(f"a chunk must be at least one step, not {steps}")
        self.steps = steps
        self.stop_file = stop_file
        self.first_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - (self.first_step or 0)
        asked = self.stop_file is not None and self.stop_file.exists()
        if (done >= self.steps or asked) and state.global_step < state.max_steps:
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
            if os.environ.get(PRINT_METRICS):  # a job's log carries its curves (hub/jobs.py)
                print(metrics_line(record), flush=True)
