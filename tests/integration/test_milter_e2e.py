"""zivmilter on a real Postfix, end to end: what the receiving servers get (SPEC 1, 2, 5, 10).

One private Postfix with the real `zivmilter run` attached; receiving servers are aiosmtpd sinks
on their own 127.x addresses, port 25, found through a bind-mounted /etc/hosts: each recipient
domain's "MX" is its own sink. partner.example has a certificate from the CA Postfix trusts.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.utils
import os
import re
import smtplib
import sqlite3
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.harness.arrivals import (
    LINK,
    Arrivals,
    assert_bcc_hidden,
    assert_direct_copy,
    assert_failure_report,
    assert_notifications,
    by_recipient,
    ca_file,
    receiving_servers,
)
from tests.harness.messages import CODE, PHONE, plain_message
from tests.harness.postfix import PostfixInstance
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter import crypto
from zivmilter.core.addresses import normalize_address
from zivmilter.errors import MessageError
from zivmilter.store import SqliteStore

pytestmark = pytest.mark.integration
_ = ca_file  # the module fixture from the shared harness

PLAIN_IP, TLS_IP, WEAK_IP = "127.0.0.30", "127.0.0.40", "127.0.0.41"
HOSTS = (
    "127.0.0.1 localhost\n"
    f"{PLAIN_IP} oldmail.example x.example hospital.example\n"
    f"{TLS_IP} partner.example\n"
    f"{WEAK_IP} weak.example\n"
)
FACTS = {
    "transport": {"partner.example": "pkix", "weak.example": "tls"},
}
CONFIG = {
    "policy": {
        "outbound_direct_delivery": {"domains": ["partner.example"]},
        "large_attachment_bytes": 200_000,  # small, so the test stays quick
    }
}
BODY_MARKER = "PLAINTEXT-MARKER-7f3a the lab results are attached"


def message(headers: str, body: str = BODY_MARKER) -> bytes:
    return plain_message(headers, body)


@pytest.fixture(scope="module")
def hosts() -> Iterator[None]:
    with bind_mounted("/etc/hosts", HOSTS):
        yield


@pytest.fixture(scope="module")
def sinks(hosts: None, ca_file: tuple[trustme.CA, str]) -> Iterator[dict[str, Sink]]:
    trusted = {"tls": f"{TLS_IP} partner.example"}
    with receiving_servers(PLAIN_IP, trusted, {"weak": f"{WEAK_IP} weak.example"}, ca_file[0]) as s:
        yield s


@pytest.fixture(scope="module")
def gateway(
    sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    pf = PostfixInstance(tls_ca_file=ca_file[1])
    z = attach(pf, facts=FACTS, config=CONFIG)
    with z, pf:
        yield pf, z


def send(pf: PostfixInstance, sender: str, rcpts: list[str], data: bytes) -> Any:
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        return s.sendmail(sender, rcpts, data)


def submit(
    gateway: tuple[PostfixInstance, ZivmilterProcess],
    sinks: dict[str, Sink],
    rcpts: list[str],
    data: bytes,
) -> Arrivals:
    """Send `data` from alice to `rcpts` through Postfix, accepted for all; what arrives at the
    receiving servers from then on."""
    arrived = Arrivals(sinks)
    assert send(gateway[0], "alice@hospital.example", rcpts, data) == {}
    return arrived


@contextlib.contextmanager
def open_store(z: ZivmilterProcess) -> Iterator[SqliteStore]:
    store = SqliteStore.open(str(z.store_path), crypto.load_kek(str(z.key_file)))
    try:
        yield store
    finally:
        store.close()


def test_mixed_message_notifications_direct_and_bcc(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    pf, z = gateway
    data = message(
        "To: Bob <bob@partner.example>, Carol <carol@oldmail.example>\n"
        "Cc: dave@oldmail.example\n"
        "Subject: Lab results\n"
        "Message-ID: <mixed-1@hospital.example>\n"
        f"zivver-access-right: carol@oldmail.example sms {PHONE}\n"
        f"ZIVVER-ACCESS-RIGHT: dave@oldmail.example access-code {CODE}\n"
    )
    rcpts = [
        "bob@partner.example",
        "carol@oldmail.example",
        "dave@oldmail.example",
        "s@x.example",
        "t@x.example",
    ]
    arrived = submit(gateway, sinks, rcpts, data)

    notes = arrived.wait("plain", 4)
    time.sleep(1)
    assert len(arrived.new("plain")) == 4, "exactly one notification per notification recipient"
    got = by_recipient(notes)
    assert set(got) == {
        "carol@oldmail.example",
        "dave@oldmail.example",
        "s@x.example",
        "t@x.example",
    }
    assert_notifications(got, BODY_MARKER, [PHONE, CODE])
    # Bcc isolation: the To/Cc copies never name a Bcc recipient, nor one Bcc the other.
    assert_bcc_hidden(got, ["s@x.example", "t@x.example"])
    assert "+31 6" in got["carol@oldmail.example"].message().get_body(("plain",)).get_content()

    (direct,) = arrived.wait("tls", 1)
    assert_direct_copy(direct, "bob@partner.example", BODY_MARKER)
    pf.wait_for_log(
        r"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<bob@partner\.example>.*status=sent"
    )

    with sqlite3.connect(z.store_path / "store.sqlite3") as db:
        saved = db.execute(
            "SELECT id FROM messages WHERE rfc822_id = ?", ("<mixed-1@hospital.example>",)
        ).fetchall()
    assert len(saved) == 1
    with open_store(z) as store:
        stream = store.open_content(saved[0][0])
        assert stream is not None
        content = stream.read()
    assert content.endswith((BODY_MARKER + "\r\n").encode())
    assert b"zivver-" not in content.lower()
    for line in (
        b"Subject: Lab results",
        b"Cc: dave@oldmail.example",
        b"Message-ID: <mixed-1@hospital.example>",
    ):
        assert line in content
    # every file of the store (database, its WAL, any blob files) holds the content encrypted only
    files = [p for p in z.store_path.rglob("*") if p.is_file()]
    assert any(p.name == "store.sqlite3-wal" for p in files)
    for f in files:
        assert b"PLAINTEXT-MARKER" not in f.read_bytes(), f"plaintext in {f}"


def assert_reports_unusable(report: Any, address: str) -> None:
    """The sender's DSN about a recipient the gateway cannot secure for: 5.1.3, no content."""
    assert_failure_report(report, address)
    assert b"Status: 5.1.3" in report.data
    assert BODY_MARKER.encode() not in report.data


def test_failed_recipient_gets_a_dsn_and_is_removed(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    data = message(
        "To: ok@partner.example, no@weak.example\nSubject: Results\n"
        "Message-ID: <dsn-1@hospital.example>\n"
        "zivver-direct-delivery: tls tls1.2 auth certificate-validation\n"
    )
    arrived = submit(gateway, sinks, ["ok@partner.example", "no@weak.example"], data)
    (report,) = arrived.wait("plain", 1)
    assert_failure_report(report, "no@weak.example")
    text = report.message().get_body(("plain",)).get_content()
    assert "no@weak.example" in text and "does not meet" in text
    assert b"zivver-direct-delivery" not in report.data.lower()
    (direct,) = arrived.wait("tls", 1)
    assert direct.rcpt_tos == ("ok@partner.example",)
    time.sleep(1)
    assert arrived.new("weak") == [], "nothing reaches the recipient that failed"


def test_quoted_local_part_is_secured_and_an_unusable_recipient_fails_alone(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    # "john doe"@... is valid (RFC 5321); x@[127.0.0.30] passes Postfix but is no address the
    # gateway can secure for: that one recipient fails with a DSN, the message is not held.
    quoted, literal = '"john doe"@oldmail.example', "x@[127.0.0.30]"
    data = message(f"To: {quoted}, {literal}\nSubject: Results\n")
    arrived = submit(gateway, sinks, [quoted, literal], data)
    got = arrived.wait("plain", 2)
    time.sleep(1)
    assert len(arrived.new("plain")) == 2, "nothing goes to the unusable recipient"
    by_rcpt = by_recipient(got)
    note = by_rcpt[quoted]
    assert BODY_MARKER.encode() not in note.data and LINK.search(note.data.decode())
    assert_reports_unusable(by_rcpt["alice@hospital.example"], literal)


HOSTILE_FIELDS = [
    # a folded raw UTF-8 From, a folded Message-ID, a Subject with a form feed (which the
    # email package's folding takes for a line break), and a recipient that fails: each of
    # these once held the whole message in tempfail until it bounced, or broke the
    # notification's header block
    b"From: J\xc3\xb6hn Str\xc3\xb6m\r\n <alice@hospital.example>\r\n"
    b"Message-ID:\r\n <hostile-1.0123456789abcdef@hospital.example>\r\n"
    b"Subject: results\x0cX-Injected: 1\r\n",
    # raw 8-bit bytes that are not UTF-8 in the Message-ID
    b"From: alice@hospital.example\r\nMessage-ID: <caf\xe9-2@hospital.example>\r\n"
    b"Subject: results\r\n",
]


@pytest.mark.parametrize("fields", HOSTILE_FIELDS, ids=["folded-and-controls", "8bit-id"])
def test_hostile_header_fields_are_secured_not_held(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink], fields: bytes
) -> None:
    z = gateway[1]
    literal = "x@[127.0.0.30]"  # passes Postfix, fails at the gateway: a DSN
    data = (
        fields
        + b"To: carol@oldmail.example\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\n\r\n"
        + BODY_MARKER.encode()
        + b"\r\n"
    )
    arrived = submit(gateway, sinks, ["carol@oldmail.example", literal], data)
    by_rcpt = by_recipient(arrived.wait("plain", 2))
    note = by_rcpt["carol@oldmail.example"]
    msg = email.message_from_bytes(note.data, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative" and not msg.defects
    assert msg["X-Zivmilter-Notification"] == "1" and "X-Injected" not in msg
    assert BODY_MARKER.encode() not in note.data and LINK.search(note.data.decode())
    if fields.startswith(b"From: J"):
        assert str(msg["From"]) == "J\u00f6hn Str\u00f6m <alice@hospital.example>"
        assert str(msg["Subject"]) == "results X-Injected: 1"
    assert_reports_unusable(by_rcpt["alice@hospital.example"], literal)
    assert "tempfail" not in z.log()


def test_recipients_keep_their_case_and_a_case_duplicate_gets_one_copy(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    # Compared case-insensitively, but handed on as given (a local part may be case-sensitive);
    # the same recipient twice in different case gets one notification.
    data = message("To: Mixed.Case@oldmail.example, Other@oldmail.example\nSubject: Case\n")
    rcpts = ["Mixed.Case@oldmail.example", "mixed.case@OLDMAIL.example", "Other@oldmail.example"]
    arrived = submit(gateway, sinks, rcpts, data)
    got = arrived.wait("plain", 2)
    time.sleep(1.5)
    assert len(arrived.new("plain")) == 2, "one notification per recipient, not per spelling"
    assert sorted(m.rcpt_tos for m in got) == [
        ("Mixed.Case@oldmail.example",),
        ("Other@oldmail.example",),
    ]


def test_a_recipient_given_twice_still_gets_the_copy_kept_in_the_transaction(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    # The same RCPT TO twice (an application that puts one address in To and Cc): Postfix takes
    # both, the milter hears both, and a delrcpt of that address removes every one of them. The
    # copy kept in the transaction (a notification, a direct copy) must still reach them.
    data = message("To: erin@oldmail.example\nCc: erin@oldmail.example\nSubject: Twice\n")
    arrived = submit(gateway, sinks, ["erin@oldmail.example", "erin@oldmail.example"], data)
    (note,) = arrived.wait("plain", 1)
    assert note.rcpt_tos == ("erin@oldmail.example",)
    assert LINK.search(note.data.decode()) and BODY_MARKER.encode() not in note.data
    # a direct copy kept beside a re-injected notification
    data = message("To: bob@partner.example, erin@oldmail.example\nSubject: Twice\n")
    rcpts = ["bob@partner.example", "bob@partner.example", "erin@oldmail.example"]
    arrived = submit(gateway, sinks, rcpts, data)
    (direct,) = arrived.wait("tls", 1)
    assert_direct_copy(direct, "bob@partner.example", BODY_MARKER)
    (note,) = arrived.wait("plain", 1)
    assert note.rcpt_tos == ("erin@oldmail.example",)
    time.sleep(1)
    assert len(arrived.new("tls")) == 1 and len(arrived.new("plain")) == 1


def test_dsn_follows_the_clients_notify_and_orcpt(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    # RFC 3461: NOTIFY=NEVER asks for no report about that recipient; ORCPT is echoed back
    # as Original-Recipient.
    pf, _ = gateway
    arrived = Arrivals(sinks)
    data = message(
        "To: ok@partner.example, no1@weak.example, no2@weak.example\nSubject: Notify\n"
        "zivver-direct-delivery: tls tls1.2 auth certificate-validation\n"
    )
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.ehlo()
        assert s.mail("alice@hospital.example")[0] == 250
        assert s.rcpt("ok@partner.example")[0] == 250
        assert s.rcpt("no1@weak.example", ["ORCPT=rfc822;Boss+2Bone@weak.example"])[0] == 250
        assert s.rcpt("no2@weak.example", ["NOTIFY=NEVER"])[0] == 250
        assert s.data(data)[0] == 250
    (report,) = arrived.wait("plain", 1)
    assert b"Original-Recipient: rfc822; Boss+one@weak.example" in report.data
    assert b"Final-Recipient: rfc822; no1@weak.example" in report.data
    assert b"no2@weak.example" not in report.message().get_body(("plain",)).get_content().encode()
    assert b"Final-Recipient: rfc822; no2@weak.example" not in report.data
    arrived.wait("tls", 1)
    # only NOTIFY=NEVER recipients failed: no report at all
    data = message("To: no2@weak.example\nSubject: Never\nzivver-direct-delivery: tls\n")
    discards = pf.log().count("milter-discard")
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.ehlo()
        s.mail("alice@hospital.example")
        assert s.rcpt("no2@weak.example", ["NOTIFY=NEVER"])[0] == 250
        assert s.data(data)[0] == 250
    deadline = time.monotonic() + 30
    while pf.log().count("milter-discard") == discards and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pf.log().count("milter-discard") == discards + 1
    time.sleep(1.5)
    assert len(arrived.new("plain")) == 1 and arrived.new("weak") == []


def test_internationalized_recipient_gets_a_notification(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    # RFC 6531/6532: jörg@… is re-injected with SMTPUTF8, and the notification's To keeps the
    # address in UTF-8 (RFC 2047 may not encode an address).
    pf, _ = gateway
    arrived = Arrivals(sinks)
    eai = "jörg@oldmail.example"
    data = message(f"To: Jörg <{eai}>, bob@oldmail.example\nSubject: Results\n")
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.sendmail("alice@hospital.example", [eai, "bob@oldmail.example"], data, ["SMTPUTF8"])
    got = by_recipient(arrived.wait("plain", 2))
    note = got[eai]
    to = note.message()["To"]
    assert eai in str(to) and "=?" not in note.data.split(b"\r\n\r\n")[0].decode()
    assert BODY_MARKER.encode() not in note.data and LINK.search(note.data.decode())
    assert LINK.search(got["bob@oldmail.example"].data.decode())


def test_all_recipients_failed_message_discarded_with_dsn(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    pf, _ = gateway
    data = message("To: no@weak.example\nSubject: x\nzivver-direct-delivery: tls tls1.3\n")
    arrived = submit(gateway, sinks, ["no@weak.example"], data)
    (report,) = arrived.wait("plain", 1)
    assert b"no@weak.example" in report.data
    pf.wait_for_log(r"milter-discard")
    assert arrived.new("weak") == []


def test_single_notification_rewrites_the_transaction(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    data = message(
        "To: erin@oldmail.example\nSubject: =?utf-8?q?R=C3=B6ntgen_results?=\n"
        "Message-ID: <one@hospital.example>\nIn-Reply-To: <earlier@partner.example>\n"
        "References: <earlier@partner.example>\n"
    )
    arrived = submit(gateway, sinks, ["erin@oldmail.example"], data)
    (note,) = arrived.wait("plain", 1)
    msg = note.message()
    assert str(msg["Subject"]) == "Röntgen results"
    assert msg["In-Reply-To"] == "<earlier@partner.example>"
    assert msg["References"] == "<earlier@partner.example>"
    assert msg["Message-ID"] != "<one@hospital.example>"
    assert BODY_MARKER.encode() not in note.data
    # Postfix's own trace header stays, the original body is gone
    assert note.data.startswith(b"Received: ")
    # The fields the milter added read `Name: value`, as every mailer writes them
    head = note.data.partition(b"\r\n\r\n")[0]
    assert b"\r\nContent-Type: multipart/alternative; boundary=" in head
    fields = [f for f in head.split(b"\r\n") if not f.startswith((b" ", b"\t"))]
    assert all(re.match(rb"[!-9;-~]+: \S", f) for f in fields), fields


def test_client_route_header_is_not_obeyed(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    data = message("To: frank@oldmail.example\nSubject: x\nX-Zivmilter-Route: direct-tls\n")
    arrived = submit(gateway, sinks, ["frank@oldmail.example"], data)
    (note,) = arrived.wait("plain", 1)
    assert b"X-Zivmilter-Route" not in note.data
    assert BODY_MARKER.encode() not in note.data
    assert arrived.new("tls") == []


def test_corpus_messages_all_pass_without_tempfail(sinks: dict[str, Sink]) -> None:
    """Every real-world message of the shared corpus: secured (a valid notification) when its
    From is a sender account, refused with 550 5.7.1 when it has no usable From; never a
    tempfail, never a crash."""
    corpus = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "maildir"
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    assert len(files) > 300
    senders: set[str] = set()
    unusable: set[str] = set()  # no From, or a From/Sender address that is not valid: refused
    # As a mail client sends them: Mac (CR) and Unix (LF) line ends become CRLF on the wire.
    wire = {path: re.sub(rb"\r\n|\r|\n", b"\r\n", path.read_bytes()) for path in files}
    for path in files:
        msg = email.message_from_bytes(wire[path], policy=policy.compat32)
        named = email.utils.getaddresses(msg.get_all("From", []) + msg.get_all("Sender", []))
        claimed = [addr for _, addr in named if "@" in addr]
        from_claimed = [a for _, a in email.utils.getaddresses(msg.get_all("From", [])) if "@" in a]
        if not from_claimed:
            unusable.add(path.name)
        for addr in claimed:
            try:
                senders.add(normalize_address(addr))
            except MessageError:
                unusable.add(path.name)
    pf = PostfixInstance()
    facts = {"senders": sorted(senders), "transport": {}}
    z = attach(pf, facts=facts, config={"submission": {"any_address_of_own_domains": False}})
    refused: list[str] = []
    arrived = Arrivals(sinks)
    with z, pf:
        s = smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60)
        for path in files:
            try:
                s.sendmail("alice@hospital.example", ["reader@oldmail.example"], wire[path])
            except smtplib.SMTPDataError as exc:
                assert exc.smtp_code == 550 and b"5.7.1" in exc.smtp_error, (path, exc)
                refused.append(path.name)
                s.close()  # a new session: Postfix ends one after too many refusals
                s = smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60)
        s.quit()
        notes = arrived.wait("plain", len(files) - len(refused), timeout=120)
        assert "tempfail" not in z.log()
    assert set(refused) == unusable  # refused exactly when there is no usable From/Sender
    assert len(unusable) < len(files) // 3
    for note in notes:
        msg = email.message_from_bytes(note.data, policy=policy.default)
        assert msg.get_content_type() == "multipart/alternative"
        assert not msg.defects
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert LINK.search(msg.get_body(("plain",)).get_content())


def test_large_attachment_of_a_direct_copy_becomes_a_link(
    gateway: tuple[PostfixInstance, ZivmilterProcess], sinks: dict[str, Sink]
) -> None:
    z = gateway[1]
    big = os.urandom(300_000)
    small = b"small attachment stays"
    msg = email.message.EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = "scan"
    msg.set_content(BODY_MARKER)
    msg.add_attachment(big, maintype="application", subtype="pdf", filename="scan.pdf")
    msg.add_attachment(small, maintype="text", subtype="plain", filename="note.txt")
    arrived = submit(gateway, sinks, ["bob@partner.example"], msg.as_bytes())
    (got,) = arrived.wait("tls", 1)
    assert len(got.data) < 100_000
    received = got.message()
    names = [p.get_filename() for p in received.walk() if p.get_filename()]
    assert names == ["note.txt"]  # the large one is gone, the small one stays
    assert received.get_body(("plain",)).get_content().strip() == BODY_MARKER
    notice = [
        p.get_content() for p in received.walk() if "scan.pdf" in str(p.get_payload(decode=True))
    ]
    assert notice and re.search(
        r"https://secure\.hospital\.example/d/[A-Za-z0-9_-]{22,}", notice[0]
    )
    # the attachment is in the store, encrypted, and decrypts to the original bytes
    with sqlite3.connect(z.store_path / "store.sqlite3") as db:
        (aid,) = db.execute(
            "SELECT id FROM attachments ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    with open_store(z) as store:
        stream = store.open_attachment(aid)
        assert stream is not None and stream.read() == big
