"""Kernel launches per training step, by stage and recipe: what a GPU step of a small model
costs when Python, not arithmetic, is the limit.

    python bench/launches.py [--shape smollm2-135m] [--rows fast@cpu,fast@gpu,tutorial@cpu]

On a GPU, a step of a 135M-0.5B model on batches of 8 pairs is milliseconds of arithmetic
(bench/gpu.py prints its bound) and thousands of kernels, each launched from Python at a cost
of its own: when launching takes longer than the arithmetic, the number of launches, not the
FLOPs, sets the step time. That number does not depend on the device, so it is counted here
on the CPU: steps 3 and 4 of each stage of a run of the
random-weight model of the real shape (bench/gpu.py's), under torch.profiler, counting each
aten op that runs work of its own (no views, no ops made of other ops). `fast@gpu` is the
fast recipe with the values it takes on a GPU (its `on_gpu`); the baseline is the tutorial
recipe, counted in the same run. The reference pass is not a training step and is left out.
A GPU's own time for these steps comes from bench/gpu.py on a GPU, never from here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from gpu import build_data, build_model, launches, tokenizer_folder  # beside this script
from transformers import TrainerCallback

PROFILED_STEPS = (3, 4)


class CountLaunches(TrainerCallback):
    """Profiles PROFILED_STEPS of each training stage (the SFT stage, then DPO)."""

    def __init__(self) -> None:
        self.per_step: dict[str, Counter] = {}
        self._profiler = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.stage = "sft" if "sft-checkpoints" in args.output_dir else "dpo"

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == PROFILED_STEPS[0]:
            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU]
            )
            self._profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self._profiler is not None and state.global_step == PROFILED_STEPS[-1]:
            self._profiler.__exit__(None, None, None)
            counted = launches(self._profiler.events())
            steps = len(PROFILED_STEPS)
            self.per_step[self.stage] = Counter({k: v / steps for k, v in counted.items()})
            self._profiler = None


def recipe_for(row: str):
    """`NAME@cpu` or `NAME@gpu`: a shipped DPO recipe as it trains on that device."""
    from pipeline.recipes import for_device, get_recipe

    name, _, device = row.partition("@")
    return for_device(get_recipe(name), "cuda" if device == "gpu" else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="smollm2-135m", choices=("smollm2-135m", "qwen2.5-0.5b"))
    parser.add_argument("--rows", default="fast@cpu,fast@gpu,tutorial@cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from pipeline.methods import train_run

    out = args.out or Path(tempfile.mkdtemp(prefix="launches-"))
    model = build_model(args.shape, tokenizer_folder(None), out / "models", tiny=False)
    data = build_data(out, tiny=False)
    counts: dict[str, dict[str, Counter]] = {}
    for row in args.rows.split(","):
        counter = CountLaunches()
        run = out / "runs" / row.replace("@", "-")
        train_run(data, run, str(model), recipe_for(row), callbacks=[counter],
                  max_steps=PROFILED_STEPS[-1])  # fmt: skip
        counts[row] = counter.per_step
        for stage, counted in counter.per_step.items():
            top = ", ".join(f"{k[6:]} {v:.0f}" for k, v in counted.most_common(4))
            print(f"{row:16s} {stage}: {sum(counted.values()):7.0f} launches/step ({top})")
        sys.stdout.flush()
    baseline = sum(counts[args.rows.split(",")[-1]]["dpo"].values())
    print(f"\nDPO step, launches against {args.rows.split(',')[-1]} ({baseline:.0f}):")
    for row, stages in counts.items():
        for stage, counted in stages.items():
            print(f"  {row:16s} {stage}: x{sum(counted.values()) / baseline:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
