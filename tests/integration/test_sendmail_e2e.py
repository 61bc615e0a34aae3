"""zivmilter on a real Sendmail (Debian's 8.17, unpacked by scripts/install), end to end.

Set up as sendmail/README.md tells a Sendmail admin: the shipped sendmail/zivmilter.mc included
in sendmail.mc, `milter.mta: sendmail`, and a small Postfix beside Sendmail (only the shipped
re-injection listener and level transports, no milter) through which zivmilter sends every
direct copy, notification and DSN it does not leave in Sendmail's own transaction. Receiving
servers are aiosmtpd sinks on their own 127.x addresses, port 25, found through a bind-mounted
/etc/hosts (no DNS), as in test_milter_e2e.py.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.harness import sendmail
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
from tests.harness.postfix import PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sendmail.available(), reason="no Sendmail: run scripts/install"),
]
_ = ca_file  # the module fixture from the shared harness

PLAIN_IP, TLS_IP, WEAK_IP, STALE_IP = "127.0.0.30", "127.0.0.40", "127.0.0.41", "127.0.0.42"
# One line per name: Sendmail's MSP canonifies a domain to the first name of its hosts line.
HOSTS = (
    "127.0.0.1 localhost\n"
    f"{PLAIN_IP} oldmail.example\n{PLAIN_IP} x.example\n{PLAIN_IP} hospital.example\n"
    f"{TLS_IP} partner.example\n"
    f"{WEAK_IP} weak.example\n"
    f"{STALE_IP} stale.example\n"
)
FACTS = {
    # stale.example: the facts say pkix, but its server now shows a certificate nobody trusts
    "transport": {"partner.example": "pkix", "weak.example": "tls", "stale.example": "pkix"},
}
CONFIG = {
    "milter": {"mta": "sendmail"},
    "policy": {"outbound_direct_delivery": {"domains": ["partner.example", "stale.example"]}},
}
BODY_MARKER = "PLAINTEXT-MARKER-5d1e the lab results are attached"
ROUTE = "X-Zivmilter-Route"


def message(headers: str, body: str = BODY_MARKER) -> bytes:
    return plain_message(headers, body)


@pytest.fixture(scope="module")
def sinks(ca_file: tuple[trustme.CA, str]) -> Iterator[dict[str, Sink]]:
    untrusted = {"weak": f"{WEAK_IP} weak.example", "stale": f"{STALE_IP} stale.example"}
    with (
        bind_mounted("/etc/hosts", HOSTS),
        receiving_servers(
            PLAIN_IP, {"tls": f"{TLS_IP} partner.example"}, untrusted, ca_file[0]
        ) as s,
    ):
        yield s


class Gateway:
    """Sendmail in front, zivmilter attached, the relay Postfix beside them (README order:
    relay, then zivmilter, then Sendmail)."""

    def __init__(
        self,
        ca_path: str,
        *,
        reinject_port: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.relay = PostfixInstance(tls_ca_file=ca_path)  # milter=None: no smtpd_milters
        self.z = ZivmilterProcess(
            reinject_port=reinject_port or self.relay.reinject_port,
            config=config or CONFIG,
            facts=FACTS,
        )
        self.sm = sendmail.SendmailInstance(milter=self.z.socket)

    def __enter__(self) -> Gateway:
        self.relay.start()
        try:
            self.z.start()
            self.sm.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.sm.stop()
        self.z.__exit__()
        self.relay.stop()

    def send(self, rcpts: list[str], data: bytes, sender: str = "alice@hospital.example") -> Any:
        with smtplib.SMTP("127.0.0.1", self.sm.smtp_port, timeout=60) as s:
            return s.sendmail(sender, rcpts, data)


@pytest.fixture(scope="module")
def gw(sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]) -> Iterator[Gateway]:
    with Gateway(ca_file[1]) as g:
        yield g


def assert_fields_spaced(data: bytes) -> None:
    """Every header field is written `Name: value`: Sendmail writes what the milter gives."""
    head = data.split(b"\r\n\r\n", 1)[0]
    unspaced = re.findall(rb"(?m)^[!-9;-~]+:(?![ \t]|\r?$).*", head)
    assert unspaced == [], head.decode(errors="replace")


def assert_no_directives(data: bytes) -> None:
    """No directive header field and no route field, in any header block (also a DSN's)."""
    found = re.findall(rb"(?im)^(?:zivver-[\w-]*|x-zivmilter-route)[ \t]*:.*", data)
    assert found == [], data.decode(errors="replace")


# --- tests ---------------------------------------------------------------------------------


def test_notifications_direct_copy_and_bcc_through_sendmail(
    gw: Gateway, sinks: dict[str, Sink]
) -> None:
    arrived = Arrivals(sinks)
    data = message(
        "To: Bob <bob@partner.example>, Carol <carol@oldmail.example>\n"
        "Cc: dave@oldmail.example\n"
        "Subject: Lab results\n"
        "Message-ID: <sm-mixed-1@hospital.example>\n"
        f"zivver-access-right: carol@oldmail.example sms {PHONE}\n"
        f"ZIVVER-ACCESS-RIGHT: dave@oldmail.example access-code {CODE}\n"
        f"{ROUTE}: direct-none\n"  # a client's route header: deleted, never obeyed
    )
    rcpts = [
        "bob@partner.example",
        "carol@oldmail.example",
        "dave@oldmail.example",
        "s@x.example",
        "t@x.example",
    ]
    assert gw.send(rcpts, data) == {}

    notes = arrived.wait("plain", 4)
    time.sleep(1)
    assert len(arrived.new("plain")) == 4, "exactly one notification per notification recipient"
    got = by_recipient(notes)
    assert set(got) == set(rcpts[1:])
    assert_notifications(got, BODY_MARKER, [PHONE, CODE])
    for r in got.values():
        assert_fields_spaced(r.data)
    # Bcc isolation: the To/Cc copies never name a Bcc recipient, nor one Bcc the other.
    assert_bcc_hidden(got, ["s@x.example", "t@x.example"])
    # Split: one notification stayed in Sendmail's transaction (Sendmail delivered it), the
    # other three went through the relay's re-injection listener.
    by_sendmail = [r for r in notes if b"by mta.zivmilter.test (8.17" in r.data]
    assert len(by_sendmail) == 1, [r.rcpt_tos for r in by_sendmail]
    gw.relay.wait_for_log(r"status=sent")

    # The direct copy left only through the relay's TLS-enforcing transport, never Sendmail.
    (direct,) = arrived.wait("tls", 1)
    assert_direct_copy(direct, "bob@partner.example", BODY_MARKER)
    gw.relay.wait_for_log(
        r"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<bob@partner\.example>.*status=sent"
    )
    assert "to=<bob@partner.example>" not in gw.sm.log(), "Sendmail sent the direct copy itself"


def test_a_recipient_given_twice_still_gets_the_notification(
    gw: Gateway, sinks: dict[str, Sink]
) -> None:
    # The same RCPT TO twice: Sendmail's smfi_delrcpt removes every recipient of the address,
    # so the milter must not delete the second one while the first keeps Sendmail's copy.
    arrived = Arrivals(sinks)
    data = message("To: erin@oldmail.example\nCc: erin@oldmail.example\nSubject: Twice\n")
    assert gw.send(["erin@oldmail.example", "erin@oldmail.example"], data) == {}
    (note,) = arrived.wait("plain", 1)
    assert note.rcpt_tos == ("erin@oldmail.example",)
    assert LINK.search(note.message().get_body(("plain",)).get_content())
    assert BODY_MARKER.encode() not in note.data


def test_failed_recipient_gets_a_dsn_and_nothing(gw: Gateway, sinks: dict[str, Sink]) -> None:
    arrived = Arrivals(sinks)
    data = message(
        "To: ok@partner.example, no@weak.example\nSubject: Results\n"
        "Message-ID: <sm-dsn-1@hospital.example>\n"
        "zivver-direct-delivery: tls tls1.2 auth certificate-validation\n"
    )
    assert gw.send(["ok@partner.example", "no@weak.example"], data) == {}
    (report,) = arrived.wait("plain", 1)
    assert_failure_report(report, "no@weak.example")
    text = report.message().get_body(("plain",)).get_content()
    assert "no@weak.example" in text and "does not meet" in text
    assert BODY_MARKER.encode() not in report.data
    assert_no_directives(report.data)  # its text may name one, never carry one
    (direct,) = arrived.wait("tls", 1)
    assert direct.rcpt_tos == ("ok@partner.example",)
    assert_no_directives(direct.data)
    time.sleep(1)
    assert arrived.new("weak") == [], "nothing reaches the recipient that failed"
    # every recipient was handled outside Sendmail's transaction: it discarded the message
    gw.sm.wait_for_log(r"\w+: discarded")


def test_weaker_mx_than_the_level_is_refused_by_the_relay(
    gw: Gateway, sinks: dict[str, Sink]
) -> None:
    stale = sinks["stale"]
    s0 = len(stale.received)
    data = message(
        "To: eve@stale.example\nSubject: Stale\nMessage-ID: <sm-stale@hospital.example>\n"
    )
    assert gw.send(["eve@stale.example"], data) == {}
    found = gw.relay.wait_for_log(
        r"postfix/zivmilter-pkix/smtp\[\d+\]: (\w+): to=<eve@stale\.example>, "
        r".*status=deferred \((.*)\)"
    )
    assert "certificate" in found.group(2).lower(), found.group(0)
    assert found.group(1) in {m["queue_id"] for m in gw.relay.queue()}
    time.sleep(1)  # a wrong retry would deliver within the relay's 1 s backoff
    assert stale.received[s0:] == []
    assert "to=<eve@stale.example>" not in gw.sm.log(), "Sendmail tried it under its own TLS"


def _send_expect_4xx(g: Gateway, data: bytes) -> smtplib.SMTPResponseException:
    with pytest.raises(
        (smtplib.SMTPDataError, smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused)
    ) as info:
        g.send(["a@oldmail.example", "b@oldmail.example"], data)
    exc = info.value
    assert isinstance(exc, smtplib.SMTPResponseException), exc
    assert 400 <= exc.smtp_code < 500, f"expected a 4xx, got {exc}"
    return exc


FAULT_DATA = message("To: a@oldmail.example, b@oldmail.example\nSubject: fault\n", "SECRET-BODY")


def test_milter_down_answers_tempfail_f_t(
    sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]
) -> None:
    with Gateway(ca_file[1]) as g:
        g.z.stop()
        arrived = Arrivals(sinks)
        exc = _send_expect_4xx(g, FAULT_DATA)
        assert exc.smtp_code == 451 and b"4.3.2" in exc.smtp_error  # Sendmail's F=T answer
        assert g.sm.queue() == [], "Sendmail accepted nothing, so keeps nothing"
        time.sleep(1)
        assert arrived.new("plain") == []


def test_milter_fault_answers_tempfail_and_nothing_leaves(
    sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]
) -> None:
    # the re-injection listener is down: zivmilter cannot hand over the copies, so it tempfails
    with Gateway(ca_file[1], reinject_port=free_port()) as g:
        arrived = Arrivals(sinks)
        exc = _send_expect_4xx(g, FAULT_DATA)
        assert exc.smtp_code == 451 and b"4.3.0" in exc.smtp_error, exc
        assert b"zivmilter" in exc.smtp_error
        assert g.sm.queue() == []
        time.sleep(1)
        assert arrived.new("plain") == []
        g.sm.wait_for_log(r"Milter: data, reject=451 4\.3\.0")


def test_milter_mta_postfix_behind_a_sendmail_holds_the_mail(
    sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]
) -> None:
    # The fragment passes `v`: zivmilter sees a Sendmail, and with the key still at postfix it
    # holds every message (a direct copy would otherwise leave under Sendmail's own TLS).
    with Gateway(ca_file[1], config={**CONFIG, "milter": {"mta": "postfix"}}) as g:
        arrived = Arrivals(sinks)
        with pytest.raises(smtplib.SMTPDataError) as info:
            g.send(["bob@partner.example"], message("To: bob@partner.example\nSubject: x\n"))
        assert info.value.smtp_code == 451 and b"4.3.5" in info.value.smtp_error
        assert b"milter.mta is postfix; set milter.mta: sendmail" in info.value.smtp_error
        assert b"Sendmail 8.17" in info.value.smtp_error
        time.sleep(1)
        assert arrived.new("plain") == [] and arrived.new("tls") == []


def test_listener_rules_follow_the_daemon_options_name(
    sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]
) -> None:
    # DAEMON_OPTIONS(`Name=MTA, ...') arrives as {daemon_name}: rules for listener MTA that
    # trust no network refuse the loopback client, which the general rules would accept.
    listeners = {"listeners": {sendmail.DAEMON_NAME: {"trusted_networks": [], "spf": False}}}
    config = {**CONFIG, "submission": {"any_address_of_own_domains": True, **listeners}}
    with Gateway(ca_file[1], config=config) as g:
        arrived = Arrivals(sinks)
        with pytest.raises(smtplib.SMTPDataError) as info:
            g.send(["a@oldmail.example"], message("To: a@oldmail.example\nSubject: x\n"))
        assert info.value.smtp_code == 550 and b"5.7.1" in info.value.smtp_error
        assert b"127.0.0.1" in info.value.smtp_error
        time.sleep(1)
        assert arrived.new("plain") == []


def test_local_submission_waits_in_sendmails_queue_while_the_milter_is_down(
    sinks: dict[str, Sink], ca_file: tuple[trustme.CA, str]
) -> None:
    # A program on the host runs sendmail(1): the MSP relays to the daemon's listener, which
    # answers 4xx while zivmilter is down (F=T). The MSP keeps the message in its queue and
    # delivers it, secured, once zivmilter is back: never unprotected, never lost.
    data = message(
        "To: a@oldmail.example, b@oldmail.example\nSubject: Queued\n"
        "Message-ID: <sm-queued@hospital.example>\n"
        "zivver-access-right: a@oldmail.example access-code tulip-7\n",
        "SECRET-QUEUED-BODY",
    )
    with Gateway(ca_file[1]) as g:
        g.z.stop()
        arrived = Arrivals(sinks)
        g.sm.submit(data, "alice@hospital.example")
        (queued,) = g.sm.queue("clientmqueue")
        g.sm.wait_for_log(r"Milter \(zivmilter\): to error state")
        time.sleep(1)
        assert arrived.new("plain") == []

        g.z.start()
        g.sm.run_client_queue()
        notes = arrived.wait("plain", 2)
        assert {r.rcpt_tos for r in notes} == {("a@oldmail.example",), ("b@oldmail.example",)}
        for r in notes:
            assert b"SECRET-QUEUED-BODY" not in r.data and b"tulip-7" not in r.data
            assert_no_directives(r.data)
            assert LINK.search(r.message().get_body(("plain",)).get_content())
        assert g.sm.queue("clientmqueue") == [] and g.sm.queue() == []
        assert queued
