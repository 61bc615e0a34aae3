"""RFC 3464 delivery status notifications for recipients the policy could not serve (SPEC 1).

Pure: the original's headers, the envelope sender and the failures in, an `EmailMessage` out;
the milter submits it with an empty envelope sender (MAIL FROM:<>). The copy of the original's
headers drops the directive headers (they carry access codes and phone numbers) and Bcc.
Which failures it reports follows the client's RCPT TO parameters (RFC 3461 NOTIFY, ORCPT).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from typing import NamedTuple

from zivmilter.core.addresses import bare_address
from zivmilter.core.headers import is_directive
from zivmilter.core.message import decoded_header, utf8_text
from zivmilter.errors import MessageError

_STATUS = re.compile(r"^5\.\d{1,3}\.\d{1,3}$")
# Per-recipient fields (RFC 3464) are one line each, never RFC 2047-encoded words, which the
# default policy would make of a long value without spaces: lines may run to RFC 5322's limit.
_FIELDS = policy.default.clone(max_line_length=998)
#: The policy to write a report with (CRLF line ends).
WIRE_POLICY = policy.SMTP.clone(max_line_length=998)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Failure(NamedTuple):
    """One failed recipient: address, RFC 3463 status (5.x.y) and the reason in plain words;
    `original` is the client's ORCPT (RFC 3461), as `type; address`, when it gave one."""

    address: str
    status: str
    reason: str
    original: str | None = None


def reported_failures(
    failed: Iterable[tuple[str, str, str]], params: Mapping[str, Sequence[str]]
) -> list[Failure]:
    """The failures the DSN reports, from (RCPT argument, status, reason) and the ESMTP
    parameters of each RCPT argument: a recipient given with NOTIFY=NEVER, or a NOTIFY
    without FAILURE, is left out (RFC 3461 4.1); its ORCPT becomes the Original-Recipient
    field."""
    out: list[Failure] = []
    for raw, status, reason in failed:
        given: dict[str, str] = {}
        for param in params.get(raw, ()):
            key, _, value = param.partition("=")
            given.setdefault(key.strip().upper(), value.strip())
        notify = {n.strip().upper() for n in given.get("NOTIFY", "FAILURE").split(",")}
        if "FAILURE" not in notify:
            continue
        original = None
        if "ORCPT" in given:
            kind, _, xtext = given["ORCPT"].partition(";")
            original = f"{kind.strip()}; {xtext_decoded(xtext.strip())}"
        out.append(Failure(utf8_text(bare_address(raw)), status, utf8_text(reason), original))
    return out


def xtext_decoded(text: str) -> str:
    """RFC 3461 xtext: "+" and two upper-case hex digits stand for one byte (UTF-8 for an
    internationalized address)."""
    raw = text.encode("utf-8", "surrogateescape")
    decoded = re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
    return decoded.decode("utf-8", "replace")


def build_dsn(
    original_headers: Message,
    envelope_sender: str,
    failed: Sequence[tuple[str, str, str] | tuple[str, str, str, str | None]],
    reporting_mta: str,
    arrival: datetime,
    from_address: str | None = None,
) -> EmailMessage:
    """A multipart/report DSN to `envelope_sender` about the `failed` (address, status, reason).

    Raises MessageError for the null sender (no DSN about a DSN) and ValueError for a caller's
    mistake (no failures, a status that is not a permanent 5.x.y).
    """
    if not envelope_sender or envelope_sender == "<>":
        raise MessageError("no delivery report goes to the null sender <>")
    failures = [Failure(*f) for f in failed]
    if not failures:
        raise ValueError("a DSN needs at least one failed recipient")
    for f in failures:
        if not _STATUS.match(f.status):
            raise ValueError(f"{f.address}: {f.status!r} is not a permanent status 5.x.y")
    if arrival.tzinfo is None:
        arrival = arrival.replace(tzinfo=UTC)
    host = reporting_mta.strip().rstrip(".")

    msg = EmailMessage(policy=_FIELDS)
    # From: at the organization's domain (from_address) so its DKIM signer signs and aligns it.
    msg["From"] = f"Mail Delivery System <{from_address or f'MAILER-DAEMON@{host}'}>"
    msg["To"] = envelope_sender.strip("<>")
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=host)
    msg["Auto-Submitted"] = "auto-replied"
    # unfolded: a long Message-ID often comes folded onto a line of its own
    original_id = " ".join(str(original_headers.get("Message-ID", "")).split())
    if original_id:
        msg["In-Reply-To"] = original_id
        msg["References"] = original_id

    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "multipart/report; report-type=delivery-status"
    text = EmailMessage(policy=policy.default)
    text.set_content(_human_text(original_headers, failures, host))
    for part in (text, _delivery_status(failures, host, arrival), _headers_part(original_headers)):
        del part["MIME-Version"]  # set_content adds it to every part; the top level has it
        msg.attach(part)
    return msg


def _human_text(original: Message, failures: Sequence[Failure], host: str) -> str:
    subject = _one_line(decoded_header(original.get("Subject", "")))
    lines = [
        f"This is the mail system at host {host}.",
        "",
        "Your message could not be delivered to the recipients below. It was not sent to them",
        "in any form. The reason is given for each recipient.",
        "",
    ]
    if subject:
        lines += [f"Subject: {subject}", ""]
    for f in failures:
        lines += [f"<{f.address}>:", f"    {_one_line(f.reason)} ({f.status})", ""]
    lines += [
        "Recipients not listed here received your message as usual.",
        "The headers of your message are attached.",
    ]
    return "\n".join(lines) + "\n"


def _delivery_status(failures: Sequence[Failure], host: str, arrival: datetime) -> EmailMessage:
    # message/delivery-status is a list of header blocks; the email package serializes a
    # payload of Message objects exactly so (one block each, separated by blank lines).
    per_message = EmailMessage(policy=policy.default)
    per_message["Reporting-MTA"] = f"dns; {host}"
    per_message["Arrival-Date"] = format_datetime(arrival)
    blocks = [per_message]
    for f in failures:
        block = EmailMessage(policy=_FIELDS)
        if f.original:
            block["Original-Recipient"] = _ascii_line(f.original)
        kind = "rfc822" if f.address.isascii() else "utf-8"
        block["Final-Recipient"] = f"{kind}; {f.address}"
        block["Action"] = "failed"
        block["Status"] = f.status
        block["Diagnostic-Code"] = f"x-zivmilter; {_ascii_line(f.reason)}"
        blocks.append(block)
    part = EmailMessage(policy=policy.default)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload(blocks)  # type: ignore[arg-type]  # a list of blocks, see above
    return part


def _headers_part(original: Message) -> EmailMessage:
    lines = []
    for name, value in original.raw_items():
        if is_directive(name) or name.strip().lower() == "bcc":
            continue
        lines.append(f"{name}: {utf8_text(str(value))}")
    text = "\n".join(line.rstrip("\r\n") for line in lines) + "\n"
    part = EmailMessage(policy=policy.default)
    part.set_content(text, subtype="rfc822-headers")
    return part


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def _ascii_line(text: str) -> str:
    """Diagnostic-Code is ASCII text on one logical line (RFC 3464 2.3.6)."""
    return _one_line(text).encode("ascii", "replace").decode("ascii")
