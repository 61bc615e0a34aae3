"""The sender's side of the portal (`/sent/`, issue 19): sign-in with password and
authenticator, enrolled through a one-time invitation (`/sent/invite/<token>`); the sender's own
messages with their read status per recipient; withdrawing a message or one recipient's link and
setting its expiry, each after a confirmation.

Sessions are passes (security.py) of their own scope, "sent", so they never open a recipient's
link and the recipient side's sessions never open these pages; a verified pass carries the
signed-in address in its nonce (the pass is signed whole) and the account's session generation.
Every request checks the account is still an active sender account of that generation, so
disabling it, signing out and a new enrolment end its sessions, wherever their cookies went.
A message that is not the signed-in sender's is a 404, as one that does not exist: nothing
tells them apart.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zivmilter import crypto, defaults
from zivmilter.core.addresses import normalize_address
from zivmilter.errors import MessageError
from zivmilter.i18n import zone
from zivmilter.portal import accounts, verify
from zivmilter.portal.context import Portal, timestamp, trusted_markup
from zivmilter.portal.i18n import minutes
from zivmilter.portal.pages import link_token, small_form
from zivmilter.portal.security import Pass, Stage, enrolment_secret
from zivmilter.store import LinkState, MessageRecord, RecipientRecord

SCOPE = "sent"
INVITE_SCOPE = "sentinvite"
_REVOKED_BY = "revoked by the sender in the portal"


# -- what the pages show (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class RecipientRow:
    address: str
    delivery: str  # "notification" or "direct"
    method: str
    level: str
    notified_at: datetime | None
    opened_at: datetime | None  # a direct delivery: at sending
    failed_attempts: int
    locked: bool
    state: str | None  # "revoked", "expired" or None

    @property
    def revocable(self) -> bool:
        return self.delivery == "notification" and self.state is None


@dataclass(frozen=True)
class MessageRow:
    id: str
    subject: str | None  # None once withdrawn
    created_at: datetime
    expires_at: datetime | None
    state: str | None
    recipients: list[RecipientRow]

    @property
    def all_direct(self) -> bool:
        return all(r.delivery == "direct" for r in self.recipients)

    @property
    def revocable(self) -> bool:
        return any(r.revocable for r in self.recipients)


def message_row(
    message: MessageRecord, recipients: list[tuple[RecipientRecord, LinkState | None]], now: float
) -> MessageRow:
    """The sent-items view of one message: what `zivmilter status` says, per recipient."""
    expired = message.expires_at is not None and message.expires_at.timestamp() <= now
    state = "revoked" if message.revoked_at else "expired" if expired else None
    rows = []
    for r, link in recipients:
        direct = r.delivery == "direct"
        own = "revoked" if link is not None and link.revoked_at is not None else None
        rows.append(
            RecipientRow(
                address=r.address,
                delivery=r.delivery,
                method=r.method if direct else (r.verification or r.method),
                level=r.level or "",
                notified_at=r.notified_at,
                opened_at=message.created_at if direct else r.opened_at,
                failed_attempts=r.failed_attempts,
                locked=r.locked_until is not None and r.locked_until.timestamp() > now,
                state=None if direct else (state or own),
            )
        )
    m = message
    return MessageRow(m.id, m.subject, m.created_at, m.expires_at, state, rows)


_FIELD = "%Y-%m-%dT%H:%M"  # an <input type="datetime-local">'s value


def parse_expiry(
    text: str, now: float, zone_name: str = defaults.TIMEZONE
) -> tuple[datetime | None, str | None]:
    """A `datetime-local` value, a wall-clock time in `zone_name` (organization.timezone, as
    every time on these pages): the moment (in UTC), or an error.

    Where the zone's clocks change, zoneinfo's fold=0 decides: an hour that comes twice (clocks
    back) is its first time, the earlier moment (still summer time); an hour that never comes
    (clocks forward) is read with the offset from before the change, so 02:30 on that day is
    03:30 summer time. The confirmation shows the moment so resolved, with its zone."""
    try:
        local = datetime.strptime(text.strip(), _FIELD)
    except ValueError:
        return None, "sent_expiry_bad"
    when = local.replace(tzinfo=zone(zone_name), fold=0).astimezone(UTC)
    if when.timestamp() <= now:
        return None, "sent_expiry_past"
    return when, None


def expiry_field(when: datetime, zone_name: str = defaults.TIMEZONE) -> str:
    """A moment as the expiry field shows it: a wall-clock time in `zone_name`."""
    return when.astimezone(zone(zone_name)).strftime(_FIELD)


# -- sessions ------------------------------------------------------------------------------


def _session_pass(address: str, now: float, lifetime: int, gen: int) -> Pass:
    tag = base64.urlsafe_b64encode(address.encode()).decode("ascii").rstrip("=")
    nonce = f"{secrets.token_urlsafe(12)}.{tag}"
    return Pass(SCOPE, Stage.VERIFIED, int(now) + lifetime, nonce, gen=gen)


def _pass_address(p: Pass) -> str | None:
    _, _, tag = p.nonce.partition(".")
    try:
        return base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


@functools.cache
def _decoy_hash() -> str:
    """Checked for an unknown address, so a sign-in takes as long as one of a real account."""
    return accounts.hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class _Who:
    p: Pass
    address: str
    lang: str


class SentPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.home = portal.root + "/sent/"

    # -- sign-in -------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return await run_in_threadpool(self._index, request)

    def _index(self, request: Request) -> Response:
        who = self._who(request)
        if who is None:
            return self._sign_in_page(request)
        return self._list_page(request, who)

    def _sign_in_page(
        self, request: Request, error: str | None = None, status: int = 200, **fmt: str
    ) -> Response:
        portal = self.portal
        p = portal.get_pass(request, SCOPE)
        fresh = p is None or p.stage is Stage.VERIFIED  # a stale session gets a new form pass
        if fresh:
            p = portal.new_pass(SCOPE, Stage.LINK)
        assert p is not None
        refused = request.query_params.get("refused")
        if error is None and refused == "wrong":
            error, status = "sent_wrong", 401
        lang = portal.language(request)
        if error is None and refused and refused.isdigit():
            error, status, fmt = "sent_locked", 429, {"minutes": minutes(lang, int(refused))}
        response = portal.page(
            request, "sent_signin.html",
            {"csrf_signin": portal.csrf(p, "signin"), "error": error, "fmt": fmt},
            lang=lang, here=self.home, status=status,
        )  # fmt: skip
        if fresh:
            portal.give_pass(response, p)
        return response

    async def sign_in(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "address", "password", "totp")
        return await run_in_threadpool(self._sign_in, request, fields)

    def _sign_in(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        p = portal.get_pass(request, SCOPE)
        if p is None or not portal.form_allowed(request, p, "signin", fields["csrf"]):
            lang = portal.language(request)
            return portal.notice(
                request, "csrf", lang=lang, here=self.home, status=403, kind="error"
            )
        try:
            address = normalize_address(fields["address"])
        except MessageError:
            return RedirectResponse(self.home + "?refused=wrong", status_code=303)
        attempt = portal.store.claim_sign_in(address, verify.lockout_seconds, "sent items")
        if not attempt.admitted:
            return self._locked(attempt.locked_until)
        ok = self._credentials_ok(address, fields["password"], fields["totp"])
        until = portal.store.settle_sign_in(attempt, ok)
        if not ok:
            if until is not None:
                return self._locked(until)
            return RedirectResponse(self.home + "?refused=wrong", status_code=303)
        return self._signed_in(address)

    def _credentials_ok(self, address: str, password: str, totp: str) -> bool:
        store = self.portal.store
        decoy = _decoy_hash()  # made by the process's first sign-in, whoever's: no tell either
        account = store.account(address)
        sender = account is not None and account.kind == "sender" and account.active
        stored = account.password_hash if account is not None and sender else None
        if not accounts.password_valid(stored or decoy, password) or not stored:
            return False
        secret = store.totp_secret(address)
        step = None if secret is None else verify.totp_step(secret, totp, self.portal.now())
        # a code works once: replaying it (or an older one) within its window fails
        return step is not None and store.use_totp_step(address, step)

    def _locked(self, until: datetime | None) -> Response:
        seconds = verify.locked(until, self.portal.now())
        minutes = max(1, math.ceil(seconds / 60))
        return RedirectResponse(f"{self.home}?refused={minutes}", status_code=303)

    def _signed_in(self, address: str) -> Response:
        portal = self.portal
        response = RedirectResponse(self.home, status_code=303)
        account = portal.store.account(address)
        gen = account.session_gen if account is not None else 0
        p = _session_pass(address, portal.now(), portal.cfg.portal.session_seconds, gen)
        portal.give_pass(response, p)
        return response

    async def sign_out(self, request: Request) -> Response:
        fields = await small_form(request, "csrf")
        return await run_in_threadpool(self._sign_out, request, fields)

    def _sign_out(self, request: Request, fields: dict[str, str]) -> Response:
        who, error = self._form(request, "signout", fields)
        if who is None:
            return error
        # Server-side too: a copy of this cookie (another tab, another device) ends with it.
        self.portal.store.end_account_sessions(who.address, "signed out of the sent items")
        response = RedirectResponse(self.home, status_code=303)
        self.portal.drop_pass(response, SCOPE)
        return response

    # -- sent items ----------------------------------------------------------------------

    def _list_page(self, request: Request, who: _Who) -> Response:
        portal = self.portal
        query = request.query_params.get("q", "")[:200]
        page_text = request.query_params.get("page", "1")
        page = int(page_text) if page_text.isdigit() and 0 < int(page_text) < 10**6 else 1
        size = defaults.SENT_PAGE_SIZE
        found = portal.store.sent_messages([who.address], query, (page - 1) * size, size)
        pages = max(1, math.ceil(found.total / size))
        values = {
            "messages": [self._row(m) for m in found.messages],
            "total": found.total,
            "query": query,
            "page": page,
            "pages": pages,
            "address": who.address,
            "csrf_signout": portal.csrf(who.p, "signout"),
        }
        return portal.page(request, "sent_list.html", values, lang=who.lang, here=self.home)

    def _row(self, message: MessageRecord) -> MessageRow:
        store = self.portal.store
        pairs = [(r, store.link_state(r.id)) for r in store.recipients(message.id)]
        return message_row(message, pairs, self.portal.now())

    async def message(self, request: Request) -> Response:
        return await run_in_threadpool(self._message, request)

    def _message(self, request: Request) -> Response:
        who, message, error = self._owned(request)
        if who is None or message is None:
            return error
        done = request.query_params.get("done", "")
        notice = {"revoked": "sent_done_revoked", "expiry": "sent_done_expiry"}.get(done)
        recipient = request.query_params.get("recipient", "")
        if done == "revoked" and recipient:
            notice = "sent_done_revoked_recipient"
        return self._message_page(request, who, message, notice=notice, recipient=recipient)

    def _message_page(
        self,
        request: Request,
        who: _Who,
        message: MessageRecord,
        *,
        notice: str | None = None,
        error: str | None = None,
        status: int = 200,
        recipient: str = "",
    ) -> Response:
        portal = self.portal
        values = {
            "m": self._row(message),
            "notice": notice,
            "error": error,
            "recipient": recipient,
            "address": who.address,
            "csrf_signout": portal.csrf(who.p, "signout"),
        }
        here = self._here(message.id)
        return portal.page(
            request, "sent_message.html", values, lang=who.lang, here=here, status=status
        )

    # -- withdrawing and expiry ----------------------------------------------------------

    async def confirm_revoke(self, request: Request) -> Response:
        return await run_in_threadpool(self._confirm_revoke, request)

    def _confirm_revoke(self, request: Request) -> Response:
        who, message, error = self._owned(request)
        if who is None or message is None:
            return error
        recipient = request.query_params.get("recipient", "")
        return self._confirm_page(request, who, message, "revoke", recipient=recipient)

    async def revoke(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "recipient")
        return await run_in_threadpool(self._revoke, request, fields)

    def _revoke(self, request: Request, fields: dict[str, str]) -> Response:
        who, message, error = self._owned(request, "revoke", fields)
        if who is None or message is None:
            return error
        store, recipient = self.portal.store, fields["recipient"]
        if recipient:
            try:
                done = store.revoke_recipient(message.id, recipient, _REVOKED_BY)
            except MessageError:  # a forged or damaged form: no such recipient to withdraw
                done = False
        else:
            # only what the confirmation offers (a form posted anyway, too): a message without
            # an open notification link has nothing to withdraw (a direct delivery, SPEC 8)
            done = self._row(message).revocable and store.revoke(message.id, _REVOKED_BY)
        if not done:
            return self._message_page(request, who, message, error="sent_nothing", status=409)
        target = self._here(message.id) + "?done=revoked"
        if recipient:
            target += "&recipient=" + _query_value(recipient)
        return RedirectResponse(target, status_code=303)

    async def expiry_form(self, request: Request) -> Response:
        return await run_in_threadpool(self._expiry_form, request)

    def _expiry_form(self, request: Request) -> Response:
        who, message, error = self._owned(request)
        if who is None or message is None:
            return error
        return self._confirm_page(request, who, message, "expiry")

    async def expiry(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "expires", "confirm")
        return await run_in_threadpool(self._expiry, request, fields)

    def _expiry(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        who, message, error = self._owned(request, "expiry", fields)
        if who is None or message is None:
            return error
        when, problem = parse_expiry(
            fields["expires"], portal.now(), portal.cfg.organization.timezone
        )
        if when is None:
            return self._confirm_page(
                request, who, message, "expiry", error=problem, status=400,
                expires=fields["expires"],
            )  # fmt: skip
        if fields["confirm"] != "1":  # the chosen moment, to confirm
            return self._confirm_page(
                request, who, message, "expiry", expires=fields["expires"], when=when
            )
        if not portal.store.set_expiry(message.id, when, "set by the sender in the portal"):
            return self._message_page(
                request, who, message, error="sent_expiry_refused", status=409
            )
        return RedirectResponse(self._here(message.id) + "?done=expiry", status_code=303)

    def _confirm_page(
        self,
        request: Request,
        who: _Who,
        message: MessageRecord,
        action: str,
        *,
        recipient: str = "",
        expires: str = "",
        when: datetime | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        portal = self.portal
        row = self._row(message)
        if action == "revoke":
            # only what can be withdrawn is offered: the rest says why on the message page
            ok = row.revocable and (
                not recipient or any(r.address == recipient and r.revocable for r in row.recipients)
            )
        else:
            ok = row.revocable
        if not ok:
            return RedirectResponse(self._here(message.id), status_code=303)
        current = message.expires_at or datetime.fromtimestamp(portal.now(), UTC)
        values = {
            "m": row,
            "action": action,
            "recipient": recipient,
            "expires": expires or expiry_field(current, portal.cfg.organization.timezone),
            "when": timestamp(when, who.lang, portal.cfg.organization.timezone) if when else "",
            "error": error,
            "csrf_action": portal.csrf(who.p, action),
            "address": who.address,
            "csrf_signout": portal.csrf(who.p, "signout"),
        }
        here = self._here(message.id)
        return portal.page(
            request, "sent_confirm.html", values, lang=who.lang, here=here, status=status
        )

    # -- enrolment through an invitation -------------------------------------------------

    async def open_invite(self, request: Request) -> Response:
        return await run_in_threadpool(self._open_invite, request)

    def _open_invite(self, request: Request) -> Response:
        """Trade the token for a pass and move on, as a personal link does: the token leaves
        the address bar, the history and any Referer."""
        portal = self.portal
        token = link_token(request)
        digest = crypto.token_hash(token) if token else ""
        lang = portal.language(request)
        if not token or portal.store.invite_address(digest) is None:
            return self._invite_invalid(request, lang)
        here = self.home + "invite/"
        response = portal.page(
            request, "open.html", {"next": here, "referrer": "no-referrer"}, lang=lang, here=here,
            headers={"referrer-policy": "no-referrer"},
        )  # fmt: skip
        p = Pass.new(INVITE_SCOPE, Stage.LINK, portal.now(), defaults.PORTAL_LINK_SECONDS)
        portal.give_pass(response, Pass(p.scope, p.stage, p.expires, f"{p.nonce}.{digest}"))
        return response

    async def invite(self, request: Request) -> Response:
        return await run_in_threadpool(self._invite, request)

    def _invite(self, request: Request) -> Response:
        ctx = self._invite_context(request)
        if isinstance(ctx, Response):
            return ctx
        refused = request.query_params.get("refused")
        error, status = ("wrong_code", 401) if refused == "wrong_code" else (None, 200)
        return self._invite_page(request, *ctx, error=error, status=status)

    async def enrol(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "password", "password2", "totp")
        return await run_in_threadpool(self._enrol, request, fields)

    def _enrol(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        ctx = self._invite_context(request)
        if isinstance(ctx, Response):
            return ctx
        p, digest, address, lang = ctx
        if not portal.form_allowed(request, p, "invite", fields["csrf"]):
            return portal.notice(
                request, "csrf", lang=lang, here=self.home + "invite/", status=403, kind="error"
            )
        password = fields["password"]
        if len(password) < accounts.MIN_PASSWORD_LENGTH:
            return self._invite_page(
                request, p, digest, address, lang, error="sent_password_short", status=400,
                length=str(accounts.MIN_PASSWORD_LENGTH),
            )  # fmt: skip
        if password != fields["password2"]:
            return self._invite_page(
                request, p, digest, address, lang, error="sent_password_differs", status=400
            )
        secret = enrolment_secret(portal.keys, p, verify.OTP_SECRET_BYTES)
        step = verify.totp_step(secret, fields["totp"], portal.now())
        if step is None:
            return RedirectResponse(self.home + "invite/?refused=wrong_code", status_code=303)
        hashed = accounts.hash_password(password)
        if portal.store.redeem_invite(digest, hashed, secret, step) is None:
            return self._invite_invalid(request, lang)
        response = self._signed_in(address)
        portal.drop_pass(response, INVITE_SCOPE)
        return response

    def _invite_context(self, request: Request) -> tuple[Pass, str, str, str] | Response:
        portal = self.portal
        lang = portal.language(request)
        p = portal.get_pass(request, INVITE_SCOPE)
        digest = p.nonce.partition(".")[2] if p is not None else ""
        address = portal.store.invite_address(digest) if digest else None
        if p is None or address is None:
            return self._invite_invalid(request, lang)
        return p, digest, address, lang

    def _invite_page(
        self,
        request: Request,
        p: Pass,
        digest: str,
        address: str,
        lang: str,
        *,
        error: str | None = None,
        status: int = 200,
        **fmt: str,
    ) -> Response:
        portal = self.portal
        secret = enrolment_secret(portal.keys, p, verify.OTP_SECRET_BYTES)
        uri = accounts.enrolment_uri(secret, address, portal.org_name)
        text = base64.b32encode(secret).decode("ascii").rstrip("=")
        values = {
            "qr": trusted_markup(accounts.qr_svg(uri)),
            "secret_text": " ".join(text[i : i + 4] for i in range(0, len(text), 4)),
            "csrf_invite": portal.csrf(p, "invite"),
            "address": address,
            "error": error,
            "fmt": fmt,
        }
        return portal.page(
            request, "sent_enrol.html", values, lang=lang, here=self.home + "invite/",
            status=status,
        )  # fmt: skip

    def _invite_invalid(self, request: Request, lang: str) -> Response:
        return self.portal.notice(
            request, "invite_invalid", lang=lang, here=self.home, status=404, kind="error"
        )

    # -- helpers -------------------------------------------------------------------------

    def _here(self, message_id: str) -> str:
        return f"{self.home}m/{message_id}/"

    def _who(self, request: Request) -> _Who | None:
        """The signed-in sender, while the account is an active sender account and its
        sessions were not ended since the pass was issued (sign-out, a new enrolment)."""
        portal = self.portal
        p = portal.get_pass(request, SCOPE)
        if p is None or p.stage is not Stage.VERIFIED:
            return None
        address = _pass_address(p)
        account = portal.store.account(address) if address else None
        if address is None or account is None or account.kind != "sender" or not account.active:
            return None
        if account.session_gen != p.gen:
            return None
        return _Who(p, address, portal.language(request, address))

    def _form(
        self, request: Request, form: str, fields: dict[str, str]
    ) -> tuple[_Who | None, Response]:
        portal = self.portal
        who = self._who(request)
        lang = portal.language(request)
        if who is None:
            return None, RedirectResponse(self.home, status_code=303)
        if not portal.form_allowed(request, who.p, form, fields["csrf"]):
            portal.store.record_event("csrf-refused", None, who.address, f"sent items: {form}")
            return None, portal.notice(
                request, "csrf", lang=lang, here=self.home, status=403, kind="error"
            )
        return who, Response()

    def _owned(
        self, request: Request, form: str | None = None, fields: dict[str, str] | None = None
    ) -> tuple[_Who | None, MessageRecord | None, Response]:
        """The signed-in sender and their message of the URL. Anyone else's (or none) is a 404,
        checked before the form's CSRF token, so that no answer reveals whether it exists."""
        portal = self.portal
        who = self._who(request)
        if who is None:
            return None, None, RedirectResponse(self.home, status_code=303)
        message = portal.store.message(str(request.path_params["mid"]))
        if message is None or message.sender != who.address:
            return (
                who,
                None,
                portal.notice(
                    request, "not_found", lang=who.lang, here=self.home, status=404, kind="error"
                ),
            )
        if form is not None and fields is not None:
            checked, error = self._form(request, form, fields)
            if checked is None:
                return None, None, error
        return who, message, Response()


def _query_value(text: str) -> str:
    return quote(text, safe="@")


__all__ = ["INVITE_SCOPE", "SCOPE", "MessageRow", "RecipientRow", "SentPages", "message_row"]
