"""The project's training and generation on a GPU, with no Hub: where the time goes, and how far
each part is from what the hardware could do.

    python bench/gpu.py [--tiny] [--out DIR] [--only ROW,...] [--limit-scale X]
                        [--tokenizer DIR] [--write-rates FILE]
    python bench/gpu.py --kit DIR      # what a GPU machine needs: config + tokenizer, 3.5 MB

Models are random weights with the real shapes: SmolLM2-135M (its config and tokenizer from the
offline model folder) and Qwen2.5-0.5B (hidden 896, 24 layers, 151,936-token vocabulary; token
ids from the SmolLM2 tokenizer, which fit). Random weights train and generate at the real
models' speed; their titles run to the token limit, as a real model's rarely do. Each is
named as a Hub model in a cache of the bench's own (`title-dpo-bench/SHAPE`), as a Space
loads its base from the Hub's cache: a run's SFT stage is then kept as its adapter and merged
in at each load, as there (`pipeline/models.py`), not kept as a folder's merged copy.

Each row runs the project's own code (`train_run` with a shipped recipe, `generate_titles`)
under its own time limit: a run cut at its limit reports what it measured so far. A row is
printed as it finishes, and appended to OUT/gpu-bench.jsonl, so a run cut short keeps its
rows. Columns:
- `s/step`: the median optimizer step of the loop (the first two left out: warm-up), measured
  with the device synchronised at each step's end;
- `bound`: the step's FLOP divided by the peak this machine reached on a large matmul in the
  same run (`peak`); `x bound` is s/step over that. FLOP: 6 x N x tokens for a full
  fine-tune, 4 x N x tokens with LoRA (frozen weights get no gradient), +2 x N x tokens for a
  reference forward each step; N counts the matmul weights (LM head included), tokens count
  each pair's prompt once (what the step needs, not what TRL's layout computes); attention
  scores are left out (under 2% at these lengths). Generation is bounded by memory, not FLOP:
  its `x bound` says how far decoding is from compute, not what it could reach.
- DPO rows also give the whole run (load, SFT stage, reference pass, training, save), the SFT
  stage's s/step and the reference pass (`_precompute_ref_logps`, TRL's, timed from outside).
- `calls:RECIPE`: what a ZeroGPU chunk costs beyond its steps (`call_s`): a DPO run of the
  recipe in chunks of CALL_STEPS steps, as `pipeline.zerogpu.train_chunk` calls `train_run`;
  the second call, resumed from the first's checkpoint, timed whole, less its steps and its
  reference pass: the model's load, the data, the checkpoint resumed and the one saved. In one
  process with its caches warm: a Space's fresh worker and its GPU's scheduling cost more.
- `judge`: a chat judge (`pipeline.judges.ChatJudge`, an evaluation round's or an iteration's)
  on seed pairs asked both ways: the seconds of a pair (`judge_pair_s`), as `pipeline.zerogpu`
  asks for judging; its bound counts the LM head at each question's last position only.

`--tiny` runs the same rows on the CPU with small models and a few steps (CI runs it): it
proves the code paths, and its figures are not GPU figures. `--write-rates FILE` keeps the
measured rates for the ZeroGPU durations (`pipeline/gpu_rates.py`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# No Hub and no trackio where this runs, and no progress bars; set before the libraries read
# them. The libraries' own printing goes to stderr (`main`): stdout is the table.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TITLE_DPO_TRACKING", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# the models' Hub cache (`as_hub_model`), the bench's own: gone when it ends
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="title-dpo-bench-hub-")

import torch
from transformers import TrainerCallback

HUB_CACHE = Path(os.environ["HF_HUB_CACHE"])
atexit.register(shutil.rmtree, HUB_CACHE, ignore_errors=True)

# --- what is measured --------------------------------------------------------------------------

QWEN_05B = {  # Qwen/Qwen2.5-0.5B-Instruct's config.json, the parts that set its speed
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
TINY = {  # --tiny: every shape shrunk to this (the vocabulary too: the tokenizer's)
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
SHAPES = ("qwen2.5-0.5b", "smollm2-135m")

# (row, shape, time limit in seconds): most wanted first; about 5 minutes on an H100/H200
PLAN = [
    ("dpo:fast", "qwen2.5-0.5b", 100),
    ("dpo:tutorial", "qwen2.5-0.5b", 80),
    ("generate", "qwen2.5-0.5b", 25),
    ("calls:fast", "qwen2.5-0.5b", 40),
    ("reward:fast", "smollm2-135m", 20),
    ("rl:fast", "smollm2-135m", 30),
    ("judge", "qwen2.5-0.5b", 10),
    ("dpo:fast", "smollm2-135m", 40),
    # the fast recipe as a CPU runs it (the shared-prompt forward), beside its GPU values above
    ("dpo:fast+shared_prompt=true", "qwen2.5-0.5b", 40),
]
# --tiny: the same rows on one small shape, a few steps each
TINY_PLAN = [(row, "smollm2-135m", limit) for row, _, limit in PLAN[:7]]
TINY_STEPS = {"dpo": 2, "reward": 2, "rl": 2}
CALL_STEPS = 2  # a `calls:` row's chunks: the second is the one timed
UNTIMED = ("generate", "judge")  # rows with no time limit of their own: a hard one instead
# Peak FLOP/s of dense bf16 matmuls as the makers state them, shown beside the measured peak.
SPEC_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


# --- the machine --------------------------------------------------------------------------------


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def measured_peak(tiny: bool) -> float:
    """FLOP/s of a large matmul in the training dtype (bf16 on a GPU), best of a few."""
    size, dtype = (512, torch.float32) if tiny or device() == "cpu" else (8192, torch.bfloat16)
    a = torch.randn(size, size, device=device(), dtype=dtype)
    b = torch.randn(size, size, device=device(), dtype=dtype)
    best = float("inf")
    for _ in range(3):
        sync()
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - started) / 10)
    return 2 * size**3 / best


def spec_peak() -> float | None:
    name = device_name()
    return next((peak for key, peak in SPEC_PEAKS.items() if key in name), None)


# --- models and data ----------------------------------------------------------------------------


def tokenizer_folder(given: Path | None) -> Path:
    """A folder with the SmolLM2 config.json and tokenizer (the offline model folder, or a kit
    made by --kit)."""
    if given is not None:
        return given
    from pipeline.models import offline_model_dir, prepare_offline_model

    folder = offline_model_dir()
    return folder if (folder / "tokenizer.json").is_file() else prepare_offline_model()


def make_kit(out: Path) -> None:
    """config.json and the tokenizer files of the offline SmolLM2, without its weights."""
    source = tokenizer_folder(None)
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt", ".jinja"):
            shutil.copy2(path, out / path.name)
    print(f"kit: {out} ({sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB)")


def build_model(shape: str, tokenizer_dir: Path, out: Path, tiny: bool) -> Path:
    """A random-weight model of `shape` saved with the tokenizer, as a model folder the
    pipeline loads like any other."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if shape == "smollm2-135m":
        values = AutoConfig.from_pretrained(tokenizer_dir).to_dict()
    else:
        values = dict(QWEN_05B)
    if tiny:  # derived fields (per-layer types, head size) follow from the new sizes
        values = {k: v for k, v in values.items() if k not in ("layer_types", "head_dim")}
        values.update(TINY, vocab_size=len(tokenizer))
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder = out / f"{shape}{'-tiny' if tiny else ''}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def as_hub_model(folder: Path) -> tuple[str, Path]:
    """`folder` moved into the bench's Hub cache as the model `title-dpo-bench/NAME` at one
    commit, laid out as `huggingface_hub` keeps a download: its name, and where its files are."""
    repo_id = f"title-dpo-bench/{folder.name}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = HUB_CACHE / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.rmtree(snapshot, ignore_errors=True)
    snapshot.parent.mkdir(exist_ok=True)
    shutil.move(folder, snapshot)
    return repo_id, snapshot


def lm_head_params(folder: Path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    return config.vocab_size * config.hidden_size


def build_data(out: Path, tiny: bool) -> Path:
    """The tutorial's pairs split by idea (1,020 train, 120 held out); --tiny: 4 ideas."""
    from pipeline import datasets as ds

    prefs = ds.seed_preferences()
    if tiny:
        ideas = sorted({p.idea for p in prefs})[:5]
        prefs = [p for p in prefs if p.idea in ideas]
    splits = ds.split_by_idea(prefs)
    folder = out / "data"
    ds.save_dataset(ds.build_dataset(splits), folder, ds.summarize(splits, "seed", "idea"))
    return folder


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Mean tokens of a pair's parts, as the chat template lays them out."""

    prompt: float
    chosen: float
    rejected: float

    @classmethod
    def of(cls, data: Path, tokenizer) -> Tokens:
        from pipeline.datasets import load_preference_dataset

        rows = list(load_preference_dataset(data)["train"])

        def mean(lengths) -> float:
            return sum(lengths) / len(lengths)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False).input_ids)

        def prompt(row) -> int:
            return count(
                tokenizer.apply_chat_template(
                    row["prompt"], add_generation_prompt=True, tokenize=False
                )
            )

        def completion(row, side: str) -> int:
            return count(row[side][0]["content"]) + 1  # and its end-of-turn token

        return cls(
            mean([prompt(r) for r in rows]),
            mean([completion(r, "chosen") for r in rows]),
            mean([completion(r, "rejected") for r in rows]),
        )


# --- timing --------------------------------------------------------------------------------------


class RowTimeout(Exception):
    pass


@contextlib.contextmanager
def hard_limit(seconds: float):
    """Raise RowTimeout in this (main) thread after `seconds`: the backstop behind each row's
    own, gentler limit."""

    def expire(signum, frame):
        raise RowTimeout(f"hard limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# aten ops that launch nothing of their own: views, metadata, and ops made of other ops
NO_LAUNCH = frozenset(f"aten::{name}" for name in (
    "view", "as_strided", "t", "transpose", "reshape", "_unsafe_view", "slice", "select",
    "expand", "unsqueeze", "squeeze", "permute", "detach", "detach_", "alias", "empty",
    "empty_strided", "empty_like", "resolve_conj", "resolve_neg", "_reshape_alias", "split",
    "split_with_sizes", "unbind", "chunk", "narrow", "lift_fresh", "item",
    "_local_scalar_dense", "is_nonzero", "result_type", "contiguous", "to", "_to_copy",
    "matmul", "linear", "dropout", "numpy_T", "set_", "_has_compatible_shallow_copy_type",
))  # fmt: skip


def launches(events) -> Counter:
    """The aten ops of profiled `events` that run work of their own (each a kernel launch on
    a GPU), by name: no views, and an op made of other ops counts as its parts."""
    counted: Counter = Counter()
    for event in events:
        if not event.name.startswith("aten::") or event.name in NO_LAUNCH:
            continue
        if any(c.name.startswith("aten::") and c.name not in NO_LAUNCH for c in event.cpu_children):
            continue  # its children are counted
        counted[event.name] += 1
    return counted


class StageClock(TrainerCallback):
    """Each training stage's start, end and step times (synchronised), and a stop at the
    row's deadline (the trainer then saves what it has, as a stopped run does). With
    `profile_to`, the `profiled` steps of each stage (1-based: first and last) run under
    torch.profiler (and are left out of the step times): the top ops by time go to
    PROFILE_TO-STAGE.txt, the share of their wall time the device was busy to `busy`, and the
    ops launched per step (`launches`) to `launched`."""

    def __init__(
        self, deadline: float, profile_to: Path | None = None, profiled: tuple[int, int] = (3, 4)
    ) -> None:
        self.deadline = deadline
        self.profile_to = profile_to
        self.profiled = profiled
        self.stages: dict[str, dict[str, Any]] = {}
        self.busy: dict[str, float] = {}
        self.launched: dict[str, Counter] = {}  # per stage: each op's launches a step
        self._stage = ""
        self._step_began = 0.0
        self._profiler = None
        self.cut = False

    def on_train_begin(self, args, state, control, **kwargs):
        # the stage is named by its TRL config: SFTConfig -> sft, DPOConfig -> dpo, ...
        self._stage = type(args).__name__.removesuffix("Config").lower() or "train"
        sync()
        self.stages[self._stage] = {"began": time.perf_counter(), "steps": [], "ended": None}

    def _step(self) -> int:  # 1-based, of the step now running
        return len(self.stages[self._stage]["steps"]) + 1

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profile_to and self._step() == self.profiled[0]:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()
            self._profiled_from = time.perf_counter()
        sync()
        self._step_began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        now = time.perf_counter()
        step = self._step()
        profiled = self._profiler is not None and self.profiled[0] <= step <= self.profiled[-1]
        self.stages[self._stage]["steps"].append(None if profiled else now - self._step_began)
        if self._profiler is not None and step == self.profiled[-1]:
            self._write_profile(now - self._profiled_from)
        if now > self.deadline:
            self.cut = True
            control.should_training_stop = True
        return control

    def _write_profile(self, wall: float) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        steps = self._step() - self.profiled[0]  # the profiled steps this stage finished
        if steps > 0:
            counted = launches(profiler.events())
            self.launched[self._stage] = Counter({k: v / steps for k, v in counted.items()})
        cuda = torch.cuda.is_available()
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        averages = profiler.key_averages()
        path = Path(f"{self.profile_to}-{self._stage}.txt")
        path.write_text(averages.table(sort_by=sort, row_limit=40) + "\n")
        if cuda:  # kernels' time over the wall time of the two steps
            kernel_us = sum(
                e.self_device_time_total for e in averages if e.device_type.name == "CUDA"
            )
            self.busy[self._stage] = kernel_us / 1e6 / wall

    def on_train_end(self, args, state, control, **kwargs):
        if self._profiler is not None:  # a stage of fewer steps than profiled
            self._write_profile(time.perf_counter() - self._profiled_from)
        sync()
        self.stages[self._stage]["ended"] = time.perf_counter()

    def _timed(self, stage: str) -> list[float]:
        return [t for t in self.stages.get(stage, {}).get("steps", []) if t is not None]

    def every_step(self) -> list[float]:
        """The timed steps of every stage, in order."""
        return [t for stage in self.stages for t in self._timed(stage)]

    def step_seconds(self, stage: str) -> float | None:
        steps = self._timed(stage)
        steady = steps[2:] if len(steps) > 4 else steps
        return statistics.median(steady) if steady else None

    def steps(self, stage: str) -> int:
        return len(self.stages.get(stage, {}).get("steps", []))

    def seconds(self, stage: str) -> float | None:
        times = self.stages.get(stage)
        if not times or times["ended"] is None:
            return None
        return times["ended"] - times["began"]


@contextlib.contextmanager
def reference_pass_clock():
    """Total seconds in TRL's reference log-prob precompute (a private method, so timed only
    where it still exists under that name)."""
    from trl import DPOTrainer

    spent = {"seconds": 0.0}
    original = getattr(DPOTrainer, "_precompute_ref_logps", None)
    if original is None:
        yield spent
        return

    def timed(self, *args, **kwargs):
        sync()
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            sync()
            spent["seconds"] += time.perf_counter() - started

    DPOTrainer._precompute_ref_logps = timed
    try:
        yield spent
    finally:
        DPOTrainer._precompute_ref_logps = original


# --- the rows ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    out: Path
    data: Path
    models: dict[str, str]  # by shape: its name in the bench's Hub cache
    params: dict[str, int]
    head_params: dict[str, int]  # the LM head's weights, in N
    tokens: Tokens
    peak: float
    tiny: bool
    profile: bool = False
    reward_runs: dict[str, Path] = dataclasses.field(default_factory=dict)

    def bound(self, flop: float) -> float:
        return flop / self.peak


def train_row(bench: Bench, row: str, shape: str, limit: float) -> dict[str, Any]:
    """A whole run of a shipped recipe (DPO, reward or RL) through `train_run`."""
    from pipeline.methods import train_run
    from pipeline.recipes import DPORecipe, RewardRecipe, RLRecipe, get_recipe, gpu_changes

    kind, name = row.split(":")
    name, *changes = name.split("+")
    recipe_class = {"reward": RewardRecipe, "rl": RLRecipe}.get(kind, DPORecipe)
    recipe = recipe_variant(get_recipe(name, recipe_class), changes)
    out = bench.out / "runs" / f"{row.replace(':', '-').replace('+', '_')}-{shape}"
    shutil.rmtree(out, ignore_errors=True)
    extra: dict[str, Any] = {}
    if kind == "rl":
        if shape in bench.reward_runs:  # the reward model the reward row trained
            extra["reward_model"] = str(bench.reward_runs[shape])
        else:  # none of this shape measured here: the rule terms alone
            recipe = dataclasses.replace(recipe, reward_weight=0.0)
    if bench.tiny:
        extra["max_steps"] = TINY_STEPS[kind]
        if kind == "rl":
            recipe = dataclasses.replace(recipe, max_new_tokens=8)
    profile = bench.out / "profile" / out.name if bench.profile else None
    if profile:
        profile.parent.mkdir(parents=True, exist_ok=True)
    clock = StageClock(time.perf_counter() + limit, profile, (1, 2) if bench.tiny else (3, 4))
    result, status = None, "done"
    started = time.perf_counter()
    with reference_pass_clock() as reference:
        try:
            with hard_limit(limit * 1.5 + 30):
                result = train_run(
                    bench.data,
                    out,
                    str(bench.models[shape]),
                    recipe,
                    callbacks=[clock],
                    **extra,
                )
        except RowTimeout as exc:
            status = f"cut: {exc}"
        except Exception as exc:  # a failing row is a finding; the others still run
            status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    wall = time.perf_counter() - started
    if clock.cut:  # stopped at the limit (in an SFT stage, that is an error of the run's)
        status = f"cut at its {limit:.0f} s limit"
    if kind == "reward" and result is not None:
        bench.reward_runs[shape] = out
    loop = {"dpo": "dpo", "reward": "reward", "rl": recipe.method if kind == "rl" else ""}[kind]
    step = clock.step_seconds(loop)
    flop = step_flop(bench, kind, recipe, shape, out)
    return {
        "row": row,
        "shape": shape,
        "status": status,
        "whole_s": round(wall, 2),
        "steps": clock.steps(loop),
        "s_per_step": step,
        "flop_per_step": flop,
        "bound_s": bench.bound(flop) if flop else None,
        "x_bound": step / bench.bound(flop) if step and flop else None,
        "sft_s": clock.seconds("sft"),
        "sft_steps": clock.steps("sft"),
        "sft_s_per_step": clock.step_seconds("sft"),
        "sft_kept": sft_kept(out),
        "reference_pass_s": round(reference["seconds"], 2) if reference["seconds"] else None,
        "loop_s": clock.seconds(loop),
        "busy": clock.busy or None,  # --profile on a GPU: the device's busy share by stage
        "launches_per_step": {  # --profile: ops launched, by stage
            stage: round(sum(counted.values())) for stage, counted in clock.launched.items()
        }
        or None,
        "gpu_values": gpu_changes(recipe) if device() == "cuda" else None,  # train_dpo applies
    }


def sft_kept(out: Path) -> str | None:
    """How the run in `out` kept its SFT stage: "adapter" (merged in at each load), "merged"
    (a second full model), or None (it had none)."""
    from pipeline.models import ADAPTER_BASE

    stage = out / "sft"
    if (stage / ADAPTER_BASE).is_file():
        return "adapter"
    return "merged" if (stage / "config.json").is_file() else None


def calls_row(bench: Bench, row: str, shape: str, limit: float) -> dict[str, Any]:
    """What a chunk's GPU call costs beyond its steps (the module's docstring, `calls:`)."""
    from pipeline.methods import train_run
    from pipeline.recipes import get_recipe

    name, *changes = row.split(":")[1].split("+")
    recipe = recipe_variant(get_recipe(name), changes)
    out = bench.out / "runs" / f"{row.replace(':', '-').replace('+', '_')}-{shape}"
    shutil.rmtree(out, ignore_errors=True)
    max_steps = 3 * CALL_STEPS  # the run's second call ends in its middle, as most do
    sft_steps = max_steps if recipe.sft_epochs else 0  # max_steps bounds the stage too
    calls, status = [], "done"
    try:
        with hard_limit(limit * 1.5 + 30):
            for stop_after, resume in ((sft_steps + CALL_STEPS, False), (CALL_STEPS, True)):
                clock = StageClock(time.perf_counter() + limit)
                with reference_pass_clock() as reference:
                    sync()
                    started = time.perf_counter()
                    train_run(bench.data, out, str(bench.models[shape]), recipe,
                              callbacks=[clock], max_steps=max_steps, stop_after=stop_after,
                              resume=resume)  # fmt: skip
                    sync()
                    wall = time.perf_counter() - started
                steps = clock.every_step()
                calls.append((wall, sum(steps), len(steps), reference["seconds"]))
    except RowTimeout as exc:
        status = f"cut: {exc}"
    except Exception as exc:  # a failing row is a finding; the others still run
        status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    wall, stepping, steps, reference = calls[1] if len(calls) == 2 else (None, 0, 0, 0)
    return {
        "row": row,
        "shape": shape,
        "status": status,
        "first_call_s": round(calls[0][0], 2) if calls else None,
        "call_wall_s": round(wall, 2) if wall is not None else None,
        "call_steps": steps,
        "call_s": round(wall - stepping - reference, 2) if wall is not None else None,
    }


def recipe_variant(recipe, changes: list[str]):
    """`recipe` with KNOB=VALUE changes (a row like dpo:fast+shared_prompt=false+lora_r=none),
    each checked as a recipe file's key is."""
    from pipeline.recipes import parse_changes, recipe_changed

    if not changes:
        return recipe
    changed = recipe_changed(recipe, parse_changes(changes, "row"), "row")
    return dataclasses.replace(changed, name="+".join([recipe.name, *changes]))


def step_flop(bench: Bench, kind: str, recipe, shape: str, out: Path) -> float | None:
    """What one optimizer step of this kind needs, by the rules in the module's docstring."""
    n, t, batch = bench.params[shape], bench.tokens, recipe.batch_size
    scorer = n - bench.head_params[shape]  # a reward model: a one-output head, no LM head
    train = 4 if recipe.lora_r else 6
    if kind == "dpo":
        reference = 0 if recipe.precompute_ref_log_probs else 2
        return (train + reference) * n * batch * (t.prompt + t.chosen + t.rejected)
    if kind == "reward":  # each side scored as a sequence of its own
        return train * scorer * batch * (2 * t.prompt + t.chosen + t.rejected)
    # RL: generate the batch's titles, score them, one training pass (+ the KL reference)
    from pipeline.metrics import read_metrics

    lengths = [m["completions/mean_length"] for m in read_metrics(out / "metrics.jsonl")
               if "completions/mean_length" in m]  # fmt: skip
    if not lengths:
        return None
    sequence = t.prompt + statistics.mean(lengths)
    reference = 2 if recipe.beta else 0
    scoring = 2 * scorer if recipe.reward_weight else 0
    return ((2 + train + reference) * n + scoring) * batch * sequence


def generate_row(bench: Bench, row: str, shape: str, limit: float) -> dict[str, Any]:
    """Tokens/s: the project's batched `generate_titles` (16 ideas x 5 titles, 48 new tokens),
    then the tutorial's way, one `text-generation` pipeline call per title, for what is left
    of the limit (at most the same titles)."""
    from generate_speed import tutorial_titles  # beside this script

    from pipeline.generation import GenerationSettings, generate_calls, generate_titles
    from pipeline.models import load_model
    from pipeline.pairs import read_ideas_csv
    from pipeline.records import SEED_DIR

    loaded = load_model(str(bench.models[shape]), fresh=True)
    tokenizer = loaded.tokenizer
    ideas = read_ideas_csv(SEED_DIR / "ideas.csv")[: 4 if bench.tiny else 16]
    settings = GenerationSettings(n=5, max_new_tokens=8 if bench.tiny else 48, seed=0)
    generate_titles(loaded, ideas[:1], dataclasses.replace(settings, n=2, max_new_tokens=4))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    sync()
    started = time.perf_counter()
    titles = [t for group in generate_titles(loaded, ideas, settings) for t in group]
    sync()
    batched_s = time.perf_counter() - started
    batched_tokens = sum(count(t.raw) for t in titles)

    one_by_one, one_tokens, deadline = 0, 0, time.perf_counter() + limit
    sync()
    started = time.perf_counter()
    for text in tutorial_titles(loaded, ideas, settings):
        one_tokens += count(text)
        one_by_one += 1
        if time.perf_counter() > deadline:
            break
    sync()
    tutorial_s = time.perf_counter() - started
    prompt = bench.tokens.prompt
    flop = 2 * bench.params[shape] * len(titles) * (prompt + batched_tokens / len(titles))
    return {
        "row": row,
        "shape": shape,
        "status": "done",
        "titles": len(titles),
        "batched_tokens_per_s": batched_tokens / batched_s,
        "tutorial_titles": one_by_one,
        "tutorial_tokens_per_s": one_tokens / tutorial_s if one_by_one else None,
        "batched_s": round(batched_s, 2),
        "bound_s": bench.bound(flop),
        "x_bound": batched_s / bench.bound(flop),
        # one decoding step of one generate call, as pipeline.zerogpu asks for generation
        "decode_step_s": batched_s / settings.max_new_tokens / generate_calls(len(ideas), settings),
    }


def judge_row(bench: Bench, row: str, shape: str, limit: float) -> dict[str, Any]:
    """A chat judge's pace (an evaluation round's or an iteration's judge): seed pairs, each
    asked both ways, 16 questions a forward, as `pipeline.judges` asks them; the seconds of a
    pair, as `pipeline.zerogpu` asks for judging."""
    from pipeline.datasets import seed_preferences
    from pipeline.judges import ChatJudge
    from pipeline.models import load_model

    judge = ChatJudge(load_model(str(bench.models[shape]), fresh=True))
    tokenizer = judge.loaded.tokenizer
    pairs = [(p.idea, p.chosen, p.rejected) for p in seed_preferences()[: 8 if bench.tiny else 64]]
    judge.prefer_many(pairs[:2])  # warm-up
    sync()
    started = time.perf_counter()
    judge.prefer_many(pairs)
    sync()
    judged_s = time.perf_counter() - started
    questions = [*pairs, *((idea, b, a) for idea, a, b in pairs)]
    tokens = sum(len(tokenizer(p, add_special_tokens=False).input_ids)
                 for p in judge.prompts(questions))  # fmt: skip
    # every position through the layers; the LM head at each question's last position only
    head = bench.head_params[shape]
    flop = 2 * (bench.params[shape] - head) * tokens + 2 * head * len(questions)
    return {
        "row": row,
        "shape": shape,
        "status": "done",
        "pairs": len(pairs),
        "judged_s": judged_s,
        "judge_pair_s": judged_s / len(pairs),
        "bound_s": bench.bound(flop),
        "x_bound": judged_s / bench.bound(flop),
    }


# --- printing ------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def line(result: dict[str, Any]) -> str:
    """One printed row."""
    head = f"{result['row']:<13} {result['shape']:<13}"
    if result["row"].startswith("calls:"):
        return (
            f"{head} a resumed chunk: {seconds(result['call_wall_s'])} for "
            f"{result['call_steps']} steps, of which {seconds(result['call_s'])} besides its "
            f"steps and reference pass (first call {seconds(result['first_call_s'])}) "
            f"[{result['status']}]"
        )
    if result["row"] == "generate":
        tutorial = result["tutorial_tokens_per_s"]
        ratio = f" ({result['batched_tokens_per_s'] / tutorial:.1f}x)" if tutorial else ""
        return (
            f"{head} batched {result['batched_tokens_per_s']:.0f} tok/s, one title per call "
            f"{tutorial or 0:.0f} tok/s{ratio}; bound {seconds(result['bound_s'])} for "
            f"{result['titles']} titles, x{result['x_bound']:.0f}"
        )
    if result["row"] == "judge":
        return (
            f"{head} {result['pairs']} pairs asked both ways in {seconds(result['judged_s'])}: "
            f"{seconds(result['judge_pair_s'])} a pair; bound {seconds(result['bound_s'])}, "
            f"x{result['x_bound']:.0f}"
        )
    x = result["x_bound"]
    parts = [
        f"whole {seconds(result['whole_s'])}",
        f"{result['steps']} steps at {seconds(result['s_per_step'])}/step",
        f"bound {seconds(result['bound_s'])}" + (f" (x{x:.1f})" if x else ""),
    ]
    if result["sft_steps"]:
        parts.append(
            f"SFT stage {seconds(result['sft_s'])}, {result['sft_steps']} steps at "
            f"{seconds(result['sft_s_per_step'])}/step"
        )
    if result["reference_pass_s"]:
        parts.append(f"reference pass {seconds(result['reference_pass_s'])}")
    if result.get("busy"):
        busy = ", ".join(f"{stage} {share:.0%}" for stage, share in result["busy"].items())
        parts.append(f"GPU busy {busy}")
    if result.get("launches_per_step"):
        per_step = ", ".join(f"{k} {v:,.0f}" for k, v in result["launches_per_step"].items())
        parts.append(f"launches/step {per_step}")
    if result.get("gpu_values"):
        parts.append(f"the recipe's GPU values: {result['gpu_values']}")
    return f"{head} {'; '.join(parts)} [{result['status']}]"


# --- the run -------------------------------------------------------------------------------------


def parse_row(text: str) -> tuple[str, str, float]:
    """ROW@SHAPE=SECONDS (SHAPE and SECONDS optional) as a plan entry."""
    from pipeline.errors import UserError
    from pipeline.recipes import DPORecipe, RewardRecipe, RLRecipe, get_recipe

    row, _, rest = text.partition("@")
    shape, _, limit = (rest or SHAPES[0]).partition("=")
    if shape not in SHAPES:
        raise UserError(f"shape {shape!r} is one of {', '.join(SHAPES)}")
    if row not in ("generate", "judge"):  # a recipe and its changes are checked before the run
        kind, _, name = row.partition(":")
        if kind not in ("dpo", "reward", "rl", "calls"):
            raise UserError(
                f"row {row!r}: a row is generate, judge, dpo:RECIPE, reward:RECIPE, rl:RECIPE "
                "or calls:RECIPE (a DPO recipe)"
            )
        name, *changes = name.split("+")
        recipe_class = {"reward": RewardRecipe, "rl": RLRecipe}.get(kind, DPORecipe)
        recipe_variant(get_recipe(name, recipe_class), changes)
    return row, shape, float(limit or 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small models, a few steps (CPU, CI)")
    parser.add_argument("--out", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--only", default=None, help="rows to run, e.g. dpo:fast,generate")
    parser.add_argument("--limit-scale", type=float, default=1.0, help="scale every time limit")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a --kit folder")
    parser.add_argument("--write-rates", type=Path, default=None, help="measured rates, as JSON")
    parser.add_argument("--kit", type=Path, default=None, help="write the kit folder and stop")
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="ROW@SHAPE=SECONDS",
        help="run these rows instead of the plan, e.g. dpo:fast+shared_prompt=false@"
        "qwen2.5-0.5b=60 (recipe knobs changed with +KNOB=VALUE; repeatable)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile steps 3-4 of each training stage: OUT/profile/*.txt, and the share of "
        "the time the GPU was busy",
    )
    args = parser.parse_args(argv)
    if args.kit:
        make_kit(args.kit)
        return 0

    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "gpu-bench.jsonl"
    from pipeline.errors import UserError

    try:
        chosen = [parse_row(text) for text in args.row]
    except UserError as exc:
        parser.error(str(exc))
    plan = chosen or [
        p
        for p in (TINY_PLAN if args.tiny else PLAN)
        if not args.only or p[0] in args.only.split(",")
    ]
    began = time.perf_counter()

    # the machine, and the models and data every row shares
    peak = measured_peak(args.tiny)
    stated = spec_peak()
    print(
        f"device: {device_name()}; torch {torch.__version__}; measured matmul peak "
        f"{peak / 1e12:.1f} TFLOP/s" + (f" (stated {stated / 1e12:.0f})" if stated else ""),
        flush=True,
    )
    from transformers import AutoConfig, AutoTokenizer

    from pipeline.gpu_rates import matmul_params, rates_from_bench
    from pipeline.hub_kernels import use_hub_kernels

    use_hub_kernels()  # off unless TITLE_DPO_HUB_KERNELS=1: the project's default, measured
    with contextlib.redirect_stdout(sys.stderr):
        tokenizer_dir = tokenizer_folder(args.tokenizer)
        shapes = sorted({shape for _, shape, _ in plan})
        cached = {
            shape: as_hub_model(build_model(shape, tokenizer_dir, out / "models", args.tiny))
            for shape in shapes
        }
        data = build_data(out, args.tiny)
    folders = {shape: folder for shape, (_, folder) in cached.items()}
    bench = Bench(
        out=out,
        data=data,
        models={shape: name for shape, (name, _) in cached.items()},
        params={
            shape: matmul_params(AutoConfig.from_pretrained(folder))
            for shape, folder in folders.items()
        },
        head_params={shape: lm_head_params(folder) for shape, folder in folders.items()},
        tokens=Tokens.of(data, AutoTokenizer.from_pretrained(tokenizer_dir)),
        peak=peak,
        tiny=args.tiny,
        profile=args.profile,
    )
    for shape, n in bench.params.items():
        print(f"{shape}: N = {n / 1e6:.1f} M matmul weights", flush=True)
    print(
        f"data: 1 pair = {bench.tokens.prompt:.0f} prompt + {bench.tokens.chosen:.0f} chosen + "
        f"{bench.tokens.rejected:.0f} rejected tokens; setup {time.perf_counter() - began:.0f} s",
        flush=True,
    )

    results = []
    for row, shape, limit in plan:
        limit = limit * args.limit_scale
        rows = {"generate": generate_row, "judge": judge_row, "calls": calls_row}
        run = rows.get(row.split(":")[0], train_row)
        try:
            with (  # the rows with no limit of their own
                hard_limit(limit * 2 + 60) if row in UNTIMED else contextlib.nullcontext(),
                contextlib.redirect_stdout(sys.stderr),
            ):
                result = run(bench, row, shape, limit)
        except RowTimeout as exc:
            result = {"row": row, "shape": shape, "status": f"cut: {exc}"}
        result.update(
            device=device_name(),
            peak_flops=peak,
            tiny=args.tiny,
            params=bench.params[shape],
            measured=time.strftime("%Y-%m-%d"),
        )
        results.append(result)
        with results_file.open("a") as f:
            f.write(json.dumps(result) + "\n")
        printable = "x_bound" in result or "call_s" in result
        print(line(result) if printable else f"{row} {shape}: {result['status']}", flush=True)
    print(f"total {time.perf_counter() - began:.0f} s; rows in {results_file}", flush=True)

    if args.write_rates:
        args.write_rates.write_text(json.dumps(rates_from_bench(results), indent=2) + "\n")
        print(f"rates: {args.write_rates}")
    failed = [r for r in results if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
