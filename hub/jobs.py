"""Train on Hugging Face Jobs: a run that outgrows a Space (a bigger model, a long RL run, a
run that goes on while the Space sleeps) goes to a machine of the owner's choosing.

A job is one shell script on a stock PyTorch image. It fetches this project's code at the
commit the owner is on (uploaded beforehand, as one archive, to a private dataset repo of the
owner's), installs the training runtime, then runs the same three commands a local user would:

    python -m hub pull-dataset DATA --out ../run/data
    python -m pipeline train|reward|rl --data ../run/data --out ../run/model --model M --recipe R
    python -m hub push-model ../run/model --repo REPO --dataset DATA
    python -m hub push-model ../run/model/sft --repo SFT-REPO ...   (with --push-sft-to)

so a job trains with the same code and recipe as a local run, and pushes the model with its
card in one commit (the job's disk is gone when it ends; a job that fails before the push
leaves the repo as it was). A flavor with several GPUs runs the training command under
`accelerate launch` with configs/accelerate/multi_gpu.yaml, one process per GPU.

The owner's token reaches the job as the secret HF_TOKEN: it is not in the command, the
environment, the labels or anything this module prints. Every step before the submission
(flavor, timeout, method, recipe, repo ids, the dataset and model on the Hub) is checked here,
so a mistake costs no GPU time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hub.auth import (
    TRANSPORT_ERRORS,
    check_repo_id,
    find_token,
    first_line,
    hub_failure,
    redact,
    whoami,
)
from hub.auth import writable_repo_id as _writable_repo_id
from pipeline.errors import UserError
from pipeline.metrics import PRINT_METRICS, is_metrics_line, metrics_from_lines
from pipeline.models import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
FLAVORS_FILE = ROOT / "configs" / "jobs-flavors.json"
MULTI_GPU_CONFIG = "configs/accelerate/multi_gpu.yaml"
# A stock image with torch and CUDA: the job installs requirements-jobs.txt on top of it.
DEFAULT_IMAGE = "pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime"
DEFAULT_FLAVOR = "a10g-small"
DEFAULT_TIMEOUT = "1h"
PUBLIC_HUB = "https://huggingface.co"  # a job talks to it unless told otherwise
CODE_REPO = "title-dpo-job-code"  # a private dataset repo in the owner's namespace
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")  # a user or organisation name
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
APP_LABEL = "title-dpo"  # every job this project submits carries the label app=title-dpo
TOKEN_SECRET = "HF_TOKEN"
# What the job's environment says about it (read back by `job_state`); never a secret.
ENV_METHOD = "TITLE_DPO_METHOD"
ENV_PUSH_TO = "TITLE_DPO_PUSH_TO"
ENV_TIMEOUT = "TITLE_DPO_TIMEOUT_S"
ENDED = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
# Where the project's files are, for an archive made without git (a copy with no .git).
PROJECT_FILES = (
    "app.py", "pyproject.toml", "README.md", "requirements.txt", "requirements-jobs.txt",
    "pipeline", "hub", "ui", "configs", "data",
)  # fmt: skip


# --- flavors, timeouts, prices ---------------------------------------------------------------


@dataclass(frozen=True)
class Flavor:
    name: str
    usd_per_hour: float
    gpus: int
    label: str


def flavors() -> dict[str, Flavor]:
    """The Jobs flavors with their price and GPU count (configs/jobs-flavors.json)."""
    listed = json.loads(FLAVORS_FILE.read_text())["flavors"]
    return {
        name: Flavor(name, float(v["usd_per_hour"]), int(v["gpus"]), v["name"])
        for name, v in listed.items()
    }


def prices_read() -> str:
    return json.loads(FLAVORS_FILE.read_text())["read"]


def check_flavor(name: str) -> Flavor:
    known = flavors()
    if name not in known:
        raise UserError(
            f"unknown Jobs flavor {name!r}: one of {', '.join(known)} (`python -m hub jobs "
            "flavors` lists them with their prices)"
        )
    return known[name]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def timeout_seconds(text: str | int) -> int:
    """'90m', '2h', '1d', '45s' or a number of seconds, as seconds; at least a minute."""
    text = str(text).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text)
    if not match:
        raise UserError(f"--timeout {text!r}: write it like 90m, 2h or 3600 (seconds)")
    seconds = int(float(match.group(1)) * _UNITS[match.group(2) or "s"])
    if seconds < 60:
        raise UserError(f"--timeout {text!r} is under a minute: a job needs minutes to start")
    return seconds


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.0f} s"


def cost_line(flavor: Flavor, seconds: float, what: str) -> str:
    cost = flavor.usd_per_hour * seconds / 3600
    return (
        f"{what}: at most ${cost:.2f} ({duration(seconds)} on {flavor.name} at "
        f"${flavor.usd_per_hour:.2f}/h, prices as listed on {prices_read()}); billed by the "
        "minute while it starts and runs, so a run that ends sooner costs less"
    )


# --- the request and the job it becomes ------------------------------------------------------


@dataclass(frozen=True)
class JobRequest:
    """What `train-on-jobs` (or the Train tab) asks for."""

    data: str  # a Hub dataset with prompt / chosen / rejected
    push_to: str  # the model repo the job pushes to (a bare name: the owner's namespace)
    method: str = "dpo"  # a key of pipeline.methods.METHODS
    recipe: str | None = None  # a shipped recipe's name (default: the method's default)
    # knobs of that recipe changed, as `pipeline train --KNOB VALUE` would (the Train tab's
    # form, `--set KNOB=VALUE`): ((knob, value), ...)
    changes: tuple[tuple[str, Any], ...] = ()
    model: str = DEFAULT_MODEL
    flavor: str = DEFAULT_FLAVOR
    timeout: str = DEFAULT_TIMEOUT
    reward: str | None = None  # rl: the reward model's Hub id (a pushed reward job)
    max_steps: int | None = None
    private: bool = False
    image: str = DEFAULT_IMAGE
    # where the job runs and is billed: an organisation the user belongs to (None: the user)
    namespace: str | None = None
    # the model repo the run's SFT stage goes to as well (None: it goes nowhere): a job's disk
    # is gone when it ends, and blind rounds often find the stage as good as the model
    push_sft_to: str | None = None

    def checked(self) -> JobRequest:
        """Every check that needs no network, in the order a user would fix them."""
        from pipeline.methods import METHODS

        if self.method not in METHODS:
            raise UserError(f"unknown --method {self.method!r}: one of {', '.join(METHODS)}")
        method = METHODS[self.method]
        check_repo_id(self.data, "dataset", example="shawhin/youtube-titles-dpo")
        check_repo_id(self.push_to, "model", example="your-name/title-model")
        check_repo_id(self.model, "model", example=DEFAULT_MODEL)
        if self.recipe and Path(self.recipe).suffix in (".yaml", ".yml"):
            raise UserError(
                f"--recipe {self.recipe}: a job takes a shipped recipe by name (commit a new "
                "recipe under configs/recipes/ to use it on Jobs)"
            )
        recipe = self.training_recipe()
        if method.takes_reward_model and recipe.reward_weight and not self.reward:
            raise UserError(
                "--method rl needs --reward REPO: the reward model's Hub id (push one with "
                "`train-on-jobs --method reward`)"
            )
        if self.reward:
            check_repo_id(self.reward, "reward model", example="your-name/title-reward")
        if self.push_sft_to:
            check_repo_id(self.push_sft_to, "model", example="your-name/title-model-sft")
            if not getattr(recipe, "sft_epochs", 0):
                raise UserError(f"--push-sft-to: the {recipe.name} recipe has no SFT stage to push")
            if self.push_sft_to == self.push_to:
                raise UserError("--push-sft-to: the SFT stage needs a repo of its own")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError("--max-steps must be at least 1")
        check_flavor(self.flavor)
        timeout_seconds(self.timeout)
        if self.namespace is not None and not _NAMESPACE.fullmatch(self.namespace):
            raise UserError(f"--namespace {self.namespace!r}: a user or organisation name")
        return self

    def training_recipe(self):
        """The recipe the job trains with: the named one, with the changes."""
        from pipeline.methods import METHODS
        from pipeline.recipes import get_recipe, recipe_changed

        recipe = get_recipe(self.recipe, METHODS[self.method].recipe)
        return recipe_changed(recipe, dict(self.changes), "recipe change")


@dataclass(frozen=True)
class ProjectCode:
    """This project's files as the job will get them: one .tar.gz named by what it holds."""

    label: str  # the git commit (COMMIT-changed-TREE with changes), or tree-HASH without git
    archive: bytes
    uncommitted: bool  # it holds changes not committed yet

    @property
    def filename(self) -> str:
        return f"{self.label}.tar.gz"


def project_code(root: Path = ROOT) -> ProjectCode:
    """The project at its current commit (`git archive HEAD`), with the uncommitted changes
    to its tracked files when there are some (so a job runs what a local run would); without
    git, its files."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        # a commit object of the working tree, made without touching it; empty when clean
        changes = _git(root, "stash", "create").strip()
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar.gz", changes or commit],
            capture_output=True,
            check=True,
        ).stdout
        if changes:  # named by what the files hold (the stash commit's own id has a time)
            tree = _git(root, "rev-parse", f"{changes}^{{tree}}").strip()
            return ProjectCode(f"{commit[:12]}-changed-{tree[:12]}", archive, True)
        return ProjectCode(commit, archive, False)
    except (OSError, subprocess.CalledProcessError):
        archive = _files_archive(root)
        return ProjectCode(f"tree-{hashlib.sha256(archive).hexdigest()[:16]}", archive, False)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout


def _files_archive(root: Path) -> bytes:
    """The project's files as a .tar.gz that is the same bytes for the same files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in PROJECT_FILES:
            top = root / name
            paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            for path in paths:
                if "__pycache__" in path.parts:
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
    # gzip writes the time into its header: zero it so the bytes depend on the files only
    data = bytearray(buffer.getvalue())
    data[4:8] = b"\0\0\0\0"
    return bytes(data)


@dataclass(frozen=True)
class JobSpec:
    """What is submitted: everything but the token, which goes as the secret TOKEN_SECRET."""

    image: str
    command: list[str]
    env: dict[str, str]
    secret_names: tuple[str, ...]
    flavor: Flavor
    timeout_s: int
    labels: dict[str, str] = field(default_factory=dict)

    def describe(self, code: ProjectCode, namespace: str) -> str:
        """What `--dry-run` prints."""
        lines = [
            f"would submit a job to Hugging Face Jobs as {namespace}:",
            f"  image:    {self.image}",
            f"  flavor:   {self.flavor.name} ({self.flavor.label})",
            f"  timeout:  {duration(self.timeout_s)}",
            f"  secrets:  {', '.join(self.secret_names)} (values are never shown)",
            *(f"  env:      {k}={shlex.quote(v)}" for k, v in self.env.items()),
            f"  labels:   {' '.join(f'{k}={v}' for k, v in self.labels.items())}",
            f"  code:     {code.filename} ({len(code.archive) / 1e6:.1f} MB), uploaded first "
            f"to the private dataset repo {namespace}/{CODE_REPO}",
        ]
        if code.uncommitted:
            lines.append(
                "            (with the uncommitted changes to tracked files; untracked files "
                "are not in it)"
            )
        lines += [
            f"  command:  {shlex.join(self.command[:2])} <the script below>",
            "",
            self.command[2],
            "",
            cost_line(self.flavor, self.timeout_s, "cost"),
        ]
        return "\n".join(lines)


def _in(namespace: str, repo: str) -> str:
    """A repo id as given, or a bare name in `namespace`."""
    return repo if "/" in repo else f"{namespace}/{repo}"


def job_spec(
    request: JobRequest, code: ProjectCode, namespace: str, endpoint: str | None = None
) -> JobSpec:
    """The job for a checked request, its code uploaded as `code` in `namespace`'s CODE_REPO.
    `endpoint`: the Hub the job talks to, when it is not the public one (a test's)."""
    from huggingface_hub import constants

    flavor, timeout = check_flavor(request.flavor), timeout_seconds(request.timeout)
    push_to = _in(namespace, request.push_to)
    env = {
        ENV_METHOD: request.method,
        ENV_PUSH_TO: push_to,
        ENV_TIMEOUT: str(timeout),
        "PYTHONUNBUFFERED": "1",  # the log shows each line as it is written
        # progress bars would fill the log with redrawn lines
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
        PRINT_METRICS: "1",  # each logged step as a `metrics {...}` line
    }
    if os.environ.get("TRACKIO_SPACE_ID"):  # the owner's trackio Space gets the job's curves
        env["TRACKIO_SPACE_ID"] = os.environ["TRACKIO_SPACE_ID"]
    endpoint = endpoint or constants.ENDPOINT
    if endpoint.rstrip("/") != PUBLIC_HUB:
        env["HF_ENDPOINT"] = endpoint
    push_sft_to = request.push_sft_to and _in(namespace, request.push_sft_to)
    script = job_script(
        replace(request, push_sft_to=push_sft_to), code, f"{namespace}/{CODE_REPO}", push_to,
        flavor.gpus,
    )  # fmt: skip
    return JobSpec(
        image=request.image,
        command=["bash", "-c", script],
        env=env,
        secret_names=(TOKEN_SECRET,),
        flavor=flavor,
        timeout_s=timeout,
        labels={"app": APP_LABEL, "method": request.method},
    )


# The job's first step: the project's archive from the code repo, unpacked into ./title-dpo
# (with tarfile's safe "data" filter where the image's Python has it: 3.11.4 and later).
_FETCH_CODE = (
    "import sys, tarfile; from huggingface_hub import hf_hub_download; "
    'path = hf_hub_download(sys.argv[1], sys.argv[2], repo_type="dataset"); '
    'safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}; '
    "tarfile.open(path).extractall(sys.argv[3], **safe)"
)
_PIP = "python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore"


def training_command(
    request: JobRequest, gpus: int, data: str = "../run/data", out: str = "../run/model"
) -> list[str]:
    """The training step of the job, run from the unpacked project: the CLI a local run
    uses, under `accelerate launch` (one process per GPU) for several."""
    from pipeline.methods import METHODS
    from pipeline.recipes import get_recipe, recipe_flags

    method = METHODS[request.method]
    named = get_recipe(request.recipe, method.recipe)
    train = [
        "-m", "pipeline", method.command, "--data", data, "--out", out,
        "--model", request.model, "--recipe", named.name,
        *recipe_flags(named, request.training_recipe()),
    ]  # fmt: skip
    if request.reward:
        train += ["--reward", request.reward]
    if request.max_steps:
        train += ["--max-steps", str(request.max_steps)]
    if gpus <= 1:
        return ["python", *train]
    # the recipe's training arguments choose the precision (bf16 on CUDA): the launcher's
    # config must not impose its own
    launch = [
        "python", "-m", "accelerate.commands.launch", "--config_file", MULTI_GPU_CONFIG,
        "--num_processes", str(gpus), "--mixed_precision", "no",
    ]  # fmt: skip
    return [*launch, *train]


def job_script(
    request: JobRequest, code: ProjectCode, code_repo: str, push_to: str, gpus: int
) -> str:
    """The job's shell script (see the module's docstring). It names no token: the Hub
    clients read HF_TOKEN, the job's secret, from the environment."""
    q = shlex.quote
    told = ["--dataset", request.data, *(["--private"] if request.private else [])]
    push = ["python", "-m", "hub", "push-model", "../run/model", "--repo", push_to, *told]
    stage = ["python", "-m", "hub", "push-model", "../run/model/sft", "--repo"]
    push_stage = [
        "echo '== pushing its SFT stage'",
        shlex.join([*stage, request.push_sft_to, *told]),
    ] if request.push_sft_to else []  # fmt: skip
    steps = [
        "set -euo pipefail",
        f"echo {q(f'== title-dpo on Hugging Face Jobs: {request.method} on {request.data}, code {code.label[:12]}, pushing to {push_to}')}",  # noqa: E501
        f'{_PIP} "huggingface_hub>=2.4,<3"',
        f"python -c {q(_FETCH_CODE)} {q(code_repo)} {q(code.filename)} title-dpo",
        "cd title-dpo",
        f"{_PIP} -r requirements-jobs.txt",
        "echo '== pulling the dataset'",
        shlex.join(["python", "-m", "hub", "pull-dataset", request.data, "--out", "../run/data"]),
        "echo '== training'",
        shlex.join(training_command(request, gpus)),
        "echo '== pushing the model'",
        shlex.join(push),
        *push_stage,
        "echo '== done'",
    ]
    return "\n".join(steps)


# --- submitting, following, stopping --------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    job_id: str
    url: str
    namespace: str
    push_to: str
    flavor: str
    code: str
    in_org: bool = False  # run in an organisation's namespace, not the user's

    @property
    def ref(self) -> str:
        """How `jobs status|logs|cancel` and the Train tab name it: the id, or ORG/ID."""
        return f"{self.namespace}/{self.job_id}" if self.in_org else self.job_id

    def describe(self) -> str:
        return (
            f"submitted job {self.ref} on {self.flavor} ({self.url}); it pushes to "
            f"{self.push_to} when it ends.\nFollow it: python -m hub jobs logs {self.ref} "
            f"--follow   Stop it: python -m hub jobs cancel {self.ref}"
        )


def dry_run(request: JobRequest) -> str:
    """The job that would be submitted, and what it would cost at most: nothing is sent."""
    request = request.checked()
    namespace = request.namespace or (
        request.push_to.split("/")[0] if "/" in request.push_to else "YOUR-NAME"
    )
    code = project_code()
    return job_spec(request, code, namespace).describe(code, namespace)


def submit(request: JobRequest, token: str | None = None) -> Submitted:
    """Check everything, upload the code, submit the job. Returns once the Hub has it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    request = request.checked()
    token = find_token(token)
    identity = whoami(token)
    namespace = request.namespace or identity.name
    if namespace not in identity.namespaces:
        raise UserError(
            f"--namespace {namespace!r}: {identity.name} is not a member of it (theirs: "
            f"{', '.join(identity.namespaces)})"
        )
    push_to = _writable_repo_id(_in(namespace, request.push_to), identity)
    push_sft_to = request.push_sft_to and _writable_repo_id(
        _in(namespace, request.push_sft_to), identity
    )
    _must_exist(request.data, "dataset", token)
    _must_exist(request.model, "model", token)
    if request.reward:
        _must_exist(request.reward, "model", token, what="reward model")
    code = project_code()
    api = HfApi(token=token)
    code_repo = f"{namespace}/{CODE_REPO}"
    try:
        api.create_repo(code_repo, repo_type="dataset", private=True, exist_ok=True)
        # the name says what it holds: code sent before is not sent again
        if not api.file_exists(code_repo, code.filename, repo_type="dataset"):
            api.upload_file(
                path_or_fileobj=code.archive,
                path_in_repo=code.filename,
                repo_id=code_repo,
                repo_type="dataset",
                commit_message=f"title-dpo code for Jobs: {code.label}",
            )
    except (HfHubHTTPError, *TRANSPORT_ERRORS) as exc:
        action = f"upload the project's code to {code_repo}"
        raise UserError(hub_failure(exc, action, token)) from None
    spec = job_spec(replace(request, push_to=push_to, push_sft_to=push_sft_to), code, namespace)
    try:
        job = api.run_job(
            image=spec.image,
            command=spec.command,
            env=spec.env,
            secrets={TOKEN_SECRET: token},
            flavor=spec.flavor.name,
            timeout=spec.timeout_s,
            labels=spec.labels,
            namespace=namespace,
        )
    except HfHubHTTPError as exc:
        raise UserError(_refused(exc, spec.flavor.name, token)) from None
    except TRANSPORT_ERRORS as exc:
        raise UserError(hub_failure(exc, "submit the job", token)) from None
    in_org = namespace != identity.name
    return Submitted(job.id, job.url, namespace, push_to, spec.flavor.name, code.label, in_org)


def _must_exist(repo_id: str, repo_type: str, token: str, what: str | None = None) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    what = what or repo_type
    try:
        HfApi(token=token).repo_info(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        raise UserError(
            f"the Hub has no {what} {repo_id!r} (or this token cannot see it): check the id"
        ) from None
    except (HfHubHTTPError, *TRANSPORT_ERRORS) as exc:
        raise UserError(hub_failure(exc, f"look up the {what} {repo_id!r}", token)) from None


def _refused(exc, flavor: str, token: str) -> str:
    """One line for a job the Hub would not take."""
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else None
    reason = (response.headers.get("X-Error-Message") if response is not None else None) or (
        first_line(exc)
    )
    if status in (402, 403):
        line = (
            f"Hugging Face Jobs refused to run on {flavor}: {reason} (this account cannot use "
            "that flavor: add credits or a payment method at https://huggingface.co/settings/"
            "billing, or pick another --flavor)"
        )
    else:
        line = hub_failure(exc, "submit the job", token)
    return redact(line, token)


@dataclass(frozen=True)
class JobState:
    """A job as the owner sees it: where it is, and what happened when it has ended."""

    job_id: str
    stage: str  # SCHEDULING, RUNNING, COMPLETED, CANCELED, ERROR, DELETED
    message: str | None
    flavor: str | None
    push_to: str | None
    method: str | None
    timeout_s: int | None
    running_s: int | None
    url: str

    @property
    def ended(self) -> bool:
        return self.stage in ENDED

    @property
    def timed_out(self) -> bool:
        return (
            self.stage == "ERROR"
            and self.timeout_s is not None
            and self.running_s is not None
            and self.running_s >= self.timeout_s - 5
        ) or "timeout" in (self.message or "").lower().replace(" ", "")

    def describe(self, last_line: str | None = None) -> str:
        """One line: the stage, and for an ended job what came of it."""
        ran = f" after {duration(self.running_s)}" if self.running_s else ""
        repo = self.push_to or "its repo"
        if self.stage == "COMPLETED":
            from pipeline.methods import method_of

            use = f"generate with it: --model {repo}"
            if self.method and not method_of(self.method).writes_titles:
                use = f"train a policy against it: --method rl --reward {repo}"
            return f"job {self.job_id} completed{ran}: the model is at {repo} ({use})"
        if self.stage == "CANCELED":
            return f"job {self.job_id} was cancelled{ran}; nothing was pushed to {repo}"
        if self.timed_out:
            return (
                f"job {self.job_id} ran past its {duration(self.timeout_s or 0)} timeout and "
                f"was stopped; nothing was pushed to {repo}: give it a longer --timeout "
                "or fewer --max-steps"
            )
        if self.stage in ("ERROR", "DELETED"):
            why = f": {last_line}" if last_line else f" ({self.message})" if self.message else ""
            return f"job {self.job_id} failed{ran}{why}; nothing was pushed to {repo}"
        return f"job {self.job_id} is {self.stage.lower()}{ran} on {self.flavor} ({self.url})"


@dataclass(frozen=True)
class _Owner:
    """Whose jobs: the token and the namespace it acts in, asked of the Hub once a call."""

    token: str
    namespace: str
    prefix: str = ""  # "ORG/" when the job was named ORG/ID: its state names it so again

    @classmethod
    def of(cls, token: str | None, job_ref: str) -> tuple[_Owner, str]:
        """The owner of JOB_REF (an id: the user's job; ORG/ID: an organisation's), and
        the job's id."""
        job_ref = (job_ref or "").strip()
        if not job_ref:
            raise UserError("no job id: submit a job, or paste the id of one")
        namespace, _, job_id = job_ref.rpartition("/")
        if not _JOB_ID.fullmatch(job_id) or (namespace and not _NAMESPACE.fullmatch(namespace)):
            raise UserError(f"{job_ref!r} is not a job id (ID, or ORG/ID for an organisation's)")
        return cls.acting_in(token, namespace or None), job_id

    @classmethod
    def acting_in(cls, token: str | None, namespace: str | None) -> _Owner:
        """The token's owner, acting in `namespace` (an organisation) or their own."""
        token = find_token(token)
        if namespace:
            return cls(token, namespace, f"{namespace}/")
        return cls(token, whoami(token).name)

    def call(self, action: str, job_id: str, call):
        """`call(api)`, its failures as one line each."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return call(HfApi(token=self.token))
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status == 404 and job_id:
                raise UserError(
                    f"no job {self.prefix + job_id!r} here: check the id (an organisation's "
                    "job is ORG/ID)"
                ) from None
            raise UserError(hub_failure(exc, action, self.token)) from None
        except TRANSPORT_ERRORS as exc:
            raise UserError(hub_failure(exc, action, self.token)) from None

    def state(self, job_id: str) -> JobState:
        info = self.call(
            f"look up job {job_id}",
            job_id,
            lambda api: api.inspect_job(job_id=job_id, namespace=self.namespace),
        )
        return self.state_of(info)

    def jobs(self) -> list[JobState]:
        """This project's jobs here (labelled app=title-dpo), newest first."""
        listed = self.call(
            f"list the jobs of {self.namespace}",
            "",
            lambda api: list(api.list_jobs(labels={"app": APP_LABEL}, namespace=self.namespace)),
        )
        listed.sort(key=lambda info: info.created_at.timestamp() if info.created_at else 0,
                    reverse=True)  # fmt: skip
        return [self.state_of(info) for info in listed]

    def state_of(self, info) -> JobState:
        env = info.environment or {}
        timeout = env.get(ENV_TIMEOUT)
        return JobState(
            job_id=self.prefix + info.id,
            stage=str(getattr(info.status.stage, "value", info.status.stage)),
            message=info.status.message,
            flavor=str(getattr(info.flavor, "value", info.flavor)) if info.flavor else None,
            push_to=env.get(ENV_PUSH_TO),
            method=env.get(ENV_METHOD),
            timeout_s=int(timeout) if timeout and timeout.isdigit() else None,
            running_s=info.durations.running_secs if info.durations else None,
            url=info.url,
        )

    def logs(self, job_id: str, tail: int | None, follow: bool) -> Iterable[str]:
        action = f"read the log of job {job_id}"
        lines = self.call(
            action,
            job_id,
            lambda api: iter(
                api.fetch_job_logs(
                    job_id=job_id, namespace=self.namespace, tail=tail, follow=follow
                )
            ),
        )
        while (line := self.call(action, job_id, lambda api: next(lines, None))) is not None:
            yield redact(line, self.token)


# A job is named by its id (the user's own) or ORG/ID (an organisation's): `Submitted.ref`.


def job_state(job_ref: str, token: str | None = None) -> JobState:
    owner, job_id = _Owner.of(token, job_ref)
    return owner.state(job_id)


def list_jobs(token: str | None = None, namespace: str | None = None) -> list[JobState]:
    """This project's jobs in the user's namespace (or the organisation's), newest first."""
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        raise UserError(f"--namespace {namespace!r}: a user or organisation name")
    return _Owner.acting_in(token, namespace).jobs()


def job_logs(
    job_ref: str, token: str | None = None, *, tail: int | None = None, follow: bool = False
) -> Iterable[str]:
    """The job's log lines (the last `tail`; with `follow`, on until it ends)."""
    owner, job_id = _Owner.of(token, job_ref)
    return owner.logs(job_id, tail, follow)


def cancel(job_ref: str, token: str | None = None) -> JobState:
    owner, job_id = _Owner.of(token, job_ref)
    if (state := owner.state(job_id)).ended:
        raise UserError(f"job {state.job_id} has already ended ({state.stage.lower()})")
    owner.call(
        f"cancel job {job_id}",
        job_id,
        lambda api: api.cancel_job(job_id=job_id, namespace=owner.namespace),
    )
    return owner.state(job_id)


@dataclass(frozen=True)
class JobView:
    """What the Train tab shows of a job: its state, its log's last lines (the metrics lines
    left out) and the metrics those carried."""

    state: JobState
    log: list[str]
    metrics: list[dict[str, Any]]

    def describe(self) -> str:
        last = next((line for line in reversed(self.log) if line.strip()), None)
        return self.state.describe(last if self.state.ended else None)


def watch(job_ref: str, token: str | None = None, lines: int = 2000) -> JobView:
    """The job's state and what its log has so far (its last `lines` lines)."""
    owner, job_id = _Owner.of(token, job_ref)
    state = owner.state(job_id)
    log = list(owner.logs(job_id, tail=lines, follow=False))
    metrics = metrics_from_lines(log)
    return JobView(state, [line for line in log if not is_metrics_line(line)], metrics)


# The jobs submitted from the app, newest last, so the Train tab can show the latest again.
JOBS_FILE = "jobs.jsonl"


def remember(folder: str | Path, submitted: Submitted) -> None:
    from dataclasses import asdict

    path = Path(folder) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(submitted)) + "\n")


def remembered(folder: str | Path) -> list[Submitted]:
    path = Path(folder) / JOBS_FILE
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(Submitted(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line cut short by a crash: the others still count
    return found
