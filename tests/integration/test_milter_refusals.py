"""Messages zivmilter refuses for good, through a real Postfix: the SMTP client gets a 5xx that
names the limit, and nothing is stored, queued or delivered. Refusals of the message itself, not
faults (those tempfail: test_milter_faults.py): the same message would fail at every try.
"""

from __future__ import annotations

import re
import smtplib
import sqlite3
import time
from collections.abc import Iterator

import pytest

from tests.harness.messages import nested_message
from tests.harness.postfix import PostfixInstance
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter import defaults

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.32"
HOSTS = f"127.0.0.1 localhost\n{SINK_IP} oldmail.example\n"
DATA = (
    b"From: alice@hospital.example\r\nTo: a@oldmail.example\r\n"
    b"Subject: refusal\r\n\r\nSECRET-BODY\r\n"
)
LIMIT = 100_000  # milter.max_message_bytes; Postfix keeps its message_size_limit, 10 MB
TOO_BIG = b"552 5.3.4 message too big for zivmilter (over 100000 bytes, milter.max_message_bytes)"


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with bind_mounted("/etc/hosts", HOSTS), Sink(SINK_IP, 25) as s:
        yield s


@pytest.fixture(scope="module")
def gateway(sink: Sink) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    pf = PostfixInstance()
    z = attach(pf, facts={}, config={"milter": {"max_message_bytes": LIMIT}})
    with z, pf:
        yield pf, z


def _stored(z: ZivmilterProcess) -> int:
    db = sqlite3.connect(str(z.store_path / "store.sqlite3"))
    try:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        db.close()


def _nothing_kept(
    pf: PostfixInstance, z: ZivmilterProcess, sink: Sink, before: tuple[int, int]
) -> None:
    time.sleep(1.5)
    assert pf.queue() == [], "Postfix kept the refused message"
    assert (len(sink.received), _stored(z)) == before, "something was delivered or stored"


def test_a_message_over_max_message_bytes_is_refused_at_mail_from_and_at_the_end_of_data(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sink: Sink
) -> None:
    pf, z = gateway
    large = DATA + (b"z" * 76 + b"\r\n") * 3000  # 234 KB
    before = len(sink.received), _stored(z)
    # smtplib declares the size (SIZE=, RFC 1870), as Postfix offers it: refused at MAIL FROM
    with (
        smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s,
        pytest.raises(smtplib.SMTPSenderRefused) as info,
    ):
        s.sendmail("alice@hospital.example", ["a@oldmail.example"], large)
    assert f"{info.value.smtp_code} ".encode() + info.value.smtp_error == TOO_BIG
    # a client that declares nothing: counted as it arrives, refused at the end of data
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.ehlo()
        assert s.mail("alice@hospital.example")[0] == 250  # no SIZE= given
        assert s.rcpt("a@oldmail.example")[0] == 250
        code, text = s.data(large)
    assert f"{code} ".encode() + text == TOO_BIG
    _nothing_kept(pf, z, sink, before)
    refused = [line for line in z.log().splitlines() if "refused: 552 5.3.4" in line]
    assert len(refused) == 2, z.log()
    assert refused[0].endswith(f"SIZE={len(large)} at MAIL FROM")  # no queue id yet at MAIL FROM
    # at the end of data: with the queue id, and the size Postfix passed (its trace fields too)
    assert re.search(r"\[[0-9A-F]{6,} .*\] refused: .* \d+ bytes passed$", refused[1]), refused[1]
    # and a message under the limit goes through as before
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", ["a@oldmail.example"], DATA) == {}
    sink.wait_for(before[0] + 1)


NESTED_HEAD = b"From: alice@hospital.example\r\nTo: a@oldmail.example\r\nSubject: fw\r\n"
TEXT = b"Content-Type: text/plain\r\n\r\nthe innermost text\r\n"
TOO_DEEP = (
    b"554 5.6.0 MIME nesting deeper than 100 levels, refused by zivmilter (its limit, as"
    b" Postfix's mime_nesting_limit)"
)


def test_a_message_nested_too_deep_is_refused_and_one_at_the_limit_goes_through(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sink: Sink
) -> None:
    # Multipart and attached messages in turn: 150 levels are 75 multipart ones, which Postfix's
    # mime_nesting_limit (100, multipart only) lets through to zivmilter.
    pf, z = gateway
    before = len(sink.received), _stored(z)
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.ehlo()
        assert s.mail("alice@hospital.example")[0] == 250
        assert s.rcpt("a@oldmail.example")[0] == 250
        code, text = s.data(nested_message(150, NESTED_HEAD, TEXT))
    assert f"{code} ".encode() + text == TOO_DEEP
    _nothing_kept(pf, z, sink, before)
    (refused,) = [line for line in z.log().splitlines() if "refused: 554 5.6.0" in line]
    assert re.search(r"\[[0-9A-F]{6,} ", refused), refused  # with its queue id
    assert "Traceback" not in z.log()
    # at the limit: secured as any other message (a@oldmail.example: a notification)
    message = nested_message(defaults.MIME_NESTING_LIMIT, NESTED_HEAD, TEXT)
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", ["a@oldmail.example"], message) == {}
    (arrived,) = sink.wait_for(before[0] + 1)[before[0] :]
    assert b"the innermost text" not in arrived.data and b"/m/" in arrived.data
