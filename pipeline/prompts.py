"""The tutorial's title prompt, idea validation, and the display clean-up of a completion:
what every model is asked, and how its answer is shown (generation, training, evaluation)."""

from __future__ import annotations

import re

from pipeline.errors import UserError

# Exactly the tutorial's prompt (the one baked into shawhin/youtube-titles-dpo).
TITLE_PROMPT = (
    "Given the YouTube video idea write an engaging title.\n\n"
    "**Video Idea**: {idea}\n\n"
    "**Additional Guidance**:\n"
    "- Title should be between 30 and 75 characters long\n"
    "- Only return the title idea, nothing else!"
)

MAX_IDEA_CHARS = 500


def check_idea(idea: str | None) -> str:
    """Return the idea stripped of surrounding whitespace, or refuse it with a clear message."""
    if idea is None or not idea.strip():
        raise UserError("the video idea is empty: describe the video in a few words")
    idea = idea.strip()
    if len(idea) > MAX_IDEA_CHARS:
        raise UserError(
            f"the video idea is {len(idea)} characters long; the limit is {MAX_IDEA_CHARS}"
        )
    return idea


def title_prompt(idea: str) -> str:
    """The user message for one idea. The tutorial lowercased the idea; so do we."""
    return TITLE_PROMPT.format(idea=idea.lower())


def title_messages(idea: str) -> list[dict[str, str]]:
    """The conversation sent through the chat template: one user message."""
    return [{"role": "user", "content": title_prompt(idea)}]


_IDEA_IN_PROMPT = re.compile(r"\*\*Video Idea\*\*: (.*)\n")


def idea_in_prompt(messages: list[dict[str, str]]) -> str | None:
    """The idea of a prompt written by `title_messages` (lowercased, as the prompt has it)."""
    found = _IDEA_IN_PROMPT.search(messages[0]["content"]) if messages else None
    return found.group(1) if found else None


def display_title(raw: str) -> str:
    """What the UI shows: the completion without surrounding whitespace and quotes.

    The raw completion is always kept beside it; this is presentation only.
    """
    return raw.strip().strip("\"'").strip()
