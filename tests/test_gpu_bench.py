"""`bench/gpu.py --tiny`: the GPU bench's every row runs on the CPU (the same code as on a GPU,
small models), and the rates it writes size the ZeroGPU chunks (pipeline/gpu_rates.py).
Its figures here are CPU figures: what is checked is that each row measured something."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

ROWS = ["dpo:fast", "dpo:tutorial", "generate", "calls:fast", "reward:fast", "rl:fast", "judge"]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, offline_cache) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-bench")
    command = [sys.executable, "bench/gpu.py", "--tiny", "--out", str(out / "run")]
    command += ["--write-rates", str(out / "rates.json")]
    env = {**os.environ, "TITLE_DPO_CACHE": str(offline_cache)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return result, out


def test_every_row_runs_and_measures(bench_run):
    result, out = bench_run
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.splitlines()
    assert printed[0].startswith("device: CPU") and "measured matmul peak" in printed[0]
    rows = [json.loads(line) for line in (out / "run" / "gpu-bench.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == ROWS
    for row in rows:
        assert row["status"] == "done", row
        assert any(line.startswith(row["row"]) for line in printed)  # printed as it finished
    for row in (r for r in rows if r["row"] != "calls:fast"):
        assert row["x_bound"] > 0 and row["bound_s"] > 0 and row["tiny"] is True
    training = [r for r in rows if r["row"] not in ("generate", "calls:fast", "judge")]
    assert all(r["steps"] == 2 and r["s_per_step"] > 0 for r in training)
    fast = rows[0]
    assert fast["sft_steps"] > 0 and fast["sft_s_per_step"] > 0  # the SFT stage, timed
    # on a Hub model, as on a Space: the stage kept as its adapter and merged in at each load
    assert fast["sft_kept"] == "adapter" and rows[1]["sft_kept"] is None
    assert fast["reference_pass_s"] > 0  # the recipe precomputes the reference log-probs
    assert rows[1]["reference_pass_s"] is None  # the tutorial's does not
    generate = rows[2]
    assert generate["batched_tokens_per_s"] > 0 and generate["tutorial_tokens_per_s"] > 0
    assert generate["tutorial_titles"] > 0
    # a chunk's call: the second of two, resumed, its 2 steps and what it cost besides them
    calls = rows[3]
    assert calls["call_steps"] == 2 and 0 < calls["call_s"] < calls["call_wall_s"]
    assert calls["first_call_s"] > calls["call_wall_s"]  # the first runs the SFT stage too
    judge = rows[6]  # 8 pairs asked both ways, and the seconds of one
    assert judge["pairs"] == 8 and judge["judge_pair_s"] > 0
    assert judge["judged_s"] == pytest.approx(8 * judge["judge_pair_s"], abs=0.01)


def test_the_rates_it_writes_size_the_chunks(bench_run, small_data, tiny_model_dir, monkeypatch):
    from pipeline import zerogpu
    from pipeline.gpu_rates import BENCH_TRAIN_PAIRS, MARGIN
    from pipeline.recipes import get_recipe

    _, out = bench_run
    rates = json.loads((out / "rates.json").read_text())
    (shape,) = rates["shapes"].values()
    measured = shape["rows"]["dpo:fast"]
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(out / "rates.json"))

    fast = get_recipe("fast")
    pace = zerogpu.chunk_pace(small_data, str(tiny_model_dir), fast)
    assert pace.source.startswith("measured on CPU")
    assert pace.step_s == pytest.approx(measured["step_s"])  # the tiny model is smaller
    assert pace.sft_step_s == pytest.approx(measured["sft_step_s"])
    assert pace.sft_steps == 2  # 16 pairs, batch 8
    # a call's start-up as measured, with the margin, and its reference pass, in every call
    reference = measured["reference_pass_s"] * 16 / BENCH_TRAIN_PAIRS
    assert pace.call_s == pytest.approx(MARGIN * measured["call_s"] + reference)
    assert "start-up estimated" not in pace.source
    # a changed recipe is planned at its kind's slowest measured row
    custom = dataclasses.replace(fast, lora_r=None)
    tutorial = shape["rows"]["dpo:tutorial"]["step_s"]
    assert zerogpu.chunk_pace(small_data, str(tiny_model_dir), custom).step_s == pytest.approx(
        max(tutorial, measured["step_s"])
    )
    # a judge's verdicts at the measured pace of a pair, with the margin, after its load
    pairs = [("an idea", f"Title {i}", f"Another title {i}") for i in range(40)]
    per_pair = shape["rows"]["judge"]["judge_pair_s"]
    assert zerogpu.judging_seconds(str(tiny_model_dir), pairs) == min(
        zerogpu.MAX_CALL_SECONDS, zerogpu.STARTUP_SECONDS + math.ceil(MARGIN * per_pair * 40)
    )
    # without rates, the pessimistic estimate, saying so
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(out / "none.json"))
    monkeypatch.setattr("pipeline.gpu_rates.RATES_FILE", out / "none.json")
    guess = zerogpu.chunk_pace(small_data, str(tiny_model_dir), fast)
    assert guess.source.startswith("not measured on a GPU")


def test_a_chosen_row_with_changed_knobs_and_a_profile(tmp_path, offline_cache):
    out = tmp_path / "run"
    command = [sys.executable, "bench/gpu.py", "--tiny", "--out", str(out), "--profile"]
    command += ["--row", "reward:fast+lora_r=none+learning_rate=2e-4@smollm2-135m=20"]
    env = {**os.environ, "TITLE_DPO_CACHE": str(offline_cache)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [json.loads(line) for line in (out / "gpu-bench.jsonl").read_text().splitlines()]
    assert row["row"] == "reward:fast+lora_r=none+learning_rate=2e-4" and row["status"] == "done"
    summary = json.loads((out / "runs" / "reward-fast_lora_r=none_learning_rate=2e-4-smollm2-135m"
                          / "train_summary.json").read_text())  # fmt: skip
    assert summary["recipe"]["lora_r"] is None and summary["recipe"]["learning_rate"] == 2e-4
    profile = out / "profile" / "reward-fast_lora_r=none_learning_rate=2e-4-smollm2-135m-reward.txt"
    assert "Self CPU" in profile.read_text()  # the profiler's table of the profiled steps
    assert row["launches_per_step"]["reward"] > 100  # the kernels a step launches, counted
    assert "launches/step reward" in result.stdout
    bad = subprocess.run(
        [*command[:-1], "reward:fast+no_such_knob=1"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown recipe key(s) no_such_knob" in bad.stderr
    assert "Traceback" not in bad.stderr and not bad.stdout  # refused before anything ran
