"""The Evaluate tab, the owner's: rounds of models' titles put to voters blind, and what the
votes (or a judge model) say about the models."""

from __future__ import annotations

import gradio as gr

from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.judges import judge_round
from pipeline.methods import run_choices
from pipeline.rounds import (
    MAX_K,
    create_round,
    plan_round,
    round_ideas,
)
from pipeline.winrates import ARENA_COLUMNS, COMPARISON_COLUMNS, DETAIL_COLUMNS, round_report
from pipeline.winrates import chart as round_chart
from pipeline.zerogpu import JudgeOnGpu, generate_round_on_gpu
from ui.context import Context, TabParts, Wiring

TITLE = "Evaluate"
SHOWN_TO = OWNER

# Where an evaluation round's ideas come from, as the tab says it (pipeline.rounds.round_ideas).
FRESH_IDEAS = "The shipped fresh ideas (none is in the tutorial's data)"
IDEA_SOURCES = {
    FRESH_IDEAS: "fresh",
    "The held-out ideas of the chosen runs": "held-out",
    "Typed below, one per line": "typed",
    "A file, one idea per line": "file",
}


def build(ctx: Context) -> TabParts:
    # Over 60 lines: the tab's layout, top to bottom as the page shows it, then its wiring.
    guard = ctx.guard
    gr.Markdown(
        "A round: each model writes titles for the same ideas, and every two models' titles "
        "for an idea become a pair in the voting pool. Voters see them like any pair: blind, "
        "sides at random. A finished run brings its base model and its SFT stage, so the "
        "round shows what the preference step adds beyond the format fix. Votes on a round "
        "stay out of training data (`dataset --include-evaluation` puts them in)."
    )
    with gr.Row():
        runs = gr.CheckboxGroup([], label="Finished runs")
        others = gr.Textbox("", label="Other models (Hub ids or folders, one per line)", lines=2)
    with gr.Row():
        stages = gr.Checkbox(True, label="A run brings its base model and its SFT stage")
        first = gr.Checkbox(True, label="Voters see its pairs first")
        k = gr.Number(1, precision=0, minimum=1, maximum=MAX_K, label="Titles per model per idea")
        name = gr.Textbox("", label="Round name (empty: round-DATE-TIME)")
    with gr.Row():
        source = gr.Radio(list(IDEA_SOURCES), value=FRESH_IDEAS, label="Ideas")
        typed = gr.Textbox("", label="Ideas (one per line)", lines=4)
        ideas_file = gr.File(label="Ideas file", file_types=[".txt", ".csv"])
    with gr.Row():
        create = gr.Button("Create the round", variant="primary")
        refresh = gr.Button("Refresh the runs and rounds")
    created = gr.Markdown()
    gr.Markdown("### Results")
    with gr.Row():
        pick = gr.Dropdown([], label="Round", allow_custom_value=True)
        judge = gr.Textbox("", label="Judge model (optional: judge the pairs with it)")
    with gr.Row():
        show = gr.Button("Show the people's verdict")
        judged = gr.Button("Judge the round with the model")
    summary = gr.Markdown()
    # the figure carries its own titles; Gradio's label would sit on top of the first one
    chart = gr.Plot(label="Win rates and arena scores", show_label=False)
    # widths so that no header breaks inside a word ("Win s"), and the titles get the room
    comparisons = gr.Dataframe(
        headers=COMPARISON_COLUMNS,
        interactive=False,
        label="Head to head",
        wrap=True,
        column_widths=["10%", "10%", "6%", "7%", "6%", "6%", "7%", "7%", "11%", "16%", "7%", "7%"],
    )
    ranking = gr.Dataframe(headers=ARENA_COLUMNS, interactive=False, label="Arena (Bradley–Terry)")
    detail = gr.Dataframe(
        headers=DETAIL_COLUMNS,
        interactive=False,
        label="Per pair",
        wrap=True,
        column_widths=["13%", "22%", "9%", "22%", "9%", "11%", "7%", "7%"],
    )

    rounds = Rounds(ctx)
    outputs = [summary, chart, comparisons, ranking, detail]
    create.click(
        guard(OWNER, rounds.make_round),
        [runs, others, stages, first, k, name, source, typed, ideas_file],
        [created, pick],
        api_name="evaluate_create",
        concurrency_limit=1,  # the models share one GPU
    )
    show.click(guard(OWNER, rounds.report), pick, outputs, api_name="evaluate_report")
    pick.input(guard(OWNER, rounds.report), pick, outputs, api_visibility="private")
    judged.click(
        guard(OWNER, rounds.judge_report),
        [pick, judge],
        outputs,
        api_name="evaluate_judge",
        concurrency_limit=1,
    )
    refresh.click(guard(OWNER, rounds.choices), None, [runs, pick], api_name="evaluate_choices")
    return TabParts(
        on_open=(Wiring(guard(OWNER, rounds.choices), [runs, pick]),),
        owner_values={others: ctx.starting_model.loadable_name},
    )


class Rounds:
    """The tab's handlers: a round made and put to the voters, and what its votes (or a judge
    model) say."""

    def __init__(self, ctx: Context) -> None:
        self.store, self.folder = ctx.store, ctx.folder

    def choices(self):
        finished = run_choices(runs_dir(self.folder), writes_titles=True)  # a round's models
        rounds = [r.name for r in self.store.rounds()]
        none_yet = "none yet: a run that finishes on the Train tab shows here"
        return gr.CheckboxGroup(choices=finished, info=None if finished else none_yet), gr.Dropdown(
            choices=rounds, value=rounds[0] if rounds else None
        )

    def make_round(
        self, chosen, other_text, with_stages, serve_first, count, round_name, where, text, path
    ):
        names = [*(chosen or []), *(line.strip() for line in (other_text or "").splitlines())]
        ideas, ideas_from = round_ideas(IDEA_SOURCES[where], text, path)
        plan = plan_round(
            [n for n in names if n],
            ideas,
            ideas_from,
            int(count or 1),
            round_name or None,
            stages=bool(with_stages),
            serve_first=bool(serve_first),
        )
        info = create_round(self.store, plan, generate=generate_round_on_gpu)
        rounds = [r.name for r in self.store.rounds()]
        pairs = info.describe_pairs(created=True, first=plan.serve_first)
        message = f"{plan.describe()}. **{pairs}**."
        return message, gr.Dropdown(choices=rounds, value=info.name)

    def report(self, round_name, judge_name=None):
        if not round_name:
            raise UserError("no round chosen: create one first")
        if judge_name:
            model_judge = JudgeOnGpu(judge_name)
            verdicts = judge_round(self.store, round_name, model_judge)
            result = round_report(self.store, round_name, verdicts, model_judge.name)
        else:
            result = round_report(self.store, round_name)
        tables = result.tables()
        return (
            result.describe().replace("\n", "  \n"),
            round_chart(result),
            tables["comparisons"],
            tables["arena"],
            tables["detail"],
        )

    def judge_report(self, round_name, judge_name):
        if not (judge_name or "").strip():
            raise UserError("name a judge model (a Hub id or a folder) first")
        return self.report(round_name, judge_name.strip())
