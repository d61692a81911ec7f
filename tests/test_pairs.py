import csv

import pytest

from pipeline.errors import UserError
from pipeline.pairs import (
    Pair,
    pairs_for_idea,
    read_ideas_csv,
    read_pairs_csv,
    write_csv_atomic,
    write_pairs_csv,
)


def test_five_titles_make_ten_pairs_in_order():
    titles = ["A", "B", "C", "D", "E"]
    pairs = pairs_for_idea("idea", titles)
    assert len(pairs) == 10
    assert pairs[0] == Pair("idea", "A", "B")
    assert pairs[-1] == Pair("idea", "D", "E")
    assert all(p.title_a != p.title_b for p in pairs)


def test_duplicates_and_blanks_are_dropped_before_pairing():
    pairs = pairs_for_idea("idea", ["A", "B", "A", "  ", "C"])
    assert {(p.title_a, p.title_b) for p in pairs} == {("A", "B"), ("A", "C"), ("B", "C")}


def test_one_distinct_title_makes_no_pair():
    assert pairs_for_idea("idea", ["same", "same", "same"]) == []


def test_pairs_csv_round_trip_in_the_tutorial_format(tmp_path):
    pairs = [Pair("fine-tuning LLMs", 'A "quoted", title', "B\nwith newline")]
    out = tmp_path / "sub" / "pairs.csv"
    assert write_pairs_csv(pairs, out) == 1
    assert out.read_text().splitlines()[0] == "idea,title_a,title_b"
    assert read_pairs_csv(out) == pairs
    assert not list(out.parent.glob(".*partial*"))


def test_reads_the_tutorials_ideas_csv():
    from pipeline.records import SEED_DIR

    ideas = read_ideas_csv(SEED_DIR / "ideas.csv")
    assert len(ideas) == 114
    assert ideas[0] == "fine-tuning LLMs"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idea\nfoo\n", "missing column"),
        ("Idea\n", "no rows"),
        ('Idea\nfine\n""\n', "line 3: the video idea is empty"),
        ("Idea\n" + "x" * 600 + "\n", "line 2: .*600 characters"),
        ("Idea,Other\nfoo,bar,baz\n", "line 2: wrong number of fields"),
        ("", "missing column"),
    ],
)
def test_malformed_ideas_csv_gets_a_clear_error(tmp_path, text, message):
    path = _write(tmp_path / "ideas.csv", text)
    with pytest.raises(UserError, match=message):
        read_ideas_csv(path)


def test_missing_and_binary_files_get_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_ideas_csv(tmp_path / "nope.csv")
    binary = tmp_path / "ideas.csv"
    binary.write_bytes(b"Idea\n\xff\xfe\x00garbage\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_ideas_csv(binary)


def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path):
    out = tmp_path / "pairs.csv"
    write_pairs_csv([Pair("i", "a", "b")], out)

    def rows_then_crash():
        yield ["i", "c", "d"]
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_csv_atomic(out, ["idea", "title_a", "title_b"], rows_then_crash())
    with out.open() as f:
        assert list(csv.reader(f)) == [["idea", "title_a", "title_b"], ["i", "a", "b"]]
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.csv"]
