"""Pages of a personal link (`/m/<token>`, then `/r/<recipient id>/...`): verify, read, download,
reply, sign out.

The token is only in the first URL: that visit gives a cookie bound to the recipient and moves on
to `/r/<id>/`, so the secret does not stay in the address bar, history or a Referer. Every later
request needs that cookie (security.py); reading needs the verified stage of it. Each handler
reads its input on the event loop and does the rest in the thread pool: the pages that only
read and record (GET) in one hop on one store connection (`Portal.run`), the forms (which may
wait on SMS, SMTP or a password hash between their store calls) without holding one.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass, replace
from email.policy import SMTP
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from zivmilter import defaults, metrics
from zivmilter.core.addresses import normalize_address
from zivmilter.delivery.replies import Handed, hand_over_reply
from zivmilter.errors import StoreError
from zivmilter.mail.notification import mask_phone
from zivmilter.portal import accounts, flows, mail, quota, render, verify
from zivmilter.portal.context import message_date, timestamp, trusted_markup
from zivmilter.portal.downloads import content_disposition, stream_bytes, stream_chunks
from zivmilter.portal.pages import (
    Ctx,
    GuestPages,
    field,
    link_token,
    lock_view,
    refused_view,
    sent_notice,
    small_form,
)
from zivmilter.portal.security import (
    Stage,
    csrf_ok,
    decode_device,
    device_cookie_name,
    device_digest,
    encode_device,
    enrolment_secret,
    new_device_token,
    seal_value,
    unseal_value,
)
from zivmilter.portal.sentmail import send_read_receipt
from zivmilter.store import LinkState, RecipientRecord

log = logging.getLogger("zivmilter.portal")

_REMOTE_IMG = re.compile(r"(?i)<img\b[^>]*\bsrc\s*=\s*[\"']?\s*https?:")


@dataclass(frozen=True)
class _Ctx(Ctx):
    rec: RecipientRecord
    state: LinkState
    # The message's kept view as the link's read found it (`_context(with_view=True)` with a
    # verified pass): None when none is kept (yet) or it is revoked; else not read.
    kept: bytes | None = None
    kept_read: bool = False


class LinkPages(GuestPages[_Ctx]):
    # -- the first visit -------------------------------------------------------------------

    async def open_link(self, request: Request) -> Response:
        return await self.portal.run(self._open_link, request)

    def _open_link(self, request: Request) -> Response:
        portal = self.portal
        token = link_token(request)
        rec = portal.store.find_recipient_by_token(token) if token else None
        lang = portal.language(request, rec.address if rec else None)
        if rec is None:
            return self._unknown_link(request, lang)
        portal.remember_sender(request, rec.message.sender)
        # Nothing of the message is shown here (the page moves on to the link's page, which
        # records the open if it shows the message): a visit, not an open.
        response, _ = self._first_visit(request, _scope(rec.id), self._here(rec.id), lang)
        portal.store.record_event("link-visited", rec.message.id, rec.address, "")
        return response

    # -- the page behind the link ------------------------------------------------------------

    async def view(self, request: Request) -> Response:
        return await self.portal.run(self._view, request)

    def _view(self, request: Request) -> Response:
        ctx, error = self._context(request, Stage.LINK, with_view=True)
        if ctx is None:
            return error
        if ctx.p.stage is Stage.VERIFIED:
            return self._message_page(request, ctx)
        if ctx.p.stage is Stage.ENROL:
            if self._enrolled(ctx):
                return self._sign_in_again(request, ctx)
            return self._enrol_page(request, ctx, **refused_view(request))
        if self._remembered(request, ctx):
            return self._verified(request, ctx, "remembered browser")
        return self._verify_page(request, ctx, notice=sent_notice(request), **refused_view(request))

    # -- verification -----------------------------------------------------------------------

    async def send_code(self, request: Request) -> Response:
        fields = await small_form(request, "csrf")
        return await run_in_threadpool(self._send_code, request, fields)

    def _send_code(self, request: Request, fields: dict[str, str]) -> Response:
        ctx, error = self._form_context(request, Stage.LINK, "send", fields)
        if ctx is None:
            return error
        method = ctx.rec.verification
        if method not in ("sms", "email") or ctx.p.stage is not Stage.LINK:
            return RedirectResponse(ctx.here, status_code=303)
        return self._send(request, ctx, ctx.rec, method)

    async def verify(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "code", "password", "totp", "remember")
        return await run_in_threadpool(self._verify, request, fields)

    def _verify(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        ctx, error = self._form_context(request, Stage.LINK, "verify", fields)
        if ctx is None:
            return error
        if ctx.p.stage is not Stage.LINK:
            return RedirectResponse(ctx.here, status_code=303)
        rec = ctx.rec
        method = rec.verification or ""
        result = flows.check_answer(
            portal,
            rec,
            method,
            code=fields["code"],
            password=fields["password"],
            totp=fields["totp"],
        )
        metrics.verification(method, result.outcome.value)
        if result.outcome is flows.Answer.ENROL:
            return self._advance(ctx, Stage.ENROL)
        if result.outcome is flows.Answer.OK:
            response = self._verified(request, ctx, method, result.access_code_hash)
            if fields["remember"] and self._may_remember(rec):
                self._remember(response, rec)
            return response
        return self._refused(request, ctx, method, result.outcome)

    def _verified(
        self, request: Request, ctx: _Ctx, method: str, proved_hash: str | None = None
    ) -> Response:
        portal, rec = self.portal, ctx.rec
        # The contact book (SPEC 8; rules 5/6 of the policy): what worked, for next time.
        if method == "sms" and rec.phone:
            portal.store.remember_contact(rec.address, sms=rec.phone)
        elif method == "access_code" and rec.access_code_hash:
            # the hash as the store renewed it (`proved_hash`), not the one read before: an
            # old key's pepper copied back into the contact book would never be let go
            remembered = proved_hash or rec.access_code_hash
            portal.store.remember_contact(rec.address, access_code_hash=remembered)
        portal.remember_language(request, rec.address, switched_only=False)  # issue 25
        return self._advance(ctx, Stage.VERIFIED)

    # -- trusted devices (issue 25) -------------------------------------------------------------
    # After an SMS or emailed code only: an access code is the sender's secret for this message
    # (a browser must not stand in for it), and accounts have their own second factor.

    def _may_remember(self, rec: RecipientRecord) -> bool:
        return bool(self._device_days()) and rec.verification in ("sms", "email")

    def _device_days(self) -> int:
        return self.portal.cfg.policy.methods.remember_device_days

    def _remember(self, response: Response, rec: RecipientRecord) -> None:
        """Remember this browser for `rec`'s address: a new token in a cookie of its own."""
        portal = self.portal
        address = normalize_address(rec.address)
        lifetime = self._device_days() * 24 * 3600
        expires = int(portal.now()) + lifetime
        token = new_device_token()
        portal.store.remember_device(address, device_digest(token), expires)
        value = encode_device(portal.keys, address, token, expires)
        portal.set_cookie(response, device_cookie_name(portal.keys, address), value, lifetime)

    def _remembered(self, request: Request, ctx: _Ctx) -> bool:
        """This browser was remembered for the address of this link, and still is (the store
        says so: expired and ended devices are refused there), and the link is not locked."""
        portal, rec = self.portal, ctx.rec
        if not self._may_remember(rec) or verify.locked(rec.locked_until, portal.now()):
            return False
        address = normalize_address(rec.address)
        value = request.cookies.get(device_cookie_name(portal.keys, address))
        token = decode_device(portal.keys, value, address, portal.now())
        if token is None:
            return False
        if not portal.store.use_device(address, device_digest(token), rec.message.id):
            return False
        portal.store.record_verified(rec.id, "remembered browser")
        return True

    async def enrol(self, request: Request) -> Response:
        fields = await small_form(request, "csrf", "secret", "totp")
        return await run_in_threadpool(self._enrol, request, fields)

    def _enrol(self, request: Request, fields: dict[str, str]) -> Response:
        portal = self.portal
        ctx, error = self._form_context(request, Stage.ENROL, "enrol", fields)
        if ctx is None:
            return error
        if ctx.p.stage is not Stage.ENROL:
            return RedirectResponse(ctx.here, status_code=303)
        if self._enrolled(ctx):
            return self._sign_in_again(request, ctx)
        secret = unseal_value(portal.keys, fields["secret"], _enrol_context(ctx))
        if secret is None:
            return self._enrol_page(request, ctx, status=400)
        what = "account enrolment"
        attempt = portal.store.claim_attempt(ctx.rec.id, verify.lockout_seconds, what)
        if not attempt.admitted:
            return self._verify_page(request, self._fresh(ctx), status=429)
        step = verify.totp_step(secret, fields["totp"], portal.now())
        if step is None:
            if portal.store.settle_attempt(attempt, False, what) is not None:
                return self._verify_page(request, self._fresh(ctx), status=429)
            # POST/redirect/GET, as for other answers: a reload must not send it again. The
            # page shows the same secret again (it is the pass's, see enrolment_secret).
            return RedirectResponse(f"{ctx.here}?refused=wrong_code", status_code=303)
        portal.store.settle_attempt(attempt, True, what)
        if not accounts.enrol_authenticator(portal.store, ctx.rec.address, secret):
            if self._enrolled(ctx):  # another enrolment got in first
                return self._sign_in_again(request, ctx)
            return self._verify_page(request, ctx, error="no_account", status=403)
        portal.store.use_totp_step(ctx.rec.address, step)  # the enrolment code is spent too
        portal.store.record_verified(ctx.rec.id, "account (authenticator enrolled)")
        return self._verified(request, ctx, "account")

    # -- reading -----------------------------------------------------------------------------

    async def body(self, request: Request) -> Response:
        return await self.portal.run(self._body, request)

    def _body(self, request: Request) -> Response:
        ctx, error = self._context(request, Stage.VERIFIED, with_view=True)
        if ctx is None:
            return error
        view = self._message_view(ctx)
        if view is None or view.html is None:
            return Response(status_code=404)
        if not self._first_open(ctx):
            return self._gone(request, ctx, "revoked")
        # Only the frame of the page that a consent (a POST with its CSRF token) showed carries
        # this token: a link in the message itself cannot consent for the reader.
        remote = csrf_ok(self.portal.keys, ctx.p, "remote", request.query_params.get("remote"))

        def inline_url(cid: str) -> str | None:
            index = view.inline.get(cid)
            return None if index is None else f"{ctx.here}part/{index}"

        # The kept view holds it sanitized already (without remote images: as consented to,
        # those are sanitized here each time).
        html = None if remote else render.framed_html(view, f"{ctx.here}part/")
        if html is None:
            html = render.sanitize_html(view.html, inline_url, allow_remote=remote).html
        images = "'self' https: http:" if remote else "'self'"
        csp = (
            f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
            "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
            "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox"
        )
        return self.portal.page(
            request,
            "body.html",
            {"content": trusted_markup(html)},
            lang=ctx.lang,
            here=ctx.here,
            headers={"content-security-policy": csp, "x-frame-options": "SAMEORIGIN"},
        )

    async def inline_part(self, request: Request) -> Response:
        return await self.portal.run(self._inline_part, request)

    def _inline_part(self, request: Request) -> Response:
        ctx, error = self._context(request, Stage.VERIFIED)
        if ctx is None:
            return error
        parsed = self._parsed(ctx)
        index = int(request.path_params["index"])
        if parsed is None or index not in parsed[1].inline.values():
            return Response(status_code=404)
        if not self._first_open(ctx):
            return self._gone(request, ctx, "revoked")
        part = render.leaves(parsed[0])[index]
        return Response(
            render.leaf_payload(part),
            media_type=part.get_content_type(),
            headers={"content-security-policy": "default-src 'none'; sandbox"},
        )

    async def attachment(self, request: Request) -> Response:
        return await self.portal.run(self._attachment, request)

    def _attachment(self, request: Request) -> Response:
        ctx, error = self._context(request, Stage.VERIFIED)
        if ctx is None:
            return error
        index = int(request.path_params["index"])
        kept = self._kept_part(request, ctx, index)
        if kept is not None:
            return kept
        # Kept whole only: a small attachment, or a message saved before parts were kept apart.
        parsed = self._parsed(ctx)
        if parsed is None:
            return self._gone(request, ctx, "revoked")
        found = [a for a in parsed[1].attachments if a.index == index]
        if not found:
            return Response(status_code=404)
        (item,) = found
        if not self._first_open(ctx):
            return self._gone(request, ctx, "revoked")
        data = render.leaf_payload(render.leaves(parsed[0])[index])
        self.portal.store.record_event(
            "attachment-downloaded", ctx.rec.message.id, ctx.rec.address, f"part {index}"
        )  # the part's index, not its name: the audit log outlives revocation
        return StreamingResponse(
            stream_bytes(data),
            media_type=item.content_type,
            headers={
                "content-disposition": content_disposition(item.filename),
                "content-length": str(len(data)),
                "content-security-policy": "default-src 'none'; sandbox",
            },
        )

    async def remote(self, request: Request) -> Response:
        fields = await small_form(request, "csrf")
        return await run_in_threadpool(self._remote, request, fields)

    def _remote(self, request: Request, fields: dict[str, str]) -> Response:
        """The reader consents to the remote images of this message: the page again, whose
        frame now loads them (a reload asks again: consent is never in a link)."""
        ctx, error = self._form_context(request, Stage.VERIFIED, "remote", fields)
        if ctx is None:
            return error
        return self._message_page(request, ctx, remote=True)

    def _kept_part(self, request: Request, ctx: _Ctx, index: int) -> Response | None:
        """A large attachment the store kept apart at save, streamed as it is decrypted (the
        message is not parsed: issue 15); None when it has none at that index."""
        store, mid = self.portal.store, ctx.rec.message.id
        part = store.part(mid, index)
        stream = store.open_part(mid, index) if part is not None else None
        if part is None or stream is None:
            return None
        if not self._first_open(ctx):
            stream.close()
            return self._gone(request, ctx, "revoked")
        store.record_event("attachment-downloaded", mid, ctx.rec.address, f"part {index}")
        return StreamingResponse(
            stream_chunks(stream),
            media_type=part.content_type,
            headers={
                "content-disposition": content_disposition(part.filename),
                "content-length": str(part.size),
                "content-security-policy": "default-src 'none'; sandbox",
            },
        )

    # -- replying ----------------------------------------------------------------------------

    async def reply(self, request: Request) -> Response:
        size = request.headers.get("content-length", "")
        limit = self.portal.cfg.portal.max_reply_bytes + 64 * 1024
        if not size.isdigit() or int(size) > limit:
            lang = self.portal.language(request)
            return self.portal.notice(
                request, "reply_too_big", lang=lang, here=self._here(_rid(request)),
                status=413, kind="error",
                mb=str(self.portal.cfg.portal.max_reply_bytes // (1024 * 1024)),
            )  # fmt: skip
        # Who may send this much is settled before a byte of it is read: the session, and of
        # the CSRF check what the headers and the query carry (the form's token comes after).
        ctx, error = await run_in_threadpool(self._reply_context, request)
        if ctx is None:
            return error
        form = await request.form(
            max_files=defaults.PORTAL_MAX_REPLY_FILES, max_fields=10, max_part_size=1024 * 1024
        )
        files: list[mail.ReplyFile] = []
        for item in form.getlist("files"):
            if isinstance(item, UploadFile) and item.filename:
                data = await item.read()
                files.append(
                    mail.ReplyFile(
                        render.clean_filename(item.filename) or "attachment",
                        mail.bare_type(item.content_type),
                        data,
                    )
                )
        fields = {k: field(form, k) for k in ("csrf", "text")}
        fields["csrf"] = request.query_params.get("csrf") or fields["csrf"]
        return await run_in_threadpool(self._reply, request, fields, files)

    def _reply_context(self, request: Request) -> tuple[_Ctx | None, Response]:
        ctx, error = self._context(request, Stage.VERIFIED)
        if ctx is None:
            return None, error
        token = request.query_params.get("csrf")
        if not self.portal.origin_allowed(request) or (
            token is not None and not self.portal.form_allowed(request, ctx.p, "reply", token)
        ):
            self._record_csrf_refusal(ctx)
            return None, self.portal.notice(
                request, "csrf", lang=ctx.lang, here=ctx.here, status=403, kind="error"
            )
        return ctx, error

    def _reply(
        self, request: Request, fields: dict[str, str], files: list[mail.ReplyFile]
    ) -> Response:
        portal = self.portal
        ctx, error = self._form_context(request, Stage.VERIFIED, "reply", fields)
        if ctx is None:
            return error
        text = fields["text"].replace("\r\n", "\n").strip()
        if not text and not files:
            return self._message_page(request, ctx, error="reply_empty", status=400)
        if any(mail.refused_upload(f.content_type) for f in files):
            return self._message_page(request, ctx, error="reply_bad_type", status=400)
        rec = ctx.rec
        message = rec.message
        rfc822_id = message.rfc822_id or ""
        msg = mail.reply_email(
            author=rec.address,
            to=message.sender,
            subject=message.subject or "",
            in_reply_to=rfc822_id,
            references="",
            sent=timestamp(
                message.created_at,
                portal.cfg.notification.language,
                portal.cfg.organization.timezone,
            ),
            text=text,
            files=files,
            language=portal.cfg.notification.language,
            org_name=portal.org_name,
            org_domain=portal.org_domain,
            mail_from=portal.cfg.organization.mail_from,
        )
        data = msg.as_bytes(policy=SMTP)
        refusal = self._over_quota(rec, len(data))
        if refusal is not None:
            return self._message_page(request, ctx, error=refusal, status=refusal_status(refusal))
        try:
            reply_id = portal.store.save_reply(rec.id, data)
        except StoreError as exc:
            log.error("reply of %s to %s not stored: %s", rec.address, message.id, exc)
            return self._message_page(request, ctx, error="reply_failed", status=503)
        # The reply is stored either way: reloading the page must not write it again.
        handed = hand_over_reply(
            portal.store, portal.replies,
            reply_id=reply_id, message_id=message.id, to=message.sender, content=data,
            sender=portal.cfg.organization.portal_from, what=f"portal reply from {rec.address}",
            author=rec.address,
        )  # fmt: skip
        if handed.outcome is Handed.SENT:
            metrics.reply("delivered")
            return RedirectResponse(ctx.here + "?replied=1", status_code=303)
        log.error("reply %s of %s not sent: %s", reply_id, message.id, handed.detail)
        if handed.outcome is Handed.REFUSED:  # never taken as it is: the writer knows
            metrics.reply("refused")
            return RedirectResponse(ctx.here + "?replied=refused", status_code=303)
        # `zivmilter maintenance` hands it over later: the writer need not send it again.
        metrics.reply("deferred")
        return RedirectResponse(ctx.here + "?replied=later", status_code=303)

    def _over_quota(self, rec: RecipientRecord, size: int) -> str | None:
        """Why a reply of `size` bytes may not be stored now (an error key), or None. Two
        replies at the same moment may both pass a limit they reach together: the quotas
        bound a flood, not the last reply."""
        portal = self.portal
        limits = portal.cfg.portal.reply_limits
        now = portal.now()
        hour = portal.store.reply_usage(rec.id, now - quota.HOUR)
        day = portal.store.reply_usage(rec.id, now - quota.DAY)
        window = quota.reply_refusal(limits, hour, day, size)
        if window is not None:
            portal.store.record_event(
                "reply-refused", rec.message.id, rec.address, f"quota of the {window}"
            )
            return f"reply_quota_{window}"
        try:
            free = portal.store.free_bytes()
        except OSError as exc:
            log.error("free space of the store unknown: %s", exc)
            return "reply_no_space"
        if free - size < limits.min_free_bytes:
            log.error(
                "reply of %s to %s refused: %d bytes free in the store, %d kept free",
                rec.address, rec.message.id, free, limits.min_free_bytes,
            )  # fmt: skip
            return "reply_no_space"
        return None

    async def logout(self, request: Request) -> Response:
        fields = await small_form(request, "csrf")
        return await run_in_threadpool(self._logout, request, fields)

    def _logout(self, request: Request, fields: dict[str, str]) -> Response:
        ctx, error = self._form_context(request, Stage.LINK, "logout", fields)
        if ctx is None:
            return error
        # Server-side too: a copy of this cookie (another tab, another device) ends with it.
        self.portal.store.end_sessions(ctx.rec.id, "signed out")
        response = self.portal.notice(
            request, "signed_out", lang=ctx.lang, here=ctx.here, status=200
        )
        self.portal.drop_pass(response, ctx.p.scope)
        return response

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
        portal, rec = self.portal, ctx.rec
        now = portal.now()
        method = rec.verification or ""
        lock = verify.locked(rec.locked_until, now)
        code_sent = False
        if method in ("sms", "email"):
            otp = portal.store.otp(rec.id)
            code_sent = (
                otp is not None and now - otp.sent_at.timestamp() <= defaults.OTP_VALIDITY_SECONDS
            )
        account = portal.store.account(rec.address) if method == "account" else None
        if method == "account" and (account is None or not account.active):
            error = error or "no_account"
        status, locked_minutes = lock_view(lock, status)
        show_subject = portal.cfg.notification.subject == "show"
        values: dict[str, Any] = {
            "method": method,
            "sender": rec.message.sender,
            "subject": (rec.message.subject or "") if show_subject else "",
            "hint": rec.hint or "",
            "phone": mask_phone(rec.phone) if rec.phone else "",
            "address": rec.address,
            "locked_minutes": locked_minutes,
            "code_sent": code_sent,
            "has_totp": bool(account and account.has_totp),
            "remember_days": self._device_days() if self._may_remember(rec) else 0,
            "csrf_send": portal.csrf(ctx.p, "send"),
            "csrf_verify": portal.csrf(ctx.p, "verify"),
            "error": error,
            "notice": notice,
            "fmt": fmt,
            "action": ctx.here,
        }
        return portal.page(
            request, "verify.html", values, lang=ctx.lang, here=ctx.here, status=status
        )

    def _enrol_page(
        self,
        request: Request,
        ctx: _Ctx,
        *,
        secret: bytes | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        portal = self.portal
        secret = secret or enrolment_secret(portal.keys, ctx.p, verify.OTP_SECRET_BYTES)
        uri = accounts.enrolment_uri(secret, ctx.rec.address, portal.org_name)
        text = base64.b32encode(secret).decode("ascii").rstrip("=")
        values = {
            "qr": trusted_markup(accounts.qr_svg(uri)),
            "secret_text": " ".join(text[i : i + 4] for i in range(0, len(text), 4)),
            "sealed": seal_value(portal.keys, secret, _enrol_context(ctx)),
            "csrf_enrol": portal.csrf(ctx.p, "enrol"),
            "error": error,
            "address": ctx.rec.address,
        }
        return portal.page(
            request, "enrol.html", values, lang=ctx.lang, here=ctx.here, status=status
        )

    def _message_page(
        self,
        request: Request,
        ctx: _Ctx,
        *,
        error: str | None = None,
        status: int = 200,
        remote: bool = False,
    ) -> Response:
        portal = self.portal
        view = self._message_view(ctx)
        if view is None:
            return self._gone(request, ctx, "revoked")
        # SPEC 8: every open is recorded. An open is this page showing the message to a
        # verified recipient, each time (its frame and parts are part of the same open).
        # Revoked since the view was read: not shown, so no open is logged after a revoke.
        if not portal.store.mark_opened(ctx.rec.id):
            return self._gone(request, ctx, "revoked")
        send_read_receipt(portal, ctx.rec.id)  # once, when notification.read_receipts is on
        portal.remember_language(request, ctx.rec.address, switched_only=True)  # issue 25
        replies = portal.store.replies(ctx.rec.id)
        # ?replied= after a reply was written: said only while it is true of the last reply
        last = replies[-1] if replies else None
        replied = request.query_params.get("replied", "")
        note = None
        if last is not None and last.sent_at is not None:
            note = "note_replied" if replied == "1" else None
        elif last is not None and last.refused_at is not None:
            error = error or ("reply_refused" if replied == "refused" else None)
        elif last is not None:
            note = "note_reply_later" if replied == "later" else None
        values = {
            "view": view,
            "date": message_date(view.date, ctx.rec.message.created_at, ctx.lang),
            "remote": portal.csrf(ctx.p, "remote") if remote else "",
            "csrf_remote": portal.csrf(ctx.p, "remote"),
            "has_remote": bool(view.html and _REMOTE_IMG.search(view.html)),
            "replies": replies,
            "csrf_reply": portal.csrf(ctx.p, "reply"),
            "csrf_logout": portal.csrf(ctx.p, "logout"),
            "replied": note,
            "error": error,
            "max_reply_mb": self.portal.cfg.portal.max_reply_bytes // (1024 * 1024),
        }
        return portal.page(
            request, "message.html", values, lang=ctx.lang, here=ctx.here, status=status
        )

    def _first_open(self, ctx: _Ctx) -> bool:
        """SPEC 8 for what shows the message's content without its page (the frame, a part,
        an attachment): the recipient's first look is an open all the same, with its read
        receipt, so that fetching them straight away cannot leave the sender's read status at
        "not opened". After the page's open they add none (`_message_page` counts each view).
        False: revoked since the link's read (nothing to show)."""
        if ctx.rec.opened_at is not None:
            return True
        if not self.portal.store.mark_opened(ctx.rec.id):
            return False
        send_read_receipt(self.portal, ctx.rec.id)
        return True

    def _enrolled(self, ctx: _Ctx) -> bool:
        account = self.portal.store.account(ctx.rec.address)
        return account is not None and account.has_totp

    def _sign_in_again(self, request: Request, ctx: _Ctx) -> Response:
        """An enrolment pass whose account has an authenticator by now (enrolled in another
        browser, or this page was kept open): it enrols nothing; the visitor signs in with both
        factors instead, on a fresh pass."""
        portal = self.portal
        portal.store.record_event(
            "enrol-refused", ctx.rec.message.id, ctx.rec.address, "authenticator already enrolled"
        )
        fresh = replace(ctx, p=portal.new_pass(ctx.p.scope, Stage.LINK))
        response = self._verify_page(request, fresh, error="already_enrolled", status=409)
        portal.give_pass(response, fresh.p)
        return response

    def _record_csrf_refusal(self, ctx: _Ctx) -> None:
        self.portal.store.record_event("csrf-refused", ctx.rec.message.id, ctx.rec.address, "")

    def _fresh(self, ctx: _Ctx) -> _Ctx:
        return replace(ctx, rec=self.portal.store.recipient(ctx.rec.id) or ctx.rec)

    # -- helpers -----------------------------------------------------------------------------

    def _here(self, rid: int) -> str:
        return f"{self.portal.root}/r/{rid}/"

    def _context(
        self, request: Request, need: Stage, *, with_view: bool = False
    ) -> tuple[_Ctx | None, Response]:
        """The visitor's pass, the recipient and their link state; or the page to show instead.
        `with_view`: a page that shows the message to a verified pass (the message page, its
        frame) reads the message's kept view in the same read."""
        portal = self.portal
        rid = _rid(request)
        here = self._here(rid)
        # One read for the pass's session generation (Portal.get_pass), the recipient, the
        # link's state, the contact book's language and (a verified pass's view) the kept view:
        # every request behind a link starts here.
        p = portal.read_pass(request, _scope(rid))
        with_view = with_view and p is not None and p.stage is Stage.VERIFIED
        found = portal.store.link_view(rid, with_view=with_view) if p is not None else None
        if p is not None and (found is None or found.generation != p.gen):
            p = found = None  # a session ended since (sign-out, a disabled account)
        rec = found.recipient if found is not None else None
        booked = found.language if found is not None else None
        lang = portal.language(request, rec.address if rec else None, booked=booked)
        if rec is not None:
            portal.remember_sender(request, rec.message.sender)  # its unit's brand (part 2)
        if found is None or p is None or rec is None or rec.delivery != "notification":
            return None, self._no_pass(request, lang, here)
        ctx = _Ctx(p, lang, here, rec, found.state, found.view, with_view)
        gone = flows.gone_reason(rec.message, found.state.revoked_at, portal.now())
        return self._admit(request, ctx, gone, need)

    def _parsed(self, ctx: _Ctx) -> tuple[Any, render.MessageView] | None:
        content = self.portal.store.open_content(ctx.rec.message.id)
        if content is None:
            return None
        try:
            with content:
                data = content.read()
        except StoreError as exc:
            log.error("message %s unreadable: %s", ctx.rec.message.id, exc)
            return None
        return render.parse(data)

    def _message_view(self, ctx: _Ctx) -> render.MessageView | None:
        """What the message page shows. Parsing MIME is the costly part of a view, so the
        result is kept in the store, sealed with the message's key, after the first one."""
        store, mid = self.portal.store, ctx.rec.message.id
        kept = ctx.kept if ctx.kept_read else store.portal_view(mid)
        view = render.view_from_bytes(kept) if kept is not None else None
        if view is not None:
            return view
        parsed = self._parsed(ctx)
        if parsed is None:
            return None
        data = render.view_to_bytes(parsed[1])
        if data is not None:
            store.save_portal_view(mid, data)
        return parsed[1]


def refusal_status(error: str) -> int:
    """429 for a quota (the writer may try again later), 503 while the disk is short."""
    return 503 if error == "reply_no_space" else 429


def _scope(rid: int) -> str:
    return f"r{rid}"


def _rid(request: Request) -> int:
    return int(request.path_params["rid"])


def _enrol_context(ctx: _Ctx) -> str:
    # Bound to this recipient and this cookie: a sealed secret cannot be replayed elsewhere.
    return f"enrol:{ctx.rec.id}:{ctx.p.nonce}"
