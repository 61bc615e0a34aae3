"""Reading what the core needs from a message's header block: robust against real-world mail.

Headers are read with the compat32 policy (raw strings, never an exception on odd headers); the
`email` package does all MIME work, nothing here parses MIME by hand.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from email._policybase import Compat32
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser

from zivmilter.core.addresses import header_addresses, normalize_address
from zivmilter.core.policy import Envelope
from zivmilter.errors import MessageError

Headers = Sequence[tuple[str, str]]


def utf8_text(value: str) -> str:
    """A string read with surrogateescape (8-bit bytes kept as surrogates, as pymilter and the
    `email` parser keep them) as text that can be written out: those bytes read as UTF-8, and
    what is not UTF-8 as U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Utf8Headers(Compat32):
    """compat32, except that 8-bit header bytes read as UTF-8 (RFC 6532), as pymilter reads
    them, where compat32 would show U+FFFD for each byte (a sender named Jöhn became J��hn)."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return utf8_text(value)


READ_POLICY = _Utf8Headers()


def parse_header_block(data: bytes) -> Message:
    """The header block of a message as an `email` Message (compat32 values, UTF-8 read)."""
    return BytesHeaderParser(policy=READ_POLICY).parsebytes(data)


def header_message(headers: Headers) -> Message:
    """Header fields as the MTA gave them (name, value) as an `email` Message, without parsing
    the header block again."""
    msg = Message(policy=READ_POLICY)
    for name, value in headers:
        msg[name] = value
    return msg


def read_headers(data: bytes) -> list[tuple[str, str]]:
    """The header fields of a message, in order; MessageError when it has none."""
    msg = parse_header_block(data)
    items = [(str(k), str(v)) for k, v in msg.items()]
    if not items:
        raise MessageError("not an email message: no header fields found")
    return items


def decoded_header(value: object) -> str:
    """Header text for people: RFC 2047 encoded words decoded (by `email`), folding undone."""
    text = str(value or "")
    if "=?" not in text:  # no encoded word (what decode_header looks for): nothing to decode
        return " ".join(text.split())
    try:
        decoded = str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):  # a broken encoded word: show it as it is
        decoded = text
    return " ".join(decoded.split())


def values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    want = name.lower()
    return [v for k, v in headers if k.lower() == want]


def first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    found = values(headers, name)
    return found[0] if found else None


def addresses(headers: Iterable[tuple[str, str]], *names: str) -> list[str]:
    """Normalized mailboxes named in the given address headers, without duplicates."""
    hs = list(headers)
    return header_addresses([v for n in names for v in values(hs, n)])


def build_envelope(sender: str, recipients: Iterable[str], headers: Headers) -> Envelope:
    """Normalize an envelope as the MTA gave it; MessageError names an unusable address."""
    rcpts: list[str] = []
    for r in recipients:
        norm = normalize_address(r)
        if norm not in rcpts:
            rcpts.append(norm)
    sender_norm = normalize_address(sender) if sender and sender != "<>" else ""
    return Envelope(sender_norm, tuple(rcpts), frozenset(addresses(headers, "To", "Cc")))


_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_PATHISH = re.compile(r'[\\/:*?"<>|]+')


def clean_filename(name: str) -> str:
    """A file name safe to show, offer for download or attach: no path, no control characters,
    and no invisible format characters (a right-to-left override makes `invoice\u202efdp.exe`
    look like a PDF)."""
    visible = "".join(c for c in name if unicodedata.category(c) != "Cf")
    return _PATHISH.sub("_", _NAME_CONTROL.sub(" ", visible)).strip(" .")[:200]
