"""How counts read in the sentences people see: "1 vote from 1 voter", "3 votes from 2
voters", never "1 votes from 1 voters" (the first line a new app's leaderboard shows); and
sizes on disk."""

from __future__ import annotations


def counted(n: int, noun: str, bold: bool = False) -> str:
    """N and the noun, singular for exactly one: counted(1, "vote") == "1 vote"; with `bold`,
    the number in Markdown bold."""
    number = f"**{n}**" if bold else str(n)
    return f"{number} {noun if n == 1 else noun + 's'}"


def file_size(n: float) -> str:
    """A number of bytes as people read it: "512 B", "191 MB", "1.2 GB" (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
