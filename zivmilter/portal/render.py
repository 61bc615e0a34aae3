"""What the portal shows of a stored message: its headers, body, inline images and attachments.

Pure: message bytes in, a `MessageView` out; the `email` package does all MIME work. HTML bodies
are sanitized with nh3 (ammonia): no scripts, no event handlers, no forms, only a safe subset of
CSS, and no remote loads unless the reader consents; `cid:` images point at the portal instead.
The app (app.py) serves the sanitized HTML in a sandboxed frame under its own strict CSP.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

import nh3

from zivmilter.core.message import clean_filename
from zivmilter.mail.parts import body_text, layout, leaf_filename, leaf_payload, leaves

# re-exported: the portal's callers know them from here
__all__ = ["clean_filename", "leaf_payload", "leaves"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Attachment:
    index: int  # position among the message's leaf parts (stable for one stored message)
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    subject: str
    sender: str
    to: str
    cc: str
    date: str
    message_id: str
    text: str | None  # the plain-text body (or alternative)
    html: str | None  # the HTML body, NOT sanitized: use `sanitize_html`
    attachments: tuple[Attachment, ...]
    inline: dict[str, int]  # Content-ID (without <>) -> leaf index, for cid: images
    # Kept views only (`view_to_bytes`): the HTML body as `sanitize_html` gives it without
    # remote images, its inline images at `inline_mark` + leaf index (`framed_html`), so that
    # a view of the frame need not sanitize it again.
    safe_html: str | None = None
    inline_mark: str = ""


def parse(data: bytes) -> tuple[EmailMessage, MessageView]:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    found = layout(msg)
    attachments = tuple(
        Attachment(i, leaf_filename(part, i), part.get_content_type(), len(leaf_payload(part)))
        for i, part in found.attached
    )
    view = MessageView(
        subject=_header(msg, "Subject"),
        sender=_addresses(msg, "From"),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        date=_header(msg, "Date"),
        message_id=_header(msg, "Message-ID"),
        text=body_text(found.text) if found.text is not None else None,
        html=body_text(found.html) if found.html is not None else None,
        attachments=attachments,
        inline=found.inline,
    )
    return msg, view


_VIEW_FORMAT = 2  # 2: with safe_html
MAX_KEPT_VIEW = 2 * 1024 * 1024  # characters of text + HTML worth keeping, instead of parsing


def view_to_bytes(view: MessageView) -> bytes | None:
    """The view as JSON for the store (Store.save_portal_view); None when it is too large to be
    worth keeping (such a message is parsed on every view instead)."""
    if len(view.text or "") + len(view.html or "") > MAX_KEPT_VIEW:
        return None
    if view.html is not None and view.safe_html is None:
        # A mark no message can hold (it is drawn after the message was written): the frame
        # replaces it with the recipient's own part URLs.
        mark = f"/zivmilter-inline-{secrets.token_hex(12)}/"

        def inline_url(cid: str) -> str | None:
            index = view.inline.get(cid)
            return None if index is None else f"{mark}{index}"

        safe = sanitize_html(view.html, inline_url)
        view = dataclasses.replace(view, safe_html=safe.html, inline_mark=mark)
    data = dataclasses.asdict(view)
    data["format"] = _VIEW_FORMAT
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def view_from_bytes(data: bytes) -> MessageView | None:
    """A kept view, or None when it is from another format (then the message is parsed)."""
    try:
        raw = json.loads(data)
        if raw.pop("format", None) != _VIEW_FORMAT:
            return None
        raw["attachments"] = tuple(Attachment(**a) for a in raw["attachments"])
        return MessageView(**raw)
    except (ValueError, TypeError, KeyError):
        return None


def framed_html(view: MessageView, parts: str) -> str | None:
    """The kept sanitized HTML body (no remote images) with its inline images at `parts` +
    leaf index: what `sanitize_html(view.html, ...)` gives for those URLs. None when the view
    keeps none, or `parts` is not plain URL text (then `sanitize_html` decides its escaping)."""
    if view.safe_html is None or not view.inline_mark or not _PLAIN_URL.fullmatch(parts):
        return None
    return view.safe_html.replace(view.inline_mark, parts)


_PLAIN_URL = re.compile(r"[A-Za-z0-9/_.~-]*")

# --- HTML ------------------------------------------------------------------------------------

_TAGS = set(nh3.ALLOWED_TAGS) | {"font"}
_ATTRIBUTES: dict[str, set[str]] = {k: set(v) for k, v in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = {"style", "title", "lang", "dir", "align", "valign", "bgcolor"}
_ATTRIBUTES["font"] = {"color", "face", "size"}
for _tag in ("table", "td", "th", "col", "colgroup"):
    _ATTRIBUTES.setdefault(_tag, set()).update(
        {"width", "height", "border", "cellpadding", "cellspacing"}
    )
for _tag in _ATTRIBUTES:
    if _tag != "*":
        _ATTRIBUTES[_tag] -= _ATTRIBUTES["*"]  # nh3 refuses an attribute listed twice
# CSS that formats text and boxes; nothing that loads (url(), @import), positions over the
# page or animates.
_STYLE = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "font-variant", "text-align", "text-decoration", "text-indent", "text-transform",
    "line-height", "letter-spacing", "word-spacing", "white-space", "vertical-align",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "border-radius",
    "width", "height", "max-width", "min-width", "max-height", "min-height",
    "display", "list-style-type", "table-layout", "direction", "unicode-bidi",
}  # fmt: skip


@dataclass(frozen=True)
class SafeHtml:
    html: str
    blocked: int  # remote images left out (the reader may consent to load them)


def sanitize_html(
    html: str, inline_url: Callable[[str], str | None], allow_remote: bool = False
) -> SafeHtml:
    """The HTML without anything active; `inline_url(cid)` gives the portal URL of an image."""
    blocked = 0
    produced: set[str] = set()

    def attribute(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attr == "src":
            v = value.strip()
            if v.lower().startswith("cid:"):
                url = inline_url(v[4:].strip("<>"))
                if url is not None:
                    produced.add(url)
                return url
            if v.lower().startswith(("https://", "http://")):
                if allow_remote:
                    return v
                blocked += 1
                return None
            return None
        if tag == "a" and attr == "href" and value.strip().lower().startswith("cid:"):
            return None
        return value

    clean = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "template", "noscript"},
        attributes=_ATTRIBUTES,
        attribute_filter=attribute,
        # cid: must survive the scheme check to reach `attribute`, which rewrites it.
        url_schemes={"http", "https", "mailto", "tel", "cid"},
        # Relative URLs would reach the portal with the reader's cookies: only our own rewrites.
        url_relative=lambda url: url if url in produced else None,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=_STYLE,
        strip_comments=True,
    )
    return SafeHtml(clean, blocked)


# --- helpers -----------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):
        # A header the default policy cannot parse: show its raw text rather than fail.
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    return _CONTROL.sub(" ", str(value)).strip() if value is not None else ""


def _addresses(msg: Message, name: str) -> str:
    """Mailboxes as people write them (`Name <addr>`), without the quoting of the wire form."""
    try:
        header = msg.get(name)
        found = getattr(header, "addresses", None)
    except (ValueError, IndexError, TypeError):
        found = None
    if not found:
        return _header(msg, name)
    shown = [f"{a.display_name} <{a.addr_spec}>" if a.display_name else a.addr_spec for a in found]
    return _CONTROL.sub(" ", ", ".join(shown)).strip()
