"""Email the portal sends through the MTA: verification codes to recipients, secure replies to the
original sender. Pure builders (`EmailMessage` out); the app hands them to the re-injection
listener (reinject.py), so they leave through the same Postfix as every other message.
Texts are Jinja2 templates in portal/templates/mail/, their words from the gettext catalogs
(zivmilter/i18n.py) in the mail's language.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import jinja2

from zivmilter import defaults, i18n
from zivmilter.mail.notification import NOTIFICATION_HEADER
from zivmilter.portal.i18n import texts

_TEMPLATES = Path(__file__).parent / "templates" / "mail"

#: Marks a reply written in the portal (lets the milter and admins recognize it).
REPLY_HEADER = "X-Zivmilter-Portal-Reply"


# A MIME type as RFC 2045 allows it (tokens), lowercased: what is left of an upload's
# Content-Type once its parameters are dropped.
_BARE_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
#: Uploads of these types are refused: a message or a multipart inside a reply would bring its
#: own headers (a forged internal From) and parts past the name the portal cleaned.
REFUSED_UPLOAD_TYPES = ("multipart", "message")


def bare_type(content_type: str | None) -> str:
    """An uploaded file's Content-Type as type/subtype only: the uploader's parameters (a
    `name=` that differs from the cleaned file name, a charset) are never passed on."""
    head = (content_type or "").split(";", 1)[0].strip().lower()
    return head if _BARE_TYPE.match(head) else "application/octet-stream"


def refused_upload(content_type: str) -> bool:
    return bare_type(content_type).partition("/")[0] in REFUSED_UPLOAD_TYPES


@dataclass(frozen=True)
class ReplyFile:
    filename: str
    content_type: str
    data: bytes


def portal_sender(org_domain: str, mail_from: str | None = None) -> str:
    """From and envelope sender of portal mail: organization.mail_from, else noreply@domain."""
    return mail_from or f"{defaults.PORTAL_MAIL_FROM}@{org_domain}"


def code_email(
    *,
    to: str,
    code: str,
    sender_text: str,
    language: str,
    org_name: str,
    org_domain: str,
    mail_from: str | None = None,
) -> EmailMessage:
    """The verification-code email for email-verification recipients."""
    body = (
        _env()
        .get_template("code.txt")
        .render(code=code, sender=sender_text, org_name=org_name, minutes=_minutes(), lang=language)
    )
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(org_name, addr_spec=portal_sender(org_domain, mail_from))
    msg["To"] = to
    msg["Subject"] = texts(language)["code_mail_subject"]
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=org_domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    msg[NOTIFICATION_HEADER] = "code"
    msg.set_content(body)
    msg["Content-Language"] = language
    return msg


def sms_text(*, code: str, sender_text: str, language: str) -> str:
    return (
        _env()
        .get_template("sms.txt")
        .render(code=code, sender=sender_text, minutes=_minutes(), lang=language)
        .strip()
    )


def reply_email(
    *,
    author: str,
    to: str,
    subject: str,
    in_reply_to: str,
    references: str,
    sent: str,
    text: str,
    files: Sequence[ReplyFile],
    language: str,
    org_name: str,
    org_domain: str,
    mail_from: str | None = None,
) -> EmailMessage:
    """A recipient's secure reply, to the original sender (inside the organization).

    From is the portal's own address with the author's name, so the organization's mail system
    does not see a foreign domain it cannot authenticate; Reply-To is the author, and answering
    it goes through the milter, which secures it again.
    """
    body = (
        _env()
        .get_template("reply.txt")
        .render(
            lang=language,
            author=author,
            org_name=org_name,
            subject=subject,
            sent=sent,
            text=text,
            files=[f.filename for f in files],
        )
    )
    msg = EmailMessage(policy=policy.SMTP)
    via = texts(language)["reply_via"].format(author=author)
    msg["From"] = Address(via, addr_spec=portal_sender(org_domain, mail_from))
    msg["Reply-To"] = author
    msg["To"] = to
    msg["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=org_domain)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = f"{references} {in_reply_to}".strip()
    msg[REPLY_HEADER] = author
    msg.set_content(body)
    for f in files:
        maintype, _, subtype = bare_type(f.content_type).partition("/")
        if maintype in REFUSED_UPLOAD_TYPES:  # the portal refuses them; never as they are
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(f.data, maintype=maintype, subtype=subtype, filename=f.filename)
    return msg


def _minutes() -> int:
    return max(1, defaults.OTP_VALIDITY_SECONDS // 60)


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=False,  # plain text mail
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    i18n.install_gettext(env)
    return env
