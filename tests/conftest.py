"""Shared fixtures: a tiny Qwen2 chat model built locally (no Hub), and a clean environment.

The tiny tokenizer is trained with exactly the pre-tokenizer pipeline that `Qwen2Tokenizer`
rebuilds on load (NFC, the Qwen2 split regex, byte-level), so token ids survive a reload.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every training run reports to trackio (pipeline/tracking.py): the tests' runs go to a folder
# of their own, set before trackio is first imported (it reads TRACKIO_DIR once). Gradio keeps
# the files an app is sent or returns in a cache named by their content, and an app removes its
# own when it stops (ui/shell.CACHE_KEPT): two apps sharing one cache would remove a file the
# other still serves. So each test process gets both folders of its own, an xdist worker too,
# though it inherits its controller's environment: two workers sharing trackio's database both
# claim a run name that is free (tracking.claim_run_name) and log into one run. The process
# that made the folders removes them when it exits; the app processes it starts inherit them
# (an app that `start_app` launches gets a Gradio cache of its own).
MADE_BY = "TITLE_DPO_TEST_FOLDERS_PID"
if os.environ.get(MADE_BY) != str(os.getpid()):
    os.environ[MADE_BY] = str(os.getpid())
    for variable, prefix in (("TRACKIO_DIR", "title-dpo-trackio-"),
                             ("GRADIO_TEMP_DIR", "title-dpo-gradio-")):  # fmt: skip
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, os.environ[variable], ignore_errors=True)

# xdist workers share the cores: each worker's torch, and the apps and commands it starts, gets
# its share of threads rather than all of them. Two workers each on both of two cores ran the
# heavy tests (test_cli, test_smollm2, test_space) in 183-220 s, one thread each in 148-155 s.
# Set before torch is first imported, which reads it once.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer Qwen2 with a 600-token BPE vocabulary, saved as a normal model folder."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from pipeline.datasets import seed_preferences
    from pipeline.prompts import title_prompt

    corpus = [f"{title_prompt(p.idea)}\n{p.chosen}\n{p.rejected}" for p in seed_preferences()]
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    import torch

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=32,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from pipeline.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def offline_cache(tmp_path_factory) -> Path:
    """A private cache folder for the dequantized SmolLM2, shared by the slow tests."""
    return tmp_path_factory.mktemp("title-dpo-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, offline_cache):
    monkeypatch.setenv("TITLE_DPO_CACHE", str(offline_cache))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run `python -m pipeline ARGS` as a user would, from the project root."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def create_round_in_app(client, models, ideas, name: str, stages: bool = True):
    """The Evaluate tab's Create, as its form sends it: `models` typed one per line (no
    finished run ticked), `ideas` typed, one title per model per idea, served first."""
    return client.predict(
        [], "\n".join(map(str, models)), stages, True, 1, name, "Typed below, one per line",
        "\n".join(ideas), None, api_name="/evaluate_create",
    )  # fmt: skip


def vote_until_done(url: str) -> list[str]:
    """A simulated voter: prefers the title with more of the marker, says tie when equal, and
    votes until nothing is left. Returns every response it read, as text."""
    from gradio_client import Client

    voter_client = Client(url, verbose=False)
    responses = [json.dumps(voter_client.predict(None, api_name="/my_role"))]
    start = voter_client.predict(None, api_name="/start")
    responses.append(json.dumps(start))
    voter, _idea, left, right, pair_id, _progress = start
    while pair_id is not None:
        more = left.count(MARKER) - right.count(MARKER)
        side = "/vote_left" if more > 0 else "/vote_right" if more < 0 else "/vote_tie"
        result = voter_client.predict(voter, pair_id, api_name=side)
        responses.append(json.dumps(result))
        _idea, left, right, pair_id, progress = result
        assert not progress.startswith("**Not saved.**"), progress  # refused: the line says why
    responses.append(json.dumps(voter_client.predict(api_name="/leaderboard")))
    return responses


def small_splits() -> dict:
    """8 seed pairs from each of 3 ideas: 16 train / 8 valid, split by idea."""
    from pipeline import datasets as ds

    prefs = ds.seed_preferences()
    ideas = sorted({p.idea for p in prefs})[:3]
    chosen = [p for idea in ideas for p in [q for q in prefs if q.idea == idea][:8]]
    return ds.split_by_idea(chosen, valid_fraction=0.3)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """`small_splits()` saved as a dataset folder."""
    from pipeline import datasets as ds

    splits = small_splits()
    out = tmp_path_factory.mktemp("data") / "small"
    ds.save_dataset(ds.build_dataset(splits), out, ds.summarize(splits, "seed", "idea"))
    return out


@pytest.fixture
def hub_tokens():
    """The loopback Hub's tokens (None: hub_server.DEFAULT_TOKENS); a module overrides this
    fixture to add its own users."""
    return None


@pytest.fixture
def hub(tmp_path, hub_tokens):
    """A loopback Hub (tests/hub_server.py) on 127.0.0.1 for one test; it must end without
    an unexpected server error."""
    from hub_server import running_hub

    server = running_hub(tmp_path, hub_tokens)
    yield server
    server.jobs.stop_all()
    server.stop()
    assert server.errors == []


MARKER = "Z"  # the property the evaluation tests plant in one model's titles


@pytest.fixture(scope="session")
def marked_models(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Two copies of the tiny model that differ only in one planted property of their titles:
    `marked` writes the marker almost always (a bias on its token, kept in its generation
    config), `plain` never does (the token suppressed). Evaluation tests tell them apart by it."""
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    folder = tmp_path_factory.mktemp("marked")
    token = AutoTokenizer.from_pretrained(tiny_model_dir).encode(MARKER, add_special_tokens=False)
    plain, marked = folder / "plain", folder / "marked"
    for path, change in (
        (plain, {"suppress_tokens": token}),
        (marked, {"sequence_bias": [[token, 8.0]]}),
    ):
        shutil.copytree(tiny_model_dir, path)
        config = GenerationConfig.from_pretrained(path)
        for key, value in change.items():
            setattr(config, key, value)
        config.save_pretrained(path)
    return plain, marked


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    """Debian's chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
            ],
        )  # fmt: skip
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test's report says what its pages showed at that moment."""
    report = yield
    browser = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and browser is not None:
        from screens import what_pages_show

        folder = item.funcargs.get("tmp_path")  # kept: the test failed
        report.sections.append(("what the browser showed", what_pages_show(browser, folder)))
    return report
