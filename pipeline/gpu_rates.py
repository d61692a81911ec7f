"""GPU rates measured by `bench/gpu.py`, and what a ZeroGPU call should ask for from them.

`bench/gpu.py --write-rates configs/gpu-rates.json` on a GPU writes, per model shape, the
seconds of a training step of each shipped recipe, of the SFT stage and of the reference pass
(which also paces the held-out ranking: the same forward of both titles of every pair), of
one decoding step of a batch of titles, and of a chat judge's verdict on a pair.
`pipeline.zerogpu` sizes its calls from them: a model is matched to the measured shape with
the nearest number of matmul weights at or above its own (a larger model's times scaled up by
the ratio; never scaled down, since small models on a GPU are bound by kernel launches, not
FLOP). Where nothing was measured, the caller's pessimistic estimate stands, and says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RATES_FILE = Path(__file__).resolve().parent.parent / "configs" / "gpu-rates.json"
RATES_SETTING = "TITLE_DPO_GPU_RATES"  # another rates file (a test's, a new GPU's)
# per-row fields kept from a bench row, and the name each has in the rates file
KEPT = {
    "s_per_step": "step_s",
    "sft_s": "sft_s",
    "sft_s_per_step": "sft_step_s",
    "reference_pass_s": "reference_pass_s",
    "whole_s": "whole_s",
    "decode_step_s": "decode_step_s",
    "judge_pair_s": "judge_pair_s",
}


def matmul_params(config) -> int:
    """N: the weights of every matmul a token goes through (the LM head included, the input
    embedding lookup not), counted on a model built without memory from its config."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def rates_from_bench(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The rates file's content from `bench/gpu.py`'s rows (finished or cut: a cut row's step
    times are still measured)."""
    shapes: dict[str, dict[str, Any]] = {}
    for row in results:
        if row["status"].startswith("failed") or "params" not in row:
            continue
        shape = shapes.setdefault(row["shape"], {"params": row["params"], "rows": {}})
        kept = {new: row[old] for old, new in KEPT.items() if row.get(old) is not None}
        name = row["row"]
        if name.startswith("calls:"):  # what a chunk's call costs: a field of the DPO row's
            name = f"dpo:{name.removeprefix('calls:')}"
            kept = {"call_s": row["call_s"]} if row.get("call_s") is not None else {}
        shape["rows"][name] = {**shape["rows"].get(name, {}), **kept}
    first = results[0] if results else {}
    return {
        "device": first.get("device"),
        "tiny": first.get("tiny", False),
        "measured": first.get("measured"),
        "shapes": shapes,
    }


@dataclass(frozen=True)
class GpuRates:
    device: str
    measured: str | None
    shapes: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> GpuRates | None:
        """The rates file (RATES_SETTING, else the shipped one); None when there is none."""
        path = Path(path or os.environ.get(RATES_SETTING) or RATES_FILE)
        if not path.is_file():
            return None
        values = json.loads(path.read_text())
        if values.get("tiny"):
            log.warning("%s holds --tiny rates (a CPU check), not GPU figures", path)
        return cls(values.get("device") or "?", values.get("measured"), values["shapes"])

    def describe(self) -> str:
        return f"measured on {self.device}" + (f" ({self.measured})" if self.measured else "")

    def _shape_for(self, params: int) -> tuple[dict[str, Any], float] | None:
        """The measured shape for a model of `params` weights, and the factor to scale by."""
        if not self.shapes:
            return None
        ordered = sorted(self.shapes.values(), key=lambda s: s["params"])
        at_or_above = [s for s in ordered if s["params"] >= params]
        shape = at_or_above[0] if at_or_above else ordered[-1]
        return shape, max(1.0, params / shape["params"])

    def seconds(self, params: int, row: str, field: str) -> float | None:
        """`field` of the bench row `row` (e.g. "dpo:fast", "step_s") for a model of `params`
        weights; for a recipe not measured (a custom one), the slowest row of its kind."""
        found = self._shape_for(params)
        if found is None:
            return None
        shape, scale = found
        rows = shape["rows"]
        if row in rows and field in rows[row]:
            return rows[row][field] * scale
        kind = row.split(":")[0]
        same_kind = [r[field] for name, r in rows.items() if name.startswith(kind) and field in r]
        return max(same_kind) * scale if same_kind else None


_PARAMS: dict[str | None, int] = {}  # found once per name: every generation's call asks


def model_params(model_name: str | None) -> int | None:
    """N of the model `model_name` names, from its config alone (no weights read); None when
    its config cannot be found without downloading (asked again next time)."""
    from transformers import AutoConfig

    from pipeline.errors import UserError
    from pipeline.models import resolve_model

    if model_name in _PARAMS:
        return _PARAMS[model_name]
    try:
        source = resolve_model(model_name).weights  # an adapter's: its base's
        pinned = {"revision": source.revision} if source.revision else {}
        config = AutoConfig.from_pretrained(source.path, local_files_only=True, **pinned)
    except (UserError, OSError, ValueError):
        return None
    _PARAMS[model_name] = matmul_params(config)
    return _PARAMS[model_name]


# --- what a run's GPU calls ask for ------------------------------------------------------------

# Where nothing was measured: deliberately pessimistic for a 0.5B model on a ZeroGPU slice.
ESTIMATED_SECONDS_PER_STEP = 3.0
# A call's weights onto the GPU, its data, the checkpoint it resumes and the one it saves,
# where bench/gpu.py's `calls:` row did not measure it (`call_s`, then asked for with MARGIN)
STARTUP_SECONDS = 15
BENCH_TRAIN_PAIRS = 1020  # bench/gpu.py's data: the tutorial's pairs split by idea (+120 held out)
MARGIN = 1.5  # steps are asked for at 1.5x their pace: a call cut short loses its steps


@dataclass(frozen=True)
class Pace:
    """What one chunk of a run costs: per call, and per step (the recipe's SFT stage's steps
    first, `sft_steps` of them still ahead, then the run's own), with where the figures come
    from. The SFT stage runs in chunks like the rest, so no call needs more than one chunk."""

    step_s: float
    call_s: float  # every call: start-up, and the reference pass of a recipe that makes one
    source: str
    sft_step_s: float = 0.0
    sft_steps: int = 0

    def _steps_cost(self, steps: int) -> float:
        sft = min(steps, self.sft_steps)
        return sft * self.sft_step_s + (steps - sft) * self.step_s

    def chunk_seconds(self, steps: int) -> int:
        """The GPU time to ask for: a chunk of the next `steps` steps."""
        return math.ceil(self.call_s + MARGIN * self._steps_cost(steps))

    def chunk_steps(self, budget: float) -> int:
        """How many of the next steps fit in one call of `budget` seconds (at least one)."""
        steps = 1
        while self.chunk_seconds(steps + 1) <= budget:
            steps += 1
        return steps

    def measured(self, step_s: float, stage: str = "") -> Pace:
        """This pace with the step time a chunk measured, of the SFT stage or the run's own."""
        if stage == "sft":
            return replace(self, sft_step_s=step_s, source=f"{self.source}; steps as measured")
        return replace(self, step_s=step_s, source=f"{self.source}; steps as measured")

    def with_sft_left(self, steps: int) -> Pace:
        """This pace with `steps` of the SFT stage still ahead."""
        return replace(self, sft_steps=max(0, steps))

    def slower(self) -> Pace:
        """This pace with steps taken as twice as long: after a call that ZeroGPU aborted,
        the next chunks are half as long for the same time asked."""
        return replace(
            self, step_s=2 * self.step_s, sft_step_s=2 * self.sft_step_s,
            source=f"{self.source}; doubled",
        )  # fmt: skip


def shipped_row(recipe) -> str:
    """The bench row of `recipe`: its own when it is a shipped recipe as shipped, else its
    kind alone (the slowest measured row of that kind)."""
    from pipeline.recipes import shipped_recipes

    shipped = shipped_recipes(type(recipe)).get(recipe.name)
    return f"{recipe.KIND}:{recipe.name}" if shipped == recipe else f"{recipe.KIND}:"


def plan_pace(params: int | None, recipe, train_pairs: int, rates: GpuRates | None) -> Pace:
    """The pace of a run of `recipe` on `train_pairs` pairs for a model of `params` weights:
    from the measured rates where they cover it, else the pessimistic estimate."""
    sft_steps = (
        math.ceil(train_pairs * getattr(recipe, "sft_epochs", 0) / recipe.batch_size)
        if getattr(recipe, "sft_epochs", 0)
        else 0
    )
    row = shipped_row(recipe)
    step = rates.seconds(params, row, "step_s") if rates and params else None
    if step is None:
        estimate = ESTIMATED_SECONDS_PER_STEP
        return Pace(
            estimate,
            STARTUP_SECONDS,
            "not measured on a GPU (configs/gpu-rates.json): a pessimistic estimate",
            sft_step_s=estimate,
            sft_steps=sft_steps,
        )
    reference = 0.0
    if getattr(recipe, "precompute_ref_log_probs", False):  # the bench's data, scaled to this
        measured = rates.seconds(params, row, "reference_pass_s") or 0.0
        reference = measured * train_pairs / BENCH_TRAIN_PAIRS
    sft_step = rates.seconds(params, row, "sft_step_s") or step
    call = rates.seconds(params, row, "call_s")
    startup = MARGIN * call if call is not None else STARTUP_SECONDS
    source = rates.describe() + ("" if call is not None else "; a call's start-up estimated")
    return Pace(step, startup + reference, source, sft_step, sft_steps)


def held_out_seconds(params: int | None, pairs: int, models: int, rates: GpuRates | None):
    """What ranking `pairs` held-out pairs with `models` models asks for: each model's load at
    a call's start-up, and its forward of both titles of every pair at the measured reference
    pass's pace, with the margin; None where the reference pass was not measured."""
    reference = rates.seconds(params, "dpo:", "reference_pass_s") if rates and params else None
    if reference is None:
        return None
    call = rates.seconds(params, "dpo:", "call_s")
    load = MARGIN * call if call is not None else STARTUP_SECONDS
    return models * (load + MARGIN * reference * pairs / BENCH_TRAIN_PAIRS)
