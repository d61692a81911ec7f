"""Owner sign-in with the password (where one is set), and the line that tells a visitor
which role they have."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gradio as gr

from pipeline.access import AccessSettings, Caller, Gatekeeper, Refused, RequestFacts
from ui.context import Wiring
from ui.guard import Guard


def describe_caller(caller: Caller, settings: AccessSettings) -> str:
    if caller.is_owner:
        how = {"loopback": "this machine", "password": "owner password"}.get(caller.how, caller.how)
        return f"**Owner** ({how}): every tab is yours."
    if settings.voters_signed_in and not caller.username:
        return "Sign in with Hugging Face to vote: one vote per person per pair."
    who = f" as {caller.username}" if caller.username else ""
    return f"You are voting{who}. Thank you for helping!"


SIGNED_OUT = "signed out"  # what the browser keeps instead of an owner pass after signing out


class OwnerSignIn:
    """The owner-password box: shown where a password is set and the visitor is no owner."""

    def __init__(self, keeper: Gatekeeper, guard: Guard, sign_out: gr.Button) -> None:
        self.keeper, self.guard = keeper, guard
        # beside the page's role line, for an owner by the password: on a shared computer the
        # next person must not inherit the pass
        self.sign_out = sign_out
        with gr.Accordion("Owner sign-in", open=False, visible=False) as self.box:
            with gr.Row():
                self.password = gr.Textbox(
                    label="Owner password", type="password", max_lines=1, scale=3
                )
                self.button = gr.Button("Sign in as the owner", scale=1)
            self.message = gr.Markdown()

    def wire(
        self,
        show_role: Callable,
        role_outputs: list,
        after: Sequence[Wiring],
        owner_pass: gr.BrowserState,
    ) -> None:
        """Sign-in updates what the page shows (then runs `after`, what follows the role), and
        leaves a pass in the browser so that its next pages (a reload, another tab) need no
        password for a while; sign-out does the reverse."""
        keeper = self.keeper

        def then_after(event) -> None:
            for wiring in after:
                event = event.then(
                    wiring.fn, wiring.inputs, wiring.outputs, api_visibility="private"
                )

        def sign_in(password: str, *, facts: RequestFacts) -> dict:
            try:
                caller, new_pass = keeper.sign_in(facts, password)
            except Refused as exc:  # said beside the box; the password is not kept
                return {self.password: "", self.message: str(exc)}
            return {
                **show_role(caller=caller),
                owner_pass: new_pass,
                self.password: "",
                self.message: "",
            }

        outputs = [*role_outputs, owner_pass, self.password, self.message]
        signed_in = gr.on(
            [self.button.click, self.password.submit],
            self.guard("anyone", sign_in),
            self.password,
            outputs,
            api_name="owner_sign_in",
            queue=False,
        )
        then_after(signed_in)

        def sign_out(*, facts: RequestFacts) -> dict:
            # Gradio writes only a truthy value to the browser's storage (None or "" would
            # leave the pass there): a word that is no pass takes its place.
            return {**show_role(caller=keeper.sign_out(facts)), owner_pass: SIGNED_OUT}

        signed_out = self.sign_out.click(
            self.guard("anyone", sign_out),
            None,
            [*role_outputs, owner_pass],
            api_name="owner_sign_out",
            queue=False,
        )
        then_after(signed_out)
