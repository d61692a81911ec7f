"""What a voter's screen sends: a side of the pair it showed, turned into a vote on the pair.

The server remembers which pair it showed and which title it put on the left (`Shown`); the
client only says left, right, tie or both bad, so it cannot vote on a pair it was not shown
nor learn which title is which pair side. It may take back the vote it just cast (`undo_vote`),
within UNDO_SECONDS, and vote on that pair again.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.records import check_voter, joined_flags
from pipeline.votes import Retracted, VoteResult, VoteStore

SIDE_CHOICES = ("left", "right", "tie", "both_bad")
# A vote cast sooner than this after its pair was shown is kept but flagged 'fast': nobody
# reads an idea and two titles that quickly.
MIN_READ_SECONDS = 1.0
# A vote can be taken back this long after it was cast: long enough to notice a slip of the
# finger, short enough that a dataset pushed since rarely holds it.
UNDO_SECONDS = 600.0


@dataclass(frozen=True)
class Shown:
    """The pair on a voter's screen, as the server remembers it (never taken from the client)."""

    pair_id: int
    shown_left: str
    shown_at: float


def check_side(side: str) -> str:
    if side not in SIDE_CHOICES:
        raise UserError(f"unknown choice {side!r}: use one of {', '.join(SIDE_CHOICES)}")
    return side


def side_to_choice(side: str, shown_left: str) -> str:
    """'left' / 'right' as the voter saw them → the pair's own 'a_better' / 'b_better'."""
    if check_side(side) in ("tie", "both_bad"):
        return side
    left_won = side == "left"
    return "a_better" if left_won == (shown_left == "a") else "b_better"


def vote_on_shown_pair(
    store: VoteStore,
    voter: str,
    pair_id: int,
    side: str,
    shown: Shown | None,
    now: float,
    burst: bool = False,
) -> VoteResult:
    """A vote from a screen that showed `pair_id`; only the pair actually shown can be voted on.

    A second click on a pair already voted on (a double click, a reload, a second tab) is
    answered "already voted" and changes nothing. A vote cast within MIN_READ_SECONDS of the
    pair being shown is stored with the flag 'fast'; one from a voter minted in a burst
    (`burst`, as the voter's signed id says) with the flag 'burst'.
    """
    voter, side = check_voter(voter), check_side(side)
    if not store.pair_exists(pair_id):
        raise UserError(f"unknown pair id {pair_id}")
    if shown is None or shown.pair_id != pair_id:
        if store.has_voted(voter, pair_id):
            return VoteResult(False, None)
        raise UserError("that pair is not the one on your screen: load the next pair")
    choice = side_to_choice(side, shown.shown_left)
    seconds = now - shown.shown_at
    flags = {"fast"} if seconds < MIN_READ_SECONDS else set()
    if burst:
        flags.add("burst")
    return store.record_vote(voter, pair_id, choice, shown.shown_left, seconds, joined_flags(flags))


def undo_vote(store: VoteStore, voter: str, vote_id: str | None, now: float) -> Retracted:
    """Take back the vote `vote_id` that this voter's screen cast (the server keeps which,
    never the client), if it is no older than UNDO_SECONDS; the pair it was on is theirs to
    vote on again."""
    if not vote_id:
        raise UserError("no vote to undo: this page has not voted since it last undid one")
    return store.retract_vote(voter, vote_id, cast_after=now - UNDO_SECONDS)
