"""A message's leaf parts as the portal numbers and names them, and which of them it offers as
attachments: one definition for the portal's view (portal/render.py) and for the gateway, which
keeps large attachments as blobs of their own at save time so that a download streams one blob
instead of parsing the whole message again (issue 15 item 7).

Pure: the `email` package does all MIME work (policy.default, as the portal reads it).
"""

from __future__ import annotations

import binascii
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from typing import BinaryIO

from zivmilter.core.message import clean_filename

_HEADER_MAX = 1024 * 1024  # a header block larger than this is not looked at any further
_CID_REF = re.compile(r"(?i)cid:([^\"'\s>)]+)")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]+")
_STEP = 1024 * 1024  # encoded characters decoded at a time


@dataclass(frozen=True)
class Layout:
    """Where a message's contents are: its bodies, its inline images, its attachments."""

    html: Message | None
    text: Message | None
    inline: dict[str, int]  # Content-ID (without <>) -> leaf index, for cid: images
    attached: tuple[tuple[int, Message], ...]  # (leaf index, part) offered for download


@dataclass(frozen=True)
class LargeAttachment:
    """An attachment decoded at save time, numbered and named as the portal shows it."""

    index: int
    filename: str
    content_type: str
    data: bytes


def layout(msg: EmailMessage) -> Layout:
    """The bodies (the HTML and plain-text alternatives), the images the HTML shows by cid:,
    and every other leaf: an attachment."""
    html_part = msg.get_body(preferencelist=("html",))
    text_part = msg.get_body(preferencelist=("plain",))
    bodies = {id(p) for p in (html_part, text_part) if p is not None}
    referenced = set(_CID_REF.findall(body_text(html_part))) if html_part is not None else set()
    inline: dict[str, int] = {}
    attached: list[tuple[int, Message]] = []
    for index, part in enumerate(leaves(msg)):
        if id(part) in bodies:
            continue
        cid = content_id(part)
        if cid and cid in referenced and part.get_content_maintype() == "image":
            inline[cid] = index
            continue
        attached.append((index, part))
    return Layout(html_part, text_part, inline, tuple(attached))


def large_attachments(source: BinaryIO, minimum: int) -> list[LargeAttachment]:
    """The attachments of the message in `source` whose decoded size is at least `minimum`.

    Cheap for ordinary mail: a message no larger than `minimum` (no part can be larger), or
    whose main type is text (then it is its own body), is not parsed. `source` must be
    seekable; it is left at an unspecified position."""
    source.seek(0, 2)
    if source.tell() <= minimum or top_level_type(source) == "text":
        return []
    source.seek(0)
    msg = BytesParser(policy=policy.default).parse(source)
    assert isinstance(msg, EmailMessage)
    found: list[LargeAttachment] = []
    for index, part in layout(msg).attached:
        encoded = part.get_payload()
        if isinstance(encoded, str) and len(encoded) < minimum:
            continue  # decoding only shrinks a part (base64 by a quarter)
        data = _decoded(part)
        if len(data) >= minimum:
            found.append(
                LargeAttachment(index, leaf_filename(part, index), part.get_content_type(), data)
            )
    return found


def _decoded(part: Message) -> bytes:
    """`leaf_payload(part)`, with less memory for base64 (a large attachment's usual form):
    the email package first copies the whole encoded text (about 3x the part in all)."""
    payload = part.get_payload()
    if isinstance(payload, str) and part.get("Content-Transfer-Encoding", "").lower() == "base64":
        data = _base64_in_steps(payload)
        if data is not None:
            return data
    return leaf_payload(part)


def _base64_in_steps(text: str) -> bytes | None:
    """Well-formed base64 decoded a megabyte at a time (what is not of its alphabet skipped, as
    the email package does); None for anything else (padding inside, a wrong length, non-ASCII):
    the email package's own decoding decides then."""
    pad = text.find("=")
    if pad != -1 and text[pad:].strip("= \t\r\n"):
        return None
    out = bytearray()
    rest = b""
    for start in range(0, len(text), _STEP):
        try:
            piece = rest + _NOT_BASE64.sub(b"", text[start : start + _STEP].encode("ascii"))
        except UnicodeEncodeError:
            return None
        cut = len(piece) - len(piece) % 4
        try:
            out += binascii.a2b_base64(piece[:cut])
        except binascii.Error:
            return None
        rest = piece[cut:]
    return None if rest else bytes(out)


def leaves(msg: Message) -> list[Message]:
    """The non-multipart parts in order; an attached message (message/rfc822) is one leaf."""

    def walk(part: Message) -> Iterator[Message]:
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    yield from walk(sub)
        else:
            yield part

    return list(walk(msg))


def leaf_payload(part: Message) -> bytes:
    """The decoded bytes of a leaf part (an attached message as it was)."""
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        inner = part.get_payload(0)
        if isinstance(inner, Message):
            return inner.as_bytes(policy=policy.SMTP)
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def leaf_filename(part: Message, index: int) -> str:
    """The name a leaf is offered under: its own (cleaned), or one made from its type."""
    name = None
    try:
        name = part.get_filename()
    except (ValueError, LookupError):
        name = None
    if not name and part.get_content_type() == "message/rfc822":
        name = "message.eml"
    if name:
        name = clean_filename(name)
    if not name:
        ext = mimetypes.guess_extension(part.get_content_type()) or ".bin"
        name = f"attachment-{index + 1}{ext}"
    return name


def body_text(part: Message) -> str:
    """A text part's content; UTF-8 with replacements when its charset is unknown or lies."""
    if isinstance(part, EmailMessage):
        try:
            content = part.get_content()
            if isinstance(content, str):
                return content
        except (LookupError, UnicodeError, ValueError, AssertionError):
            pass  # an unknown or lying charset: fall back to UTF-8 with replacements
    raw = part.get_payload(decode=True)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


def content_id(part: Message) -> str | None:
    cid = part.get("Content-ID")
    if not cid:
        return None
    return str(cid).strip().strip("<>").strip() or None


def top_level_type(source: BinaryIO) -> str:
    """The message's main content type, from its header block alone (the body is not read:
    a header parser given the whole file would hold a 50 MB body in memory)."""
    source.seek(0)
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < _HEADER_MAX:
        chunk = source.read(65536)
        if not chunk:
            break
        head += chunk
    return BytesHeaderParser(policy=policy.compat32).parsebytes(head).get_content_maintype()
