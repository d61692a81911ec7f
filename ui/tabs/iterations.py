"""The Iterations tab, the owner's: the model's own titles go to the voters first, the next
model learns from their votes, and a judging round says whether it got better
(`pipeline.iterations`, `pipeline.iteration_report`)."""

from __future__ import annotations

import os

import gradio as gr

from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.generation import GenerationSettings
from pipeline.iteration_report import iteration_report, report_chart
from pipeline.iterations import (
    DEFAULT_IDEAS,
    DEFAULT_K,
    DEFAULT_TARGET,
    ITERATIVE_DPO,
    RLHF,
    AutoTrainer,
    IterationData,
    IterationInfo,
    iteration_statuses,
    judge_iteration,
    plan_iteration,
    record_finished_runs,
    start_iteration,
    train_iteration_in_app,
    trained_to_carry_on,
)
from pipeline.recipes import get_recipe
from pipeline.rounds import round_ideas, short_name
from pipeline.wording import counted
from pipeline.zerogpu import ON_ZEROGPU, generate_round_on_gpu
from ui.context import Context, TabParts, Wiring
from ui.widgets import screening, vote_screening

TITLE = "Iterations"
SHOWN_TO = OWNER

# Where an iteration's ideas come from, as the tab says it (pipeline.rounds.round_ideas).
FRESH_IDEAS = "The shipped fresh ideas"
IDEA_SOURCES = {FRESH_IDEAS: "fresh", "Typed below, one per line": "typed",
                "A file, one idea per line": "file"}  # fmt: skip
STATUS_COLUMNS = ["Iteration", "Policy", "Pairs", "Votes", "Voters", "Pairs at target",
                  "Unanimous", "Trained policy"]  # fmt: skip
STATUS_WIDTHS = ["11%", "20%", "7%", "7%", "8%", "13%", "11%", "23%"]  # long Hub ids wrap
REPORT_COLUMNS = ["Iteration", "Votes (voters)", "Policy's titles in format", "Mean length",
                  "Judging votes", "Trained beats the one before (by pair)",
                  "Trained beats the start (by pair)", "Trained titles in format"]  # fmt: skip
REPORT_WIDTHS = ["11%", "10%", "14%", "9%", "9%", "16%", "16%", "15%"]
# How the next model learns, as the tab says it (pipeline.iterations.WAYS).
WAY_LABELS = {
    "DPO from the model itself (iterative DPO)": ITERATIVE_DPO,
    "RLHF: a reward model on every iteration's votes so far, then online RL": RLHF,
}
# How often the app looks whether an iteration to be trained at target has its votes.
AUTO_TRAIN_SETTING, AUTO_TRAIN_SECONDS = "TITLE_DPO_AUTO_TRAIN_SECONDS", 10.0


def build(ctx: Context) -> TabParts:
    # Over 60 lines: the tab's layout, top to bottom as the page shows it, then its wiring.
    guard = ctx.guard
    gr.Markdown(
        "An iteration: the model writes K titles for new ideas, their pairs are served to "
        "voters before anything else, and once they have votes the next model is trained on "
        "them, by DPO from the model itself. A judging round then puts the trained model "
        "against the one before and the start, blind, on ideas kept for judging. Leave the "
        "model empty to carry on from the last trained one. Training runs on the Train tab's "
        "runner: follow it there."
    )
    with gr.Row():
        policy = gr.Textbox("", label="Model (empty: the last trained one)")
        k = gr.Number(DEFAULT_K, precision=0, minimum=2, maximum=10, label="Titles per idea")
        # hotter: an idea's titles differ more, so more of their pairs carry what voters want
        temperature = gr.Slider(0.1, 1.5, value=GenerationSettings().temperature, step=0.05,
                                label="Temperature")  # fmt: skip
        target = gr.Number(DEFAULT_TARGET, precision=0, minimum=1, label="Votes per pair aimed at")
        name = gr.Textbox("", label="Name (empty: iteration-DATE-TIME)")
    with gr.Row():
        source = gr.Radio(list(IDEA_SOURCES), value=FRESH_IDEAS, label="Ideas")
        typed = gr.Textbox("", label="Ideas (one per line)", lines=3)
        ideas_file = gr.File(label="Ideas file", file_types=[".txt", ".csv"])
        max_ideas = gr.Number(DEFAULT_IDEAS, precision=0, minimum=1, label="New ideas, at most")
    auto = gr.Checkbox(False, label="Train on its own once every pair has its target votes")
    start = gr.Button("Start the iteration", variant="primary")
    started = gr.Markdown()
    table = gr.Dataframe(headers=STATUS_COLUMNS, interactive=False, label="Iterations", wrap=True,
                         column_widths=STATUS_WIDTHS)  # fmt: skip
    way = gr.Radio(list(WAY_LABELS), value=next(iter(WAY_LABELS)), label="The next model learns by")
    with gr.Row():
        pick = gr.Dropdown([], label="Iteration to train or judge", allow_custom_value=True)
        min_votes = gr.Number(1, precision=0, minimum=1, label="Votes per pair at least")
        earlier = gr.Checkbox(False, label="With the earlier iterations' votes")
        tutorial = gr.Checkbox(False, label="With the tutorial's labelled pairs")
        max_steps = gr.Number(0, precision=0, minimum=0, label="Stop after steps (0: no limit)")
    screen_in = list(vote_screening())
    with gr.Row():
        train = gr.Button("Train the next model", variant="primary")
        judge = gr.Button("Judge its trained model again")
        refresh = gr.Button("Refresh")
    trained = gr.Markdown()
    report = gr.Dataframe(headers=REPORT_COLUMNS, interactive=False, label="Did it get better?",
                          wrap=True, column_widths=REPORT_WIDTHS,
                          elem_id="iteration-report")  # fmt: skip
    chart = gr.Plot(label="Across iterations", show_label=False)  # the figure has its titles

    iterations = Iterations(ctx)
    listing, reporting = [table, pick], [report, chart]
    training_options = [way, min_votes, earlier, tutorial, max_steps, *screen_in]
    start.click(
        guard(OWNER, iterations.start, spread=len(training_options)),
        [
            policy,
            source,
            typed,
            ideas_file,
            k,
            temperature,
            target,
            name,
            max_ideas,
            auto,
            *training_options,
        ],
        [started, *listing],
        api_name="iteration_start",
        concurrency_limit=1,  # one model on the GPU at a time
    )
    train.click(
        guard(OWNER, iterations.train, spread=len(training_options)),
        [pick, *training_options],
        trained,
        api_name="iteration_train",
    )
    judge.click(guard(OWNER, iterations.judge), pick, [trained, *reporting],
                api_name="iteration_judge", concurrency_limit=1)  # fmt: skip
    refresh.click(guard(OWNER, iterations.listing), None, listing, api_name="iterations")
    refresh.click(guard(OWNER, iterations.report), None, reporting, api_name="iteration_report")
    on_open = (
        Wiring(guard(OWNER, iterations.listing), listing),
        Wiring(guard(OWNER, iterations.report), reporting),
    )
    return TabParts(on_open=on_open, owner_values={policy: iterations.model_to_offer})


class Iterations:
    """The tab's handlers: an iteration started, the iterations' votes, the next model, its
    judging, and the report across iterations."""

    def __init__(self, ctx: Context) -> None:
        self.store, self.runner, self.runs = ctx.store, ctx.runner, runs_dir(ctx.folder)
        self.starting_model = ctx.starting_model
        # trains what the owner asked to train at target, also after a restart
        every = float(os.environ.get(AUTO_TRAIN_SETTING) or AUTO_TRAIN_SECONDS)
        self.auto = AutoTrainer(self.store, self._train_due, every)
        if self.auto.waiting():
            self.auto.watch()

    def model_to_offer(self) -> str:
        """The owner's Model field as the page opens: empty where a next iteration carries on
        from the last trained one (what an empty field means), else the app's starting model.
        Filled with the start every time, it had the next iteration start over by default."""
        return "" if trained_to_carry_on(self.store) else self.starting_model.loadable_name()

    def listing(self):
        record_finished_runs(self.store)  # a run resumed on the Train tab and finished there
        found = iteration_statuses(self.store)
        rows = [
            [s.name, short_name(s.policy), s.pairs, s.votes, s.voters,
             f"{s.pairs_at_target} of {s.pairs} ({s.target_votes}+ votes)",
             "" if s.unanimous is None else f"{s.unanimous:.0%}",
             short_name(s.trained) if s.trained else ""]
            for s in found
        ]  # fmt: skip
        names = [s.name for s in found]
        return rows, gr.Dropdown(choices=names, value=names[-1] if names else None)

    def report(self):
        found = iteration_report(self.store)
        rows = [r.row() for r in found]
        return rows, (report_chart(found) if found else None)

    def start(self, policy, where, text, path, count, temperature, target, iteration_name, most,
              auto, *options):  # fmt: skip
        ideas, ideas_from = round_ideas(IDEA_SOURCES[where], text, path)
        plan = plan_iteration(
            self.store,
            (policy or "").strip() or None,
            ideas or [],
            ideas_from or "",
            name=(iteration_name or "").strip() or None,
            k=int(count or DEFAULT_K),
            target_votes=int(target or DEFAULT_TARGET),
            max_ideas=int(most or DEFAULT_IDEAS),
        )
        settings = GenerationSettings(temperature=float(temperature))
        info = start_iteration(self.store, plan, settings, generate=generate_round_on_gpu)
        pool = {p.name: p for p in self.store.pools()}[info.pool]
        message = (
            f"**{info.name}**: {info.policy} wrote {info.k} titles for {plan.describe_ideas()}; "
            f"**{pool.pairs} pairs** are served to voters first."
        )
        if auto:
            self.store.set_iteration_training(
                info.name, {**options_of(*options), "at_target": True}
            )
            self.auto.watch()
            votes = counted(info.target_votes, "vote")
            message += f" The next model trains once every pair has {votes}."
        return message, *self.listing()

    def train(self, name, *options):
        if not name:
            raise UserError("no iteration chosen: start one first")
        run = self._train(self.store.iteration_info(name), options_of(*options))
        return (
            f"Training the model after **{name}** in `{run}`: follow it on the Train tab. "
            "Its judging round is served to voters once it is done, and the next iteration "
            "starts from it."
        )

    def judge(self, name):
        if not name:
            raise UserError("no iteration chosen: start one first")
        info = judge_iteration(self.store, name, generate=generate_round_on_gpu)
        said = f"Round **{info.name}**: {', '.join(info.labels)}; {info.describe_pairs()}."
        return said, *self.report()

    def _train_due(self, info: IterationInfo):
        return self._train(info, info.training or {})

    def _train(self, info: IterationInfo, options: dict):
        get = options.get
        screened = screening(get("drop_fast"), get("min_gold"), get("drop_burst"))
        data = IterationData(
            get("min_votes", 1), screened, bool(get("earlier")), bool(get("tutorial"))
        )
        return train_iteration_in_app(
            self.runner,
            self.store,
            info.name,
            self.runs,
            get_recipe(),
            way=options.get("way", ITERATIVE_DPO),
            data=data,
            max_steps=options.get("max_steps"),
            chunked=ON_ZEROGPU,
            generate=generate_round_on_gpu,
        )


def options_of(
    way, min_count, with_earlier, with_tutorial, step_limit, fast, gold_floor, burst
) -> dict:
    """The training fields' values, as stored for a training at target."""
    return {
        "way": WAY_LABELS.get(way, ITERATIVE_DPO),
        "min_votes": int(min_count or 1),
        "earlier": bool(with_earlier),
        "tutorial": bool(with_tutorial),
        "max_steps": int(step_limit) if step_limit else None,
        "drop_fast": bool(fast),
        "min_gold": float(gold_floor) if gold_floor else None,
        "drop_burst": bool(burst),
    }
