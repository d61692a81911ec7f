"""Evaluation rounds in the library and the CLI: ideas, models, the store, the statistics, the
judges; on tiny models and real temporary databases."""

import json
import random
import re
import shutil
from dataclasses import replace

import pytest

from conftest import MARKER, run_cli
from pipeline import datasets as ds
from pipeline.errors import UserError
from pipeline.judges import PairwiseJudge, judge_round
from pipeline.mirror import restore_rounds, restore_votes, round_records
from pipeline.ratings import Screening
from pipeline.records import vote_record
from pipeline.round_tables import RoundTitle
from pipeline.rounds import (
    RoundPlan,
    create_round,
    fresh_ideas,
    ideas_from_text,
    plan_round,
    round_models,
)
from pipeline.votes import VoteStore
from pipeline.winrates import (
    HeadToHead,
    Outcome,
    arena,
    head_to_head,
    length_controlled,
    round_report,
    wilson,
)

# --- ideas -----------------------------------------------------------------------------------


def test_the_shipped_fresh_ideas_are_fifty_plus_and_none_is_the_tutorials():
    ideas = fresh_ideas()
    tutorial = {ds.idea_key(p.idea) for p in ds.seed_preferences()}
    assert len(tutorial) == 114
    assert len(ideas) >= 50
    assert len({ds.idea_key(i) for i in ideas}) == len(ideas)
    assert not {ds.idea_key(i) for i in ideas} & tutorial


def test_typed_ideas_skip_blanks_comments_and_repeats_and_refuse_bad_ones():
    assert ideas_from_text("one idea\n\n# a note\nOne idea\n  two  \n") == ["one idea", "two"]
    with pytest.raises(UserError, match="no ideas"):
        ideas_from_text("\n# only a comment\n")
    with pytest.raises(UserError, match="idea 2: the video idea is 501 characters"):
        ideas_from_text("fine\n" + "x" * 501)


# --- the statistics --------------------------------------------------------------------------


def test_wilson_interval_matches_the_formula_s_known_values():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) is None
    assert wilson(5, 5)[1] == 1.0 and wilson(0, 5)[0] == 0.0


def _outcome(model_a, model_b, choice, title_a="a title", title_b="b title", pair=0):
    return Outcome(pair, "idea", model_a, model_b, title_a, title_b, choice, "voter")


def test_head_to_head_counts_ties_and_both_bad_apart_whichever_side_a_model_is_on():
    outcomes = [
        _outcome("tuned", "base", "a_better"),
        _outcome("base", "tuned", "b_better"),
        _outcome("base", "tuned", "a_better"),
        _outcome("tuned", "base", "tie"),
        _outcome("base", "tuned", "both_bad"),
        _outcome("tuned", "sft", "a_better"),  # another comparison: not counted here
    ]
    h = head_to_head(outcomes, "tuned", "base")
    assert (h.wins, h.losses, h.ties, h.both_bad) == (2, 1, 1, 1)
    assert h.win_rate == pytest.approx(2 / 3)
    assert h.interval == wilson(2, 3)
    assert h.ties_as_half == pytest.approx((2 + 0.5 * 2) / 5)


@pytest.mark.parametrize(
    ("wins", "losses", "said"),
    [
        (30, 10, "people prefer tuned to base (30 of 40 decisive votes, 75%"),
        (10, 30, "people prefer base to tuned (10 of 40 decisive votes, 25%"),
        (12, 8, "tuned vs base: too close to call yet (12 of 20 decisive votes, 60%"),
        (25, 25, "too close to call yet (25 of 50 decisive votes, 50%, 95% CI 37%–63%): dead even"),
        (0, 0, "tuned vs base: no decisive votes yet"),
    ],
)
def test_a_head_to_head_says_in_words_who_people_prefer_or_how_far_from_telling(wins, losses, said):
    h = HeadToHead("tuned", "base", wins, losses, ties=3, both_bad=1)
    assert said in h.verdict()
    more = re.search(r"about ([\d,]+) more decisive votes would settle it", h.verdict())
    if wins + losses and wins != losses and said.startswith("tuned vs base: too close"):
        # the number (rounded to two figures) settles it at this rate, and far fewer do not
        n = wins + losses + int(more.group(1).replace(",", ""))
        rate = wins / (wins + losses)

        def settled(count: int) -> bool:
            low, high = wilson(rate * count, count)  # the rate held exactly
            return low > 0.5 or high < 0.5

        assert settled(int(n * 1.05)) and not settled(int(n * 0.85))
    else:
        assert more is None


def test_a_head_to_head_tells_by_pair_when_pairs_have_several_votes():
    # 20 votes for tuned, but on 14 pairs of which it won 8: the votes on a pair are one verdict
    h = HeadToHead("tuned", "sft", 20, 10, 0, 0, pairs_won=8, pairs_lost=6)
    assert h.verdict().startswith("tuned vs sft: too close to call yet (8 of 14 decided pairs")
    assert h.verdict().endswith("more decided pairs would settle it")
    assert replace(h, pairs_won=14, pairs_lost=1).verdict().startswith("people prefer tuned")


def test_a_head_to_head_flipped_is_the_same_votes_read_from_the_other_side():
    rng = random.Random(2)
    outcomes = [
        _outcome(a, b, rng.choice(["a_better", "a_better", "b_better", "tie", "both_bad"]),
                 "x" * rng.randrange(20, 60), "y" * rng.randrange(20, 60), pair=rng.randrange(9))
        for a, b in [("tuned", "base"), ("base", "tuned")] * 40
    ]  # fmt: skip
    h, other_side = head_to_head(outcomes, "tuned", "base"), head_to_head(outcomes, "base", "tuned")
    assert h.length_controlled is not None and h.pairs_won != h.pairs_lost
    flipped = h.flipped()
    fitted = ("length_controlled", "length_effect")  # the same fit, up to rounding
    assert [getattr(flipped, f) for f in fitted] == pytest.approx(
        [getattr(other_side, f) for f in fitted]
    )
    assert replace(flipped, **dict.fromkeys(fitted)) == replace(other_side, **dict.fromkeys(fitted))


def test_three_models_and_scripted_preferences_give_the_expected_bradley_terry_order():
    rng = random.Random(0)
    strength = {"base": 1.0, "sft": 3.0, "tuned": 4.5}  # P(i beats j) = s_i / (s_i + s_j)
    outcomes = []
    for _ in range(600):
        a, b = rng.sample(list(strength), 2)
        a_wins = rng.random() < strength[a] / (strength[a] + strength[b])
        outcomes.append(_outcome(a, b, "a_better" if a_wins else "b_better"))
    board = arena(outcomes, ["base", "sft", "tuned"])
    assert [s.model for s in board] == ["tuned", "sft", "base"]
    assert all(s.low <= s.score <= s.high for s in board)
    # the gap between base and the others is clear of the intervals
    assert board[2].high < board[1].low


def test_the_length_controlled_rate_moves_the_right_way_on_a_planted_length_preference():
    # Voters prefer the longer title, whoever wrote it; `long` writes longer titles more often.
    rng = random.Random(1)
    rows = []
    for _ in range(2000):
        diff = rng.gauss(12, 15)  # long's title minus short's, in characters
        p_long_wins = 1 / (1 + pow(2.718281828, -diff / 8))
        rows.append((round(diff), int(rng.random() < p_long_wins)))
    raw = sum(won for _, won in rows) / len(rows)
    controlled, effect = length_controlled(rows)
    assert raw > 0.7
    assert abs(controlled - 0.5) < 0.06  # at equal length neither model is preferred
    assert effect > 0  # the longer title wins
    # no length preference planted: the controlled rate stays near the raw one
    fair = [(round(rng.gauss(12, 15)), int(rng.random() < 0.7)) for _ in range(2000)]
    fair_raw = sum(w for _, w in fair) / len(fair)
    assert abs(length_controlled(fair)[0] - fair_raw) < 0.05
    assert length_controlled([(3, 1)]) == (None, None)
    assert length_controlled([(3, 1), (3, 0)]) == (None, None)  # lengths never differ


# --- the store -------------------------------------------------------------------------------


def _two_model_round(store, name="r1"):
    titles = [
        RoundTitle("base", "idea one", 0, "Base title one", "Base title one"),
        RoundTitle("tuned", "idea one", 0, "Tuned title one Z", "Tuned title one Z"),
        RoundTitle("base", "idea two", 0, "Same title", "Same title"),
        RoundTitle("tuned", "idea two", 0, "Same title", "Same title"),
        RoundTitle("base", "idea three", 0, "Base three", "Base three"),
        RoundTitle("tuned", "idea three", 0, "Tuned three Z", "Tuned three Z"),
    ]
    models = [{"label": "base", "name": "b"}, {"label": "tuned", "name": "t"}]
    return store.add_round(name, models, titles, 1, "typed")


@pytest.mark.parametrize(
    ("stage_wins", "said"),
    [
        (6, "Publishing: people prefer run-1 SFT to run-1 tuned: the stage is the one to publish"),
        (3, "Publishing: run-1 tuned is not clearly preferred to run-1 SFT yet"),
        (0, None),  # people prefer the run's model: nothing to say
        (None, None),  # no votes yet
    ],
)
def test_a_round_says_when_a_runs_sft_stage_is_worth_publishing_alone(tmp_path, stage_wins, said):
    """People's votes, not a loss, say which model to publish: where a run's model is not
    clearly preferred to its own SFT stage, the report says the stage may go up alone."""
    store = VoteStore.in_folder(tmp_path / "data")
    ideas = [f"idea {i}" for i in range(6)]
    titles = [RoundTitle(label, idea, 0, f"{label} on {idea}", f"{label} on {idea}")
              for idea in ideas for label in ("run-1 tuned", "run-1 SFT")]  # fmt: skip
    models = [{"label": "run-1 tuned", "name": "runs/run-1/model"},
              {"label": "run-1 SFT", "name": "runs/run-1/model/sft"}]  # fmt: skip
    info = store.add_round("r1", models, titles, 1, "typed")
    for number, pair in enumerate(
        store.round_pairs(info.round_id) if stage_wins is not None else []
    ):
        stage_side = "a_better" if pair.model_a == "run-1 SFT" else "b_better"
        tuned_side = "b_better" if stage_side == "a_better" else "a_better"
        store.record_vote(f"v{number}", pair.pair_id,
                          stage_side if number < stage_wins else tuned_side, "a")  # fmt: skip
    report = round_report(store, "r1")
    assert report.stages == {"run-1 tuned": "run-1 SFT"}
    lines = [line for line in report.describe().splitlines() if line.startswith("Publishing")]
    assert lines == (
        [] if said is None else [f"{said} (the Hub tab pushes a run's SFT stage alone)."]
    )


def test_a_round_adds_pairs_tagged_and_its_votes_stay_out_of_datasets(tmp_path):
    store = VoteStore.in_folder(tmp_path / "data")
    store.add_gold_pair("idea zero", "A fine title", "bad")  # a normal pair beside the round
    info = _two_model_round(store)
    assert info.pairs == 2  # idea two: both models wrote the same title, so no pair
    with pytest.raises(UserError, match="already a round"):
        _two_model_round(store)
    pairs = store.round_pairs(info.round_id)
    for number, p in enumerate(pairs):
        marked_side = "a_better" if MARKER in p.title_a else "b_better"
        store.record_vote(f"v{number}", p.pair_id, marked_side, "a")
        store.record_vote(f"w{number}", p.pair_id, marked_side, "b")
    report = round_report(store, "r1")
    (h,) = report.comparisons
    assert (h.model, h.other, h.wins, h.losses) == ("tuned", "base", 4, 0)
    assert report.same_title == 1 and h.same_title == 1
    assert (h.pairs_won, h.pairs_lost, h.pair_interval) == (2, 0, wilson(2, 2))
    assert report.votes == 4 and report.voters == 4
    assert all(d.winner == "tuned" and d.voters == 2 for d in report.detail)
    assert report.agreement.unanimous == 1.0
    # the round's votes make no rows; a flag puts them in, and the summary says so
    with pytest.raises(UserError, match="4 votes on evaluation rounds kept out"):
        ds.preferences_from_store(store.path)
    with_rounds = Screening(include_evaluation=True)
    prefs, facts = ds.preferences_from_store(store.path, screening=with_rounds)
    assert len(prefs) == 2 and all(MARKER in p.chosen for p in prefs)
    assert facts["left_out"]["evaluation_votes"] == 4
    assert facts["left_out"]["evaluation_rounds"] == ["r1"]


def test_the_dataset_card_says_whether_evaluation_votes_are_in(tmp_path):
    from hub.cards import dataset_card

    store = VoteStore.in_folder(tmp_path / "data")
    store.import_tutorial_pool()
    for _ in range(2):
        store.record_vote("someone", store.next_pair("someone").pair_id, "a_better", "a")
    info = _two_model_round(store)
    for p in store.round_pairs(info.round_id):
        store.record_vote("someone", p.pair_id, "a_better", "a")
    left = ds.write_dataset_folder(tmp_path / "without", store.path, split="seed")
    both = ds.write_dataset_folder(
        tmp_path / "with", store.path, split="seed", screening=Screening(include_evaluation=True)
    )
    assert sum(left["rows"].values()) == 2 and sum(both["rows"].values()) == 4
    assert "make no rows" in dataset_card(left, "alice/t") and "r1" in dataset_card(left, "alice/t")
    assert "**included**" in dataset_card(both, "alice/t")


def test_a_round_vote_mirrored_and_restored_is_still_the_round_s(tmp_path):
    store = VoteStore.in_folder(tmp_path / "a")
    info = _two_model_round(store)
    pair = store.round_pairs(info.round_id)[0]
    store.record_vote("v1", pair.pair_id, "a_better", "b")
    records = [json.loads(json.dumps(vote_record(v))) for v in store.votes()]
    fresh = VoteStore.in_folder(tmp_path / "b")
    assert restore_votes(fresh, records) == (1, 0)
    (vote,) = fresh.votes()
    assert (vote.evaluation, vote.model_a, vote.model_b) == ("r1", pair.model_a, pair.model_b)
    (h,) = round_report(fresh, "r1").comparisons
    assert {h.wins, h.losses} == {0, 1}
    with pytest.raises(UserError, match="no preference rows from"):
        ds.preferences_from_store(fresh.path)


def test_a_round_mirrored_whole_comes_back_with_its_unvoted_pairs_and_its_serving(tmp_path):
    store = VoteStore.in_folder(tmp_path / "a")
    info = _two_model_round(store)
    store.set_pool(info.pool, priority=7)
    records = json.loads(json.dumps(round_records(store)))
    assert [(r["name"], r["priority"], r["retired"]) for r in records] == [("r1", 7, False)]
    fresh = VoteStore.in_folder(tmp_path / "b")
    broken = {**records[0], "name": "r2", "models": "not a list"}
    assert restore_rounds(fresh, [*records, broken, "not a record"]) == (1, 2)
    assert restore_rounds(fresh, records) == (0, 0)  # once
    back = fresh.round_info("r1")
    assert (back.pairs, back.models, back.k) == (info.pairs, info.models, info.k)
    pairs = [(p.idea, p.title_a, p.title_b) for p in fresh.round_pairs(back.round_id)]
    assert pairs == [(p.idea, p.title_a, p.title_b) for p in store.round_pairs(info.round_id)]
    assert [(p.name, p.priority) for p in fresh.pools()] == [("round:r1", 7)]
    assert round_records(fresh) == records
    # a round that a restored vote alone brought back has no titles to make it from
    store.record_vote("v1", store.round_pairs(info.round_id)[0].pair_id, "a_better", "a")
    from_votes = VoteStore.in_folder(tmp_path / "c")
    restore_votes(from_votes, [vote_record(v) for v in store.votes()])
    assert [r.name for r in from_votes.rounds()] == ["r1"] and round_records(from_votes) == []


# --- models: a run brings its stages ----------------------------------------------------------


@pytest.fixture
def finished_run(tmp_path, tiny_model_dir, small_data):
    """A run folder as training leaves it: model/ with its summary, model/sft/ the SFT stage."""
    model = tmp_path / "runs" / "run-1" / "model"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_model_dir, model / "sft")
    summary = {"started_from": str(tiny_model_dir), "data": str(small_data)}
    (model / "train_summary.json").write_text(json.dumps(summary))
    return model


def test_a_run_brings_its_base_and_sft_stage_and_its_held_out_ideas(
    finished_run, tiny_model_dir, small_data
):
    models = round_models([str(finished_run)])
    assert [m.label for m in models] == [
        f"base: {tiny_model_dir}",
        "run-1 SFT",
        "run-1 tuned",
    ]
    assert [m.name for m in models] == [
        str(tiny_model_dir),
        str(finished_run / "sft"),
        str(finished_run),
    ]
    # the run's model as this training left it (a summary's hash): trained on, it is another
    version = models[-1].version
    assert [m.version for m in models] == [None, None, version] and len(version) == 16
    with pytest.raises(UserError, match="two or more models"):
        round_models([str(finished_run)], stages=False)
    plan = plan_round([str(finished_run)], None, k=2, name="held")
    described = json.loads((small_data / "summary.json").read_text())
    held = set(plan.ideas)
    assert held == set(described["ideas"]["valid"])
    assert not held & set(described["ideas"]["train"])
    assert plan.trained_on == []
    # ideas the run trained on are named as such
    trained = plan_round([str(finished_run)], described["ideas"]["train"][:2], "file", name="t")
    assert trained.trained_on == described["ideas"]["train"][:2]


def test_a_report_calls_a_run_s_model_and_sft_stage_by_the_run(tmp_path):
    """Every run's model folder is called "model": an iteration started from one was "model"
    in its report and its judging round ("start: model")."""
    from pipeline.rounds import short_name

    app_run, cli_run, own = (
        tmp_path / "runs" / "run-20261207-101010",
        tmp_path / "dpo",
        tmp_path / "mine",
    )
    for folder in (app_run / "model" / "sft", cli_run / "sft", own):
        folder.mkdir(parents=True)
    assert short_name(str(app_run / "model")) == "run-20261207-101010"
    assert short_name(str(app_run / "model" / "sft")) == "run-20261207-101010 SFT"
    assert short_name(str(cli_run)) == "dpo" and short_name(str(cli_run / "sft")) == "dpo SFT"
    assert short_name(str(own)) == "mine"
    assert short_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_create_round_stores_nothing_when_a_model_fails(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="does not exist"):  # refused before any generation
        plan_round([str(tiny_model_dir), str(tmp_path / "missing")], ["an idea"], "typed")
    broken = tmp_path / "broken"  # looks like a model folder, but its weights are missing
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    store = VoteStore.in_folder(tmp_path / "data")
    plan = plan_round([str(tiny_model_dir), str(broken)], ["an idea"], "typed")
    assert isinstance(plan, RoundPlan) and [m.label for m in plan.models] == [
        tiny_model_dir.name,
        "broken",
    ]
    with pytest.raises(UserError, match="could not load model"):
        create_round(store, plan)  # the first model's titles are written, then dropped
    assert store.rounds() == [] and store.counts()["pairs"] == 0


def test_a_round_of_pairs_already_served_is_served_from_their_pool(tmp_path, marked_models):
    """The same models on the same ideas write the same titles (seed 0): a second round's
    pairs are the first's, in the first's pool, so it has no pool of its own to serve first."""
    plain, marked = marked_models
    store = VoteStore.in_folder(tmp_path / "data")
    said = {}
    for name in ("first", "again"):
        plan = plan_round([str(plain), str(marked)], ["idea one", "idea two"], "typed", name=name)
        info = create_round(store, plan)
        assert info.pairs == 2 and "2 pairs" in info.describe_pairs()
        said[name] = info.describe_pairs(created=True, first=True)
    assert [(p.name, p.priority, p.pairs) for p in store.pools()] == [("round:first", 1, 2)]
    # what the owner is told: only the first round's pairs were put first
    assert said["first"] == "2 pairs in the voting pool now, served first"
    assert said["again"] == (
        "2 pairs in the voting pool now (2 of them already in an earlier pool: served, and "
        "voted on, as that pool's)"
    )
    assert store.round_info("again").own_pairs == 0


# --- judges ----------------------------------------------------------------------------------


def _side_with(pair, title_a: bool) -> str:
    return "a_better" if title_a else "b_better"


class FirstTitleJudge(PairwiseJudge):
    """Always prefers whichever title it reads first: a position bias and nothing else."""

    name = "first-title judge"

    def first_is_better(self, questions):
        return [True for _ in questions]


class MarkerJudge(PairwiseJudge):
    name = "marker judge"

    def first_is_better(self, questions):
        return [first.count(MARKER) > second.count(MARKER) for _, first, second in questions]


def test_a_judge_is_asked_both_ways_and_a_flip_is_a_tie(tmp_path):
    store = VoteStore.in_folder(tmp_path / "data")
    _two_model_round(store)
    assert FirstTitleJudge().prefer("idea", "one", "two") == "tie"
    biased = round_report(store, "r1", judge_round(store, "r1", FirstTitleJudge()), "biased")
    assert biased.comparisons[0].ties == 2 and biased.comparisons[0].decisive == 0
    first, second = store.round_pairs(store.round_info("r1").round_id)
    # people: the marked title on the first pair, the other one on the second
    store.record_vote("v1", first.pair_id, _side_with(first, MARKER in first.title_a), "a")
    store.record_vote("v1", second.pair_id, _side_with(second, MARKER not in second.title_a), "a")
    judged = round_report(store, "r1", judge_round(store, "r1", MarkerJudge()), "marker judge")
    assert judged.comparisons[0].wins == 2  # the judge prefers tuned's marked titles
    assert judged.judge_agreement == {"pairs": 2, "agree": 1, "rate": 0.5, "judge_ties": 0}


def test_a_vote_on_a_title_two_models_share_judges_both(tmp_path):
    """The SFT stage wrote its base's title for idea one: the tuned model's title against
    that one is one pair in the pool, and a vote on it tells against the base and against
    the SFT stage alike (it used to count for the first of the two only)."""
    store = VoteStore.in_folder(tmp_path / "data")
    written = {"base": ["Base one", "Base two"], "sft": ["Base one", "SFT two"],
               "tuned": ["Tuned one Z", "Tuned two Z"]}  # fmt: skip
    titles = [RoundTitle(model, idea, 0, text, text) for model, texts in written.items()
              for idea, text in zip(["idea one", "idea two"], texts, strict=True)]  # fmt: skip
    info = store.add_round("shared", [{"label": m, "name": m} for m in written], titles, 1, "typed")
    assert info.pairs == 4  # idea one: base / sft against tuned; idea two: all three ways
    for voter in ("v1", "v2"):  # the marked title, and on idea two the SFT stage over base
        for pair in {p.pair_id: p for p in store.round_pairs(info.round_id)}.values():
            marked = MARKER in pair.title_a + pair.title_b
            first = MARKER in pair.title_a if marked else pair.title_a == "SFT two"
            store.record_vote(voter, pair.pair_id, _side_with(pair, first), "a")
    report = round_report(store, "shared")
    results = {(h.model, h.other): (h.wins, h.losses) for h in report.comparisons}
    assert results == {("sft", "base"): (2, 0), ("tuned", "base"): (4, 0),
                       ("tuned", "sft"): (4, 0)}  # fmt: skip
    assert report.pairs == 4 and report.same_title == 1 and report.votes == 8
    shared = next(d for d in report.detail if d.idea == "idea one")
    assert {shared.model_a, shared.model_b} == {"base / sft", "tuned"} and shared.voters == 2
    assert shared.winner == "tuned" and shared.counts in ({"a_better": 2}, {"b_better": 2})
    # a judge is asked each pair once, and its verdict on the shared one counts both ways
    judged = judge_round(store, "shared", MarkerJudge())
    assert len(judged) == 5 and len({o.pair_id for o in judged}) == 4
    by_judge = round_report(store, "shared", judged, "marker judge")
    assert {(h.model, h.other): h.wins for h in by_judge.comparisons}[("tuned", "sft")] == 2
    assert by_judge.judge_agreement["pairs"] == 4 and by_judge.judge_agreement["agree"] == 3


def test_a_chat_model_judges_a_round_with_valid_verdicts(tmp_path, tiny_model):
    from pipeline.judges import ChatJudge

    store = VoteStore.in_folder(tmp_path / "data")
    _two_model_round(store)
    judge = ChatJudge(tiny_model)
    outcomes = judge_round(store, "r1", judge)
    assert len(outcomes) == 2
    assert {o.choice for o in outcomes} <= {"a_better", "b_better", "tie"}
    # asked the other way round, a decisive verdict names the same title
    for o in outcomes:
        again = judge.prefer(o.idea, o.title_b, o.title_a)
        expected = {"a_better": "B", "b_better": "A", "tie": "tie"}[o.choice]
        assert again == expected


def test_the_chat_judge_reads_the_last_position_s_logits_alone(tiny_model):
    """Only the last position's logits are computed (`logits_to_keep`), equal to those of the
    whole forward; a model whose forward takes no `logits_to_keep` still answers."""
    import torch

    from pipeline.judges import last_logits

    tokenizer, model = tiny_model.tokenizer, tiny_model.model
    batch = tokenizer(["a short one", "a somewhat longer question"], return_tensors="pt",
                      padding=True, padding_side="left")  # fmt: skip
    seen = []
    hook = model.lm_head.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    with torch.inference_mode():
        whole = model(**batch).logits[:, -1]
        kept = last_logits(model, batch)

        class OlderModel(torch.nn.Module):  # a forward without `logits_to_keep`
            def forward(self, input_ids, attention_mask):
                return model(input_ids=input_ids, attention_mask=attention_mask)

        older = last_logits(OlderModel(), batch)
    hook.remove()
    assert seen == [batch["input_ids"].shape[1], 1, batch["input_ids"].shape[1]]
    assert torch.allclose(kept, whole, atol=1e-5) and torch.equal(older, whole)


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_creates_a_round_reports_it_and_measures_models(tmp_path, marked_models):
    plain, marked = marked_models
    ideas = tmp_path / "ideas.txt"
    ideas.write_text("idea one\nidea two\nidea three\n")
    data = tmp_path / "data"
    made = run_cli("evaluate", "create", "--models", f"{plain},{marked}", "--ideas", str(ideas),
                   "--data", str(data), "--name", "cli round", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["pairs"] == 3
    store = VoteStore.open_existing(data)
    assert [(p.name, p.priority) for p in store.pools()] == [("round:cli round", 1)]
    other = tmp_path / "other-ideas.txt"
    other.write_text("idea four\n")
    beside = run_cli("evaluate", "create", "--models", f"{plain},{marked}", "--not-first",
                     "--ideas", str(other), "--data", str(data), "--name", "beside")  # fmt: skip
    assert beside.returncode == 0 and "served first" not in beside.stdout, beside.stderr
    assert {p.name: p.priority for p in store.pools()}["round:beside"] == 0
    for p in store.round_pairs(store.round_info("cli round").round_id):
        store.record_vote("v1", p.pair_id, "a_better" if MARKER in p.title_a else "b_better", "a")
    report = run_cli("evaluate", "report", "--round", "cli round", "--data", str(data), "--json",
                     "--chart", str(tmp_path / "chart.png"))  # fmt: skip
    assert report.returncode == 0, report.stderr
    (h,) = json.loads(report.stdout)["comparisons"]
    assert (h["model"], h["wins"], h["losses"], h["win_rate"]) == ("marked", 3, 0, 1.0)
    assert h["interval"] == list(wilson(3, 3))
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    text = run_cli("evaluate", "report", "--round", "cli round", "--data", str(data))
    assert "beats" in text.stdout and "3 of 3 decisive votes: 100%" in text.stdout
    missing = run_cli("evaluate", "report", "--round", "nope", "--data", str(data))
    assert missing.returncode == 2 and "no evaluation round 'nope'" in missing.stderr
    auto = run_cli("evaluate", "auto", "--models", f"{plain},{marked}", "--ideas", str(ideas),
                   "--k", "2", "--json")  # fmt: skip
    assert auto.returncode == 0, auto.stderr
    measured = {m["model"]: m for m in json.loads(auto.stdout)["models"]}  # as named
    assert measured[str(marked)]["distinct_per_idea"] <= 2
    assert measured[str(plain)]["titles"] == 6
    assert 0 <= measured[str(plain)]["follows_prompt"] <= 1


def test_the_chart_draws_before_any_vote_and_after(tmp_path):
    import io
    import warnings

    from pipeline.winrates import chart

    store = VoteStore.in_folder(tmp_path / "data")
    info = _two_model_round(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a collapsed layout is only a warning in matplotlib
        for voted in (False, True):
            if voted:
                for p in store.round_pairs(info.round_id):
                    store.record_vote("v1", p.pair_id, "a_better", "a")
                    store.record_vote("v2", p.pair_id, "a_better", "b")
            png = io.BytesIO()
            chart(round_report(store, "r1")).savefig(png, format="png")
            assert png.getvalue()[:4] == b"\x89PNG"
