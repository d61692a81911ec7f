"""The Train tab, the owner's: DPO, a reward model or online RL on the tutorial's pairs, the
votes collected here or a Hub dataset; live charts, stop and resume, and the finished model
put to use on the Generate tab."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from hub.pull import write_training_data
from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.metrics import CHARTS, EPOCH_COLUMNS, chart_rows, epoch_table
from pipeline.recipes import (
    DPORecipe,
    RewardRecipe,
    RLRecipe,
    form_values,
    get_recipe,
    recipe_from_form,
)
from pipeline.rl import SAMPLE_COLUMNS, checked_reward_model, read_samples, sample_rows
from pipeline.runner import finished_runs
from pipeline.zerogpu import ON_ZEROGPU
from ui import compare_runs
from ui.context import Context, TabParts, Wiring
from ui.widgets import DATA_SOURCES, TUTORIAL_DATA, recipe_form, screening, vote_screening

TITLE = "Train"
SHOWN_TO = OWNER


# The methods of the Train tab, and the recipe kind each one trains.
METHODS = {
    "DPO": DPORecipe,
    "Reward model (RLHF step 1)": RewardRecipe,
    "Online RL against a reward model (RLHF step 2: GRPO / RLOO)": RLRecipe,
}
START_LABELS = {
    DPORecipe: "Start training",
    RewardRecipe: "Start training the reward model",
    RLRecipe: "Start online RL",
}
# Each method's endpoints: DPO keeps the names it had before the RLHF half came.
ENDPOINTS = {
    DPORecipe: ("train_start", "train_resume", "recipe_settings"),
    RewardRecipe: ("reward_start", "reward_resume", "reward_recipe_settings"),
    RLRecipe: ("rl_start", "rl_resume", "rl_recipe_settings"),
}


def build(ctx: Context) -> TabParts:
    """Every event on the tab is the owner's (GPU time, disk, the Generate model). One runner
    serves the three methods; each has its recipe form and its Start/Resume."""
    runner, store, folder, generator = ctx.runner, ctx.store, ctx.folder, ctx.generator
    status_line, guard = ctx.status, ctx.guard
    gr.Markdown(
        "**DPO** learns from the preference pairs directly. **RLHF** takes two steps on the "
        "same pairs: a *reward model* learns to score titles as people chose, then *online "
        "RL* lets the model write titles and moves it towards those the reward model scores "
        "higher, kept near where it started by a KL penalty. TRL has no PPO any more: GRPO "
        "keeps PPO's clipped update and uses the average reward of the titles written for "
        "the same idea as the baseline; RLOO leaves each title out of its own baseline."
    )
    with gr.Row():
        source = gr.Radio(list(DATA_SOURCES), value=TUTORIAL_DATA, label="Data")
        min_votes = gr.Number(1, precision=0, minimum=1, label="Votes per pair at least")
        hub_dataset = gr.Textbox(
            "", label="Hub dataset id", placeholder="shawhin/youtube-titles-dpo"
        )
    screen_in = list(vote_screening())  # for the votes collected here
    with gr.Row():
        base = gr.Textbox(generator.name, label="Base model (Hub id or folder)")
        max_steps = gr.Number(0, precision=0, minimum=0, label="Stop after steps (0: no limit)")
    method = gr.Radio(list(METHODS), value="DPO", label="Method")
    forms: dict[type, dict[str, Any]] = {}
    for kind in METHODS.values():
        with gr.Group(visible=kind is DPORecipe) as group:
            reward_model = None
            if kind is RLRecipe:
                reward_model = gr.Dropdown(
                    [],
                    value=None,
                    allow_custom_value=True,
                    label="Reward model (a finished reward-model run, or a folder)",
                )
            recipe, fields = recipe_form(kind)
            with gr.Row():
                start = gr.Button(START_LABELS[kind], variant="primary")
                resume = gr.Button("Resume the last run")
        forms[kind] = {
            "group": group,
            "recipe": recipe,
            "fields": fields,
            "start": start,
            "resume": resume,
            "reward_model": reward_model,
        }
    with gr.Row():
        stop = gr.Button("Stop", variant="stop")
        use = gr.Button("Use this model for Generate")
    progress = gr.Markdown("No training run yet.")
    with gr.Row():
        charts = [
            gr.LinePlot(x="step", y="value", color="metric", label=title)
            for title, _ in CHARTS["dpo"]
        ]
    epochs_table = gr.Dataframe(label="Per evaluation", interactive=False)
    samples = gr.Dataframe(
        headers=list(SAMPLE_COLUMNS),
        label="Titles the policy is writing (online RL), newest first",
        interactive=False,
        wrap=True,
    )
    log_tail = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, interactive=False)
    compare_view = compare_runs.build(ctx)
    timer = gr.Timer(1.0, active=False)  # ticks only while the Train tab is open

    def run_settings(kind: type, name: str, *values) -> dict:
        """What `runner.start` takes from a form (a step limit of 0 or empty: none)."""
        *fields, step_limit = values
        return {
            "recipe": recipe_from_form(name, fields, kind),
            "max_steps": int(step_limit) if step_limit else None,
            "chunked": ON_ZEROGPU,
        }

    def settings_for(kind: type, values: list) -> dict:
        """What `runner.start` takes from a form; an RL form's first value is its reward model,
        checked (bad settings are refused before any download)."""
        if kind is not RLRecipe:
            return run_settings(kind, *values)
        chosen, *values = values
        settings = run_settings(kind, *values)
        settings["reward_model"] = checked_reward_model(settings["recipe"], chosen or None)
        return settings

    def begin_for(kind: type) -> Callable:
        def begin(data_kind, min_count, hub_id, model, *values):
            *values, screen_fast, gold_floor, screen_burst = values
            settings = settings_for(kind, values)

            def write_data(out: Path) -> None:
                write_training_data(
                    DATA_SOURCES[data_kind],
                    out,
                    votes=store.path,
                    hub_id=hub_id,
                    min_votes=int(min_count or 1),
                    screening=screening(screen_fast, gold_floor, screen_burst),
                )

            runner.start_run(runs_dir(folder), write_data, model_name=model, **settings)
            return show()

        return begin

    def carry_on_for(kind: type) -> Callable:
        def carry_on(model, *values):
            settings = settings_for(kind, list(values))
            runner.resume_latest(runs_dir(folder), model_name=model, **settings)
            return show()

        return carry_on

    def halt():
        runner.stop()
        return show()

    def show():
        """The run's progress, and its series on the charts (`chart_titles` names them)."""
        import pandas as pd

        job = runner.status()
        kind = job.kind if job.kind in CHARTS else "dpo"
        plots = [
            pd.DataFrame(chart_rows(job.metrics, keys), columns=["step", "value", "metric"])
            for _, keys in CHARTS[kind]
        ]
        table = pd.DataFrame(epoch_table(job.metrics), columns=list(EPOCH_COLUMNS))
        written = read_samples(job.out, 24)[::-1] if job.out and job.kind == "rl" else []
        return (
            job.describe(),
            *plots,
            table.map(lambda v: float(f"{v:.4g}") if isinstance(v, float) else v),
            pd.DataFrame(sample_rows(written), columns=list(SAMPLE_COLUMNS)),
            "\n".join(job.log[-40:]),
        )

    def use_trained():
        return generator.use(runner.finished_model())

    def pick_method(label: str):
        chosen = METHODS[label]
        reward_runs = [str(m) for m in finished_runs(runs_dir(folder), "reward")]
        return [
            *(gr.Group(visible=kind is chosen) for kind in forms),
            gr.Dropdown(choices=reward_runs, value=reward_runs[0] if reward_runs else None),
            *chart_titles(label),
        ]

    def chart_titles(label: str) -> list:
        """The charts show the app's run, so they carry its method's titles; with no run
        yet, the chosen Method's."""
        job = runner.status()
        charted = METHODS[label].KIND if job.state == "idle" else job.kind
        return [gr.LinePlot(label=title or " ") for title, _ in CHARTS[charted]]

    outputs = [progress, *charts, epochs_table, samples, log_tail]
    data_in = [source, min_votes, hub_dataset, base]
    method.change(
        guard(OWNER, pick_method),
        method,
        [*(f["group"] for f in forms.values()), forms[RLRecipe]["reward_model"], *charts],
        api_name="train_method",
    )
    for kind, form in forms.items():
        start_name, resume_name, settings_name = ENDPOINTS[kind]
        extra = [form["reward_model"]] if form["reward_model"] is not None else []
        knobs_in = [*extra, form["recipe"], *form["fields"], max_steps]  # the API's order
        form["recipe"].change(
            guard(OWNER, lambda name, kind=kind: form_values(get_recipe(name, kind))),
            form["recipe"],
            form["fields"],
            api_name=settings_name,
            queue=False,
        )
        form["start"].click(
            guard(OWNER, begin_for(kind), spread=len(knobs_in) + len(screen_in)),
            [*data_in, *knobs_in, *screen_in],
            outputs,
            api_name=start_name,
        ).then(guard(OWNER, chart_titles), method, charts, api_visibility="private")
        form["resume"].click(
            guard(OWNER, carry_on_for(kind), spread=len(knobs_in)),
            [base, *knobs_in],
            outputs,
            api_name=resume_name,
        ).then(guard(OWNER, chart_titles), method, charts, api_visibility="private")
    stop.click(guard(OWNER, halt), None, outputs, api_name="train_stop", queue=False)
    timer.tick(guard(OWNER, show), None, outputs, api_name="train_status", queue=False)
    use.click(guard(OWNER, use_trained), None, status_line, api_name="use_trained_model")
    titles = Wiring(guard(OWNER, chart_titles), charts, inputs=[method])
    return TabParts(on_open=(compare_view, titles), poll=timer)
