"""The text of a message for the content rules (content.py): text/plain parts, text/html parts
reduced to text, and attachment names. Pure: bytes in, `Part` values out.

The `email` package does all MIME work (compat32: robust against real-world mail). Only the first
defaults.CONTENT_MAX_MESSAGE_BYTES of a message are parsed and CONTENT_MAX_TEXT_BYTES of text
kept: a huge message is scanned in its first megabytes, where the text parts are. A message that
is not multipart (most of them) is not parsed again: the header fields the MTA already gave say
its type, charset and transfer encoding. The common ones (a plain Content-Type with a charset,
7bit, 8bit or quoted-printable, no Content-Disposition) are read here as `email` reads them, at a
tenth of the cost of its header parameter parsing (the content rules' budget is about 90 us per
message, issue 17); anything else goes through `email` as before.

Also how much text an encrypted PDF of a message would lay out (`pdf_text_bytes`), which
`encryption.pdf_max_text_bytes` bounds: the same `email` reading, the body the PDF takes.
"""

from __future__ import annotations

import functools
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from html import unescape

from zivmilter import defaults
from zivmilter.core.attachtext import kind_of
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
    fields: dict[str, str] = {}
    for name, value in headers:
        key = name.strip().lower()
        if key in _MIME_FIELDS:
            # given twice, or a name with spaces that `email` would not find: it decides, below
            twice = key in fields or key != name.lower()
            fields[key] = "" if twice else value
    simple = _single_text(fields, data, body_offset, scope)
    if simple is not None:
        return simple
    msg = Message(policy=compat32)
    for name, value in headers:
        if name.strip().lower() in _MIME_FIELDS:
            msg[name] = value
    if msg.get_content_maintype() == "multipart" or msg.get_content_maintype() == "message":
        return parts_of_message(data, scope)
    body = data[body_offset : body_offset + defaults.CONTENT_MAX_MESSAGE_BYTES]
    msg.set_payload(body.decode("ascii", "surrogateescape"))
    return parts_of(msg, scope)


# A Content-Type of tokens and simple (quoted) values only: what `email` reads from it is then
# plain. Anything else (RFC 2231 `*` parameters, quoted semicolons or backslashes) goes to `email`.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_SIMPLE_TYPE = re.compile(
    rf"\s*({_TOKEN}/{_TOKEN})\s*((?:;\s*[A-Za-z0-9_.-]+\s*=\s*(?:{_TOKEN}|\"[^\"\\;]*\")\s*)*);?\s*",
    re.ASCII,
)
_PARAM = re.compile(r';\s*([A-Za-z0-9_.-]+)\s*=\s*("?)([^";]*?)\2\s*(?=;|$)', re.ASCII)
_PLAIN_ENCODINGS = frozenset({"7bit", "8bit", "binary", ""})


_PLAIN_TEXT = (TEXT_PLAIN, "")  # `email`'s default without a Content-Type


@functools.lru_cache(maxsize=256)
def _plain_type(value: str) -> tuple[str, str] | None:
    """(type, charset) of a Content-Type field of a single part as `email` reads them; None
    when `email` must read it (not plain, a file name, multipart or message). Kept for the
    values seen last: most messages come with one of a few Content-Types."""
    m = _SIMPLE_TYPE.fullmatch(value)
    if m is None:
        return None
    params: dict[str, str] = {}
    for k, _, v in _PARAM.findall(m.group(2)):
        params.setdefault(k.lower(), v)  # `email` takes the first of a name given twice
    if "name" in params:
        return None  # a file name: an attachment, for `email` to name
    ctype = m.group(1).lower()
    if ctype.split("/")[0] in ("multipart", "message"):
        return None
    return ctype, params.get("charset", "").lower()


def _single_text(
    fields: dict[str, str], data: bytes, body_offset: int, scope: Sequence[str]
) -> list[Part] | None:
    """The text of a single-part message whose MIME fields are plain, read without `email`, as
    `parts_of` would read it; None when they are not plain (then `email` reads them)."""
    if "content-disposition" in fields or any(not v.strip() for v in fields.values()):
        return None  # a disposition (a file name), a field given twice or empty: `email` decides
    cte = fields.get("content-transfer-encoding", "").lower()  # as `email` compares it, unstripped
    if cte not in _PLAIN_ENCODINGS and cte != "quoted-printable":
        return None  # base64, uuencode, or an unknown name
    value = fields.get("content-type")
    if value is None:
        plain: tuple[str, str] | None = _PLAIN_TEXT
    elif "name" in value.lower():  # a file name (perhaps with a number in it) is not kept
        plain = _plain_type.__wrapped__(value)
    else:
        plain = _plain_type(value)
    if plain is None:
        return None
    ctype, charset = plain
    if "text" not in scope or ctype not in (TEXT_PLAIN, TEXT_HTML):
        return []
    body = data[body_offset : body_offset + defaults.CONTENT_MAX_MESSAGE_BYTES]
    if cte == "quoted-printable":
        body = quopri.decodestring(body)
    try:
        text = body.decode(charset or "utf-8", "replace")
    except LookupError:  # an unknown charset: read it as UTF-8
        text = body.decode("utf-8", "replace")
    text = text[: defaults.CONTENT_MAX_TEXT_BYTES]
    return [Part(ctype, html_text(text) if ctype == TEXT_HTML else text)]


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


# ---------------------------------------------------------------------------------------------
# the size of the text an encrypted PDF lays out (encryption.pdf_max_text_bytes)

# The header fields the PDF prints above the body (mail/pdf.py's _HEADERS).
_PDF_FIELDS = frozenset({"from", "to", "cc", "date", "subject"})


def pdf_text_bytes(headers: Headers, data: bytes, body_offset: int) -> int:
    """The size in UTF-8 bytes of the text an encrypted PDF lays out (mail/pdf.py): the From,
    To, Cc, Date and Subject fields as given, and the body: the first plain-text body, or else
    the text of the first HTML body, decoded, found as `email`'s get_body finds them.

    `data` is the whole message as the MTA handed it, its body from `body_offset`. A message
    that is not multipart is not parsed: the header fields the MTA gave say how to read its
    body; a multipart one is parsed here (compat32), the caller bounds its size."""
    fields = Message(policy=compat32)
    for name, value in headers:
        if name.strip().lower() in _MIME_FIELDS:
            fields[name] = value
    if fields.get_content_maintype() == "multipart":
        return _fields_bytes(headers) + _multipart_body_bytes(data, body_offset)
    fields.set_payload(data[body_offset:].decode("ascii", "surrogateescape"))
    return _fields_bytes(headers) + _body_bytes(fields)


def _multipart_body_bytes(data: bytes, body_offset: int) -> int:
    """The body's text of a multipart message. A large one is parsed in its first
    defaults.PDF_TEXT_PARSE_BYTES first, where most mail has its plain-text body (attachments
    after it): a parse of 10 MB of attachments costs a fifth of a second. When no plain-text
    body ends there (another part starts after it), the whole message is parsed."""
    cut = body_offset + defaults.PDF_TEXT_PARSE_BYTES
    if len(data) > cut:
        head = BytesParser(policy=compat32).parsebytes(data[:cut])
        plain = _first_body(head, "plain")
        leaves = [p for p in head.walk() if not p.is_multipart()]
        if plain is not None and plain is not leaves[-1]:  # complete: a part follows it
            return _utf8_bytes(_decoded(plain))
    return _body_bytes(BytesParser(policy=compat32).parsebytes(data))


def pdf_text_bytes_of_message(data: bytes) -> int:
    """`pdf_text_bytes` of a whole message read from a file (`explain`)."""
    msg = BytesParser(policy=compat32).parsebytes(data)
    return _fields_bytes([(n, str(v)) for n, v in msg.items()]) + _body_bytes(msg)


def _fields_bytes(headers: Headers) -> int:
    """The fields as the PDF prints them: folding and runs of white space as one space."""
    return sum(
        _utf8_bytes(" ".join(str(value).split()))
        for name, value in headers
        if name.strip().lower() in _PDF_FIELDS
    )


def _body_bytes(msg: Message) -> int:
    plain = _first_body(msg, "plain")
    if plain is not None:
        return _utf8_bytes(_decoded(plain))
    html = _first_body(msg, "html")
    return _utf8_bytes(html_text(_decoded(html))) if html is not None else 0


def _utf8_bytes(text: str) -> int:
    """UTF-8 bytes, a line end one byte (CRLF as the MTA passes it, LF in a saved file)."""
    return len(text.encode("utf-8", "surrogateescape")) - text.count("\r\n")


def _first_body(part: Message, subtype: str) -> Message | None:
    """The first text/`subtype` part that is a body, as EmailMessage.get_body walks: no
    attachment, and of a multipart/related only its start part."""
    if part.get_content_disposition() == "attachment":
        return None
    maintype, _, sub = part.get_content_type().partition("/")
    if maintype == "text":
        return part if sub == subtype else None
    if maintype != "multipart" or not part.is_multipart():
        return None
    subparts = [p for p in part.get_payload() if isinstance(p, Message)]
    if sub == "related" and subparts:
        start = part.get_param("start")
        chosen = [p for p in subparts if isinstance(start, str) and p.get("content-id") == start]
        subparts = chosen[:1] or subparts[:1]
    for subpart in subparts:
        found = _first_body(subpart, subtype)
        if found is not None:
            return found
    return None


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


# ---------------------------------------------------------------------------------------------
# attachments whose text the content rules may read (scope `attachment_text`)


@dataclass(frozen=True)
class Attachment:
    """An attachment as it came: its name, type, the extractor that reads it (attachtext.py;
    None: none does) and its decoded bytes (None when larger than the limit: not decoded)."""

    filename: str | None
    content_type: str
    kind: str | None
    size: int  # bytes as sent (encoded), a bound on the decoded size
    data: bytes | None

    def __repr__(self) -> str:  # the content stays out of logs and tracebacks
        return f"Attachment({self.content_type}, {self.size} bytes)"


def attachments_of_message(data: bytes, max_bytes: int) -> list[Attachment]:
    """The attachments of a whole message (header block and body) that an extractor reads, in
    the message's order; one of more than `max_bytes` as sent is listed without its data."""
    bounded = data[: defaults.CONTENT_MAX_MESSAGE_BYTES]
    msg = BytesParser(policy=compat32).parsebytes(bounded)
    out: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        disposition = part.get_content_disposition()
        if name is None and disposition != "attachment":
            continue
        filename = decoded_header(name) if name is not None else None
        ctype = part.get_content_type()
        kind = kind_of(filename, ctype)
        if kind is None:
            continue
        raw = part.get_payload()
        size = len(raw) if isinstance(raw, str) else 0
        payload = part.get_payload(decode=True) if size <= max_bytes * 4 // 3 + 4096 else None
        body = payload if isinstance(payload, bytes) and len(payload) <= max_bytes else None
        out.append(Attachment(filename, ctype, kind, len(body) if body else size, body))
    return out
