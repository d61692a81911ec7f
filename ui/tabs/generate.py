"""The Generate tab: the chat model writes candidate titles for an idea; the owner adds them
to the voting pool, imports pairs, ranks titles with a reward model and sets gold pairs."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipeline.access import OWNER, Caller
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.generation import MAX_TITLES_PER_IDEA, GenerationSettings
from pipeline.methods import run_choices
from pipeline.prompts import MAX_IDEA_CHARS
from pipeline.zerogpu import best_of_n_on_gpu, generate_on_gpu
from ui.context import Context, TabParts, Wiring

TITLE = "Generate"
SHOWN_TO = "generate"  # the owner, and voters when the owner allows it

EXAMPLE_IDEAS = [
    "intro independent component analysis",
    "how I track my habits with a spreadsheet",
    "why transformers replaced RNNs",
]


@dataclass(frozen=True)
class OwnerTools:
    """The owner's part of the tab: the voting pool, best of n, gold pairs, the switch."""

    column: gr.Column
    add: gr.Button
    added: gr.Markdown
    reward_model: gr.Dropdown
    find_rewards: gr.Button
    rank: gr.Button
    ranked: gr.Dataframe
    pairs_file: gr.File
    tutorial: gr.Button
    pool_message: gr.Markdown
    gold: tuple[gr.Textbox, gr.Textbox, gr.Textbox]  # idea, the better title, the worse
    gold_button: gr.Button
    gold_message: gr.Markdown
    open_to_voters: gr.Checkbox


def owner_tools(voters_may_generate: bool) -> OwnerTools:
    with gr.Column(visible=False) as column:
        with gr.Row():
            add = gr.Button("Add these titles to the voting pool")
            added = gr.Markdown()
        with gr.Accordion("Best of n: rank the titles with a reward model", open=False):
            gr.Markdown(
                "Samples *Titles* titles for the idea, scores each with a reward model "
                "(train one on the Train tab) and lists them best first."
            )
            with gr.Row():
                reward_model = gr.Dropdown(  # wide: a run is offered by what it trained
                    [], allow_custom_value=True, label="Reward model (a run, or a folder)", scale=4
                )
                find_rewards = gr.Button("Find reward models", scale=1)
            rank = gr.Button("Generate and rank", variant="primary")
            ranked = gr.Dataframe(
                headers=["Score", "Title", "Characters"],
                datatype=["number", "str", "number"],
                label="Best first",
                interactive=False,
                wrap=True,
            )
        with gr.Accordion("Voting pool", open=False):
            gr.Markdown("Import a `python -m pipeline pairs` CSV (`idea,title_a,title_b`).")
            pairs_file = gr.File(label="Pairs CSV", file_types=[".csv"])
            tutorial = gr.Button("Load the tutorial's 1,140 pairs")
            pool_message = gr.Markdown()
        with gr.Accordion("Gold pairs: checks with a known answer", open=False):
            gr.Markdown(
                "Voters see a gold pair like any other; how often each voter picks the better "
                "title is on the Leaderboard, and a dataset can leave out voters who miss too "
                "many. Pair a good title with a deliberately broken one."
            )
            with gr.Row():
                gold_idea = gr.Textbox(label="Video idea")
                gold_good = gr.Textbox(label="The better title")
                gold_bad = gr.Textbox(label="The worse title (e.g. broken on purpose)")
            gold_button = gr.Button("Add the gold pair")
            gold_message = gr.Markdown()
        open_to_voters = gr.Checkbox(
            voters_may_generate, label="Voters may use Generate too (it costs GPU time)"
        )
    return OwnerTools(
        column, add, added, reward_model, find_rewards, rank, ranked, pairs_file, tutorial,
        pool_message, (gold_idea, gold_good, gold_bad), gold_button, gold_message, open_to_voters,
    )  # fmt: skip


class Titles:
    """The tab's handlers: titles written, ranked, and put into the voting pool."""

    def __init__(self, ctx: Context) -> None:
        self.generator, self.store, self.keeper = ctx.generator, ctx.store, ctx.keeper
        self.folder = ctx.folder

    def model_status(self, *, caller: Caller) -> str:
        if not self.keeper.allows(caller, "generate"):
            return ""  # a voter who cannot generate loads no model
        return self.generator.status()

    def generate(self, idea_text: str, count: float, temp: float, *, caller: Caller):
        self.keeper.admit_generation(caller)
        loaded = self.generator.load()
        settings = GenerationSettings(n=int(count), temperature=float(temp))
        result = generate_on_gpu(self.generator.name, idea_text, settings)  # ZeroGPU call
        table = [[t.text, len(t.text)] for t in result]
        return table, [t.raw for t in result], loaded.describe(), result, ""

    def reward_models(self):
        found = run_choices(runs_dir(self.folder), writes_titles=False)  # reward models
        return gr.Dropdown(choices=found, value=found[0][1] if found else None)

    def generate_ranked(self, idea_text: str, count: float, temp: float, reward_name: str | None):
        if not reward_name:
            raise UserError("choose a reward model first (train one on the Train tab)")
        settings = GenerationSettings(n=int(count), temperature=float(temp))
        scored = best_of_n_on_gpu(self.generator.name, reward_name, idea_text, settings)
        rows = [[round(s.score, 3), s.title.text, len(s.title.text)] for s in scored]
        return rows, [s.title for s in scored]

    def add_to_pool(self, generated: list) -> str:
        count = self.store.add_titles(generated)
        return f"Added {count} new pairs for “{generated[0].idea}” to the voting pool."

    def import_pairs(self, path: str | None) -> str:
        if not path:
            raise UserError("choose a pairs CSV first")
        return f"Imported {self.store.import_pairs_csv(path)} new pairs."

    def add_gold(self, idea_text: str, good: str, bad: str) -> str:
        pair = self.store.add_gold_pair(idea_text, good, bad)
        return f"Gold pair {pair} added: voters who pick “{good}” are right."

    def set_open_to_voters(self, allowed: bool) -> None:
        self.keeper.voters_may_generate = bool(allowed)

    def load_tutorial(self) -> str:
        return f"Loaded {self.store.import_tutorial_pool()} new pairs."


def build(ctx: Context) -> TabParts:
    """The tab, and its owner-only tools (`owner_tools`)."""
    # Over 60 lines: the public layout as the page shows it, then one event per control.
    guard, status = ctx.guard, ctx.status
    idea = gr.Textbox(
        label="Video idea",
        placeholder="e.g. intro independent component analysis",
        max_length=MAX_IDEA_CHARS,
    )
    with gr.Row():
        n = gr.Slider(1, MAX_TITLES_PER_IDEA, value=5, step=1, label="Titles")
        temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature")
    button = gr.Button("Generate titles", variant="primary")
    titles = gr.Dataframe(
        headers=["Title", "Characters"],
        datatype=["str", "number"],
        label="Titles (the prompt asks for 30–75 characters)",
        interactive=False,
        wrap=True,
        column_widths=["88%", "12%"],
    )
    with gr.Accordion("Raw model output", open=False):
        raw = gr.JSON(label="Exactly what the model wrote")
    gr.Examples(EXAMPLE_IDEAS, inputs=idea)
    tools = owner_tools(ctx.keeper.voters_may_generate)
    last_titles = gr.State([])
    writer = Titles(ctx)

    gr.on(
        [button.click, idea.submit],
        guard("generate", writer.generate),
        inputs=[idea, n, temperature],
        outputs=[titles, raw, status, last_titles, tools.added],
        api_name="generate",
        concurrency_limit=1,  # one model, one generation at a time
    )
    tools.find_rewards.click(
        guard(OWNER, writer.reward_models), None, tools.reward_model, api_name="reward_models"
    )
    tools.rank.click(
        guard(OWNER, writer.generate_ranked),
        [idea, n, temperature, tools.reward_model],
        [tools.ranked, last_titles],
        api_name="best_of_n",
        concurrency_limit=1,
    )
    tools.add.click(
        guard(OWNER, writer.add_to_pool), last_titles, tools.added, api_name="add_to_pool"
    )
    tools.pairs_file.upload(
        guard(OWNER, writer.import_pairs),
        tools.pairs_file,
        tools.pool_message,
        api_name="import_pairs",
    )
    tools.tutorial.click(
        guard(OWNER, writer.load_tutorial),
        None,
        tools.pool_message,
        api_name="load_tutorial_pool",
    )
    tools.gold_button.click(
        guard(OWNER, writer.add_gold),
        list(tools.gold),
        tools.gold_message,
        api_name="add_gold_pair",
    )
    tools.open_to_voters.input(
        guard(OWNER, writer.set_open_to_voters),
        tools.open_to_voters,
        None,
        api_name="voters_may_generate",
    )
    # The model line waits for the role: an owner pass may make this page the owner's.
    show_model = Wiring(guard("anyone", writer.model_status), [status], api_name="model_status")
    return TabParts(owner_parts=[tools.column], on_role=show_model)
