"""Kernel launches per training step, by stage and recipe: what a GPU step of a small model
costs when Python, not arithmetic, is the limit.

    python bench/launches.py [--shape smollm2-135m] [--rows fast@cpu,fast@gpu,tutorial@cpu]

On a GPU, a step of a 135M-0.5B model on batches of 8 pairs is milliseconds of arithmetic
(bench/gpu.py prints its bound) and thousands of kernels, each launched from Python at a cost
of its own: when launching takes longer than the arithmetic, the number of launches, not the
FLOPs, sets the step time. That number does not depend on the device, so it is counted here
on the CPU: steps 3 and 4 of each stage of a run of the random-weight model of the real shape,
profiled as `bench/gpu.py --profile` profiles them (its StageClock; the tables go to
OUT/profile), counting each aten op that runs work of its own (no views, no ops made of other
ops). `fast@gpu` is the
fast recipe with the values it takes on a GPU (its `on_gpu`); the baseline is the tutorial
recipe, counted in the same run. The reference pass is not a training step and is left out.
A GPU's own time for these steps comes from bench/gpu.py on a GPU, never from here.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections import Counter
from pathlib import Path

from gpu import StageClock, build_data, build_model, tokenizer_folder  # beside this script

PROFILED_STEPS = (3, 4)


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
    (out / "profile").mkdir(parents=True, exist_ok=True)
    for row in args.rows.split(","):
        name = row.replace("@", "-")
        clock = StageClock(math.inf, out / "profile" / name, PROFILED_STEPS)
        train_run(data, out / "runs" / name, str(model), recipe_for(row), callbacks=[clock],
                  max_steps=PROFILED_STEPS[-1])  # fmt: skip
        counts[row] = clock.launched
        for stage, counted in clock.launched.items():
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
