"""The encrypted PDF (issue 26, `encryption.pdf`): a message and its attachments in one PDF that
opens with the recipient's access code.

The text (From, To, Cc, Date, Subject on top; the plain-text body, or the HTML body reduced to
its text) is laid out by fpdf2 in DejaVu Sans (Debian's fonts-dejavu-core: every Latin accent
and more); every other part is embedded as a PDF file attachment, bytes unchanged; pikepdf
(qpdf) then encrypts the whole with AES-256 (security handler R6), the access code as the user
password and a random owner password. Pure: bytes in, bytes out; the gateway sends it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.header import decode_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from html import unescape

import pikepdf
from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos

from zivmilter.core.bodytext import html_text
from zivmilter.i18n import N_, translate
from zivmilter.mail.parts import body_text, layout, leaf_filename, leaf_payload, leaves
from zivmilter.mail.pdffonts import add_fonts

FONT_DIR = "/usr/share/fonts/truetype/dejavu"  # Debian's fonts-dejavu-core
# fpdf2's font subsetting (fontTools) logs at INFO the glyphs each PDF uses: about 50 lines per
# message in the milter's log, naming the characters of secured content. Warnings only.
logging.getLogger("fontTools").setLevel(logging.WARNING)
_FONTS = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
_HEADERS = ("From", "To", "Cc", "Date", "Subject")
# Controls other than tab and newline would draw as boxes; C1 controls and lone surrogates too.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACE = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORDS = re.compile(r" *[^ ]+| +")  # a word with the spaces before it
_A_TAG = re.compile(r"(?i)<(/?)a\b([^<>]*)>")
_HREF = re.compile(r"""(?i)\bhref\s*=\s*["']?([^"'\s<>]+)""")
_SHOWN_SCHEMES = re.compile(r"(?i)(https?|mailto|ftp):")
_ITEM = re.compile(r"(?i)(<li\b[^<>]*>)")
_PRE_TAG = re.compile(r"(?i)<(/?)pre\b[^<>]*>")


# The English of the labels, each a message of the catalogs (zivmilter/locale).
_HEADER_LABELS = (N_("From"), N_("To"), N_("Cc"), N_("Date"), N_("Subject"))
_ATTACHMENTS = N_("Attachments (open them from your PDF reader's attachment panel):")
_UNRENDERABLE = N_("Some characters cannot be shown here; the whole text is attached: {name}")


@dataclass(frozen=True)
class Labels:
    """The words printed beside the header fields and above the list of attachments (the
    caller passes the recipient's language, `labels()`; English by default)."""

    headers: tuple[str, ...] = _HEADER_LABELS
    attachments: str = _ATTACHMENTS
    unrenderable: str = _UNRENDERABLE


@functools.cache
def labels(language: str) -> Labels:
    """The labels in `language` (any of defaults.LANGUAGES; another reads English)."""
    return Labels(
        headers=tuple(translate(language, label) for label in _HEADER_LABELS),
        attachments=translate(language, _ATTACHMENTS),
        unrenderable=translate(language, _UNRENDERABLE),
    )


def encrypted_pdf(
    message: bytes,
    password: str,
    *,
    labels: Labels = Labels(),
    font_dir: str = FONT_DIR,
    owner_password: str | None = None,
) -> bytes:
    """The message as a PDF that opens only with `password` (AES-256, R6).

    Raises ValueError for an empty password (the content must never go out unprotected) and
    FileNotFoundError, naming the file, when the font is missing.
    """
    if not password:
        raise ValueError("an encrypted PDF needs a password")
    msg = BytesParser(policy=policy.default).parsebytes(message)
    assert isinstance(msg, EmailMessage)
    named = zip(labels.headers, _HEADERS, strict=True)
    raw = BytesHeaderParser(policy=policy.compat32).parsebytes(message)
    heads = [(label, _header(raw, name)) for label, name in named]
    body, files = _contents(msg)
    shown = [(label, value) for label, value in heads if value]
    plain = _render(shown, body, files, labels, font_dir)
    return _in_python_thread(_encrypt, plain, files, password, owner_password)


def _in_python_thread(fn: Callable[..., bytes], *args: object) -> bytes:
    """`fn(*args)` in a thread Python started. pikepdf (pybind11) takes the GIL back with
    PyGILState_Ensure when qpdf calls into Python (the BytesIO it reads and writes); in a
    libmilter thread, whose thread state pymilter made itself, that waits for the GIL the
    same thread holds: the milter hung at end-of-message (4 runs in 8 of
    tests/integration/test_encryption_all_kinds.py, gdb: take_gil under pikepdf)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zivmilter-pdf") as one:
        return one.submit(fn, *args).result()


def _encrypt(
    plain: bytes, files: list[tuple[str, str, bytes]], password: str, owner_password: str | None
) -> bytes:
    with pikepdf.open(io.BytesIO(plain)) as pdf:
        for name, mime, data in files:
            pdf.attachments[name] = pikepdf.AttachedFileSpec(
                pdf, data, filename=name, mime_type=mime
            )
        out = io.BytesIO()
        pdf.save(
            out,
            encryption=pikepdf.Encryption(
                user=password,
                owner=owner_password or secrets.token_urlsafe(32),
                R=6,
                aes=True,
                metadata=True,
            ),
        )
    return out.getvalue()


# --- what goes in -----------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str:
    """A header field as text: encoded words decoded, folding undone. compat32 and
    decode_header, not policy.default's address parser (seconds for a To of 3,000 names)."""
    texts = []
    for field, value in msg.raw_items():
        if field.lower() != name.lower():
            continue
        text = str(value)
        if not text.isascii():  # raw 8-bit (SMTPUTF8): the parser kept the bytes as surrogates
            text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
        pieces = []
        for piece, charset in decode_header(text):
            if isinstance(piece, str):
                pieces.append(piece)
                continue
            try:
                pieces.append(piece.decode(charset or "ascii", "replace"))
            except LookupError:  # an unknown charset: read as UTF-8
                pieces.append(piece.decode("utf-8", "replace"))
        texts.append("".join(pieces))
    return _SPACE.sub(" ", _CONTROL.sub("", ", ".join(texts))).strip()


def _contents(msg: EmailMessage) -> tuple[str, list[tuple[str, str, bytes]]]:
    """The readable body, and every other part as (unique file name, type, bytes)."""
    parts = layout(msg)
    if parts.text is not None:
        body = body_text(parts.text)
    elif parts.html is not None:
        body = _html_to_text(body_text(parts.html))
    else:
        body = ""
    bodies = {id(p) for p in (parts.text, parts.html) if p is not None}
    files: list[tuple[str, str, bytes]] = []
    taken: set[str] = set()
    # Inline images (cid:) and attachments alike: the text cannot show them, the PDF keeps them.
    for index, part in enumerate(leaves(msg)):
        if id(part) in bodies:
            continue
        name = _unique(leaf_filename(part, index), taken)
        files.append((name, part.get_content_type(), leaf_payload(part)))
    return _tidy(body), files


def _html_to_text(html: str) -> str:
    """HTML as a reader sees it: source white space collapsed (but kept in <pre>), tags gone,
    a link's address after its text (paper cannot be clicked), list items bulleted."""
    html = _links_shown(html)
    html = _ITEM.sub(r"\1• ", html)
    # Outside <pre> a line starts with one space at most (runs collapsed): drop it, and keep
    # a <pre> block's indentation.
    lines = (
        line[1:] if line.startswith(" ") and not line.startswith("  ") else line
        for line in (line.rstrip() for line in html_text(_collapse_space(html)).split("\n"))
    )
    return "\n".join(lines)


def _collapse_space(html: str) -> str:
    """Runs of source white space as one space, except inside <pre> (one pass over its tags:
    a lazy regex from each unclosed <pre> to the end would cost quadratic time)."""
    out: list[str] = []
    pos, depth = 0, 0
    for tag in _PRE_TAG.finditer(html):
        chunk = html[pos : tag.start()]
        out += [chunk if depth else _SPACE.sub(" ", chunk), tag.group(0)]
        depth = depth + 1 if not tag.group(1) else max(0, depth - 1)
        pos = tag.end()
    rest = html[pos:]
    out.append(rest if depth else _SPACE.sub(" ", rest))
    return "".join(out)


def _links_shown(html: str) -> str:
    """Each link's address written after its text, unless the text shows it already; one pass
    over the tags (an opening tag pairs with the next closing one), so it costs linear time."""
    out: list[str] = []
    pos = 0
    opened: re.Match[str] | None = None
    for tag in _A_TAG.finditer(html):
        if not tag.group(1):
            opened = tag
            continue
        if opened is None:
            continue
        href = _HREF.search(opened.group(2))
        url = href.group(1) if href and _SHOWN_SCHEMES.match(href.group(1)) else None
        inner = html[opened.end() : tag.start()]
        if url and unescape(url).lower() not in unescape(inner).lower():
            out += [html[pos : tag.start()], f" ({url})"]
            pos = tag.start()
        opened = None
    out.append(html[pos:])
    return "".join(out)


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return _BLANK_LINES.sub("\n\n", _CONTROL.sub("", text)).strip("\n")


def _unique(name: str, taken: set[str]) -> str:
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem} ({n}){ext}"
    taken.add(candidate.lower())
    return candidate


# --- layout -----------------------------------------------------------------------------------


def _render(
    heads: list[tuple[str, str]],
    body: str,
    files: list[tuple[str, str, bytes]],
    labels: Labels,
    font_dir: str,
) -> bytes:
    """The pages. Where the font lacks a character (Chinese, say), the text is added to `files`
    as message.txt too, and the first line says so: the recipient loses nothing."""
    pdf = _document(font_dir)
    pdf.add_page()
    width = pdf.epw
    cmap = getattr(pdf.fonts.get("dejavu"), "cmap", None)
    text = "\n".join(f"{label}: {value}" for label, value in heads) + "\n\n" + body
    if cmap is not None and any(ord(ch) not in cmap for ch in set(text) - {"\n"}):
        name = _unique("message.txt", {n.lower() for n, _m, _d in files})
        files.append((name, "text/plain", text.encode("utf-8")))
        pdf.set_font("DejaVu", "B", 10)
        pdf.multi_cell(width, 6, labels.unrenderable.format(name=name), align="L",
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)  # fmt: skip
        pdf.ln(2)
    for label, value in heads:
        pdf.set_font("DejaVu", "", 10)
        for i, line in enumerate(_wrap(pdf, value, width - 28)):
            pdf.set_font("DejaVu", "B", 10)
            pdf.cell(28, 6, f"{label}:" if i == 0 else "", new_x=XPos.RIGHT, new_y=YPos.TOP)
            pdf.set_font("DejaVu", "", 10)
            pdf.cell(width - 28, 6, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.ln(4)
    pdf.set_font("DejaVu", "", 11)
    for line in _wrap(pdf, body, width) if body else ():
        pdf.cell(width, 5.5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if files:
        pdf.ln(6)
        pdf.set_font("DejaVu", "B", 10)
        pdf.multi_cell(width, 6, labels.attachments, align="L",
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)  # fmt: skip
        pdf.set_font("DejaVu", "", 10)
        for name, _mime, data in files:
            pdf.multi_cell(width, 5.5, f"• {name} ({_size(len(data))})", align="L",
                           wrapmode=WrapMode.CHAR, new_x=XPos.LMARGIN, new_y=YPos.NEXT)  # fmt: skip
    return bytes(pdf.output())


def _document(font_dir: str) -> FPDF:
    """A new A4 document with DejaVu Sans, regular and bold, as family "DejaVu"."""
    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_creator("zivmilter")
    paths = {style: os.path.join(font_dir, file) for style, file in _FONTS.items()}
    for path in paths.values():
        if not os.path.isfile(path):
            why = "font missing (Debian: apt-get install fonts-dejavu-core)"
            raise FileNotFoundError(f"{path}: {why}")
    add_fonts(pdf, "DejaVu", paths)  # parsed once per process: pdffonts.py
    return pdf


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """The body's lines broken at spaces to fit `width` (a word wider than a line at any
    character). fpdf2's multi_cell measures the line again at every character: 100 KB of text
    took seconds; this measures each character once (the font has no kerning here)."""
    widths: dict[str, float] = {}

    def measure(piece: str) -> float:
        total = 0.0
        for ch in piece:
            w = widths.get(ch)
            if w is None:
                w = widths[ch] = pdf.get_string_width(ch)
            total += w
        return total

    out: list[str] = []
    for paragraph in text.split("\n"):
        line, used = "", 0.0
        for piece in _WORDS.findall(paragraph):
            word = piece
            if line and used + measure(word) > width:
                out.append(line.rstrip())
                line, used, word = "", 0.0, word.lstrip(" ")
            w = measure(word)
            if used + w <= width:
                line, used = line + word, used + w
                continue
            for ch in word:  # a word wider than a line: broken at characters
                cw = measure(ch)
                if line and used + cw > width:
                    out.append(line)
                    line, used = "", 0.0
                line, used = line + ch, used + cw
        out.append(line.rstrip())
    return out


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


__all__ = ["FONT_DIR", "Labels", "encrypted_pdf", "labels"]
