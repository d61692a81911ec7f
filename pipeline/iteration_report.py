"""What the iterations so far show: per iteration, its votes and their agreement, its policy's
titles, and how its trained policy fared in its judging round; one chart across them.

The question is the user's: did the titles get better, as people judge them? So the win rates
are the judging rounds' (people's blind votes on ideas no model trained on), by pair.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline.ratings import Agreement, agreement
from pipeline.round_tables import RoundInfo
from pipeline.rounds import short_name
from pipeline.votes import VoteStore
from pipeline.winrates import (
    HeadToHead,
    head_to_head,
    judgements,
    round_outcomes,
    side_of_even,
    wilson,
)
from pipeline.wording import counted


@dataclass(frozen=True)
class TitleMeasures:
    """A model's titles in one place: how many, the share in the prompt's format (with its
    Wilson interval), and their mean length in characters."""

    titles: int
    in_format: int
    mean_length: float | None

    @property
    def format_share(self) -> float | None:
        return self.in_format / self.titles if self.titles else None

    @property
    def format_interval(self) -> tuple[float, float] | None:
        return wilson(self.in_format, self.titles)

    @classmethod
    def of(cls, texts: list[str], raws: list[str | None]) -> TitleMeasures:
        from pipeline.evaluation import follows_prompt

        shown = [r if r is not None else t for t, r in zip(texts, raws, strict=True)]
        mean = sum(map(len, texts)) / len(texts) if texts else None
        return cls(len(texts), sum(map(follows_prompt, shown)), mean)


@dataclass(frozen=True)
class IterationReport:
    """One iteration: its votes and their agreement, its policy's titles, and how its trained
    policy fared in its judging round (by pair, 95% Wilson intervals)."""

    name: str
    policy: str
    votes: int
    voters: int
    agreement: Agreement
    policy_titles: TitleMeasures  # the titles its policy wrote for the voters
    trained: str | None
    judge_round: str | None
    judge_votes: int = 0
    over_before: HeadToHead | None = None  # the trained policy against the one it began from
    over_start: HeadToHead | None = None  # ... against the first iteration's policy
    trained_titles: TitleMeasures | None = None  # its titles in the judging round
    policy_label: str = ""  # how the report calls its policy ("trained after NAME", a Hub id)
    # "over_before", "over_start": the judging round has no pair of those two models, since
    # they wrote the same titles for every idea (the same title makes no pair); none to wait for
    same_titles: tuple[str, ...] = ()

    def describe(self) -> str:
        own = self.policy_titles
        lines = [
            f"{self.name}: {counted(self.votes, 'vote')} from {counted(self.voters, 'voter')}"
            + (f", {self.agreement.unanimous:.0%} of {counted(self.agreement.pairs, 'pair')} "
               "with 2+ votes unanimous" if self.agreement.unanimous is not None else ""),
            f"  its policy ({self.policy_label}): {_measures(own)}",
        ]  # fmt: skip
        if not self.trained:
            return "\n".join([*lines, "  not trained yet"])
        lines.append(f"  trained: {self.trained}")
        if not self.judge_round:
            return "\n".join([*lines, "  not judged yet (iterate judge)"])
        lines.append(f"  judged in round {self.judge_round!r}: {counted(self.judge_votes, 'vote')}")
        for key, against in (("over_before", "the policy before"), ("over_start", "the start")):
            if key in self.same_titles:
                lines.append(f"  {SAME_TITLES} as {against}: no pair to vote on")
            elif (h := getattr(self, key)) is not None:
                lines.append(f"  beats {against}: {_by_pair(h)}")
        if self.trained_titles:
            lines.append(f"  its titles there: {_measures(self.trained_titles)}")
        return "\n".join(lines)

    def row(self) -> list:
        """The report as a row under the Iterations tab's columns."""
        trained = self.trained_titles
        return [
            self.name,
            f"{self.votes} ({self.voters})",
            _share(self.policy_titles),
            _length(self.policy_titles),
            self.judge_votes if self.judge_round else "not judged",
            self._cell("over_before"),
            self._cell("over_start"),
            "" if trained is None else _share(trained),
        ]

    def _cell(self, key: str) -> str:
        if key in self.same_titles:
            return f"{SAME_TITLES}: no pair"
        h = getattr(self, key)
        return "" if h is None else _by_pair_short(h)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("over_before", "over_start"):
            h = getattr(self, key)
            record[key] = None if h is None else h.as_dict()
        for key in ("policy_titles", "trained_titles"):
            m = getattr(self, key)
            if m is not None:
                record[key] |= {
                    "format_share": m.format_share,
                    "format_interval": m.format_interval,
                }
        return record


SAME_TITLES = "the same titles on every judging idea"


def _measures(m: TitleMeasures) -> str:
    if not m.titles:
        return "no titles"
    return f"{_share(m)} titles in format, {m.mean_length:.0f} characters on average"


def _share(m: TitleMeasures) -> str:
    if not m.titles:
        return "no titles"
    low, high = m.format_interval
    return f"{m.format_share:.0%} of {m.titles} ({low:.0%}–{high:.0%})"


def _length(m: TitleMeasures) -> str:
    return "" if m.mean_length is None else f"{m.mean_length:.0f}"


def _by_pair_short(h: HeadToHead) -> str:
    decided = h.pairs_won + h.pairs_lost
    if not decided:
        return f"no pair decided yet ({counted(h.total, 'vote')})"
    low, high = h.pair_interval
    rate = f"{h.pairs_won / decided:.0%} ({low:.0%}–{high:.0%})"
    # what the interval says, in a word: the question the column asks
    said = {1: "better", -1: "worse", 0: "too close to call"}[side_of_even((low, high))]
    return f"{rate}, {h.pairs_won} of {counted(decided, 'pair')}: {said}"


def _by_pair(h: HeadToHead) -> str:
    decided = h.pairs_won + h.pairs_lost
    votes = f"; {h.wins} of {h.decisive} decisive votes" if decided else ""
    return _by_pair_short(h) + votes


def iteration_report(store: VoteStore) -> list[IterationReport]:
    """Every iteration, oldest first (`IterationReport`), from one reading of the votes."""
    every_vote = store.votes()
    rounds = {r.name: r for r in store.rounds()}
    found = []
    trained_after = {}  # a policy an earlier iteration trained, by that iteration's name
    for info in store.iterations():
        votes = [v for v in every_vote if v.pool == info.pool]
        titles = store.pool_titles(info.pool)
        report = IterationReport(
            info.name,
            info.policy,
            len(votes),
            len({v.voter for v in votes}),
            agreement(votes),
            TitleMeasures.of([t for _, t, _ in titles], [r for _, _, r in titles]),
            info.trained,
            info.judge_round,
            policy_label=trained_after.get(info.policy) or short_name(info.policy),
        )
        if info.trained:
            trained_after[info.trained] = f"trained after {info.name}"
        if info.judge_round in rounds:  # (a round not restored after a restart: not judged)
            report = _judged(store, report, rounds[info.judge_round], every_vote)
        found.append(report)
    return found


def _judged(
    store: VoteStore, report: IterationReport, judging: RoundInfo, every_vote
) -> IterationReport:
    """The report with its judging round's figures."""
    pairs = store.round_pairs(judging.round_id)
    in_round = {p.pair_id for p in pairs}
    outcomes = round_outcomes([v for v in every_vote if v.pair_id in in_round], pairs)
    after, before, *start = judging.labels
    mine = [t for t in store.round_titles(judging.round_id) if t.model == after]
    paired = {frozenset((p.model_a, p.model_b)) for p in pairs}
    against = {"over_before": before, "over_start": start[0] if start else None}
    same = [key for key, other in against.items()
            if other and frozenset((after, other)) not in paired]  # fmt: skip
    return replace(
        report,
        judge_votes=judgements(outcomes),
        over_before=head_to_head(outcomes, after, before),
        over_start=head_to_head(outcomes, after, start[0]) if start else None,
        trained_titles=TitleMeasures.of([t.text for t in mine], [t.raw for t in mine]),
        same_titles=tuple(same),
    )


def report_chart(reports: list[IterationReport]):
    """A matplotlib figure across iterations: the trained policy's win rate by pair over the
    policy before it and over the start (95% intervals), the share of titles in format and
    their mean length (the policy's titles for voters; the trained one's when judged)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the app and the CLI only serve or save it
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 3.4), layout="constrained")
    wins, shares, lengths = figure.subplots(1, 3)
    names = [r.name for r in reports]
    x = list(range(len(reports)))
    against = ((-0.08, "over_before", "over the policy before", "#4C72B0"),
               (0.08, "over_start", "over the start", "#C44E52"))  # fmt: skip
    for offset, key, label, colour in against:
        shown = [(i, h) for i, r in enumerate(reports) if (h := getattr(r, key)) is not None]
        shown = [(i, h) for i, h in shown if h.pairs_won + h.pairs_lost]
        if not shown:
            continue
        rates = [h.pairs_won / (h.pairs_won + h.pairs_lost) for _, h in shown]
        spans = [h.pair_interval for _, h in shown]
        errors = [[max(0.0, r - s[0]) for r, s in zip(rates, spans, strict=True)],
                  [max(0.0, s[1] - r) for r, s in zip(rates, spans, strict=True)]]  # fmt: skip
        wins.errorbar([i + offset for i, _ in shown], rates, yerr=errors, fmt="o-", capsize=4,
                      color=colour, label=label)  # fmt: skip
    wins.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    wins.set_ylim(0, 1)
    wins.set_title("trained policy's win rate, by pair (95%)", fontsize="medium")
    if wins.get_legend_handles_labels()[0]:
        wins.legend(fontsize="small", loc="lower right")
    else:
        wins.text(0.5, 0.5, "no judging votes yet", ha="center", transform=wins.transAxes)
    measured = ((shares, "format_share", "titles in format"),
                (lengths, "mean_length", "mean title length (characters)"))  # fmt: skip
    for axis, value, title in measured:
        own = [getattr(r.policy_titles, value) for r in reports]
        axis.plot(x, own, "o-", color="#55A868", label="the policy's, for voters")
        judged = [(i, getattr(r.trained_titles, value)) for i, r in enumerate(reports)
                  if r.trained_titles and r.trained_titles.titles]  # fmt: skip
        if judged:
            axis.plot(*zip(*judged, strict=True), "s--", color="#8172B2",
                      label="its trained one's, judged")  # fmt: skip
        axis.set_title(title, fontsize="medium")
        axis.legend(fontsize="small")
    shares.set_ylim(0, 1)
    for axis in (wins, shares, lengths):
        axis.set_xticks(x, [textwrap.shorten(n, 18) for n in names], rotation=15, fontsize="small")
        axis.set_xlim(-0.5, max(0.5, len(reports) - 0.5))
    return figure
