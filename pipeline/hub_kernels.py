"""Whether models run Hub kernels: layer code that transformers downloads from the Hub and runs.

transformers 5.25 turns its Hub kernels on by default, and a model put in training mode on CUDA
fetches `kernels-community/rotary` (and others) at that moment. Offline that is a crash in the
middle of a run; online it runs code that nobody here chose. So this project loads every model
with them off unless the owner asks for them:

- `TITLE_DPO_HUB_KERNELS=1` (or `--hub-kernels` on `app.py` and `python -m pipeline`) opts in;
- the choice is made once per process by `use_hub_kernels()`, which also sets transformers' own
  `USE_HUB_KERNELS` to match, so the models TRL loads by itself (an RL run's reference model)
  follow it too; it is logged once;
- opted in while the Hub is switched off (`HF_HUB_OFFLINE=1`) is a logged fallback to the
  PyTorch layers, and so is a kernel that cannot be fetched when a model is loaded
  (`fetch_training_kernels`): the run goes on without it, never a traceback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

SETTING = "TITLE_DPO_HUB_KERNELS"  # ours: 1 opts in; unset or 0: off
TRANSFORMERS_SETTING = "USE_HUB_KERNELS"  # transformers' own switch (default on), set from ours
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class KernelChoice:
    on: bool
    why: str

    def describe(self) -> str:
        state = "on" if self.on else "off"
        return f"Hub kernels {state}: {self.why}"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (at its import) or as set since."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _truthy("HF_HUB_OFFLINE")


def decide() -> KernelChoice:
    """The choice the settings make now (no side effects)."""
    if not _truthy(SETTING):
        return KernelChoice(
            False, f"transformers' PyTorch layers (set {SETTING}=1 to fetch kernels from the Hub)"
        )
    if hub_offline():
        return KernelChoice(
            False,
            f"{SETTING}=1 asks for them, but HF_HUB_OFFLINE=1 means they cannot be fetched, "
            "so transformers' PyTorch layers run",
        )
    return KernelChoice(True, f"{SETTING}=1: transformers fetches and runs its Hub kernels")


_logged: KernelChoice | None = None


def use_hub_kernels() -> bool:
    """Whether models load with Hub kernels in this process (see the module's docstring).
    Sets transformers' USE_HUB_KERNELS to match and logs the choice the first time it is made
    (and again only if the settings change it)."""
    global _logged
    choice = decide()
    os.environ[TRANSFORMERS_SETTING] = "1" if choice.on else "0"
    if choice != _logged:
        _logged = choice
        log.info("%s", choice.describe())
    return choice.on


def fetch_training_kernels(model) -> None:
    """For a model loaded with Hub kernels: fetch the ones training needs now, at load time,
    rather than when the Trainer first calls `model.train()`; when they cannot be had (no
    Hub, no build for this device), log one line and go on with the PyTorch layers."""
    if not getattr(model, "use_kernels", False):
        return
    try:
        model.train()  # kernelizes for training: this is where transformers fetches
        model.eval()
    except Exception as exc:  # the kernels library raises many kinds; each means "not here"
        model.use_kernels = False  # transformers resets the layers it swapped
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("Hub kernels could not be loaded (%s): using PyTorch layers", first_line)
