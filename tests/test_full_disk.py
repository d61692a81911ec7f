"""The app's disk fills up: what a voter, the owner and a training run are told, and that
nothing kept before is lost. `python app.py` runs with its data folder on a small disk of its
own (tests/small_disk.py), filled from outside through the process's view of it."""

import json
import re
import time

import pytest
from small_disk import fill, seen_from_outside, skip_without_small_disks, small_disk

from app_process import start_app, stop_app
from ui.guard import FULL_DISK

TRAIN_FIELDS = [  # the Train tab's fields for a fast run of 3 epochs: long enough to Stop
    "The tutorial's 1,140 labelled pairs", 1, "", None, "fast", 3, 0.5, 5e-5, 8, True, 16, 32, 0
]  # fmt: skip


@pytest.fixture
def app_on_a_small_disk(tiny_model_dir, tmp_path):
    """The app with its data folder on a 64 MB disk; its process, URL and that folder as the
    test can reach it."""
    skip_without_small_disks(tmp_path)
    data = tmp_path / "data"
    process, url = start_app(
        "--model", str(tiny_model_dir), "--data", str(data), log_path=tmp_path / "app.log",
        wrapper=small_disk(data, "64m"),
    )  # fmt: skip
    yield process, url, seen_from_outside(process.pid, data)
    stop_app(process)


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _progress(c) -> str:
    return c.predict(api_name="/train_status")[0]


def _wait(c, states: tuple[str, ...], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while not (progress := _progress(c)).startswith(tuple(f"**{s}**" for s in states)):
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    return progress


def test_a_vote_on_a_full_disk_is_refused_in_words_and_counted_once_space_is_freed(
    app_on_a_small_disk,
):
    _process, url, data = app_on_a_small_disk
    voter = _client(url)
    voter_id, _idea, _a, _b, pair_id, progress = voter.predict(None, api_name="/start")
    assert "voted on **0** pairs" in progress
    ballast = fill(data)
    # SQLite may still write a vote or two into its journal's room; then it has none, and the
    # page's progress line says so (an unqueued event's error would show nowhere on the page)
    for counted in range(60):
        *_, next_pair, progress = voter.predict(voter_id, pair_id, api_name="/vote_left")
        if progress.startswith("**Not saved.**"):
            assert progress == f"**Not saved.** {FULL_DISK}", progress
            break
        assert f"voted on **{counted + 1}** pair" in progress, progress
        pair_id = next_pair
    else:
        pytest.fail("60 votes were stored on a full disk")
    ballast.unlink()
    # the refused vote was not stored, nor any before it lost: cast again, it is one more
    *_, progress = voter.predict(voter_id, pair_id, api_name="/vote_left")
    assert f"voted on **{counted + 1}** pair" in progress, progress


def test_a_run_that_fills_the_disk_says_so_and_resumes_from_its_checkpoint_once_freed(
    app_on_a_small_disk, tiny_model_dir
):
    _process, url, data = app_on_a_small_disk
    owner = _client(url)  # the loopback caller is the owner
    fields = [*TRAIN_FIELDS[:3], str(tiny_model_dir), *TRAIN_FIELDS[4:]]
    # a start on a full disk cannot even write the run's dataset: the owner is told
    ballast = fill(data)
    with pytest.raises(Exception, match="The app's disk is full, so nothing was saved"):
        owner.predict(*fields, api_name="/train_start")
    ballast.unlink()
    # a run stopped part way keeps its checkpoint; resumed on a full disk, it fails in words
    owner.predict(*fields, api_name="/train_start")
    _wait(owner, ("running",))
    while "· step " not in (progress := _progress(owner)):  # in its loop, past the SFT stage
        assert not progress.startswith("**done**"), "the run ended before Stop"
        time.sleep(0.05)
    owner.predict(api_name="/train_stop")
    stopped = _wait(owner, ("stopped",))
    step, total = map(int, re.search(r"Stopped at step (\d+) of (\d+)", stopped).groups())
    ballast = fill(data)
    owner.predict(str(tiny_model_dir), *fields[4:-1], api_name="/train_resume")
    failed = _wait(owner, ("failed",))
    assert "the disk is full: 0 B free on the disk of " in failed, failed
    assert "*Runs on this disk* lists every run with its size" in failed, failed
    assert f"The run's last checkpoint is at step {step}: Resume carries on from there" in failed
    # the model Stop saved is still whole and offered, and the disk list says what is free
    stored, line = owner.predict(api_name="/runs_on_disk")
    assert line.endswith("; 0 B free on it."), line
    (run,) = [label for label, _ in stored["choices"] if "fast" in label]
    assert f"stopped at {step} of {total} steps" in run, run
    # freed, Resume carries the run on from that checkpoint to its end
    ballast.unlink()
    owner.predict(str(tiny_model_dir), *fields[4:-1], api_name="/train_resume")
    done = _wait(owner, ("done", "failed"))
    assert done.startswith(f"**done** · step {total}/{total}"), done
    took = rf"Done: {total} steps \(the last {total - step} in \d+ s, resumed from a checkpoint\);"
    assert re.search(took, done), done
    (summary,) = data.glob("runs/*/model/train_summary.json")
    assert json.loads(summary.read_text())["steps_this_call"] == total - step
