"""Mail to the organization's own senders (issue 19): the enrolment invitation that
`zivmilter account invite --mail` sends, and the read receipt the portal sends once when a
recipient first opens a message (`notification.read_receipts`).

Neither carries anything of the message: the receipt names the recipient and the times, and
threads under the original by its Message-ID. Builders are pure; `send_read_receipt` hands the
receipt to the MTA like every other portal mail (portal.mailer).
"""

from __future__ import annotations

import logging
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from zivmilter.core.config import Config
from zivmilter.delivery.reinject import Outgoing
from zivmilter.errors import DeliveryError
from zivmilter.mail.notification import NOTIFICATION_HEADER
from zivmilter.portal.context import Portal, timestamp
from zivmilter.portal.i18n import texts
from zivmilter.portal.mail import portal_sender
from zivmilter.store import RecipientRecord

log = logging.getLogger("zivmilter.portal")


def sent_url(cfg: Config) -> str:
    return cfg.portal.base_url.rstrip("/") + "/sent/"


def invite_url(cfg: Config, token: str) -> str:
    return f"{sent_url(cfg)}invite/{token}"


def _mail(cfg: Config, to: str, subject: str, body: str, kind: str) -> EmailMessage:
    org = cfg.organization
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(org.name, addr_spec=portal_sender(org.domains[0], org.mail_from))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=org.domains[0])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    msg[NOTIFICATION_HEADER] = kind
    msg.set_content(body)
    msg["Content-Language"] = cfg.notification.language
    return msg


def invite_email(cfg: Config, to: str, token: str, days: int) -> EmailMessage:
    t = texts(cfg.notification.language)
    body = t["invite_mail_body"].format(
        org=cfg.organization.name, link=invite_url(cfg, token), days=days
    )
    return _mail(cfg, to, t["invite_mail_subject"], body, "invite")


def receipt_email(cfg: Config, rec: RecipientRecord) -> EmailMessage:
    lang, zone = cfg.notification.language, cfg.organization.timezone
    t = texts(lang)
    body = t["receipt_mail_body"].format(
        recipient=rec.address,
        sent=timestamp(rec.message.created_at, lang, zone),
        opened=timestamp(rec.opened_at, lang, zone),
        link=sent_url(cfg),
        org=cfg.organization.name,
    )
    msg = _mail(
        cfg, rec.message.sender, t["receipt_mail_subject"].format(recipient=rec.address), body,
        "receipt",
    )  # fmt: skip
    if rec.message.rfc822_id:  # threads under the original in the sender's mail program
        msg["In-Reply-To"] = rec.message.rfc822_id
        msg["References"] = rec.message.rfc822_id
    return msg


def send_read_receipt(portal: Portal, recipient_id: int) -> None:
    """After an open: when read receipts are on, mail the sender once for this recipient (the
    store lets one caller claim it, also with several portal processes). A failure is logged
    and audited, and not tried again: the sender sees the open on the sent items page."""
    if not portal.cfg.notification.read_receipts:
        return
    if not portal.store.claim_read_receipt(recipient_id):
        return
    rec = portal.store.recipient(recipient_id)
    if rec is None:
        return
    msg = receipt_email(portal.cfg, rec)
    org = portal.cfg.organization
    try:
        portal.mailer.send(
            [
                Outgoing(
                    portal_sender(org.domains[0], org.mail_from),
                    [rec.message.sender],
                    msg.as_bytes(policy=policy.SMTP),
                    f"read receipt to {rec.message.sender}",
                )
            ]
        )
    except DeliveryError as exc:
        log.warning("read receipt of %s for %s not sent: %s", rec.message.id, rec.address, exc)
        portal.store.record_event("read-receipt-failed", rec.message.id, rec.address, str(exc))
        return
    portal.store.record_event("read-receipt-sent", rec.message.id, rec.address, "")
