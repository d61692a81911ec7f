"""Every command example in the README and docs/ parses with the CLI as it is now: each
`python -m pipeline`, `python -m hub` and `python app.py` line in a code block goes through
its parser (what `--help` describes), and nothing is run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"^(?:\$ )?(?:\.venv/bin/)?(python -m (?:pipeline|hub)|python app\.py)\b(.*)")


def code_lines(path: Path) -> list[str]:
    """The lines of the file's fenced code blocks, continuations (`\\`) joined."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines()


def examples() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for line in code_lines(path):
            match = COMMAND.match(line.strip())
            if match:
                words = shlex.split(match[2], comments=True)
                found.append((path.relative_to(ROOT).as_posix(), match[1], words))
    return found


def parser_of(program: str):
    if program == "python -m pipeline":
        from pipeline.cli import make_parser
    elif program == "python -m hub":
        from hub.cli import make_parser
    else:
        from app import make_parser
    return make_parser()


def test_the_docs_have_examples_of_every_program():
    programs = {program for _, program, _ in examples()}
    assert programs == {"python -m pipeline", "python -m hub", "python app.py"}


@pytest.mark.parametrize(("where", "program", "words"), examples(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else None)  # fmt: skip
def test_a_documented_command_parses(where, program, words, capsys):
    try:
        parser_of(program).parse_args(words)
    except SystemExit as stop:
        message = capsys.readouterr().err.strip()
        raise AssertionError(f"{where}: `{program} {' '.join(words)}`: {message}") from stop
