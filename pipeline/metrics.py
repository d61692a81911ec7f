"""What a run logged (`OUT/metrics.jsonl`, one JSON record per log), read back and laid out for
people: the tutorial's per-evaluation table and the Train tab's chart lines. Plain Python, no
model libraries: model cards and the app import it without loading transformers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# A run's folder (`pipeline.runs`): what it logged, and its summary (`stages.TrainResult`).
METRICS_FILE = "metrics.jsonl"
# With this set (a job on Hugging Face Jobs), each logged step is also printed as a
# `metrics {...}` line, so the job's log carries its curves.
PRINT_METRICS = "TITLE_DPO_PRINT_METRICS"
METRICS_LINE = "metrics "
SUMMARY_FILE = "train_summary.json"

EPOCH_COLUMNS = {  # column -> logged key
    "Epoch": "epoch",
    "Training loss": "loss",
    "Validation loss": "eval_loss",
    "Rewards/chosen": "eval_rewards/chosen",
    "Rewards/rejected": "eval_rewards/rejected",
    "Rewards/accuracies": "eval_rewards/accuracies",
    "Rewards/margins": "eval_rewards/margins",
    "Logps/chosen": "eval_logps/chosen",
    "Logps/rejected": "eval_logps/rejected",
}
CHART_METRICS = {  # logged key -> line label
    "loss": "train loss",
    "eval_loss": "eval loss",
    "rewards/margins": "margin (train)",
    "eval_rewards/margins": "margin (eval)",
    "rewards/accuracies": "accuracy (train)",
    "eval_rewards/accuracies": "accuracy (eval)",
    "logps/chosen": "chosen (train)",
    "logps/rejected": "rejected (train)",
    "eval_logps/chosen": "chosen (eval)",
    "eval_logps/rejected": "rejected (eval)",
    # a reward model (TRL's RewardTrainer)
    "accuracy": "accuracy (train)",
    "eval_accuracy": "accuracy (eval)",
    "margin": "margin (train)",
    "eval_margin": "margin (eval)",
    # online RL (TRL's GRPO/RLOO, and pipeline.rl's reward terms)
    "reward": "total reward",
    "reward/model": "reward model",
    "reward/format": "follows the prompt",
    "reward/length": "length penalty",
    "kl": "KL to the start",
    "completions/mean_length": "tokens per title",
}
LOSS_KEYS = ("loss", "eval_loss")
REWARD_KEYS = (
    "rewards/margins",
    "eval_rewards/margins",
    "rewards/accuracies",
    "eval_rewards/accuracies",
)
# DPO raises the margin either way: the chosen title's log-probability up, or both down with the
# rejected one faster. The second moves the model away from both kinds of title people wrote.
LOGPS_KEYS = ("logps/chosen", "logps/rejected", "eval_logps/chosen", "eval_logps/rejected")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file, in order ([] when there is none yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    return _records(path.read_text(encoding="utf-8"))


def _records(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not text.endswith("\n"):  # being written now, or cut off while written
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return [json.loads(line) for line in lines]


def drop_records_after(path: str | Path, step: int) -> int:
    """Keep only the records of steps up to `step` in a metrics file: a resumed run retrains the
    steps after its checkpoint, and the records those steps wrote before the run was cut off
    would be charted twice (a line cut off mid-write goes too). Returns how many were dropped."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    records = _records(text)
    kept = [r for r in records if r.get("step", 0) <= step]
    torn = bool(text) and not text.endswith("\n")
    if len(kept) < len(records) or torn:
        partial = path.with_name(path.name + ".partial")
        partial.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        partial.replace(path)
    return len(records) - len(kept)


def epoch_table(metrics: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluation, like the tutorial's table: the last training loss logged
    before it, and the evaluation's losses, rewards and log-probs."""
    rows, last_loss = [], None
    for record in metrics:
        if "loss" in record:
            last_loss = record["loss"]
        if "eval_loss" in record:
            values = {**record, "loss": last_loss}
            rows.append({column: values.get(key) for column, key in EPOCH_COLUMNS.items()})
    return rows


def chart_rows(metrics: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> list[dict]:
    """Long-form rows {step, value, metric} of the chosen keys, for a line chart."""
    keys = tuple(keys)
    return [
        {"step": m["step"], "value": m[key], "metric": CHART_METRICS.get(key, key)}
        for m in metrics
        for key in keys
        if key in m
    ]


def compare_rows(runs: Mapping[str, Iterable[Mapping[str, Any]]], key: str) -> list[dict]:
    """Long-form rows {step, value, run} of one logged key across runs (name -> metrics), for
    one chart with a line per run."""
    return [
        {"step": m["step"], "value": m[key], "run": name}
        for name, metrics in runs.items()
        for m in metrics
        if isinstance(m.get(key), int | float)
    ]


def numeric_keys(metrics: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys a run logged as numbers (step and epoch aside), in first-seen order."""
    seen: dict[str, None] = {}
    for m in metrics:
        for key, value in m.items():
            if key not in ("step", "epoch") and isinstance(value, int | float):
                seen.setdefault(key, None)
    return list(seen)


def metrics_line(record: Mapping[str, Any]) -> str:
    return METRICS_LINE + json.dumps(record)


def is_metrics_line(line: str) -> bool:
    # a progress bar's redraw may come before it on the same line
    return METRICS_LINE + "{" in line


def metrics_from_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The metrics a log carries as `metrics {...}` lines, oldest first."""
    found = []
    for line in filter(is_metrics_line, lines):
        at = line.index(METRICS_LINE + "{") + len(METRICS_LINE)
        try:
            found.append(json.loads(line[at:]))
        except ValueError:
            continue  # a line cut short
    return found
