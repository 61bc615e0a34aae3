"""The text of a message for the content rules (content.py): text/plain parts, text/html parts
reduced to text, and attachment names. Pure: bytes in, `Part` values out.

The `email` package does all MIME work (compat32: robust against real-world mail). Only the first
defaults.CONTENT_MAX_MESSAGE_BYTES of a message are parsed and CONTENT_MAX_TEXT_BYTES of text
kept: a huge message is scanned in its first megabytes, where the text parts are. A message that
is not multipart (most of them) is not parsed again: its body is set as the payload of a message
made from the header fields the MTA already gave, and `email` decodes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from html import unescape

from zivmilter import defaults
from zivmilter.core.content import ATTACHMENT_NAME, TEXT_HTML, TEXT_PLAIN, Part
from zivmilter.core.message import decoded_header

Headers = Sequence[tuple[str, str]]

_MIME_FIELDS = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})


def parts_of_message(data: bytes, scope: Sequence[str]) -> list[Part]:
    """The text parts of a whole message (header block and body), as read from a file."""
    bounded = data[: defaults.CONTENT_MAX_MESSAGE_BYTES]
    return parts_of(BytesParser(policy=compat32).parsebytes(bounded), scope)


def parts_of_body(
    headers: Headers, data: bytes, body_offset: int, scope: Sequence[str]
) -> list[Part]:
    """The text parts of a message the MTA handed over: its header fields as given, and the whole
    message in `data` (the body from `body_offset`)."""
    msg = Message(policy=compat32)
    for name, value in headers:
        if name.strip().lower() in _MIME_FIELDS:
            msg[name] = value
    if msg.get_content_maintype() == "multipart" or msg.get_content_maintype() == "message":
        return parts_of_message(data, scope)
    body = data[body_offset : body_offset + defaults.CONTENT_MAX_MESSAGE_BYTES]
    msg.set_payload(body.decode("ascii", "surrogateescape"))
    return parts_of(msg, scope)


def parts_of(msg: Message, scope: Sequence[str]) -> list[Part]:
    out: list[Part] = []
    budget = defaults.CONTENT_MAX_TEXT_BYTES
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name is not None and "attachment_names" in scope:
            out.append(Part(ATTACHMENT_NAME, decoded_header(name)))
        if "text" not in scope or budget <= 0 or name is not None:
            continue  # a named text part is an attachment: its text is not the message's
        if part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype not in (TEXT_PLAIN, TEXT_HTML):
            continue
        text = _decoded(part)[:budget]
        if ctype == TEXT_HTML:
            text = html_text(text)
        budget -= len(text)
        out.append(Part(ctype, text))
    return out


def _decoded(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, "replace")
    except LookupError:  # an unknown charset: read it as UTF-8
        return raw.decode("utf-8", "replace")


# Tags that end a line of text; other tags (b, span, a...) join their text to what is beside it.
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot",
        "th", "thead", "tr", "ul",
    }
)  # fmt: skip
_SKIP = frozenset({"script", "style", "head", "title", "template"})
# A tag, a comment (to its end, or the end of the text) or a declaration. A tag ends at the next
# `<` at the latest, so that unclosed tags cost linear time, not quadratic.
_TAG = re.compile(r"<!--.*?(?:-->|\Z)|<(/?)([A-Za-z][A-Za-z0-9]*)\b[^<>]*>|<[!?/][^<>]*>", re.S)


def html_text(html: str) -> str:
    """The text a reader sees of an HTML part: tags gone, entities decoded, no script or style.

    Not an HTML parser (html.parser costs ten times as much per message): tags are cut where a
    browser would see them, which is all a search for numbers needs.
    """
    chunks: list[str] = []
    skipping: str | None = None  # inside <script> and the like, until its end tag
    pos = 0
    for m in _TAG.finditer(html):
        if skipping is None:
            chunks.append(html[pos : m.start()])
        pos = m.end()
        closing, name = m.group(1), (m.group(2) or "").lower()
        if skipping is not None:
            if closing and name == skipping:
                skipping = None
            continue
        if name in _SKIP and not closing:
            skipping = name
        elif name in _BLOCK:
            chunks.append("\n")
    if skipping is None:
        chunks.append(html[pos:])
    return unescape("".join(chunks))
