"""The Gradio app. This file builds the Blocks and wires events; the work is in `pipeline/`.

    python app.py [--model M] [--share]

Serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override, as on a Space).
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from pipeline.errors import UserError
from pipeline.generation import MAX_TITLES_PER_IDEA, GenerationSettings, generate_for_idea
from pipeline.models import DEFAULT_MODEL, load_model
from pipeline.prompts import MAX_IDEA_CHARS

EXAMPLE_IDEAS = [
    "intro independent component analysis",
    "how I track my habits with a spreadsheet",
    "why transformers replaced RNNs",
]


def build_app(model_name: str | None = None) -> gr.Blocks:
    model_name = model_name or os.environ.get("TITLE_DPO_MODEL") or DEFAULT_MODEL

    def model_status() -> str:
        try:
            return load_model(model_name).describe()
        except UserError as exc:
            return f"Model {model_name!r} could not be loaded: {exc}"

    def generate(idea: str, n: float, temperature: float):
        try:
            loaded = load_model(model_name)
            settings = GenerationSettings(n=int(n), temperature=float(temperature))
            titles = generate_for_idea(loaded, idea, settings)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        table = [[t.text, len(t.text)] for t in titles]
        return table, [t.raw for t in titles], loaded.describe()

    with gr.Blocks(title="YouTube title DPO") as app:
        gr.Markdown("# YouTube titles, tuned on human preferences")
        status = gr.Markdown("Model: loading…")
        with gr.Tab("Generate"):
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
        app.load(model_status, outputs=status, api_name="model_status")
        gr.on(
            [button.click, idea.submit],
            generate,
            inputs=[idea, n, temperature],
            outputs=[titles, raw, status],
            api_name="generate",
        )
    return app


demo = build_app()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the YouTube title DPO app.")
    parser.add_argument("--model", default=None, help=f"Hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    args = parser.parse_args()
    app = build_app(args.model) if args.model else demo
    app.queue().launch(share=args.share)
