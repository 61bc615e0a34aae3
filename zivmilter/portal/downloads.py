"""Secure download links for large attachments of direct-delivered messages (SPEC 5).

The gateway keeps such an attachment in the store (`Store.save_attachment`) and puts its link
`<base_url>/d/<token>` in the direct copy instead. One copy may go to several recipients, so the
link is not personal: the visitor says which recipient they are, then proves it by signing in
(recipients with an account and authenticator) or with a code sent to that address. Then the
file streams out of the store as it is decrypted, never whole in memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from ..addresses import normalize_address
from ..errors import MessageError, StoreError
from ..store import AttachmentRecord, RecipientRecord
from . import flows, verify
from .app import Portal
from .security import Pass, Stage

log = logging.getLogger("zivmilter.portal")

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_AID = re.compile(r"^[0-9a-f]{32}$")
_SMALL_FORM = {"max_files": 0, "max_fields": 10, "max_part_size": 8192}
_CHUNK = 64 * 1024
_NOBODY = -1  # `who` of a visitor whose address is not a recipient: every answer is wrong


@dataclass(frozen=True)
class _Ctx:
    p: Pass
    att: AttachmentRecord
    lang: str
    here: str


class DownloadPages:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    async def open_link(self, request: Request) -> Response:
        return await run_in_threadpool(self._open_link, request)

    def _open_link(self, request: Request) -> Response:
        portal = self.portal
        token = request.path_params["token"]
        att = portal.store.find_attachment_by_token(token) if _TOKEN.match(token) else None
        lang = portal.language(request)
        if att is None:
            return portal.notice(
                request, "unknown_link", lang=lang, here=portal.root + "/", status=404, kind="error"
            )
        here = self._here(att.id)
        response = portal.page(
            request, "open.html", {"next": here, "referrer": "no-referrer"}, lang=lang, here=here,
            headers={"referrer-policy": "no-referrer"},  # the URL of this page is the token
        )  # fmt: skip
        current = portal.get_pass(request, _scope(att.id))
        if current is None or current.stage is not Stage.VERIFIED:
            portal.give_pass(response, portal.new_pass(_scope(att.id), Stage.LINK))
        return response

    async def view(self, request: Request) -> Response:
        return await run_in_threadpool(self._view, request)

    def _view(self, request: Request) -> Response:
        ctx, error = self._context(request, Stage.LINK)
        if ctx is None:
            return error
        notice = "code_sent" if request.query_params.get("sent") == "1" else None
        return self._page(request, ctx, notice=notice)

    async def start(self, request: Request) -> Response:
        form = await request.form(**_SMALL_FORM)
        fields = {k: _field(form, k) for k in ("csrf", "address")}
        return await run_in_threadpool(self._start, request, fields)

    def _start(self, request: Request, fields: dict[str, str]) -> Response:
        """The visitor says who they are; nothing tells them whether that address is a
        recipient (the code simply never comes)."""
        portal = self.portal
        ctx, error = self._context(request, Stage.LINK)
        if ctx is None:
            return error
        if not portal.form_allowed(request, ctx.p, "start", fields["csrf"]):
            return self._csrf_refused(request, ctx)
        try:
            address = normalize_address(fields["address"])
        except MessageError:
            return self._page(request, ctx, error="bad_address", status=400)
        found = [
            r
            for r in portal.store.recipients(ctx.att.message.id)
            if r.address == address and r.delivery == "direct"
        ]
        who = found[0].id if found else _NOBODY
        portal.store.record_event(
            "attachment-claimed", ctx.att.message.id, address, "recipient" if found else "unknown"
        )
        response = RedirectResponse(ctx.here, status_code=303)
        portal.give_pass(response, portal.new_pass(ctx.p.scope, Stage.LINK, who))
        return response

    async def send_code(self, request: Request) -> Response:
        form = await request.form(**_SMALL_FORM)
        return await run_in_threadpool(self._send_code, request, _field(form, "csrf"))

    def _send_code(self, request: Request, token: str) -> Response:
        portal = self.portal
        ctx, error = self._context(request, Stage.LINK)
        if ctx is None:
            return error
        if not portal.form_allowed(request, ctx.p, "send", token):
            return self._csrf_refused(request, ctx)
        rec = self._claimed(ctx)
        if rec is None:  # not a recipient: behave as if a code went out
            return RedirectResponse(ctx.here + "?sent=1", status_code=303)
        if verify.locked(rec.locked_until, portal.now()):
            return self._page(request, ctx, status=429)
        result = flows.send_code(portal, rec, "email", ctx.lang)
        if result.outcome is flows.Sent.SENT:
            return RedirectResponse(ctx.here + "?sent=1", status_code=303)
        if result.outcome is flows.Sent.WAIT:
            return self._page(request, ctx, error="code_wait", status=429, seconds=str(result.wait))
        if result.outcome is flows.Sent.EXHAUSTED:
            return self._page(request, ctx, error="code_exhausted", status=429)
        return self._page(request, ctx, error="code_failed", status=503)

    async def verify(self, request: Request) -> Response:
        form = await request.form(**_SMALL_FORM)
        fields = {k: _field(form, k) for k in ("csrf", "code", "password", "totp")}
        return await run_in_threadpool(self._verify, request, fields)

    def _verify(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        ctx, error = self._context(request, Stage.LINK)
        if ctx is None:
            return error
        if not portal.form_allowed(request, ctx.p, "verify", fields["csrf"]):
            return self._csrf_refused(request, ctx)
        if ctx.p.stage is Stage.VERIFIED:
            return RedirectResponse(ctx.here, status_code=303)
        rec = self._claimed(ctx)
        if rec is None:
            return self._page(request, ctx, error="wrong_code", status=401)
        method = "account" if self._uses_account(rec) else "email"
        result = flows.check_answer(
            portal, rec, method,
            code=fields["code"], password=fields["password"], totp=fields["totp"],
        )  # fmt: skip
        if result.outcome is flows.Answer.OK:
            portal.store.record_event("attachment-verified", ctx.att.message.id, rec.address, "")
            response = RedirectResponse(ctx.here, status_code=303)
            portal.give_pass(response, portal.new_pass(ctx.p.scope, Stage.VERIFIED, rec.id))
            return response
        if result.outcome is flows.Answer.LOCKED:
            return self._page(request, ctx, status=429)
        wrong = "wrong_password" if method == "account" else "wrong_code"
        return self._page(request, ctx, error=wrong, status=401)

    async def file(self, request: Request) -> Response:
        result = await run_in_threadpool(self._file, request)
        if isinstance(result, Response):
            return result
        stream, ctx = result
        att = ctx.att
        return StreamingResponse(
            iterate_in_threadpool(_chunks(stream)),
            media_type=att.content_type,
            headers={
                "content-disposition": content_disposition(att.filename or "attachment"),
                "content-length": str(att.size),
                "content-security-policy": "default-src 'none'; sandbox",
            },
        )

    def _file(self, request: Request) -> Response | tuple[BinaryIO, _Ctx]:
        portal = self.portal
        ctx, error = self._context(request, Stage.VERIFIED)
        if ctx is None:
            return error
        stream = portal.store.open_attachment(ctx.att.id)
        if stream is None:
            return self._gone(request, ctx, "revoked")
        rec = portal.store.recipient(ctx.p.who)
        portal.store.record_event(
            "attachment-downloaded",
            ctx.att.message.id,
            rec.address if rec else None,
            ctx.att.filename or "",
        )
        return stream, ctx

    # -- pages -------------------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        ctx: _Ctx,
        *,
        error: str | None = None,
        notice: str | None = None,
        status: int = 200,
        **fmt: str,
    ) -> Response:
        portal = self.portal
        rec = self._claimed(ctx)
        verified = ctx.p.stage is Stage.VERIFIED
        lock = verify.locked(rec.locked_until, portal.now()) if rec is not None else 0.0
        if lock and status < 400:
            status = 429
        values: dict[str, Any] = {
            "att": ctx.att,
            "verified": verified,
            "claimed": ctx.p.who != 0,
            "use_account": rec is not None and self._uses_account(rec),
            "locked_minutes": int(lock // 60) + 1 if lock else 0,
            "csrf_start": portal.csrf(ctx.p, "start"),
            "csrf_send": portal.csrf(ctx.p, "send"),
            "csrf_verify": portal.csrf(ctx.p, "verify"),
            "error": error,
            "notice": notice,
            "fmt": fmt,
            "sender": ctx.att.message.sender,
        }
        return portal.page(
            request, "download.html", values, lang=ctx.lang, here=ctx.here, status=status
        )

    def _gone(self, request: Request, ctx: _Ctx, reason: str) -> Response:
        response = self.portal.notice(
            request, reason, lang=ctx.lang, here=ctx.here, status=410, kind="error"
        )
        self.portal.drop_pass(response, ctx.p.scope)
        return response

    def _csrf_refused(self, request: Request, ctx: _Ctx) -> Response:
        self.portal.store.record_event("csrf-refused", ctx.att.message.id, None, "download")
        return self.portal.notice(
            request, "csrf", lang=ctx.lang, here=ctx.here, status=403, kind="error"
        )

    # -- helpers -----------------------------------------------------------------------------

    def _here(self, aid: str) -> str:
        return f"{self.portal.root}/a/{aid}/"

    def _claimed(self, ctx: _Ctx) -> RecipientRecord | None:
        if ctx.p.who <= 0:
            return None
        rec = self.portal.store.recipient(ctx.p.who)
        if rec is None or rec.message.id != ctx.att.message.id or rec.delivery != "direct":
            return None
        return rec

    def _uses_account(self, rec: RecipientRecord) -> bool:
        account = self.portal.store.account(rec.address)
        return account is not None and account.active and account.has_totp

    def _context(self, request: Request, need: Stage) -> tuple[_Ctx | None, Response]:
        portal = self.portal
        aid = str(request.path_params["aid"])
        lang = portal.language(request)
        here = self._here(aid)
        p = portal.get_pass(request, _scope(aid)) if _AID.match(aid) else None
        att = portal.store.attachment(aid) if p is not None else None
        if p is None or att is None:
            return None, portal.notice(
                request, "no_pass", lang=lang, here=here, status=403, kind="error"
            )
        ctx = _Ctx(p, att, lang, here)
        message = att.message
        if message.expires_at is not None and message.expires_at.timestamp() <= portal.now():
            return None, self._gone(request, ctx, "expired")
        if message.revoked_at is not None:
            return None, self._gone(request, ctx, "revoked")
        if p.stage < need:
            if request.method == "GET":
                return None, RedirectResponse(here, status_code=303)
            return None, portal.notice(
                request, "no_pass", lang=lang, here=here, status=403, kind="error"
            )
        return ctx, Response()


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name (RFC 8187)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def stream_bytes(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """Decrypt as the client reads; a damaged blob ends the response early (the client sees a
    short download against Content-Length, never wrong bytes)."""
    try:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except StoreError as exc:
                log.error("attachment stream broken: %s", exc)
                return
            if not chunk:
                return
            yield chunk
    finally:
        stream.close()


def _scope(aid: str) -> str:
    return f"a{aid}"


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


__all__ = ["DownloadPages", "content_disposition", "stream_bytes"]
