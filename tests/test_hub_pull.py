"""A preference dataset on the Hub as training data: pulled with the real `datasets` client from
the loopback Hub, checked, saved as a dataset folder; and the Train tab training on one."""

from __future__ import annotations

import json
import textwrap

import pytest

from app_process import start_app, stop_app
from conftest import small_splits
from hub_server import HangUpHub, hub_env, run_python
from pipeline import datasets as ds

WRITE = "hf_alice_write"


def push(hub, tmp_path, repo_id: str, held_out_name: str = "valid", drop: str | None = None):
    """Push the tutorial-shaped dataset with the real client, as a user would have."""
    folder = tmp_path / f"local-{repo_id.replace('/', '-')}"
    ds.save_dataset(ds.build_dataset(small_splits()), folder, {})
    code = textwrap.dedent(f"""
        from datasets import DatasetDict, load_from_disk
        local = load_from_disk({str(folder)!r})
        splits = {{"train": local["train"], {held_out_name!r}: local["valid"]}}
        if {drop!r}:
            splits = {{k: v.remove_columns({drop!r}) for k, v in splits.items()}}
        DatasetDict(splits).push_to_hub({repo_id!r})
    """)
    done = run_python(code, hub_env(hub, WRITE, cache_dir=tmp_path / "pusher"))
    assert done.returncode == 0, done.stderr[-2000:]


def pull(hub, tmp_path, repo_id: str, token: str | None = None, endpoint: str | None = None):
    out = tmp_path / "pulled"
    code = textwrap.dedent(f"""
        import json, sys
        from hub.pull import pull_preference_dataset
        from pipeline.errors import UserError
        try:
            print(json.dumps(pull_preference_dataset({repo_id!r}, {str(out)!r})))
        except UserError as exc:
            print("error:", exc)
            sys.exit(2)
    """)
    env = hub_env(hub, token, cache_dir=tmp_path / "puller")
    done = run_python(code, {**env, "HF_ENDPOINT": endpoint} if endpoint else env)
    return done, out


def test_pulled_dataset_has_the_pushed_rows_and_trains(hub, tmp_path, tiny_model_dir):
    push(hub, tmp_path, "alice/titles")
    done, out = pull(hub, tmp_path, "alice/titles")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary == {"source": "hub:alice/titles", "split": "valid",
                       "rows": {"train": 16, "valid": 8}}  # fmt: skip
    pulled = ds.load_preference_dataset(out)
    local = ds.build_dataset(small_splits())
    for split in ("train", "valid"):
        assert pulled[split].to_list() == local[split].to_list()
        assert pulled[split].features == local[split].features

    from pipeline.recipes import RECIPES
    from pipeline.training import train_dpo

    result = train_dpo(out, tmp_path / "model", str(tiny_model_dir), RECIPES["fast"], max_steps=1)
    assert result.steps == 1


def test_a_validation_split_is_the_held_out_one(hub, tmp_path):
    push(hub, tmp_path, "alice/titles-v", held_out_name="validation")
    done, _ = pull(hub, tmp_path, "alice/titles-v")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["rows"] == {"train": 16, "valid": 8}


def test_what_cannot_be_pulled_gets_one_clear_error(hub, tmp_path):
    push(hub, tmp_path, "alice/no-rejected", drop="rejected")
    done, out = pull(hub, tmp_path, "alice/no-rejected")
    assert done.returncode == 2
    assert "not a preference dataset: its train split lacks rejected" in done.stdout
    assert not (out / "dataset_dict.json").exists()

    done, _ = pull(hub, tmp_path, "alice/nothing-here")
    assert done.returncode == 2 and "the Hub has no dataset 'alice/nothing-here'" in done.stdout

    done, _ = pull(hub, tmp_path, "not a repo id")
    assert done.returncode == 2 and "is not a valid Hub dataset id" in done.stdout

    down = HangUpHub()  # a Hub that does not answer is said at once, not after retries
    done, _ = pull(hub, tmp_path, "alice/titles", endpoint=down.url)
    down.close()
    assert done.returncode == 2 and "could not download 'alice/titles'" in done.stdout
    assert "did not answer" in done.stdout and down.connections == 1
    assert "Traceback" not in done.stderr


def test_train_tab_trains_on_a_hub_dataset(hub, tmp_path, tiny_model_dir):
    from gradio_client import Client
    from test_app import TRAIN_FIELDS, _wait_for_training

    push(hub, tmp_path, "alice/titles")
    env = {**hub_env(hub, cache_dir=tmp_path / "app-cache"), "HF_HUB_OFFLINE": "0"}
    process, url = start_app("--data", str(tmp_path / "data"), log_path=tmp_path / "app.log",
                             env=env)  # fmt: skip
    try:
        c = Client(url, verbose=False)
        fields = {
            **TRAIN_FIELDS,
            "kind": "A preference dataset on the Hub",
            "hub_id": "alice/titles",
            "model": str(tiny_model_dir),
            "step_limit": 2,
        }
        c.predict(*fields.values(), api_name="/train_start")
        progress, *_ = _wait_for_training(c)
        assert progress.startswith("**done**") and "step 2/2" in progress, progress
        with pytest.raises(Exception, match="the Hub has no dataset 'alice/missing'"):
            c.predict(*{**fields, "hub_id": "alice/missing"}.values(), api_name="/train_start")
    finally:
        stop_app(process)
