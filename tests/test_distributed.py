"""The training CLI runs unchanged under `accelerate launch` (DDP), here on two CPU processes.

accelerate 1.15 starts a single process for `--cpu --num_processes 2` (its multi-CPU path goes
through `mpirun` and a hostfile), so the test launches the README's multi-GPU config on this
GPU-less machine: torchrun starts two processes, and training (which sets `use_cpu` on a CPU)
joins them with gloo. On a GPU machine the same command is the multi-GPU one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


# the fast recipe under two processes: test_the_jobs_multi_gpu_command_trains_as_one_process_does
@pytest.mark.parametrize("recipe", ["tutorial"])
def test_accelerate_launch_two_cpu_processes(recipe, small_data, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "configs" / "accelerate" / "multi_gpu.yaml"),
        "--num_processes", "2", "--mixed_precision", "no",
    ]  # fmt: skip
    train = [
        "-m", "pipeline", "train", "--data", str(small_data), "--out", str(out),
        "--model", str(tiny_model_dir), "--recipe", recipe, "--epochs", "1",
        "--batch-size", "4", "--json",
    ]  # fmt: skip
    done = subprocess.run([*launch, *train], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1, done.stdout  # one process answers
    # 16 pairs, 4 per process: 2 steps of 8 pairs with two processes (one alone would take 4)
    assert results[0]["steps"] == 2
    tuned = load_file(out / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(tuned[k], base[k]) for k in base), "training changed nothing"
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2


def test_the_accelerate_config_files_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds, ports = {}, set()
    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.stem] = config.distributed_type.value
        ports.add(config.main_process_port)
    assert kinds == {"deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP", "multi_gpu": "MULTI_GPU"}
    # 0: accelerate picks a free port, so two launches at once (two runs on one machine, the
    # tests of this file side by side) never both wait on 29500
    assert ports == {0}


def test_the_jobs_multi_gpu_command_trains_as_one_process_does(
    small_data, tiny_model_dir, tmp_path
):
    """The command a job on a two-GPU flavor runs (`hub.jobs.training_command`), here on two
    CPU processes with 4 pairs each, against one process with 8 pairs a step: the same
    steps on the same pairs, so the same weights up to float rounding."""
    from hub.jobs import JobRequest, training_command

    request = JobRequest(data="alice/titles", push_to="alice/tuned", model=str(tiny_model_dir))
    runs = {}
    for gpus, batch in ((2, 4), (1, 8)):
        out = tmp_path / f"{gpus}-processes"
        command = training_command(request, gpus, data=str(small_data), out=str(out))
        assert command[0] == "python"
        if gpus > 1:
            assert command[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
        command = [sys.executable, *command[1:], "--batch-size", str(batch), "--epochs", "1"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((out / "train_summary.json").read_text())["steps"] == 2
        runs[gpus] = load_file(out / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    moved = max((runs[1][k] - base[k]).abs().max().item() for k in base)
    apart = max((runs[2][k] - runs[1][k]).abs().max().item() for k in base)
    print(f"largest change from the base {moved:.3g}; largest difference between runs {apart:.3g}")
    assert moved > 1e-4, "training changed nothing"
    assert apart < 1e-3 * moved
