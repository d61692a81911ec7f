"""Judges: a model instead of people deciding which of two titles is better.

The interface is one method, `prefer(idea, title_a, title_b) -> "A" | "B" | "tie"`, so a round's
win rate can come from a judge as well as from votes (`judge_round`), and the report gives the
judge's agreement with the people where both exist. `PairwiseJudge` asks its question in both
orders and calls a flip a tie: a judge that always picks the first title it reads (a common
bias of small models) then judges nothing. `ChatJudge` asks any chat model (a Hub id or a
folder; on a GPU, a larger instruct model) by comparing its next-token odds of "A" and "B".
`RewardJudge` uses a reward model (the RLHF half, `pipeline/reward.py`): it scores each title
on its own, so the order cannot sway it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Protocol

from pipeline.models import LoadedModel
from pipeline.votes import VoteStore
from pipeline.winrates import Outcome

VERDICTS = ("A", "B", "tie")
CHOICE_OF = {"A": "a_better", "B": "b_better", "tie": "tie"}

JUDGE_PROMPT = (
    "Two titles were written for the same YouTube video.\n\n"
    "**Video Idea**: {idea}\n\n"
    "Title A: {first}\n"
    "Title B: {second}\n\n"
    "Which title would make more people click, while staying honest to the idea and between "
    "30 and 75 characters? Answer with one letter: A or B."
)


class Judge(Protocol):
    name: str

    def prefer(self, idea: str, title_a: str, title_b: str) -> str:
        """'A', 'B' or 'tie'."""
        ...


class PairwiseJudge:
    """A judge that asks "is the first title better?" in both orders: A or B when both
    answers agree, a tie when the answer follows the position instead of the title.
    Subclasses answer `first_is_better` for many questions at once."""

    name = "pairwise judge"

    def first_is_better(self, questions: Sequence[tuple[str, str, str]]) -> list[bool]:
        raise NotImplementedError

    def prefer_many(self, pairs: Sequence[tuple[str, str, str]]) -> list[str]:
        forward = self.first_is_better(pairs)
        backward = self.first_is_better([(idea, b, a) for idea, a, b in pairs])
        return [
            ("A" if f else "B") if f != b else "tie" for f, b in zip(forward, backward, strict=True)
        ]

    def prefer(self, idea: str, title_a: str, title_b: str) -> str:
        return self.prefer_many([(idea, title_a, title_b)])[0]


class ChatJudge(PairwiseJudge):
    """A chat model as a judge: the question in the chat template, and the model's next-token
    log-odds of "A" against "B" (no sampling, so the same question gets the same answer)."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 16) -> None:
        self.loaded, self.batch_size = loaded, batch_size
        self.name = f"judge {loaded.label}"
        tokenizer = loaded.tokenizer
        self.letters = [tokenizer.encode(c, add_special_tokens=False)[0] for c in "AB"]

    def prompts(self, questions: Sequence[tuple[str, str, str]]) -> list[str]:
        """Each question as the model reads it: the judge's prompt in its chat template."""
        return [
            self.loaded.tokenizer.apply_chat_template(
                [{"role": "user", "content": JUDGE_PROMPT.format(idea=i, first=a, second=b)}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for i, a, b in questions
        ]

    def first_is_better(self, questions: Sequence[tuple[str, str, str]]) -> list[bool]:
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        prompts = self.prompts(questions)
        answers: list[bool] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = tokenizer(
                    prompts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    padding_side="left",  # the last position is every prompt's next token
                    add_special_tokens=False,
                ).to(self.loaded.device.name)
                logits = last_logits(model, batch)[:, self.letters]
                answers += (logits[:, 0] > logits[:, 1]).tolist()
        return answers


def last_logits(model, batch):
    """The logits at each sequence's last position: only those are computed where the model
    takes `logits_to_keep` (transformers' causal LMs), not the whole vocabulary at every
    position (for Qwen2.5's 151,936 tokens, a quarter of the forward's arithmetic, and a
    batch's logits of gigabytes); a model without it computes them all."""
    try:
        return model(**batch, logits_to_keep=1).logits[:, -1]
    except TypeError:  # a forward that takes no `logits_to_keep`
        return model(**batch).logits[:, -1]


class RewardJudge:
    """A reward model as a judge: the title with the higher score wins; scores within
    `margin` of each other are a tie."""

    def __init__(self, reward, margin: float = 0.0) -> None:
        from pipeline.rounds import short_name

        self.reward, self.margin = reward, margin
        self.name = f"reward model {short_name(reward.name)}"

    def prefer_many(self, pairs: Sequence[tuple[str, str, str]]) -> list[str]:
        from pipeline.prompts import title_messages

        prompts = [title_messages(idea) for idea, _, _ in pairs]
        first = self.reward.score(prompts, [a for _, a, _ in pairs])
        second = self.reward.score(prompts, [b for _, _, b in pairs])
        # the very same title is a tie, whatever float noise a padded batch adds to its score
        return [
            "tie"
            if ta == tb
            else "A"
            if a - b > self.margin
            else "B"
            if b - a > self.margin
            else "tie"
            for (_, ta, tb), a, b in zip(pairs, first, second, strict=True)
        ]

    def prefer(self, idea: str, title_a: str, title_b: str) -> str:
        return self.prefer_many([(idea, title_a, title_b)])[0]


def reward_judge(name: str) -> RewardJudge:
    from pipeline.methods import check_reward_model
    from pipeline.reward import load_reward_model

    return RewardJudge(load_reward_model(check_reward_model(name)))


def chat_judge(name: str) -> ChatJudge:
    from pipeline.models import load_model

    return ChatJudge(load_model(name))


def make_judge(name: str) -> ChatJudge | RewardJudge:
    """The judge `name` names: a reward run's folder judges by its scores, any other model
    (a Hub id or a folder) as a chat judge."""
    from pipeline.methods import method_of
    from pipeline.runs import run_summary

    summary = run_summary(name)
    if summary is not None and not method_of(summary).writes_titles:
        return reward_judge(name)
    return chat_judge(name)


def judge_round(store: VoteStore, round_name: str, judge: Judge) -> list[Outcome]:
    """The judge's verdict on every pair of the round, as outcomes (`winrates.round_report`
    takes them in place of the votes)."""
    info = store.round_info(round_name)
    pairs = store.round_pairs(info.round_id)  # a pair two models share comes twice: asked once
    asked = {p.pair_id: (p.idea, p.title_a, p.title_b) for p in pairs}
    many = getattr(judge, "prefer_many", None)
    questions = list(asked.values())
    verdicts = many(questions) if many else [judge.prefer(*q) for q in questions]
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise ValueError(f"a judge answered {verdict!r}, not one of {VERDICTS}")
    choice_of = {pair_id: CHOICE_OF[v] for pair_id, v in zip(asked, verdicts, strict=True)}
    return [Outcome(*astuple(p), choice_of[p.pair_id], judge.name) for p in pairs]
