"""From votes to judgements: majority per pair, agreement between voters, and title scores.

- Majority: the most frequent choice on a pair decides, if it is unique and is `a_better` or
  `b_better`; ties, "both bad" and equal splits make no preference row.
- Agreement, over pairs with two or more votes: the share that are unanimous, and
  Krippendorff's alpha for nominal data over the four choices.
- Voter quality: per voter, votes cast, votes flagged 'fast' (cast too fast to have read the
  titles), whether the voter was minted in a burst from one address ('burst'), and accuracy on
  gold pairs (checks with a known answer); `screen_votes` leaves out what a `Screening` says
  before the majority is taken.
- Scores: Bradley–Terry strengths of an idea's titles from its decisive votes, on an Elo-like
  scale (1000 = the idea's average title, +400 = ten times the odds), with 95% intervals from
  the fit's curvature (`scores_with_intervals` says why not the bootstrap).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field

from pipeline.errors import UserError
from pipeline.records import Preference, VoteRow


@dataclass(frozen=True)
class PairTally:
    pair_id: int
    idea: str
    title_a: str
    title_b: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def winner(self) -> str | None:
        """'a', 'b', or None (tie, both bad, or an equal split)."""
        return majority_side(self.counts)


def majority_side(counts: dict[str, int]) -> str | None:
    """The side ('a' or 'b') that a pair's most frequent choice prefers; None when that choice
    is a tie or both bad, is shared by an equal split, or there are no votes."""
    ranked = Counter(counts).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return {"a_better": "a", "b_better": "b"}.get(ranked[0][0])


def tally(votes: Sequence[VoteRow]) -> list[PairTally]:
    """Each pair's votes counted, in the pairs' order (not the votes'): the same votes make
    the same dataset however many voters cast them at once, and in whatever order."""
    by_pair: dict[int, PairTally] = {}
    for v in votes:
        t = by_pair.setdefault(v.pair_id, PairTally(v.pair_id, v.idea, v.title_a, v.title_b))
        t.counts[v.choice] = t.counts.get(v.choice, 0) + 1
    return sorted(by_pair.values(), key=lambda t: t.pair_id)


def majority_preferences(votes: Sequence[VoteRow], min_votes: int = 1) -> list[Preference]:
    """One chosen/rejected row per pair that has `min_votes` votes and a clear winner."""
    if min_votes < 1:
        raise UserError(f"min votes must be at least 1, not {min_votes}")
    prefs = []
    for t in tally(votes):
        if t.total < min_votes:
            continue
        winner = t.winner()
        if winner == "a":
            prefs.append(Preference(t.idea, t.title_a, t.title_b))
        elif winner == "b":
            prefs.append(Preference(t.idea, t.title_b, t.title_a))
    return prefs


def voter_count(votes: Sequence[VoteRow]) -> int:
    return len({v.voter for v in votes})


@dataclass(frozen=True)
class VoterStats:
    """One voter's record: how much they voted, how much of it was too fast to be read, how
    much of it was flagged 'burst' (all or none: the mark is the voter's), and how often they
    picked the known better title of a gold pair."""

    voter: str
    votes: int
    fast: int
    burst: int
    gold_votes: int
    gold_correct: int

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_votes if self.gold_votes else None


def voter_stats(votes: Sequence[VoteRow]) -> list[VoterStats]:
    """Per voter, most votes first. On a gold pair only the known better title is right:
    a tie or "both bad" counts as wrong."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for v in votes:
        c = counts[v.voter]
        c["votes"] += 1
        c["fast"] += "fast" in v.flags
        c["burst"] += "burst" in v.flags
        if v.gold is not None:
            c["gold_votes"] += 1
            c["gold_correct"] += v.choice == f"{v.gold}_better"
    stats = [
        VoterStats(voter, c["votes"], c["fast"], c["burst"], c["gold_votes"], c["gold_correct"])
        for voter, c in counts.items()
    ]
    return sorted(stats, key=lambda s: (-s.votes, s.voter))


@dataclass(frozen=True)
class Screening:
    """Which votes a dataset leaves out, besides gold pairs' (checks, never rows).

    Gold pairs are checks, not data: their votes never make rows. Votes on evaluation rounds'
    pairs measure models; they make rows only with `include_evaluation`. With `min_gold_accuracy`,
    every vote of a voter whose gold accuracy is below it is left out; voters who met no gold
    pair are kept (and counted). With `drop_fast`, votes flagged as too fast to read are left
    out; with `drop_burst`, votes of voters minted in a burst from one address (a script, or a
    classroom behind one router: the owner decides, so it is its own switch).
    """

    drop_fast: bool = False
    drop_burst: bool = False
    min_gold_accuracy: float | None = None
    include_evaluation: bool = False
    # only votes on these pools (an on-policy iteration's own, `pipeline.iterations`); empty:
    # every pool
    pools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        floor = self.min_gold_accuracy
        if floor is not None and not 0 <= floor <= 1:
            raise UserError(f"min gold accuracy must be between 0 and 1, not {floor}")

    def drops(self, vote: VoteRow) -> bool:
        """Whether `vote`'s own flags or round leave it out (gold accuracy is the voter's)."""
        flags = vote.flags
        return (
            (self.drop_fast and "fast" in flags)
            or (self.drop_burst and "burst" in flags)
            or (not self.include_evaluation and vote.evaluation is not None)
            or (bool(self.pools) and vote.pool not in self.pools)
        )


NO_SCREENING = Screening()  # gold pairs and evaluation rounds apart, every vote counts


def screen_votes(
    votes: Sequence[VoteRow], screening: Screening = NO_SCREENING
) -> tuple[list[VoteRow], dict]:
    """The votes a dataset is built from, as `screening` says, and what was left out (for
    its card)."""
    min_gold_accuracy = screening.min_gold_accuracy
    stats = voter_stats(votes)
    below = {
        s.voter
        for s in stats
        if min_gold_accuracy is not None
        and s.gold_accuracy is not None
        and s.gold_accuracy < min_gold_accuracy
    }
    counted = [v for v in votes if v.gold is None and v.voter not in below]
    kept = [v for v in counted if not screening.drops(v)]
    left_out = {
        "gold_pairs": len({v.pair_id for v in votes if v.gold is not None}),
        "gold_votes": sum(v.gold is not None for v in votes),
        "drop_fast": screening.drop_fast,
        "fast_votes": sum("fast" in v.flags for v in counted),
        "drop_burst": screening.drop_burst,
        "burst_votes": sum("burst" in v.flags for v in counted),
        "burst_voters": len({v.voter for v in counted if "burst" in v.flags}),
        "min_gold_accuracy": min_gold_accuracy,
        "voters_below_gold": len(below),
        "votes_of_voters_below_gold": sum(v.voter in below for v in votes if v.gold is None),
        "voters_without_gold": sum(s.gold_votes == 0 for s in stats),
        "include_evaluation": screening.include_evaluation,
        "evaluation_votes": sum(v.evaluation is not None for v in votes if v.gold is None),
        "evaluation_rounds": sorted({v.evaluation for v in votes if v.evaluation}),
    }
    return kept, left_out


@dataclass(frozen=True)
class Agreement:
    pairs: int  # pairs with two or more votes
    unanimous: float | None  # share of those where every vote is the same
    alpha: float | None  # Krippendorff's alpha, nominal; None when it is undefined


def agreement(votes: Sequence[VoteRow]) -> Agreement:
    units = [t for t in tally(votes) if t.total >= 2]
    if not units:
        return Agreement(0, None, None)
    unanimous = sum(1 for t in units if len(t.counts) == 1) / len(units)
    return Agreement(len(units), unanimous, krippendorff_alpha([t.counts for t in units]))


def krippendorff_alpha(units: Sequence[dict[str, int]]) -> float | None:
    """Nominal alpha from per-unit value counts (units with fewer than 2 values are skipped).

    alpha = 1 - D_o / D_e, from the coincidence matrix: each unit with m values adds
    count_c * count_k / (m - 1) to o[c][k] (c != k) and count_c * (count_c - 1) / (m - 1)
    to o[c][c].
    """
    coincidence: dict[tuple[str, str], float] = defaultdict(float)
    for counts in units:
        m = sum(counts.values())
        if m < 2:
            continue
        for c, nc in counts.items():
            for k, nk in counts.items():
                pairs = nc * (nc - 1) if c == k else nc * nk
                coincidence[c, k] += pairs / (m - 1)
    totals: dict[str, float] = defaultdict(float)
    for (c, _), value in coincidence.items():
        totals[c] += value
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(v for (c, k), v in coincidence.items() if c != k) / n
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n * (n - 1))
    if expected == 0:
        return None  # every vote the same value: agreement is perfect but alpha is 0/0
    return 1 - observed / expected


def votes_per_idea(votes: Sequence[VoteRow]) -> list[tuple[str, int, int]]:
    """(idea, votes, pairs voted on), most voted first."""
    counts: Counter = Counter(v.idea for v in votes)
    pairs: dict[str, set[int]] = defaultdict(set)
    for v in votes:
        pairs[v.idea].add(v.pair_id)
    return [(idea, n, len(pairs[idea])) for idea, n in counts.most_common()]


# Half a win each way between every two entrants: keeps every fit finite (an unbeaten title)
# and ties together entrants never compared directly.
PRIOR_WINS = 0.5
Z_95 = 1.959964


@dataclass(frozen=True)
class TitleScore:
    title: str
    score: float
    low: float  # the 95% interval's ends
    high: float
    wins: int
    losses: int
    ties: int  # ties and "both bad" on pairs with this title


@dataclass(frozen=True)
class IdeaBoard:
    idea: str
    votes: int
    titles: list[TitleScore]


@dataclass(frozen=True)
class Standing:
    """One entrant's place on a Bradley–Terry board: a title among an idea's titles, or a
    model in an evaluation round's arena."""

    name: str
    score: float  # Elo-like: 1000 = the board's average, +400 = ten times the odds
    low: float  # the 95% interval's ends
    high: float
    wins: int
    losses: int
    ties: int  # games with no winner (a tie, or both bad)


def bradley_terry_board(
    names: Sequence[str], games: Iterable[tuple[str, str, str | None]]
) -> list[Standing]:
    """The one Bradley–Terry board: entrants ranked by Elo-scaled strength fitted to their
    decisive games (a, b, winner; winner None for none), with 95% intervals
    (`scores_with_intervals`) and each one's record; best first."""
    import numpy as np

    index = {name: i for i, name in enumerate(names)}
    record: dict[str, Counter] = {name: Counter() for name in names}
    battles = []
    for a, b, winner in games:
        if winner is None:
            record[a]["ties"] += 1
            record[b]["ties"] += 1
            continue
        loser = b if winner == a else a
        battles.append([index[winner], index[loser]])
        record[winner]["wins"] += 1
        record[loser]["losses"] += 1
    rows = np.array(battles, dtype=int).reshape(-1, 2)
    scores, low, high = scores_with_intervals(rows, len(names))
    board = [
        Standing(
            name,
            float(scores[i]),
            float(low[i]),
            float(high[i]),
            record[name]["wins"],
            record[name]["losses"],
            record[name]["ties"],
        )
        for name, i in index.items()
    ]
    return sorted(board, key=lambda s: (-s.score, s.name))


def bradley_terry(
    items: Sequence[str], battles: Sequence[tuple[str, str]], prior: float = PRIOR_WINS
) -> dict[str, float]:
    """Elo-scaled strengths from (winner, loser) battles (the board's scores alone)."""
    import numpy as np

    index = {item: i for i, item in enumerate(items)}
    wins = np.zeros((len(items), len(items)))
    for winner, loser in battles:
        wins[index[winner], index[loser]] += 1
    scores = _elo(_fit_bradley_terry(wins, prior))
    return {item: float(scores[index[item]]) for item in items}


def _fit_bradley_terry(wins, prior: float):
    """Strengths from a win matrix (n, n; row beat column), by Hunter's MM algorithm,
    their geometric mean 1. `prior` pseudo-wins each way between every two items keep the fit
    finite when a title never lost (or never won) and tie together titles never compared."""
    import numpy as np

    size = len(wins)
    wins = wins + prior * (1 - np.eye(size))
    games = wins + wins.T
    total_wins = wins.sum(1)
    strength = np.ones(size)
    for _ in range(500):
        pair_sums = strength[:, None] + strength[None, :]
        updated = total_wins / (games / pair_sums).sum(1)
        updated /= np.exp(np.log(updated).mean())
        done = np.abs(updated - strength).max() < 1e-10
        strength = updated
        if done:
            break
    return strength


def _elo(strength):
    import numpy as np

    return 1000 + 400 * np.log10(strength)


def leaderboard(votes: Sequence[VoteRow]) -> list[IdeaBoard]:
    """Per idea: its titles ranked by Bradley–Terry score, with 95% intervals."""
    by_idea: dict[str, list[VoteRow]] = defaultdict(list)
    for v in votes:
        by_idea[v.idea].append(v)
    boards = []
    for idea, rows in sorted(by_idea.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        titles = sorted({t for v in rows for t in (v.title_a, v.title_b)})
        games = [(v.title_a, v.title_b, _battle(v)[0] if _decisive(v) else None) for v in rows]
        board = bradley_terry_board(titles, games)
        boards.append(IdeaBoard(idea, len(rows), [TitleScore(*astuple(s)) for s in board]))
    return boards


def scores_with_intervals(battles, size: int):
    """Elo-scaled Bradley–Terry scores of `size` items from (winner, loser) index rows, and
    their 95% intervals: (scores, low, high), each an array over the items.

    The intervals come from the curvature of the fit's log-likelihood (with its prior
    wins) at the estimate: a normal approximation on the log-strengths, centred as the
    scores are. Not the bootstrap, which Chatbot Arena uses with thousands of votes: with the
    few votes an idea has here, its resamples of a unanimous record (one vote, or five for
    the same title) are all that same record, and it reports a zero-width interval, a
    certainty one vote does not give.
    """
    import numpy as np

    wins = np.zeros((size, size))
    np.add.at(wins, (battles[:, 0], battles[:, 1]), 1)
    strength = _fit_bradley_terry(wins, PRIOR_WINS)
    scores = _elo(strength)
    games = wins + wins.T + 2 * PRIOR_WINS * (1 - np.eye(size))
    p_win = strength[:, None] / (strength[:, None] + strength[None, :])
    # Fisher information of the log-strengths; its null space is the common shift, which the
    # pseudo-inverse removes: the covariance of log-strengths centred on their mean.
    weight = games * p_win * p_win.T
    information = np.diag(weight.sum(1)) - weight
    spread = 400 / np.log(10) * np.sqrt(np.clip(np.diag(np.linalg.pinv(information)), 0, None))
    return scores, scores - Z_95 * spread, scores + Z_95 * spread


def _decisive(v: VoteRow) -> bool:
    return v.choice in ("a_better", "b_better")


def _battle(v: VoteRow) -> tuple[str, str]:
    return (v.title_a, v.title_b) if v.choice == "a_better" else (v.title_b, v.title_a)
