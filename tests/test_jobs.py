"""Training on Hugging Face Jobs (`python -m hub train-on-jobs`, `hub jobs ...`) against the
loopback Hub, whose Jobs run the submitted script as a local process (tests/hub_jobs.py): the
job fetches this project's code from the Hub, pulls the dataset, trains the tiny model with the
same CLI as a local run, and pushes it; `from_pretrained` loads it back. The request is
checked (flavor, timeout, command, the token as a secret and nowhere else), and every way a
job can be refused or end badly gives one line."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import textwrap

import pytest

from hub_server import DEFAULT_TOKENS, hub_env, run_python, session_cookie, space_env
from hub_server import hub_cli as run_hub_cli
from pipeline.methods import METHODS
from pipeline.metrics import metrics_from_lines
from pipeline.recipes import RECIPES, form_values, get_recipe

WRITE, READ, BOB = "hf_alice_write", "hf_alice_read", "hf_bob_write"
SIGNED_IN = "hf_alice_oauth"  # what alice's sign-in on her Space gives the app
TOKENS = (WRITE, READ, BOB, SIGNED_IN)


@pytest.fixture
def hub_tokens():  # conftest's `hub` serves these users
    return {**DEFAULT_TOKENS, SIGNED_IN: ("alice", "write")}


def hub_cli(hub, tmp_path, *args: str, token: str | None = WRITE) -> subprocess.CompletedProcess:
    """`python -m hub ARGS` as the user runs it, with `token` as HF_TOKEN."""
    return run_hub_cli(hub, tmp_path / "cli-cache", *args, token=token)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a refused command ends with (and no traceback before it)."""
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr[-3000:]
    return line


@pytest.fixture
def jobs_hub(hub, tiny_model_dir, small_data):
    """The loopback Hub with alice's tiny chat model and her preference dataset: the files
    `python -m hub push-dataset` would push (its plan), committed straight to the repo."""
    from hub.push import dataset_plan

    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    hub.seed_repo("model", "alice/tiny-chat", files)
    dataset = {}
    for upload in dataset_plan(small_data, "alice/titles").uploads("alice/titles"):
        content = upload.content
        dataset[upload.path_in_repo] = (
            content if isinstance(content, bytes) else content.read_bytes()
        )
    hub.seed_repo("dataset", "alice/titles", dataset)
    return hub


TRAIN = ("train-on-jobs", "--data", "alice/titles", "--model", "alice/tiny-chat")


def submit(hub, tmp_path, *args: str) -> str:
    done = hub_cli(hub, tmp_path, *TRAIN, "--json", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["job_id"]


def log_of(hub, job_id: str) -> list[str]:
    return [line for _, line in hub.jobs.jobs[job_id].events]


def test_a_job_trains_the_model_and_pushes_it_in_one_commit(jobs_hub, tmp_path, tiny_model_dir):
    hub = jobs_hub
    job_id = submit(
        hub, tmp_path, "--push-to", "tuned", "--flavor", "cpu-basic", "--timeout", "20m",
        "--max-steps", "2", "--push-sft-to", "tuned-sft",
    )  # fmt: skip
    job = hub.jobs.wait(job_id)
    log = log_of(hub, job_id)
    assert job.stage == "COMPLETED", "\n".join(log[-40:])

    # what the client asked the Hub for
    (spec,) = hub.jobs.requests
    assert spec["flavor"] == "cpu-basic"
    assert spec["timeoutSeconds"] == 20 * 60
    assert spec["command"][:2] == ["bash", "-c"]
    script = spec["command"][2]
    assert "python -m pipeline train --data ../run/data --out ../run/model" in script
    assert "accelerate" not in script  # one GPU (here none): no launcher
    assert spec["secrets"] == {"HF_TOKEN": WRITE}  # the token goes as a secret...
    shown = json.dumps({k: v for k, v in spec.items() if k != "secrets"})
    assert not any(token in shown for token in TOKENS)  # ...and nowhere else
    assert spec["environment"]["TITLE_DPO_PUSH_TO"] == "alice/tuned"
    assert spec["labels"] == {"app": "title-dpo", "method": "dpo", "name": spec["labels"]["name"]}
    # the job's code is this project's, uploaded to the owner's private code repo
    assert hub.is_private("dataset", "alice/title-dpo-job-code")

    # its log: each stage, the training curves, never a token
    assert not any(token in line for line in log for token in TOKENS)
    for stage in ("== pulling the dataset", "== training", "== pushing the model", "== done"):
        assert stage in log
    assert not any("%|" in line for line in log), "\n".join(log)  # no progress bars
    metrics = metrics_from_lines(log)
    assert any("loss" in m for m in metrics) and any("eval_loss" in m for m in metrics)

    # the model repo: one commit with the weights and the card, loaded back by transformers
    commits = hub.commits("model", "alice/tuned")
    assert len(commits) == 2, [c["title"] for c in commits]  # the repo's creation, the push
    files = hub.repo_files("model", "alice/tuned")
    assert {"model.safetensors", "config.json", "README.md"} <= set(files)
    assert "alice/titles" in files["README.md"].decode()
    env = hub_env(hub, WRITE, cache_dir=tmp_path / "reader")
    code = textwrap.dedent("""
        import json
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained("alice/tuned")
        print(json.dumps(sum(p.numel() for p in model.parameters())))
    """)
    loaded = run_python(code, env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    from transformers import AutoModelForCausalLM

    tiny = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert json.loads(loaded.stdout) == sum(p.numel() for p in tiny.parameters())

    # following it from the command line
    status = hub_cli(hub, tmp_path, "jobs", "status", job_id)
    assert status.returncode == 0, status.stderr[-2000:]
    assert f"job {job_id} completed" in status.stdout and "alice/tuned" in status.stdout
    logs = hub_cli(hub, tmp_path, "jobs", "logs", job_id, "--tail", "1")
    assert logs.stdout.strip() == "== done"
    followed = hub_cli(hub, tmp_path, "jobs", "logs", job_id, "--follow")
    assert followed.returncode == 0, followed.stderr[-2000:]
    lines = followed.stdout.strip().splitlines()
    assert lines[:1] == log[1:2] and "== done" in lines  # the whole log, then how it ended
    assert lines[-1].startswith(f"job {job_id} completed")

    # its SFT stage went up too, as a model of its own: its disk is gone now
    assert "== pushing its SFT stage" in log
    stage = hub.repo_files("model", "alice/tuned-sft")
    assert {"model.safetensors", "config.json"} <= set(stage)
    assert json.loads(stage["training_summary.json"])["stage"] == "sft"
    assert "It is the SFT stage of a title-dpo run" in stage["README.md"].decode()


def test_a_job_runs_in_and_pushes_to_an_organisation_its_user_belongs_to(jobs_hub, tmp_path):
    """`--namespace ORG`: the job is the organisation's (billed to it), and so are its code
    repo and a bare --push-to name; the job is named ORG/ID from then on."""
    hub = jobs_hub
    hub.orgs["acme"] = {"alice"}
    job = (*TRAIN, "--push-to", "org-tuned", "--flavor", "cpu-basic", "--timeout", "20m",
           "--max-steps", "1", "--namespace", "acme")  # fmt: skip
    line = error_line(hub_cli(hub, tmp_path, *job, token=BOB))  # bob is not in acme
    assert "bob is not a member of it" in line
    assert hub.jobs.requests == []

    done = hub_cli(hub, tmp_path, *job, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    submitted = json.loads(done.stdout)
    assert submitted["namespace"] == "acme" and submitted["push_to"] == "acme/org-tuned"
    job_id = submitted["job_id"]
    assert hub.jobs.wait(job_id).stage == "COMPLETED", "\n".join(log_of(hub, job_id)[-40:])
    assert hub.jobs.jobs[job_id].namespace == "acme"
    assert hub.is_private("dataset", "acme/title-dpo-job-code")
    assert not hub.repo_exists("dataset", "alice/title-dpo-job-code")
    assert "model.safetensors" in hub.repo_files("model", "acme/org-tuned")

    status = hub_cli(hub, tmp_path, "jobs", "status", f"acme/{job_id}")
    assert status.returncode == 0, status.stderr[-2000:]
    assert status.stdout.startswith(f"job acme/{job_id} completed")
    assert "acme/org-tuned" in status.stdout
    listed = hub_cli(hub, tmp_path, "jobs", "list", "--namespace", "acme")
    assert listed.stdout.startswith(f"job acme/{job_id} completed"), listed.stderr[-2000:]
    own = hub_cli(hub, tmp_path, "jobs", "list")
    assert own.stdout.strip() == "no jobs of this project here yet", own.stderr[-2000:]
    line = error_line(hub_cli(hub, tmp_path, "jobs", "status", job_id))  # not alice's own
    assert f"no job {job_id!r} here" in line and "ORG/ID" in line
    line = error_line(hub_cli(hub, tmp_path, "jobs", "status", f"acme/{job_id}", token=BOB))
    assert "bob cannot use the jobs of 'acme'" in line
    line = error_line(hub_cli(hub, tmp_path, "jobs", "cancel", f"acme/../alice/{job_id}"))
    assert "is not a job id (ID, or ORG/ID" in line


def test_dry_run_shows_the_job_and_its_cost_and_sends_nothing(jobs_hub, tmp_path):
    from hub.jobs import flavors

    hub = jobs_hub
    before = len(hub.request_log)
    done = hub_cli(
        hub, tmp_path, *TRAIN, "--push-to", "alice/tuned", "--flavor", "a10g-largex2",
        "--timeout", "90m", "--set", "epochs=2", "--set", "lora_r=none", "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # the recipe's changes travel as the training CLI's own flags
    assert "pipeline train --data ../run/data" in out
    assert "--recipe fast --epochs 2.0 --lora-r 0" in out
    assert len(hub.request_log) == before  # nothing went to the Hub
    assert hub.jobs.requests == []
    assert "image:    pytorch/pytorch:" in out
    assert "flavor:   a10g-largex2" in out and "timeout:  1.5 h" in out
    assert "secrets:  HF_TOKEN (values are never shown)" in out
    # two GPUs: the training command runs under accelerate launch, one process per GPU
    assert "--config_file configs/accelerate/multi_gpu.yaml --num_processes 2" in out
    price = flavors()["a10g-largex2"].usd_per_hour
    assert f"at most ${price * 1.5:.2f} (1.5 h on a10g-largex2 at ${price:.2f}/h" in out


def test_what_cannot_run_is_refused_before_any_job_starts(jobs_hub, tmp_path):
    hub = jobs_hub
    job = (*TRAIN, "--push-to", "tuned", "--timeout", "10m")
    line = error_line(hub_cli(hub, tmp_path, *job, "--flavor", "h200x8"))
    assert "refused to run on h200x8" in line and "pick another --flavor" in line
    line = error_line(hub_cli(hub, tmp_path, *job, "--flavor", "cpu-basic", token="hf_expired"))
    assert "refused the Hugging Face token" in line
    line = error_line(hub_cli(hub, tmp_path, *job, "--flavor", "cpu-basic", token=READ))
    assert "can only read" in line
    nowhere = (*job[:2], "alice/nothing", *job[3:])
    line = error_line(hub_cli(hub, tmp_path, *nowhere, "--flavor", "cpu-basic"))
    assert "no dataset 'alice/nothing'" in line
    line = error_line(hub_cli(hub, tmp_path, *job, "--flavor", "t4-mega"))
    assert "unknown Jobs flavor 't4-mega'" in line
    line = error_line(hub_cli(hub, tmp_path, *job, "--flavor", "cpu-basic", "--set", "epoch=2"))
    assert "unknown recipe key(s) epoch" in line
    line = error_line(hub_cli(hub, tmp_path, *job, "--recipe", "tutorial", "--push-sft-to", "s"))
    assert "the tutorial recipe has no SFT stage to push" in line
    line = error_line(hub_cli(hub, tmp_path, *job, "--push-sft-to", "tuned"))
    assert "the SFT stage needs a repo of its own" in line
    assert hub.jobs.jobs == {}  # only the refused flavor reached the Jobs API at all
    assert [r["flavor"] for r in hub.jobs.requests] == ["h200x8"]


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def test_a_failed_a_timed_out_and_a_cancelled_job_each_end_in_one_line(jobs_hub, tmp_path):
    hub = jobs_hub
    # a dataset that is there but holds no preference pairs: the job fails while pulling it
    rows = [{"prompt": "an idea", "chosen": "A title"}] * 4
    hub.seed_repo(
        "dataset", "alice/not-pairs", {"data/train-00000-of-00001.parquet": _parquet(rows)}
    )
    failing = ("train-on-jobs", "--data", "alice/not-pairs", "--model", "alice/tiny-chat")
    done = hub_cli(hub, tmp_path, *failing, "--push-to", "never", "--flavor", "cpu-basic", "--json")
    failed = json.loads(done.stdout)["job_id"]
    assert hub.jobs.wait(failed).stage == "ERROR"
    status = hub_cli(hub, tmp_path, "jobs", "status", failed)
    assert status.returncode == 0
    (line,) = status.stdout.strip().splitlines()
    assert f"job {failed} failed" in line and "is not a preference dataset" in line
    assert "nothing was pushed to alice/never" in line
    assert not hub.repo_exists("model", "alice/never")

    # a job past its timeout (the test Hub's clock runs a minute in a second)
    hub.jobs.timeout_scale = 1 / 60
    timed_out = submit(
        hub, tmp_path, "--push-to", "never", "--flavor", "cpu-basic", "--timeout", "1m"
    )
    assert hub.jobs.wait(timed_out).stage == "ERROR"
    line = hub_cli(hub, tmp_path, "jobs", "status", timed_out).stdout.strip()
    assert "ran past its 1 min timeout" in line and "longer --timeout" in line

    # a job cancelled while it runs
    hub.jobs.timeout_scale = 1
    cancelled = submit(hub, tmp_path, "--push-to", "never", "--flavor", "cpu-basic")
    done = hub_cli(hub, tmp_path, "jobs", "cancel", cancelled)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"job {cancelled} was cancelled" in done.stdout
    assert hub.jobs.wait(cancelled).stage == "CANCELED"
    line = error_line(hub_cli(hub, tmp_path, "jobs", "cancel", cancelled))
    assert "has already ended (canceled)" in line
    assert not hub.repo_exists("model", "alice/never")

    # someone else's job, or no such job, is not found for alice; bob cannot see alice's
    line = error_line(hub_cli(hub, tmp_path, "jobs", "status", cancelled, token=BOB))
    assert f"no job {cancelled!r}" in line


def tab_job(push_to: str) -> list:
    """What the Train tab sends for a job: Method, Base model, step limit; dataset, repo,
    hardware, timeout, reward, private, namespace, the SFT stage's repo; then each method's
    recipe and form as the tab shows them."""
    job = ["DPO", "alice/tiny-chat", 2, "alice/titles", push_to, "cpu-basic", "20m", "", False,
           "", ""]  # fmt: skip
    for method in METHODS.values():
        recipe = get_recipe(None, method.recipe)
        job += [recipe.name, *form_values(recipe)]
    return job


def test_the_train_tab_runs_a_job_follows_it_and_generates_with_its_model(
    jobs_hub, tmp_path, tiny_model_dir
):
    from gradio_client import Client

    from app_process import start_app, stop_app

    hub = jobs_hub
    env = {**hub_env(hub, WRITE, cache_dir=tmp_path / "app-cache"), "HF_HUB_OFFLINE": "0"}
    process, url = start_app("--model", str(tiny_model_dir), "--data", str(tmp_path / "data"),
                             log_path=tmp_path / "app.log", env=env)  # fmt: skip
    job = tab_job("ui-tuned")
    beta = job.index(RECIPES["fast"].beta, 12)  # the DPO form's beta: the first form's second
    assert beta == 13
    job[beta] = 0.3
    try:
        c = Client(url, verbose=False)
        shown = c.predict(*job, api_name="/jobs_preview")
        assert "flavor:   cpu-basic" in shown and "secrets:  HF_TOKEN" in shown
        assert "pipeline train " in shown and " --recipe fast --beta 0.3" in shown
        assert hub.jobs.requests == []  # showing it sent nothing

        job_id, state, _, _, _ = c.predict(*job, api_name="/jobs_submit")
        assert job_id in hub.jobs.jobs and job_id in state
        hub.jobs.wait(job_id)
        same_id, state, chart, log, _ = c.predict(job_id, api_name="/jobs_status")
        assert same_id == job_id
        assert state.startswith(f"job {job_id} completed") and "alice/ui-tuned" in state
        assert log.splitlines()[-1] == "== done" and "metrics {" not in log
        assert {row[2] for row in chart["data"]} >= {"train loss", "eval loss"}
        trained = json.loads(hub.repo_files("model", "alice/ui-tuned")["training_summary.json"])
        asked = {**dataclasses.asdict(RECIPES["fast"]), "beta": 0.3}
        assert trained["recipe"] == json.loads(json.dumps(asked))

        # the pushed model, put to use on the Generate tab, writes titles: the repo's commit
        # then, which a later push to the same repo does not change under it
        first = hub.commits("model", "alice/ui-tuned")[-1]["oid"]
        used = c.predict(job_id, api_name="/jobs_use_model")
        assert used == f"Generate now uses alice/ui-tuned at commit {first[:12]}"
        first_titles, *_ = c.predict("an idea", 2, 0.0, api_name="/generate")
        assert len(first_titles["data"]) == 2
        status = c.predict(api_name="/model_status")
        assert status == f"Model: alice/ui-tuned at commit {first[:12]} on cpu"

        # the next job pushes other weights to the same repo; used, they are what generates
        # (the app had loaded "alice/ui-tuned" once, and went on writing the first job's titles)
        job[beta], job[beta + 1] = 0.1, 1e-2  # another beta and a learning rate that shows
        again, *_ = c.predict(*job, api_name="/jobs_submit")
        hub.jobs.wait(again)
        c.predict(again, api_name="/jobs_status")
        second = hub.commits("model", "alice/ui-tuned")[-1]["oid"]
        assert second != first
        used = c.predict(again, api_name="/jobs_use_model")
        assert used == f"Generate now uses alice/ui-tuned at commit {second[:12]}"
        status = c.predict(api_name="/model_status")
        assert status == f"Model: alice/ui-tuned at commit {second[:12]} on cpu"
        second_titles, *_ = c.predict("an idea", 2, 0.0, api_name="/generate")
        assert second_titles["data"] != first_titles["data"]

        # a second job, cancelled from the tab: nothing to use
        job[4] = "ui-never"
        second, *_ = c.predict(*job, api_name="/jobs_submit")
        _, state, *_ = c.predict(second, api_name="/jobs_cancel")
        assert state.startswith(f"job {second} was cancelled")
        with pytest.raises(Exception, match="no pushed model yet"):
            c.predict(second, api_name="/jobs_use_model")
        job[5] = "h200x8"
        with pytest.raises(Exception, match="refused to run on h200x8"):
            c.predict(*job, api_name="/jobs_submit")
        hub.jobs.wait(second)
    finally:
        stop_app(process)
    assert not hub.repo_exists("model", "alice/ui-never")
    assert WRITE not in (tmp_path / "app.log").read_text()


def test_on_a_space_a_job_runs_with_the_signed_in_owner_s_token(jobs_hub, tmp_path):
    """The Space's own HF_TOKEN (here one that can only read) is not the owner's: a job is
    sent, and its secret set, with the token of the owner who signed in."""
    from gradio_client import Client

    from app_process import start_app, stop_app

    hub = jobs_hub
    env = {**hub_env(hub, READ, cache_dir=tmp_path / "app-cache"), "HF_HUB_OFFLINE": "0",
           **space_env(hub)}  # fmt: skip
    process, url = start_app("--data", str(tmp_path / "data"), log_path=tmp_path / "app.log",
                             env=env)  # fmt: skip
    try:
        cookie = {"Cookie": session_cookie("alice", SIGNED_IN)}
        owner = Client(url, verbose=False, headers=cookie)
        hub.orgs["acme"] = {"alice"}
        job = tab_job("space-tuned")
        job[9] = "acme"  # run in alice's organisation: the job is named acme/ID from then on
        job_ref, state, *_ = owner.predict(*job, api_name="/jobs_submit")
        namespace, job_id = job_ref.split("/")
        assert namespace == "acme" and hub.jobs.jobs[job_id].namespace == "acme"
        assert state.startswith(f"job {job_ref} is")
        (sent,) = hub.jobs.requests
        assert sent["secrets"] == {"HF_TOKEN": SIGNED_IN}
        assert sent["environment"]["TITLE_DPO_PUSH_TO"] == "acme/space-tuned"
        _, state, *_ = owner.predict(job_ref, api_name="/jobs_cancel")
        assert state.startswith(f"job {job_ref} was cancelled")
    finally:
        stop_app(process)
    assert SIGNED_IN not in (tmp_path / "app.log").read_text()


def test_rlhf_on_jobs_a_reward_model_then_online_rl_against_it(jobs_hub, tmp_path):
    """`--method reward` pushes a reward model with a card of its own; `--method rl --reward
    REPO` trains a policy against that pushed reward model."""
    import yaml

    hub = jobs_hub
    common = ("--flavor", "cpu-basic", "--max-steps", "1")
    reward = submit(hub, tmp_path, "--method", "reward", "--push-to", "rm", *common)
    assert hub.jobs.wait(reward).stage == "COMPLETED", "\n".join(log_of(hub, reward)[-40:])
    card = hub.repo_files("model", "alice/rm")["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["pipeline_tag"] == "text-classification" and "reward-model" in meta["tags"]
    assert "AutoModelForSequenceClassification" in card and "It writes no titles" in card

    policy = submit(hub, tmp_path, "--method", "rl", "--reward", "alice/rm", "--push-to", "policy",
                    *common)  # fmt: skip
    assert hub.jobs.wait(policy).stage == "COMPLETED", "\n".join(log_of(hub, policy)[-40:])
    script = hub.jobs.requests[-1]["command"][2]
    assert "python -m pipeline rl --data ../run/data" in script and "--reward alice/rm" in script
    files = hub.repo_files("model", "alice/policy")
    assert "model.safetensors" in files and "online RL" in files["README.md"].decode()
    # the same code for both jobs: uploaded once (its creation, then one commit)
    assert len(hub.commits("dataset", "alice/title-dpo-job-code")) == 2
