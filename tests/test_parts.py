"""mail/parts.py: the attachments the gateway keeps apart at save are the ones the portal lists,
with the same index, name, type and bytes."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

import pytest

from zivmilter.mail import parts
from zivmilter.portal import render


def test_large_attachments_match_the_portal_view() -> None:
    big = os.urandom(200_000)
    msg = EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["Subject"] = "x"
    msg.set_content("body " * 50_000)  # a large body is not an attachment
    msg.add_alternative("<p><img src='cid:logo@h'></p>" + "x" * 200_000, subtype="html")
    html = msg.get_body(("html",))
    assert html is not None
    html.add_related(big, maintype="image", subtype="png", cid="<logo@h>")  # inline: shown
    msg.add_attachment(b"small", maintype="text", subtype="csv", filename="a.csv")
    msg.add_attachment(
        big, maintype="application", subtype="pdf", filename="=?utf-8?q?R=C3=B6.pdf?="
    )
    msg.add_attachment(big, maintype="application", subtype="octet-stream")
    raw = msg.as_bytes(policy=policy.SMTP)
    found = parts.large_attachments(io.BytesIO(raw), 100_000)
    _, view = render.parse(raw)
    listed = {a.index: a for a in view.attachments if a.size >= 100_000}
    assert [f.index for f in found] == sorted(listed)
    for f in found:
        a = listed[f.index]
        assert (f.filename, f.content_type, len(f.data)) == (a.filename, a.content_type, a.size)
        assert f.data == big
    assert parts.large_attachments(io.BytesIO(raw), len(raw)) == []  # nothing can be larger


def test_a_single_text_part_is_its_own_body() -> None:
    raw = b"From: a@example.org\r\nContent-Type: text/plain\r\n\r\n" + b"A" * 300_000
    assert parts.large_attachments(io.BytesIO(raw), 100_000) == []


def _lines_of_50(encoded: bytes) -> bytes:
    """Lines of 50 characters, then empty ones (the range runs on to 400,000): blank lines
    inside the base64 text. `encoded` is made once, not once a line."""
    return b"\r\n".join(encoded[i : i + 50] for i in range(0, 400_000, 50))


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.encodebytes(b),  # 76 characters a line
        lambda b: _lines_of_50(base64.b64encode(b)),
        lambda b: base64.b64encode(b).replace(b"A", b"A!"),  # outside the alphabet: skipped
        lambda b: base64.b64encode(b).rstrip(b"="),  # padding missing
        lambda b: base64.b64encode(b[:1000]) + base64.b64encode(b),  # padding inside
    ],
)
def test_base64_decodes_as_the_email_package_does(encode: Callable[[bytes], bytes]) -> None:
    data = os.urandom(250_001)
    raw = (
        b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B"
        b"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
        + encode(data)
        + b"\r\n--B--\r\n"
    )
    msg, view = render.parse(raw)
    found = parts.large_attachments(io.BytesIO(raw), 100_000)
    (listed,) = view.attachments
    assert [(f.index, len(f.data)) for f in found] == (
        [(listed.index, listed.size)] if listed.size >= 100_000 else []
    )
    for f in found:
        assert f.data == render.leaf_payload(render.leaves(msg)[f.index])
