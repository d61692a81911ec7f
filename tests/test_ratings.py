import math

import pytest

from pipeline.errors import UserError
from pipeline.ratings import (
    agreement,
    bradley_terry,
    krippendorff_alpha,
    leaderboard,
    majority_preferences,
    scores_with_intervals,
    votes_per_idea,
)
from pipeline.records import Preference, VoteRow

IDEA = "rag"


def vote(pair_id, choice, voter="v", a="A", b="B", idea=IDEA):
    return VoteRow(f"{voter}-{pair_id}-{choice}", voter, pair_id, idea, a, b, choice, "a", 0, 1)


def votes_on(pair_id, *choices, a="A", b="B"):
    return [vote(pair_id, c, voter=f"v{i}", a=a, b=b) for i, c in enumerate(choices)]


def test_majority_decides_and_ties_or_splits_make_no_row():
    votes = (
        votes_on(1, "a_better", "a_better", "b_better", a="A", b="B")  # A wins
        + votes_on(2, "b_better", a="C", b="D")  # D wins
        + votes_on(3, "a_better", "b_better", a="E", b="F")  # equal split
        + votes_on(4, "tie", "tie", "a_better", a="G", b="H")  # tie is the majority
        + votes_on(5, "both_bad", a="I", b="J")
    )
    assert majority_preferences(votes) == [
        Preference(IDEA, "A", "B"),
        Preference(IDEA, "D", "C"),
    ]


def test_the_same_votes_in_any_order_make_the_same_rows_in_the_pairs_order():
    """Voters voting at once cast their votes in a different order every time: the dataset
    must not follow it (its row order is what training shuffles from)."""
    votes = (
        votes_on(2, "b_better", "b_better", a="C", b="D")
        + votes_on(1, "a_better", a="A", b="B")
        + votes_on(3, "a_better", a="E", b="F")
    )
    expected = [Preference(IDEA, "A", "B"), Preference(IDEA, "D", "C"), Preference(IDEA, "E", "F")]
    assert majority_preferences(votes) == expected
    assert majority_preferences(list(reversed(votes))) == expected
    assert majority_preferences(votes[1:] + votes[:1]) == expected


def test_min_votes_drops_thin_pairs():
    votes = votes_on(1, "a_better", "a_better") + votes_on(2, "b_better", a="C", b="D")
    assert majority_preferences(votes, min_votes=2) == [Preference(IDEA, "A", "B")]
    with pytest.raises(UserError):
        majority_preferences(votes, min_votes=0)


def test_krippendorff_alpha_by_hand():
    # Units [a,a], [a,b], [b,b]: o_aa=2, o_ab=o_ba=1, o_bb=2; n_a=n_b=3, n=6.
    # D_o = 2/6, D_e = (3*3 + 3*3) / (6*5) = 0.6, alpha = 1 - (1/3)/0.6 = 4/9.
    units = [{"a": 2}, {"a": 1, "b": 1}, {"b": 2}]
    assert krippendorff_alpha(units) == pytest.approx(4 / 9)


def test_krippendorff_alpha_extremes():
    assert krippendorff_alpha([{"a": 3}, {"b": 2}, {"a": 2}]) == pytest.approx(1.0)
    assert krippendorff_alpha([{"a": 1, "b": 1}, {"a": 1, "b": 1}]) < 0
    assert krippendorff_alpha([{"a": 2}, {"a": 3}]) is None  # one value only: undefined
    assert krippendorff_alpha([{"a": 1}]) is None


def test_agreement_counts_pairs_with_two_or_more_votes():
    votes = (
        votes_on(1, "a_better", "a_better")
        + votes_on(2, "a_better", "b_better", a="C", b="D")
        + votes_on(3, "tie", a="E", b="F")
    )
    result = agreement(votes)
    assert result.pairs == 2 and result.unanimous == 0.5
    assert result.alpha is not None and result.alpha < 0.5
    assert agreement([]).pairs == 0


def test_bradley_terry_orders_titles_and_is_centred():
    battles = [("A", "B")] * 8 + [("B", "A")] * 2 + [("B", "C")] * 8 + [("C", "B")] * 2
    scores = bradley_terry(["A", "B", "C"], battles)
    assert scores["A"] > scores["B"] > scores["C"]
    log_mean = sum(scores.values()) / 3
    assert log_mean == pytest.approx(1000)


def test_bradley_terry_matches_the_closed_form_for_two_titles():
    # Two items: the MLE odds are wins ratio (with the 0.5 prior on each side).
    scores = bradley_terry(["A", "B"], [("A", "B")] * 3 + [("B", "A")])
    expected = 400 * math.log10((3 + 0.5) / (1 + 0.5))
    assert scores["A"] - scores["B"] == pytest.approx(expected, abs=1e-6)


def test_bradley_terry_stays_finite_for_an_unbeaten_title():
    scores = bradley_terry(["A", "B"], [("A", "B")] * 5)
    assert all(math.isfinite(s) for s in scores.values())


def test_leaderboard_intervals_contain_the_estimate():
    votes = []
    for i in range(6):
        votes += votes_on(10 + i, "a_better", "a_better", "b_better", a="Best", b="Mid")
        votes += votes_on(20 + i, "a_better", "a_better", "a_better", a="Mid", b="Worst")
    votes += votes_on(30, "tie", a="Best", b="Worst")
    [board] = leaderboard(votes)
    assert board.idea == IDEA and board.votes == len(votes)
    assert [t.title for t in board.titles] == ["Best", "Mid", "Worst"]
    for t in board.titles:
        assert t.low <= t.score <= t.high and t.low < t.high
    best = board.titles[0]
    assert (best.wins, best.losses, best.ties) == (12, 6, 1)
    assert leaderboard(votes) == leaderboard(votes)


def test_one_vote_gives_a_wide_interval_not_a_certainty():
    # The bootstrap this replaced resampled the one vote into itself: "1095 – 1095".
    [board] = leaderboard([vote(1, "a_better")])
    for t in board.titles:
        assert t.high - t.low > 400 and t.low < 1000 < t.high


def test_a_unanimous_record_is_clear_of_even_odds_only_with_enough_votes():
    # As the exact sign test says: 5 of 5 is not significant at 5% (p = 0.0625), 10 of 10 is.
    [five] = leaderboard(votes_on(1, *["a_better"] * 5))
    [ten] = leaderboard(votes_on(1, *["a_better"] * 10))
    assert five.titles[0].title == ten.titles[0].title == "A"
    assert five.titles[0].low < 1000 < ten.titles[0].low


def test_intervals_cover_the_true_score_about_95_times_in_100():
    import numpy as np

    rng = np.random.default_rng(0)
    p_a = 0.7  # A beats B 7 times in 10: A's true score is 1000 + 200 log10(7 / 3)
    true_a = 1000 + 200 * math.log10(p_a / (1 - p_a))
    covered = 0
    for _ in range(400):
        a_wins = int(rng.binomial(30, p_a))
        rows = np.array([[0, 1]] * a_wins + [[1, 0]] * (30 - a_wins))
        _, low, high = scores_with_intervals(rows, 2)
        covered += low[0] <= true_a <= high[0]
    assert 0.92 <= covered / 400 <= 0.99


def test_votes_per_idea_most_voted_first():
    votes = [*votes_on(1, "tie", "a_better"), vote(2, "tie", idea="other")]
    votes += votes_on(3, "b_better", a="C", b="D")
    assert votes_per_idea(votes) == [(IDEA, 3, 2), ("other", 1, 1)]


def screened_votes():
    from dataclasses import replace

    def cast(voter, pair_id, choice, gold=None, flag=None, a="A", b="B"):
        return replace(vote(pair_id, choice, voter=voter, a=a, b=b), gold=gold, flag=flag)

    return [
        # gold pair 9: "G" (a) is the known better title
        cast("careful", 9, "a_better", gold="a", a="G", b="g!!"),
        cast("careless", 9, "b_better", gold="a", a="G", b="g!!"),
        cast("hasty", 9, "a_better", gold="a", a="G", b="g!!", flag="fast"),
        cast("careful", 1, "a_better"),
        cast("careless", 1, "b_better", a="A", b="B"),
        cast("careless", 2, "b_better", a="C", b="D"),
        cast("hasty", 3, "a_better", a="E", b="F", flag="fast"),
        cast("newcomer", 4, "b_better", a="H", b="I"),
        # minted in a burst from one address: every vote of theirs carries the mark
        cast("minted", 5, "a_better", a="J", b="K", flag="burst"),
        cast("minted", 6, "a_better", a="L", b="M", flag="burst,fast"),
    ]


def test_voter_stats_count_flags_and_gold_accuracy():
    from pipeline.ratings import voter_stats

    stats = {s.voter: s for s in voter_stats(screened_votes())}
    assert (stats["careless"].votes, stats["careless"].gold_accuracy) == (3, 0.0)
    assert (stats["careful"].gold_votes, stats["careful"].gold_accuracy) == (1, 1.0)
    assert (stats["hasty"].fast, stats["newcomer"].gold_accuracy) == (2, None)
    assert (stats["minted"].burst, stats["minted"].fast, stats["hasty"].burst) == (2, 1, 0)


def test_screening_leaves_out_gold_pairs_flagged_votes_and_careless_voters():
    from pipeline.ratings import Screening, screen_votes

    votes = screened_votes()
    kept, left_out = screen_votes(votes)
    assert all(v.gold is None for v in kept) and len(kept) == 7
    assert left_out["gold_pairs"] == 1 and left_out["gold_votes"] == 3
    assert left_out["fast_votes"] == 2 and not left_out["drop_fast"]
    assert (left_out["burst_votes"], left_out["burst_voters"]) == (2, 1)

    screening = Screening(drop_fast=True, min_gold_accuracy=0.5)
    kept, left_out = screen_votes(votes, screening)
    assert sorted((v.voter, v.pair_id) for v in kept) == [
        ("careful", 1), ("minted", 5), ("newcomer", 4),
    ]  # fmt: skip  # dropping the fast votes keeps the burst voter's slow one
    assert left_out["voters_below_gold"] == 1 and left_out["votes_of_voters_below_gold"] == 2
    assert left_out["voters_without_gold"] == 2  # the newcomer met no gold pair: kept
    kept, _ = screen_votes(votes, Screening(drop_burst=True, min_gold_accuracy=0.5))
    assert sorted((v.voter, v.pair_id) for v in kept) == [
        ("careful", 1), ("hasty", 3), ("newcomer", 4),
    ]  # fmt: skip  # and dropping the burst leaves the fast votes of others alone
    kept, _ = screen_votes(votes, Screening(True, True, 0.5))
    assert majority_preferences(kept) == [Preference(IDEA, "A", "B"), Preference(IDEA, "I", "H")]
    with pytest.raises(UserError, match="between 0 and 1"):
        Screening(min_gold_accuracy=80)
