"""The Generate tab: the chat model writes candidate titles for an idea; the owner adds them
to the voting pool, imports pairs, ranks titles with a reward model and sets gold pairs."""

from __future__ import annotations

import gradio as gr

from pipeline.access import OWNER, Caller
from pipeline.appdata import runs_dir
from pipeline.errors import UserError
from pipeline.generation import MAX_TITLES_PER_IDEA, GenerationSettings
from pipeline.prompts import MAX_IDEA_CHARS
from pipeline.runner import finished_runs
from pipeline.zerogpu import best_of_n_on_gpu, generate_on_gpu
from ui.context import Context, TabParts, Wiring

TITLE = "Generate"
SHOWN_TO = "generate"  # the owner, and voters when the owner allows it

EXAMPLE_IDEAS = [
    "intro independent component analysis",
    "how I track my habits with a spreadsheet",
    "why transformers replaced RNNs",
]


def build(ctx: Context) -> TabParts:
    """The tab, and its owner-only tools (the voting pool, gold pairs, the switch that opens
    Generate to voters)."""
    generator, store, keeper, guard = ctx.generator, ctx.store, ctx.keeper, ctx.guard
    status, folder = ctx.status, ctx.folder
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
    with gr.Column(visible=False) as owner_tools:
        with gr.Row():
            add = gr.Button("Add these titles to the voting pool")
            added = gr.Markdown()
        with gr.Accordion("Best of n: rank the titles with a reward model", open=False):
            gr.Markdown(
                "Samples *Titles* titles for the idea, scores each with a reward model "
                "(train one on the Train tab) and lists them best first."
            )
            with gr.Row():
                reward_model = gr.Dropdown(
                    [], allow_custom_value=True, label="Reward model (a run, or a folder)"
                )
                find_rewards = gr.Button("Find reward models")
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
            keeper.voters_may_generate, label="Voters may use Generate too (it costs GPU time)"
        )
    last_titles = gr.State([])

    def model_status(*, caller: Caller) -> str:
        if not keeper.allows(caller, "generate"):
            return ""  # a voter who cannot generate loads no model
        return generator.status()

    def generate(idea_text: str, count: float, temp: float):
        loaded = generator.load()
        settings = GenerationSettings(n=int(count), temperature=float(temp))
        result = generate_on_gpu(generator.name, idea_text, settings)  # ZeroGPU call
        table = [[t.text, len(t.text)] for t in result]
        return table, [t.raw for t in result], loaded.describe(), result, ""

    def reward_models():
        found = [str(m) for m in finished_runs(runs_dir(folder), "reward")]
        return gr.Dropdown(choices=found, value=found[0] if found else None)

    def generate_ranked(idea_text: str, count: float, temp: float, reward_name: str | None):
        if not reward_name:
            raise UserError("choose a reward model first (train one on the Train tab)")
        settings = GenerationSettings(n=int(count), temperature=float(temp))
        scored = best_of_n_on_gpu(generator.name, reward_name, idea_text, settings)
        rows = [[round(s.score, 3), s.title.text, len(s.title.text)] for s in scored]
        return rows, [s.title for s in scored]

    def add_to_pool(generated: list) -> str:
        count = store.add_titles(generated)
        return f"Added {count} new pairs for “{generated[0].idea}” to the voting pool."

    def import_pairs(path: str | None) -> str:
        if not path:
            raise UserError("choose a pairs CSV first")
        return f"Imported {store.import_pairs_csv(path)} new pairs."

    def add_gold(idea_text: str, good: str, bad: str) -> str:
        pair = store.add_gold_pair(idea_text, good, bad)
        return f"Gold pair {pair} added: voters who pick “{good}” are right."

    def set_open_to_voters(allowed: bool) -> None:
        keeper.voters_may_generate = bool(allowed)

    gr.on(
        [button.click, idea.submit],
        guard("generate", generate),
        inputs=[idea, n, temperature],
        outputs=[titles, raw, status, last_titles, added],
        api_name="generate",
        concurrency_limit=1,  # one model, one generation at a time
    )
    find_rewards.click(guard(OWNER, reward_models), None, reward_model, api_name="reward_models")
    rank.click(
        guard(OWNER, generate_ranked),
        [idea, n, temperature, reward_model],
        [ranked, last_titles],
        api_name="best_of_n",
        concurrency_limit=1,
    )
    add.click(guard(OWNER, add_to_pool), last_titles, added, api_name="add_to_pool")
    pairs_file.upload(guard(OWNER, import_pairs), pairs_file, pool_message, api_name="import_pairs")
    tutorial.click(
        guard(OWNER, lambda: f"Loaded {store.import_tutorial_pool()} new pairs."),
        None,
        pool_message,
        api_name="load_tutorial_pool",
    )
    gold_button.click(
        guard(OWNER, add_gold),
        [gold_idea, gold_good, gold_bad],
        gold_message,
        api_name="add_gold_pair",
    )
    open_to_voters.input(
        guard(OWNER, set_open_to_voters), open_to_voters, None, api_name="voters_may_generate"
    )
    # The model line waits for the role: an owner pass may make this page the owner's.
    show_model = Wiring(guard("anyone", model_status), [status], api_name="model_status")
    return TabParts(owner_parts=[owner_tools], on_role=show_model)
