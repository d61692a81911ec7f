"""`python -m hub push-dataset / push-model` against the loopback Hub, read back with the real
`datasets`, `transformers` and `peft` clients; and every way a push can be refused or cut off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from hub_server import ROOT, hub_env, run_python
from hub_server import hub_cli as run_hub_cli
from pipeline import datasets as ds

WRITE, READ, BOB = "hf_alice_write", "hf_alice_read", "hf_bob_write"


def hub_cli(hub, tmp_path, *args: str, token: str | None = WRITE) -> subprocess.CompletedProcess:
    """`python -m hub ARGS` as the user runs it, with `token` as HF_TOKEN."""
    return run_hub_cli(hub, tmp_path / "cli-cache", *args, token=token)


def front_matter(readme: bytes) -> dict:
    text = readme.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def run_card_snippet(card: str, env: dict) -> str:
    """Run the card's Python usage snippet as a reader would paste it; return what it printed."""
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    done = run_python(snippet, env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def python_json(code: str, env: dict) -> dict:
    done = run_python(textwrap.dedent(code), env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the dataset ------------------------------------------------------------------------------

LOAD = """
import json
from datasets import load_dataset
loaded = load_dataset({repo!r})
print(json.dumps({{s: {{"rows": d.to_list(), "features": repr(d.features)}}
                  for s, d in loaded.items()}}))
"""


def test_tutorial_dataset_round_trip_and_card(hub, tmp_path):
    done = hub_cli(hub, tmp_path, "push-dataset", "--repo", "titles")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "alice/titles: pushed" in done.stdout
    files = hub.repo_files("dataset", "alice/titles")
    assert sorted(files) == [
        ".gitattributes",
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/valid-00000-of-00001.parquet",
    ]

    loaded = python_json(LOAD.format(repo="alice/titles"), hub_env(hub, cache_dir=tmp_path / "u"))
    local = ds.build_dataset(ds.split_preferences(ds.seed_preferences(), "idea"))
    assert set(loaded) == {"train", "valid"}
    for split in ("train", "valid"):
        assert loaded[split]["rows"] == local[split].to_list()
        assert loaded[split]["features"] == repr(local[split].features)

    meta = front_matter(files["README.md"])
    assert meta["license"] == "mit"
    assert {"dpo", "rlhf", "preference"} <= set(meta["tags"])
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["1K<n<10K"]
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "valid", "path": "data/valid-*.parquet"},
    ]
    card = files["README.md"].decode()
    for fact in ("| train | 1020 | 102 |", "| valid | 120 | 12 |", "by idea", "Shaw Talebi",
                 'load_dataset("alice/titles")'):  # fmt: skip
        assert fact in card
    printed = run_card_snippet(card, hub_env(hub, cache_dir=tmp_path / "reader"))
    assert printed.strip() == local["train"][0]["chosen"][0]["content"]

    # The same content again: no new commit, and the repo is unchanged.
    commits = len(hub.commits("dataset", "alice/titles"))
    again = hub_cli(hub, tmp_path, "push-dataset", "--repo", "alice/titles")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already up to date" in again.stdout
    assert len(hub.commits("dataset", "alice/titles")) == commits
    assert hub.repo_files("dataset", "alice/titles") == files

    # ... and back as training data, with the CLI
    pulled = hub_cli(hub, tmp_path, "pull-dataset", "alice/titles", "--out", str(tmp_path / "p"))
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert "train 1020, valid 120 rows from alice/titles" in pulled.stdout
    assert ds.load_preference_dataset(tmp_path / "p")["valid"].to_list() == local["valid"].to_list()


def test_dataset_from_votes_says_how_they_were_collected(hub, tmp_path):
    from pipeline.pairs import Pair
    from pipeline.votes import VoteStore

    store = VoteStore.in_folder(tmp_path / "app-data")
    ideas = [f"idea number {i}" for i in range(5)]
    store.add_pairs(
        [Pair(idea, f"A title for {idea}", f"B title for {idea}") for idea in ideas], "p", "test"
    )
    choices = {"ann": "a_better", "bob": "a_better", "cy": "tie"}
    for pair_id in range(1, 6):
        for voter, choice in choices.items():
            store.record_vote(voter, pair_id, choice, "a")
    store.close()

    done = hub_cli(hub, tmp_path, "push-dataset", "--votes", str(tmp_path / "app-data"),
                   "--repo", "alice/votes", "--min-votes", "2", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["repo_id"] == "alice/votes" and result["changed"] is True
    card = hub.repo_files("dataset", "alice/votes")["README.md"].decode()
    for fact in ("| votes | 15 |", "| voters | 3 |", "| minimum votes for a pair to count | 2 |",
                 "| pairs with 2+ votes | 5 |", "| unanimous among those | 0% |", "blind",
                 "majority rule", "dropped"):  # fmt: skip
        assert fact in card
    loaded = python_json(LOAD.format(repo="alice/votes"), hub_env(hub, cache_dir=tmp_path / "u"))
    rows = loaded["train"]["rows"] + loaded.get("valid", {"rows": []})["rows"]
    assert len(rows) == 5
    assert all(r["chosen"][0]["content"].startswith("A title") for r in rows)


def test_dry_run_shows_the_push_and_sends_nothing(hub, tmp_path):
    done = hub_cli(hub, tmp_path, "push-dataset", "--repo", "titles", "--dry-run", token=None)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "would push 3 files to the dataset repo YOUR-NAME/titles (public)" in done.stdout
    assert "data/train-00000-of-00001.parquet" in done.stdout
    assert "license: mit" in done.stdout  # the card itself
    assert hub.request_log == []


def test_zip_writes_what_the_push_would_send_with_no_token(hub, tmp_path):
    import zipfile

    zipped = tmp_path / "out" / "titles.zip"
    done = hub_cli(hub, tmp_path, "push-dataset", "--repo", "titles", "--zip", str(zipped),
                   token=None)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {zipped}" in done.stdout
    with zipfile.ZipFile(zipped) as archive:
        names = sorted(archive.namelist())
        card = archive.read("README.md").decode()
    assert names == ["README.md", "data/train-00000-of-00001.parquet",
                     "data/valid-00000-of-00001.parquet"]  # fmt: skip
    assert "license: mit" in card and "YOUR-NAME/titles" in card
    assert hub.request_log == []
    # two ways to send nothing at once: which one was meant?
    both = hub_cli(hub, tmp_path, "push-dataset", "--repo", "titles", "--zip", str(zipped),
                   "--dry-run", token=None)  # fmt: skip
    assert both.returncode == 2 and "not allowed with argument" in both.stderr, both.stderr


@pytest.mark.parametrize(
    ("token", "repo", "message"),
    [
        (None, "alice/titles", "no Hugging Face token: set HF_TOKEN"),
        ("hf_not_a_token", "alice/titles", "the Hub refused the Hugging Face token"),
        (READ, "alice/titles", "can only read: pushing needs a token with the 'write' role"),
        (BOB, "alice/titles", "in the namespace 'alice', which bob cannot write to"),
        (WRITE, "alice/bad..name", "is not a valid Hub dataset id"),
    ],
)
def test_a_refused_push_says_why_and_creates_nothing(hub, tmp_path, token, repo, message):
    done = hub_cli(hub, tmp_path, "push-dataset", "--repo", repo, token=token)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "hf_not_a_token" not in done.stderr
    assert not hub.repo_exists("dataset", repo)
    if "valid" in message:
        assert hub.request_log == []  # checked before any network call


def test_hub_down_mid_push_then_the_same_command_finishes(hub, tmp_path):
    hub.stop_on_request("POST", "/commit/")
    cut = hub_cli(hub, tmp_path, "push-dataset", "--repo", "alice/titles")
    assert cut.returncode == 2
    assert "did not answer" in cut.stderr and "run the same push again" in cut.stderr
    assert len(cut.stderr.strip().splitlines()) == 1
    assert len(hub.commits("dataset", "alice/titles")) == 1  # created, nothing committed

    hub.start()
    done = hub_cli(hub, tmp_path, "push-dataset", "--repo", "alice/titles")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "README.md" in hub.repo_files("dataset", "alice/titles")
    assert hub.errors == []


# --- the model --------------------------------------------------------------------------------

GENERATE = """
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({repo!r})
model = AutoModelForCausalLM.from_pretrained({repo!r})
messages = [{{"role": "user", "content": "Title a video about knowledge graphs"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)
with torch.no_grad():
    logits = model(**inputs).logits[0, -1]
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
print(json.dumps({{"tokens": out[0].tolist(), "logits": logits.tolist(),
                  "kind": type(model).__name__}}))
"""


def generate_here(folder: Path) -> dict:
    """What the local run folder's model generates, the same way as GENERATE."""
    code = GENERATE.format(repo=str(folder))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return python_json(code, {**env, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, tiny_model_dir, small_data) -> Path:
    """A 2-step run of the fast recipe (SFT stage, then DPO, both LoRA) on the tiny model."""
    from pipeline.methods import train_run
    from pipeline.recipes import RECIPES

    out = tmp_path_factory.mktemp("fast-run") / "model"
    train_run(small_data, out, str(tiny_model_dir), RECIPES["fast"], max_steps=2)
    return out


def seed_base(hub, tiny_model_dir: Path) -> None:
    """The tiny base model on the Hub as alice/tiny-base, for cards and adapters to point at."""
    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()}
    hub.seed_repo("model", "alice/tiny-base", files)


def test_model_round_trip_generates_the_same_tokens(hub, tmp_path, fast_run, tiny_model_dir):
    seed_base(hub, tiny_model_dir)
    done = hub_cli(hub, tmp_path, "push-model", str(fast_run), "--repo", "tiny-titles",
                   "--base-model", "alice/tiny-base", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["repo_id"] == "alice/tiny-titles"
    files = hub.repo_files("model", "alice/tiny-titles")
    expected = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "training_summary.json",
        "metrics.jsonl",
    ]
    assert set(expected) <= set(files)
    assert not any(n.startswith(("checkpoint-", "sft", "adapter")) for n in files)
    assert (fast_run / "trackio_run.json").is_file() and "trackio_run.json" not in files
    summary = json.loads(files["training_summary.json"])
    assert summary["steps"] == 2 and summary["base_model"] == "alice/tiny-base"
    # no pushed file names a local path (run_start.json, which does, stays home)
    assert (fast_run / "run_start.json").is_file() and "run_start.json" not in files
    texts = {n: c.decode() for n, c in files.items() if not n.endswith(".safetensors")}
    for local in (str(fast_run), str(tiny_model_dir), str(fast_run.parent)):
        assert not [n for n, text in texts.items() if local in text], local

    meta = front_matter(files["README.md"])
    assert meta["base_model"] == "alice/tiny-base"
    assert meta["datasets"] == ["shawhin/youtube-titles-dpo"]  # trained on the tutorial pairs
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert {"trl", "dpo"} <= set(meta["tags"])
    card = files["README.md"].decode()
    assert "| beta | 0.5 |" in card and "Rewards/accuracies" in card
    assert 'AutoModelForCausalLM.from_pretrained("alice/tiny-titles")' in card
    run_card_snippet(card, hub_env(hub, cache_dir=tmp_path / "reader"))

    pulled = python_json(GENERATE.format(repo="alice/tiny-titles"),
                         hub_env(hub, cache_dir=tmp_path / "user"))  # fmt: skip
    local = generate_here(fast_run)
    assert pulled["tokens"] == local["tokens"]
    assert pulled["logits"] == local["logits"]

    again = hub_cli(hub, tmp_path, "push-model", str(fast_run), "--repo", "tiny-titles",
                    "--base-model", "alice/tiny-base")  # fmt: skip
    assert "already up to date" in again.stdout


def test_adapter_only_push_loads_onto_the_base_and_matches(hub, tmp_path, fast_run,
                                                           tiny_model_dir):  # fmt: skip
    seed_base(hub, tiny_model_dir)
    done = hub_cli(hub, tmp_path, "push-model", str(fast_run), "--repo", "alice/tiny-lora",
                   "--adapter-only", "--base-model", "alice/tiny-base")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    files = hub.repo_files("model", "alice/tiny-lora")
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    config = json.loads(files["adapter_config.json"])
    assert config["base_model_name_or_path"] == "alice/tiny-base"
    assert config["r"] == 32  # the SFT stage's r16 adapter and DPO's, stacked
    meta = front_matter(files["README.md"])
    assert meta["base_model"] == "alice/tiny-base" and meta["library_name"] == "peft"
    run_card_snippet(files["README.md"].decode(), hub_env(hub, cache_dir=tmp_path / "reader"))

    # transformers sees adapter_config.json, fetches the base from the Hub, applies the adapter
    pulled = python_json(GENERATE.format(repo="alice/tiny-lora"),
                         hub_env(hub, cache_dir=tmp_path / "user"))  # fmt: skip
    local = generate_here(fast_run)
    assert pulled["tokens"] == local["tokens"]
    assert pulled["logits"] == pytest.approx(local["logits"], abs=1e-5)

    # Switching the repo to the merged model removes the adapter: never both kinds at once.
    merged = hub_cli(hub, tmp_path, "push-model", str(fast_run), "--repo", "alice/tiny-lora",
                     "--base-model", "alice/tiny-base")  # fmt: skip
    assert merged.returncode == 0, merged.stderr[-3000:]
    files = hub.repo_files("model", "alice/tiny-lora")
    assert "model.safetensors" in files and "adapter_config.json" not in files


STAGE_LOGITS = """
import json, sys, torch
from pipeline.models import load_model
loaded = load_model(sys.argv[1], fresh=True)
messages = [{"role": "user", "content": "Title a video about knowledge graphs"}]
inputs = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)
with torch.no_grad():
    logits = loaded.model(**inputs).logits[0, -1]
print(json.dumps({"kind": loaded.source.kind, "logits": logits.tolist()}))
"""


def test_an_sft_stage_is_pushed_as_a_model_of_its_own(hub, tmp_path, tiny_model_dir,
                                                      small_data):  # fmt: skip
    """Blind votes may find a run's SFT stage as good as its final model: the stage then goes
    to the Hub alone, merged or as its adapter, and loads there as the stage the run kept
    (here kept as its adapter on a Hub model, as on a Space, so a merged push merges it)."""
    seed_base(hub, tiny_model_dir)
    env = {**hub_env(hub, WRITE, cache_dir=tmp_path / "owner"), "TITLE_DPO_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pipeline", "train", "--data", str(small_data),
                           "--out", str(tmp_path / "run"), "--model", "alice/tiny-base",
                           "--max-steps", "1"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stage = tmp_path / "run" / "sft"
    assert (stage / "adapter_base.json").is_file() and not (stage / "config.json").exists()
    recorded = json.loads((stage / "stage_summary.json").read_text())
    assert recorded["steps"] == 1 and recorded["examples"] > 0

    done = hub_cli(hub, tmp_path, "push-model", str(stage), "--repo", "tiny-sft")
    assert done.returncode == 0, done.stderr[-3000:]
    files = hub.repo_files("model", "alice/tiny-sft")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert not {"adapter_base.json", "stage_summary.json", "adapter_config.json"} & set(files)
    summary = json.loads(files["training_summary.json"])
    assert summary["stage"] == "sft" and summary["steps"] == 1
    assert summary["base_model"] == "alice/tiny-base" and summary["recipe"]["sft_epochs"] == 1
    texts = [c.decode() for n, c in files.items() if not n.endswith(".safetensors")]
    assert not [text for text in texts if str(tmp_path) in text]  # no local path goes up
    meta = front_matter(files["README.md"])
    assert meta["base_model"] == "alice/tiny-base" and "sft" in meta["tags"]
    card = files["README.md"].decode()
    assert "It is the SFT stage of a title-dpo run that then trained it further with DPO" in card
    said = f"1 optimizer step over {recorded['examples']} distinct (idea, title) examples"
    assert said in card and "| titles trained on (chosen, or both sides) | chosen |" in card

    done = hub_cli(hub, tmp_path, "push-model", str(stage), "--repo", "tiny-sft-lora",
                   "--adapter-only")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    files = hub.repo_files("model", "alice/tiny-sft-lora")
    config = json.loads(files["adapter_config.json"])
    assert config["r"] == 16 and config["base_model_name_or_path"] == "alice/tiny-base"
    assert "model.safetensors" not in files  # the stage's adapter alone, not the run's two
    assert "tokenizer.json" in files and "adapter_base.json" not in files

    reader = hub_env(hub, cache_dir=tmp_path / "reader")
    merged = python_json(GENERATE.format(repo="alice/tiny-sft"), reader)
    adapter = python_json(GENERATE.format(repo="alice/tiny-sft-lora"), reader)
    base = python_json(GENERATE.format(repo="alice/tiny-base"), reader)
    code = STAGE_LOGITS.replace("sys.argv[1]", repr(str(stage)))
    kept = python_json(code, {**env, "HF_HUB_OFFLINE": "1"})  # as the run loads it, offline
    assert kept["kind"] == "adapter"
    assert merged["logits"] == pytest.approx(kept["logits"], abs=1e-5)
    assert adapter["logits"] == pytest.approx(kept["logits"], abs=1e-5)
    assert merged["tokens"] == adapter["tokens"]
    moved = max(abs(a - b) for a, b in zip(merged["logits"], base["logits"], strict=True))
    assert moved > 1e-4  # the stage's own weights went up, not its base's

    # where its base cannot be loaded (offline, not cached), a merged push says what can go
    done = subprocess.run([sys.executable, "-m", "hub", "push-model", str(stage), "--repo", "x",
                           "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**hub_env(hub, WRITE, cache_dir=tmp_path / "elsewhere"),
                               "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cannot be loaded here" in done.stderr and "--adapter-only" in done.stderr


def test_model_push_refusals(hub, tmp_path, fast_run, tiny_model_dir, small_data):
    from pipeline.recipes import RECIPES
    from pipeline.training import train_dpo

    # The base came from a local folder: an adapter needs its Hub id.
    done = hub_cli(hub, tmp_path, "push-model", str(fast_run), "--repo", "x", "--adapter-only")
    assert done.returncode == 2 and "pass --base-model" in done.stderr
    # A full fine-tune has no adapter.
    full = tmp_path / "full"
    train_dpo(small_data, full, str(tiny_model_dir), RECIPES["tutorial"], max_steps=1)
    done = hub_cli(hub, tmp_path, "push-model", str(full), "--repo", "x", "--adapter-only",
                   "--base-model", "alice/tiny-base")  # fmt: skip
    assert done.returncode == 2 and "is a full fine-tune" in done.stderr
    # Not a run folder at all.
    done = hub_cli(hub, tmp_path, "push-model", str(tmp_path), "--repo", "x")
    assert done.returncode == 2 and "no finished training run" in done.stderr
    assert hub.request_log == []


def test_the_example_dataset_card_in_docs_is_current(tmp_path):
    from hub.cards import dataset_card

    summary = ds.write_dataset_folder(tmp_path / "data")  # the tutorial's pairs, by idea
    example = (ROOT / "docs" / "cards" / "dataset-README.md").read_text()
    assert dataset_card(summary, "your-name/youtube-titles-dpo") == example


def test_a_card_names_an_imported_csv_but_not_where_it_lies(tmp_path):
    import shutil

    from hub.cards import dataset_card
    from pipeline.records import SEED_LABELS

    csv = tmp_path / "private" / "my-labels.csv"
    csv.parent.mkdir()
    shutil.copy(SEED_LABELS, csv)
    summary = ds.write_dataset_folder(tmp_path / "data", votes=csv)
    card = dataset_card(summary, "alice/labels")
    assert "Imported from a labelled CSV file, `my-labels.csv`" in card
    assert str(tmp_path) not in card and "Shaw Talebi's DPO tutorial: 114" not in card
