"""The app as it runs on a ZeroGPU Space, driven over HTTP: every GPU call in a forked worker
with its arguments and result pickled, an exception coming back as ZeroGPU returns it, and
Gradio's queue set up as on ZeroGPU. tests/zerogpu_site emulates what `spaces` and Gradio do
there (the real runtime needs CUDA); each call it ran is in its log."""

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from app_process import start_app, stop_app
from conftest import create_round_in_app

SITE = Path(__file__).resolve().parent / "zerogpu_site"
GPU_START_SECONDS = 3  # a ZeroGPU call waits seconds for its GPU and worker


@pytest.fixture(scope="module")
def space(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("space")
    gpu_log = folder / "gpu-calls.jsonl"
    # rates that plan 100 s a step: the first chunk is 1 step, the rest at the measured pace
    rates = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "dpo:tutorial": {"step_s": 100.0}}}}}  # fmt: skip
    (folder / "rates.json").write_text(json.dumps(rates))
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])),
        "ZEROGPU_EMULATOR_LOG": str(gpu_log),
        "ZEROGPU_EMULATOR_START_SECONDS": str(GPU_START_SECONDS),
        "TITLE_DPO_GPU_RATES": str(folder / "rates.json"),
        "ZEROGPU_EMULATOR_ABORT": str(folder / "abort"),
        "ZEROGPU_EMULATOR_QUOTA": str(folder / "quota"),
        "ZEROGPU_EMULATOR_HOLD": str(folder / "hold"),
    }
    process, url = start_app(
        "--model",
        str(tiny_model_dir),
        "--data",
        str(folder / "data"),
        log_path=folder / "app.log",
        env=env,
    )

    def gpu_calls(task: str) -> list[dict]:
        lines = gpu_log.read_text().splitlines() if gpu_log.exists() else []
        return [call for call in map(json.loads, lines) if call["task"] == task]

    yield SimpleNamespace(
        url=url, gpu_calls=gpu_calls, log=folder / "app.log", rates=folder / "rates.json",
        data=folder / "data", abort=lambda task: (folder / "abort").write_text(task),
        quota=folder / "quota", hold=folder / "hold",
    )  # fmt: skip
    stop_app(process)


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


TUTORIAL = ["tutorial", 3, 0.1, 1e-6, 8, False, 16, 32]  # the Train tab's form, as shipped
FAST = ["fast", 1, 0.5, 5e-5, 8, True, 16, 32]


def _start(client, model: str, steps: int, resume: bool = False, form=TUTORIAL) -> None:
    """Start (or resume) a DPO run of the tutorial recipe (or the `form` given), `steps` steps
    at most, from the Train tab."""
    recipe = [*form, steps]
    if resume:
        client.predict(model, *recipe, api_name="/train_resume")
    else:
        data = ["The tutorial's 1,140 labelled pairs", 1, "", model]
        client.predict(*data, *recipe, api_name="/train_start")


def _train(client, model: str) -> tuple[str, str]:
    """A DPO run of 3 steps at most from the Train tab's form; its last status and log."""
    _start(client, model, 3)
    return _ended(client)


def _ended(client, seconds: float = 240) -> tuple[str, str]:
    """The last status and log of the run going now, once it has ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        progress, *_, log = client.predict(api_name="/train_status")
        if not progress.startswith(("**running**", "**stopping**")):
            return progress, log
        time.sleep(0.5)
    raise AssertionError(f"the run did not end in {seconds} s: {progress}")


def _new_metrics_file(space, runs_before: set[Path], deadline: float) -> Path:
    """The metrics file of the run started after `runs_before` were there, once it exists."""
    while True:
        new = set(space.data.glob("runs/run-*")) - runs_before
        found = [m for run in new for m in run.glob("model/metrics.jsonl")]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "the run did not start training"
        time.sleep(0.1)


def test_titles_come_from_a_gpu_worker(space, tiny_model_dir):
    table, _raw, status, _added = _client(space.url).predict(
        "Multimodal RAG", 2, 0.7, api_name="/generate"
    )
    assert len(table["data"]) == 2 and str(tiny_model_dir) in status
    (call,) = space.gpu_calls("generate_on_gpu")
    assert call["outcome"] == "ok" and call["seconds"] > 0


def test_visitors_opening_the_link_while_others_wait_are_served(space):
    """Gradio lets one event wait in the queue on ZeroGPU unless the app says otherwise: with
    the owner's second generation waiting for the first, every page opened then was refused
    "Queue is full"."""
    from gradio_client.utils import Status

    visitors = [_client(space.url) for _ in range(12)]
    owner = _client(space.url)
    space.hold.touch()  # the GPU call runs until the pages have been served, however slowly
    try:
        # two generations, one at a time: one runs, the other waits (whichever came first runs)
        events = [owner.submit(idea, 1, 0.7, api_name="/generate") for idea in ("one", "two")]
        deadline = time.monotonic() + 60
        while {e.status().code for e in events} != {Status.PROCESSING, Status.IN_QUEUE}:
            for event in events:
                if event.done():
                    event.result()  # it was refused: this raises why
            assert time.monotonic() < deadline, [e.status() for e in events]
            time.sleep(0.05)
        (running,) = [e for e in events if e.status().code == Status.PROCESSING]
        with ThreadPoolExecutor(6) as pool:
            roles = list(pool.map(lambda c: c.predict(None, api_name="/my_role"), visitors))
        assert not running.done() and {e.status().code for e in events} == {
            Status.PROCESSING, Status.IN_QUEUE
        }  # fmt: skip
    finally:
        space.hold.unlink()
    assert len(roles) == 12 and all(roles)
    [event.result() for event in events]


def test_a_mistake_inside_a_gpu_call_reaches_the_owner_in_words(space, tiny_model_dir):
    """ZeroGPU passes back only a gr.Error's message; a UserError raised in the worker came
    back as "UserError" ("training failed: 'UserError'")."""
    owner = _client(space.url)
    with pytest.raises(Exception, match="is not a finished reward model run"):
        owner.predict("Multimodal RAG", 2, 0.7, str(tiny_model_dir), api_name="/best_of_n")
    assert space.gpu_calls("best_of_n_on_gpu"), "refused before the GPU call: not this test"
    progress, log = _train(owner, "./no/such/model")
    assert progress.startswith("**failed**"), progress
    assert "model folder './no/such/model' does not exist" in progress
    assert space.gpu_calls("train_chunk"), "refused before the GPU call: not this test"
    assert "Traceback" not in log and "UserError" not in space.log.read_text()


@pytest.fixture(scope="module")
def broken_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model cut to 64 embeddings for its 600-token vocabulary: it loads, and its
    first forward raises IndexError (a broken model or a bug: no mistake a user could fix)."""
    import shutil

    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("broken") / "broken-qwen2"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(64)
    model.save_pretrained(folder)
    return folder


def test_an_error_inside_a_gpu_call_reaches_the_owner_in_its_own_words(
    space, tiny_model_dir, broken_model
):
    """Of any other exception in the worker ZeroGPU passes back its class name only: a round
    failed with "IndexError", a run with "training failed: IndexError"."""
    owner = _client(space.url)
    with pytest.raises(Exception, match="inside the GPU call: IndexError: index out of range"):
        create_round_in_app(owner, [tiny_model_dir, broken_model], ["Multimodal RAG"],
                            "broken round", stages=False)  # fmt: skip
    assert space.gpu_calls("generate_round_on_gpu")[-1]["outcome"] == "IndexError"

    progress, log = _train(owner, str(broken_model))
    assert progress.startswith("**failed**"), progress
    assert "inside the GPU call: IndexError: index out of range in self" in progress
    assert space.gpu_calls("train_chunk")[-1]["outcome"] == "IndexError"
    # the log shows where it was raised, in the worker, not where spaces raised it again
    assert "in forward" in log and "ZeroGPU worker error" not in log


def test_a_run_trains_in_gpu_chunks_and_generate_uses_it(space, tiny_model_dir):
    """Each chunk, and the scoring after them, is a GPU call charged to whoever pressed Start
    (the ZeroGPU token the Space's proxy adds to their requests)."""
    from gradio_client import Client

    owner = Client(space.url, verbose=False, headers={"X-IP-Token": "alice"})
    chunks_before = len(space.gpu_calls("train_chunk"))
    progress, _log = _train(owner, str(tiny_model_dir))
    assert progress.startswith("**done**"), progress
    chunks = space.gpu_calls("train_chunk")[chunks_before:]
    assert len(chunks) >= 2 and all(c["outcome"] == "ok" for c in chunks), chunks
    # the last chunk asks for the time of the steps left, at the measured pace, not a full call
    assert chunks[-1]["seconds"] < 30, chunks
    (scored,) = space.gpu_calls("score_on_gpu")
    assert scored["outcome"] == "ok"
    assert {c["ip_token"] for c in [*chunks, scored]} == {"alice"}
    used = owner.predict(api_name="/use_trained_model")
    *_, status, _added = owner.predict("Multimodal RAG", 2, 0.7, api_name="/generate")
    assert used.removeprefix("Generate now uses ") in status, (used, status)


def test_stop_reaches_a_chunk_training_in_a_gpu_worker(space, tiny_model_dir):
    """The chunk runs in another process, out of reach of the app's memory: Stop still ends
    it at its next step, not when the chunk would have ended, with the model saved there: the
    Hub tab lists the stopped run, as it lists one stopped outside a Space."""
    planned = space.rates.read_text()
    fast = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "dpo:tutorial": {"step_s": 0.001}}}}}  # fmt: skip
    space.rates.write_text(json.dumps(fast))  # read at each start: one chunk of all 300 steps
    owner = _client(space.url)
    try:
        runs_before = set(space.data.glob("runs/run-*"))
        _start(owner, str(tiny_model_dir), 300)
        deadline = time.monotonic() + 120
        metrics = _new_metrics_file(space, runs_before, deadline)
        owner.predict(api_name="/train_stop")
        while (status := owner.predict(api_name="/train_status"))[0].startswith(
            ("**running**", "**stopping**")
        ):
            assert time.monotonic() < deadline + 60, status[0]
            time.sleep(0.2)
    finally:
        space.rates.write_text(planned)
    progress, log = status[0], status[-1]
    assert progress.startswith("**stopped**"), progress
    assert "chunk done: step 300/300" not in log and "chunk done: step " in log, log[-500:]
    runs, _ = owner.predict(api_name="/hub_status")
    assert runs["value"] == str(metrics.parent), runs
    assert runs["choices"][0][0].endswith(" of 300 steps"), runs


def test_a_chunk_that_zerogpu_aborts_is_trained_again_from_its_checkpoint(space, tiny_model_dir):
    """ZeroGPU kills a call's worker when the call outlives its duration (or takes the GPU
    back): here in the middle of a chunk. The run carries on by itself from its last complete
    checkpoint, and its charts hold each step once."""
    from pipeline.metrics import read_metrics
    from pipeline.tracking import GLOBAL_STEP, logged_metrics, run_name

    owner = _client(space.url)
    runs_before = set(space.data.glob("runs/run-*"))
    chunks_before = len(space.gpu_calls("train_chunk"))
    _start(owner, str(tiny_model_dir), 100)  # chunks: 1 step (as planned), then the rest
    metrics = _new_metrics_file(space, runs_before, time.monotonic() + 120)
    while not [r for r in read_metrics(metrics) if r["step"] >= 25]:  # the second chunk's
        time.sleep(0.05)
    space.abort("train_chunk")
    progress, log = _ended(owner)
    assert progress.startswith("**done**") and "Done: 100 steps" in progress, progress
    outcomes = [c["outcome"] for c in space.gpu_calls("train_chunk")[chunks_before:]]
    assert outcomes[:2] == ["ok", "aborted"] and outcomes[2:] == ["ok"] * len(outcomes[2:])
    aborted = r"ZeroGPU aborted the chunk of \d+ steps .*: trying again from step \d+ with"
    assert re.search(aborted, log), log[-800:]
    logged = [r["step"] for r in read_metrics(metrics) if "loss" in r]
    assert logged == list(range(10, 101, 10)), logged  # every 10th step (of 100), once
    tracked = logged_metrics(run_name(metrics.parent, "dpo"))
    tracked = [r[GLOBAL_STEP] for r in tracked if "train/loss" in r]
    assert tracked == logged, tracked  # and trackio's curves the same


def test_a_run_that_spends_the_zerogpu_quota_ends_saying_where_resume_carries_on(
    space, tiny_model_dir
):
    """ZeroGPU refuses a call once the visitor's quota is spent: the run ends in ZeroGPU's
    words and where Resume carries on (it read "training failed" with a traceback), and Resume
    does once the quota is back. A refused ranking leaves the run done, unranked."""
    owner = _client(space.url)
    chunks_before = len(space.gpu_calls("train_chunk"))
    space.quota.write_text("train_chunk 1")  # one more chunk, then the quota is spent
    try:
        _start(owner, str(tiny_model_dir), 20)
        progress, log = _ended(owner)
    finally:
        space.quota.unlink()
    assert progress.startswith("**failed**"), progress
    assert "You have exceeded your free ZeroGPU quota (" in progress, progress
    assert "last checkpoint is at step 1: Resume carries on from there" in progress, progress
    assert "Traceback" not in log, log[-800:]

    space.quota.write_text("score_on_gpu 0")  # the chunks run; the ranking after them cannot
    try:
        _start(owner, str(tiny_model_dir), 20, resume=True)
        progress, log = _ended(owner)
    finally:
        space.quota.unlink()
    assert progress.startswith("**done**") and "Done: 20 steps" in progress, progress
    assert "the held-out pairs were not ranked: ZeroGPU quota exceeded" in log, log[-800:]
    outcomes = [c["outcome"] for c in space.gpu_calls("train_chunk")[chunks_before:]]
    assert outcomes[:2] == ["ok", "quota exceeded"] and set(outcomes[2:]) == {"ok"}, outcomes


def _fast_run_at_20_s_a_step(space, model, steps: int) -> tuple[list[dict], str, str]:
    """A fast-recipe run of `steps` steps from the Train tab, planned at 20 s a step (3 steps,
    105 s, a chunk until a chunk is measured): its chunks' GPU calls, last status and log."""
    planned = space.rates.read_text()
    paced = {"device": "test", "shapes": {"any": {"params": 10**9, "rows": {
        "dpo:fast": {"step_s": 20.0, "sft_step_s": 20.0}}}}}  # fmt: skip
    space.rates.write_text(json.dumps(paced))
    owner = _client(space.url)
    chunks_before = len(space.gpu_calls("train_chunk"))
    try:
        _start(owner, str(model), steps, form=FAST)
        progress, log = _ended(owner)
    finally:
        space.rates.write_text(planned)
    return space.gpu_calls("train_chunk")[chunks_before:], progress, log


def test_the_sft_stage_of_a_run_trains_in_chunks_too(space, tiny_model_dir):
    """The fast recipe's SFT stage ran whole in the first chunk, whose call asked for the whole
    stage's time (404 s at the estimated pace), more than a call may ask for."""
    chunks, progress, log = _fast_run_at_20_s_a_step(space, tiny_model_dir, 6)
    assert progress.startswith("**done**") and "Done: 6 steps" in progress, progress
    assert "chunk done: SFT stage 3/" in log, log[-800:]
    assert chunks[0]["seconds"] == 15 + 1.5 * 3 * 20, chunks
    assert all(c["seconds"] <= 120 and c["outcome"] == "ok" for c in chunks), chunks


def test_a_chunk_asking_more_than_the_quota_left_is_asked_again_to_fit_it(space, tiny_model_dir):
    """A run ended when its chunk asked for more than the visitor's quota had left, the rest
    unspent; now the chunk is asked again as one that fits, and the run ends only when not one
    step's chunk does."""
    space.quota.write_text("train_chunk 0 60")  # 60 s left: one 45 s chunk of 1 step fits
    try:
        chunks, progress, log = _fast_run_at_20_s_a_step(space, tiny_model_dir, 6)
    finally:
        space.quota.unlink()
    calls = [(c["seconds"], c["outcome"]) for c in chunks]
    assert calls[:2] == [(105, "quota exceeded"), (45, "ok")], calls
    # 15 s left, and a chunk of one step asks for the call's 15 s start-up and that step
    assert len(calls) == 3 and calls[2][1] == "quota exceeded", calls
    assert "quota exceeded for a chunk of 105 s: asking for chunks of at most 60 s" in log, log
    assert progress.startswith("**failed**") and "15s left" in progress, progress
    assert "at step 1 of its SFT stage: Resume carries on from there" in progress, progress
