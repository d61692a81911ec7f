"""The Pools tab, the owner's: what the voting link serves first. Every pool of pairs with its
votes, its priority (higher is served first) and whether it is retired (no longer served)."""

from __future__ import annotations

import gradio as gr

from pipeline.access import OWNER
from pipeline.errors import UserError
from pipeline.votes import VoteStore
from ui.context import Context, TabParts, Wiring

TITLE = "Pools"
SHOWN_TO = OWNER

POOL_COLUMNS = ["Pool", "Pairs", "Votes", "Pairs without a vote", "Priority", "Served"]
POOL_WIDTHS = ["34%", "11%", "11%", "18%", "13%", "13%"]  # the long headers wrap


def build(ctx: Context) -> TabParts:
    guard = ctx.guard
    gr.Markdown(
        "A voter is served the pairs of the highest-priority pool that still has one they have "
        "not judged, fewest votes first; then the next pool down. Give an evaluation round's "
        "pool (`round:NAME`) a priority above the tutorial's 0 and its pairs get the first "
        "votes. A retired pool is no longer served; its pairs and votes stay for training and "
        "reports. Gold pairs (pool `gold`) check voters only where they are served."
    )
    table = gr.Dataframe(headers=POOL_COLUMNS, interactive=False, label="Pools, first on top",
                         wrap=True, column_widths=POOL_WIDTHS)  # fmt: skip
    with gr.Row():
        pool = gr.Dropdown([], label="Pool", allow_custom_value=True)
        priority = gr.Number(0, precision=0, minimum=-1000, maximum=1000, label="Priority")
        served = gr.Checkbox(True, label="Served (untick: retired)")
    with gr.Row():
        save = gr.Button("Save", variant="primary")
        refresh = gr.Button("Refresh")
    saved = gr.Markdown()

    pools = PoolSettings(ctx.store)
    save.click(
        guard(OWNER, pools.change),
        [pool, priority, served],
        [saved, table, pool],
        api_name="pool_set",
    )
    refresh.click(guard(OWNER, pools.listing), None, [table, pool], api_name="pools")
    pool.input(guard(OWNER, pools.settings_of), pool, [priority, served], api_visibility="private")
    return TabParts(on_open=(Wiring(guard(OWNER, pools.listing), [table, pool]),))


class PoolSettings:
    """The tab's handlers: the pools as a table, and one pool's serving changed."""

    def __init__(self, store: VoteStore) -> None:
        self.store = store

    def listing(self, chosen: str | None = None):
        found = self.store.pools()
        rows = [
            [p.name, p.pairs, p.votes, p.unvoted, p.priority, "no" if p.retired else "yes"]
            for p in found
        ]
        names = [p.name for p in found]
        value = chosen if chosen in names else (names[0] if names else None)
        return rows, gr.Dropdown(choices=names, value=value)

    def settings_of(self, name: str | None):
        match = [p for p in self.store.pools() if p.name == name]
        if not match:
            raise UserError(f"no pool {name!r}")
        return match[0].priority, not match[0].retired

    def change(self, name: str | None, priority: float | None, served: bool):
        if not name:
            raise UserError("choose a pool first")
        pool = self.store.set_pool(name, priority=priority, retired=not served)
        return f"Saved. {pool.describe()}", *self.listing(name)
