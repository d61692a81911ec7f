"""Who may do what: the owner and the voters, resolved in one place for every request.

The link the owner shares is public, so every endpoint of the app states a role and the
`Gatekeeper` decides, on the server, whether the caller has it:

- **owner**: may do everything. On a Space, a visitor signed in with Hugging Face whose
  username is the Space's owner, a member of the owning organisation, or listed in
  `TITLE_DPO_OWNERS`. Locally, the person at the machine: requests from the loopback
  interface, unless the app is shared (`--share`) or `TITLE_DPO_OWNER_PASSWORD` is set; then
  owner actions need that password, entered once per browser session.
- **voter**: everyone else. Voters vote (and use Generate if the owner allows it).

Voters are held to what a person can do: their ids are issued by the server and signed
(HMAC), so a client cannot invent one; votes per voter and per address, and new voter ids
per address, are rate-limited. An id minted while its address has already had
`burst_voters_per_minute` new ids in the last minute is marked 'burst' inside its signature
(a script minting voters, or a classroom behind one router): its votes are kept and flagged,
and the owner can see and leave them out. The limits' counts are kept in the data folder
(`pipeline.rate_limits`: a restart does not reset them), and so is the signing secret, unless
`TITLE_DPO_SECRET` gives it.

Which address counts (`Gatekeeper.address`): the connection's own peer, unless proxies the
owner trusts stand in front of the app (`TITLE_DPO_TRUSTED_PROXIES`, 1 on a Space). Each proxy
appends the address it saw to X-Forwarded-For, so the entry that many places from the right
is the visitor as the outermost trusted proxy saw it; anything left of it is the client's own
say and is never read. Under `--share` every visitor arrives through the share tunnel from
this machine: the address says nothing about who is who, so the per-address limits are off
there and the signed voter ids and per-voter limits carry the weight.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.rate_limits import LimitLog, RateLimiter

log = logging.getLogger(__name__)

OWNER, VOTER = "owner", "voter"
# What an endpoint may demand: the owner; anyone who may vote; anyone who may generate
# (the owner, and voters when the owner allows it); or anyone at all (page set-up, sign-in).
ROLES = (OWNER, VOTER, "generate", "anyone")
OPEN_ROLES = (VOTER, "anyone")  # every caller has these
OWNER_ONLY = "owner only: this action is for the person who runs the app"
SECRET_FILE = "secret.key"
VOTER_PREFIX = "v-"
SIGNED_IN_PREFIX = "hf:"
BURST_MARK = "burst"  # in a voter token: minted in a burst from one address
OWNER_PASS_HOURS = 12  # how long a browser stays the owner's after the password
# A Space's front proxy connects to the app and appends the visitor's address to
# X-Forwarded-For (the app's peer is an internal address): one trusted hop.
SPACE_PROXIES = 1


class Refused(UserError):
    """The caller may not do this; nothing was changed."""


class TooMany(Refused):
    """The caller may do this, but not again so soon; nothing was changed."""


@dataclass(frozen=True)
class AccessSettings:
    """Who is the owner, how voters are admitted, and the limits they are held to."""

    on_space: bool = False
    space_owner: str | None = None  # the user or organisation that owns the Space
    owners: frozenset[str] = frozenset()  # extra owner usernames (TITLE_DPO_OWNERS)
    owner_password: str | None = None
    shared: bool = False  # started with --share: the public link also arrives on loopback
    voters_signed_in: bool = False  # TITLE_DPO_VOTERS=signed-in: a voter is an HF username
    voters_may_generate: bool = False  # the owner's switch; its starting value
    votes_per_minute: int = 30  # per voter
    address_votes_per_minute: int = 600  # per client address (a classroom shares one)
    new_voters_per_hour: int = 60  # new voter ids per client address
    burst_voters_per_minute: int = 10  # new ids per address a minute before they are marked
    sign_ins_per_hour: int = 10  # owner password attempts per client address
    # Generate calls a voter may make an hour, per address, when the owner opens Generate
    generations_per_hour: int = 60
    # files a visitor the server cannot tell is the owner may upload an hour, per address:
    # only where an owner may be signed in by password (Gradio's upload carries no page)
    uploads_per_hour: int = 10
    # proxies in front of the app that each append the address they saw to X-Forwarded-For
    trusted_proxies: int = 0

    @classmethod
    def from_env(cls, shared: bool = False, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        space_id = env.get("SPACE_ID") or ""
        voters = (env.get("TITLE_DPO_VOTERS") or "anyone").strip().lower()
        if voters not in ("anyone", "signed-in"):
            raise UserError(f"TITLE_DPO_VOTERS must be 'anyone' or 'signed-in', not {voters!r}")
        if voters == "signed-in" and not space_id:
            raise UserError(
                "TITLE_DPO_VOTERS=signed-in needs a Space: signing in with Hugging Face only "
                "works there"
            )
        if shared and not env.get("TITLE_DPO_OWNER_PASSWORD"):
            # Through the share tunnel every visitor arrives on loopback, like the owner.
            raise UserError(
                "--share makes the app public: set TITLE_DPO_OWNER_PASSWORD first (owner "
                "actions will ask for it; voters need nothing)"
            )
        owner = env.get("SPACE_AUTHOR_NAME") or (space_id.split("/")[0] if space_id else None)
        return cls(
            on_space=bool(space_id),
            space_owner=owner or None,
            owners=frozenset(
                n.strip() for n in (env.get("TITLE_DPO_OWNERS") or "").split(",") if n.strip()
            ),
            owner_password=env.get("TITLE_DPO_OWNER_PASSWORD") or None,
            shared=shared,
            voters_signed_in=voters == "signed-in",
            voters_may_generate=_flag(env.get("TITLE_DPO_VOTERS_GENERATE")),
            votes_per_minute=_limit(env, "TITLE_DPO_VOTES_PER_MINUTE", cls.votes_per_minute),
            address_votes_per_minute=_limit(
                env, "TITLE_DPO_ADDRESS_VOTES_PER_MINUTE", cls.address_votes_per_minute
            ),
            new_voters_per_hour=_limit(
                env, "TITLE_DPO_NEW_VOTERS_PER_HOUR", cls.new_voters_per_hour
            ),
            burst_voters_per_minute=_limit(
                env, "TITLE_DPO_BURST_VOTERS_PER_MINUTE", cls.burst_voters_per_minute
            ),
            generations_per_hour=_limit(
                env, "TITLE_DPO_GENERATIONS_PER_HOUR", cls.generations_per_hour
            ),
            uploads_per_hour=_limit(env, "TITLE_DPO_UPLOADS_PER_HOUR", cls.uploads_per_hour),
            trusted_proxies=_limit(
                env,
                "TITLE_DPO_TRUSTED_PROXIES",
                SPACE_PROXIES if space_id else 0,
                least=0,
            ),
        )

    @property
    def password_required(self) -> bool:
        return self.shared or self.owner_password is not None

    @property
    def addresses_tell_voters_apart(self) -> bool:
        """False under --share with no trusted proxy: every visitor is the tunnel's address."""
        return not (self.shared and self.trusted_proxies == 0)

    @property
    def loopback_is_owner(self) -> bool:
        """Locally and unshared, only the person at the machine can reach the app."""
        return not self.on_space and not self.password_required

    def describe(self) -> str:
        """One line for the log: how the owner is recognised (never the password itself)."""
        if self.on_space:
            who = ", ".join(sorted({self.space_owner or "?", *self.owners}))
            how = f"signed in with Hugging Face as {who} (or a member of {self.space_owner})"
        elif self.loopback_is_owner:
            how = "anyone on this machine (loopback)"
        else:
            how = "whoever enters the owner password"
        if self.on_space and self.owner_password:
            how += ", or whoever enters the owner password"
        voters = "signed-in Hugging Face users" if self.voters_signed_in else "anyone"
        if self.trusted_proxies:
            counted = (
                f"X-Forwarded-For, entry {self.trusted_proxies} from the right "
                f"({self.trusted_proxies} trusted prox{'ies' if self.trusted_proxies > 1 else 'y'})"
            )
        elif self.shared:
            counted = "none: every visitor arrives through the share tunnel, per-address limits off"
        else:
            counted = "the connection's own"
        return f"Owner: {how}. Voters: {voters}. Client address: {counted}."


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as the server can tell."""

    role: str  # OWNER or VOTER
    address: str  # the client address that rate limits count against
    username: str | None = None  # the Hugging Face username, when signed in
    how: str = ""  # why the role: "loopback", "password", "signed in as NAME", ""

    @property
    def is_owner(self) -> bool:
        return self.role == OWNER


@dataclass(frozen=True)
class Voter:
    """Whom a vote is from, as the server's own signature says."""

    id: str
    burst: bool = False  # minted in a burst from one address: its votes are flagged 'burst'


@dataclass(frozen=True)
class RequestFacts:
    """What a request says about its sender: no web framework types past this point."""

    client_host: str | None
    forwarded_for: str | None = None  # the X-Forwarded-For header
    session: str | None = None  # one browser page's session (Gradio's session hash)
    username: str | None = None  # from the OAuth profile the server keeps, never the client
    orgs: tuple[str, ...] = ()


class Gatekeeper:
    """Resolves each request's role, checks it, issues and checks voter ids, and rate-limits."""

    def __init__(
        self, settings: AccessSettings, secret: bytes, log: LimitLog | None = None
    ) -> None:
        """`log`: where the limits' counts are kept across restarts (none: in memory)."""
        if len(secret) < 16:
            raise UserError("the signing secret must be at least 16 bytes")
        self.settings = settings
        self.voters_may_generate = settings.voters_may_generate
        self._secret = secret
        self._unlocked: set[str] = set()  # sessions that entered the owner password
        self._lock = threading.Lock()
        self._votes = RateLimiter(settings.votes_per_minute, 60, log, "votes")
        self._address_votes = RateLimiter(
            settings.address_votes_per_minute, 60, log, "address_votes"
        )
        self._new_voters = RateLimiter(settings.new_voters_per_hour, 3600, log, "new_voters")
        self._unmarked_voters = RateLimiter(
            settings.burst_voters_per_minute, 60, log, "unmarked_voters"
        )
        self._sign_ins = RateLimiter(settings.sign_ins_per_hour, 3600, log, "sign_ins")
        self._uploads = RateLimiter(settings.uploads_per_hour, 3600, log, "uploads")
        self._generations = RateLimiter(settings.generations_per_hour, 3600, log, "generations")

    @classmethod
    def for_folder(cls, settings: AccessSettings, folder: str | Path) -> Gatekeeper:
        """The app's gatekeeper: its secret and its limits' counts kept in `folder`."""
        if settings.on_space and not os.environ.get("TITLE_DPO_SECRET"):
            log.warning("TITLE_DPO_SECRET is not set: voter ids will not survive a Space restart")
        return cls(settings, load_secret(folder), LimitLog.in_folder(folder))

    # -- roles --------------------------------------------------------------------------------

    def caller(self, facts: RequestFacts) -> Caller:
        s = self.settings
        address = self.address(facts)
        name = facts.username
        if name and (
            name == s.space_owner or name in s.owners or (s.space_owner or "") in facts.orgs
        ):
            return Caller(OWNER, address, name, f"signed in as {name}")
        if facts.session and facts.session in self._unlocked:
            return Caller(OWNER, address, name, "password")
        if s.loopback_is_owner and _is_loopback(facts.client_host):
            return Caller(OWNER, address, name, "loopback")
        return Caller(VOTER, address, name)

    def address(self, facts: RequestFacts) -> str:
        """The address limits count against (the module's docstring says which). A request
        with fewer X-Forwarded-For entries than trusted proxies did not come through them
        all: its connection's address counts."""
        hops = self.settings.trusted_proxies
        seen = [entry.strip() for entry in (facts.forwarded_for or "").split(",")]
        if hops and len(seen) >= hops and seen[-hops]:
            return seen[-hops]
        return facts.client_host or "unknown"

    def allows(self, caller: Caller, role: str) -> bool:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if caller.is_owner or role in OPEN_ROLES:
            return True
        return role == "generate" and self.voters_may_generate

    def require(self, caller: Caller, role: str) -> None:
        if not self.allows(caller, role):
            if role == "generate":
                raise Refused("Generate is for the owner here: it is not open to voters")
            raise Refused(OWNER_ONLY + self._how_to_become_owner())

    def _how_to_become_owner(self) -> str:
        if self.settings.on_space:
            password = ", or enter the owner password" if self.settings.owner_password else ""
            return f" (sign in with Hugging Face as the Space's owner{password})"
        if self.settings.password_required:
            return " (enter the owner password under 'Owner sign-in')"
        return ""

    def sign_in(self, facts: RequestFacts, password: str | None) -> tuple[Caller, str]:
        """Check the owner password for this page: (the caller, now the owner; a pass the
        browser keeps so that its next pages need no password for OWNER_PASS_HOURS). The
        password itself is never kept."""
        expected = self.settings.owner_password
        if expected is None:
            raise Refused("there is no owner password to enter here")
        if not facts.session:
            raise Refused("signing in needs a browser session")
        address = self.address(facts)
        if not self._sign_ins.admit(address):
            raise Refused("too many password attempts from your address: try again in an hour")
        if not hmac.compare_digest((password or "").encode(), expected.encode()):
            raise Refused("wrong owner password")
        self._unlock(facts.session)
        expires = int(time.time() + OWNER_PASS_HOURS * 3600)
        return self.caller(facts), f"{expires}.{self._pass_signature(expires)}"

    def resume(self, facts: RequestFacts, owner_pass: str | None) -> Caller:
        """The caller of a page that opens; a valid owner pass from an earlier sign-in in this
        browser makes this page the owner's too. A forged, expired or old pass (the password
        or the secret changed since) is ignored."""
        expires, _, signature = (owner_pass or "").partition(".")
        if (
            facts.session
            and self.settings.owner_password is not None
            and expires.isdigit()
            and int(expires) > time.time()
            and _same(signature, self._pass_signature(int(expires)))
        ):
            self._unlock(facts.session)
        return self.caller(facts)

    def sign_out(self, facts: RequestFacts) -> Caller:
        """This page is no longer the owner's by the password (the browser drops its pass, so
        its next pages are not either). Other pages that already hold the pass stay the owner's
        until they close; changing the password voids every pass."""
        with self._lock:
            self._unlocked.discard(facts.session or "")
        return self.caller(facts)

    def _unlock(self, session: str) -> None:
        with self._lock:
            self._unlocked.add(session)

    def _pass_signature(self, expires: int) -> str:
        # Bound to the password: changing it voids every pass already handed out.
        password = hashlib.sha256((self.settings.owner_password or "").encode()).hexdigest()
        return self._mac(f"owner:{expires}:{password}")

    def _mac(self, message: str) -> str:
        """A short HMAC-SHA256 of `message` with the app's secret, URL-safe."""
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")

    # -- voter ids ----------------------------------------------------------------------------

    def voter_for_page(self, caller: Caller, token: str | None) -> tuple[str, str]:
        """(the token the browser keeps, the voter id votes are stored under) for a page that
        opens. A signed-in voter is their username; a valid token is kept; anything else
        (none yet, or one this app did not sign) gets a new id, within the per-address limit,
        marked 'burst' past `burst_voters_per_minute` new ids from its address in a minute."""
        if self.settings.voters_signed_in:
            return "", self.signed_in_voter(caller)
        if token:
            try:
                return token, self.voter_id(token)
            except Refused:
                pass  # an id from before a secret change, or tampered: start afresh
        limited = not caller.is_owner and self.settings.addresses_tell_voters_apart
        if limited and not self._new_voters.admit(caller.address):
            raise Refused(
                "too many new voters from your address this hour: come back later (your "
                "votes so far are kept)"
            )
        burst = limited and not self._unmarked_voters.admit(caller.address)
        voter = VOTER_PREFIX + secrets.token_hex(8)
        if burst:
            return f"{voter}.{BURST_MARK}.{self._mac(f'voter:{voter}:{BURST_MARK}')}", voter
        return f"{voter}.{self._mac(f'voter:{voter}')}", voter

    def voter_id(self, token: str | None) -> str:
        """The voter id inside a signed token; a forged or tampered token is refused."""
        return self.read_token(token).id

    def read_token(self, token: str | None) -> Voter:
        """The voter a signed token names, with its mark: `id.signature`, or for a voter
        minted in a burst `id.burst.signature` (the mark is signed too, so it cannot be
        dropped). A forged or tampered token is refused."""
        if not isinstance(token, str):  # the vote events hand it over as the page sent it
            token = ""
        voter, _, rest = token.partition(".")
        mark, _, signature = rest.rpartition(".")
        message = f"voter:{voter}:{mark}" if mark else f"voter:{voter}"
        if (
            not voter.startswith(VOTER_PREFIX)
            or mark not in ("", BURST_MARK)
            or not _same(signature, self._mac(message))
        ):
            raise Refused("this voter id was not issued by this app: reload the page to get one")
        return Voter(voter, burst=bool(mark))

    def signed_in_voter(self, caller: Caller) -> str:
        if not caller.username:
            raise Refused("sign in with Hugging Face to vote (one vote per person per pair)")
        return SIGNED_IN_PREFIX + caller.username

    def voter_of(self, caller: Caller, token: str | None) -> Voter:
        """Who a vote is from: the signed-in username, or the voter in a signed token."""
        if self.settings.voters_signed_in:
            return Voter(self.signed_in_voter(caller))
        return self.read_token(token)

    def admit_vote(self, caller: Caller, voter: str, now: float | None = None) -> None:
        """Count a vote against its voter's and its address's limits; over either, refused.
        The owner is not limited."""
        if caller.is_owner:
            return
        if not self._votes.admit(voter, now):
            raise Refused("you are voting faster than anyone can read: wait a minute, then go on")
        if self.settings.addresses_tell_voters_apart and not self._address_votes.admit(
            caller.address, now
        ):
            raise Refused("too many votes from your address this minute: wait, then go on")

    def admit_generation(self, caller: Caller, now: float | None = None) -> None:
        """A voter's Generate call (the owner opened Generate to voters) counts against its
        address's limit, which holds a script to a person's use of the model. Under --share
        with no trusted proxy every voter has one address: off there, as the votes' are (the
        one model writes for one caller at a time anyway). The owner is not limited."""
        if caller.is_owner or not self.settings.addresses_tell_voters_apart:
            return
        if not self._generations.admit(caller.address, now):
            raise TooMany(
                f"too many titles asked for from your address: at most "
                f"{self.settings.generations_per_hour} times an hour; try again later"
            )

    def admit_upload(self, caller: Caller, now: float | None = None) -> None:
        """A file sent to the server's upload route (anyone's page can reach it): the owner's
        is admitted; a voter never needs to upload, so a voter's is refused. But a page signed
        in by password is told from a voter's only by its events, and an upload carries no
        page: where there is a password, a caller not otherwise the owner may upload
        `uploads_per_hour` files an hour per address, which bounds what a script can leave
        on the disk."""
        if caller.is_owner:
            return
        if self.settings.owner_password is None:
            raise Refused(OWNER_ONLY + self._how_to_become_owner())
        if not self._uploads.admit(caller.address, now):
            raise TooMany(
                f"too many files uploaded from your address: at most "
                f"{self.settings.uploads_per_hour} an hour; try again later"
            )


def keep_server_from_trusting_forwarded_headers() -> None:
    """Before the server starts: uvicorn would replace a loopback client's address with
    whatever its X-Forwarded-For claims (a local script, or anyone through the --share
    tunnel). The app reads that header itself, trusting only the proxies it is told of."""
    os.environ["FORWARDED_ALLOW_IPS"] = ""


def load_secret(folder: str | Path, environ: Mapping[str, str] | None = None) -> bytes:
    """TITLE_DPO_SECRET, else the app's own key in `folder/secret.key` (made on first use,
    readable by its owner only)."""
    env = os.environ if environ is None else environ
    given = env.get("TITLE_DPO_SECRET")
    if given:
        if len(given) < 16:
            raise UserError("TITLE_DPO_SECRET must be at least 16 characters")
        return given.encode()
    path = Path(folder) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then linked into place: another process never reads half a key,
        # and if one got there first, its key is the one everybody reads.
        draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
        draft.write_text(secrets.token_hex(32))
        draft.chmod(0o600)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    value = path.read_text().strip()
    if len(value) < 32:
        raise UserError(f"{path} is not a signing key: delete it and start the app again")
    return value.encode()


def _same(given: str, expected: str) -> bool:
    """Compare signatures in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _limit(env: Mapping[str, str], name: str, default: int, least: int = 1) -> int:
    value = env.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"{name} must be a whole number, not {value!r}") from None
    if number < least:
        raise UserError(f"{name} must be at least {least}, not {number}")
    return number
