"""The Leaderboard tab: votes per idea, agreement between voters and each idea's titles
scored; the owner also sees each voter's record."""

from __future__ import annotations

import gradio as gr

from pipeline.access import OWNER, VOTER
from pipeline.ratings import agreement, leaderboard, voter_count, voter_stats, votes_per_idea
from pipeline.votes import VoteStore
from pipeline.wording import counted
from ui.context import Context, TabParts, Wiring

TITLE = "Leaderboard"
SHOWN_TO = "anyone"
# The owner's table of voters: each column and its type.
VOTER_COLUMNS = {
    "Voter": "str",
    "Votes": "number",
    "Too fast": "number",
    "Burst": "str",
    "Gold pairs voted": "number",
    "Gold accuracy": "str",
    "Undone": "number",
}


def build(ctx: Context) -> TabParts:
    """The tab, and its owner-only part: each voter's record."""
    guard = ctx.guard
    summary = gr.Markdown()
    # Voters read this tab on phones: few columns, each wide enough for its numbers, and
    # text that wraps, so that nothing hides off to the right.
    ideas = gr.Dataframe(
        headers=["Idea", "Votes", "Pairs voted on"],
        datatype=["str", "number", "number"],
        interactive=False,
        wrap=True,
        column_widths=["58%", "19%", "23%"],
        label="Votes per idea",
    )
    pick = gr.Dropdown(label="Idea", choices=[], interactive=True)
    scores = gr.Dataframe(
        headers=["Title", "Score", "Range (95%)", "Won–lost–tied"],
        datatype=["str", "number", "str", "str"],
        interactive=False,
        wrap=True,
        column_widths=["43%", "19%", "20%", "18%"],
        label="Bradley–Terry scores (1000 = the idea's average title)",
    )
    refresh = gr.Button("Refresh")
    with gr.Accordion("Voters (owner only)", open=False, visible=False) as owner_part:
        gr.Markdown(
            "Per voter: votes, votes flagged as too fast to have read the titles, whether the "
            "voter's id was minted in a burst from one address (a script, or a classroom "
            "behind one router: look before leaving them out), accuracy on gold pairs, and "
            "votes the voter undid (a slip now and then; many is worth a look). "
            "`--drop-fast`, `--drop-burst` and `--min-gold-accuracy` (and the same switches "
            "on the Train and Hub tabs) leave them out of a dataset."
        )
        voters_table = gr.Dataframe(
            headers=list(VOTER_COLUMNS),
            datatype=list(VOTER_COLUMNS.values()),
            interactive=False,
        )
        refresh_voters = gr.Button("Refresh the voters")

    board = Board(ctx.store)
    refresh.click(
        guard(VOTER, board.overview), None, [summary, ideas, pick], api_name="leaderboard"
    )
    pick.change(guard(VOTER, board.idea_scores), pick, scores, api_name="idea_scores")
    gr.on(
        [owner_part.expand, refresh_voters.click],
        guard(OWNER, board.voters),
        None,
        voters_table,
        api_name="voter_quality",
    )
    refresh_board = Wiring(guard(VOTER, board.overview), [summary, ideas, pick])
    return TabParts(owner_parts=[owner_part], on_open=(refresh_board,))


class Board:
    """The tab's handlers, each one reading of the votes."""

    def __init__(self, store: VoteStore) -> None:
        self.store = store
        # The overview of the votes as of a version of them: every page open asks for it, and
        # anyone may ask, as often as they like; it is computed again only when votes change.
        self._overview: tuple[tuple, tuple[str, list[list]]] | None = None

    def voters(self) -> list[list]:
        undone = self.store.undone_votes()
        return [
            [
                s.voter,
                s.votes,
                s.fast,
                "burst" if s.burst else "",
                s.gold_votes,
                "n/a" if s.gold_accuracy is None else f"{s.gold_accuracy:.0%}",
                undone.get(s.voter, 0),
            ]
            for s in voter_stats(self.store.votes())
        ]

    def overview(self):
        version = self.store.votes_version()
        cached = self._overview
        if cached is None or cached[0] != version:
            cached = self._overview = (version, self._summarize(self.store.votes()))
        text, rows = cached[1]
        choices = [r[0] for r in rows]
        return text, rows, gr.Dropdown(choices=choices, value=choices[0] if choices else None)

    @staticmethod
    def _summarize(votes) -> tuple[str, list[list]]:
        agree = agreement(votes)
        rows = [list(row) for row in votes_per_idea(votes)]
        alpha = "n/a" if agree.alpha is None else f"{agree.alpha:.2f}"
        unanimous = "n/a" if agree.unanimous is None else f"{agree.unanimous:.0%}"
        voters = counted(voter_count(votes), "voter")
        text = f"**{counted(len(votes), 'vote')}** from **{voters}**. " + (
            f"Agreement over the {counted(agree.pairs, 'pair')} with 2+ votes: {unanimous} "
            f"unanimous, Krippendorff's alpha {alpha}."
            if agree.pairs
            else "No pair has 2+ votes yet: agreement between voters needs them."
        )
        return text, rows

    def idea_scores(self, idea: str | None):
        if not idea:
            return []
        boards = leaderboard(self.store.votes(idea=idea))
        return [
            [s.title, round(s.score), f"{s.low:.0f}–{s.high:.0f}", f"{s.wins}–{s.losses}–{s.ties}"]
            for board in boards
            for s in board.titles
        ]
