"""What an evaluation round's votes say about its models.

- Head to head, for every two models: wins, losses, ties and "both bad" counted apart; the
  win rate over decisive votes with its Wilson 95% interval; the rate with ties (and both bad)
  counted as half a win; and a length-controlled win rate.
- Length control, after alpaca_eval's: people favour some lengths, and models differ in length,
  so the outcome of each decisive vote is regressed (logistic) on the length difference,
  squashed as tanh(difference / its spread); the win rate at equal length is the intercept's.
- For any number of models, an arena: Bradley–Terry scores of the models with 95%
  intervals, the machinery of the title leaderboard (`pipeline.ratings`).

Outcomes come from people's votes or from a judge (`pipeline.judges`): the same figures follow.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.ratings import (
    Agreement,
    agreement,
    bradley_terry_board,
    majority_side,
    voter_count,
)
from pipeline.records import VoteRow
from pipeline.round_tables import RoundInfo, RoundPair, RoundTitle
from pipeline.runs import SFT_STAGE, model_place, model_version
from pipeline.votes import VoteStore
from pipeline.wording import counted

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Outcome(RoundPair):
    """One judgement of a round's pair: a person's vote, or a judge's verdict."""

    choice: str  # a_better, b_better, tie, both_bad
    voter: str = "judge"

    def winner(self) -> str | None:
        return {"a_better": self.model_a, "b_better": self.model_b}.get(self.choice)


def round_outcomes(votes: Sequence[VoteRow], pairs: Sequence[RoundPair]) -> list[Outcome]:
    """The votes cast on `pairs`, each with the models that wrote its two titles: once for
    every two models a pair stands for (`VoteStore.round_pairs`)."""
    by_id: dict[int, list[RoundPair]] = defaultdict(list)
    for p in pairs:
        by_id[p.pair_id].append(p)
    return [
        Outcome(v.pair_id, v.idea, p.model_a, p.model_b, v.title_a, v.title_b, v.choice, v.voter)
        for v in votes
        for p in by_id.get(v.pair_id, ())
    ]


def side_of_even(interval: tuple[float, float]) -> int:
    """Where an interval of a win rate lies: 1 above 50%, -1 below, 0 taking it in (the
    votes cannot tell the two apart yet)."""
    low, high = interval
    return 1 if low > 0.5 else -1 if high < 0.5 else 0


def judgements(outcomes: Sequence[Outcome]) -> int:
    """How many votes (or a judge's verdicts) `outcomes` hold: a vote on a pair two models
    share is one vote, though it gives an outcome for each."""
    return len({(o.pair_id, o.voter) for o in outcomes})


def wilson(successes: float, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None without trials)."""
    if trials <= 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class HeadToHead:
    """`model` against `other`, over the judgements of pairs of their two titles."""

    model: str
    other: str
    wins: int
    losses: int
    ties: int
    both_bad: int
    # the win rate at equal length (None: too few decisive votes, or no length differences),
    # and the fitted length effect: > 0 means the longer title of a pair tends to win
    length_controlled: float | None = None
    length_effect: float | None = None
    # ideas (and samples) where the two wrote the very same title: no pair to vote on. Models
    # sample with the same seed, so a model the preference step barely changed often writes
    # its starting model's title word for word.
    same_title: int = 0
    # pair by pair (each pair's decisive votes, majority; an even split decides nothing):
    # votes on one pair are not independent, so this interval is the one to trust when
    # pairs have several votes
    pairs_won: int = 0
    pairs_lost: int = 0

    @property
    def pair_interval(self) -> tuple[float, float] | None:
        return wilson(self.pairs_won, self.pairs_won + self.pairs_lost)

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def total(self) -> int:
        return self.decisive + self.ties + self.both_bad

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.decisive if self.decisive else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.wins, self.decisive)

    @property
    def ties_as_half(self) -> float | None:
        """Wins plus half of the ties and "both bad", over every judgement."""
        if not self.total:
            return None
        return (self.wins + 0.5 * (self.ties + self.both_bad)) / self.total

    def describe(self) -> str:
        if self.win_rate is None:
            same = f"; the same title {self.same_title} times" if self.same_title else ""
            return (
                f"{self.model} vs {self.other}: no decisive votes yet ({self.total} in all{same})"
            )
        low, high = self.interval or (0.0, 0.0)
        line = (
            f"{self.model} beats {self.other} in {self.wins} of {self.decisive} decisive votes: "
            f"{self.win_rate:.0%} (95% CI {low:.0%}–{high:.0%}); ties {self.ties}, both bad "
            f"{self.both_bad}; ties as half: {self.ties_as_half:.0%}"
        )
        if self.length_controlled is not None:
            line += f"; at equal length: {self.length_controlled:.0%}"
        decided = self.pairs_won + self.pairs_lost
        if decided and decided != self.decisive:
            plow, phigh = self.pair_interval
            line += (
                f"; by pair: {self.pairs_won} of {decided} "
                f"({self.pairs_won / decided:.0%}, 95% CI {plow:.0%}–{phigh:.0%})"
            )
        if self.same_title:
            line += f"; the same title {self.same_title} times (no pair)"
        return line

    def verdict(self, by: str = "people") -> str:
        """In words, for the owner: which of the two people (or the judge `by`) prefer, or that
        the votes cannot tell yet and about how many more decisive votes would if the rate
        held. Pair by pair where some pair has several votes (its votes are not independent),
        else vote by vote."""
        won, lost, unit = self._counted()
        if not won + lost:
            return f"{self.model} vs {self.other}: no {unit}s yet"
        rate, (low, high) = won / (won + lost), wilson(won, won + lost)
        seen = f"{won} of {counted(won + lost, unit)}, {rate:.0%}, 95% CI {low:.0%}–{high:.0%}"
        if side := side_of_even((low, high)):
            better, worse = (self.model, self.other) if side > 0 else (self.other, self.model)
            prefer = "people prefer" if by == "people" else f"{by} prefers"
            return f"{prefer} {better} to {worse} ({seen})"
        line = f"{self.model} vs {self.other}: too close to call yet ({seen})"
        needed = _decisive_needed(rate)
        if needed is None:
            return line + ": dead even so far"
        more = max(needed - (won + lost), 1)
        units = unit if more == 1 else f"{unit}s"
        return line + f"; if the rate held, about {_about(more)} more {units} would settle it"

    def _counted(self) -> tuple[int, int, str]:
        """What a verdict counts: pairs where some pair has several votes (its votes are not
        independent), else votes; won, lost, and the unit's name."""
        by_pair = self.pairs_won + self.pairs_lost not in (0, self.decisive)
        if by_pair:
            return self.pairs_won, self.pairs_lost, "decided pair"
        return self.wins, self.losses, "decisive vote"

    def preferred(self) -> str | None:
        """The model clearly preferred (its 95% interval clear of even, as `verdict` says
        it), or None: no decisive vote yet, or too close to call."""
        won, lost, _ = self._counted()
        if not won + lost:
            return None
        side = side_of_even(wilson(won, won + lost))
        return self.model if side > 0 else self.other if side < 0 else None

    def flipped(self) -> HeadToHead:
        """The same judgements read from the other model's side. (The length effect is the
        longer title's, whichever model wrote it: it stays.)"""
        controlled = self.length_controlled
        return replace(
            self,
            model=self.other,
            other=self.model,
            wins=self.losses,
            losses=self.wins,
            length_controlled=None if controlled is None else 1 - controlled,
            pairs_won=self.pairs_lost,
            pairs_lost=self.pairs_won,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "decisive": self.decisive,
            "win_rate": self.win_rate,
            "interval": self.interval,
            "ties_as_half": self.ties_as_half,
            "pair_interval": self.pair_interval,
        }


def _decisive_needed(rate: float, z: float = Z95) -> int | None:
    """The fewest decisive judgements at `rate` whose Wilson interval leaves out 50% (None at
    an even rate: no number does)."""
    if abs(rate - 0.5) < 1e-9:
        return None
    n = max(1, math.floor(z * z * rate * (1 - rate) / (rate - 0.5) ** 2))  # the normal guess
    while True:  # then the Wilson interval itself, from just under the guess
        if side_of_even(wilson(rate * n, n)):  # the rate held exactly
            return n
        n += max(1, n // 50)


def _about(n: int) -> str:
    """A count rounded as one says it: 7, 40, 350, 1,200."""
    digits = max(len(str(n)) - 2, 0)
    return f"{round(n, -digits):,}"


def head_to_head(outcomes: Sequence[Outcome], model: str, other: str) -> HeadToHead:
    counts: Counter = Counter()
    lengths: list[tuple[int, int]] = []  # (length difference model - other, model won)
    margin: Counter = Counter()  # per pair: model's decisive votes minus other's
    for o in outcomes:
        if {o.model_a, o.model_b} != {model, other}:
            continue
        ours, theirs = (o.title_a, o.title_b) if o.model_a == model else (o.title_b, o.title_a)
        winner = o.winner()
        if winner is None:
            counts[o.choice] += 1
            continue
        counts["wins" if winner == model else "losses"] += 1
        margin[o.pair_id] += 1 if winner == model else -1
        lengths.append((len(ours) - len(theirs), int(winner == model)))
    controlled, effect = length_controlled(lengths)
    return HeadToHead(
        model,
        other,
        counts["wins"],
        counts["losses"],
        counts["tie"],
        counts["both_bad"],
        controlled,
        effect,
        pairs_won=sum(m > 0 for m in margin.values()),
        pairs_lost=sum(m < 0 for m in margin.values()),
    )


def length_controlled(
    outcomes: Sequence[tuple[int, int]], ridge: float = 0.01
) -> tuple[float | None, float | None]:
    """(the win rate at equal length, the length effect) from (length difference, won) rows.

    Logistic regression won ~ b0 + b1 * tanh(difference / spread), spread being the standard
    deviation of the differences; the win rate at equal length is sigmoid(b0). A small ridge
    keeps the fit finite when one side always wins. None when there are fewer than 2 rows or
    the lengths never differ (then there is nothing to control for).
    """
    import numpy as np

    if len(outcomes) < 2:
        return None, None
    diff = np.array([d for d, _ in outcomes], dtype=float)
    won = np.array([w for _, w in outcomes], dtype=float)
    spread = diff.std()
    if spread == 0:
        return None, None
    x = np.column_stack([np.ones_like(diff), np.tanh(diff / spread)])
    beta = np.zeros(2)
    for _ in range(100):  # Newton's method on the penalised log-likelihood
        p = 1 / (1 + np.exp(-x @ beta))
        gradient = x.T @ (won - p) - ridge * beta
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + np.exp(-beta[0]))), float(beta[1])


@dataclass(frozen=True)
class ArenaScore:
    model: str
    score: float  # Elo-like: 1000 = the round's average model, +400 = ten times the odds
    low: float
    high: float
    wins: int
    losses: int
    ties: int  # ties and both bad


def arena(outcomes: Sequence[Outcome], models: Sequence[str]) -> list[ArenaScore]:
    """The models ranked by Bradley–Terry score from the decisive judgements, with 95%
    intervals, best first: `ratings.bradley_terry_board`."""
    games = [(o.model_a, o.model_b, o.winner()) for o in outcomes]
    board = bradley_terry_board(models, games)
    return [ArenaScore(*astuple(s)) for s in board]


@dataclass(frozen=True)
class PairDetail(RoundPair):
    """One of the round's pairs, with its votes."""

    counts: dict[str, int]
    voters: int
    winner: str | None  # the majority's model; None: no votes, a tie or an equal split


# The report as tables, for people (the Evaluate tab): the columns, then `RoundReport.tables`.
COMPARISON_COLUMNS = [
    "Model",
    "Against",
    "Wins",
    "Losses",
    "Ties",
    "Both bad",
    "Same title",
    "Win rate",
    "95% interval",
    "By pair (95% interval)",
    "Ties as half",
    "At equal length",
]
ARENA_COLUMNS = ["Model", "Score", "95% interval", "Wins", "Losses", "Ties / both bad"]
DETAIL_COLUMNS = ["Idea", "Title A", "Model A", "Title B", "Model B", "Votes", "Voters", "Winner"]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _span(interval: tuple[float, float] | None) -> str:
    return "n/a" if interval is None else f"{interval[0]:.0%} – {interval[1]:.0%}"


@dataclass(frozen=True)
class RoundReport:
    round: str
    models: list[str]
    k: int | None
    ideas_from: str | None
    ideas: int
    pairs: int
    same_title: int  # (idea, sample, two models) that wrote the same title: no pair to vote on
    votes: int
    voters: int
    judged_by: str  # "people" or the judge's name
    comparisons: list[HeadToHead]
    arena: list[ArenaScore]
    mean_length: dict[str, float]  # characters of each model's titles
    agreement: Agreement | None
    detail: list[PairDetail] = field(default_factory=list)
    # a judge's verdicts beside the people's: how often it picks the people's majority
    judge_agreement: dict[str, Any] | None = None
    # {a run's label: its SFT stage's label}, for the run models whose stage is in the round
    stages: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["comparisons"] = [c.as_dict() for c in self.comparisons]
        return record

    def _publishing(self) -> list[str]:
        """Which model to publish, where a run's SFT stage was judged beside it: by people's
        votes, a run's model not clearly preferred to its own stage leaves the stage worth
        publishing on its own (what people prefer, not what a loss says)."""
        if self.judged_by != "people":
            return []
        lines = []
        for run, stage in self.stages.items():
            h = next((c for c in self.comparisons if {c.model, c.other} == {run, stage}), None)
            preferred = h.preferred() if h is not None and h.decisive else run
            if preferred == run:
                continue
            if preferred == stage:
                said = f"people prefer {stage} to {run}: the stage is the one to publish"
            else:
                said = f"{run} is not clearly preferred to {stage} yet"
            lines.append(f"Publishing: {said} (the Hub tab pushes a run's SFT stage alone).")
        return lines

    def tables(self) -> dict[str, list[list]]:
        """The comparisons, the arena and the pairs as rows under the *_COLUMNS headers."""
        comparisons = []
        for c in self.comparisons:
            decided = c.pairs_won + c.pairs_lost
            by_pair = f"{c.pairs_won} of {decided} ({_span(c.pair_interval)})" if decided else ""
            rates = [_percent(c.win_rate), _span(c.interval), by_pair]
            rates += [_percent(c.ties_as_half), _percent(c.length_controlled)]
            counts = [c.model, c.other, c.wins, c.losses, c.ties, c.both_bad, c.same_title]
            comparisons.append([*counts, *rates])
        arena = [
            [s.model, round(s.score), f"{s.low:.0f} – {s.high:.0f}", s.wins, s.losses, s.ties]
            for s in self.arena
        ]
        detail = []
        for d in self.detail:
            votes = ", ".join(f"{k} {v}" for k, v in sorted(d.counts.items())) or "none yet"
            pair = [d.idea, d.title_a, d.model_a, d.title_b, d.model_b]
            detail.append([*pair, votes, d.voters, d.winner or ""])
        return {"comparisons": comparisons, "arena": arena, "detail": detail}

    def describe(self) -> str:
        k = f", {self.k} title(s) per model per idea" if self.k else ""
        lines = [
            f"Round {self.round!r}: {', '.join(self.models)}; {counted(self.ideas, 'idea')} "
            f"({self.ideas_from or 'unknown'}){k}; {counted(self.pairs, 'pair')}",
            f"Judged by {self.judged_by}: {counted(self.votes, 'vote')}"
            + (f" from {counted(self.voters, 'voter')}" if self.judged_by == "people" else ""),
        ]
        if self.same_title:
            lines.append(f"{self.same_title} times two models wrote the same title (no pair)")
        lines += [f"Verdict: {c.verdict(self.judged_by)}" for c in self.comparisons]
        lines += self._publishing()
        lines += [c.describe() for c in self.comparisons]
        if len(self.models) > 2 or self.votes:
            lines.append("Arena (Bradley–Terry, 1000 = the round's average model):")
            lines += [
                f"  {s.model}: {s.score:.0f} ({s.low:.0f}–{s.high:.0f}); "
                f"{s.wins} wins, {s.losses} losses, {s.ties} ties or both bad"
                for s in self.arena
            ]
        lengths = ", ".join(f"{m} {n:.0f}" for m, n in self.mean_length.items())
        lines.append(f"Mean title length in characters: {lengths}")
        if self.agreement and self.agreement.pairs:
            alpha = "n/a" if self.agreement.alpha is None else f"{self.agreement.alpha:.2f}"
            lines.append(
                f"Agreement over {counted(self.agreement.pairs, 'pair')} with 2+ votes: "
                f"{self.agreement.unanimous:.0%} unanimous, Krippendorff's alpha {alpha}"
            )
        if self.judge_agreement:
            j = self.judge_agreement
            lines.append(
                f"The judge agrees with the people's majority on {j['agree']} of {j['pairs']} "
                f"pairs that have one ({j['rate']:.0%}); it called {j['judge_ties']} of them a tie"
                if j["pairs"]
                else "No pair has both a people's majority and a judge's verdict yet"
            )
        return "\n".join(lines)


def comparisons(
    outcomes: Sequence[Outcome], models: Sequence[str], titles: Sequence[RoundTitle] = ()
) -> list[HeadToHead]:
    """Every two models, the later one listed against the earlier (tuned vs base, ...), with
    how often the two wrote the same title (from the round's `titles`)."""
    same = same_titles(titles, models)
    return [
        replace(
            head_to_head(outcomes, models[j], models[i]),
            same_title=same[frozenset((models[i], models[j]))],
        )
        for j in range(len(models))
        for i in range(j)
    ]


def pair_details(pairs: Sequence[RoundPair], outcomes: Sequence[Outcome]) -> list[PairDetail]:
    """One row per pair with its votes (each vote once), its side's writers named together
    where several models wrote the same title ("base / SFT")."""
    votes: dict[int, dict[str, str]] = defaultdict(dict)  # pair -> voter -> choice
    for o in outcomes:
        votes[o.pair_id][o.voter] = o.choice
    writers: dict[int, tuple[list[str], list[str]]] = {}
    for p in pairs:
        a, b = writers.setdefault(p.pair_id, ([], []))
        a += [p.model_a] if p.model_a not in a else []
        b += [p.model_b] if p.model_b not in b else []
    details = []
    for p in {p.pair_id: p for p in pairs}.values():
        a, b = (" / ".join(side) for side in writers[p.pair_id])
        counts = dict(Counter(votes[p.pair_id].values()))
        winner = {"a": a, "b": b}.get(majority_side(counts))
        voters = len(votes[p.pair_id])
        details.append(PairDetail(p.pair_id, p.idea, a, b, p.title_a, p.title_b, counts, voters,
                                  winner))  # fmt: skip
    return details


def same_titles(titles: Sequence[RoundTitle], models: Sequence[str]) -> Counter:
    """Per two models (a frozenset), how many (idea, sample) they wrote the very same title."""
    written: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for t in titles:
        written[t.idea, t.sample][t.model] = t.text
    counts: Counter = Counter()
    for texts in written.values():
        present = [m for m in models if m in texts]
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                counts[frozenset((a, b))] += texts[a] == texts[b]
    return counts


def stages_in_round(info: RoundInfo) -> dict[str, str]:
    """{a run's label: its SFT stage's label}, for each run model of the round whose stage
    (RUN/model/sft) is in it too."""
    places = {model_place(m["name"]): m["label"] for m in info.models}
    found = {}
    for m in info.models:
        stage = Path(m["name"]).expanduser()
        if stage.name == SFT_STAGE and (run := places.get(model_place(stage.parent))):
            found[run] = m["label"]
    return found


def round_report(
    store: VoteStore,
    name: str,
    judged: Sequence[Outcome] | None = None,
    judged_by: str = "people",
) -> RoundReport:
    """The round `name`'s results from the people's votes, or from `judged` (a judge's
    verdicts, see `pipeline.judges.judge_round`), with the judge's agreement with people."""
    info: RoundInfo = store.round_info(name)
    pairs = store.round_pairs(info.round_id)
    titles = store.round_titles(info.round_id)
    in_round = {p.pair_id for p in pairs}
    votes = [v for v in store.votes() if v.pair_id in in_round]
    people = round_outcomes(votes, pairs)
    outcomes = list(judged) if judged is not None else people
    models = info.labels
    lengths: dict[str, list[int]] = defaultdict(list)
    for t in titles:
        lengths[t.model].append(len(t.text))
    details = pair_details(pairs, people)
    return RoundReport(
        round=info.name,
        models=models,
        k=info.k,
        ideas_from=info.ideas_from,
        ideas=len({p.idea for p in pairs} | {t.idea for t in titles}),
        pairs=len({p.pair_id for p in pairs}),
        same_title=sum(same_titles(titles, models).values()),
        votes=judgements(outcomes),
        voters=voter_count(votes) if judged is None else 0,
        judged_by=judged_by,
        comparisons=comparisons(outcomes, models, titles),
        arena=arena(outcomes, models),
        mean_length={m: sum(v) / len(v) for m in models if (v := lengths.get(m))},
        agreement=agreement(votes) if votes else None,
        detail=details,
        judge_agreement=None if judged is None else judge_agreement(judged, details),
        stages=stages_in_round(info),
    )


@dataclass(frozen=True)
class PeopleVerdict:
    """What people's blind votes in one evaluation round say of a model against another."""

    round: str
    ideas: int
    voters: int
    other: str  # the other model as the round named it: a folder or a Hub id
    result: HeadToHead  # the model against the other, by their labels in the round


def people_verdicts(store: VoteStore, model: str | Path) -> list[PeopleVerdict]:
    """Every evaluation round that had `model` (a folder, matched by where it is, or a Hub
    id): how people's votes there went for it against each of the round's other models,
    oldest round first. Comparisons nobody has voted on yet are left out, and so are rounds
    that judged an earlier training of the folder (a stopped run, resumed since)."""
    wanted, found = model_place(model), []
    version = model_version(model)
    for info in reversed(store.rounds()):
        names = {m["label"]: m["name"] for m in info.models}
        entry = next((m for m in info.models if model_place(m["name"]) == wanted), None)
        if entry is None or entry.get("version") not in (None, version):
            continue
        ours = entry["label"]
        report = round_report(store, info.name)
        for h in report.comparisons:
            if not h.total or ours not in (h.model, h.other):
                continue
            result = h if h.model == ours else h.flipped()
            found.append(
                PeopleVerdict(info.name, report.ideas, report.voters, names[result.other], result)
            )
    return found


def judge_agreement(judged: Sequence[Outcome], details: Sequence[PairDetail]) -> dict[str, Any]:
    """Over pairs where the people's votes have a majority winner: how often the judge picked
    the same model (a judge's tie counts as not agreeing)."""
    # by side: a pair several models share has one verdict and one majority, whichever two
    # models an outcome of it names
    verdicts = {o.pair_id: majority_side({o.choice: 1}) for o in judged}
    decided = [d for d in details if d.winner is not None and d.pair_id in verdicts]
    agree = sum(verdicts[d.pair_id] == majority_side(d.counts) for d in decided)
    return {
        "pairs": len(decided),
        "agree": agree,
        "rate": agree / len(decided) if decided else None,
        "judge_ties": sum(verdicts[d.pair_id] is None for d in decided),
    }


def chart(report: RoundReport):
    """A matplotlib figure: each comparison's win rate with its Wilson interval, and the
    arena's scores with their intervals."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the app and the CLI only save or serve the figure
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 3.2 + 0.35 * len(report.comparisons)), layout="constrained")
    left, right = figure.subplots(1, 2)
    shown = [c for c in report.comparisons if c.win_rate is not None]
    names = [f"{c.model}\nvs {c.other}" for c in shown]
    rates = [c.win_rate for c in shown]
    # (rounding can put a rate a hair outside its own interval; matplotlib refuses that)
    errors = [
        [max(0.0, c.win_rate - c.interval[0]) for c in shown],
        [max(0.0, c.interval[1] - c.win_rate) for c in shown],
    ]
    if shown:
        left.barh(names, rates, xerr=errors, color="#4C72B0", capsize=4)
    # where pairs have several votes, the by-pair interval (the one to trust) beside it
    for row, c in enumerate(shown):
        decided = c.pairs_won + c.pairs_lost
        if decided and decided != c.decisive:
            rate = c.pairs_won / decided
            low, high = c.pair_interval
            spread = [[max(0.0, rate - low)], [max(0.0, high - rate)]]
            left.errorbar(rate, row + 0.25, xerr=spread, fmt="o", color="#C44E52")
    if any(c.pairs_won + c.pairs_lost not in (0, c.decisive) for c in shown):
        left.plot([], [], "o", color="#C44E52", label="by pair")
        left.legend(loc="lower right", fontsize="small")
    if not shown:
        left.set_yticks([])
        left.text(0.5, 0.5, "no decisive votes yet", ha="center", transform=left.transAxes)
    left.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set_xlim(0, 1)
    left.set_xlabel("win rate over decisive votes (95% Wilson interval)")
    left.invert_yaxis()
    board = report.arena
    right.barh(
        [s.model for s in board],
        [s.score - 1000 for s in board],
        left=1000,
        xerr=[[s.score - s.low for s in board], [s.high - s.score for s in board]],
        color="#55A868",
        capsize=4,
    )
    right.axvline(1000, color="grey", linestyle="--", linewidth=1)
    right.xaxis.set_major_locator(MaxNLocator(4))
    right.set_xlabel("Bradley–Terry score (95% interval)")
    right.invert_yaxis()
    title = f"Round {report.round}: judged by {report.judged_by}, {counted(report.votes, 'vote')}"
    figure.suptitle(textwrap.shorten(title, 100))
    return figure
