"""'Compare runs', part of the Train tab: the chosen runs' curves of one logged metric on one
chart (every run also reports to trackio)."""

from __future__ import annotations

import gradio as gr

from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.methods import run_choice
from pipeline.metrics import compare_rows, numeric_keys
from pipeline.runs import finished_runs, run_label, run_metrics
from pipeline.tracking import tracking_dir
from ui.context import Context, Wiring


def build(ctx: Context) -> Wiring:
    """'Compare runs': the chosen runs' curves of one logged metric on one chart (every run
    also reports to trackio: `trackio show --project title-dpo` opens its dashboard). Returns
    the refresh of its lists, for when the tab is opened."""
    folder, guard = ctx.folder, ctx.guard
    with gr.Accordion("Compare runs", open=False):
        with gr.Row():
            chosen = gr.CheckboxGroup([], label="Runs")
            metric = gr.Dropdown([], label="Metric", allow_custom_value=True)
        with gr.Row():
            refresh = gr.Button("Refresh the list of runs")
            button = gr.Button("Compare", variant="primary")
        chart = gr.LinePlot(x="step", y="value", color="run", label="The metric, run by run")
        # the owner's alone, with the lists: the page's first config goes to every visitor
        where = gr.Markdown()

    def choices():
        finished = finished_runs(runs_dir(folder))
        # each offered by what it trained; the chart's legend names it short
        runs = [(run_choice(m)[0], run_label(m)) for m in finished]
        logged = (run_metrics(m) for m in finished)
        keys = sorted({key for metrics in logged for key in numeric_keys(metrics)})
        metric = gr.Dropdown(
            choices=keys, value="loss" if "loss" in keys else (keys[0] if keys else None)
        )
        trackio = (
            f"Every run also reports to trackio (`{tracking_dir()}`): "
            "`trackio show --project title-dpo` opens its dashboard."
        )
        return gr.CheckboxGroup(choices=runs), metric, trackio

    def compare(names: list[str], key: str):
        import pandas as pd

        if not names or not key:
            raise UserError("choose one or more runs and a metric")
        by_label = {run_label(m): m for m in finished_runs(runs_dir(folder))}
        runs = {name: run_metrics(by_label[name]) for name in names if name in by_label}
        rows = compare_rows(runs, key)
        if not rows:
            raise UserError(f"none of the chosen runs logged {key!r}")
        return pd.DataFrame(rows, columns=["step", "value", "run"])

    lists = [chosen, metric, where]
    refresh.click(guard(OWNER, choices), None, lists, api_name="compare_choices")
    button.click(guard(OWNER, compare), [chosen, metric], chart, api_name="compare_runs")
    return Wiring(guard(OWNER, choices), lists)
