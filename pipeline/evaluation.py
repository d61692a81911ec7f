"""How good a model's titles are, measured without new votes.

Two questions. Does it follow the prompt (sampled titles, checked by rule)? And does it rank
labelled pairs as people did (`ranking_accuracy`: DPO's implicit reward, pair by pair)?

The tutorial's prompt asks for one title of 30 to 75 characters and nothing else. A completion
"follows the prompt" when it is one line, 30-75 characters once surrounding whitespace is
removed, has no "Title" label, and does not open with a quote. Small instruct models often add
"Title:", quotes, a second line of explanation, or several titles; DPO should cure that.
`auto_measures` reports these per model for `python -m pipeline evaluate auto`; the blind
win rate with people is an evaluation round's (`pipeline.rounds`, `pipeline.winrates`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.generation import GenerationSettings, generate_titles
from pipeline.models import LoadedModel
from pipeline.wording import counted

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
class AutoMeasures:
    """A model's titles for a set of ideas, measured without people."""

    model: str
    ideas: int
    titles: int
    follows_prompt: float  # share of titles that follow the prompt (`follows_prompt`)
    mean_length: float  # characters of the displayed title
    length_spread: float  # standard deviation of the same
    distinct_per_idea: float  # distinct titles per idea, on average (at most k)
    # given labelled pairs: the share ranked as people did (a run's model: its implicit reward
    # against its reference; any other model: its own likelihood), and how many pairs
    ranking_accuracy: float | None = None
    ranked_pairs: int = 0
    ranked_by: str | None = None

    def describe(self) -> str:
        line = (
            f"{self.model}: {self.follows_prompt:.0%} of {self.titles} titles follow the prompt; "
            f"length {self.mean_length:.0f} ± {self.length_spread:.0f} characters; "
            f"{self.distinct_per_idea:.1f} distinct titles per idea"
        )
        if self.ranking_accuracy is not None:
            line += (
                f"; ranks {self.ranking_accuracy:.1%} of {self.ranked_pairs} labelled pairs as "
                f"people did ({self.ranked_by})"
            )
        return line


def auto_measures(
    loaded: LoadedModel, ideas: list[str], k: int = 8, temperature: float = 0.7, seed: int = 0
) -> AutoMeasures:
    """Sample `k` titles per idea in one batched call and measure them."""
    import statistics

    settings = GenerationSettings(n=k, temperature=temperature, seed=seed)
    groups = generate_titles(loaded, ideas, settings)
    titles = [t for group in groups for t in group]
    lengths = [len(t.text) for t in titles]
    return AutoMeasures(
        model=loaded.label,
        ideas=len(groups),
        titles=len(titles),
        follows_prompt=sum(follows_prompt(t.raw) for t in titles) / len(titles),
        mean_length=statistics.fmean(lengths),
        length_spread=statistics.pstdev(lengths),
        distinct_per_idea=statistics.fmean(len({t.text for t in g}) for g in groups),
    )


def labelled_ranking(model_name: str, rows: Sequence[dict[str, Any]]) -> tuple[float, str]:
    """How `model_name` ranks labelled pairs, and by what: a finished run's model by its
    implicit reward against the reference its summary names, any other by its likelihood."""
    from pipeline.models import load_model
    from pipeline.runs import run_summary

    reference = (run_summary(model_name) or {}).get("reference")
    policy = pair_logps(load_model(model_name), rows)
    if reference:
        ref = pair_logps(load_model(reference), rows)
        return ranking_accuracy(policy, ref), f"log pi/pi_ref against {reference}"
    return ranking_accuracy(policy), "its own likelihood"


@dataclass(frozen=True)
class PairLogps:
    """Summed log-probabilities of each pair's chosen and rejected completion under one model."""

    model: str
    chosen: list[float]
    rejected: list[float]


def pair_logps(
    loaded: LoadedModel, rows: Sequence[dict[str, Any]], batch_size: int = 16
) -> PairLogps:
    """Score `rows` (prompt/chosen/rejected, conversational as in our datasets) the way TRL's
    DPOTrainer tokenizes them: the chat template of prompt and of prompt+completion, the
    completion starting where the two token lists part."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    # Pairs of one idea share their titles (the tutorial's 10 pairs are 5 titles): each
    # distinct sequence is scored once.
    index: dict[tuple[tuple[int, ...], int], int] = {}  # (ids, completion start) -> position
    wanted: list[int] = []
    for row in rows:
        prompt = _chat_ids(tokenizer, row["prompt"], add_generation_prompt=True)
        sides = [_chat_ids(tokenizer, row["prompt"] + row[s]) for s in ("chosen", "rejected")]
        start = min(_common_prefix(prompt, ids) for ids in sides)
        wanted += [index.setdefault((tuple(ids), start), len(index)) for ids in sides]
    sequences = list(index)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums: list[float] = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(sequences), batch_size):
            batch = sequences[i : i + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width - 1), dtype=torch.bool)
            for j, (ids, start) in enumerate(batch):
                input_ids[j, : len(ids)] = torch.tensor(ids)
                mask[j, : len(ids)] = 1
                scored[j, start - 1 : len(ids) - 1] = True  # logits at t predict token t+1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = logps.gather(2, input_ids[:, 1:, None].to(device))[..., 0]
            sums += (target * scored.to(device)).sum(dim=1).tolist()
    scores = [sums[k] for k in wanted]
    return PairLogps(loaded.label, chosen=scores[0::2], rejected=scores[1::2])


def ranked_right(policy: PairLogps, reference: PairLogps | None = None) -> list[bool]:
    """Per pair: whether its chosen completion scores strictly higher than the rejected one.

    With a reference, the score is DPO's implicit reward log(pi/pi_ref) (beta scales both
    sides, so it drops out): TRL's eval_rewards/accuracies, but counted per pair rather than
    averaged over batches. Without one, it is the model's own likelihood, which the model
    already had before any training: the baseline a preference run has to beat."""
    chosen, rejected = policy.chosen, policy.rejected
    if reference is not None:
        if len(reference.chosen) != len(chosen):
            raise ValueError("policy and reference scored different pairs")
        chosen = [p - r for p, r in zip(chosen, reference.chosen, strict=True)]
        rejected = [p - r for p, r in zip(rejected, reference.rejected, strict=True)]
    return [c > r for c, r in zip(chosen, rejected, strict=True)]


def ranking_accuracy(policy: PairLogps, reference: PairLogps | None = None) -> float:
    """Share of pairs `ranked_right` (0 without pairs)."""
    right = ranked_right(policy, reference)
    return sum(right) / len(right) if right else 0.0


def sign_test(gained: int, lost: int) -> float:
    """The two-sided exact sign test's p-value: how often chance alone (each changed pair
    going either way with even odds) splits `gained + lost` pairs at least this unevenly."""
    changed = gained + lost
    if not changed:
        return 1.0
    tail = sum(math.comb(changed, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**changed)


def paired_change(gained: int | None, lost: int | None) -> str:
    """ "; against it, G pairs gained and L lost: beyond (or within) chance (sign test p = P)":
    what a held-out line adds once it has the pair-by-pair counts ("" without them)."""
    if gained is None or lost is None:
        return ""
    p = sign_test(gained, lost)
    verdict = "beyond chance" if p < 0.05 else "within chance"
    return (
        f"; against it, {counted(gained, 'pair')} gained and {lost} lost: {verdict} "
        f"(sign test p = {p:.2g})"
    )


def gained_and_lost(now: Sequence[bool], before: Sequence[bool]) -> tuple[int, int]:
    """Pairs ranked right now and wrong before, and the other way."""
    gained = sum(n and not b for n, b in zip(now, before, strict=True))
    return gained, sum(b and not n for n, b in zip(now, before, strict=True))


@dataclass(frozen=True)
class HeldOutRanking:
    """How a finished run ranks the held-out pairs, beside what its starting model knew, and
    pair by pair against it: the pairs it ranks right that the start ranked wrong (`gained`)
    and the other way (`lost`). Runs scored before those were kept have None."""

    pairs: int
    tuned: float  # the run's implicit reward log(pi/pi_ref)
    untrained: float  # the starting model's own likelihood
    gained: int | None = None
    lost: int | None = None

    def describe(self) -> str:
        line = (
            f"held-out pairs ranked as labelled: {self.tuned:.3f} of {self.pairs} "
            f"(the untrained model: {self.untrained:.3f})"
        )
        return line + paired_change(self.gained, self.lost)


def held_out_ranking(
    rows: Sequence[dict[str, Any]], tuned: str, reference: str, untrained: str
) -> HeldOutRanking:
    """Score `rows` with the saved model `tuned` against `reference`, and with the model
    `untrained` alone; each is loaded by name (a folder or a Hub id) as `load_model` does."""
    from pipeline.models import load_model

    start = pair_logps(load_model(untrained), rows)
    ref = start if reference == untrained else pair_logps(load_model(reference, fresh=True), rows)
    policy = pair_logps(load_model(tuned, fresh=True), rows)
    now, before = ranked_right(policy, ref), ranked_right(start)
    share = len(rows) or 1
    return HeldOutRanking(
        len(rows), sum(now) / share, sum(before) / share, *gained_and_lost(now, before)
    )


def _chat_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False):
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(encoded["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
