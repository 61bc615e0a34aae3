"""What the end-to-end tests on a real MTA (test_milter_e2e.py, test_sendmail_e2e.py) check at
the receiving servers: the servers themselves (a plain one, one with a trusted certificate, ones
with a certificate nobody trusts), what arrives at each from a given moment on, and the
properties every notification and every DSN must have.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping

import pytest
import trustme

from tests.harness import postfix
from tests.harness.sink import Received, Sink, server_tls_context

LINK = re.compile(r"https://secure\.hospital\.example/m/([A-Za-z0-9_-]+)")
ALICE = ("Dr. Alice", "alice@hospital.example")


@pytest.fixture(scope="module")
def ca_file() -> Iterator[tuple[trustme.CA, str]]:
    """A CA the MTA trusts, and its certificate's file (`tls_ca_file`)."""
    ca = trustme.CA()
    with postfix.ca_file(ca) as path:
        yield ca, path


@contextlib.contextmanager
def receiving_servers(
    plain: str, trusted: Mapping[str, str], untrusted: Mapping[str, str], ca: trustme.CA
) -> Iterator[dict[str, Sink]]:
    """Servers on port 25: "plain" at the address `plain`, without TLS; one per name of
    `trusted` ({name: "ip host"}) with a certificate for host from `ca`; one per name of
    `untrusted` with a certificate from a CA nobody trusts."""
    strange = trustme.CA()
    with contextlib.ExitStack() as stack:
        sinks = {"plain": stack.enter_context(Sink(plain, 25))}
        for names, issuer in ((trusted, ca), (untrusted, strange)):
            for name, where in names.items():
                ip, host = where.split()
                tls = server_tls_context(issuer.issue_cert(host))
                sinks[name] = stack.enter_context(Sink(ip, 25, tls=tls))
        yield sinks


class Arrivals:
    """The messages that reach the receiving servers from the moment this is made on."""

    def __init__(self, sinks: Mapping[str, Sink]) -> None:
        self.sinks = sinks
        self.before = {name: len(sink.received) for name, sink in sinks.items()}

    def wait(self, name: str, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` new messages at server `name`, once they are there."""
        before = self.before[name]
        return self.sinks[name].wait_for(before + count, timeout)[before:]

    def new(self, name: str) -> list[Received]:
        """What arrived at server `name` so far."""
        return self.sinks[name].received[self.before[name] :]


def by_recipient(received: Iterable[Received]) -> dict[str, Received]:
    """Copies of one recipient each, by that recipient."""
    got = list(received)
    assert all(len(r.rcpt_tos) == 1 for r in got), [r.rcpt_tos for r in got]
    mapped = {r.rcpt_tos[0]: r for r in got}
    assert len(mapped) == len(got), "one copy per recipient"
    return mapped


def assert_notifications(
    got: Mapping[str, Received], body_marker: str, secrets: Iterable[str] = ()
) -> None:
    """Each is a notification from Dr. Alice with one personal link (at least 128 bits, a
    different one each) and nothing of the message: not its text, no directive or route field,
    none of `secrets` (phone numbers, access codes), no Bcc field."""
    secrets = list(secrets)
    tokens = set()
    for rcpt, r in got.items():
        text = r.data.decode("utf-8", "replace")
        assert body_marker.split()[0] not in text, f"body leaked to {rcpt}"
        assert "zivver-" not in text.lower() and "x-zivmilter-route" not in text.lower()
        for secret in secrets:
            assert secret not in text, (rcpt, secret)
        # no Bcc field (a random boundary or Message-ID may well contain the letters "bcc")
        assert not re.search(rb"(?im)^bcc:", r.data.split(b"\r\n\r\n")[0])
        msg = r.message()
        (sender,) = msg["From"].addresses
        assert (sender.display_name, sender.addr_spec) == ALICE
        assert msg.get_content_type() == "multipart/alternative"
        plain_part = msg.get_body(("plain",))
        assert plain_part is not None
        found = LINK.findall(plain_part.get_content())
        assert len(found) == 1 and len(found[0]) >= 22  # >= 128 bits
        tokens.add(found[0])
    assert len(tokens) == len(got), "every recipient has a personal link"


def assert_bcc_hidden(got: Mapping[str, Received], bcc: Iterable[str]) -> None:
    """No copy names a Bcc recipient but that recipient's own."""
    for hidden in bcc:
        for rcpt, r in got.items():
            if rcpt != hidden:
                assert hidden.encode() not in r.data, (hidden, rcpt)


def assert_failure_report(report: Received, address: str) -> None:
    """A DSN to alice from the null sender that says `address` failed."""
    assert report.rcpt_tos == ("alice@hospital.example",)
    assert report.mail_from in ("<>", "")
    msg = report.message()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert f"Final-Recipient: rfc822; {address}".encode() in report.data
    assert b"Action: failed" in report.data


def assert_direct_copy(direct: Received, rcpt: str, body_marker: str) -> None:
    """The message itself, to `rcpt` alone, over TLS 1.2 or later, without directive or route
    fields."""
    assert direct.rcpt_tos == (rcpt,)
    assert direct.tls_version in ("TLSv1.2", "TLSv1.3")
    assert body_marker in direct.data.decode()
    assert b"zivver-" not in direct.data.lower() and b"x-zivmilter-route" not in direct.data.lower()
