"""'Run on Hugging Face Jobs', part of the Train tab (the owner's): the run goes to a Jobs
machine of the owner's choosing instead of this app's runner (a bigger model, a long RL run,
a run that goes on while the Space sleeps). It shows the job and its cost before anything is
sent, then the job's state, its log's tail and its curves as they arrive; Cancel; and, once
the job has pushed its model, that model put to use on the Generate tab."""

from __future__ import annotations

import gradio as gr

from hub.auth import visitor_token
from hub.jobs import (
    DEFAULT_FLAVOR,
    DEFAULT_TIMEOUT,
    JobRequest,
    cancel,
    dry_run,
    flavors,
    job_state,
    remember,
    remembered,
    submit,
    watch,
)
from pipeline.access import OWNER
from pipeline.errors import UserError
from pipeline.methods import METHODS, method_of
from pipeline.metrics import chart_rows
from pipeline.recipes import changes_between, get_recipe, recipe_from_form
from ui.context import Context, Wiring
from ui.widgets import log_box

POLL_SECONDS = 5.0  # each look reads the job's state and log from the Hub


def build(
    ctx: Context,
    method: gr.Radio,
    base: gr.Textbox,
    max_steps: gr.Number,
    recipes: dict[str, list],
) -> Wiring:
    """The panel, reading the tab's Method, Base model and step limit, and from `recipes`
    ({method kind: [its recipe choice, *its recipe form's fields]}) the chosen method's recipe
    as its form has it. Returns the look at the latest job, for when the tab is opened."""
    # Over 60 lines: the panel's layout, top to bottom as the page shows it, then its wiring.
    guard = ctx.guard
    with gr.Accordion("Run on Hugging Face Jobs", open=False):
        gr.Markdown(intro(ctx.settings.on_space))
        with gr.Row():
            dataset = gr.Textbox("", label="Hub dataset id", placeholder="you/youtube-titles-dpo")
            push_to = gr.Textbox("youtube-titles-jobs-model", label="Push the model to")
            push_sft_to = gr.Textbox("", label="Push its SFT stage to (optional)")
            namespace = gr.Textbox("", label="Run in (an organisation of yours; empty: you)")
        with gr.Row():
            flavor = hardware_choice()
            timeout = gr.Textbox(DEFAULT_TIMEOUT, label="Timeout (e.g. 90m, 2h)")
            reward = gr.Textbox("", label="Reward model's Hub id (online RL)")
            private = gr.Checkbox(False, label="Private model repo")
        with gr.Row():
            preview = gr.Button("Show the job and its cost")
            send = gr.Button("Run on Hugging Face Jobs", variant="primary")
        with gr.Row():
            job_id = gr.Textbox(
                "",
                label="Job id (the latest submitted here, or paste one; ORG/ID: an org's)",
                scale=3,
            )
            look = gr.Button("Refresh")
            stop = gr.Button("Cancel the job", variant="stop")
            use = gr.Button("Use the pushed model for Generate")
        state = gr.Markdown()
        chart = gr.LinePlot(x="step", y="value", color="metric", label="The job's curves")
        log_tail = log_box("The job's log", "job-log")
        timer = gr.Timer(POLL_SECONDS, active=False)

    panel = JobsPanel(ctx, {kind: len(inputs) for kind, inputs in recipes.items()})
    # what `JobsPanel.request` reads, in its order
    forms = [field for inputs in recipes.values() for field in inputs]
    request_in = [method, base, max_steps, dataset, push_to, flavor, timeout, reward, private,
                  namespace, push_sft_to, *forms]  # fmt: skip
    view = [job_id, state, chart, log_tail, timer]
    preview.click(
        guard(OWNER, panel.preview, spread=len(request_in)),
        request_in,
        state,
        api_name="jobs_preview",
    )
    send.click(
        guard(OWNER, panel.send, spread=len(request_in)), request_in, view, api_name="jobs_submit"
    )
    look.click(guard(OWNER, panel.look), job_id, view, api_name="jobs_status")
    timer.tick(guard(OWNER, panel.tick), job_id, view, api_visibility="private")
    stop.click(guard(OWNER, panel.stop), job_id, view, api_name="jobs_cancel")
    use.click(guard(OWNER, panel.use), job_id, ctx.status, api_name="jobs_use_model")
    return Wiring(guard(OWNER, panel.latest), [job_id])


def hardware_choice() -> gr.Dropdown:
    choices = [(f"{f.name}: {f.label}, ${f.usd_per_hour:.2f}/h", f.name)
               for f in flavors().values()]  # fmt: skip
    return gr.Dropdown(choices, value=DEFAULT_FLAVOR, label="Hardware")


def intro(on_space: bool) -> str:
    token = "your own Hugging Face sign-in" if on_space else "`HF_TOKEN`, passed as a secret"
    return (
        "Instead of training here, a job on Hugging Face Jobs runs the same training on the "
        "machine you choose, pulls the dataset from the Hub and pushes the model to your repo "
        "with its card (its disk is gone when it ends). It trains with the method, base "
        "model, step limit and recipe set above, your changes to the recipe included (the "
        f"job's script shows them). It uses {token}; Jobs are billed by the minute to that "
        "account."
    )


class JobsPanel:
    """The panel's handlers: each reads its inputs, makes one call into `hub.jobs` with the
    owner's token, and formats what comes back."""

    def __init__(self, ctx: Context, form_sizes: dict[str, int]) -> None:
        self.folder, self.generator = ctx.folder, ctx.generator
        self.on_space = ctx.settings.on_space
        self.form_sizes = form_sizes  # {method kind: its recipe inputs}, in `request`'s order

    def token_of(self, oauth_token: gr.OAuthToken | None) -> str | None:
        return visitor_token(oauth_token.token if oauth_token else None, self.on_space)

    def request(
        self,
        label,
        base,
        max_steps,
        dataset,
        push_to,
        flavor,
        timeout,
        reward,
        private,
        namespace,
        push_sft_to,
        *forms,
    ) -> JobRequest:
        """The job the panel's fields ask for; `forms`: each method's recipe choice and
        form, in `form_sizes` order, of which the chosen method's is read."""
        method = next((m for m in METHODS.values() if m.label == label), None)
        if method is None:
            raise UserError(f"unknown method {label!r}")
        values, start = {}, 0
        for kind, size in self.form_sizes.items():
            values[kind], start = forms[start : start + size], start + size
        name, *fields = values[method.kind]
        recipe = recipe_from_form(name, fields, method.recipe)
        return JobRequest(
            data=(dataset or "").strip(),
            push_to=(push_to or "").strip(),
            method=method.kind,
            recipe=name,
            changes=tuple(changes_between(get_recipe(name, method.recipe), recipe).items()),
            model=(base or "").strip(),
            flavor=flavor or DEFAULT_FLAVOR,
            timeout=(timeout or "").strip() or DEFAULT_TIMEOUT,
            reward=(reward or "").strip() or None,
            max_steps=int(max_steps) if max_steps else None,
            private=bool(private),
            namespace=(namespace or "").strip() or None,
            push_sft_to=(push_sft_to or "").strip() or None,
        )

    def preview(self, *fields) -> str:
        """The job and its cost, from the panel's fields (as `request` takes them)."""
        return f"```\n{dry_run(self.request(*fields))}\n```"

    def send(self, *fields, oauth_token: gr.OAuthToken | None = None):
        submitted = submit(self.request(*fields), self.token_of(oauth_token))
        remember(self.folder, submitted)
        return self.look(submitted.ref, oauth_token)

    def look(self, job_id, oauth_token: gr.OAuthToken | None = None):
        import pandas as pd

        seen = watch(job_id, self.token_of(oauth_token))
        keys = method_of(seen.state.method or None).charts[0][1]
        rows = pd.DataFrame(chart_rows(seen.metrics, keys), columns=["step", "value", "metric"])
        return (
            seen.state.job_id,
            seen.describe(),
            rows,
            "\n".join(seen.log[-40:]),
            gr.Timer(active=not seen.state.ended),
        )

    def tick(self, job_id, oauth_token: gr.OAuthToken | None = None):
        """The timer's look: a Hub that does not answer for a moment is said on the page,
        and the next tick tries again (an error box every few seconds would bury it)."""
        try:
            return self.look(job_id, oauth_token)
        except UserError as exc:
            return (
                job_id,
                f"Could not read the job just now: {exc}",
                gr.skip(),
                gr.skip(),
                gr.skip(),
            )

    def stop(self, job_id, oauth_token: gr.OAuthToken | None = None):
        cancel((job_id or "").strip(), self.token_of(oauth_token))
        return self.look(job_id, oauth_token)

    def use(self, job_id, oauth_token: gr.OAuthToken | None = None) -> str:
        state = job_state((job_id or "").strip(), self.token_of(oauth_token))
        if state.stage != "COMPLETED" or not state.push_to:
            raise UserError(f"no pushed model yet: {state.describe()}")
        return self.generator.use(state.push_to)

    def latest(self):
        jobs = remembered(self.folder)
        return jobs[-1].ref if jobs else ""
