"""Every kind of training run behind one entry point: the registry of methods.

A recipe's KIND names its method: how it trains, how its held-out pairs are scored once it is
finished, and what that score reads as. A new method is one module and one entry in METHODS.
The app's runner, the ZeroGPU chunks, the CLI and the benches start and score runs here; the
methods' own modules (`training`, `reward`, `rl`) never import this one, so none of them
imports another's dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation import HeldOutRanking
from pipeline.reward import RewardHeldOut, score_reward_held_out, train_reward
from pipeline.rl import train_rl
from pipeline.training import TrainResult, score_held_out, train_dpo


@dataclass(frozen=True)
class Method:
    train: Callable[..., TrainResult]  # (data, out, model_name, recipe, reward_model, **kw)
    score: Callable[[TrainResult], TrainResult]  # the finished run, its held-out pairs ranked
    held_out: type | None  # the record of its held-out figure (None: it has none)


def _unscored(result: TrainResult) -> TrainResult:
    # an RL run is measured by generating (`evaluate auto`, an evaluation round), not here
    return result


METHODS: dict[str, Method] = {
    "dpo": Method(
        lambda data, out, model, recipe, reward_model, **kw: train_dpo(
            data, out, model, recipe, **kw
        ),
        score_held_out,
        HeldOutRanking,
    ),
    "reward": Method(
        lambda data, out, model, recipe, reward_model, **kw: train_reward(
            data, out, model, recipe, **kw
        ),
        score_reward_held_out,
        RewardHeldOut,
    ),
    "rl": Method(
        lambda data, out, model, recipe, reward_model, **kw: train_rl(
            data, out, model, reward_model, recipe, **kw
        ),
        _unscored,
        None,
    ),
}


def train_run(
    data: str | Path,
    out: str | Path,
    model_name: str | None = None,
    recipe=None,
    *,
    reward_model: str | None = None,
    **kwargs: Any,
) -> TrainResult:
    """The run the recipe's kind names (DPO when none is given); only RL reads
    `reward_model`."""
    method = METHODS[getattr(recipe, "KIND", "dpo")]
    return method.train(data, out, model_name, recipe, reward_model, **kwargs)


def score_run(result: TrainResult) -> TrainResult:
    """A finished run with its held-out pairs ranked, as its kind allows."""
    return METHODS[result.kind].score(result)


def describe_held_out(result: TrainResult) -> str | None:
    """One line on how the run ranks its held-out pairs, or None when it has no figure."""
    record = METHODS[result.kind].held_out
    if not result.held_out or record is None:
        return None
    return record(**result.held_out).describe()
