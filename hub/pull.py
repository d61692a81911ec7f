"""Pull a preference dataset from the Hub into a dataset folder that training reads.

Any dataset with `prompt` / `chosen` / `rejected` columns works, in the conversational format of
`shawhin/youtube-titles-dpo` or as plain strings (TRL takes both). Its held-out split may be
called `valid`, `validation` or `test`; without one, training runs without evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.auth import check_repo_id, first_line, hub_failure
from pipeline.errors import UserError
from pipeline.models import TRANSPORT_ERRORS
from pipeline.ratings import NO_SCREENING, Screening

HELD_OUT_NAMES = ("valid", "validation", "test")
COLUMNS = ("prompt", "chosen", "rejected")
# Where a training run's preference data comes from.
TRAINING_SOURCES = ("tutorial", "votes", "hub")


def write_training_data(
    source: str,
    out: str | Path,
    *,
    votes: str | Path | None = None,
    hub_id: str | None = None,
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
) -> dict[str, Any]:
    """A run's dataset folder `out` from the tutorial's pairs, the vote database `votes`
    (screened as `pipeline.datasets.write_dataset_folder` does) or the Hub dataset `hub_id`,
    split by idea; its summary."""
    from pipeline.datasets import write_dataset_folder

    if source == "hub":
        return pull_preference_dataset(hub_id or "", out)
    if source == "votes":
        if votes is None:
            raise UserError("no vote database given")
        return write_dataset_folder(out, votes, "idea", min_votes, screening)
    if source == "tutorial":
        return write_dataset_folder(out, None, "idea")
    raise UserError(f"unknown data source {source!r}: one of {', '.join(TRAINING_SOURCES)}")


def pull_preference_dataset(
    repo_id: str, out: str | Path, *, revision: str | None = None, token: str | None = None
) -> dict[str, Any]:
    """Download `repo_id` and save its train and held-out splits to `out`; return a summary."""
    from datasets import DatasetDict, load_dataset
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import HfHubHTTPError

    from pipeline.datasets import save_dataset

    repo_id = check_repo_id(repo_id, "dataset", example="shawhin/youtube-titles-dpo")
    not_there = UserError(
        f"the Hub has no dataset {repo_id!r} (or it is private and no token with access was "
        "given: log in or set HF_TOKEN)"
    )
    _ask_first(repo_id, revision, token, not_there)
    try:
        loaded = load_dataset(repo_id, revision=revision, token=token)
    except DatasetNotFoundError:
        raise not_there from None
    except (HfHubHTTPError, OSError, *TRANSPORT_ERRORS) as exc:
        reason = first_line(exc)
        raise UserError(f"could not download {repo_id!r} from the Hub: {reason}") from None
    if "train" not in loaded:
        raise UserError(f"{repo_id} has no 'train' split (it has: {', '.join(loaded)})")
    missing = [c for c in COLUMNS if c not in loaded["train"].column_names]
    if missing:
        raise UserError(
            f"{repo_id} is not a preference dataset: its train split lacks "
            f"{', '.join(missing)} (it has {', '.join(loaded['train'].column_names)})"
        )
    splits = {"train": loaded["train"].select_columns(list(COLUMNS))}
    held_out = next((name for name in HELD_OUT_NAMES if name in loaded), None)
    if held_out is not None:
        splits["valid"] = loaded[held_out].select_columns(list(COLUMNS))
    summary = {
        "source": f"hub:{repo_id}" + (f"@{revision}" if revision else ""),
        "split": held_out or "none",
        "rows": {name: len(split) for name, split in splits.items()},
    }
    save_dataset(DatasetDict(splits), out, summary)
    return summary


def _ask_first(repo_id: str, revision: str | None, token: str | None, not_there: UserError):
    """Ask the Hub about the dataset once, with a request its client does not retry: a Hub
    that does not answer is then said at once, not after the download's retries (~24 s)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:  # offline, the download reads the cache: nothing to ask
        return
    try:
        HfApi(token=token).dataset_info(repo_id, revision=revision)
    except RepositoryNotFoundError:
        raise not_there from None
    except TRANSPORT_ERRORS as exc:
        raise UserError(hub_failure(exc, f"download {repo_id!r}", token)) from None
    except HfHubHTTPError:
        pass  # said as the download meets it (e.g. a missing revision)
