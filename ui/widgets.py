"""Form parts more than one tab shows: where training data comes from, how votes are
screened before they become a dataset, a recipe's form made from its fields, and a log box
that shows its newest lines."""

from __future__ import annotations

import gradio as gr

from pipeline.ratings import Screening
from pipeline.recipes import (
    DEFAULT_RECIPE,
    DPORecipe,
    form_values,
    get_recipe,
    gpu_changes,
    knobs,
    shipped_recipes,
)

# Gradio's `autoscroll` leaves a non-interactive Textbox at its top (seen with 6.31: scrollTop
# stayed 0 while a timer grew the text), so a 40-line log tail showed lines 30 steps old. This
# runs in the browser after each change: to the bottom, unless the reader scrolled up.
_FOLLOW_JS = """(value) => {
  const box = document.querySelector('#ELEM textarea');
  if (!box) return value;
  if (!box.dataset.follow) {
    box.dataset.follow = '1';
    box.addEventListener('scroll', () => {
      const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      box.dataset.follow = atBottom ? '1' : '0';
    });
  }
  if (box.dataset.follow === '1') box.scrollTop = box.scrollHeight;
  return value;
}"""


def log_box(label: str, elem_id: str, lines: int = 8) -> gr.Textbox:
    """A read-only log that keeps its newest line in view, as a terminal does."""
    box = gr.Textbox(label=label, lines=lines, max_lines=lines, interactive=False, elem_id=elem_id)
    # no server call: the browser alone scrolls (and `fn=None` needs no role)
    box.change(None, box, None, js=_FOLLOW_JS.replace("ELEM", elem_id))
    return box


def vote_screening() -> tuple[gr.Checkbox, gr.Number, gr.Checkbox]:
    """The fields that screen votes before they become a dataset (ratings.Screening), in the
    order the endpoints take them (the burst switch came last, so it is last)."""
    with gr.Row():
        drop_fast = gr.Checkbox(False, label="Leave out votes cast too fast to read")
        drop_burst = gr.Checkbox(
            False, label="Leave out voters minted in a burst from one address (see Voters)"
        )
        min_gold = gr.Number(
            0, minimum=0, maximum=1, label="Leave out voters below this gold accuracy (0: none)"
        )
    return drop_fast, min_gold, drop_burst


def screening(
    drop_fast: bool | None, min_gold: float | None, drop_burst: bool | None = False
) -> Screening:
    """The fields' values as the dataset writers take them (0 or empty: no gold floor)."""
    return Screening(
        drop_fast=bool(drop_fast),
        drop_burst=bool(drop_burst),
        min_gold_accuracy=float(min_gold) if min_gold else None,
    )


# The Data choices on the Train and Hub tabs, and the source each one names.
TUTORIAL_DATA = "The tutorial's 1,140 labelled pairs"
VOTES_DATA = "The votes collected here"
HUB_DATA = "A preference dataset on the Hub"
DATA_SOURCES = {TUTORIAL_DATA: "tutorial", VOTES_DATA: "votes", HUB_DATA: "hub"}


def recipe_form(kind: type = DPORecipe) -> tuple[gr.Dropdown, list[gr.components.Component]]:
    """The recipe choice and one field per recipe knob marked for the form (an optional knob:
    a switch and a number; a knob with choices: a dropdown), made from the recipe's own
    fields, in `form_values` order."""
    default = get_recipe(DEFAULT_RECIPE, kind)
    shipped = shipped_recipes(kind)
    on_gpu = [f"{name} trains with {gpu_changes(r)}" for name, r in shipped.items()
              if gpu_changes(r)]  # fmt: skip
    recipe = gr.Dropdown(
        list(shipped),
        value=DEFAULT_RECIPE,
        label="Recipe",
        info=f"On a GPU, {'; '.join(on_gpu)} (docs/recipes.md)" if on_gpu else None,
    )
    values = iter(form_values(default))
    fields: list[gr.components.Component] = []
    with gr.Row():
        for knob in knobs(form_only=True, kind=kind):
            if knob.optional:
                fields.append(gr.Checkbox(next(values), label=knob.switch))
            if knob.choices:
                fields.append(
                    gr.Dropdown(
                        list(knob.choices), value=next(values), label=knob.label, info=knob.help
                    )
                )
                continue
            whole = knob.kind is int
            fields.append(
                gr.Number(
                    next(values),
                    precision=0 if whole else None,
                    minimum=1 if whole else 0,
                    label=knob.label,
                    info=knob.help,  # the field's own help, as `--help` shows it
                )
            )
    return recipe, fields
