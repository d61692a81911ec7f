"""The app's Hub side, driven through gradio_client against the loopback Hub: the Hub tab's
pushes, and votes mirrored to a Hub dataset that a restarted app with an empty disk gets back."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client

from app_process import start_app, stop_app
from conftest import MARKER, create_round_in_app, vote_until_done
from hub_server import HangUpHub, hub_cli, hub_env

WRITE = "hf_alice_write"
VOTES_REPO = "alice/app-votes"


def launch(hub, tmp_path, data, token=WRITE, args=(), **extra):
    env = {**hub_env(hub, token, cache_dir=tmp_path / "app-cache"), "HF_HUB_OFFLINE": "0",
           **extra}  # fmt: skip
    return start_app("--data", str(data), *args, log_path=tmp_path / "app.log", env=env)


def shard_lines(hub) -> dict[str, list[dict]]:
    files = hub.repo_files("dataset", VOTES_REPO) if hub.repo_exists("dataset", VOTES_REPO) else {}
    return {
        path: [json.loads(line) for line in content.decode().splitlines()]
        for path, content in files.items()
        if path.startswith("votes/")
    }


def mirrored_iterations(hub) -> list[dict]:
    """The iteration records in the mirror's one iterations file ([] before there is one)."""
    files = hub.repo_files("dataset", VOTES_REPO) if hub.repo_exists("dataset", VOTES_REPO) else {}
    found = [json.loads(text) for path, text in files.items() if path.startswith("iterations/")]
    assert len(found) <= 1
    return found[0] if found else []


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_hub_tab_pushes_the_votes_dataset_and_a_run(hub, tmp_path, tiny_model_dir, small_data):
    from pipeline.pairs import Pair
    from pipeline.recipes import RECIPES
    from pipeline.training import train_dpo
    from pipeline.votes import VoteStore

    data = tmp_path / "data"
    store = VoteStore.in_folder(data)
    store.add_pairs([Pair(f"idea {i}", f"First title {i}", f"Second title {i}") for i in range(4)],
                    "test", "test")  # fmt: skip
    for pair_id in range(1, 5):
        store.record_vote("ann", pair_id, "b_better", "a")
    store.close()
    run = data / "runs" / "run-20260101-000000" / "model"
    train_dpo(small_data, run, str(tiny_model_dir), RECIPES["fast"], max_steps=1)
    # a run whose summary a full disk cut short: left out of the lists, refused by name
    broken = data / "runs" / "run-20250101-000000" / "model"
    broken.mkdir(parents=True)
    (broken / "train_summary.json").write_text('{"out": "cut off by a full dis')

    process, url = launch(hub, tmp_path, data)
    try:
        c = Client(url, verbose=False)
        message = c.predict("The votes collected here", 1, "votes-ds", True,
                            api_name="/hub_push_dataset")  # fmt: skip
        assert (
            message.startswith("Pushed: [alice/votes-ds](")
            and "/datasets/alice/votes-ds" in message
        )
        files = hub.repo_files("dataset", "alice/votes-ds")
        assert "| votes | 4 |" in files["README.md"].decode()
        assert hub.is_private("dataset", "alice/votes-ds")

        runs, sync_line = c.predict(api_name="/hub_status")
        assert runs["value"] == str(run)
        started = f"from {tiny_model_dir.name} on the tutorial's pairs, 1 step"
        assert runs["choices"] == [
            [f"{run.parent.name}: SFT, then DPO (fast) {started}", str(run)],
            [f"{run.parent.name} SFT stage: the run's model before DPO, 1 step", str(run / "sft")],
        ]
        with pytest.raises(Exception, match=r"train_summary\.json: not a readable run summary"):
            c.predict(str(broken), "tiny-model", "alice/tiny-base", False, False,
                      api_name="/hub_push_model")  # fmt: skip
        assert "not mirrored" in sync_line
        message = c.predict(runs["value"], "tiny-model", "alice/tiny-base", False, False,
                            api_name="/hub_push_model")  # fmt: skip
        assert message.startswith("Pushed: [alice/tiny-model](")
        pushed = hub.repo_files("model", "alice/tiny-model")
        assert "model.safetensors" in pushed
        assert "Not judged by people yet" in pushed["README.md"].decode()  # no round had it

        with pytest.raises(Exception, match="cannot write to"):
            c.predict("The votes collected here", 1, "bob/votes", False,
                      api_name="/hub_push_dataset")  # fmt: skip

        # pushed, the run may go: asked first, then gone from the disk and from the list
        # (the client leaves out the confirmation's group, which a page shows and hides)
        asked = c.predict(str(run), api_name="/run_delete_check")
        asked_for = rf"Delete \*\*{run.parent.name}\*\* \(\d+ [KM]B: everything the run wrote"
        assert re.match(asked_for, asked), asked
        with pytest.raises(Exception, match="not one of this app's runs"):
            c.predict(str(data), api_name="/run_delete")  # whatever a page sends
        said, runs, _, stored, _ = c.predict(str(run), api_name="/run_delete")
        assert re.fullmatch(rf"Deleted \*\*{run.parent.name}\*\*: \d+ [KM]B freed\.", said), said
        assert [value for _, value in runs["choices"]] == []
        assert [value for _, value in stored["choices"]] == [str(broken.parent)]  # it may go
        assert not run.parent.exists() and broken.is_dir() and (data / "votes.db").is_file()
    finally:
        stop_app(process)
    assert WRITE not in (tmp_path / "app.log").read_text()


def test_every_run_on_the_disk_is_listed_with_its_size_and_may_go(
    hub, tmp_path, tiny_model_dir, small_data
):
    """A Space's disk keeps what runs leave: the Hub tab lists every run, with a model or
    without (cut off, or stopped in its SFT stage, it holds checkpoints only), with its size
    and how far it got, and any of them may be deleted, the one Resume carries on after a
    warning."""
    from dataclasses import replace

    from pipeline.recipes import RECIPES
    from pipeline.training import train_dpo

    data, runs = tmp_path / "data", tmp_path / "data" / "runs"
    recipe = replace(RECIPES["fast"], batch_size=4, epochs=2)  # on 16 pairs: SFT 2, DPO 8 steps
    finished, in_loop, in_sft, failed = (
        runs / f"run-2026010{day}-000000" for day in (1, 2, 3, 4)
    )  # fmt: skip
    train_dpo(small_data, finished / "model", str(tiny_model_dir), recipe, max_steps=1)
    # chunks that ended, as a ZeroGPU quota spent ends them: in the loop, in the SFT stage
    train_dpo(small_data, in_loop / "model", str(tiny_model_dir), recipe, stop_after=4)
    train_dpo(small_data, in_sft / "model", str(tiny_model_dir), recipe, stop_after=1)
    shutil.copytree(small_data, failed / "data")  # a start refused for its model: its data

    process, url = launch(hub, tmp_path, data)
    try:
        c = Client(url, verbose=False)
        stored, line = c.predict(api_name="/runs_on_disk")
        assert re.fullmatch(r"4 runs on this disk: [\d.]+ [KMG]B; [\d.]+ [MGT]B free on it\.", line)
        assert stored["value"] is None  # the owner picks what goes
        lines = [label for label, _ in stored["choices"]]
        assert [value for _, value in stored["choices"]] == [
            str(run) for run in (failed, in_sft, in_loop, finished)
        ]
        size, what = r"[\d.]+ [KM]B", f"SFT, then DPO \\(fast\\) from {tiny_model_dir.name}"
        assert re.fullmatch(rf"{size} · {failed.name}: no model and no checkpoint \(its start "
                            r"failed, or it was cut off\)", lines[0]), lines[0]  # fmt: skip
        assert re.fullmatch(rf"{size} · {in_sft.name}: {what}, left in its SFT stage of 2 steps, "
                            r"no model saved; Resume the last run carries it on",
                            lines[1]), lines[1]  # fmt: skip
        assert re.fullmatch(rf"{size} · {in_loop.name}: {what}, left at step 2 of 8 steps, no "
                            r"model saved", lines[2]), lines[2]  # fmt: skip
        assert re.fullmatch(rf"{size} · {finished.name}: {what} on the tutorial's pairs, 1 step",
                            lines[3]), lines[3]  # fmt: skip

        asked = c.predict(str(in_sft), api_name="/run_delete_check")
        assert "*Resume the last run* carries it on: deleted, it cannot." in asked, asked
        assert "Push" not in asked  # it has no model to push
        for gone in (in_sft, in_loop, failed):
            said, _, _, stored, line = c.predict(str(gone), api_name="/run_delete")
            assert said.startswith(f"Deleted **{gone.name}**"), said
            assert not gone.exists()
        assert [value for _, value in stored["choices"]] == [str(finished)]
        assert line.startswith("1 run on this disk: ")
        asked = c.predict(str(finished / "model"), api_name="/run_delete_check")
        assert "carries it on" not in asked and "Push its model first to keep it." in asked
    finally:
        stop_app(process)


def test_a_stopped_runs_checkpoints_may_go_while_its_model_stays(
    hub, tmp_path, tiny_model_dir, small_data
):
    """A stopped full fine-tune keeps its checkpoints for Resume: each its model and the
    optimizer's state. The owner who keeps the stopped model and will not resume may drop
    them alone; the model stays listed, to evaluate and push."""
    from dataclasses import replace

    from pipeline.recipes import RECIPES
    from pipeline.runs import STOP_FILE
    from pipeline.training import train_dpo

    data, runs = tmp_path / "data", tmp_path / "data" / "runs"
    stopped, in_sft = runs / "run-20260101-000000", runs / "run-20260102-000000"
    (stopped / "model").mkdir(parents=True)
    (stopped / "model" / STOP_FILE).touch()  # Stop, pressed before its first step ended
    recipe = replace(RECIPES["tutorial"], batch_size=4, epochs=2)  # a full fine-tune
    result = train_dpo(small_data, stopped / "model", str(tiny_model_dir), recipe, stop_after=8)
    assert result.model_saved and not result.finished and result.steps == 1
    fast = replace(RECIPES["fast"], batch_size=4, epochs=2)
    train_dpo(small_data, in_sft / "model", str(tiny_model_dir), fast, stop_after=1)

    process, url = launch(hub, tmp_path, data)
    try:
        c = Client(url, verbose=False)
        # (the client leaves out the confirmation's group and its buttons, as above)
        asked = c.predict(str(stopped), api_name="/run_delete_check")
        keep = r"Or keep the run and its model, and drop only its checkpoints \(\d+ [KM]B\)"
        assert re.search(keep, asked), asked
        asked = c.predict(str(in_sft), api_name="/run_delete_check")
        assert "drop only" not in asked  # its checkpoints are all it holds
        with pytest.raises(Exception, match="has no model: its checkpoints are all it holds"):
            c.predict(str(in_sft), api_name="/run_drop_checkpoints")
        with pytest.raises(Exception, match="not one of this app's runs"):
            c.predict(str(data), api_name="/run_drop_checkpoints")  # whatever a page sends

        said, runs_listed, _, stored, _ = c.predict(str(stopped), api_name="/run_drop_checkpoints")
        assert re.fullmatch(rf"Dropped the checkpoints of \*\*{stopped.name}\*\*: \d+ [KM]B "
                            r"freed; its model stays\.", said), said  # fmt: skip
        assert not list((stopped / "model").glob("checkpoint-*"))
        assert (stopped / "model" / "model.safetensors").is_file()
        assert [value for _, value in runs_listed["choices"]] == [str(stopped / "model")]
        assert [value for _, value in stored["choices"]] == [str(in_sft), str(stopped)]
        with pytest.raises(Exception, match="keeps no checkpoints; nothing was dropped"):
            c.predict(str(stopped), api_name="/run_drop_checkpoints")
        assert (in_sft / "model" / "sft-checkpoints").is_dir()  # the refused one: untouched
    finally:
        stop_app(process)


def test_a_pushed_models_card_says_what_blind_voters_preferred(
    hub, tmp_path, marked_models, small_data
):
    """Did people prefer its titles? The run's model writes the marker, its SFT stage and its
    base never do; voters who like the marker judge an evaluation round of the three through
    the app, and the card the Hub tab pushes (and the command line's, given the votes) says
    how the model fared against each."""
    from transformers import GenerationConfig

    from pipeline.recipes import RECIPES
    from pipeline.training import train_dpo

    plain, _ = marked_models
    data = tmp_path / "data"
    run = data / "runs" / "run-20260101-000000" / "model"
    train_dpo(small_data, run, str(plain), RECIPES["fast"], max_steps=1)
    config = GenerationConfig.from_pretrained(run)  # plain's: the marker suppressed
    config.suppress_tokens = None
    config.sequence_bias = [[_token_ids(plain, MARKER), 8.0]]  # as marked_models' `marked`
    config.save_pretrained(run)
    # The SFT stage writes titles of its own, without the marker: had it written its base's
    # titles, its pairs with the run's model would be the base's pairs, counted as those.
    config = GenerationConfig.from_pretrained(run / "sft")
    config.sequence_bias = [[_token_ids(plain, "Q"), 8.0]]
    config.save_pretrained(run / "sft")
    password = "card owner password"
    env = {"TITLE_DPO_OWNER_PASSWORD": password, "TITLE_DPO_TUTORIAL_POOL": "0"}
    process, url = launch(hub, tmp_path, data, args=("--model", str(plain)), **env)
    ideas = ["Kalman filters", "Vector databases compared", "Contrastive learning"]
    try:
        owner = Client(url, verbose=False)
        owner.predict(password, api_name="/owner_sign_in")
        message, _ = create_round_in_app(owner, [run], ideas, "card round")
        assert "served first" in message, message
        for _ in range(2):
            vote_until_done(url)
        owner.predict(str(run), "judged", "alice/tiny-base", False, False,
                      api_name="/hub_push_model")  # fmt: skip
        card = hub.repo_files("model", "alice/judged")["README.md"].decode()
        # its SFT stage, listed after it, goes up alone, with what people said of the stage
        runs, _ = owner.predict(api_name="/hub_status")
        assert [value for _, value in runs["choices"]] == [str(run), str(run / "sft")]
        owner.predict(str(run / "sft"), "judged-sft", "alice/tiny-base", False, False,
                      api_name="/hub_push_model")  # fmt: skip
        stage_files = hub.repo_files("model", "alice/judged-sft")
    finally:
        stop_app(process)
    stage_card = stage_files["README.md"].decode()
    assert "It is the SFT stage of a title-dpo run" in stage_card
    assert json.loads(stage_files["training_summary.json"])["stage"] == "sft"
    stage_rows = {line.split(" | ")[1]: line for line in stage_card.splitlines()
                  if line.startswith("| card round")}  # fmt: skip
    assert set(stage_rows) == {"the DPO model trained from it", "its base model (alice/tiny-base)"}
    # the voters liked only the DPO model's marker: every pair lost to it, and tied with the base
    assert "| 0 – 6 – 0 – 0 | 0% |" in stage_rows["the DPO model trained from it"]
    assert "| 0 – 0 – 6 – 0 | n/a |" in stage_rows["its base model (alice/tiny-base)"]
    section = card.split("## Did people prefer its titles?")[1]
    rows = {line.split(" | ")[1]: line for line in section.splitlines()
            if line.startswith("| card round")}  # fmt: skip
    assert set(rows) == {"its SFT stage", "its base model (alice/tiny-base)"}, section
    for other, row in rows.items():  # 2 voters x 3 ideas, every vote for the marked title
        assert "| card round (3 ideas, 2 voters) |" in row and "| 6 – 0 – 0 – 0 | 100% |" in row
        assert row.endswith("| 3 of 3 |"), row
        # in words, pair by pair (each pair's 2 votes are one verdict): 3 pairs cannot tell yet
        said = f"- card round: this model vs {other}: too close to call yet (3 of 3 decided pairs"
        assert said in section and "about 1 more decided pair would settle it" in section
    # the command line writes the same section from the app's vote database
    done = hub_cli(hub, tmp_path / "cli-cache", "push-model", str(run), "--repo", "judged",
                   "--base-model", "alice/tiny-base", "--votes", str(data), "--dry-run",
                   token=WRITE)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(row in done.stdout for row in rows.values())
    # trained again in its folder (as a stopped run resumed is), it is another model: the
    # round's votes judged the one before, and its card no longer claims them
    train_dpo(small_data, run, str(plain), RECIPES["fast"], max_steps=2)
    again = hub_cli(hub, tmp_path / "cli-cache", "push-model", str(run), "--repo", "judged",
                    "--base-model", "alice/tiny-base", "--votes", str(data), "--dry-run",
                    token=WRITE)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "card round" not in again.stdout and "Not judged by people yet" in again.stdout


def _token_ids(model, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model).encode(text, add_special_tokens=False)


def test_without_a_token_the_hub_tab_says_what_to_do(hub, tmp_path):
    app_tmp = tmp_path / "app-tmp"  # the app's temporary folder, to see what it leaves there
    app_tmp.mkdir()
    process, url = launch(hub, tmp_path, tmp_path / "data", token=None, TMPDIR=str(app_tmp))
    try:
        c = Client(url, verbose=False)
        with pytest.raises(Exception, match=r"no Hugging Face token: set HF_TOKEN"):
            c.predict("The votes collected here", 1, "votes-ds", False,
                      api_name="/hub_push_dataset")  # fmt: skip
        # the same dataset can still be had, as the files its repo would hold
        zipped = c.predict("The tutorial's 1,140 labelled pairs", 1, "votes-ds", False, 0,
                           False, api_name="/hub_download_dataset")  # fmt: skip
        # an earlier download's folder, two hours old: the next download removes it
        (root,) = app_tmp.glob("title-dpo-downloads-*")
        (root / "earlier").mkdir()
        os.utime(root / "earlier", (time.time() - 7200, time.time() - 7200))
        with pytest.raises(Exception, match="no preference rows from"):  # no votes yet
            c.predict("The votes collected here", 1, "votes-ds", False, 0, False,
                      api_name="/hub_download_dataset")  # fmt: skip
        assert not (root / "earlier").exists()
        assert [p.name for p in root.glob("*/*")] == ["votes-ds.zip"]
    finally:
        stop_app(process)
    assert list(app_tmp.glob("title-dpo-downloads-*")) == []  # gone with the app
    assert hub.request_log == []
    assert Path(zipped).name == "votes-ds.zip"
    with zipfile.ZipFile(zipped) as archive:
        assert sorted(archive.namelist()) == [
            "README.md", "data/train-00000-of-00001.parquet", "data/valid-00000-of-00001.parquet"
        ]  # fmt: skip
        archive.extractall(tmp_path / "unzipped")
    assert "YOUR-NAME/votes-ds" in (tmp_path / "unzipped" / "README.md").read_text()
    from datasets import load_dataset

    dataset = load_dataset(str(tmp_path / "unzipped"))
    assert sum(len(split) for split in dataset.values()) == 1140
    assert dataset["train"].column_names == ["prompt", "chosen", "rejected"]


def restarted(hub, tmp_path, disk: Path, voter: str, **env) -> tuple[str, str]:
    """The app started on `disk`: its Hub tab's sync line, and what `voter`'s page says."""
    process, url = launch(hub, tmp_path, disk, **env)
    try:
        c = Client(url, verbose=False)
        _, sync_line = c.predict(api_name="/hub_status")
        *_, progress = c.predict(voter, api_name="/start")
        return sync_line, progress
    finally:
        stop_app(process)


def test_votes_come_back_after_a_restart_with_an_empty_disk(hub, tmp_path):
    # A Space keeps its voter-id key in a secret, as the README says: a wiped disk would
    # otherwise make every voter a new one.
    often = {"TITLE_DPO_VOTES_REPO": VOTES_REPO, "TITLE_DPO_SYNC_MINUTES": "0.02",
             "TITLE_DPO_SECRET": "a-space-secret-of-32-characters!"}  # fmt: skip
    rarely = {**often, "TITLE_DPO_SYNC_MINUTES": "60"}
    left_won = {"a": "a_better", "b": "b_better"}
    right_won = {"a": "b_better", "b": "a_better"}

    # 1. Votes are mirrored on the schedule (every 1.2 s here) while the app runs.
    process, url = launch(hub, tmp_path, tmp_path / "disk-1", **often)
    try:
        c = Client(url, verbose=False)
        voter, *_, pair_id, _ = c.predict(None, api_name="/start")
        for endpoint in ("/vote_left", "/vote_right"):
            *_, next_id, progress = c.predict(voter, pair_id, api_name=endpoint)
            assert progress.startswith("Vote saved")
            pair_id = next_id
        wait_for(lambda: sum(len(v) for v in shard_lines(hub).values()) == 2)
        _, sync_line = c.predict(api_name="/hub_status")
        assert f"mirrored to the Hub dataset `{VOTES_REPO}`: last sync 20" in sync_line
        assert "2 votes there" in sync_line
    finally:
        stop_app(process)
    (first,) = shard_lines(hub).values()
    assert [r["choice"] for r in first] == [
        left_won[first[0]["shown_left"]],
        right_won[first[1]["shown_left"]],
    ]
    assert [r["voter"] for r in first] == [voter.split(".")[0]] * 2  # the id, not its signature

    # 2. An empty disk gets them back; a vote cast there goes up with the sync at exit (the
    # schedule is an hour here), in this process's own shard.
    process, url = launch(hub, tmp_path, tmp_path / "disk-2", **rarely)
    try:
        c = Client(url, verbose=False)
        _, sync_line = c.predict(api_name="/hub_status")
        assert "2 restored at start-up" in sync_line
        *_, pair_id, progress = c.predict(voter, api_name="/start")
        assert "voted on **2** pairs" in progress
        c.predict(voter, pair_id, api_name="/vote_tie")
        time.sleep(1)
        assert sum(len(v) for v in shard_lines(hub).values()) == 2
    finally:
        stop_app(process)  # SIGTERM, as a Space restart sends
    shards = shard_lines(hub)
    assert len(shards) == 2
    assert sorted(len(v) for v in shards.values()) == [1, 2]
    records = [r for v in shards.values() for r in v]
    assert len({r["vote_id"] for r in records}) == 3

    # Shards only ever grow: each commit's version of a shard extends the one before.
    for path in shards:
        versions = [
            hub.repo_files("dataset", VOTES_REPO, c["oid"]).get(path, b"")
            for c in hub.commits("dataset", VOTES_REPO)
        ]
        grown = [v for v in versions if v]
        assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(grown))

    # 3. Every vote from both shards is back, once.
    sync_line, progress = restarted(hub, tmp_path, tmp_path / "disk-3", voter, **rarely)
    assert "3 restored at start-up" in sync_line and "voted on **3** pairs" in progress

    from pipeline.votes import VoteStore

    restored = VoteStore.in_folder(tmp_path / "disk-3").votes()
    assert sorted(v.vote_id for v in restored) == sorted(r["vote_id"] for r in records)
    assert len(shard_lines(hub)) == 2  # the third process had nothing new to mirror


def test_a_vote_undone_after_it_was_mirrored_stays_out_after_a_restart(hub, tmp_path):
    """A shard never loses a line: the vote taken back goes up as a retraction, and an empty
    disk restores the vote cast instead of it, not the slip."""
    often = {"TITLE_DPO_VOTES_REPO": VOTES_REPO, "TITLE_DPO_SYNC_MINUTES": "0.02",
             "TITLE_DPO_SECRET": "a-space-secret-of-32-characters!"}  # fmt: skip
    process, url = launch(hub, tmp_path, tmp_path / "disk-1", **often)
    try:
        c = Client(url, verbose=False)
        voter, *_, pair_id, _ = c.predict(None, api_name="/start")
        c.predict(voter, pair_id, api_name="/vote_left")
        wait_for(lambda: sum(len(v) for v in shard_lines(hub).values()) == 1)
        *_, shown_again, _ = c.predict(voter, api_name="/undo_vote")
        assert shown_again == pair_id
        c.predict(voter, pair_id, api_name="/vote_tie")
        wait_for(lambda: sum(len(v) for v in shard_lines(hub).values()) == 2)
        wait_for(
            lambda: any(p.startswith("retractions/") for p in hub.repo_files("dataset", VOTES_REPO))
        )
    finally:
        stop_app(process)
    [slip, instead] = [r for lines in shard_lines(hub).values() for r in lines]
    assert slip["choice"] != "tie" and instead["choice"] == "tie"

    sync_line, progress = restarted(hub, tmp_path, tmp_path / "disk-2", voter, **often)
    assert "1 restored at start-up" in sync_line and "voted on **1** pair " in progress
    assert "1 vote there" in sync_line  # the slip's line is in a shard, but it was taken back
    from pipeline.votes import VoteStore

    [vote] = VoteStore.in_folder(tmp_path / "disk-2").votes()
    assert (vote.vote_id, vote.choice) == (instead["vote_id"], "tie")


def test_a_mirror_that_cannot_work_yet_never_stops_the_app(hub, tmp_path):
    often = {"TITLE_DPO_VOTES_REPO": VOTES_REPO, "TITLE_DPO_SYNC_MINUTES": "0.02"}
    # No token: the app serves and says why the votes are not mirrored.
    process, url = launch(hub, tmp_path, tmp_path / "no-token", token=None, **often)
    try:
        _, sync_line = Client(url, verbose=False).predict(api_name="/hub_status")
        assert "not** mirrored to the Hub" in sync_line and "HF_TOKEN" in sync_line
    finally:
        stop_app(process)

    # The Hub is down at start-up: the app serves; once the Hub is back, the schedule restores
    # and mirrors the votes cast meanwhile.
    hub.stop()
    process, url = launch(hub, tmp_path, tmp_path / "hub-down", **often)
    try:
        c = Client(url, verbose=False)
        _, sync_line = c.predict(api_name="/hub_status")
        assert "last sync not yet" in sync_line and "did not answer" in sync_line
        voter, *_, pair_id, _ = c.predict(None, api_name="/start")
        c.predict(voter, pair_id, api_name="/vote_left")
        hub.start()
        wait_for(lambda: sum(len(v) for v in shard_lines(hub).values()) == 1)
        wait_for(lambda: "Last attempt failed" not in c.predict(api_name="/hub_status")[1])
    finally:
        stop_app(process)


def test_a_hub_that_does_not_answer_costs_the_start_up_one_request(hub, tmp_path):
    """The restore at start-up comes before serving: it must not sit in the Hub client's
    retries (five, with backoff: ~23 s) when the Hub is not there."""
    down = HangUpHub()
    process, url = launch(hub, tmp_path, tmp_path / "disk", HF_ENDPOINT=down.url,
                          TITLE_DPO_VOTES_REPO=VOTES_REPO, TITLE_DPO_SYNC_MINUTES="60")  # fmt: skip
    try:
        assert down.connections == 1
        _, sync_line = Client(url, verbose=False).predict(api_name="/hub_status")
        assert "last sync not yet" in sync_line and "did not answer" in sync_line
        assert "The next sync tries again" in sync_line and "push" not in sync_line
    finally:
        stop_app(process)
        down.close()


def test_an_iteration_comes_back_after_a_restart_with_its_pairs_and_votes(
    hub, tmp_path, tiny_model_dir
):
    """The Iterations tab's state is mirrored with the votes: a Space restarted on an empty
    disk lists the iteration, serves its pairs first, and counts its votes for it."""
    password = "mirror owner password"
    often = {"TITLE_DPO_VOTES_REPO": VOTES_REPO, "TITLE_DPO_SYNC_MINUTES": "0.02",
             "TITLE_DPO_SECRET": "a-space-secret-of-32-characters!",
             "TITLE_DPO_OWNER_PASSWORD": password, "TITLE_DPO_TUTORIAL_POOL": "0"}  # fmt: skip
    model = ("--model", str(tiny_model_dir))
    process, url = launch(hub, tmp_path, tmp_path / "disk-1", **often, args=model)
    try:
        owner = Client(url, verbose=False)
        owner.predict(password, api_name="/owner_sign_in")
        # how it learns, votes per pair, earlier, the tutorial's, steps, screening (3 fields)
        training = ["DPO from the model itself (iterative DPO)", 1, False, False, 1]
        training += [False, 0, False]
        ideas = "mirrored idea one\nmirrored idea two\nmirrored idea three"
        owner.predict(str(tiny_model_dir), "Typed below, one per line", ideas, None, 4, 0.7,
                      1, "mirrored", 16, True, *training, api_name="/iteration_start")  # fmt: skip
        voter_client = Client(url, verbose=False)
        voter, *_, pair_id, _ = voter_client.predict(None, api_name="/start")
        cast = 0
        while pair_id is not None:  # every pair: then the app trains on its own (one step)
            *_, pair_id, _ = voter_client.predict(voter, pair_id, api_name="/vote_left")
            cast += 1
        # the votes, the iteration and, once trained, its policy go to the mirror
        policy = "policies/mirrored/model.safetensors"
        wait_for(lambda: policy in hub.repo_files("dataset", VOTES_REPO), timeout=180)
        wait_for(lambda: (mirrored_iterations(hub) or [{}])[0].get("judge"))
        wait_for(lambda: sum(len(v) for v in shard_lines(hub).values()) == cast)
        trained, _ = owner.predict(api_name="/iterations")
    finally:
        stop_app(process)
    mirrored = mirrored_iterations(hub)
    assert [i["name"] for i in mirrored] == ["mirrored"] and mirrored[0]["training"]["at_target"]
    run_model = Path(mirrored[0]["trained"])  # the app's RUN/model, which the table calls RUN
    assert run_model.parent.parent == tmp_path / "disk-1" / "runs" and run_model.name == "model"
    assert trained["data"][0][-1] == run_model.parent.name

    process, url = launch(hub, tmp_path, tmp_path / "disk-2", **often, args=model)
    try:
        owner = Client(url, verbose=False)
        owner.predict(password, api_name="/owner_sign_in")
        after, _ = owner.predict(api_name="/iterations")
        # the same pairs, votes and voters; the trained policy is the restored copy
        restored = tmp_path / "disk-2" / "policies" / "mirrored"
        assert after["data"][0][:-1] == trained["data"][0][:-1]
        assert after["data"][0][-1] == restored.name and (restored / "config.json").is_file()
        pairs = len(mirrored[0]["pairs"])
        assert after["data"][0][:5] == ["mirrored", tiny_model_dir.name, pairs, cast, 1]
        # its judging round came back too, nobody's votes on it yet
        rows, _ = owner.predict(api_name="/iteration_report")
        assert rows["data"][0][4] == 0 and mirrored[0]["judge"]["name"] == "judge-mirrored"
        # the same voter has judged every pair of the iteration: the judging pairs come next
        _, idea, *_, pair_id, progress = Client(url, verbose=False).predict(
            voter, api_name="/start"
        )
        assert f"voted on **{cast}** pairs" in progress
        # two models that wrote the same title make no pair, and one step of training may
        # change none of the sampled titles (seen once in nine runs): then nothing is left
        written: dict[tuple[str, int], set[str]] = {}
        for title in mirrored[0]["judge"]["titles"]:
            written.setdefault((title["idea"], title["sample"]), set()).add(title["text"])
        judged_ideas = {idea for (idea, _), texts in written.items() if len(texts) > 1}
        assert idea in judged_ideas if judged_ideas else "Nothing left to judge" in progress
        # and the next iteration starts from the restored policy
        said, table, _ = owner.predict("", "Typed below, one per line", "after the restart",
                                       None, 3, 0.7, 1, "next", 16, False, *training,
                                       api_name="/iteration_start")  # fmt: skip
        assert said.startswith(f"**next**: {restored} wrote") and table["data"][1][1] == "mirrored"
    finally:
        stop_app(process)


def mirrored_rounds(hub) -> list[dict]:
    """The round records in the mirror's one rounds file ([] before there is one)."""
    files = hub.repo_files("dataset", VOTES_REPO) if hub.repo_exists("dataset", VOTES_REPO) else {}
    found = [json.loads(text) for path, text in files.items() if path.startswith("rounds/")]
    assert len(found) <= 1
    return found[0] if found else []


def test_an_evaluation_round_comes_back_after_a_restart_with_its_unvoted_pairs(
    hub, tmp_path, marked_models
):
    """A round is mirrored whole: a Space restarted on an empty disk serves the pairs nobody
    voted on yet, first as before, and the round's report counts the votes cast before; and
    how every pool is served comes back with it."""
    password = "round mirror password"
    often = {"TITLE_DPO_VOTES_REPO": VOTES_REPO, "TITLE_DPO_SYNC_MINUTES": "0.02",
             "TITLE_DPO_SECRET": "a-space-secret-of-32-characters!",
             "TITLE_DPO_OWNER_PASSWORD": password}  # fmt: skip
    plain, marked = marked_models
    ideas = ["mirrored round one", "mirrored round two", "mirrored round three"]
    process, url = launch(hub, tmp_path, tmp_path / "disk-1", **often, args=("--model", str(plain)))
    try:
        owner = Client(url, verbose=False)
        owner.predict(password, api_name="/owner_sign_in")
        message, _ = create_round_in_app(owner, [plain, marked], ideas, "mirror round", False)
        assert "3 pairs in the voting pool now, served first" in message
        voter_client = Client(url, verbose=False)
        voter, first_idea, *_, pair_id, _ = voter_client.predict(None, api_name="/start")
        assert first_idea in ideas  # before the tutorial's 1,140 pairs
        voter_client.predict(voter, pair_id, api_name="/vote_left")
        # the owner stops serving the tutorial's pairs: that survives the restart too
        owner.predict("tutorial", 0, False, api_name="/pool_set")
        wait_for(lambda: sum(len(v) for v in shard_lines(hub).values()) == 1)
        wait_for(lambda: len(mirrored_rounds(hub)) == 1)
        wait_for(lambda: "pools/" in "".join(hub.repo_files("dataset", VOTES_REPO)))
        pools, _ = owner.predict(None, api_name="/pools")
        assert pools["data"][-1][0] == "tutorial" and pools["data"][-1][-1] == "no"
    finally:
        stop_app(process)
    (record,) = mirrored_rounds(hub)
    assert record["name"] == "mirror round" and len(record["titles"]) == 6
    assert record["priority"] == 1 and record["retired"] is False

    process, url = launch(hub, tmp_path, tmp_path / "disk-2", **often, args=("--model", str(plain)))
    try:
        owner = Client(url, verbose=False)
        owner.predict(password, api_name="/owner_sign_in")
        assert owner.predict(None, api_name="/pools")[0]["data"] == pools["data"]
        summary, *_, detail = owner.predict("mirror round", api_name="/evaluate_report")
        assert "1 vote from 1 voter" in summary
        assert sorted(row[0] for row in detail["data"]) == sorted(ideas)  # all three pairs
        # the same voter is served the round's other two pairs, then nothing (the tutorial's
        # pairs are retired)
        c = Client(url, verbose=False)
        _, idea, *_, pair_id, progress = c.predict(voter, api_name="/start")
        assert "voted on **1** pair " in progress
        served = [idea]
        for _ in range(2):
            idea, *_, pair_id, _ = c.predict(voter, pair_id, api_name="/vote_right")
            served.append(idea)
        assert set(served[:2]) == set(ideas) - {first_idea} and pair_id is None, served
    finally:
        stop_app(process)
