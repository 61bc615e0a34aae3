"""bodytext.pdf_text_bytes: how much text an encrypted PDF of a message lays out (the bound
encryption.pdf_max_text_bytes checks), for the milter's form of a message (its header fields as
given, CRLF) and a file's (explain, LF or CRLF) alike. Each expected figure is counted by hand."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.budget import sample
from tests.test_gateway import transaction
from tests.test_gateway_corpus import FILES, as_sent
from zivmilter import defaults
from zivmilter.core.bodytext import html_text, pdf_text_bytes, pdf_text_bytes_of_message
from zivmilter.mail.parts import body_text, layout

FIELDS = "a@hospital.example" + "b@partner.example" + "Lab"  # From, To, Subject
BODY = "Grüße aus Köln,\nline two\n"  # ü, ß, ö: two bytes each in UTF-8
HTML = "<html><head><style>p {color: red}</style></head><body><p>Grüße</p><b>x</b></body></html>"


def _base() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@hospital.example"
    msg["To"] = "b@partner.example"
    msg["Subject"] = "Lab"
    return msg


def _plain(cte: str) -> EmailMessage:
    msg = _base()
    msg.set_content(BODY, cte=cte)
    return msg


def _alternative() -> EmailMessage:
    msg = _plain("quoted-printable")
    msg.add_alternative(HTML, subtype="html")
    return msg


def _html_only() -> EmailMessage:
    msg = _base()
    msg.set_content(HTML, subtype="html")
    return msg


def _with_text_attachment() -> EmailMessage:
    msg = _plain("8bit")
    msg.add_attachment("a long attached letter\n" * 100, filename="letter.txt")
    return msg


def _attachment_only() -> EmailMessage:
    msg = _base()
    msg.add_attachment(b"\x00" * 1000, maintype="application", subtype="pdf", filename="a.pdf")
    return msg


def _related() -> EmailMessage:
    msg = _base()
    msg.set_content(HTML, subtype="html")
    msg.add_related(b"GIF89a", maintype="image", subtype="gif", cid="<logo@x>")
    return msg


def _raw(content_type: str, parts: list[str]) -> bytes:
    """A multipart message of these parts (each its header fields, a blank line, its body), as
    the MTA passes it."""
    text = f"From: a@hospital.example\nTo: b@partner.example\nSubject: Lab\n{content_type}\n\n"
    text += "".join(f"--B\n{part}\n" for part in parts) + "--B--\n"
    return text.replace("\n", "\r\n").encode("utf-8")


def _attached_text_first() -> bytes:
    return _raw(
        'Content-Type: multipart/mixed; boundary="B"',
        [
            "Content-Type: text/plain\nContent-Disposition: attachment\n\nan attached letter",
            f"Content-Type: text/html; charset=utf-8\n\n{HTML}",
        ],
    )


def _related_start_second() -> bytes:
    return _raw(
        'Content-Type: multipart/related; boundary="B"; start="<b@x>"',
        [
            "Content-Type: text/plain\nContent-ID: <a@x>\n\nnot the start part",
            f"Content-Type: text/html; charset=utf-8\nContent-ID: <b@x>\n\n{HTML}",
        ],
    )


HTML_TEXT = len("\nGrüße\nx\n".encode())  # the style's text gone, <p> a line end each side

CASES = [
    ("plain, 8bit", _plain("8bit"), len(BODY.encode())),
    ("plain, quoted-printable", _plain("quoted-printable"), len(BODY.encode())),
    ("plain, base64", _plain("base64"), len(BODY.encode())),
    ("alternative: the plain text only", _alternative(), len(BODY.encode())),
    ("HTML only: its text, not its tags", _html_only(), HTML_TEXT),
    ("related: the HTML start part", _related(), HTML_TEXT),
    ("an attached text file is no body", _with_text_attachment(), len(BODY.encode())),
    ("no body: the fields alone", _attachment_only(), 0),
    ("an attached text file first: the HTML body", _attached_text_first(), HTML_TEXT - 1),
    ("related: its start part, not its first", _related_start_second(), HTML_TEXT - 1),
]


@pytest.mark.parametrize(("msg", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_text_a_pdf_lays_out(msg: EmailMessage | bytes, body: int) -> None:
    wire = msg if isinstance(msg, bytes) else msg.as_bytes(policy=SMTP)
    tx = transaction(wire, "<a@hospital.example>", ["b@partner.example"])
    expected = len(FIELDS) + body
    assert pdf_text_bytes(tx.headers, wire, tx.body_offset) == expected
    assert pdf_text_bytes_of_message(wire) == expected  # explain, the file as the MTA sent it
    assert pdf_text_bytes_of_message(wire.replace(b"\r\n", b"\n")) == expected  # saved with LF


def test_folded_fields_count_as_the_pdf_prints_them() -> None:
    msg = _plain("8bit")
    del msg["To"]
    msg["To"] = ", ".join(f"person{i}@partner.example" for i in range(40))  # folded on the wire
    wire = msg.as_bytes(policy=SMTP)
    assert b"\r\n " in wire.split(b"\r\n\r\n")[0]
    tx = transaction(wire, "<a@hospital.example>", ["person0@partner.example"])
    to = len(str(msg["To"]))
    expected = len("a@hospital.example" + "Lab") + to + len(BODY.encode())
    assert pdf_text_bytes(tx.headers, wire, tx.body_offset) == expected
    assert pdf_text_bytes_of_message(wire) == expected


BIG = b"\x00" * (defaults.PDF_TEXT_PARSE_BYTES + 1000)  # more than is parsed first
LONG = "a long letter line\n" * (defaults.PDF_TEXT_PARSE_BYTES // 19 + 100)


def _attached(*order: str) -> bytes:
    msg = _base()
    msg.make_mixed()
    for what in order:
        if what == "big":
            msg.add_attachment(BIG, maintype="application", subtype="pdf", filename="scan.pdf")
        else:
            body = EmailMessage()
            long = what == "long"
            body.set_content(LONG if long else BODY, subtype="plain" if long else what)
            msg.attach(body)
    return msg.as_bytes(policy=SMTP)


LARGE = [
    ("the body, then a large attachment", _attached("plain", "big"), len(BODY.encode())),
    ("a large attachment, then the body", _attached("big", "plain"), len(BODY.encode())),
    ("a body longer than is parsed first", _attached("long", "big"), len(LONG)),
    ("HTML only, then a large attachment", _attached("html", "big"), len(BODY.encode())),
]


@pytest.mark.parametrize(("wire", "body"), [c[1:] for c in LARGE], ids=[c[0] for c in LARGE])
def test_a_large_message_counts_the_same_wherever_its_body_is(wire: bytes, body: int) -> None:
    tx = transaction(wire, "<a@hospital.example>", ["b@partner.example"])
    assert pdf_text_bytes(tx.headers, wire, tx.body_offset) == len(FIELDS) + body


@pytest.mark.parametrize("path", sample(FILES), ids=lambda p: p.name)
def test_every_corpus_message_counts_the_body_the_pdf_takes(path: Path) -> None:
    """The body mail/pdf.py lays out is the one layout() picks (policy.default, get_body): the
    count, without that parse, finds the same part and decodes it alike (an HTML body counted
    as bodytext reads its text; the PDF adds link addresses to it)."""
    raw, headers, head_end = as_sent(path)
    parts = layout(BytesParser(policy=policy.default).parsebytes(raw))
    if parts.text is not None:
        body = body_text(parts.text)
    else:
        body = html_text(body_text(parts.html)) if parts.html is not None else ""
    shown = [v for n, v in headers if n.strip().lower() in ("from", "to", "cc", "date", "subject")]
    fields = sum(len(" ".join(v.split()).encode("utf-8", "surrogateescape")) for v in shown)
    expected = fields + len(body.encode("utf-8", "surrogateescape")) - body.count("\r\n")
    assert pdf_text_bytes(headers, raw, head_end) == expected
