"""Head-to-head pairs of titles, and the tutorial's CSV formats for ideas and pairs.

5 titles for an idea give C(5, 2) = 10 pairs; identical titles are dropped first, so a
pair never asks anyone to choose between a title and itself.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.prompts import check_idea

PAIR_COLUMNS = ["idea", "title_a", "title_b"]
IDEA_COLUMN = "Idea"


@dataclass(frozen=True)
class Pair:
    idea: str
    title_a: str
    title_b: str


def unique_titles(titles: Iterable[str]) -> list[str]:
    """Titles in first-seen order, without blanks or repeats."""
    seen: dict[str, None] = {}
    for title in titles:
        if title.strip():
            seen.setdefault(title, None)
    return list(seen)


def pairs_for_idea(idea: str, titles: Sequence[str]) -> list[Pair]:
    """Every unordered pair of distinct titles, in the tutorial's order (a before b as written)."""
    return [Pair(idea, a, b) for a, b in itertools.combinations(unique_titles(titles), 2)]


def read_csv_rows(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV with a header holding `required`, or a UserError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(
                    f"{path}: missing column(s) {', '.join(missing)}; "
                    f"found {', '.join(header) or 'no header'}"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                if None in row or any(row[c] is None for c in required):
                    raise UserError(f"{path}, line {line}: wrong number of fields")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise UserError(f"{path}: no rows after the header")
    return rows


def read_ideas_csv(path: str | Path) -> list[str]:
    """The ideas in a CSV with an `Idea` column (the tutorial's ideas.csv), validated."""
    ideas = []
    for line, row in enumerate(read_csv_rows(path, [IDEA_COLUMN]), start=2):
        try:
            ideas.append(check_idea(row[IDEA_COLUMN]))
        except UserError as exc:
            raise UserError(f"{path}, line {line}: {exc}") from None
    return ideas


def read_pairs_csv(path: str | Path) -> list[Pair]:
    return [Pair(r["idea"], r["title_a"], r["title_b"]) for r in read_csv_rows(path, PAIR_COLUMNS)]


def write_pairs_csv(pairs: Iterable[Pair], path: str | Path) -> int:
    """Write `idea,title_a,title_b`; the file appears whole or not at all. Returns the row count."""
    rows = [[p.idea, p.title_a, p.title_b] for p in pairs]
    write_csv_atomic(path, PAIR_COLUMNS, rows)
    return len(rows)


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to a staging file, fsync it, then rename it over `path`: a crash leaves the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with staging.open("w", newline="", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
