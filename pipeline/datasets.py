"""Preference labels → a `datasets.DatasetDict` shaped exactly like shawhin/youtube-titles-dpo.

Each row is conversational: `prompt` is one user message (the tutorial's prompt), `chosen` and
`rejected` one assistant message each. Two split rules:

- `idea` (default): whole ideas go to train or valid, so no idea is in both. The tutorial
  split pairs at random, which put all of its valid ideas in train as well.
- `seed`: the tutorial's split exactly: rows in file order, permuted by
  `numpy.random.RandomState(42).permutation(n)`, first 90% train, the rest `valid`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.pairs import read_csv_rows, write_text_atomic
from pipeline.prompts import title_messages
from pipeline.ratings import (
    NO_SCREENING,
    Screening,
    agreement,
    majority_preferences,
    screen_votes,
    voter_count,
)
from pipeline.records import SEED_LABELS, Preference
from pipeline.votes import VoteStore
from pipeline.wording import counted

LABEL_COLUMNS = ["idea", "title_a", "title_b", "title_b_preferred"]
SPLITS = ("idea", "seed")
SPLIT_SEED = 42
VALID_FRACTION = 0.1
# a source that had the tutorial's labelled pairs added (`with_tutorial`)
WITH_TUTORIAL = " and the tutorial's labelled pairs"


def read_labelled_csv(path: str | Path) -> list[Preference]:
    """Rows of `idea,title_a,title_b,title_b_preferred` (0 or 1), in file order."""
    prefs = []
    for line, row in enumerate(read_csv_rows(path, LABEL_COLUMNS), start=2):
        flag = row["title_b_preferred"].strip()
        if flag not in ("0", "1"):
            raise UserError(f"{path}, line {line}: title_b_preferred must be 0 or 1, not {flag!r}")
        if not all(row[c].strip() for c in ("idea", "title_a", "title_b")):
            raise UserError(f"{path}, line {line}: idea, title_a and title_b must not be empty")
        a, b = row["title_a"], row["title_b"]
        prefs.append(Preference(row["idea"], *((b, a) if flag == "1" else (a, b))))
    return prefs


def seed_preferences() -> list[Preference]:
    """The tutorial's 1,140 hand-labelled pairs (MIT, see data/seed-dpo/SOURCES.md)."""
    return read_labelled_csv(SEED_LABELS)


def preference_row(pref: Preference) -> dict[str, list[dict[str, str]]]:
    return {
        "prompt": title_messages(pref.idea),
        "chosen": [{"role": "assistant", "content": pref.chosen}],
        "rejected": [{"role": "assistant", "content": pref.rejected}],
    }


def idea_key(idea: str) -> str:
    # The prompt lowercases the idea, so ideas that differ only in case are the same prompt.
    return idea.strip().lower()


def split_by_idea(
    prefs: Sequence[Preference], valid_fraction: float = VALID_FRACTION, seed: int = SPLIT_SEED
) -> dict[str, list[Preference]]:
    import numpy as np

    ideas = sorted({idea_key(p.idea) for p in prefs})
    if len(ideas) < 2:
        raise UserError(
            f"splitting by idea needs at least 2 distinct ideas, found {len(ideas)}; "
            "use --split seed to split pairs instead"
        )
    n_valid = min(len(ideas) - 1, max(1, math.ceil(len(ideas) * valid_fraction)))
    order = np.random.RandomState(seed).permutation(len(ideas))
    valid_ideas = {ideas[i] for i in order[:n_valid]}
    return {
        "train": [p for p in prefs if idea_key(p.idea) not in valid_ideas],
        "valid": [p for p in prefs if idea_key(p.idea) in valid_ideas],
    }


def split_like_tutorial(prefs: Sequence[Preference]) -> dict[str, list[Preference]]:
    import numpy as np

    if len(prefs) < 2:
        raise UserError(f"splitting needs at least 2 labelled pairs, found {len(prefs)}")
    order = np.random.RandomState(SPLIT_SEED).permutation(len(prefs))
    n_train = int(len(prefs) * (1 - VALID_FRACTION))
    return {
        "train": [prefs[i] for i in order[:n_train]],
        "valid": [prefs[i] for i in order[n_train:]],
    }


def split_preferences(prefs: Sequence[Preference], split: str) -> dict[str, list[Preference]]:
    if split == "idea":
        return split_by_idea(prefs)
    if split == "seed":
        return split_like_tutorial(prefs)
    raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")


def preference_features():
    from datasets import Features, List, Value

    message = {"content": Value("string"), "role": Value("string")}
    return Features({k: List(message) for k in ("prompt", "chosen", "rejected")})


def build_dataset(splits: dict[str, list[Preference]]):
    from datasets import Dataset, DatasetDict

    features = preference_features()
    return DatasetDict(
        {
            name: Dataset.from_list([preference_row(p) for p in prefs], features=features)
            for name, prefs in splits.items()
        }
    )


def dataset_summary(folder: str | Path | None) -> dict[str, Any]:
    """What a dataset folder's summary.json says ({} where there is none or it cannot be
    read: its source, split, rows and ideas are then unknown)."""
    if not folder:
        return {}
    try:
        summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def source_in_brief(source: str) -> str:
    """A dataset's `source` (its summary's) in a few words: where its pairs came from, never
    the local path they were read from."""
    with_tutorial = source.endswith(WITH_TUTORIAL)
    source = source.removesuffix(WITH_TUTORIAL)
    if source == "seed":
        brief = "the tutorial's pairs"
    elif source.startswith("hub:"):
        brief = source.removeprefix("hub:")
    elif Path(source).suffix.lower() == ".csv":
        brief = Path(source).name
    else:
        brief = "the votes"
    return brief + (" and the tutorial's" if with_tutorial else "")


def summarize(splits: dict[str, list[Preference]], source: str, split: str) -> dict[str, Any]:
    return {
        "source": source,
        "split": split,
        "rows": {name: len(prefs) for name, prefs in splits.items()},
        "ideas": {name: sorted({p.idea for p in prefs}) for name, prefs in splits.items()},
    }


def save_dataset(dataset, out: str | Path, summary: dict[str, Any]) -> Path:
    """`save_to_disk` into `out`, plus `out/parquet/{split}.parquet` and `out/summary.json`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "dataset_dict.json").is_file():
        raise UserError(f"{out} exists and is not a dataset folder: choose an empty or new folder")
    dataset.save_to_disk(str(out))
    (out / "parquet").mkdir(exist_ok=True)
    for name, part in dataset.items():
        part.to_parquet(str(out / "parquet" / f"{name}.parquet"))
    write_text_atomic(
        out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    )
    return out


def write_dataset_folder(
    out: str | Path,
    votes: str | Path | None = None,
    split: str = "idea",
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
    with_tutorial: bool = False,
) -> dict[str, Any]:
    """Build and save the dataset from the seed pairs (`votes=None`), a vote database or a
    labelled CSV; return its summary. `screening` says which votes of a vote database are left
    out (`pipeline.ratings.screen_votes`); `with_tutorial` adds the tutorial's labelled pairs
    to a vote database's or a CSV's."""
    facts: dict[str, Any] = {}
    if votes is None:
        prefs, source = seed_preferences(), "seed"
    elif Path(votes).suffix.lower() == ".csv":
        prefs, source = read_labelled_csv(votes), str(votes)
    else:
        prefs, facts = preferences_from_store(votes, min_votes, screening)
        source = str(votes)
    if with_tutorial and votes is not None:
        tutorial = seed_preferences()
        prefs = [*prefs, *tutorial]
        source = f"{source}{WITH_TUTORIAL}"
        facts = {**facts, "tutorial_pairs": len(tutorial)}
    splits = split_preferences(prefs, split)
    summary = {**summarize(splits, source, split), **facts}
    save_dataset(build_dataset(splits), out, summary)
    return summary


def preferences_from_store(
    path,
    min_votes: int = 1,
    screening: Screening = NO_SCREENING,
) -> tuple[list[Preference], dict]:
    """Majority preferences from a vote database (screened by `screen_votes`), and what a
    dataset card should say of them."""
    every_vote = VoteStore.open_existing(path).votes()
    votes, left_out = screen_votes(every_vote, screening)
    prefs = majority_preferences(votes, min_votes)
    agree = agreement(votes)
    facts = {
        "votes": len(every_vote),
        "votes_used": len(votes),
        "voters": voter_count(votes),
        "pairs_voted": len({v.pair_id for v in votes}),
        "min_votes": min_votes,
        "agreement": {
            "pairs_with_2_plus_votes": agree.pairs,
            "unanimous": agree.unanimous,
            "krippendorff_alpha": agree.alpha,
        },
        "left_out": left_out,
    }
    if not prefs:
        kept_apart = left_out["evaluation_votes"] if not screening.include_evaluation else 0
        why = (
            f"; {counted(kept_apart, 'vote')} on evaluation rounds kept out (--include-evaluation "
            "uses them)"
            if kept_apart
            else ""
        )
        raise UserError(
            f"{path}: no preference rows from {counted(len(votes), 'vote')} "
            f"(need pairs with {min_votes}+ votes and a clear winner){why}"
        )
    return prefs, facts


def load_preference_dataset(path: str | Path):
    """A folder written by `save_dataset` (or any `save_to_disk` DatasetDict with train/valid)."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise UserError(f"{path} is not a dataset folder (run `python -m pipeline dataset` first)")
    dataset = load_from_disk(str(path))
    missing = [
        c for c in ("prompt", "chosen", "rejected") if c not in dataset["train"].column_names
    ]
    if missing:
        raise UserError(f"{path}: the train split lacks column(s) {', '.join(missing)}")
    return dataset
