"""The Train tab, the owner's: DPO, a reward model or online RL on the tutorial's pairs, the
votes collected here or a Hub dataset; live charts, stop and resume, and the finished model
put to use on the Generate tab; or the same run on Hugging Face Jobs (`ui.jobs_panel`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from hub.pull import write_training_data
from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.methods import DEFAULT, METHODS, Method, method_of, run_choices
from pipeline.metrics import EPOCH_COLUMNS, chart_rows, epoch_table
from pipeline.recipes import form_values, get_recipe, recipe_from_form
from pipeline.rl import SAMPLE_COLUMNS, read_samples, sample_rows
from pipeline.runner import shown_status
from pipeline.zerogpu import ON_ZEROGPU
from ui import compare_runs, jobs_panel
from ui.context import Context, TabParts, Wiring
from ui.widgets import (
    DATA_SOURCES,
    TUTORIAL_DATA,
    log_box,
    recipe_form,
    screening,
    vote_screening,
)

# The tutorial's column names, with a place to break after each slash: a narrow column
# otherwise breaks "Rewards/chosen" wherever the letters run out ("Rewards/cho" "sen").
EPOCH_HEADERS = [name.replace("/", "/\u200b") for name in EPOCH_COLUMNS]
TITLE = "Train"
SHOWN_TO = OWNER

BY_LABEL = {method.label: method for method in METHODS.values()}  # the Method choice


@dataclass(frozen=True)
class MethodForm:
    """One method's part of the tab: its recipe form and its Start and Resume."""

    method: Method
    group: gr.Group
    recipe: gr.Dropdown
    fields: list[Any]
    start: gr.Button
    resume: gr.Button
    reward_model: gr.Dropdown | None  # for a method trained against a reward model

    @property
    def knobs(self) -> list[Any]:
        """What Start and Resume read from the form, in the API's order."""
        extra = [self.reward_model] if self.reward_model is not None else []
        return [*extra, self.recipe, *self.fields]


def method_form(method: Method) -> MethodForm:
    with gr.Group(visible=method is DEFAULT) as group:
        reward_model = None
        if method.takes_reward_model:
            reward_model = gr.Dropdown(
                [],
                value=None,
                allow_custom_value=True,
                label="Reward model (a finished reward-model run, or a folder)",
            )
        recipe, fields = recipe_form(method.recipe)
        with gr.Row():
            start = gr.Button(method.start_label, variant="primary")
            resume = gr.Button("Resume the last run")
    return MethodForm(method, group, recipe, fields, start, resume, reward_model)


def build(ctx: Context) -> TabParts:
    # Over 60 lines: the tab's layout, top to bottom as the page shows it, then its wiring.
    guard = ctx.guard
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
        base = gr.Textbox("", label="Base model (Hub id or folder)")
        max_steps = gr.Number(0, precision=0, minimum=0, label="Stop after steps (0: no limit)")
    method = gr.Radio(list(BY_LABEL), value=DEFAULT.label, label="Method")
    forms = [method_form(m) for m in METHODS.values()]
    with gr.Row():
        stop = gr.Button("Stop", variant="stop")
        use = gr.Button("Use this model for Generate")
    progress = gr.Markdown("No training run yet.")
    with gr.Row():
        charts = [
            gr.LinePlot(x="step", y="value", color="metric", label=title)
            for title, _ in DEFAULT.charts
        ]
    epochs_table = gr.Dataframe(
        headers=EPOCH_HEADERS,
        interactive=False,
        wrap=True,  # nine columns fit the page, none off to the right
        column_widths=["7%", *["11.625%"] * 8],
        label="Per evaluation",
    )
    samples = gr.Dataframe(
        headers=list(SAMPLE_COLUMNS),
        label="Titles the policy is writing (online RL), newest first",
        interactive=False,
        wrap=True,
        visible=DEFAULT.samples,
    )
    log_tail = log_box("Log", "train-log")
    compare_view = compare_runs.build(ctx)
    recipes = {form.method.kind: [form.recipe, *form.fields] for form in forms}
    latest_job = jobs_panel.build(ctx, method, base, max_steps, recipes)
    timer = gr.Timer(1.0, active=False)  # ticks only while the Train tab is open

    trainer = Trainer(ctx)
    outputs = [progress, *charts, epochs_table, samples, log_tail]
    data_in = [source, min_votes, hub_dataset, base]
    reward_pick = next(f.reward_model for f in forms if f.reward_model is not None)
    run_view = [*charts, samples]  # what a run's method decides: chart titles, its samples
    method.change(
        guard(OWNER, trainer.pick_method),
        method,
        [*(f.group for f in forms), reward_pick, *run_view],
        api_name="train_method",
    )
    for form in forms:
        start_name, resume_name, settings_name = form.method.endpoints
        knobs_in = [*form.knobs, max_steps]
        form.recipe.change(
            guard(OWNER, lambda name, kind=form.method.recipe: form_values(get_recipe(name, kind))),
            form.recipe,
            form.fields,
            api_name=settings_name,
            queue=False,
        )
        form.start.click(
            guard(OWNER, trainer.begin_for(form.method), spread=len(knobs_in) + len(screen_in)),
            [*data_in, *knobs_in, *screen_in],
            outputs,
            api_name=start_name,
        ).then(guard(OWNER, trainer.run_view), method, run_view, api_visibility="private")
        form.resume.click(
            guard(OWNER, trainer.carry_on_for(form.method), spread=len(knobs_in)),
            [base, *knobs_in],
            outputs,
            api_name=resume_name,
        ).then(guard(OWNER, trainer.run_view), method, run_view, api_visibility="private")
    stop.click(guard(OWNER, trainer.halt), None, outputs, api_name="train_stop", queue=False)
    timer.tick(guard(OWNER, trainer.show), None, outputs, api_name="train_status", queue=False)
    use.click(guard(OWNER, trainer.use_trained), None, ctx.status, api_name="use_trained_model")
    shown = Wiring(guard(OWNER, trainer.run_view), run_view, inputs=[method])
    owner_values = {base: ctx.starting_model.loadable_name}  # offline: the stand-in's own name
    on_open = (compare_view, shown, latest_job)
    return TabParts(on_open=on_open, poll=timer, owner_values=owner_values)


class Trainer:
    """The tab's handlers: one runner serves every method; a run is started from a method's
    form, watched, stopped, resumed, and its model put to use on the Generate tab."""

    def __init__(self, ctx: Context) -> None:
        self.runner, self.store, self.generator = ctx.runner, ctx.store, ctx.generator
        self.runs = runs_dir(ctx.folder)

    def settings(self, method: Method, values: list) -> dict:
        """What `train_run` takes from a form: the recipe, the step limit (0 or empty: none)
        and, for a method trained against one, the reward model, checked (bad settings are
        refused before any download)."""
        chosen = values.pop(0) if method.takes_reward_model else None
        name, *fields, step_limit = values
        recipe = recipe_from_form(name, fields, method.recipe)
        return {
            "recipe": recipe,
            "max_steps": int(step_limit) if step_limit else None,
            "reward_model": method.check_reward_model(recipe, chosen or None),
        }

    def begin_for(self, method: Method):
        def begin(data_kind, min_count, hub_id, model, *values):
            *values, screen_fast, gold_floor, burst = values
            settings = self.settings(method, values)

            def write_data(out: Path) -> None:
                write_training_data(
                    DATA_SOURCES[data_kind],
                    out,
                    votes=self.store.path,
                    hub_id=hub_id,
                    min_votes=int(min_count or 1),
                    screening=screening(screen_fast, gold_floor, burst),
                )

            self.runner.start_run(
                self.runs, write_data, model_name=model, chunked=ON_ZEROGPU, **settings
            )
            return self.show()

        return begin

    def carry_on_for(self, method: Method):
        def carry_on(model, *values):
            # The run carries on as it started; the form only speaks for an older run that
            # kept no record of its start.
            def form() -> dict:
                return {"model_name": model, **self.settings(method, list(values))}

            self.runner.resume_latest(self.runs, method.kind, form, chunked=ON_ZEROGPU)
            return self.show()

        return carry_on

    def halt(self):
        self.runner.stop()
        return self.show()

    def show(self):
        """The run's progress, and its series on its method's charts."""
        import pandas as pd

        job = shown_status(self.runner.status(), self.runs)
        plots = [
            pd.DataFrame(chart_rows(job.metrics, keys), columns=["step", "value", "metric"])
            for _, keys in method_of(job.kind or None).charts
        ]
        table = pd.DataFrame(epoch_table(job.metrics), columns=list(EPOCH_COLUMNS))
        table.columns = EPOCH_HEADERS
        written = read_samples(job.out, 24)[::-1] if job.out else []
        line = job.describe()
        if job.state == "done":
            line += f"  \n*{method_of(job.kind or None).next_step}*"
        return (
            line,
            *plots,
            table.map(lambda v: float(f"{v:.4g}") if isinstance(v, float) else v),
            pd.DataFrame(sample_rows(written), columns=list(SAMPLE_COLUMNS)),
            "\n".join(job.log[-40:]),
        )

    def use_trained(self):
        return self.generator.use(self.runner.finished_model())

    def pick_method(self, label: str):
        chosen = BY_LABEL[label]
        reward_runs = run_choices(self.runs, writes_titles=False)  # reward models
        return [
            *(gr.Group(visible=method is chosen) for method in METHODS.values()),
            gr.Dropdown(choices=reward_runs, value=reward_runs[0][1] if reward_runs else None),
            *self.run_view(label),
        ]

    def run_view(self, label: str) -> list:
        """The charts show the app's run, so they carry its method's titles, and its samples
        table shows only for a method that writes titles as it trains; with no run yet, the
        chosen Method decides."""
        job = self.runner.status()
        shown = BY_LABEL[label] if job.state == "idle" else method_of(job.kind)
        charts = [gr.LinePlot(label=title) for title, _ in shown.charts]
        return [*charts, gr.Dataframe(visible=shown.samples)]
