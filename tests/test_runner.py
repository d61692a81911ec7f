"""Background training runs: progress, one at a time, stop and resume."""

import json
import re
import time
from dataclasses import replace

import pytest
from transformers import TrainerCallback

from pipeline import datasets as ds
from pipeline.errors import UserError
from pipeline.evaluation import HeldOutRanking
from pipeline.methods import run_choice
from pipeline.recipes import RLRecipe, get_recipe
from pipeline.runner import JobStatus, TrainingRunner, finished_runs, latest_run, shown_status
from pipeline.training import latest_checkpoint


class SlowSteps(TrainerCallback):
    """Makes each step of the tiny model take long enough to stop a run in the middle."""

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.3)


def stop_once(runner: TrainingRunner, reached) -> JobStatus:
    """Stop the runner's run once `reached(status)` holds (within a minute); its last status."""
    deadline = time.monotonic() + 60
    while not reached(runner.status()):
        assert time.monotonic() < deadline and runner.status().running, runner.status()
        time.sleep(0.05)
    runner.stop()
    return runner.wait(120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    prefs = ds.seed_preferences()[:64]
    splits = ds.split_preferences(prefs, "seed")
    out = tmp_path_factory.mktemp("jobs") / "data"
    ds.save_dataset(ds.build_dataset(splits), out, ds.summarize(splits, "seed", "seed"))
    return out


@pytest.fixture
def tutorial_run(data, tiny_model_dir) -> dict:
    """What every run here trains: the data, the tiny model, the tutorial recipe."""
    return {"data": data, "model_name": str(tiny_model_dir), "recipe": get_recipe("tutorial")}


def test_a_run_reports_progress_and_metrics(data, tutorial_run, tmp_path):
    runner = TrainingRunner()
    runner.start(**tutorial_run, out=tmp_path / "run", max_steps=3)
    status = runner.wait(120)
    assert status.state == "done", status.message
    assert (status.step, status.total) == (3, 3)
    assert any("loss" in m for m in status.metrics)
    assert status.log[0] == "training: 3 steps"
    assert "Done: 3 steps" in status.message
    # the held-out figure of the saved run, beside the untrained model's, in the message and log
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    ranking = HeldOutRanking(**summary["held_out"]).describe()
    assert status.message.endswith(f"; {ranking}") and status.log[-1] == ranking
    assert summary["held_out"]["pairs"] == len(ds.load_preference_dataset(data)["valid"])
    assert status.loop_started[1] == 0 and status.eta_seconds == 0  # all 3 of 3 done


class OutOfGpuMemory(TrainerCallback):
    """What a run too big for its GPU meets at its second step (a CPU cannot run out this way)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            import torch

            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                "of 79.19 GiB of which 1.06 GiB is free.\nOf the allocated memory ..."
            )


def test_a_run_out_of_gpu_memory_says_what_to_change(tutorial_run, tmp_path):
    runner = TrainingRunner()
    runner.start(**tutorial_run, out=tmp_path / "run", max_steps=4, callbacks=[OutOfGpuMemory()])
    status = runner.wait(120)
    assert status.state == "failed", status.message
    assert status.message.startswith("the GPU ran out of memory: lower the batch size, turn LoRA")
    assert status.message.endswith(
        "(torch: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
        "has a total capacity of 79.19 GiB of which 1.06 GiB is free.)"
    )
    assert not any("Traceback" in line for line in status.log), status.log


def test_one_run_at_a_time_then_stop_and_resume(tutorial_run, tmp_path):
    runner = TrainingRunner()
    out = tmp_path / "run"
    kwargs = {**tutorial_run, "out": out, "max_steps": 40}
    runner.start(**kwargs, callbacks=[SlowSteps()])
    with pytest.raises(UserError, match="already going"):
        runner.start(**kwargs)
    stopped = stop_once(runner, lambda status: status.step >= 2)
    assert stopped.state == "stopped", stopped.message
    assert "held-out" not in stopped.message  # a stopped run is not scored: Stop stays quick
    assert stopped.message == (
        f"Stopped at step {stopped.step} of 40: the model as it stands is in {out} "
        "(Evaluate and the Hub list it), and Resume carries on from there"
    )
    assert 2 <= stopped.step < 40
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{stopped.step}"
    # its model is saved, and lists of runs say it is part-trained
    line, _ = run_choice(out)
    assert line.endswith(f", stopped at {stopped.step} of 40 steps"), line

    runner.start(**kwargs, resume=True)
    resumed = runner.wait(120)
    assert resumed.loop_started[1] == stopped.step  # the pace counts only this run's steps
    assert resumed.state == "done", resumed.message
    assert resumed.step == 40
    steps = [m["step"] for m in resumed.metrics if "loss" in m]
    assert steps and min(steps) > stopped.step  # it carried on, it did not start over


def test_stop_pressed_as_the_last_step_ends_leaves_the_run_done(tutorial_run, tmp_path):
    """The run finished all the same: it is done, and its model is there for Generate (a
    "stopped" run that had finished had nothing to resume, nor a model to use)."""
    runner = TrainingRunner()
    runner.start(**tutorial_run, out=tmp_path / "run", max_steps=2, callbacks=[SlowSteps()])
    ended = stop_once(runner, lambda status: status.step >= 2)
    assert ended.state == "done" and ended.message.startswith("Done: 2 steps"), ended.message
    assert runner.finished_model() == str(tmp_path / "run")


def test_a_failing_run_is_reported_and_the_runner_stays_usable(data, tutorial_run, tmp_path):
    runner = TrainingRunner()
    runner.start(data=data, out=tmp_path / "x", model_name="./no/such/model")
    failed = runner.wait(60)
    assert failed.state == "failed" and "does not exist" in failed.message
    runner.start(**tutorial_run, out=tmp_path / "ok", max_steps=1)
    assert runner.wait(120).state == "done"


def test_resume_without_a_checkpoint_is_refused(tutorial_run, tmp_path):
    runner = TrainingRunner()
    runner.start(**tutorial_run, out=tmp_path / "empty", resume=True)
    status = runner.wait(60)
    assert status.state == "failed" and "no checkpoint" in status.message


def test_a_chunked_run_reports_progress_chunk_by_chunk(data, tiny_model_dir, tmp_path):
    runner = TrainingRunner()
    recipe = replace(get_recipe("fast"), batch_size=4, logging_steps=1)
    runner.start(data=data, out=tmp_path / "run", model_name=str(tiny_model_dir), recipe=recipe,
                 max_steps=5, chunked=True, chunk_steps=2)  # fmt: skip
    status = runner.wait(120)
    assert status.state == "done", status.message
    assert (status.step, status.total) == (5, 5)
    # the SFT stage's steps count in a chunk's (its 5th and DPO's 1st share one; a limit
    # bounds the stage too)
    assert [line for line in status.log if line.startswith("chunk done")] == [
        "chunk done: SFT stage 2/5", "chunk done: SFT stage 4/5",
        "chunk done: step 1/5", "chunk done: step 3/5", "chunk done: step 5/5"
    ]  # fmt: skip
    assert [m["step"] for m in status.metrics if "loss" in m] == [1, 2, 3, 4, 5]
    # run as GPU chunks (as on a Space), the log names the values the recipe takes on a GPU
    assert "on a GPU the recipe trains with shared_prompt off" in status.log


def test_stop_ends_a_chunk_at_its_next_step(data, tutorial_run, tmp_path):
    """On a Space a chunk trains in a ZeroGPU worker, where the app's Stop cannot reach it in
    memory; it ends at the next step all the same (not at the chunk's end, minutes of the
    visitor's GPU quota later), with a checkpoint that Resume carries on from, and with its
    model saved where it stopped, as a straight run's Stop leaves it."""
    runner = TrainingRunner()
    out = tmp_path / "run"
    recipe = replace(tutorial_run["recipe"], batch_size=2, logging_steps=1, epochs=50)
    kwargs = {**tutorial_run, "recipe": recipe, "max_steps": 200, "chunked": True}
    runner.start(out=out, chunk_steps=200, **kwargs)
    # stopped once the chunk is training
    stopped = stop_once(runner, lambda status: (out / "metrics.jsonl").is_file())
    assert stopped.state == "stopped" and 0 < stopped.step < 200, stopped
    assert latest_checkpoint(out).name == f"checkpoint-{stopped.step}"
    assert "(Evaluate and the Hub list it)" in stopped.message, stopped.message
    line, _ = run_choice(out)  # Evaluate, the Hub and Compare runs list it, as on a laptop
    assert line.endswith(f", stopped at {stopped.step} of 200 steps"), line
    assert (out / "model.safetensors").is_file()
    runner.start(out=out, chunk_steps=200, resume=True, **kwargs)
    resumed = runner.wait(180)
    assert resumed.state == "done" and resumed.step == 200, resumed


def test_reward_and_rl_runs_go_through_the_same_runner_and_chunks(data, tiny_model_dir, tmp_path):
    from pipeline.recipes import REWARD_RECIPES, RL_RECIPES

    runner = TrainingRunner()
    reward = REWARD_RECIPES["fast"].changed(batch_size=4, logging_steps=1)
    runner.start(data=data, out=tmp_path / "rm", model_name=str(tiny_model_dir), recipe=reward,
                 max_steps=4, chunked=True, chunk_steps=2)  # fmt: skip
    status = runner.wait(120)
    assert status.state == "done", status.message
    assert (status.kind, status.stage, status.step, status.total) == ("reward", "reward", 4, 4)
    assert "reward model" in status.message  # its held-out pairs, ranked by its scores
    assert len([line for line in status.log if line.startswith("chunk done")]) == 2
    with pytest.raises(UserError, match="scores titles and writes none"):
        runner.finished_model()
    # a list of runs tells it apart: what it trained from what, on which pairs, and its figure
    # (a model started from a folder is named by its folder's name, not its whole path)
    line, folder = run_choice(tmp_path / "rm")
    assert folder == str(tmp_path / "rm")
    held = r"held-out (0\.\d\d|1\.00) of \d+ \(untrained (0\.\d\d|1\.00)\)"
    start = f"from {tiny_model_dir.name} on the tutorial's pairs"
    assert re.fullmatch(rf"rm: reward model \(fast\) {start}, 4 steps; {held}", line), line

    # RL on the rule terms alone (no reward model), in chunks: its charts' metrics arrive
    rl = replace(RL_RECIPES["fast"], reward_weight=0.0, max_new_tokens=8, logging_steps=1)
    runner.start(data=data, out=tmp_path / "rl", model_name=str(tiny_model_dir), recipe=rl,
                 max_steps=3, chunked=True, chunk_steps=2)  # fmt: skip
    status = runner.wait(120)
    assert status.state == "done", status.message
    assert (status.kind, status.stage, status.step, status.total) == ("rl", "grpo", 3, 3)
    assert [m["step"] for m in status.metrics if "reward" in m] == [1, 2, 3]
    assert runner.finished_model() == str(tmp_path / "rl")
    line, _ = run_choice(tmp_path / "rl")  # RL has no held-out figure: rounds measure it
    assert line == f"rl: GRPO (fast) {start}, 3 steps", line


def test_an_sft_stage_shows_as_such_and_can_be_stopped(data, tiny_model_dir, tmp_path):
    runner = TrainingRunner()
    recipe = replace(get_recipe("fast"), batch_size=2, sft_epochs=1, logging_steps=1)
    kwargs = dict(data=data, model_name=str(tiny_model_dir), recipe=recipe, max_steps=2)
    runner.start(out=tmp_path / "run", **kwargs)
    status = runner.wait(120)
    assert status.state == "done", status.message
    sft_lines = [line for line in status.log if line.startswith("SFT stage:")]
    assert len(sft_lines) == 1 and int(sft_lines[0].split()[2]) > 0
    assert status.stage == "dpo" and (status.step, status.total) == (2, 2)
    assert all(m["step"] <= 2 for m in status.metrics)  # the charts carry DPO's metrics only

    # no step limit here: a limit bounds the SFT stage too, and 2 steps leave no time to stop
    runner.start(out=tmp_path / "stopped", **{**kwargs, "max_steps": None}, callbacks=[SlowSteps()])
    stopped = stop_once(runner, lambda status: status.stage == "sft" and status.step >= 1)
    assert stopped.state == "stopped", stopped.message
    assert stopped.message.startswith("Stopped in the SFT stage at step "), stopped.message
    assert not (tmp_path / "stopped" / "sft" / "config.json").exists()
    # Resume carries the stage on from its checkpoint, then DPO runs
    runner.start(out=tmp_path / "stopped", resume=True, **{**kwargs, "max_steps": None})
    resumed = runner.wait(240)
    assert resumed.state == "done", resumed.message
    first_sft = [line for line in resumed.log if line.startswith("SFT stage:")]
    assert first_sft and resumed.stage == "dpo" and resumed.step == resumed.total
    assert not (tmp_path / "stopped" / "sft-checkpoints").exists()


def test_run_folders_are_made_by_the_runner_and_a_running_job_writes_none(
    data, tutorial_run, tiny_model_dir, tmp_path
):
    import shutil

    runs = tmp_path / "runs"
    runner = TrainingRunner()
    with pytest.raises(UserError, match="no earlier run"):
        runner.resume_latest(runs, "dpo")
    with pytest.raises(UserError, match="no finished run yet"):
        runner.finished_model()
    assert runner.status().describe() == "No training run yet."

    def copy_data(out):
        shutil.copytree(data, out)

    del tutorial_run["data"]  # the run's own copy
    run = runner.start_run(runs, copy_data, **tutorial_run, max_steps=40, callbacks=[SlowSteps()])
    assert run.parent == runs and run.name.startswith("run-") and (run / "data").is_dir()
    with pytest.raises(UserError, match="already going"):
        runner.start_run(runs, copy_data, model_name=str(tiny_model_dir))
    assert list(runs.iterdir()) == [run]  # the refused start wrote nothing
    assert latest_run(runs) == run and finished_runs(runs) == []
    runner.stop()
    assert runner.wait(120).state == "stopped"
    runner.resume_latest(runs, "dpo")
    done = runner.wait(120)
    assert done.state == "done" and done.describe().startswith("**done** · step 40/40")
    assert runner.finished_model() == str(run / "model") and finished_runs(runs) == [run / "model"]
    with pytest.raises(UserError, match="no earlier run to resume"):  # a finished run has none
        runner.resume_latest(runs, "dpo")


def test_a_new_run_never_takes_an_earlier_runs_folder(tmp_path):
    from pipeline.runs import new_run_folder

    second = time.time()
    made = []
    for _ in range(3):  # three starts in one second
        made.append(new_run_folder(tmp_path, second))
        made[-1].mkdir()
    first = made[0].name
    assert first == time.strftime("run-%Y%m%d-%H%M%S", time.localtime(second))
    assert [m.name for m in made] == [first, f"{first}-2", f"{first}-3"]
    assert latest_run(tmp_path) == made[-1]


def test_a_resumed_run_carries_on_as_it_started_whatever_the_form_says_now(
    data, tiny_model_dir, tmp_path
):
    """An RL run started from a finished run's model and stopped; the app restarted, its form
    back at the base model and the fast recipe: Resume carries on the run it stopped, and the
    model it started from may not be deleted meanwhile."""
    import shutil

    from pipeline.runs import run_removal, run_start, run_summary, what_resuming_needs

    runs = tmp_path / "runs"
    earlier = runs / "run-20260101-000000" / "model"  # a finished run the new one starts from
    shutil.copytree(tiny_model_dir, earlier)
    (earlier / "train_summary.json").write_text('{"kind": "dpo", "finished": true}')
    recipe = replace(get_recipe(kind=RLRecipe), reward_weight=0.0, logging_steps=1)
    runner = TrainingRunner()
    run = runner.start_run(
        runs, lambda out: shutil.copytree(data, out), model_name=str(earlier), recipe=recipe,
        max_steps=30, callbacks=[SlowSteps()],
    )  # fmt: skip
    stopped = stop_once(runner, lambda status: status.step >= 2)
    assert stopped.state == "stopped" and stopped.step < 30, stopped.message
    started = run_start(run / "model")
    assert (started.kind, started.model, started.max_steps) == ("rl", str(earlier), 30)
    # the app restarted: its Train tab shows the stopped run as it was, and how to carry it on
    shown = shown_status(TrainingRunner().status(), runs)
    assert shown.describe() == (
        f"**stopped** · step {stopped.step}/30 · {run.name} (Online RL against a reward model "
        f"(RLHF step 2: GRPO / RLOO), the recipe fast) was left stopped at step {stopped.step}: "
        "*Resume the last run* carries it on."
    )
    assert (shown.kind, shown.out, shown.metrics) == ("rl", str(run / "model"), stopped.metrics)

    with pytest.raises(UserError, match=rf"in use \(the stopped run {run.name} resumes from it\)"):
        run_removal(runs, earlier, what_resuming_needs(runs))
    with pytest.raises(UserError, match=f"{run.name}, trains with the method 'Online RL"):
        runner.resume_latest(runs, "dpo")
    # a start that fails before it trains (a mistyped model) leaves a run with nothing to
    # resume, which does not hide the stopped one
    failed = runner.start_run(
        runs, lambda out: shutil.copytree(data, out), model_name=str(tmp_path / "no-such-model")
    )
    assert runner.wait(60).state == "failed" and latest_run(runs) == failed
    assert run_start(failed / "model") is None  # refused for its model: nothing to take again

    def form_now() -> dict:
        raise AssertionError("a run that kept its start does not read the form")

    runner.resume_latest(runs, "rl", form_now)
    done = runner.wait(240)
    assert done.state == "done" and (done.kind, done.step, done.total) == ("rl", 30, 30), done
    said = f"resumed {run.name} as it started: the model {earlier}, the recipe fast, at most 30"
    assert said in "\n".join(done.log)
    summary = run_summary(run / "model")
    assert summary["started_from"] == str(earlier) and summary["recipe"]["reward_weight"] == 0
    assert what_resuming_needs(runs) == {}  # finished: the earlier run may go now
    assert shown_status(TrainingRunner().status(), runs).describe() == "No run is going."
    idle = shown_status(TrainingRunner().status(), tmp_path / "none")
    assert idle.describe() == "No training run yet."
    run_removal(runs, earlier, what_resuming_needs(runs))


def test_a_run_is_deleted_only_from_the_apps_runs_and_only_when_unused(tmp_path):
    from pipeline.methods import stored_runs
    from pipeline.runs import delete_run, run_removal

    runs = tmp_path / "runs"
    run = runs / "run-20260101-000000"
    (run / "model" / "checkpoint-1").mkdir(parents=True)
    (run / "data").mkdir()
    (run / "model" / "train_summary.json").write_text("{}")
    for name, size in (("model.safetensors", 150_000_000), ("checkpoint-1/optimizer.pt", 5e7)):
        with open(run / "model" / name, "wb") as f:  # sparse: the size without the writing
            f.truncate(int(size))
    unfinished = runs / "run-20260102-000000"  # cut off before its first checkpoint
    (unfinished / "model").mkdir(parents=True)
    outside = tmp_path / "run-20260103-000000"  # a finished run, but not in the app's runs
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "train_summary.json").write_text("{}")
    (runs / "run-20260104-000000").symlink_to(outside, target_is_directory=True)

    # whatever a page sends, only the app's own runs may go
    for sent in ("/", str(tmp_path), str(runs), str(outside / "model"), str(runs / "run-x"),
                 str(runs / "run-20260104-000000" / "model"), f"{runs}/../{outside.name}/model",
                 str(run / "model" / "checkpoint-1"), str(run / "data"), ""):  # fmt: skip
        with pytest.raises(UserError, match="not one of this app's runs"):
            delete_run(runs, sent)
    # nor while something stands on it
    in_use = {"Generate writes with its model": str(run / "model"), "it is training now": None}
    with pytest.raises(UserError, match=r"run-20260101-000000 is in use \(Generate writes"):
        delete_run(runs, run / "model", in_use)
    sft = {"iteration it1's titles came from it": str(run / "model" / "sft")}
    with pytest.raises(UserError, match=r"in use \(iteration it1's titles came from it\)"):
        delete_run(runs, run, sft)
    assert (run / "model" / "model.safetensors").is_file() and outside.is_dir()

    asked = run_removal(runs, run / "model", {"Generate writes with its model": "smollm2-offline"})
    assert asked.describe().startswith("Delete **run-20260101-000000** (191 MB: everything the run")
    assert delete_run(runs, run / "model").describe(done=True) == (
        "Deleted **run-20260101-000000**: 191 MB freed."
    )
    assert not run.exists() and unfinished.is_dir() and outside.is_dir()
    # a run with no model is listed (a link into the runs is not) and may go too; one that
    # trains now is listed as such
    listed = stored_runs(runs).choices
    assert listed == [(f"0 B · {unfinished.name}: no model and no checkpoint (its start failed, "
                       "or it was cut off)", str(unfinished))]  # fmt: skip
    listed = stored_runs(runs, training=str(unfinished / "model")).choices
    assert listed == [(f"0 B · {unfinished.name}: training now", str(unfinished))]
    asked = run_removal(runs, unfinished / "model").describe()
    assert asked.endswith("for good?") and "Push" not in asked, asked
    delete_run(runs, unfinished / "model")
    assert (
        not unfinished.exists()
        and outside.is_dir()
        and list(runs.iterdir()) == [runs / "run-20260104-000000"]
    )
