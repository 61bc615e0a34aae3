"""The verification steps that personal links (links.py) and attachment links (downloads.py)
share: sending a one-time code, checking an answer, counting failures into a lockout.

Synchronous (they run in the thread pool): the store, scrypt, argon2, SMTP and the SMS provider
are all blocking. The decisions themselves are verify.py's; this module applies them.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from email.policy import SMTP

from zivmilter import defaults, metrics
from zivmilter.delivery.reinject import Outgoing
from zivmilter.errors import DeliveryError
from zivmilter.mail.notification import mask_phone
from zivmilter.portal import accounts, mail, verify
from zivmilter.portal.context import Portal
from zivmilter.store import ClaimRecord, MessageRecord, RecipientRecord

log = logging.getLogger("zivmilter.portal")


class Sent(enum.Enum):
    SENT = "sent"
    WAIT = "wait"  # asked again too soon
    EXHAUSTED = "exhausted"  # too many codes for this link
    FAILED = "failed"  # the SMS provider or the MTA refused


@dataclass(frozen=True)
class SendResult:
    outcome: Sent
    wait: int = 0  # seconds, for WAIT


def send_code(portal: Portal, rec: RecipientRecord, via: str, language: str) -> SendResult:
    """Issue a one-time code for `rec` and send it by `via` ("sms" or "email")."""
    secret = verify.new_otp_secret()
    wait = portal.store.claim_otp(
        rec.id, secret, defaults.SMS_RESEND_SECONDS, defaults.OTP_MAX_SENDS
    )
    if wait == float("inf"):
        return SendResult(Sent.EXHAUSTED)
    if wait > 0:
        return SendResult(Sent.WAIT, math.ceil(wait))
    state = portal.store.otp(rec.id)
    if state is None:  # revoked in between
        return SendResult(Sent.FAILED)
    code = verify.otp_code(state.secret, state.sent_at)
    if not _deliver(portal, rec, via, code, language):
        portal.store.clear_otp(rec.id)
        return SendResult(Sent.FAILED)
    return SendResult(Sent.SENT)


def send_claim_code(
    portal: Portal, claim: ClaimRecord, rec: RecipientRecord | None, language: str
) -> SendResult:
    """Issue a one-time code for a claim on a shared download link and mail it to the claimed
    address if that is a recipient (`rec`); for anyone else the code is issued all the same
    (the same limits, the same share of the address's budget) and goes nowhere."""
    wait = portal.store.issue_claim_code(
        claim.id,
        verify.new_otp_secret(),
        defaults.SMS_RESEND_SECONDS,
        defaults.OTP_MAX_SENDS,
        defaults.CLAIM_CODES_PER_HOUR,
    )
    if wait == float("inf"):
        return SendResult(Sent.EXHAUSTED)
    if wait > 0:
        return SendResult(Sent.WAIT, math.ceil(wait))
    if rec is None:
        return SendResult(Sent.SENT)
    state = portal.store.claim_code(claim.id)
    if state is None:
        return SendResult(Sent.FAILED)
    if not _deliver(portal, rec, "email", verify.otp_code(state.secret, state.sent_at), language):
        portal.store.drop_claim_code(claim.id)
        return SendResult(Sent.FAILED)
    return SendResult(Sent.SENT)


def _deliver(portal: Portal, rec: RecipientRecord, via: str, code: str, language: str) -> bool:
    """Send `code` to `rec` by `via` ("sms" or "email"), with its audit event either way."""
    mid, address = rec.message.id, rec.address
    try:
        if via == "sms":
            if not rec.phone:
                raise DeliveryError("no phone number on file")
            portal.sms.send(
                rec.phone,
                mail.sms_text(code=code, sender_text=rec.message.sender, language=language),
            )
            detail = "sms " + mask_phone(rec.phone)
        else:
            msg = mail.code_email(
                to=address,
                code=code,
                sender_text=rec.message.sender,
                language=language,
                org_name=portal.org_name,
                org_domain=portal.org_domain,
                mail_from=portal.cfg.organization.mail_from,
            )
            replies = portal.mailer.send(
                [
                    Outgoing(
                        mail.portal_sender(portal.org_domain, portal.cfg.organization.mail_from),
                        [address],
                        msg.as_bytes(policy=SMTP),
                        f"verification code to {address}",
                    )
                ]
            )
            detail = "email " + (replies[0] if replies else "")
    except DeliveryError as exc:
        log.warning("code for %s of %s not sent: %s", address, mid, exc)
        portal.store.record_event("code-send-failed", mid, address, f"{via}: {exc}")
        return False
    portal.store.record_event("code-sent", mid, address, detail)
    return True


_ONE_TIME = ("sms", "email")  # methods whose code `consume_otp` spends


class Answer(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"  # the link is locked (now, or already before this answer)
    ENROL = "enrol"  # password right; the account has no authenticator yet


@dataclass(frozen=True)
class AnswerResult:
    outcome: Answer
    locked_until: datetime | None = None
    # OK for an access code: the hash it proved, made again under the current key when it
    # was made under a previous one (store prove_access_code): what the contact book keeps
    access_code_hash: str | None = None


def check_answer(
    portal: Portal,
    rec: RecipientRecord,
    method: str,
    *,
    code: str = "",
    password: str = "",
    totp: str = "",
) -> AnswerResult:
    """Check what the visitor typed for `method`. The answer is claimed against the lockout
    before it is compared (the store counts it as wrong until it proves right), so answers in
    flight at the same time cannot get past the lock; a locked link refuses every answer (each
    refusal is in the audit log too)."""
    attempt = portal.store.claim_attempt(rec.id, verify.lockout_seconds, method)
    if not attempt.admitted:
        return AnswerResult(Answer.LOCKED, attempt.locked_until)
    proved: list[str] = []  # the access code's hash, as the store keeps it now
    outcome = _compare(portal, rec, method, code=code, password=password, totp=totp, proved=proved)
    if outcome is Answer.ENROL:
        portal.store.settle_attempt(attempt, True, method)
        portal.store.record_event(
            "password-ok", rec.message.id, rec.address, "authenticator to enrol"
        )
        return AnswerResult(Answer.ENROL)
    if outcome is Answer.OK:
        portal.store.settle_attempt(attempt, True, method)
        if method not in _ONE_TIME:  # a one-time code was recorded with its consumption
            portal.store.record_verified(rec.id, method)
        return AnswerResult(Answer.OK, access_code_hash=proved[0] if proved else None)
    until = portal.store.settle_attempt(attempt, False, method)
    log.info("wrong %s answer for %s of %s", method, rec.address, rec.message.id)
    if until is not None:
        metrics.lockout()
        return AnswerResult(Answer.LOCKED, until)
    return AnswerResult(Answer.WRONG)


def _compare(
    portal: Portal,
    rec: RecipientRecord,
    method: str,
    *,
    code: str,
    password: str,
    totp: str,
    proved: list[str],
) -> Answer:
    """OK, WRONG or ENROL (the password is right, the account has no authenticator yet); an
    access code's hash goes into `proved` when the code is right."""
    now = portal.now()
    if method == "access_code":

        def matches(stored_hash: str, given: str) -> bool:
            # a hash made under a previous key's pepper is made again under the current one
            # (store/peppers.py), so that maintenance can let the old pepper go
            held = portal.store.prove_access_code(rec.id, stored_hash, given)
            if held is not None:
                proved.append(held)
            return held is not None

        ok = verify.access_code_valid(rec.access_code_hash, code, matches)
    elif method in _ONE_TIME:
        # compared and spent in one store step: of answers racing with the same code (other
        # sessions, other portal processes), one gets in; the others find it used (WRONG)
        ok = portal.store.consume_otp(
            rec.id, lambda secret, sent_at: verify.otp_valid(secret, sent_at, code, now), method
        )
    elif method == "account":
        return account_answer(portal, rec.address, password, totp)
    else:
        ok = False
    return Answer.OK if ok else Answer.WRONG


def account_answer(portal: Portal, address: str, password: str, totp: str) -> Answer:
    """OK when `password` and the authenticator code `totp` are those of `address`'s active
    account; ENROL when the password is right and no authenticator is enrolled yet."""
    account = portal.store.account(address)
    ok = (
        account is not None
        and account.active
        and accounts.password_valid(account.password_hash, password)
    )
    if ok and account is not None and not account.has_totp:
        return Answer.ENROL
    if ok:
        secret = portal.store.totp_secret(address)
        step = None if secret is None else verify.totp_step(secret, totp, portal.now())
        # a code works once: replaying it (or an older one) within its window fails
        ok = step is not None and portal.store.use_totp_step(address, step)
    return Answer.OK if ok else Answer.WRONG


def gone_reason(message: MessageRecord, link_revoked: datetime | None, now: float) -> str | None:
    """ "expired" or "revoked" when the content can no longer be read through this link."""
    if message.expires_at is not None and message.expires_at.timestamp() <= now:
        return "expired"
    if message.revoked_at is not None or link_revoked is not None:
        return "revoked"
    return None
