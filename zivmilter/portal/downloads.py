"""Secure download links for large attachments of direct-delivered messages (SPEC 5).

The gateway keeps such an attachment in the store (`Store.save_attachment`) and puts its link
`<base_url>/d/<token>` in the direct copy instead. One copy may go to several recipients, so the
link is not personal: the visitor says which recipient they are, then proves it by signing in
(addresses with an account and authenticator) or with a code sent to that address. Then the
file streams out of the store as it is decrypted, never whole in memory.

What the visitor says is a claim (`ClaimStore`), and every answer goes against that claim: its
own code, mailed only to the claimed address, its own wrong-answer streak and lock. So someone
holding the link who claims a recipient's address can lock only their own claim, never the
recipient's; what all claims on one address may get in an hour is capped in the store. A claim
on an address that is no recipient walks exactly the same pages (the form its address would get,
the same code limits, the same lock after the same count); its answers are never right.
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

from zivmilter import defaults, metrics
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
from zivmilter.store import AttachmentRecord, ClaimRecord, RecipientRecord

log = logging.getLogger("zivmilter.portal")

_AID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 64 * 1024
# A pass's `who` before verification is minus the visitor's claim id; after it, the recipient id
# (negative, so that it names no recipient's session generation: `security.subject_of`).


@dataclass(frozen=True)
class _Ctx(Ctx):
    att: AttachmentRecord


class DownloadPages(GuestPages[_Ctx]):
    async def open_link(self, request: Request) -> Response:
        return await self.portal.run(self._open_link, request)

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
        return await self.portal.run(self._view, request)

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
        claim_id = portal.store.open_claim(ctx.att.id, address, found[0].id if found else None)
        portal.store.record_event(
            "attachment-claimed", ctx.att.message.id, address, "recipient" if found else "unknown"
        )
        return self._advance(ctx, Stage.LINK, -claim_id)

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
        claim = self._claimed(ctx)
        if claim is not None and not verify.locked(claim.locked_until, self.portal.now()):
            rec = self._recipient(ctx, claim)
            result = flows.send_claim_code(self.portal, claim, rec, ctx.lang)
            if rec is not None and result.outcome is not flows.Sent.SENT:
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
        claim = self._claimed(ctx)
        if claim is None:  # no claim behind the pass (one from before claims): a wrong answer
            return self._refused(request, ctx, "email", flows.Answer.WRONG)
        rec = self._recipient(ctx, claim)
        method = "account" if self._uses_account(claim.address) else "email"
        outcome = self._answer(claim, rec, method, fields)
        metrics.verification(method, outcome.value)
        if outcome is flows.Answer.OK and rec is not None:
            mid = ctx.att.message.id
            portal.store.record_event("verified", mid, rec.address, method)
            portal.store.record_event("attachment-verified", mid, rec.address, "")
            return self._advance(ctx, Stage.VERIFIED, rec.id)
        return self._refused(request, ctx, method, outcome)

    def _answer(
        self, claim: ClaimRecord, rec: RecipientRecord | None, method: str, fields: dict[str, str]
    ) -> flows.Answer:
        """Check an answer against the claim (`flows.check_answer`'s rule: counted before it is
        compared). It is compared whether or not the address is a recipient (the same work, the
        same time), and right only for a recipient. The method is "account" only with an
        authenticator, so an ENROL answer would be a wrong one."""
        portal = self.portal
        attempt = portal.store.claim_answer(
            claim.id,
            verify.lockout_seconds,
            funded=method == "account",
            per_hour=defaults.CLAIM_CODES_PER_HOUR,
            detail=method,
        )
        if not attempt.admitted:
            return flows.Answer.LOCKED
        ok = False
        if attempt.compare and method == "account":
            answer = flows.account_answer(portal, claim.address, fields["password"], fields["totp"])
            ok = answer is flows.Answer.OK
        elif attempt.compare:
            code, now = fields["code"], portal.now()
            ok = portal.store.consume_claim_code(
                claim.id, lambda secret, sent_at: verify.otp_valid(secret, sent_at, code, now)
            )
        ok = ok and rec is not None
        until = portal.store.settle_claim_answer(attempt, ok, method)
        if ok:
            return flows.Answer.OK
        if rec is not None:
            log.info("wrong %s answer for %s of %s", method, rec.address, rec.message.id)
        if until is not None:
            if attempt.locked_until is not None:
                metrics.lockout()
            return flows.Answer.LOCKED
        return flows.Answer.WRONG

    async def file(self, request: Request) -> Response:
        result = await self.portal.run(self._file, request)  # streamed after it
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
        claim = self._claimed(ctx)  # read now: its lockout may have just moved
        verified = ctx.p.stage is Stage.VERIFIED
        lock = verify.locked(claim.locked_until, portal.now()) if claim is not None else 0.0
        status, locked_minutes = lock_view(lock, status)
        values: dict[str, Any] = {
            "att": ctx.att,
            "filename": clean_filename(ctx.att.filename or "") or "attachment",
            "verified": verified,
            "claimed": claim is not None,
            # by the address alone, recipient or not: the form must not tell them apart
            "use_account": claim is not None and self._uses_account(claim.address),
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

    def _claimed(self, ctx: _Ctx) -> ClaimRecord | None:
        """The visitor's claim on this link (before verification), if any."""
        if ctx.p.who >= 0 or ctx.p.stage is Stage.VERIFIED:
            return None
        claim = self.portal.store.claim(-ctx.p.who)
        return claim if claim is not None and claim.attachment_id == ctx.att.id else None

    def _recipient(self, ctx: _Ctx, claim: ClaimRecord) -> RecipientRecord | None:
        """The direct recipient the claim names; None when its address is not one."""
        if claim.recipient_id is None:
            return None
        rec = self.portal.store.recipient(claim.recipient_id)
        if rec is None or rec.message.id != ctx.att.message.id or rec.delivery != "direct":
            return None
        return rec

    def _uses_account(self, address: str) -> bool:
        account = self.portal.store.account(address)
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
