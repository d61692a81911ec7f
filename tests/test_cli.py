"""`python -m pipeline ...` run as a subprocess, the way users and later checks call it."""

import csv
import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from pipeline.records import SEED_DIR


def _one_line_error(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["generate", "pairs", "dataset", "train", "score"])
def test_every_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "--model" in result.stdout or "--out" in result.stdout


def test_generate_json(tiny_model_dir):
    result = run_cli(
        "generate", "--idea", "Multimodal RAG", "--n", "4", "--max-new-tokens", "5",
        "--model", str(tiny_model_dir), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["idea"] == "Multimodal RAG"
    assert record["model"] == str(tiny_model_dir)
    assert len(record["titles"]) == 4 and len(record["raw"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--idea", "   "], "empty"),
        (["generate", "--idea", "x" * 501], "limit is 500"),
        (["generate", "--idea", "rag", "--n", "0"], "n must be"),
        (["generate", "--idea", "rag", "--model", "./missing-model"], "does not exist"),
        (["generate"], "--idea"),
        (["dataset", "--out", "x"], "--from-seed"),
        (["dataset", "--from-seed", "--from-votes", "v.csv", "--out", "x"], "not allowed"),
        (["dataset", "--from-votes", "missing.csv", "--out", "x"], "no such file"),
        (["pairs", "--ideas", "missing.csv", "--out", "p.csv"], "no such file"),
        (["train", "--data", "missing", "--out", "x"], "not a dataset folder"),
        (["score", "--data", "missing", "--model", "./missing-model"], "not a dataset folder"),
        (["nope"], "invalid choice"),
    ],
)
def test_user_mistakes_exit_non_zero_with_one_line(args, message, tmp_path):
    line = _one_line_error(run_cli(*args))
    assert message in line
    assert not (ROOT / "x").exists()  # a refused command writes nothing (`--out x`)


def test_pairs_from_an_ideas_csv(tiny_model_dir, tmp_path):
    ideas = tmp_path / "ideas.csv"
    ideas.write_text("Idea\nMultimodal RAG\nmodel pruning\n")
    out = tmp_path / "pairs.csv"
    result = run_cli(
        "pairs", "--ideas", str(ideas), "--out", str(out), "--model", str(tiny_model_dir),
        "--max-new-tokens", "6", "--seed", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["idea", "title_a", "title_b"]
    for idea in ("Multimodal RAG", "model pruning"):
        mine = [r for r in rows if r["idea"] == idea]
        assert 1 <= len(mine) <= 10
        assert all(r["title_a"] != r["title_b"] for r in mine)
    raw = [json.loads(line) for line in out.with_suffix(".titles.jsonl").read_text().splitlines()]
    assert len(raw) == 10 and {"raw", "text", "model", "settings"} <= set(raw[0])


def test_pairs_refuses_a_malformed_ideas_csv_and_writes_nothing(tmp_path):
    ideas = tmp_path / "ideas.csv"
    ideas.write_text('Idea\nfine\n\n""\n')
    out = tmp_path / "pairs.csv"
    line = _one_line_error(run_cli("pairs", "--ideas", str(ideas), "--out", str(out)))
    assert "empty" in line and "line" in line
    assert not out.exists()


def test_dataset_from_seed_split_by_idea(tmp_path):
    result = run_cli("dataset", "--from-seed", "--out", str(tmp_path / "d"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["split"] == "idea"
    assert summary["rows"] == {"train": 1020, "valid": 120}
    assert len(summary["ideas"]["valid"]) == 12
    assert not set(summary["ideas"]["train"]) & set(summary["ideas"]["valid"])
    assert (tmp_path / "d" / "dataset_dict.json").is_file()
    assert (tmp_path / "d" / "parquet" / "train.parquet").is_file()


def test_dataset_from_seed_split_like_the_tutorial(tmp_path):
    out = tmp_path / "d"
    result = run_cli("dataset", "--from-seed", "--split", "seed", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == {"train": 1026, "valid": 114}
    from datasets import load_from_disk

    first_valid = load_from_disk(str(out))["valid"][0]["prompt"][0]["content"]
    assert "**Video Idea**: intro independent component analysis\n" in first_valid


def test_dataset_from_a_labelled_csv(tmp_path):
    labels = tmp_path / "votes.csv"
    with (SEED_DIR / "idea-title_pairs-preferences.csv").open() as f:
        labels.write_text("".join(f.readlines()[:41]))  # header + 40 pairs
    result = run_cli("dataset", "--from-votes", str(labels), "--out", str(tmp_path / "d"), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert rows["train"] + rows["valid"] == 40 and rows["valid"] > 0


def test_train_two_steps_and_reload(tiny_model_dir, tmp_path):
    data = tmp_path / "d"
    assert run_cli("dataset", "--from-seed", "--out", str(data)).returncode == 0
    out = tmp_path / "m"
    result = run_cli(
        "train", "--data", str(data), "--out", str(out), "--model", str(tiny_model_dir),
        "--recipe", "tutorial", "--max-steps", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["out"] == str(out)
    # a step limit bounds the whole run: 2 steps of 8 pairs read 16 pairs of each split (of
    # the 120 valid ones), for the reference pass, the evaluation and the held-out figure
    assert summary["rows_limit"] == 16 and summary["held_out"]["pairs"] == 16
    assert 0 <= summary["held_out"]["tuned"] <= 1 and 0 <= summary["held_out"]["untrained"] <= 1
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template


def test_a_run_cut_off_carries_on_with_resume_as_it_started(tiny_model_dir, tmp_path):
    """A laptop closed mid-run: the process is killed after a checkpoint, and the same
    command with --resume trains the steps that are left, with the settings it started with."""
    from pipeline.runs import checkpoint_step, latest_checkpoint

    data, out = tmp_path / "d", tmp_path / "m"
    assert run_cli("dataset", "--from-seed", "--out", str(data)).returncode == 0
    command = ["train", "--data", str(data), "--out", str(out), "--json"]
    refused = run_cli(*command, "--resume")
    assert refused.returncode != 0 and "holds no checkpoint to carry on from" in refused.stderr
    started = [*command, "--model", str(tiny_model_dir), "--epochs", "3"]
    with (tmp_path / "run.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *started], cwd=ROOT, stdout=log, stderr=log
        )
        try:
            while latest_checkpoint(out) is None:  # each epoch ends with one (128 steps)
                assert process.poll() is None, (tmp_path / "run.log").read_text()
                time.sleep(0.05)
        finally:
            process.kill()
            process.wait()
    cut_at = checkpoint_step(latest_checkpoint(out))
    assert cut_at < 384
    # the flags given with --resume (another model) are not used: the run's own are
    resumed = run_cli(*command, "--resume", "--model", "./no/such/model")
    assert resumed.returncode == 0, resumed.stderr
    assert "(the command line's settings are not used)" in resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["steps"], summary["finished"]) == (384, True)
    assert summary["steps_this_call"] == 384 - cut_at
    again = run_cli(*command, "--resume")
    assert again.returncode != 0 and "finished; nothing is left to train" in again.stderr


def test_dataset_from_a_vote_database(tmp_path):
    from pipeline.pairs import Pair
    from pipeline.votes import VoteStore

    store = VoteStore.in_folder(tmp_path / "app-data")
    ideas = [f"idea {i}" for i in range(4)]
    store.add_pairs([Pair(i, "First", "Second") for i in ideas], "test", "test")
    for pair_id in range(1, 5):
        store.record_vote("ann", pair_id, "b_better", "a")
        store.record_vote("bob", pair_id, "b_better" if pair_id != 4 else "tie", "b")
    out = tmp_path / "d"
    result = run_cli(
        "dataset", "--from-votes", str(tmp_path / "app-data"), "--out", str(out),
        "--min-votes", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sum(summary["rows"].values()) == 3  # pair 4 is a 1-1 split between b and tie
    assert summary["votes"] == 8 and summary["voters"] == 2
    assert summary["agreement"]["pairs_with_2_plus_votes"] == 4
    from datasets import load_from_disk

    rows = [r for split in load_from_disk(str(out)).values() for r in split]
    assert all(r["chosen"][0]["content"] == "Second" for r in rows)


def test_dataset_from_votes_refuses_a_missing_or_empty_store(tmp_path):
    line = _one_line_error(run_cli("dataset", "--from-votes", str(tmp_path), "--out", "x"))
    assert "no vote database" in line
    from pipeline.votes import VoteStore

    VoteStore.in_folder(tmp_path)
    line = _one_line_error(run_cli("dataset", "--from-votes", str(tmp_path), "--out", "x"))
    assert "no preference rows from" in line
