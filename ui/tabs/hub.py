"""The Hub tab, the owner's: the preference dataset and a tuned model pushed to the owner's
namespace with their cards, and how the votes' Hub mirror is doing."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from hub.auth import visitor_token
from hub.push import dataset_zip, publish_dataset, publish_model
from hub.sync import VoteMirror
from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.iterations import models_iterations_use
from pipeline.methods import run_choices, stored_runs
from pipeline.runs import delete_run, drop_run_checkpoints, run_removal, what_resuming_needs
from ui.context import Context, TabParts, Wiring
from ui.widgets import TUTORIAL_DATA, VOTES_DATA, screening, vote_screening

TITLE = "Hub"
SHOWN_TO = OWNER
DOWNLOADS_KEPT_S = 3600  # a downloaded zip is kept this long (Gradio serves its own copy)


def build(ctx: Context) -> TabParts:
    """On a Space a push uses the signed-in owner's own token; locally, HF_TOKEN. The app's
    HF_TOKEN on a Space is the vote mirror's, and nobody's else."""
    # Over 60 lines: the tab's layout, top to bottom as the page shows it (the dataset, a
    # run's model and its push, then the runs on the disk and a deletion), then its wiring.
    guard = ctx.guard
    how = (
        "Sign in with Hugging Face (the button at the top): pushes use your own token."
        if ctx.settings.on_space
        else "The app pushes with `HF_TOKEN` (a token with write access)."
    )
    gr.Markdown(
        "Publish the preference dataset and a tuned model to your Hugging Face namespace, with "
        "their cards: a run's model, or the SFT stage it started from, where blind votes find "
        f"that as good. {how} *Download it instead* gives the dataset's files as a zip, "
        "without a token: what its repo would hold."
    )
    with gr.Row():
        data_source = gr.Radio([VOTES_DATA, TUTORIAL_DATA], value=VOTES_DATA, label="Dataset")
        min_votes = gr.Number(1, precision=0, minimum=1, label="Votes per pair at least")
        dataset_repo = gr.Textbox("youtube-titles-dpo", label="Dataset repo (NAME or OWNER/NAME)")
        dataset_private = gr.Checkbox(False, label="Private")
    screen_in = list(vote_screening())
    with gr.Row():
        push_data = gr.Button("Push the dataset", variant="primary")
        download_data = gr.Button("Download it instead (zip)")
    dataset_file = gr.File(
        label="The downloaded dataset: its repo's files, data/*.parquet and README.md",
        interactive=False,
    )
    run = gr.Dropdown(
        [],
        label="Model (a finished or stopped training run, or its SFT stage alone)",
        allow_custom_value=True,
    )
    with gr.Row():
        model_repo = gr.Textbox("youtube-titles-dpo-model", label="Model repo (NAME or OWNER/NAME)")
        base_model = gr.Textbox("", label="Base model id (if the run started from a folder)")
        adapter_only = gr.Checkbox(False, label="LoRA adapter only")
        model_private = gr.Checkbox(False, label="Private")
    push_run = gr.Button("Push the model", variant="primary")
    with gr.Row(equal_height=True):
        stored = gr.Dropdown(
            [],
            label="Runs on this disk, newest first: finished, stopped or cut off",
            allow_custom_value=True,
            scale=3,
        )
        ask_delete = gr.Button("Delete the run from this disk…", scale=1)
    disk_line = gr.Markdown()
    with gr.Group(visible=False) as confirm:
        asked = gr.Markdown()
        with gr.Row():
            delete = gr.Button("Delete it", variant="stop")
            drop = gr.Button("Keep its model, drop its checkpoints", visible=False)
            keep = gr.Button("Keep it all")
    result = gr.Markdown()
    sync_line = gr.Markdown()

    publisher = Publisher(ctx)
    push_data.click(
        guard(OWNER, publisher.send_dataset),
        [data_source, min_votes, dataset_repo, dataset_private, *screen_in],
        result,
        api_name="hub_push_dataset",
    )
    download_data.click(
        guard(OWNER, publisher.download_dataset),
        [data_source, min_votes, dataset_repo, *screen_in],
        dataset_file,
        api_name="hub_download_dataset",
    )
    push_run.click(
        guard(OWNER, publisher.send_model),
        [run, model_repo, base_model, adapter_only, model_private],
        result,
        api_name="hub_push_model",
    )
    # a run takes a GB or more; deleting one is asked twice, and refused while it is in use
    ask_delete.click(guard(OWNER, publisher.ask_delete), stored, [asked, confirm, drop],
                     api_name="run_delete_check")  # fmt: skip
    delete.click(guard(OWNER, publisher.delete), stored,
                 [result, confirm, run, sync_line, stored, disk_line],
                 api_name="run_delete")  # fmt: skip
    # a stopped run's checkpoints (a full fine-tune's: GBs) may go alone, its model kept
    drop.click(guard(OWNER, publisher.drop_checkpoints), stored,
               [result, confirm, run, sync_line, stored, disk_line],
               api_name="run_drop_checkpoints")  # fmt: skip
    keep.click(guard(OWNER, lambda: gr.Group(visible=False)), None, confirm,
               api_visibility="private")  # fmt: skip
    refresh = gr.Button("Refresh")
    refresh.click(guard(OWNER, publisher.refresh), None, [run, sync_line], api_name="hub_status")
    refresh.click(guard(OWNER, publisher.on_disk), None, [stored, disk_line],
                  api_name="runs_on_disk")  # fmt: skip
    return TabParts(on_open=(
        Wiring(guard(OWNER, publisher.refresh), [run, sync_line]),
        Wiring(guard(OWNER, publisher.on_disk), [stored, disk_line]),
    ))  # fmt: skip


class Publisher:
    """The tab's handlers: a push of the dataset or of a run's model with the owner's token,
    and the runs and the mirror's state for the page."""

    def __init__(self, ctx: Context) -> None:
        self.store, self.folder, self.mirror = ctx.store, ctx.folder, ctx.mirror
        self.runner, self.generator = ctx.runner, ctx.generator
        self.on_space = ctx.settings.on_space
        self.downloads: Path | None = None  # this process's folder of downloads, made on first use

    def token_of(self, oauth_token: gr.OAuthToken | None) -> str | None:
        return visitor_token(oauth_token.token if oauth_token else None, self.on_space)

    def send_dataset(
        self,
        kind,
        min_count,
        repo,
        private,
        screen_fast,
        gold_floor,
        screen_burst,
        oauth_token: gr.OAuthToken | None = None,
    ):
        votes = self.store.path if kind == VOTES_DATA else None
        pushed = publish_dataset(
            repo,
            votes=votes,
            min_votes=int(min_count or 1),
            private=bool(private),
            token=self.token_of(oauth_token),
            screening=screening(screen_fast, gold_floor, screen_burst),
        )
        return pushed.describe(markdown=True)

    def download_folder(self) -> Path:
        """A fresh folder for one download (two owner sessions downloading at once never share
        one), inside this process's own folder of them, which goes when the process exits.
        Gradio serves a copy from its cache, so the zip is needed only until the handler
        returns: folders older than DOWNLOADS_KEPT_S go first, and a long-lived app keeps a few."""
        if self.downloads is None:
            self.downloads = Path(tempfile.mkdtemp(prefix="title-dpo-downloads-"))
            atexit.register(shutil.rmtree, self.downloads, ignore_errors=True)
        for old in self.downloads.iterdir():
            if time.time() - old.stat().st_mtime > DOWNLOADS_KEPT_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.downloads))

    def download_dataset(self, kind, min_count, repo, screen_fast, gold_floor, screen_burst):
        repo = (repo or "").strip() or "youtube-titles-dpo"
        path = dataset_zip(
            self.download_folder() / f"{repo.rsplit('/')[-1]}.zip",
            repo,
            votes=self.store.path if kind == VOTES_DATA else None,
            min_votes=int(min_count or 1),
            screening=screening(screen_fast, gold_floor, screen_burst),
        )
        return str(path)

    def send_model(
        self, folder_path, repo, base, adapter, private, oauth_token: gr.OAuthToken | None = None
    ):
        if not folder_path:
            raise UserError("no finished training run to push: train a model first")
        pushed = publish_model(
            folder_path,
            repo,
            adapter_only=bool(adapter),
            base_model=base or None,
            private=bool(private),
            token=self.token_of(oauth_token),
            store=self.store,  # its card says what people's blind votes said of it
        )
        return pushed.describe(markdown=True)

    def training_now(self) -> str | None:
        """The model folder of the run training now, if one is."""
        job = self.runner.status()
        return job.out if job.running else None

    def in_use(self) -> dict[str, str | None]:
        """What a run may not be deleted under: {what uses it: a model path}."""
        return {
            "Generate writes with its model": self.generator.name,
            "it is training now": self.training_now(),
            **models_iterations_use(self.store),
            **what_resuming_needs(runs_dir(self.folder)),
        }

    def ask_delete(self, run):
        removal = run_removal(runs_dir(self.folder), run or "", self.in_use())
        drop = gr.Button(visible=removal.may_drop_checkpoints)
        return removal.describe(), gr.Group(visible=True), drop

    def delete(self, run):
        removal = delete_run(runs_dir(self.folder), run or "", self.in_use())
        shown = removal.describe(done=True), gr.Group(visible=False)
        return *shown, *self.refresh(), *self.on_disk()

    def drop_checkpoints(self, run):
        said = drop_run_checkpoints(runs_dir(self.folder), run or "", self.training_now())
        return said, gr.Group(visible=False), *self.refresh(), *self.on_disk()

    def on_disk(self):
        """Every run on the disk with its size, none picked (a deletion is a choice), and what
        they take in all."""
        stored = stored_runs(runs_dir(self.folder), training=self.training_now())
        return gr.Dropdown(choices=stored.choices, value=None), stored.describe()

    def refresh(self):
        runs = run_choices(runs_dir(self.folder), stages=True)
        if isinstance(self.mirror, VoteMirror):
            line = self.mirror.status().describe()
        else:
            line = self.mirror or (
                "Votes are not mirrored to the Hub (set TITLE_DPO_VOTES_REPO and HF_TOKEN to "
                "keep them safe on a Space)."
            )
        return gr.Dropdown(choices=runs, value=runs[0][1] if runs else None), line
