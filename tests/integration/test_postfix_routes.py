"""The shipped Postfix snippets (postfix/) on a real Postfix: X-Zivmilter-Route routing.

A tiny pymilter milter stands in for zivmilter and adds the route header; receiving servers are
aiosmtpd sinks on their own 127.x addresses, port 25, named through a bind-mounted /etc/hosts.
Run as `python -m tests.integration.test_postfix_routes SOCKET`, this module is that milter.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.harness.dns import SelfSigned, TestDns, Zone, shared_dns, tlsa_rdata
from tests.harness.postfix import REPO, PostfixInstance
from tests.harness.postfix import ca_file as postfix_ca_file
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink, server_tls_context

pytestmark = pytest.mark.integration

# Each receiving server has an address of its own; with dns=False its name is the "MX".
TRUSTED_MX = ("pkix.example.test", "127.0.0.21")  # cert from the CA Postfix trusts
UNTRUSTED_MX = ("pkix.untrusted.test", "127.0.0.22")  # cert from a CA nobody trusts
PLAIN_MX = ("plain.test", "127.0.0.23")  # no STARTTLS at all
RELAY = ("relay.test", "127.0.0.24")  # relayhost: routed mail must bypass it
NTAMX = ("ntamx.example.test", "127.0.0.25")  # an NTA 7516 ntamx host, cert from the trusted CA
DOWN_NTAMX = ("down.example.test", "127.0.0.26")  # an ntamx host where nobody listens
HOSTS = "127.0.0.1 localhost\n" + "".join(
    f"{ip} {name}\n" for name, ip in (TRUSTED_MX, UNTRUSTED_MX, PLAIN_MX, RELAY, NTAMX, DOWN_NTAMX)
)
ROUTE = "X-Zivmilter-Route"

# With real DNS (the shared NSD + Unbound): the pane and dane transports need DNSSEC answers.
# (Unbound refuses the special-use .test TLD, hence .example here.)
_ = shared_dns  # the session fixture, imported so pytest finds it
DANE_CERT = SelfSigned("mx.dane-route.example")
DNS_MX = {  # zone -> (signed, MX address)
    "pane-route.example": (True, "127.0.0.31"),
    "unsigned-route.example": (False, "127.0.0.32"),
    "dane-route.example": (True, "127.0.0.33"),
    "notlsa-route.example": (True, "127.0.0.34"),
}


# --- the stand-in milter (runs in its own process: libmilter allows one main loop each) ------


def run_milter(socket_spec: str) -> None:
    """Add `X-Zivmilter-Route: direct-pkix` when a recipient's domain starts with `pkix.`, and
    `direct-pkix nexthop=[ntamx.example.test]` (an NTA 7516 route) when it starts with `nta.`."""
    import Milter

    class RouteMilter(Milter.Base):  # type: ignore[misc]
        def __init__(self) -> None:
            self.route: str | None = None

        def envfrom(self, mailfrom: str, *args: str) -> int:
            self.route = None
            return int(Milter.CONTINUE)

        def envrcpt(self, to: str, *args: str) -> int:
            domain = to.strip("<>").rpartition("@")[2].lower()
            if domain.startswith("pkix."):
                self.route = "direct-pkix"
            elif domain.startswith("nta."):
                self.route = f"direct-pkix nexthop=[{NTAMX[0]}]"
            return int(Milter.CONTINUE)

        def eom(self) -> int:
            if self.route is not None:
                self.addheader(ROUTE, self.route)
            return int(Milter.ACCEPT)

    os.umask(0)  # the unix socket must be writable by Postfix's smtpd (user postfix)
    Milter.factory = RouteMilter
    Milter.set_flags(Milter.ADDHDRS)
    Milter.runmilter("route-test", socket_spec, timeout=30)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def hosts() -> Iterator[None]:
    with bind_mounted("/etc/hosts", HOSTS):
        yield


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA) -> Iterator[str]:
    with postfix_ca_file(ca) as path:
        yield path


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    # Reachable by the postfix user (pytest's tmp_path is 0700).
    d = Path(tempfile.mkdtemp(prefix="zivmilter-routes-"))
    d.chmod(0o755)
    yield d
    for child in d.iterdir():
        child.unlink()
    d.rmdir()


@pytest.fixture(scope="module")
def milter(shared_dir: Path) -> Iterator[str]:
    path = shared_dir / "route-milter.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_postfix_routes", f"unix:{path}"],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"test milter exited with {proc.returncode}"
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                break
            except OSError:
                assert time.monotonic() < deadline, "test milter did not listen"
                time.sleep(0.05)
        yield f"unix:{path}"
    finally:
        proc.kill()  # a stateless stub: SIGTERM would make libmilter linger for seconds
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dns_zones(shared_dns: TestDns) -> TestDns:
    zones = []
    for zone, (signed, ip) in DNS_MX.items():
        records = ["@ MX 10 mx", f"mx A {ip}"]
        if zone == "dane-route.example":
            records.append(f"_25._tcp.mx TLSA {tlsa_rdata(DANE_CERT.cert_der, 3, 1, 1)}")
        zones.append(Zone(zone, signed=signed, records=records))
    shared_dns.set_zones(zones)
    return shared_dns


def dns_sink(zone: str, cert: Any) -> Sink:
    name = f"mx.{zone}"
    return Sink(DNS_MX[zone][1], 25, tls=server_tls_context(cert), hostname=name)


def tls_sink(mx: tuple[str, str], issuer: Any) -> Sink:
    name, ip = mx
    return Sink(ip, 25, tls=server_tls_context(issuer.issue_cert(name)), hostname=name)


def send(port: int, rcpt: str, extra_headers: str = "") -> None:
    body = (
        f"From: app@sender.test\r\nTo: {rcpt}\r\nSubject: route test\r\n{extra_headers}\r\n"
        "A secured message.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.sendmail("app@sender.test", [rcpt], body.encode())


def assert_no_route_header(data: bytes) -> None:
    assert ROUTE.lower().encode() not in data.lower(), data.decode(errors="replace")


# --- tests ---------------------------------------------------------------------------------


def test_route_header_sends_through_pkix_transport_to_the_mx(
    milter: str, ca: Any, ca_file: str
) -> None:
    with (
        tls_sink(TRUSTED_MX, ca) as mx,
        Sink(RELAY[1], 25) as relay,
        PostfixInstance(milter=milter, tls_ca_file=ca_file, relayhost=f"[{RELAY[0]}]:25") as pf,
    ):
        send(pf.smtp_port, f"user@{TRUSTED_MX[0]}")
        (got,) = mx.wait_for(1)
        assert got.rcpt_tos == (f"user@{TRUSTED_MX[0]}",)
        assert got.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_no_route_header(got.data)
        assert b"A secured message." in got.data
        # Routed by milter_header_checks, i.e. because the milter (not the client) said so.
        pf.wait_for_log(
            r"milter-header-filter: header X-Zivmilter-Route: direct-pkix .*: zivmilter-pkix:$"
        )
        pf.wait_for_log(
            rf"postfix/zivmilter-pkix/smtp\[\d+\]: Verified TLS connection established "
            rf"to {TRUSTED_MX[0]}\[{TRUSTED_MX[1]}\]:25"
        )
        pf.wait_for_log(
            rf"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<user@{TRUSTED_MX[0]}>, "
            rf"relay={TRUSTED_MX[0]}\[{TRUSTED_MX[1]}\]:25, .*status=sent"
        )
        # The route's empty next hop means the recipient's own MX, not the relayhost.
        assert relay.received == []


# A site whose main.cf says "no TLS for that MX", in the current table and in the legacy
# per-site one (Postfix reads that one when the policy map is empty): the route still holds.
_NO_TLS = f"inline:{{ {UNTRUSTED_MX[0]}=NONE }}"
_SITE_TABLES = {"smtp_tls_per_site": _NO_TLS, "smtp_tls_policy_maps": _NO_TLS.lower()}


@pytest.mark.parametrize("site", [{}, _SITE_TABLES], ids=["plain", "site-wide-tls-tables"])
def test_untrusted_certificate_is_deferred_not_delivered(
    milter: str, ca: Any, ca_file: str, site: dict[str, str]
) -> None:
    with (
        tls_sink(UNTRUSTED_MX, trustme.CA()) as mx,
        PostfixInstance(milter=milter, tls_ca_file=ca_file, extra=site) as pf,
    ):
        send(pf.smtp_port, f"user@{UNTRUSTED_MX[0]}")
        found = pf.wait_for_log(
            rf"postfix/zivmilter-pkix/smtp\[\d+\]: (\w+): to=<user@{UNTRUSTED_MX[0]}>, "
            r".*status=deferred \((.*)\)"
        )
        assert "certificate" in found.group(2).lower(), found.group(0)
        queued = {m["queue_id"]: m for m in pf.queue()}
        assert found.group(1) in queued
        assert queued[found.group(1)]["queue_name"] == "deferred"
        time.sleep(1)  # a wrong retry would deliver within Postfix's 1 s backoff
        assert mx.received == []
        assert "status=sent" not in pf.log()


def test_route_header_from_client_is_removed_and_not_obeyed(milter: str, ca_file: str) -> None:
    with Sink(PLAIN_MX[1], 25) as mx, PostfixInstance(milter=milter, tls_ca_file=ca_file) as pf:
        send(
            pf.smtp_port,
            f"user@{PLAIN_MX[0]}",
            f"{ROUTE}: direct-pkix\r\nx-zivmilter-ROUTE:  direct-dane\r\n",
        )
        # Obeyed, the pkix transport would keep it deferred: this MX has no STARTTLS.
        (got,) = mx.wait_for(1)
        assert got.tls_version is None
        assert_no_route_header(got.data)
        pf.wait_for_log(rf"postfix/smtp\[\d+\]: \w+: to=<user@{PLAIN_MX[0]}>, .*status=sent")
        assert "client-supplied X-Zivmilter-Route removed" in pf.log()
        assert "zivmilter-pkix" not in pf.log()
        assert "zivmilter-dane" not in pf.log()


def test_reinjected_route_header_is_obeyed_without_milter(
    shared_dir: Path, ca: Any, ca_file: str
) -> None:
    # The milter socket is dead: the main listener would tempfail, the re-injection
    # listener must not consult any milter at all.
    dead = f"unix:{shared_dir}/nobody-listens.sock"
    with tls_sink(TRUSTED_MX, ca) as mx, PostfixInstance(milter=dead, tls_ca_file=ca_file) as pf:
        send(pf.reinject_port, f"copy@{TRUSTED_MX[0]}", f"{ROUTE}: direct-pkix\r\n")
        (got,) = mx.wait_for(1)
        assert got.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_no_route_header(got.data)
        pf.wait_for_log(
            rf"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<copy@{TRUSTED_MX[0]}>, .*status=sent"
        )


@pytest.mark.parametrize(
    "value",
    [
        "direct-bogus",
        # Even from zivmilter's side (re-injection), a next hop that is not a list of bracketed
        # DNS names (here: a port, which could point the level's transport elsewhere) is a fault.
        f"direct-pkix nexthop=[{NTAMX[0]}]:2525",
    ],
    ids=["unknown-level", "nexthop-with-port"],
)
def test_a_route_value_it_does_not_know_holds_the_message(value: str, ca_file: str) -> None:
    with Sink(PLAIN_MX[1], 25) as mx, PostfixInstance(tls_ca_file=ca_file) as pf:
        send(pf.reinject_port, f"user@{PLAIN_MX[0]}", f"{ROUTE}: {value}\r\n")
        found = pf.wait_for_log(rf"(\w+): hold: header X-Zivmilter-Route: {re.escape(value)}")
        queued = {m["queue_id"]: m for m in pf.queue()}
        assert queued[found.group(1)]["queue_name"] == "hold"
        assert mx.received == []


def test_milter_down_tempfails_at_mail_from(shared_dir: Path) -> None:
    dead = f"unix:{shared_dir}/nobody-listens.sock"
    with PostfixInstance(milter=dead) as pf, smtplib.SMTP("127.0.0.1", pf.smtp_port) as client:
        client.ehlo()
        code, text = client.mail("app@sender.test")
        assert code == 451, text
        assert text.startswith(b"4.7.1"), text


def test_nexthop_route_delivers_to_the_ntamx_host_not_the_mx(
    milter: str, ca: Any, ca_file: str
) -> None:
    # nta.plain.test has no NTA route of its own: without the next hop, its "MX" would be
    # plain.test's sink (no STARTTLS), where the pkix transport could not deliver at all.
    rcpt = f"user@nta.{PLAIN_MX[0]}"
    hosts = HOSTS + f"{PLAIN_MX[1]} nta.{PLAIN_MX[0]}\n"
    with (
        bind_mounted("/etc/hosts", hosts),
        tls_sink(NTAMX, ca) as ntamx,
        Sink(PLAIN_MX[1], 25) as mx,
        PostfixInstance(milter=milter, tls_ca_file=ca_file) as pf,
    ):
        send(pf.smtp_port, rcpt)
        (got,) = ntamx.wait_for(1)
        assert got.rcpt_tos == (rcpt,)
        assert got.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_no_route_header(got.data)
        assert b"A secured message." in got.data
        pf.wait_for_log(
            rf"milter-header-filter: header X-Zivmilter-Route: direct-pkix "
            rf"nexthop=\[{NTAMX[0]}\] .*: zivmilter-pkix:\[{NTAMX[0]}\]$"
        )
        pf.wait_for_log(
            rf"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<{rcpt}>, "
            rf"relay={NTAMX[0]}\[{NTAMX[1]}\]:25, .*status=sent"
        )
        assert mx.received == []


def test_nexthop_list_is_tried_in_order(ca: Any, ca_file: str) -> None:
    # The first ntamx host does not answer: Postfix goes on to the next one in the list.
    route = f"direct-pkix nexthop=[{DOWN_NTAMX[0]}],[{NTAMX[0]}]"
    with (
        tls_sink(NTAMX, ca) as ntamx,
        Sink(PLAIN_MX[1], 25) as mx,
        PostfixInstance(tls_ca_file=ca_file) as pf,
    ):
        send(pf.reinject_port, f"user@{PLAIN_MX[0]}", f"{ROUTE}: {route}\r\n")
        (got,) = ntamx.wait_for(1)
        assert got.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_no_route_header(got.data)
        pf.wait_for_log(rf"zivmilter-pkix/smtp\[\d+\]: connect to {DOWN_NTAMX[0]}\[")
        pf.wait_for_log(
            rf"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<user@{PLAIN_MX[0]}>, "
            rf"relay={NTAMX[0]}\[{NTAMX[1]}\]:25, .*status=sent"
        )
        assert mx.received == []


def test_client_nexthop_route_header_is_removed_and_not_obeyed(
    milter: str, ca: Any, ca_file: str
) -> None:
    # A client names a host of its choice as next hop, and tries to smuggle a second
    # transport in: neither is obeyed, the header never reaches a receiving server.
    injected = (
        f"{ROUTE}: direct-pkix nexthop=[{NTAMX[0]}]\r\n"
        f"{ROUTE}: direct-tls nexthop=[{NTAMX[0]}] smtp:[{RELAY[0]}]\r\n"
    )
    with (
        tls_sink(NTAMX, ca) as ntamx,
        Sink(PLAIN_MX[1], 25) as mx,
        PostfixInstance(milter=milter, tls_ca_file=ca_file) as pf,
    ):
        send(pf.smtp_port, f"user@{PLAIN_MX[0]}", injected)
        (got,) = mx.wait_for(1)
        assert got.tls_version is None
        assert_no_route_header(got.data)
        pf.wait_for_log(rf"postfix/smtp\[\d+\]: \w+: to=<user@{PLAIN_MX[0]}>, .*status=sent")
        assert pf.log().count("client-supplied X-Zivmilter-Route removed") == 2
        assert "zivmilter-pkix" not in pf.log() and "zivmilter-tls" not in pf.log()
        assert ntamx.received == []


def test_pane_route_delivers_to_signed_mx_over_verified_tls(
    dns_zones: TestDns, ca: Any, ca_file: str
) -> None:
    zone = "pane-route.example"
    with (
        dns_sink(zone, ca.issue_cert(f"mx.{zone}")) as mx,
        PostfixInstance(dns=True, tls_ca_file=ca_file) as pf,
    ):
        send(pf.reinject_port, f"u@{zone}", f"{ROUTE}: direct-pane\r\n")
        (got,) = mx.wait_for(1)
        assert got.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_no_route_header(got.data)
        pf.wait_for_log(
            rf"zivmilter-pane/smtp\[\d+\]: Verified TLS connection established to mx\.{zone}"
        )
        pf.wait_for_log(
            rf"zivmilter-pane/smtp\[\d+\]: \w+: to=<u@{zone}>, relay=mx\.{zone}.*status=sent"
        )


@pytest.mark.xfail(
    strict=True,
    reason="Postfix has no level that requires DNSSEC-validated MX records without TLSA: "
    "zivmilter-pane (verify + dnssec) enforces PKIX only; DNSSEC is checked at probe time",
)
def test_pane_route_refuses_an_unsigned_mx(dns_zones: TestDns, ca: Any, ca_file: str) -> None:
    zone = "unsigned-route.example"
    with (
        dns_sink(zone, ca.issue_cert(f"mx.{zone}")) as mx,
        PostfixInstance(dns=True, tls_ca_file=ca_file) as pf,
    ):
        send(pf.reinject_port, f"u@{zone}", f"{ROUTE}: direct-pane\r\n")
        found = pf.wait_for_log(rf"zivmilter-pane/smtp\[\d+\]: \w+: to=<u@{zone}>.*status=(\w+)")
        assert found.group(1) == "deferred"
        assert mx.received == []


def test_dane_route_delivers_when_tlsa_matches(dns_zones: TestDns, ca_file: str) -> None:
    zone = "dane-route.example"
    with dns_sink(zone, DANE_CERT) as mx, PostfixInstance(dns=True, tls_ca_file=ca_file) as pf:
        send(pf.reinject_port, f"u@{zone}", f"{ROUTE}: direct-dane\r\n")
        (got,) = mx.wait_for(1)
        assert got.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_no_route_header(got.data)
        # A self-signed certificate: only its TLSA record can have made this delivery verified.
        pf.wait_for_log(
            rf"zivmilter-dane/smtp\[\d+\]: Verified TLS connection established to mx\.{zone}"
        )
        pf.wait_for_log(
            rf"zivmilter-dane/smtp\[\d+\]: \w+: to=<u@{zone}>, relay=mx\.{zone}.*status=sent"
        )


def test_dane_route_without_tlsa_is_deferred(dns_zones: TestDns, ca: Any, ca_file: str) -> None:
    zone = "notlsa-route.example"
    with (
        dns_sink(zone, ca.issue_cert(f"mx.{zone}")) as mx,
        PostfixInstance(dns=True, tls_ca_file=ca_file) as pf,
    ):
        send(pf.reinject_port, f"u@{zone}", f"{ROUTE}: direct-dane\r\n")
        pf.wait_for_log(
            rf"zivmilter-dane/smtp\[\d+\]: \w+: to=<u@{zone}>.*status=deferred \(no TLSA records"
        )
        assert mx.received == []


if __name__ == "__main__":
    run_milter(sys.argv[1])
