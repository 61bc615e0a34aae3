"""Selection (SPEC 6) on a real Postfix with the real zivmilter: a message no rule selects reaches
the recipient's server byte for byte as sent, but for its directive headers (and Postfix's own
Received line); a message with a trigger word in its subject is secured, the word removed.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.postfix import HOST, PostfixInstance
from tests.harness.sink import Sink
from tests.harness.zivmilter import attach

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.33"
CONFIG: dict[str, Any] = {
    "submission": {"any_address_of_own_domains": True},  # from 127.0.0.1: a trusted client
    "selection": {
        "mode": "rules",
        "subject_triggers": ["[secure]"],
        "remove_trigger": True,
        "directive_headers": False,  # so that a message with directives can go unselected
    },
}
FACTS: dict[str, Any] = {"transport": {"partner.example": "none"}}
DIRECTIVES = (
    "zivver-access-right: bob@partner.example sms +31612345678\r\n"
    "Zivver-Direct-Delivery: tls tls1.2 auth certificate-validation\r\n"
)


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink(SINK_IP, 25) as s:
        yield s


@pytest.fixture(scope="module")
def gateway(sink: Sink) -> Iterator[PostfixInstance]:
    pf = PostfixInstance(relayhost=f"[{SINK_IP}]:25")
    with attach(pf, config=CONFIG, facts=FACTS), pf:
        yield pf


def send(pf: PostfixInstance, data: bytes) -> None:
    with smtplib.SMTP(HOST, pf.smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", ["bob@partner.example"], data) == {}


def without_first_received(data: bytes) -> bytes:
    """The message as it left the client: Postfix's one Received field (with its folds) cut."""
    found = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data)
    assert found is not None, data[:300]
    return data[found.end() :]


def test_unselected_message_is_unchanged_but_for_directive_headers(
    gateway: PostfixInstance, sink: Sink
) -> None:
    head = (
        "From: Dr. Alice <alice@hospital.example>\r\n"
        "To: Bob <bob@partner.example>\r\n"
        "Subject: Quarterly figures,\r\n  folded over two lines\r\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        "Message-ID: <unselected-1@hospital.example>\r\n"
        "{directives}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "X-Custom:   kept   as   it   is\r\n"
    )
    body = "Line one.\r\n.A line that starts with a dot.\r\n\r\n  indented\ttab\r\n"
    before = len(sink.received)
    send(gateway, (head.format(directives=DIRECTIVES) + "\r\n" + body).encode())
    (got,) = sink.wait_for(before + 1)[before:]
    assert got.rcpt_tos == ("bob@partner.example",)
    expected = (head.format(directives="") + "\r\n" + body).encode()
    assert without_first_received(got.data) == expected
    time.sleep(1)
    assert len(sink.received) == before + 1  # no notification, no copy: passed as it is


def test_trigger_word_selects_and_is_removed_from_the_subject(
    gateway: PostfixInstance, sink: Sink
) -> None:
    data = (
        b"From: Dr. Alice <alice@hospital.example>\r\nTo: bob@partner.example\r\n"
        b"Subject: Lab [SECURE] results\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        b"Message-ID: <selected-1@hospital.example>\r\n\r\nSECRET-BODY-4711\r\n"
    )
    before = len(sink.received)
    send(gateway, data)
    (got,) = sink.wait_for(before + 1)[before:]
    note = got.message()
    assert got.rcpt_tos == ("bob@partner.example",)
    assert b"SECRET-BODY-4711" not in got.data  # secured: a notification, not the content
    assert str(note["Subject"]) == "Lab results"
    assert b"secure]" not in got.data.lower()


def test_trigger_inside_an_encoded_subject_selects(gateway: PostfixInstance, sink: Sink) -> None:
    data = (
        b"From: alice@hospital.example\r\nTo: bob@partner.example\r\n"
        b"Subject: =?utf-8?q?Uitslag_=5Bsecure=5D_caf=C3=A9?=\r\n"
        b"Message-ID: <selected-2@hospital.example>\r\n\r\nSECRET-BODY-4712\r\n"
    )
    before = len(sink.received)
    send(gateway, data)
    (got,) = sink.wait_for(before + 1)[before:]
    assert b"SECRET-BODY-4712" not in got.data
    assert str(got.message()["Subject"]) == "Uitslag café"
