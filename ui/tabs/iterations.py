"""The Iterations tab, the owner's: the model's own titles go to the voters first, and the
next model learns from their votes (`pipeline.iterations`); each iteration's votes so far."""

from __future__ import annotations

import gradio as gr

from pipeline.access import OWNER
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.iterations import (
    DEFAULT_K,
    DEFAULT_TARGET,
    iteration_statuses,
    plan_iteration,
    start_iteration,
    train_iteration_in_app,
)
from pipeline.recipes import get_recipe
from pipeline.rounds import round_ideas
from pipeline.zerogpu import ON_ZEROGPU, generate_round_on_gpu
from ui.context import Context, TabParts, Wiring
from ui.widgets import screening, vote_screening

TITLE = "Iterations"
SHOWN_TO = OWNER

# Where an iteration's ideas come from, as the tab says it (pipeline.rounds.round_ideas).
FRESH_IDEAS = "The shipped fresh ideas"
IDEA_SOURCES = {FRESH_IDEAS: "fresh", "Typed below, one per line": "typed",
                "A file, one idea per line": "file"}  # fmt: skip
LAST_TRAINED = ""  # an empty model box: the last iteration's trained policy
STATUS_COLUMNS = ["Iteration", "Policy", "Pairs", "Votes", "Voters", "Pairs at target",
                  "Unanimous", "Trained policy"]  # fmt: skip


def build(ctx: Context) -> TabParts:
    # Over 60 lines: the tab's layout, top to bottom as the page shows it, then its wiring.
    guard = ctx.guard
    gr.Markdown(
        "An iteration: the model writes K titles for new ideas, their pairs are served to "
        "voters before anything else, and once they have votes the next model is trained on "
        "them, by DPO from the model itself. Leave the model empty to carry on from the last "
        "iteration's trained model. Ideas a model trained on, or an earlier iteration asked "
        "about, are left out. Training runs on the Train tab's runner: follow it there."
    )
    with gr.Row():
        policy = gr.Textbox(ctx.generator.name, label="Model (empty: the last trained one)")
        k = gr.Number(DEFAULT_K, precision=0, minimum=2, maximum=10, label="Titles per idea")
        target = gr.Number(DEFAULT_TARGET, precision=0, minimum=1, label="Votes per pair aimed at")
        name = gr.Textbox("", label="Name (empty: iteration-DATE-TIME)")
    with gr.Row():
        source = gr.Radio(list(IDEA_SOURCES), value=FRESH_IDEAS, label="Ideas")
        typed = gr.Textbox("", label="Ideas (one per line)", lines=3)
        ideas_file = gr.File(label="Ideas file", file_types=[".txt", ".csv"])
    start = gr.Button("Start the iteration", variant="primary")
    started = gr.Markdown()
    table = gr.Dataframe(headers=STATUS_COLUMNS, interactive=False, label="Iterations", wrap=True)
    with gr.Row():
        pick = gr.Dropdown([], label="Iteration to train on", allow_custom_value=True)
        min_votes = gr.Number(1, precision=0, minimum=1, label="Votes per pair at least")
        earlier = gr.Checkbox(False, label="With the earlier iterations' votes")
        max_steps = gr.Number(0, precision=0, minimum=0, label="Stop after steps (0: no limit)")
    screen_in = list(vote_screening())
    with gr.Row():
        train = gr.Button("Train the next model", variant="primary")
        refresh = gr.Button("Refresh")
    trained = gr.Markdown()

    iterations = Iterations(ctx)
    listing = [table, pick]
    start.click(
        guard(OWNER, iterations.start),
        [policy, source, typed, ideas_file, k, target, name],
        [started, *listing],
        api_name="iteration_start",
        concurrency_limit=1,  # one model on the GPU at a time
    )
    train.click(
        guard(OWNER, iterations.train),
        [pick, min_votes, earlier, max_steps, *screen_in],
        trained,
        api_name="iteration_train",
    )
    refresh.click(guard(OWNER, iterations.listing), None, listing, api_name="iterations")
    return TabParts(on_open=(Wiring(guard(OWNER, iterations.listing), listing),))


class Iterations:
    """The tab's handlers: an iteration started, the iterations' votes, the next model."""

    def __init__(self, ctx: Context) -> None:
        self.store, self.runner, self.runs = ctx.store, ctx.runner, runs_dir(ctx.folder)

    def listing(self):
        found = iteration_statuses(self.store)
        rows = [
            [s.name, s.policy, s.pairs, s.votes, s.voters,
             f"{s.pairs_at_target} of {s.pairs} ({s.target_votes}+ votes)",
             "" if s.unanimous is None else f"{s.unanimous:.0%}", s.trained or ""]
            for s in found
        ]  # fmt: skip
        names = [s.name for s in found]
        return rows, gr.Dropdown(choices=names, value=names[-1] if names else None)

    def start(self, policy, where, text, path, count, target, iteration_name):
        ideas, ideas_from = round_ideas(IDEA_SOURCES[where], text, path)
        plan = plan_iteration(
            self.store,
            (policy or "").strip() or None,
            ideas or [],
            ideas_from or "",
            name=(iteration_name or "").strip() or None,
            k=int(count or DEFAULT_K),
            target_votes=int(target or DEFAULT_TARGET),
        )
        info = start_iteration(self.store, plan, generate=generate_round_on_gpu)
        pool = {p.name: p for p in self.store.pools()}[info.pool]
        left_out = f" ({plan.left_out} ideas left out: seen before)" if plan.left_out else ""
        message = (
            f"**{info.name}**: {info.policy} wrote {info.k} titles for {len(plan.ideas)} ideas"
            f"{left_out}; **{pool.pairs} pairs** are served to voters first."
        )
        return message, *self.listing()

    def train(self, name, min_count, with_earlier, step_limit, fast, gold_floor, burst):
        if not name:
            raise UserError("no iteration chosen: start one first")
        run = train_iteration_in_app(
            self.runner,
            self.store,
            name,
            self.runs,
            get_recipe(),
            min_votes=int(min_count or 1),
            screening=screening(fast, gold_floor, burst),
            earlier=bool(with_earlier),
            max_steps=int(step_limit) if step_limit else None,
            chunked=ON_ZEROGPU,
        )
        return (
            f"Training the model after **{name}** in `{run}`: follow it on the Train tab. "
            "The next iteration starts from it once it is done."
        )
