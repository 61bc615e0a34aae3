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

from zivmilter import metrics
from zivmilter.core.addresses import normalize_address
from zivmilter.core.message import clean_filename
from zivmilter.errors import MessageError, StoreError
from zivmilter.portal import flows, verify
from zivmilter.portal.pages import (
    Ctx,
    GuestPages,
    code_sent,
    link_token,
    lock_view,
    refused_view,
    sent_notice,
    small_form,
)
from zivmilter.portal.security import Stage
from zivmilter.store import AttachmentRecord, RecipientRecord

log = logging.getLogger("zivmilter.portal")

_AID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 64 * 1024
_NOBODY = -1  # `who` of a visitor whose address is not a recipient: every answer is wrong


@dataclass(frozen=True)
class _Ctx(Ctx):
    att: AttachmentRecord


class DownloadPages(GuestPages[_Ctx]):
    async def open_link(self, request: Request) -> Response:
        return await run_in_threadpool(self._open_link, request)

    def _open_link(self, request: Request) -> Response:
        portal = self.portal
        token = link_token(request)
        att = portal.store.find_attachment_by_token(token) if token else None
        lang = portal.language(request)
        if att is None:
            return self._unknown_link(request, lang)
        response, _ = self._first_visit(request, _scope(att.id), self._here(att.id), lang)
        return response

    async def view(self, request: Request) -> Response:
        return await run_in_threadpool(self._view, request)

    def _view(self, request: Request) -> Response:
        ctx, error = self._context(request, Stage.LINK)
        if ctx is None:
            return error
        return self._verify_page(request, ctx, notice=sent_notice(request), **refused_view(request))

    async def start(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "address")
        return await run_in_threadpool(self._start, request, fields)

    def _start(self, request: Request, fields: dict[str, str]) -> Response:
        """The visitor says who they are; nothing tells them whether that address is a
        recipient (the code simply never comes)."""
        portal = self.portal
        ctx, error = self._form_context(request, Stage.LINK, "start", fields)
        if ctx is None:
            return error
        try:
            address = normalize_address(fields["address"])
        except MessageError:
            return self._verify_page(request, ctx, error="bad_address", status=400)
        found = [
            r
            for r in portal.store.recipients(ctx.att.message.id)
            if r.address == address and r.delivery == "direct"
        ]
        who = found[0].id if found else _NOBODY
        portal.store.record_event(
            "attachment-claimed", ctx.att.message.id, address, "recipient" if found else "unknown"
        )
        return self._advance(ctx, Stage.LINK, who)

    async def send_code(self, request: Request) -> Response:
        fields = await small_form(request, "csrf")
        return await run_in_threadpool(self._send_code, request, fields)

    def _send_code(self, request: Request, fields: dict[str, str]) -> Response:
        ctx, error = self._form_context(request, Stage.LINK, "send", fields)
        if ctx is None:
            return error
        # The same answer whoever was claimed, whatever became of the code (asked again too
        # soon, too many codes, the MTA down): anything else would tell a visitor which
        # addresses are recipients. The outcome is in the log and the audit log.
        rec = self._claimed(ctx)
        if rec is not None and not verify.locked(rec.locked_until, self.portal.now()):
            result = flows.send_code(self.portal, rec, "email", ctx.lang)
            if result.outcome is not flows.Sent.SENT:
                log.info("download code for %s not sent: %s", rec.id, result.outcome.value)
        return code_sent(ctx)

    async def verify(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "code", "password", "totp")
        return await run_in_threadpool(self._verify, request, fields)

    def _verify(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        ctx, error = self._form_context(request, Stage.LINK, "verify", fields)
        if ctx is None:
            return error
        if ctx.p.stage is Stage.VERIFIED:
            return RedirectResponse(ctx.here, status_code=303)
        rec = self._claimed(ctx)
        if rec is None:  # answered as a recipient's wrong code is
            return self._refused(request, ctx, "email", flows.Answer.WRONG)
        method = "account" if self._uses_account(rec) else "email"
        result = flows.check_answer(
            portal, rec, method,
            code=fields["code"], password=fields["password"], totp=fields["totp"],
        )  # fmt: skip
        metrics.verification(method, result.outcome.value)
        if result.outcome is flows.Answer.OK:
            portal.store.record_event("attachment-verified", ctx.att.message.id, rec.address, "")
            return self._advance(ctx, Stage.VERIFIED, rec.id)
        # The method is "account" only with an authenticator, so ENROL cannot come: if it
        # did, it would be a wrong answer like any other.
        return self._refused(request, ctx, method, result.outcome)

    async def file(self, request: Request) -> Response:
        result = await run_in_threadpool(self._file, request)
        if isinstance(result, Response):
            return result
        stream, ctx = result
        att = ctx.att
        return StreamingResponse(
            iterate_in_threadpool(stream_chunks(stream)),
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
            ctx.att.id,  # not its name: the audit log outlives revocation (names name patients)
        )
        return stream, ctx

    # -- pages -------------------------------------------------------------------------------

    def _verify_page(
        self,
        request: Request,
        ctx: _Ctx,
        *,
        error: str | None = None,
        notice: str | None = None,
        status: int = 200,
        **fmt: str,
    ) -> Response:
        """The link's one page: say who you are, verify, then download."""
        portal = self.portal
        rec = self._claimed(ctx)  # read now: its lockout may have just moved
        verified = ctx.p.stage is Stage.VERIFIED
        lock = verify.locked(rec.locked_until, portal.now()) if rec is not None else 0.0
        status, locked_minutes = lock_view(lock, status)
        values: dict[str, Any] = {
            "att": ctx.att,
            "filename": clean_filename(ctx.att.filename or "") or "attachment",
            "verified": verified,
            "claimed": ctx.p.who != 0,
            "use_account": rec is not None and self._uses_account(rec),
            "locked_minutes": locked_minutes,
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

    def _record_csrf_refusal(self, ctx: _Ctx) -> None:
        # No address: the link is not personal, and who the visitor claims is not proven.
        self.portal.store.record_event("csrf-refused", ctx.att.message.id, None, "download")

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
            return None, self._no_pass(request, lang, here)
        # A direct delivery cannot be revoked and does not expire (SPEC 8): the link works as
        # long as the attachment is kept, whatever became of its message's notification links.
        gone = None if att.available else "revoked"
        return self._admit(request, _Ctx(p, lang, here, att), gone, need)


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name (RFC 8187), of the name as
    `clean_filename` leaves it."""
    filename = clean_filename(filename) or "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def stream_bytes(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


def stream_chunks(stream: BinaryIO) -> Iterator[bytes]:
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


__all__ = ["DownloadPages", "content_disposition", "stream_bytes", "stream_chunks"]
