"""Loading a run's SFT stage kept as its adapter (its base loaded, the LoRA merged in) against
the same stage kept merged (a plain model folder), in one run.

    python bench/stage_load.py RUN/model/sft [--repeats 3]

RUN/model/sft must be a stage kept as its adapter (a run on a Hub model or `smollm2-offline`).
Its merged copy is made once, in a temporary folder, as a merged push makes it. Then each
folder is loaded afresh (`load_model(..., fresh=True)`) in turns, `--repeats` times each after
a warm-up of both (the page cache then holds both files); prints each time, the medians, and
the ratio adapter / merged.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hub.push import merged_stage
from pipeline.models import load_model, resolve_model


def seconds_to_load(folder: Path) -> float:
    started = time.perf_counter()
    loaded = load_model(str(folder), fresh=True)
    took = time.perf_counter() - started
    del loaded
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", type=Path, help="a run's SFT stage kept as its adapter")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if resolve_model(str(args.stage)).kind != "adapter":
        raise SystemExit(f"{args.stage} is not a stage kept as its adapter")
    with merged_stage(args.stage, dtype_of=args.stage.parent) as merged:
        times: dict[str, list[float]] = {"adapter": [], "merged": []}
        folders = {"adapter": args.stage, "merged": merged}
        for folder in folders.values():  # warm-up: imports, the page cache
            seconds_to_load(folder)
        for _ in range(args.repeats):
            for name, folder in folders.items():
                times[name].append(seconds_to_load(folder))
    for name, taken in times.items():
        shown = ", ".join(f"{t:.2f}" for t in taken)
        print(f"{name:8} {shown} s (median {statistics.median(taken):.2f} s)")
    ratio = statistics.median(times["adapter"]) / statistics.median(times["merged"])
    print(f"adapter / merged: {ratio:.2f}x")


if __name__ == "__main__":
    main()
