"""Ranking accuracy: pair_logps scores pairs as TRL's DPOTrainer does, pair by pair."""

import json
import math

import pytest

from conftest import run_cli
from pipeline import datasets as ds
from pipeline.evaluation import HeldOutRanking, PairLogps, pair_logps, ranking_accuracy, sign_test
from pipeline.models import load_model
from pipeline.recipes import get_recipe
from pipeline.training import score_held_out, train_dpo


@pytest.fixture(scope="module")
def trained(small_data, tiny_model_dir, tmp_path_factory):
    """The tutorial recipe (full fine-tune, reference = the base), one epoch at a learning rate
    that moves the tiny model; 8 valid pairs are one eval batch, so TRL's batch mean is exact."""
    recipe = get_recipe("tutorial").changed(learning_rate=1e-3, epochs=1)
    out = tmp_path_factory.mktemp("scored") / "dpo"
    result = score_held_out(train_dpo(small_data, out, str(tiny_model_dir), recipe))
    assert result.reference == str(tiny_model_dir)  # no SFT stage: measured against the start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [r for r in records if "eval_rewards/accuracies" in r]
    return out, recipe.beta, evaluation, result


def test_implicit_rewards_and_accuracy_equal_trls_evaluation(trained, small_data, tiny_model_dir):
    out, beta, evaluation, _ = trained
    rows = list(ds.load_preference_dataset(small_data)["valid"])
    policy = pair_logps(load_model(str(out), fresh=True), rows)
    reference = pair_logps(load_model(str(tiny_model_dir), fresh=True), rows)
    for side in ("chosen", "rejected"):
        ours = getattr(policy, side), getattr(reference, side)
        reward = beta * sum(p - r for p, r in zip(*ours, strict=True)) / len(rows)
        assert reward == pytest.approx(evaluation[f"eval_rewards/{side}"], abs=1e-4)
        logp = sum(getattr(policy, side)) / len(rows)
        assert logp == pytest.approx(evaluation[f"eval_logps/{side}"], abs=1e-3)
    assert ranking_accuracy(policy, reference) == pytest.approx(
        evaluation["eval_rewards/accuracies"]
    )


def test_padding_in_a_batch_changes_no_score(tiny_model, small_data):
    rows = list(ds.load_preference_dataset(small_data)["train"])[:6]
    alone = pair_logps(tiny_model, rows, batch_size=1)
    batched = pair_logps(tiny_model, rows, batch_size=12)
    assert len(alone.chosen) == len(alone.rejected) == 6
    assert batched.chosen == pytest.approx(alone.chosen, abs=1e-4)
    assert batched.rejected == pytest.approx(alone.rejected, abs=1e-4)
    assert all(c < 0 for c in alone.chosen + alone.rejected)  # log-probabilities of real tokens


def test_ranking_accuracy_counts_strict_wins_pair_by_pair():
    policy = PairLogps("p", chosen=[-1.0, -5.0, -2.0, -3.0], rejected=[-2.0, -4.0, -2.0, -9.0])
    assert ranking_accuracy(policy) == 0.5  # the tie (pair 3) is not a win, as in TRL
    reference = PairLogps("r", chosen=[-0.5, -7.0, -3.0, -3.0], rejected=[-2.0, -4.0, -2.0, -1.0])
    # rewards: chosen [-0.5, 2, 1, 0], rejected [0, 0, 0, -8]
    assert ranking_accuracy(policy, reference) == 0.75
    assert ranking_accuracy(PairLogps("e", [], [])) == 0.0
    with pytest.raises(ValueError, match="different pairs"):
        ranking_accuracy(policy, PairLogps("r", [-1.0], [-1.0]))


def test_cli_scores_a_tuned_model_against_its_reference(trained, small_data, tiny_model_dir):
    out, _, evaluation, _ = trained
    args = ["score", "--data", str(small_data), "--model", str(out)]
    result = run_cli(*args, "--reference", str(tiny_model_dir), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["pairs"] == 8 and record["split"] == "valid"
    assert record["accuracy"] == pytest.approx(evaluation["eval_rewards/accuracies"])
    assert record["reference"] == str(tiny_model_dir)

    own = run_cli(*args, "--split", "train")
    assert own.returncode == 0, own.stderr
    assert "16 train pairs" in own.stdout and "its own likelihood" in own.stdout


def test_cli_refuses_a_missing_split_in_one_line(small_data, tiny_model_dir):
    result = run_cli("score", "--data", str(small_data), "--split", "test",
                     "--model", str(tiny_model_dir))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {small_data} has no 'test' split (it has train, valid)"
    )


def test_a_finished_run_carries_its_held_out_ranking(trained, small_data, tiny_model_dir):
    out, _, evaluation, result = trained
    rows = list(ds.load_preference_dataset(small_data)["valid"])
    untrained = ranking_accuracy(pair_logps(load_model(str(tiny_model_dir), fresh=True), rows))
    held_out = result.held_out
    assert {k: held_out[k] for k in ("pairs", "tuned", "untrained")} == {
        "pairs": 8,
        "tuned": pytest.approx(evaluation["eval_rewards/accuracies"]),
        "untrained": untrained,
    }
    # pair by pair against the start: what was gained less what was lost is the change
    change = held_out["gained"] - held_out["lost"]
    assert change == round((held_out["tuned"] - untrained) * 8)
    saved = json.loads((out / "train_summary.json").read_text())["held_out"]
    assert saved == result.held_out


def test_the_sign_test_matches_its_exact_values():
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(0, 10) == sign_test(10, 0)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(15, 5) == pytest.approx(2 * sum(math.comb(20, k) for k in range(6)) / 2**20)


def test_the_held_out_line_says_whether_the_change_is_beyond_chance():
    clear = HeldOutRanking(120, 0.683, 0.558, gained=25, lost=10)
    noise = HeldOutRanking(120, 0.533, 0.558, gained=12, lost=15)
    assert clear.describe().endswith(
        "25 pairs gained and 10 lost: beyond chance (sign test p = 0.017)"
    )
    assert noise.describe().endswith("within chance (sign test p = 0.7)")
    one = HeldOutRanking(8, 0.625, 0.5, gained=1, lost=0)
    assert "against it, 1 pair gained and 0 lost" in one.describe()  # never "1 pairs"
    # a run scored before the pair-by-pair counts were kept still reads
    old = HeldOutRanking(120, 0.683, 0.558)
    assert (
        old.describe()
        == "held-out pairs ranked as labelled: 0.683 of 120 (the untrained model: 0.558)"
    )
