"""Publish a preference dataset or a tuned model to the Hub, with its card, in one commit.

A push is planned first (`dataset_plan`, `model_plan`: which files, under which names, and the
card), without any network call, so `--dry-run` can show exactly what would go up. `push` then
checks the token and the namespace, creates the repo if needed, and sends everything as one
commit: the Hub applies a commit whole or not at all, so a push cut off midway leaves the repo
as it was, and running it again finishes it (files already uploaded are not sent again). An
unchanged re-push makes no commit. Files a previous push left that this one would not write
(an old split, weights of the other kind) are deleted in the same commit, so a repo never
mixes two pushes.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.auth import (
    AGAIN_AFTER_A_PUSH,
    TRANSPORT_ERRORS,
    check_repo_id,
    find_token,
    hub_failure,
    whoami,
    writable_repo_id,
)
from hub.cards import STAGE_FIELDS, TUTORIAL_DATASET, dataset_card, model_card, stage_card
from pipeline.datasets import dataset_summary
from pipeline.errors import UserError
from pipeline.methods import method_of
from pipeline.metrics import read_metrics
from pipeline.models import ADAPTER_BASE
from pipeline.ratings import NO_SCREENING, Screening
from pipeline.runs import (
    RUN_START,
    SFT_STAGE,
    STAGE_SUMMARY,
    model_place,
    run_name,
    run_of_stage,
    run_summary,
    stage_summary,
)
from pipeline.tracking import RUN_FILE
from pipeline.votes import VoteStore
from pipeline.winrates import PeopleVerdict, people_verdicts
from pipeline.wording import counted, file_size

# Files of a saved model folder that describe the model; anything else there (checkpoints,
# the SFT stage, TRL's auto-generated README, pickled training args, how the run started with
# its local paths) stays home.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model")
LOCAL_ONLY = {"train_summary.json", "README.md", "training_args.bin", RUN_FILE, RUN_START,
              STAGE_SUMMARY, ADAPTER_BASE}  # fmt: skip
PUBLIC_SUMMARY = ("base_model", "recipe", "steps", "train_loss", "eval_loss", "seconds")
# What a model push owns in a repo: stale copies of these are deleted by the next push.
WEIGHT_FILES = ("config.json", "adapter_config.json", "model.safetensors.index.json")


@dataclass(frozen=True)
class Upload:
    path_in_repo: str
    content: Path | bytes

    @property
    def size(self) -> int:
        return len(self.content) if isinstance(self.content, bytes) else self.content.stat().st_size


@dataclass(frozen=True)
class PushPlan:
    """What one push sends. `card` writes README.md for the final repo id (known only once
    the token says whose namespace a bare name goes to)."""

    repo_id: str  # as given: `namespace/name`, or a bare name for the user's own namespace
    repo_type: str  # "dataset" or "model"
    files: tuple[Upload, ...]
    card: Callable[[str], str]
    message: str
    private: bool = False
    owns: Callable[[str], bool] = lambda path: False  # stale repo files this push replaces

    @property
    def shown_id(self) -> str:
        """The repo id to show before the token says whose namespace a bare name goes to."""
        return self.repo_id if "/" in self.repo_id else f"YOUR-NAME/{self.repo_id}"

    def uploads(self, repo_id: str) -> list[Upload]:
        return [*self.files, Upload("README.md", self.card(repo_id).encode())]

    def describe(self) -> str:
        """What `--dry-run` prints: the target, each file with its size, then the card."""
        shown_id = self.shown_id
        uploads = self.uploads(shown_id)
        lines = [
            f"would push {len(uploads)} files to the {self.repo_type} repo {shown_id} "
            f"({'private' if self.private else 'public'}) as one commit: {self.message!r}",
            *(f"  {u.path_in_repo}  {file_size(u.size)}" for u in uploads),
            "",
            "README.md:",
            uploads[-1].content.decode(),
        ]
        return "\n".join(lines)

    def write_zip(self, path: str | Path) -> Path:
        """The files this push would send, under the names they would have in the repo, in a
        zip at PATH: the repo's contents without a token or the network."""
        import zipfile

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for upload in self.uploads(self.shown_id):
                content = upload.content
                data = content if isinstance(content, bytes) else content.read_bytes()
                archive.writestr(upload.path_in_repo, data)
        return path


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    repo_type: str
    url: str
    commit: str
    changed: bool  # False: the repo already held exactly this; no commit was made
    private_ignored: bool = False  # --private asked for an existing repo: visibility unchanged

    def describe(self, markdown: bool = False) -> str:
        what = "pushed" if self.changed else "already up to date (no new commit)"
        commit = self.commit[:10]
        if markdown:
            line = f"{what.capitalize()}: [{self.repo_id}]({self.url}) at commit `{commit}`"
        else:
            line = f"{self.repo_id}: {what} at {commit}: {self.url}"
        if self.private_ignored:
            line += " (the repo already existed: its visibility was left as it is)"
        return line


# --- planning ---------------------------------------------------------------------------------


def dataset_plan(
    folder: str | Path, repo_id: str, *, private: bool = False, license: str = "mit"
) -> PushPlan:
    """A dataset folder written by `pipeline.datasets.save_dataset` as a Hub dataset repo:
    one parquet file per split under `data/`, named as `push_to_hub` names them."""
    repo_id = check_repo_id(repo_id, "dataset")
    folder = Path(folder)
    summary_file = folder / "summary.json"
    if not summary_file.is_file() or not (folder / "parquet").is_dir():
        raise UserError(f"{folder} is not a dataset folder (run `python -m pipeline dataset`)")
    summary = json.loads(summary_file.read_text())
    files = []
    for split in summary["rows"]:
        parquet = folder / "parquet" / f"{split}.parquet"
        if not parquet.is_file():
            raise UserError(f"{folder}: the {split} split's parquet file is missing")
        files.append(Upload(f"data/{split}-00000-of-00001.parquet", parquet))
    rows = sum(summary["rows"].values())
    return PushPlan(
        repo_id=repo_id,
        repo_type="dataset",
        files=tuple(files),
        card=lambda full_id: dataset_card(summary, full_id, license),
        message=f"Preference dataset: {counted(rows, 'pair')} ({_describe_source(summary)})",
        private=private,
        owns=lambda path: path.startswith("data/"),
    )


@contextlib.contextmanager
def model_plan(
    run: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    adapter_only: bool = False,
    base_model: str | None = None,
    dataset_id: str | None = None,
    license: str | None = None,
    store: VoteStore | None = None,
) -> Iterator[PushPlan]:
    """A finished run's model folder (DPO or online RL: a model that writes titles; or a
    reward model, with a card of its own), or its SFT stage (RUN/model/sft: `_stage_plan`),
    as a Hub model repo. A plan in a context: what it sends may be made for the push alone.

    By default the merged model (a LoRA run is saved merged); `adapter_only` sends the LoRA
    adapter instead, with `base_model` as its base (a run with an SFT stage has its SFT
    adapter folded in, so the one adapter goes straight onto the base model). With the app's
    vote `store`, the card says what people's blind votes in its evaluation rounds said."""
    repo_id = check_repo_id(repo_id, "model")
    run = Path(run)
    told = {"adapter_only": adapter_only, "license": license, "private": private}
    if (owner := run_of_stage(run)) is not None:
        summary = run_summary(owner) or {}
        ids = _ids(summary, base_model, dataset_id)
        with _stage_plan(run, owner, summary, repo_id, *ids, store, **told) as plan:
            yield plan
        return
    summary = run_summary(run)
    if summary is None:
        raise UserError(f"{run} holds no finished training run (no train_summary.json)")
    method = method_of(summary)
    if not method.writes_titles and adapter_only:
        raise UserError(f"{run} is a reward model: it is pushed whole, not as an adapter")
    base_model, dataset_id = _ids(summary, base_model, dataset_id)
    metrics = read_metrics(run / "metrics.jsonl")
    files = _run_uploads(run, summary, base_model, adapter_only, metrics)
    people = None if store is None else _people_verdicts(store, run, summary, base_model)
    card_told = {"adapter_only": adapter_only, "license": license, "people": people}

    def card(full_id: str) -> str:
        return model_card(summary, metrics, full_id, base_model, dataset_id, **card_told)

    kind = "LoRA adapter" if adapter_only else "model"
    # DPO, GRPO, RLOO; a reward model has no title-writing card
    trained_with = method.tag(summary["recipe"]) or "Reward"
    recipe_name = summary["recipe"]["name"]
    message = f"{trained_with} {kind}: {recipe_name} recipe, {counted(summary['steps'], 'step')}"
    yield _model_repo_plan(repo_id, files, card, message, private)


def _model_repo_plan(
    repo_id: str, files: list[Upload], card: Callable[[str], str], message: str, private: bool
) -> PushPlan:
    """A model repo's push: its weights of one kind (merged or adapter) replace the other's."""
    return PushPlan(
        repo_id=repo_id,
        repo_type="model",
        files=tuple(files),
        card=card,
        message=message,
        private=private,
        owns=lambda path: "/" not in path and _is_weights(path),
    )


def _ids(
    summary: dict[str, Any], base_model: str | None, dataset_id: str | None
) -> tuple[str | None, str | None]:
    """The base model's and the dataset's Hub ids: as given, else as the run says, checked."""
    base_model = base_model or summary.get("base_model")
    if base_model:
        base_model = check_repo_id(base_model, "base model")
    dataset_id = dataset_id or _dataset_id(summary.get("data"))
    if dataset_id:
        dataset_id = check_repo_id(dataset_id, "dataset")
    return base_model, dataset_id


@contextlib.contextmanager
def _stage_plan(
    stage: Path,
    run: Path,
    summary: dict[str, Any],
    repo_id: str,
    base_model: str | None,
    dataset_id: str | None,
    store: VoteStore | None,
    *,
    adapter_only: bool,
    license: str | None,
    private: bool,
) -> Iterator[PushPlan]:
    """A run's SFT stage as a model of its own: when people's blind votes find it as good as
    the run's final model, it is the one worth publishing. A stage kept as its adapter is
    merged for a merged push, in a temporary folder that goes with the plan."""
    recipe, done = summary["recipe"], stage_summary(stage)
    with contextlib.ExitStack() as temporary:
        if adapter_only:  # its tokenizer, and its adapter on the base
            files = [Upload(p.name, p) for p in _model_files(stage) if not _is_weights(p.name)]
            files += _adapter_uploads(run, summary, base_model, stage_only=True)
        else:
            folder = stage
            if not (stage / "config.json").is_file():
                folder = temporary.enter_context(merged_stage(stage, dtype_of=run))
            files = [Upload(p.name, p) for p in _model_files(folder)]
        public = {"base_model": base_model, "stage": SFT_STAGE, "of_method": summary.get("kind"),
                  "recipe": {key: recipe.get(key) for key in STAGE_FIELDS},
                  "steps": done.get("steps"), "examples": done.get("examples")}  # fmt: skip
        files.append(Upload("training_summary.json", _json_bytes(public)))
        people = None if store is None else _people_verdicts(store, stage, summary, base_model)
        card_told = {"adapter_only": adapter_only, "license": license, "people": people}

        def card(full_id: str) -> str:
            return stage_card(summary, done, full_id, base_model, dataset_id, **card_told)

        kind = "LoRA adapter" if adapter_only else "model"
        steps = f", {counted(done['steps'], 'step')}" if done.get("steps") is not None else ""
        of_run = f"the SFT stage of {run_name(run)} ({recipe['name']} recipe{steps})"
        yield _model_repo_plan(repo_id, files, card, f"SFT {kind}: {of_run}", private)


@contextlib.contextmanager
def merged_stage(stage: Path, dtype_of: Path) -> Iterator[Path]:
    """An SFT stage kept as its adapter, merged into its base (`load_model` does it) and saved
    in a temporary folder, in the dtype its run's model was saved in: what a merged push of
    the stage sends, as a stage kept merged would be."""
    from transformers import AutoConfig

    from pipeline.models import load_model

    try:
        loaded = load_model(str(stage), fresh=True)
    except UserError as exc:  # its base cannot be loaded here (the Hub out of reach)
        raise UserError(
            f"{exc}; its LoRA adapter alone goes up without its base (--adapter-only; "
            "*LoRA adapter only* on the Hub tab)"
        ) from None
    model = loaded.model.to(AutoConfig.from_pretrained(dtype_of).dtype or loaded.model.dtype)
    with tempfile.TemporaryDirectory(prefix="title-dpo-stage-") as folder:
        model.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)
        del loaded, model  # the files are what goes up: the weights' memory is free meanwhile
        yield Path(folder)


def _run_uploads(
    run: Path, summary: dict[str, Any], base_model: str | None, adapter_only: bool, metrics
) -> list[Upload]:
    """What a model repo gets from the run: the weights (merged, or the adapter alone), the
    tokenizer and config, the public part of its summary, and what it logged."""
    files = [Upload(p.name, p) for p in _model_files(run) if not p.name.startswith("adapter_")]
    if adapter_only:
        files = [u for u in files if not _is_weights(u.path_in_repo)]
        files += _adapter_uploads(run, summary, base_model)
    if not any(_is_weights(u.path_in_repo) for u in files):
        raise UserError(f"{run} has no saved model weights: is the run finished?")
    # Local paths (the run, its data, checkpoints, a base model folder) stay home.
    public_summary = {key: summary.get(key) for key in PUBLIC_SUMMARY} | {"base_model": base_model}
    files.append(Upload("training_summary.json", _json_bytes(public_summary)))
    if metrics:
        files.append(Upload("metrics.jsonl", run / "metrics.jsonl"))
    return files


def _model_files(run: Path) -> list[Path]:
    return sorted(
        p
        for p in run.iterdir()
        if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES and p.name not in LOCAL_ONLY
    )


def _is_weights(path: str) -> bool:
    return path.endswith((".safetensors", ".bin")) or path in WEIGHT_FILES


def _adapter_uploads(
    run: Path, summary: dict[str, Any], base_model: str | None, stage_only: bool = False
) -> list[Upload]:
    """The run's LoRA as one adapter on `base_model`: its SFT stage's and its own stacked, or
    (`stage_only`) the stage's alone."""
    if not summary["recipe"].get("lora_r"):
        raise UserError(
            f"{run} is a full fine-tune: it has no adapter; push the whole model instead"
        )
    if not base_model:
        raise UserError(
            "the base model's Hub id is unknown (the run started from a local folder): "
            "pass --base-model with the id of the model it started from"
        )
    own = run / "adapter"
    sft = run / SFT_STAGE / "adapter"
    if stage_only:
        layers = [sft]
    else:
        layers = [sft, own] if summary["recipe"].get("sft_epochs") else [own]
        if not (own / "adapter_config.json").is_file():
            raise UserError(f"{run} has no saved adapter ({own})")
    if sft in layers and not (sft / "adapter_config.json").is_file():
        raise UserError(
            f"{run} was trained before SFT-stage adapters were kept, so its adapter alone "
            "does not reproduce the model: push the merged model instead"
        )
    config, weights = stack_adapters(layers)
    config["base_model_name_or_path"] = base_model
    return [
        Upload("adapter_config.json", _json_bytes(config)),
        Upload("adapter_model.safetensors", weights),
    ]


def stack_adapters(folders: list[Path]) -> tuple[dict[str, Any], bytes]:
    """One LoRA adapter equal to applying `folders`' adapters one after the other.

    Each LoRA adds B·A·(alpha/r) to a weight, and merging is addition, so two adapters on the
    same modules are one adapter of rank r1 + r2: A stacked by rows, B by columns, with each B
    rescaled from its own alpha/r to the stacked one's.
    """
    import torch
    from safetensors.torch import load_file, save

    configs = [json.loads((f / "adapter_config.json").read_text()) for f in folders]
    for config in configs:
        if config.get("use_rslora") or config.get("use_dora") or config.get("rank_pattern"):
            raise UserError("only plain LoRA adapters can be stacked: push the merged model")
    if len({json.dumps(sorted(c["target_modules"])) for c in configs}) > 1:
        raise UserError("the adapters target different modules: push the merged model")
    rank = sum(c["r"] for c in configs)
    alpha = sum(c["lora_alpha"] for c in configs)
    scale = alpha / rank
    tensors = [load_file(f / "adapter_model.safetensors") for f in folders]
    stacked: dict[str, torch.Tensor] = {}
    for key in tensors[0]:
        parts = [t[key] for t in tensors]
        if ".lora_A." in key:
            stacked[key] = torch.cat(parts, dim=0).contiguous()
        elif ".lora_B." in key:
            own = [c["lora_alpha"] / c["r"] for c in configs]
            rescaled = [p * (s / scale) for p, s in zip(parts, own, strict=True)]
            stacked[key] = torch.cat(rescaled, dim=1)
        else:
            raise UserError(f"unexpected adapter tensor {key}: push the merged model")
    config = {**configs[-1], "r": rank, "lora_alpha": alpha}
    return config, save(stacked, metadata={"format": "pt"})


def _dataset_id(data_folder: str | None) -> str | None:
    """The Hub dataset a run trained on, when its dataset folder says so."""
    source = str(dataset_summary(data_folder).get("source", ""))
    if source == "seed":
        return TUTORIAL_DATASET  # the same 1,140 labelled pairs (split by idea here)
    if source.startswith("hub:"):
        return source.removeprefix("hub:").split("@")[0]
    return None


def _people_verdicts(
    store: VoteStore, model: Path, summary: dict[str, Any], base_model: str | None
) -> list[tuple[str, PeopleVerdict]]:
    """People's verdicts on a run's model (or on its SFT stage), each with the card's name
    for the other model: the run's own models and its starting model by those names, any
    other model by its round label."""
    if model.name == SFT_STAGE:  # the stage's card: the run's model is what it became
        then = method_of(summary).tag(summary["recipe"]) or "final"
        own = {model_place(model.parent): f"the {then} model trained from it"}
    else:
        own = {model_place(model / SFT_STAGE): "its SFT stage"}
    if started := summary.get("started_from"):
        own[model_place(started)] = f"its base model ({base_model or started})"
    verdicts = people_verdicts(store, model)
    return [(own.get(model_place(v.other), v.result.other), v) for v in verdicts]


def _describe_source(summary: dict[str, Any]) -> str:
    if "votes" in summary:
        return f"{counted(summary['votes'], 'vote')} by {counted(summary['voters'], 'voter')}"
    return "the tutorial's labelled pairs" if summary.get("source") == "seed" else "imported"


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


# --- pushing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a push may go: the full repo id, checked against the token's owner."""

    repo_id: str
    token: str = field(repr=False)


def authorize(repo_id: str, token: str | None = None) -> Target:
    """Check the id, find the token, ask the Hub whose it is: before any work is done."""
    repo_id = check_repo_id(repo_id)
    token = find_token(token)
    return Target(writable_repo_id(repo_id, whoami(token)), token)


def push(plan: PushPlan, target: Target | str | None = None) -> PushResult:
    """Send `plan` as one commit; a UserError (token never in it) for anything that stops it.

    `target` is an `authorize` result, or a token (None: HF_TOKEN or the saved login)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if not isinstance(target, Target):
        target = authorize(plan.repo_id, target)
    repo_id, token = target.repo_id, target.token
    if plan.repo_id not in (repo_id, repo_id.split("/", 1)[1]):
        raise ValueError(f"planned for {plan.repo_id}, authorized for {repo_id}")
    api = HfApi(token=token)
    action = f"push to {repo_id}"
    try:
        try:
            before = api.repo_info(repo_id, repo_type=plan.repo_type).sha
            existing = api.list_repo_files(repo_id, repo_type=plan.repo_type)
        except RepositoryNotFoundError:
            before, existing = None, []
        url = str(
            api.create_repo(repo_id, repo_type=plan.repo_type, private=plan.private, exist_ok=True)
        )
        uploads = plan.uploads(repo_id)
        written = {u.path_in_repo for u in uploads}
        operations: list[Any] = [
            CommitOperationAdd(
                u.path_in_repo, u.content if isinstance(u.content, bytes) else str(u.content)
            )
            for u in uploads
        ]
        operations += [
            CommitOperationDelete(path)
            for path in existing
            if path not in written and plan.owns(path)
        ]
        info = api.create_commit(
            repo_id, operations, commit_message=plan.message, repo_type=plan.repo_type
        )
    except (HfHubHTTPError, *TRANSPORT_ERRORS) as exc:
        raise UserError(hub_failure(exc, action, token, again=AGAIN_AFTER_A_PUSH)) from None
    return PushResult(
        repo_id=repo_id,
        repo_type=plan.repo_type,
        url=url,
        commit=info.oid,
        changed=info.oid != before,
        private_ignored=plan.private and before is not None,
    )


# --- what the app calls -----------------------------------------------------------------------


def publish_dataset(
    repo_id: str,
    *,
    votes: str | Path | None = None,
    min_votes: int = 1,
    private: bool = False,
    token: str | None = None,
    split: str = "idea",
    screening: Screening = NO_SCREENING,
) -> PushResult:
    """Build the dataset (the tutorial's pairs, or `votes`: a vote database, screened as
    `pipeline.ratings.screen_votes` says) and push it. The token and namespace are checked
    first, so a refusal costs nothing."""
    target = authorize(repo_id, token)
    with built_dataset(votes, split, min_votes, screening) as folder:
        return push(dataset_plan(folder, target.repo_id, private=private), target)


def dataset_zip(
    path: str | Path,
    repo_id: str,
    *,
    votes: str | Path | None = None,
    min_votes: int = 1,
    split: str = "idea",
    screening: Screening = NO_SCREENING,
) -> Path:
    """Build the dataset as `publish_dataset` does and write what its push would send (the
    splits' parquet files under data/, and the card as README.md) into a zip at PATH. Unzipped,
    it is the dataset repo: `load_dataset(FOLDER)` reads it. No token, no network."""
    check_repo_id(repo_id, "dataset")
    with built_dataset(votes, split, min_votes, screening) as folder:
        return dataset_plan(folder, repo_id).write_zip(path)


@contextlib.contextmanager
def built_dataset(
    votes: str | Path | None,
    split: str = "idea",
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
) -> Iterator[Path]:
    """The dataset folder (`pipeline.datasets.write_dataset_folder`) in a temporary folder
    that is gone afterwards: what a push of a freshly built dataset plans from."""
    from pipeline.datasets import write_dataset_folder

    with tempfile.TemporaryDirectory(prefix="title-dpo-push-") as tmp:
        folder = Path(tmp) / "dataset"
        write_dataset_folder(folder, votes, split, min_votes, screening)
        yield folder


def publish_model(
    run: str | Path,
    repo_id: str,
    *,
    adapter_only: bool = False,
    base_model: str | None = None,
    private: bool = False,
    token: str | None = None,
    store: VoteStore | None = None,
) -> PushResult:
    """Push a finished run's model (or adapter), or its SFT stage's; the run is checked
    before the token. With the app's vote `store`, its card carries people's verdicts from
    evaluation rounds."""
    told = {"private": private, "adapter_only": adapter_only, "base_model": base_model or None}
    with model_plan(run, repo_id, store=store, **told) as plan:
        return push(plan, authorize(repo_id, token))
