"""Content rules (issue 17) on a real Postfix with the real zivmilter: a letter with a BSN and no
trigger word is secured (the recipient's server gets a notification, not the letter); the same
letter without the BSN passes as it was sent. The milter's log shows the match masked. So too
for a BSN that is only in a PDF attachment's text (scope attachment_text; the PDF made here).
Each case is a row of SECURED or PASSING.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from fpdf import FPDF

from tests.harness.postfix import HOST, PostfixInstance
from tests.harness.sink import Received, Sink
from tests.harness.zivmilter import ZivmilterProcess, attach

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.37"
CONFIG: dict[str, Any] = {
    "selection": {
        "mode": "rules",
        "subject_triggers": ["[secure]"],
        "content": {
            "bsn": True,
            "iban": True,
            "payment_card": True,
            "scope": ["subject", "text", "attachment_names", "attachment_text"],
        },
    },
}
FACTS: dict[str, Any] = {"transport": {"partner.example": "none"}}

LETTER = (
    "From: Dr. Alice <alice@hospital.example>\r\n"
    "To: Bob <bob@partner.example>\r\n"
    "Subject: Verwijzing\r\n"
    "Date: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
    "Message-ID: <{id}@hospital.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Geachte collega,\r\n\r\n"
    "Hierbij verwijs ik mevrouw J. de Vries{bsn}, geboren 12-03-1980, naar uw poli.\r\n"
    "Bel gerust: 020-5551234.\r\n"
)


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink(SINK_IP, 25) as s:
        yield s


@pytest.fixture(scope="module")
def milter() -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    pf = PostfixInstance(relayhost=f"[{SINK_IP}]:25")
    z = attach(pf, config=CONFIG, facts=FACTS)
    with z, pf:
        yield pf, z


def send(milter: tuple[PostfixInstance, ZivmilterProcess], sink: Sink, data: bytes) -> Received:
    """Send `data` from alice to bob through Postfix; what bob's server gets."""
    before = len(sink.received)
    with smtplib.SMTP(HOST, milter[0].smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", ["bob@partner.example"], data) == {}
    (got,) = sink.wait_for(before + 1)[before:]
    return got


def without_first_received(data: bytes) -> bytes:
    found = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data)
    assert found is not None, data[:300]
    return data[found.end() :]


def with_pdf(marker: str, *lines: str) -> bytes:
    """A short letter with no number in its text, and a PDF (made here) with `lines`."""
    doc = FPDF()
    doc.add_page()
    doc.set_font("helvetica", size=12)
    for line in lines:
        doc.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = "Bob <bob@partner.example>"
    msg["Subject"] = "Verwijzing"
    msg["Date"] = "Tue, 24 Nov 2026 09:00:00 +0100"
    msg["Message-ID"] = f"<{marker}@hospital.example>"
    msg.set_content("Geachte collega,\n\nZie de verwijsbrief in de bijlage.\n")
    msg.add_attachment(
        bytes(doc.output()), maintype="application", subtype="pdf", filename="verwijzing.pdf"
    )
    return msg.as_bytes(policy=SMTP)


def letter(marker: str, bsn: str) -> bytes:
    return LETTER.format(id=marker, bsn=bsn).encode()


# What is secured: the message, where the BSN is, and what of it must not reach bob's server.
SECURED = [
    pytest.param(
        lambda: letter("bsn-1", " (BSN 1234.56.782)"),
        "text/plain",
        [b"1234.56.782", b"123456782", b"mevrouw J. de Vries"],  # a notification, not the letter
        id="in-the-text",
    ),
    pytest.param(
        lambda: with_pdf("pdf-bsn", "Verwijzing mevrouw J. de Vries", "BSN 1234.56.782"),
        "attachment verwijzing.pdf",
        [b"verwijsbrief", b"application/pdf", b"%PDF"],  # a notification, not the letter
        id="only-in-a-pdf-attachment",
    ),
]
# The same messages without the BSN.
PASSING = [
    pytest.param(lambda: letter("bsn-2", ""), id="letter"),
    pytest.param(
        lambda: with_pdf("pdf-none", "Verwijzing mevrouw J. de Vries", "referentie 123456789"),
        id="letter-with-a-pdf",
    ),
]


@pytest.mark.parametrize(("make", "where", "absent"), SECURED)
def test_a_message_with_a_bsn_is_secured(
    milter: tuple[PostfixInstance, ZivmilterProcess],
    sink: Sink,
    make: Callable[[], bytes],
    where: str,
    absent: list[bytes],
) -> None:
    z = milter[1]
    got = send(milter, sink, make())
    assert got.rcpt_tos == ("bob@partner.example",)
    for text in absent:
        assert text not in got.data, (text, z.log()[-4000:])
    assert str(got.message()["Subject"]) == "Verwijzing"
    assert f"content rule bsn matched in {where}: ****.**.782" in z.log()
    assert "1234.56.782" not in z.log()


@pytest.mark.parametrize("make", PASSING)
def test_the_same_message_without_a_bsn_passes(
    milter: tuple[PostfixInstance, ZivmilterProcess], sink: Sink, make: Callable[[], bytes]
) -> None:
    data = make()
    before = len(sink.received)
    got = send(milter, sink, data)
    assert without_first_received(got.data) == data  # byte for byte as sent
    time.sleep(1)
    assert len(sink.received) == before + 1  # no notification, no copy
