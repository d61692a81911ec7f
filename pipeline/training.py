"""Where DPO and the shared training stages lived before they had modules of their own.

Re-exports for one release (tests, benches and outside scripts import these names from here):
drop this module in 0.2 (the project is at 0.1). DPO is `pipeline.dpo`, the stages every method
shares are `pipeline.stages`, the run folder is `pipeline.runs`.
"""

from pipeline.dpo import dpo_trainer, score_held_out, train_dpo
from pipeline.runs import checkpoint_step, latest_checkpoint, write_summary
from pipeline.stages import (
    MetricsFile,
    StopAfterSteps,
    TrainResult,
    by_prompt,
    checkpoint_to_resume,
    common_args,
    loop_args,
    lora_config,
    save_policy,
    sft_stage,
    train_and_save,
    trainer_class,
    training_splits,
)

__all__ = [
    "MetricsFile",
    "StopAfterSteps",
    "TrainResult",
    "by_prompt",
    "checkpoint_step",
    "checkpoint_to_resume",
    "common_args",
    "dpo_trainer",
    "latest_checkpoint",
    "loop_args",
    "lora_config",
    "save_policy",
    "score_held_out",
    "sft_stage",
    "train_and_save",
    "train_dpo",
    "trainer_class",
    "training_splits",
    "write_summary",
]
