"""How good a model's titles are, measured without people: does it follow the prompt?

The tutorial's prompt asks for one title of 30 to 75 characters and nothing else. A completion
"follows the prompt" when it is one line, 30-75 characters once surrounding whitespace is
removed, has no "Title" label, and does not open with a quote. Small instruct models often add
"Title:", quotes, a second line of explanation, or several titles; DPO should cure that.
(The blind base-vs-tuned win rate with people is the app's job, not this module's.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.generation import GenerationSettings, generate_titles
from pipeline.models import LoadedModel

MIN_CHARS, MAX_CHARS = 30, 75
_TITLE_LABEL = re.compile(r"^\W*(youtube\s+)?(video\s+)?title\b", re.IGNORECASE)


def follows_prompt(raw: str) -> bool:
    """True for a completion that is just one 30-75 character title, as the prompt asks."""
    text = raw.strip()
    if "\n" in text or not MIN_CHARS <= len(text) <= MAX_CHARS:
        return False
    if _TITLE_LABEL.match(text):
        return False
    return not text.startswith(('"', "'", "“", "‘"))


@dataclass(frozen=True)
class FormatReport:
    model: str
    ideas: int
    titles: int
    following: int

    @property
    def rate(self) -> float:
        return self.following / self.titles if self.titles else 0.0


def format_report(
    loaded: LoadedModel, ideas: list[str], n: int = 8, temperature: float = 0.7, seed: int = 0
) -> FormatReport:
    """Sample `n` titles per idea at `temperature` and count those that follow the prompt."""
    settings = GenerationSettings(n=n, temperature=temperature, seed=seed)
    titles = [t for group in generate_titles(loaded, ideas, settings) for t in group]
    following = sum(follows_prompt(t.raw) for t in titles)
    return FormatReport(loaded.label, len(ideas), len(titles), following)
