"""The small records the modules pass between them, with their checks, in one leaf module that
imports none of the others' machinery: a preference, a stored vote, a vote as a self-contained
record (the format the Hub mirror keeps), and where the tutorial's seed data lives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.pairs import Pair
from pipeline.prompts import check_idea

# The tutorial's labelled data, shipped with the project (MIT, see its SOURCES.md).
SEED_DIR = Path(__file__).resolve().parent.parent / "data" / "seed-dpo"
SEED_LABELS = SEED_DIR / "idea-title_pairs-preferences.csv"
SEED_PAIRS = SEED_DIR / "idea-title_pairs.csv"

CHOICES = ("a_better", "b_better", "tie", "both_bad")
SIDES = ("a", "b")
# Why a vote is doubtful, stored comma-joined in its `flag` (None: no doubt). 'fast': cast
# before a person could read the titles. 'burst': its voter id was one of many minted from one
# address within a minute (a script, or a classroom behind one router: kept, and shown).
FLAGS = ("burst", "fast")
MAX_VOTER_CHARS = 128
MAX_TITLE_CHARS = 1000
VOTER_PATTERN = re.compile(r"^[\w.@:+-]+$")


@dataclass(frozen=True)
class Preference:
    idea: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class VoteRow:
    """A stored vote with its pair's idea and titles."""

    vote_id: str
    voter: str
    pair_id: int
    idea: str
    title_a: str
    title_b: str
    choice: str
    shown_left: str
    created_at: float
    seconds_taken: float | None
    flag: str | None = None  # the FLAGS that apply, comma-joined
    gold: str | None = None  # the pair is a check whose better title is this side
    # the evaluation round the pair belongs to: such votes measure models, and stay out of
    # training data unless asked for
    evaluation: str | None = None
    model_a: str | None = None  # in a round: the label of the model that wrote title_a
    model_b: str | None = None
    pool: str | None = None  # the pool its pair was served from

    @property
    def flags(self) -> frozenset[str]:
        return flags_of(self.flag)


def joined_flags(flags: set[str] | frozenset[str]) -> str | None:
    """How a vote's flags are stored: the known ones, sorted and comma-joined; none: None."""
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise UserError(f"unknown vote flag {sorted(unknown)[0]!r}: one of {', '.join(FLAGS)}")
    return ",".join(sorted(flags)) or None


def flags_of(flag: str | None) -> frozenset[str]:
    return frozenset(flag.split(",")) if flag else frozenset()


def check_flag(flag: object) -> str | None:
    """`flag` if it is a vote's flags as stored (`joined_flags`), else UserError."""
    if flag is None:
        return None
    if (
        not isinstance(flag, str)
        or not flag
        or ",".join(sorted(set(flag.split(",")) & set(FLAGS))) != flag
    ):
        raise UserError(f"a vote's flags are some of {', '.join(FLAGS)}, sorted, not {flag!r}")
    return flag


def check_voter(voter: str | None) -> str:
    if voter is None or not str(voter).strip():
        raise UserError("missing voter id")
    voter = str(voter).strip()
    if len(voter) > MAX_VOTER_CHARS:
        raise UserError(f"voter id is {len(voter)} characters; the limit is {MAX_VOTER_CHARS}")
    if not VOTER_PATTERN.match(voter):
        raise UserError("voter id may hold only letters, digits and . _ - @ : +")
    return voter


def check_choice(choice: str, shown_left: str) -> None:
    """A vote's choice on the pair's own sides, and which side was shown on the left."""
    if choice not in CHOICES:
        raise UserError(f"unknown choice {choice!r}: use one of {', '.join(CHOICES)}")
    if shown_left not in SIDES:
        raise UserError(f"shown_left must be 'a' or 'b', not {shown_left!r}")


def checked_pair(pair: Pair) -> Pair:
    idea = check_idea(pair.idea)
    for title in (pair.title_a, pair.title_b):
        if not title.strip():
            raise UserError(f"empty title in a pair for idea {idea!r}")
        if len(title) > MAX_TITLE_CHARS:
            raise UserError(f"a title for idea {idea!r} is over {MAX_TITLE_CHARS} characters")
    if pair.title_a == pair.title_b:
        raise UserError(f"a pair for idea {idea!r} has the same title twice")
    return Pair(idea, pair.title_a, pair.title_b)


# --- a vote as a self-contained record (for a mirror outside the database) -------------------

RECORD_FIELDS = (
    "vote_id",
    "voter",
    "idea",
    "title_a",
    "title_b",
    "choice",
    "shown_left",
    "created_at",
    "seconds_taken",
    "flag",
    "gold",
    "evaluation",
    "model_a",
    "model_b",
)
# older mirrors lack all but the first of these
OPTIONAL_RECORD_FIELDS = ("seconds_taken", "flag", "gold", "evaluation", "model_a", "model_b")


def vote_record(row: VoteRow) -> dict[str, Any]:
    """A vote with its idea and titles spelled out, so it means the same in any store."""
    return {field: getattr(row, field) for field in RECORD_FIELDS}


def checked_record(record: Any) -> dict[str, Any]:
    """`record` if it is a valid vote record (its voter and idea normalised); else UserError."""
    required = [f for f in RECORD_FIELDS if f not in OPTIONAL_RECORD_FIELDS]
    if not isinstance(record, dict) or any(f not in record for f in required):
        raise UserError(f"not a vote record: {str(record)[:200]}")
    if not isinstance(record["vote_id"], str) or not 0 < len(record["vote_id"]) <= 64:
        raise UserError(f"not a vote id: {str(record['vote_id'])[:80]}")
    pair = checked_pair(Pair(record["idea"], record["title_a"], record["title_b"]))
    check_choice(record["choice"], record["shown_left"])
    try:
        check_flag(record.get("flag"))
    except UserError:
        raise UserError(f"vote {record['vote_id']}: unknown flag") from None
    if record.get("gold") not in (None, *SIDES):
        raise UserError(f"vote {record['vote_id']}: unknown gold side")
    round_fields = [record.get(f) for f in ("evaluation", "model_a", "model_b")]
    if any(round_fields) and not all(isinstance(f, str) and f for f in round_fields):
        raise UserError(f"vote {record['vote_id']}: a round vote needs its round and models")
    return {
        **record,
        "voter": check_voter(record["voter"]),
        "idea": pair.idea,
        "created_at": float(record["created_at"]),
    }
