import pytest

from pipeline.errors import UserError
from pipeline.prompts import (
    MAX_IDEA_CHARS,
    check_idea,
    display_title,
    title_messages,
    title_prompt,
)

TUTORIAL_PROMPT_FOR_ICA = (
    "Given the YouTube video idea write an engaging title.\n\n"
    "**Video Idea**: intro independent component analysis\n\n"
    "**Additional Guidance**:\n"
    "- Title should be between 30 and 75 characters long\n"
    "- Only return the title idea, nothing else!"
)


def test_prompt_is_the_tutorials_with_the_idea_lowercased():
    assert title_prompt("Intro Independent Component Analysis") == TUTORIAL_PROMPT_FOR_ICA


def test_messages_are_one_user_turn():
    assert title_messages("Multimodal RAG") == [
        {"role": "user", "content": title_prompt("multimodal rag")}
    ]


@pytest.mark.parametrize("idea", ["", "   ", "\n\t", None])
def test_empty_ideas_are_refused(idea):
    with pytest.raises(UserError, match="empty"):
        check_idea(idea)


def test_huge_ideas_are_refused_with_the_limit():
    with pytest.raises(UserError, match=str(MAX_IDEA_CHARS)):
        check_idea("x" * (MAX_IDEA_CHARS + 1))


def test_idea_at_the_limit_is_accepted_and_stripped():
    assert check_idea("  " + "x" * MAX_IDEA_CHARS + "  ") == "x" * MAX_IDEA_CHARS


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ('  "Master RAG in 10 Minutes"\n', "Master RAG in 10 Minutes"),
        ("'Quoted'", "Quoted"),
        ("Title: keep the prefix", "Title: keep the prefix"),
        ("two\nlines", "two\nlines"),
    ],
)
def test_display_strips_only_whitespace_and_quotes(raw, shown):
    assert display_title(raw) == shown
