"""Who is pushing, to which repo, and what went wrong, in words a user can act on.

Every write to the Hub starts here: the repo id is checked before any network call, the token
is found (given, `HF_TOKEN`, or a saved login), the Hub is asked whose it is and whether it may
write, and the target namespace must be that user's or one of their organisations'. Errors
from the client become one-line `UserError`s that say what to do. A token never appears in
what this module returns or raises: messages pass through `redact`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.models import TRANSPORT_ERRORS  # "the Hub cannot be reached", not an answer

TOKENS_PAGE = "https://huggingface.co/settings/tokens"
# On a Space (SPACE_ID is set there) people sign in with Hugging Face (OAuth); elsewhere the
# token is HF_TOKEN or a saved `hf auth login`.
ON_SPACE = bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class Identity:
    """The account behind a token, as `/api/whoami-v2` describes it."""

    name: str
    orgs: tuple[str, ...]
    role: str | None  # "read", "write", "fineGrained", or None when the Hub does not say

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.name, *self.orgs)


def check_repo_id(
    repo_id: str | None, what: str = "repo", example: str = "your-name/youtube-titles-dpo"
) -> str:
    """`namespace/name` or a bare `name` (the user's own namespace), checked without network."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise UserError(f"no Hub {what} id given: write one like {example!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        reason = str(exc).splitlines()[0].split(". Use `repo_type`")[0]
        raise UserError(f"{repo_id!r} is not a valid Hub {what} id: {reason}") from None
    return repo_id


def find_token(token: str | None = None) -> str:
    """The token to push with: the one given, else HF_TOKEN, else a saved `hf auth login`."""
    from huggingface_hub import get_token

    token = (token or "").strip() or get_token()
    if not token:
        how = (
            "sign in with the 'Sign in with Hugging Face' button"
            if ON_SPACE
            else "set HF_TOKEN (or run `hf auth login`)"
        )
        raise UserError(f"no Hugging Face token: {how}, with write access ({TOKENS_PAGE})")
    return token


def visitor_token(signed_in_token: str | None, on_space: bool) -> str | None:
    """The token a push from the app uses: the visitor's own sign-in; locally None, which
    `find_token` reads as HF_TOKEN. On a Space the app's HF_TOKEN belongs to its vote mirror,
    so a visitor who has not signed in has no token there."""
    if signed_in_token is not None:
        return signed_in_token
    if on_space:
        raise UserError("sign in with Hugging Face (the button at the top) to push")
    return None


def whoami(token: str) -> Identity:
    """Ask the Hub whose `token` is; a refused token or an unreachable Hub is a UserError."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        answer = HfApi().whoami(token=token)
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 401:
            raise UserError(
                "the Hub refused the Hugging Face token (invalid, expired or revoked): log in "
                f"again or create a new token with write access at {TOKENS_PAGE}"
            ) from None
        raise UserError(hub_failure(exc, "check the token", token)) from None
    except TRANSPORT_ERRORS as exc:
        raise UserError(hub_failure(exc, "check the token", token)) from None
    access = (answer.get("auth") or {}).get("accessToken") or {}
    orgs = tuple(org["name"] for org in answer.get("orgs") or [] if org.get("name"))
    return Identity(name=answer["name"], orgs=orgs, role=access.get("role"))


def writable_repo_id(repo_id: str, identity: Identity) -> str:
    """The full id to write to: a bare name goes to the user's namespace; someone else's
    namespace and a read-only token are refused before anything is created."""
    if identity.role == "read":
        raise UserError(
            f"the Hugging Face token of {identity.name} can only read: pushing needs a token "
            f"with the 'write' role ({TOKENS_PAGE})"
        )
    if "/" not in repo_id:
        return f"{identity.name}/{repo_id}"
    namespace = repo_id.split("/", 1)[0]
    if namespace not in identity.namespaces:
        mine = ", ".join(repr(n) for n in identity.namespaces)
        raise UserError(
            f"{repo_id!r} is in the namespace {namespace!r}, which {identity.name} cannot write "
            f"to: use one of yours ({mine}), e.g. '{identity.name}/{repo_id.split('/', 1)[1]}'"
        )
    return repo_id


# What to do when a push meets a Hub that does not answer (a push's commit is all or nothing).
AGAIN_AFTER_A_PUSH = (
    "Nothing half-written stays on the Hub (a commit is all or nothing): run the same push "
    "again when it is back; files already uploaded are not sent twice"
)


def hub_failure(
    exc: BaseException, action: str, token: str | None = None, again: str | None = None
) -> str:
    """One line for a failed Hub call: what failed, why, and what to do (`again`: what to do
    when the Hub did not answer, if more than trying again)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if isinstance(exc, TRANSPORT_ERRORS):
        line = (
            f"could not {action}: the Hub at {constants.ENDPOINT} did not answer "
            f"({type(exc).__name__}: {first_line(exc)}). " + (again or "Try again when it is back")
        )
    elif isinstance(exc, RepositoryNotFoundError):
        line = f"could not {action}: the repo does not exist or this token cannot see it"
    elif isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        reason = exc.response.headers.get("X-Error-Message") or first_line(exc)
        hint = {
            401: f"log in again or use a valid token ({TOKENS_PAGE})",
            403: "use a token with write access to this namespace",
        }.get(status, "try again; if it keeps failing, check the Hub's status")
        line = f"could not {action}: the Hub answered {status} ({reason}): {hint}"
    else:
        line = f"could not {action}: {type(exc).__name__}: {first_line(exc)}"
    return redact(line, token)


def redact(text: str, token: str | None) -> str:
    """`text` with the token (if any) replaced, so it never reaches a log or a page."""
    if token:
        text = text.replace(token, "hf_***")
    return text


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
