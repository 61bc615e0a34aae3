"""Content rules (issue 17) on a real Postfix with the real zivmilter: a letter with a BSN and no
trigger word is secured (the recipient's server gets a notification, not the letter); the same
letter without the BSN passes as it was sent. The milter's log shows the match masked. So too
for a BSN that is only in a PDF attachment's text (scope attachment_text; the PDF made here).
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from fpdf import FPDF

from tests.harness.postfix import HOST, PostfixInstance
from tests.harness.sink import Sink
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


def send(pf: PostfixInstance, data: bytes) -> None:
    with smtplib.SMTP(HOST, pf.smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", ["bob@partner.example"], data) == {}


def without_first_received(data: bytes) -> bytes:
    found = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data)
    assert found is not None, data[:300]
    return data[found.end() :]


def test_a_letter_with_a_bsn_is_secured(
    milter: tuple[PostfixInstance, ZivmilterProcess], sink: Sink
) -> None:
    pf, z = milter
    data = LETTER.format(id="bsn-1", bsn=" (BSN 1234.56.782)").encode()
    before = len(sink.received)
    send(pf, data)
    (got,) = sink.wait_for(before + 1)[before:]
    assert got.rcpt_tos == ("bob@partner.example",)
    assert b"1234.56.782" not in got.data and b"123456782" not in got.data
    assert b"mevrouw J. de Vries" not in got.data  # a notification, not the letter
    assert str(got.message()["Subject"]) == "Verwijzing"
    assert "content rule bsn matched in text/plain: ****.**.782" in z.log()
    assert "1234.56.782" not in z.log()


def test_the_same_letter_without_a_bsn_passes(
    milter: tuple[PostfixInstance, ZivmilterProcess], sink: Sink
) -> None:
    pf, _ = milter
    data = LETTER.format(id="bsn-2", bsn="").encode()
    before = len(sink.received)
    send(pf, data)
    (got,) = sink.wait_for(before + 1)[before:]
    assert without_first_received(got.data) == data  # byte for byte as sent
    time.sleep(1)
    assert len(sink.received) == before + 1  # no notification, no copy


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


def test_a_bsn_only_in_a_pdf_attachment_gets_the_message_secured(
    milter: tuple[PostfixInstance, ZivmilterProcess], sink: Sink
) -> None:
    pf, z = milter
    data = with_pdf("pdf-bsn", "Verwijzing mevrouw J. de Vries", "BSN 1234.56.782")
    before = len(sink.received)
    send(pf, data)
    (got,) = sink.wait_for(before + 1)[before:]
    assert got.rcpt_tos == ("bob@partner.example",)
    assert b"verwijsbrief" not in got.data, z.log()[-4000:]  # a notification, not the letter
    assert b"application/pdf" not in got.data and b"%PDF" not in got.data
    assert "content rule bsn matched in attachment verwijzing.pdf: ****.**.782" in z.log()
    assert "1234.56.782" not in z.log()


def test_the_same_letter_with_a_pdf_without_a_bsn_passes(
    milter: tuple[PostfixInstance, ZivmilterProcess], sink: Sink
) -> None:
    pf, _ = milter
    data = with_pdf("pdf-none", "Verwijzing mevrouw J. de Vries", "referentie 123456789")
    before = len(sink.received)
    send(pf, data)
    (got,) = sink.wait_for(before + 1)[before:]
    assert without_first_received(got.data) == data  # byte for byte as sent
    time.sleep(1)
    assert len(sink.received) == before + 1  # no notification, no copy
