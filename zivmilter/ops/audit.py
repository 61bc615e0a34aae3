"""The audit export for compliance (NEN 7510/7513 logging duties): the store's audit events as
JSON lines, one event per line, with nothing secret in any field.

The store never writes a code, a password or a whole phone number into its audit log; this
module makes sure of it at the way out as well, since a detail can quote a mail server's or an
SMS provider's error text: phone numbers are masked as on the portal, and a long random-looking
string (a link token) is replaced by "[redacted]". Message, reply and attachment ids (lowercase
hex) stay: they are what an auditor follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from zivmilter.mail.notification import mask_phone
from zivmilter.store.records import AuditEvent

REDACTED = "[redacted]"
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,}\d(?!\w)")
_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{20,}(?![\w-])")
_HEX_ID = re.compile(r"[0-9a-f]+")


def scrub(text: str) -> str:
    """`text` with phone numbers masked and token-like strings redacted."""
    text = _TOKEN.sub(lambda m: m[0] if _HEX_ID.fullmatch(m[0]) else REDACTED, text)
    return _PHONE.sub(lambda m: mask_phone(m[0]), text)


def _event_name(event: AuditEvent) -> str:
    # purge_expired revokes with the reason "expired": an auditor asks for expiries by name
    if event.event == "revoked" and event.detail == "expired":
        return "expired"
    return event.event


def record(event: AuditEvent) -> dict[str, str | None]:
    return {
        "at": event.at.isoformat(),
        "event": _event_name(event),
        "message_id": event.message_id,
        "recipient": event.recipient,
        "detail": scrub(event.detail),
    }


def json_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield json.dumps(record(event), ensure_ascii=False)
