import ast
import csv
import json

import pytest

from pipeline import datasets as ds
from pipeline.errors import UserError
from pipeline.prompts import title_prompt
from pipeline.records import SEED_DIR


@pytest.fixture(scope="module")
def seed():
    return ds.seed_preferences()


def _tutorial_rows():
    """preferences.csv: the rows the tutorial pushed to shawhin/youtube-titles-dpo."""
    with (SEED_DIR / "preferences.csv").open(newline="", encoding="utf-8") as f:
        return [
            {k: ast.literal_eval(row[k]) for k in ("prompt", "chosen", "rejected")}
            for row in csv.DictReader(f)
        ]


def test_seed_has_the_tutorials_1140_pairs(seed):
    assert len(seed) == 1140
    assert len({p.idea.lower() for p in seed}) == 114
    assert all(p.chosen != p.rejected for p in seed)


def test_seed_split_reproduces_the_tutorials_split_row_for_row(seed):
    dataset = ds.build_dataset(ds.split_preferences(seed, "seed"))
    assert list(dataset) == ["train", "valid"]
    assert (len(dataset["train"]), len(dataset["valid"])) == (1026, 114)
    assert dataset["valid"][0]["prompt"][0]["content"] == title_prompt(
        "intro independent component analysis"
    )

    import numpy as np

    expected = _tutorial_rows()
    order = np.random.RandomState(42).permutation(1140)
    got = list(dataset["train"]) + list(dataset["valid"])
    assert got == [expected[i] for i in order]


def test_rows_have_the_public_datasets_features(seed):
    dataset = ds.build_dataset({"train": seed[:3]})
    features = dataset["train"].features
    assert set(features) == {"prompt", "chosen", "rejected"}
    for column in features.values():
        assert set(column.feature) == {"content", "role"}
    row = dataset["train"][0]
    assert row["prompt"] == [{"role": "user", "content": title_prompt(seed[0].idea)}]
    assert row["chosen"] == [{"role": "assistant", "content": seed[0].chosen}]
    assert row["rejected"] == [{"role": "assistant", "content": seed[0].rejected}]


def test_idea_split_keeps_every_idea_on_one_side(seed):
    splits = ds.split_preferences(seed, "idea")
    train_ideas = {p.idea.lower() for p in splits["train"]}
    valid_ideas = {p.idea.lower() for p in splits["valid"]}
    assert not train_ideas & valid_ideas
    assert len(valid_ideas) == 12  # ceil(10% of 114)
    assert len(splits["train"]) + len(splits["valid"]) == 1140
    assert ds.split_preferences(seed, "idea") == splits  # fixed seed


def test_the_tutorials_split_leaks_ideas_which_ours_does_not(seed):
    splits = ds.split_preferences(seed, "seed")
    valid_ideas = {p.idea.lower() for p in splits["valid"]}
    train_ideas = {p.idea.lower() for p in splits["train"]}
    assert valid_ideas <= train_ideas  # all 76 valid ideas also in train
    assert len(valid_ideas) == 76


def test_ideas_differing_only_in_case_stay_together():
    prefs = [ds.Preference(idea, "a", "b") for idea in ["RAG", "rag", "x", "y", "z"]]
    for seed in range(10):
        splits = ds.split_by_idea(prefs, valid_fraction=0.4, seed=seed)
        sides = {name for name, part in splits.items() for p in part if p.idea.lower() == "rag"}
        assert len(sides) == 1


def test_save_writes_disk_parquet_and_summary(tmp_path, seed):
    from datasets import load_dataset, load_from_disk

    splits = ds.split_preferences(seed, "idea")
    summary = ds.summarize(splits, "seed", "idea")
    out = ds.save_dataset(ds.build_dataset(splits), tmp_path / "data", summary)

    reloaded = load_from_disk(str(out))
    assert reloaded["valid"].num_rows == len(splits["valid"])
    parquet = load_dataset("parquet", data_files=str(out / "parquet" / "valid.parquet"))["train"]
    assert list(parquet) == list(reloaded["valid"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows"] == {"train": 1020, "valid": 120}
    assert not set(saved["ideas"]["train"]) & set(saved["ideas"]["valid"])
    assert ds.load_preference_dataset(out)["train"].num_rows == 1020


def test_saving_over_an_unrelated_folder_is_refused(tmp_path, seed):
    (tmp_path / "precious.txt").write_text("keep me")
    splits = ds.split_preferences(seed[:20], "seed")
    with pytest.raises(UserError, match="not a dataset folder"):
        ds.save_dataset(ds.build_dataset(splits), tmp_path, {})
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_datasets_source_is_named_in_a_few_words_never_by_its_local_path(tmp_path):
    labels = tmp_path / "my-labels.csv"
    labels.write_text("idea,title_a,title_b,title_b_preferred\nrag,Alpha,Beta,1\n")
    mixed = ds.write_dataset_folder(tmp_path / "mixed", votes=labels, with_tutorial=True)
    assert str(tmp_path) in mixed["source"]  # the summary keeps where it was read from
    assert ds.source_in_brief(mixed["source"]) == "my-labels.csv and the tutorial's"
    assert ds.source_in_brief("seed") == "the tutorial's pairs"
    assert ds.source_in_brief("hub:you/titles@v2") == "you/titles@v2"
    assert ds.source_in_brief(str(tmp_path / "data" / "votes.db")) == "the votes"


def test_labelled_csv_maps_title_b_preferred_to_chosen(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("idea,title_a,title_b,title_b_preferred\nrag,Alpha,Beta,1\nrag,Gamma,Delta,0\n")
    assert ds.read_labelled_csv(path) == [
        ds.Preference("rag", "Beta", "Alpha"),
        ds.Preference("rag", "Gamma", "Delta"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idea,title_a,title_b\nrag,a,b\n", "missing column.*title_b_preferred"),
        ("idea,title_a,title_b,title_b_preferred\nrag,a,b,yes\n", "line 2: .*0 or 1"),
        ("idea,title_a,title_b,title_b_preferred\nrag,,b,1\n", "line 2: .*must not be empty"),
    ],
)
def test_malformed_labels_get_a_clear_error(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        ds.read_labelled_csv(path)


def test_idea_split_needs_two_ideas():
    with pytest.raises(UserError, match="at least 2 distinct ideas"):
        ds.split_preferences([ds.Preference("rag", "a", "b")] * 5, "idea")


def test_unknown_split_is_refused(seed):
    with pytest.raises(UserError, match="unknown split"):
        ds.split_preferences(seed, "random")


def test_loading_a_non_dataset_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a dataset folder"):
        ds.load_preference_dataset(tmp_path)
