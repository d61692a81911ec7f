"""ZeroGPU entry points on the CPU: durations from the work, and chunked training that ends
where a straight run ends, weight for weight."""

import json
import math
import re
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from hub.cards import model_card
from pipeline import zerogpu
from pipeline.generation import GenerationSettings
from pipeline.gpu_rates import Pace
from pipeline.metrics import read_metrics
from pipeline.recipes import RECIPES
from pipeline.tracking import GLOBAL_STEP, PROJECT, logged_metrics, run_name
from pipeline.training import latest_checkpoint, train_dpo

# batch 4 on 16 pairs, 2 epochs: 8 steps, an evaluation (and best-model choice) every 4
RECIPE = replace(RECIPES["fast"], batch_size=4, epochs=2, learning_rate=1e-2, logging_steps=1)


def test_chunks_of_two_steps_end_with_the_same_weights_as_a_straight_run(
    small_data, tiny_model_dir, tmp_path
):
    straight = train_dpo(small_data, tmp_path / "straight", str(tiny_model_dir), RECIPE)
    assert straight.steps == 8 and straight.finished

    seen = []
    chunked = zerogpu.train_in_chunks(
        small_data, tmp_path / "chunked", str(tiny_model_dir), RECIPE, chunk_steps=2,
        on_chunk=lambda r: seen.append((r.stage, r.steps, r.finished)),
    )  # fmt: skip
    # the first chunk's 2 steps are the SFT stage's
    assert seen == [("sft", 2, False), ("", 2, False), ("", 4, False), ("", 6, False),
                    ("", 8, True)]  # fmt: skip
    assert chunked.steps == straight.steps and chunked.finished
    # a finished run keeps no checkpoint: it has nothing to resume
    assert not [*(tmp_path / "chunked").glob("checkpoint-*")]

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "chunked" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a), "training changed nothing"
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)

    # the logged losses agree step for step, too
    def losses(folder):
        lines = (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}

    assert losses("chunked").keys() == losses("straight").keys()
    for step, loss in losses("straight").items():
        assert losses("chunked")[step] == pytest.approx(loss, rel=1e-5, abs=1e-6)

    # and a chunk's end is no evaluation: only the epochs' ends are (a chunk-end evaluation
    # could win the best-model choice, and the chunked run would keep other weights)
    def evaluations(folder):
        lines = (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["eval_loss"]) for r in map(json.loads, lines) if "eval_loss" in r]

    straight_evals, chunked_evals = evaluations("straight"), evaluations("chunked")
    assert [step for step, _ in straight_evals] == [step for step, _ in chunked_evals] == [4, 8]
    for (_, a), (_, b) in zip(straight_evals, chunked_evals, strict=True):
        assert b == pytest.approx(a, rel=1e-5)


def test_an_sft_stage_longer_than_a_chunk_runs_over_several_and_ends_as_a_straight_one(
    small_data, tiny_model_dir, tmp_path
):
    """The SFT stage ran whole in the first chunk, so its call asked for the whole stage's
    time (404 s for the fast recipe at the estimated pace): now its steps are chunked too."""
    recipe = replace(RECIPE, shared_prompt=False)  # a step per 4 (prompt, chosen) rows
    straight = train_dpo(
        small_data, tmp_path / "straight", str(tiny_model_dir), recipe, max_steps=3
    )
    seen = []
    zerogpu.train_in_chunks(
        small_data, tmp_path / "chunked", str(tiny_model_dir), recipe, max_steps=3,
        chunk_steps=1, on_chunk=lambda r: seen.append((r.stage, r.steps, r.finished)),
    )  # fmt: skip
    # the SFT stage's 3 steps (a limit bounds it too), then DPO's
    assert seen == [("sft", 1, False), ("sft", 2, False), ("sft", 3, False), ("", 1, False),
                    ("", 2, False), ("", 3, True)]  # fmt: skip
    assert straight.steps == 3
    for folder in ("sft", "."):
        a = load_file(tmp_path / "straight" / folder / "model.safetensors")
        b = load_file(tmp_path / "chunked" / folder / "model.safetensors")
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=f"{folder} {key}")
    assert not (tmp_path / "chunked" / "sft-checkpoints").exists()


def test_a_chunk_stops_early_and_leaves_no_final_model(small_data, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    first = train_dpo(small_data, out, str(tiny_model_dir), RECIPE, stop_after=4)
    # a chunk's steps count the SFT stage's (2 here): DPO gets the other 2
    assert (first.steps, first.finished, first.steps_this_call) == (2, False, 2)
    assert not (out / "model.safetensors").exists()
    assert latest_checkpoint(out).name == "checkpoint-2"
    rest = train_dpo(small_data, out, str(tiny_model_dir), RECIPE, stop_after=100, resume=True)
    assert (rest.steps, rest.finished) == (8, True)
    assert (out / "model.safetensors").exists()


def test_a_run_cut_off_while_saving_resumes_from_its_last_complete_checkpoint(
    small_data, tiny_model_dir, tmp_path
):
    """What a kill leaves (a ZeroGPU chunk aborted, the app's process killed): steps trained
    and logged past the last checkpoint, the next checkpoint half-written, a metrics line cut
    off mid-write. The resumed run still ends as a straight run does, each step logged once."""
    straight = tmp_path / "straight"
    train_dpo(small_data, straight, str(tiny_model_dir), RECIPE)
    out = tmp_path / "run"
    train_dpo(small_data, out, str(tiny_model_dir), RECIPE, stop_after=6)  # SFT 2, DPO 4
    cut = out / "checkpoint-6"  # steps 5 and 6 trained and logged, then killed while saving
    shutil.copytree(out / "checkpoint-4", cut)
    (cut / "trainer_state.json").unlink()
    metrics = out / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write(json.dumps({"step": 5, "loss": 9.0}) + "\n" + json.dumps({"step": 6, "loss": 9.0}))
        f.write('\n{"step": 6, "eval_lo')
    assert [r["step"] for r in read_metrics(metrics)][-2:] == [5, 6]  # the cut line is skipped
    assert latest_checkpoint(out).name == "checkpoint-4"
    _log_to_trackio(run_name(out, RECIPE.KIND), {5: 9.0, 6: 9.0})  # so did trackio

    rest = train_dpo(small_data, out, str(tiny_model_dir), RECIPE, stop_after=100, resume=True)
    assert (rest.steps, rest.finished) == (8, True)

    def losses(folder):
        return [
            (r["step"], r["loss"]) for r in read_metrics(folder / "metrics.jsonl") if "loss" in r
        ]

    assert [step for step, _ in losses(out)] == [step for step, _ in losses(straight)]
    for (_, a), (_, b) in zip(losses(straight), losses(out), strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    # trackio's curves too: the steps trained again replace what the cut-off run logged
    assert _trackio_losses(run_name(out, RECIPE.KIND)) == pytest.approx(
        _trackio_losses(run_name(straight, RECIPE.KIND))
    )
    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)


def test_an_sft_stage_cut_off_while_saving_is_done_again(
    small_data, tiny_model_dir, tmp_path, monkeypatch
):
    """A stage killed while writing its weights left a folder that looked done (its config)
    with no weights, so the run's next chunk failed to load it."""
    import transformers.modeling_utils

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    out = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setattr(transformers.modeling_utils, "safe_save_file", killed)
        with pytest.raises(KeyboardInterrupt):
            train_dpo(small_data, out, str(tiny_model_dir), RECIPE, stop_after=2)
    assert not (out / "sft" / "config.json").exists()
    result = train_dpo(small_data, out, str(tiny_model_dir), RECIPE, stop_after=4)
    assert result.steps == 2 and (out / "sft" / "model.safetensors").is_file()
    assert not (out / "sft.partial").exists()


def test_a_chunk_aborted_after_its_sft_stage_carries_on_from_the_stage(
    small_data, tiny_model_dir, tmp_path, monkeypatch
):
    """ZeroGPU kills a first chunk after its SFT stage was saved, before the loop's first
    checkpoint. The chunk is tried again as a resumed run (a new run there is refused, since
    what is there can be carried on): from the stage, which is not trained again."""
    import trl

    out, retries, stage_when_killed = tmp_path / "run", [], []
    original = trl.DPOTrainer.training_step

    def killed_once(self, *args, **kwargs):  # the worker killed in DPO's first step
        monkeypatch.setattr(trl.DPOTrainer, "training_step", original)
        stage_when_killed.append((out / "sft" / "stage_summary.json").read_text())
        raise RuntimeError(f"ZeroGPU worker error: {zerogpu.ABORTED}")

    monkeypatch.setattr(trl.DPOTrainer, "training_step", killed_once)
    result = zerogpu.train_in_chunks(
        small_data, out, str(tiny_model_dir), RECIPE, chunk_steps=4, on_retry=retries.append
    )
    assert result.finished and result.steps == 8 and len(retries) == 1, retries
    assert "trying again" in retries[0]
    # the stage saved before the kill is the run's: not trained again (nor taken as a new run's)
    assert (out / "sft" / "stage_summary.json").read_text() == stage_when_killed[0]


def test_should_stop_ends_between_chunks(small_data, tiny_model_dir, tmp_path):
    result = zerogpu.train_in_chunks(
        small_data, tmp_path / "run", str(tiny_model_dir), RECIPE, chunk_steps=2,
        should_stop=lambda: True,
    )  # fmt: skip
    assert (result.stage, result.steps, result.finished) == ("sft", 2, False)


def test_a_run_stopped_after_a_chunks_last_step_saves_its_model_where_it_stopped(
    small_data, tiny_model_dir, tmp_path
):
    """Stop pressed while a chunk saves its checkpoint, after its last step looked for the stop
    file: one step more, and the run is left as a straight run's Stop leaves it."""
    out = tmp_path / "run"
    chunks = []
    result = zerogpu.train_in_chunks(
        small_data, out, str(tiny_model_dir), RECIPE, chunk_steps=3,  # SFT 2 and DPO 1, then 1
        should_stop=lambda: bool(chunks), on_chunk=chunks.append,
    )  # fmt: skip
    assert [c.model_saved for c in chunks] == [False, True]
    assert (result.steps, result.finished, result.steps_this_call) == (2, False, 1)
    assert (out / "model.safetensors").is_file() and latest_checkpoint(out).name == "checkpoint-2"
    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["steps"], summary["finished"]) == (2, False)
    # its card, if it is pushed, says so, and of the time only what the saving call took
    said = (r"Stopped at optimizer step 2 of 8 \(a part-trained model\), the last 1 step of "
            r"them in \d+ s \(it was resumed, or trained in GPU calls")  # fmt: skip
    assert re.search(said, model_card(summary, [], "alice/m", None, None))
    (out / "stop-requested").unlink()  # as the runner does before it resumes a run
    # a save cut off (a full disk; here a folder where the adapter's weights go) leaves no
    # summary over half-written weights: no list offers the model, and Resume carries on
    blocked = out / "adapter" / "adapter_model.safetensors"
    blocked.unlink()
    blocked.mkdir()
    with pytest.raises(Exception, match="Is a directory"):
        zerogpu.train_in_chunks(
            small_data, out, str(tiny_model_dir), RECIPE, chunk_steps=100, resume=True
        )
    assert not (out / "train_summary.json").exists() and latest_checkpoint(out) is not None
    blocked.rmdir()
    rest = zerogpu.train_in_chunks(
        small_data, out, str(tiny_model_dir), RECIPE, chunk_steps=100, resume=True
    )
    # the cut-off call had trained to the end and kept its last checkpoint: this one saves
    assert (rest.steps, rest.finished, rest.steps_this_call) == (8, True, 0)
    summary = json.loads((out / "train_summary.json").read_text())
    said = "\n8 optimizer steps (resumed from its last checkpoint: how long it trained is not "
    assert said in model_card(summary, [], "alice/m", None, None)


def test_gpu_durations_follow_the_work():
    few = zerogpu.generation_seconds("m", "idea", GenerationSettings(n=2, max_new_tokens=16))
    many = zerogpu.generation_seconds("m", "idea", GenerationSettings(n=20, max_new_tokens=48))
    assert 0 < few < many <= zerogpu.MAX_CALL_SECONDS
    # a chunk's duration grows with its steps and the pace; the steps that fit in one call
    # shrink as the pace slows
    slow, fast = Pace(2.0, 15, "test"), Pace(0.5, 15, "test")
    assert slow.chunk_seconds(10) < slow.chunk_seconds(20)
    assert fast.chunk_seconds(10) < slow.chunk_seconds(10)
    budget = zerogpu.MAX_CALL_SECONDS
    assert fast.chunk_steps(budget) > slow.chunk_steps(budget) >= 1
    assert slow.chunk_seconds(slow.chunk_steps(budget)) <= budget
    assert slow.chunk_seconds(slow.chunk_steps(budget) + 1) > budget
    # the SFT stage's steps come first, at their own pace, and no call asks for more than one
    # call's time however long the stage (it once asked for the whole stage in its first call)
    with_sft = Pace(2.0, 15, "test", sft_step_s=4.0, sft_steps=500)
    assert with_sft.chunk_seconds(10) == 15 + 1.5 * 10 * 4.0
    assert with_sft.chunk_seconds(with_sft.chunk_steps(budget)) <= budget
    assert with_sft.with_sft_left(3).chunk_seconds(10) == 15 + 1.5 * (3 * 4.0 + 7 * 2.0)
    assert with_sft.with_sft_left(0).chunk_steps(budget) == slow.chunk_steps(budget)


def test_generation_asks_for_the_decoding_pace_the_bench_measured(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Generation's GPU calls were sized at the estimated pace even where bench/gpu.py had
    measured one: now its `generate` row's decoding step, with the margin."""
    model, settings = str(tiny_model_dir), GenerationSettings(n=5, max_new_tokens=20)
    estimated = zerogpu.generation_seconds(model, "idea", settings)
    assert estimated == zerogpu.STARTUP_SECONDS + math.ceil(20 * zerogpu.SECONDS_PER_NEW_TOKEN)
    rates = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "generate": {"decode_step_s": 0.5}}}}}  # fmt: skip
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(tmp_path / "rates.json"))
    # one idea: one generate call of 20 decoding steps, each asked for at 1.5 x 0.5 s
    assert zerogpu.generation_seconds(model, "idea", settings) == 15 + 20 * 0.75
    # a round of 30 ideas at 5 titles each: 12 ideas (60 titles) a call, so 3 calls
    assert zerogpu.round_generation_seconds(model, ["idea"] * 30, settings) == 15 + 60 * 0.75


def test_the_held_out_ranking_asks_for_the_reference_pace_the_bench_measured(
    small_data, tiny_model_dir, tmp_path, monkeypatch
):
    """The ranking after a run's last chunk asked for a flat minute: now, where bench/gpu.py
    measured it, each of its three models' load and forward of the held-out pairs at the
    reference pass's pace (the same forward of both titles of every pair)."""
    from pipeline.stages import TrainResult

    result = TrainResult(
        out=str(tmp_path / "run"), model="m", recipe={}, steps=8, train_loss=None,
        eval_loss=None, best_checkpoint=None, seconds=1.0, metrics_file="",
        data=str(small_data), started_from=str(tiny_model_dir),
    )  # fmt: skip
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(tmp_path / "none.json"))
    assert zerogpu.scoring_seconds(result) == zerogpu.SCORING_SECONDS  # nothing measured
    rates = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "dpo:fast": {"step_s": 0.1, "reference_pass_s": 102.0, "call_s": 4.0}}}}}  # fmt: skip
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(tmp_path / "rates.json"))
    # 8 held-out pairs: each model's load at 1.5 x 4 s, its forward at 1.5 x 102 s / 1,020 a pair
    assert zerogpu.scoring_seconds(result) == math.ceil(3 * (6 + 1.5 * 0.1 * 8))
    assert zerogpu.scoring_seconds(replace(result, rows_limit=2)) == math.ceil(3 * (6 + 0.3))
    # a call's start-up not measured: the estimate for each load
    del rates["shapes"]["any"]["rows"]["dpo:fast"]["call_s"]
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    assert zerogpu.scoring_seconds(result) == math.ceil(3 * (zerogpu.STARTUP_SECONDS + 1.2))


def test_judging_asks_for_the_measured_pace_in_calls_that_hold_it(
    tiny_model_dir, tmp_path, monkeypatch
):
    """A judge's pairs are split into GPU calls of as many as one call's time holds at the
    pace bench/gpu.py measured (a slow judge: fewer a call), each asking for what it needs."""
    pairs = [("an idea", f"Title {i}", f"Another title {i}") for i in range(120)]
    judge = zerogpu.JudgeOnGpu(str(tiny_model_dir))
    assert judge.pairs_per_call() == zerogpu.JudgeOnGpu.BATCH  # the estimate: 200 fit
    rates = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "judge": {"judge_pair_s": 1.0}}}}}  # fmt: skip
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(tmp_path / "rates.json"))
    # 1.5 s a pair with the margin: 200 and 100 pairs are more than a call, 50 fit
    assert judge.pairs_per_call() == 50
    assert zerogpu.judging_seconds(str(tiny_model_dir), pairs[:50]) == 15 + 75
    asked, entry_point = [], zerogpu.judge_pairs_on_gpu

    def watched(model_name, chunk):  # the GPU call, seen and made
        asked.append(len(chunk))
        return entry_point(model_name, chunk)

    monkeypatch.setattr(zerogpu, "judge_pairs_on_gpu", watched)
    verdicts = judge.prefer_many(pairs)
    assert asked == [50, 50, 20]
    assert verdicts == entry_point(str(tiny_model_dir), pairs)  # as in one call


def test_generation_entry_point_takes_a_model_name(tiny_model_dir):
    titles = zerogpu.generate_on_gpu(
        str(tiny_model_dir), "intro to python", GenerationSettings(n=2, max_new_tokens=4, seed=1)
    )
    assert len(titles) == 2


def test_round_generation_and_judging_ask_for_time_by_the_work(tiny_model_dir, monkeypatch):
    settings = GenerationSettings(n=1)
    few = zerogpu.round_generation_seconds("m", ["idea"] * 10, settings)
    many = zerogpu.round_generation_seconds("m", ["idea"] * 500, GenerationSettings(n=4))
    assert 0 < few < many <= zerogpu.MAX_CALL_SECONDS
    pairs = [("an idea", f"Title number {i}", f"Another title {i}") for i in range(5)]
    assert zerogpu.judging_seconds("m", pairs[:1]) < zerogpu.judging_seconds("m", pairs * 40)
    # the app's judge answers in GPU calls of a few pairs each, as the judge itself does
    from pipeline.judges import chat_judge

    monkeypatch.setattr(zerogpu.JudgeOnGpu, "BATCH", 2)
    judge = zerogpu.JudgeOnGpu(str(tiny_model_dir))
    assert judge.prefer_many(pairs) == chat_judge(str(tiny_model_dir)).prefer_many(pairs)
    assert judge.prefer(*pairs[0]) in ("A", "B", "tie")


def test_every_gpu_call_of_a_run_carries_the_request_that_started_it(
    tiny_model_dir, tmp_path, monkeypatch
):
    """On a Space, `spaces.GPU` charges a call to the person whose Gradio request it finds in
    a context variable. A run's chunks go on in the runner's thread, after the click that
    started them has returned: each must still see that click's request."""
    import time

    from gradio_client import Client

    import app
    from app_process import free_port
    from ui.tabs import train as train_tab

    seen = []

    def watched(entry_point):
        def call(*args, **kwargs):
            request = zerogpu.gpu_request()  # what spaces.GPU reads at this very moment
            seen.append((entry_point.__name__, request and request.headers.get("x-ip-token")))
            return entry_point(*args, **kwargs)

        return call

    monkeypatch.setattr(train_tab, "ON_ZEROGPU", True)  # it trains in GPU chunks, as on a Space
    # rates that make a step take 100 s: a first chunk of 1 step, then the measured pace
    rates = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "dpo:tutorial": {"step_s": 100.0}}}}}  # fmt: skip
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    monkeypatch.setenv("TITLE_DPO_GPU_RATES", str(tmp_path / "rates.json"))
    monkeypatch.setattr(zerogpu, "train_chunk", watched(zerogpu.train_chunk))
    monkeypatch.setattr(zerogpu, "score_on_gpu", watched(zerogpu.score_on_gpu))
    blocks = app.build_app(str(tiny_model_dir), str(tmp_path / "data"))
    port = free_port()
    app.serve(blocks, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        alice = Client(f"http://127.0.0.1:{port}/", verbose=False, headers={"X-IP-Token": "alice"})
        fields = ["The tutorial's 1,140 labelled pairs", 1, "", str(tiny_model_dir)]
        fields += ["tutorial", 3, 0.1, 1e-6, 8, False, 16, 32, 3]  # the form, 3 steps at most
        alice.predict(*fields, api_name="/train_start")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            progress, *_, log = alice.predict(api_name="/train_status")
            if not progress.startswith(("**running**", "**stopping**")):
                break
            time.sleep(0.3)
    finally:
        blocks.close()
    assert progress.startswith("**done**"), progress
    assert "charged to the person who started the run" in log
    assert "GPU time asked for each chunk: measured on test" in log
    chunks = [token for name, token in seen if name == "train_chunk"]
    assert len(chunks) >= 2, seen  # a run of several chunks, the later ones after the click
    assert seen == [*(("train_chunk", "alice") for _ in chunks), ("score_on_gpu", "alice")]


def test_zerogpu_refusals_are_told_apart_from_errors_inside_a_call():
    """spaces' own errors (spaces/zero/client.py): ZeroGPU refusing a call is the visitor's
    to wait out or resume; an error inside the call is not."""
    from spaces.zero.gradio import error

    quota = error("ZeroGPU quota exceeded", "You have exceeded your ZeroGPU quota (120s ...). ")
    assert zerogpu.zerogpu_refusal(quota).startswith("ZeroGPU quota exceeded: You have")
    queue = error("ZeroGPU queue timeout", "No GPU was available")
    assert zerogpu.zerogpu_refusal(queue) == "ZeroGPU queue timeout: No GPU was available"
    closed = RuntimeError("Connection closed by visitor while queueing")
    assert "page that is open" in zerogpu.zerogpu_refusal(closed)
    assert zerogpu.zerogpu_refusal(error("ZeroGPU worker error", "RuntimeError")) is None
    assert zerogpu.zerogpu_refusal(error("ZeroGPU worker error", zerogpu.ABORTED)) is None
    assert zerogpu.zerogpu_refusal(ValueError("bad shape")) is None


def test_a_refusal_for_asking_too_much_says_how_much_a_call_may_ask_for():
    """spaces' words for a quota that has less left than asked, in its units (which a
    duration factor may scale: 240 of them for our 120 s), and for a call longer than the
    visitor may make; no length for a refusal that is not about length."""
    quota = "ZeroGPU quota exceeded: You have exceeded your free ZeroGPU quota ({}s requested "
    quota += "vs. {}s left). Try again in 0:09:59. "
    assert zerogpu.seconds_allowed(quota.format(120, 90), 120) == 90
    assert zerogpu.seconds_allowed(quota.format(240, 90), 120) == 45
    assert zerogpu.seconds_allowed(quota.format(120, 0), 120) == 0
    illegal = "ZeroGPU illegal duration: The requested GPU duration (120s) is larger than the"
    assert zerogpu.seconds_allowed(f"{illegal} maximum allowed", 120) == 60
    assert zerogpu.seconds_allowed("ZeroGPU queue timeout: No GPU was available", 120) is None
    runs_out = "ZeroGPU quota exceeded: You have exceeded your ZeroGPU runs limit. "
    assert zerogpu.seconds_allowed(runs_out, 120) is None


def test_an_sft_stage_cut_off_after_a_logged_step_logs_it_once(
    small_data, tiny_model_dir, tmp_path
):
    """The SFT stage carries on from its own checkpoint: what its cut-off call logged past
    that goes from trackio as well."""
    recipe, out = replace(RECIPE, shared_prompt=False), tmp_path / "run"
    train_dpo(small_data, out, str(tiny_model_dir), recipe, max_steps=3, stop_after=1)
    run = run_name(out / "sft", "sft")  # (the name is kept with the stage until it ends)
    _log_to_trackio(run, {2: 9.0, 3: 9.0})  # then killed
    # the next chunk, as `train_in_chunks` calls it: resumed
    train_dpo(small_data, out, str(tiny_model_dir), recipe, max_steps=3, stop_after=2, resume=True)
    losses = _trackio_losses(run)
    assert sorted(losses) == [1, 2, 3] and 9.0 not in losses.values(), losses


def _log_to_trackio(run: str, losses: dict[int, float]) -> None:
    """What a training process logs to trackio (through transformers' callback) before it is
    killed: a loss per step, into its run."""
    import trackio

    trackio.init(project=PROJECT, name=run, resume="must")
    for step, loss in losses.items():
        trackio.log({"train/loss": loss, GLOBAL_STEP: step})
    trackio.finish()


def _trackio_losses(run: str) -> dict[int, float]:
    """The training losses trackio holds for a run, by step: each step once, or it fails."""
    logged = [r for r in logged_metrics(run) if "train/loss" in r]
    steps = [r[GLOBAL_STEP] for r in logged]
    assert steps and len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r[GLOBAL_STEP]: r["train/loss"] for r in logged}


def test_a_trackio_database_that_cannot_be_read_keeps_its_records_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    """trackio has no public call that drops records: where its storage is not what the
    pinned release writes, the resumed run goes on, and the log says what stays."""
    from trackio.sqlite_storage import SQLiteStorage

    from pipeline.tracking import claim_run_name, forget_logged_after

    claim_run_name(tmp_path, "dpo")
    not_sqlite = tmp_path / "title-dpo.db"
    not_sqlite.write_bytes(b"not an SQLite database" * 100)
    monkeypatch.setattr(SQLiteStorage, "get_project_db_path", lambda project: not_sqlite)
    assert forget_logged_after(tmp_path, 4) == 0
    assert "trackio keeps what was logged past step 4, which trains again" in caplog.text
