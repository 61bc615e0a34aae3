"""The prober as the milter's live source of facts, on a real Postfix with real DNS (SPEC 4).

No facts file: the milter asks the transport cache, primed by `zivmilter probe` as an admin
would. A recipient domain whose MX has a CA-valid certificate gets direct delivery through
zivmilter-pkix (Postfix itself resolves the MX through the same validating resolver); the same
kind of domain with a self-signed certificate gets a notification. An NTA 7516 domain whose
record names an ntamx host gets direct delivery to that host, not to its (weak) MX (SPEC 4a).
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import trustme

from tests.harness.dns import SelfSigned, TestDns, Zone, shared_dns
from tests.harness.postfix import REPO, PostfixInstance
from tests.harness.sink import Sink, server_tls_context
from tests.harness.zivmilter import ZivmilterProcess, attach

pytestmark = pytest.mark.integration
_ = shared_dns

GOOD_IP, SELF_IP = "127.0.6.10", "127.0.6.11"
WEAK_MX_IP, NTAMX_IP = "127.0.6.12", "127.0.6.13"  # nta.example's MX (no STARTTLS), its ntamx
NTA_RECORD = (
    '@ TXT "v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=Test Mail;'
    'ntamx=10 ntamx.nta.example"'
)
ZONES = [
    Zone("good.example", records=["@ MX 10 mx", f"mx A {GOOD_IP}"]),
    Zone("selfie.example", records=["@ MX 10 mx", f"mx A {SELF_IP}"]),
    Zone(
        "nta.example",
        signed=True,
        records=["@ MX 10 mx", f"mx A {WEAK_MX_IP}", f"ntamx A {NTAMX_IP}", NTA_RECORD],
    ),
]
MARKER = "BODY-MARKER-e2e-transport"


@pytest.fixture(scope="module")
def world(
    shared_dns: TestDns,
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess, Sink, Sink, Sink, Sink]]:
    shared_dns.set_zones(ZONES)
    ca = trustme.CA()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(ca.cert_pem.bytes())
    os.chmod(f.name, 0o644)
    try:
        with (
            Sink(GOOD_IP, 25, tls=server_tls_context(ca.issue_cert("mx.good.example"))) as good,
            Sink(SELF_IP, 25, tls=server_tls_context(SelfSigned("mx.selfie.example"))) as selfie,
            Sink(WEAK_MX_IP, 25, hostname="mx.nta.example") as weak_mx,
            Sink(
                NTAMX_IP,
                25,
                tls=server_tls_context(ca.issue_cert("ntamx.nta.example")),
                hostname="ntamx.nta.example",
            ) as ntamx,
        ):
            pf = PostfixInstance(dns=True, tls_ca_file=f.name)
            z = attach(
                pf,
                config={
                    "organization": {"nta7516": True},
                    "policy": {"transport_security_compliance": "pkix"},
                    "transport": {"ca_file": f.name, "timeout": 5},
                },
            )
            for domain in ("good.example", "selfie.example", "nta.example"):
                probe = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "zivmilter",
                        "probe",
                        domain,
                        "--config",
                        str(z.config_file),
                    ],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert probe.returncode == 0, probe.stderr
            with z, pf:
                yield pf, z, good, selfie, weak_mx, ntamx
    finally:
        os.unlink(f.name)


def _send(pf: PostfixInstance, rcpt: str) -> None:
    data = (
        f"From: alice@hospital.example\r\nTo: {rcpt}\r\nSubject: results\r\n\r\n{MARKER}\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", [rcpt], data) == {}


def test_ca_valid_mx_gets_direct_delivery_through_pkix(world: tuple) -> None:  # type: ignore[type-arg]
    pf, z, good, *_ = world
    _send(pf, "r@good.example")
    (got,) = good.wait_for(1)
    assert MARKER.encode() in got.data
    assert got.tls_version in ("TLSv1.2", "TLSv1.3")
    pf.wait_for_log(r"postfix/zivmilter-pkix/smtp\[\d+\]: \w+: to=<r@good\.example>.*status=sent")
    assert "rule=A4" in z.log() and "level=pkix" in z.log()


def test_self_signed_mx_gets_a_notification(world: tuple) -> None:  # type: ignore[type-arg]
    pf, z, _, selfie, *_ = world
    _send(pf, "r@selfie.example")
    (got,) = selfie.wait_for(1)
    assert MARKER.encode() not in got.data
    assert got.message()["X-Zivmilter-Notification"] == "1"
    assert "to=<r@selfie.example> delivery=notification" in z.log()


def test_nta_domain_is_delivered_to_its_ntamx_host_not_its_weak_mx(world: tuple) -> None:  # type: ignore[type-arg]
    # nta.example's MX offers no STARTTLS: judged on it, rule 2 could not apply and the
    # recipient would get a notification there. Its signed NTA 7516 record names an ntamx host
    # with a CA-valid certificate: the message itself goes there, over verified TLS.
    pf, z, _, _, weak_mx, ntamx = world
    _send(pf, "r@nta.example")
    (got,) = ntamx.wait_for(1)
    assert got.rcpt_tos == ("r@nta.example",)
    assert MARKER.encode() in got.data
    assert got.tls_version in ("TLSv1.2", "TLSv1.3")
    assert b"x-zivmilter-route" not in got.data.lower()
    assert "X-Zivmilter-Notification" not in got.message()
    # pane: CA-valid certificate, and the signed NTA record stands in for signed MX records
    pf.wait_for_log(
        r"zivmilter-pane/smtp\[\d+\]: Verified TLS connection established to "
        rf"ntamx\.nta\.example\[{NTAMX_IP}\]:25"
    )
    pf.wait_for_log(
        r"postfix/zivmilter-pane/smtp\[\d+\]: \w+: to=<r@nta\.example>, "
        rf"relay=ntamx\.nta\.example\[{NTAMX_IP}\]:25, .*status=sent"
    )
    log = z.log()
    assert "to=<r@nta.example> delivery=direct method=nta7516 level=pane rule=A2" in log
    assert "nexthop=ntamx.nta.example" in log
    assert weak_mx.received == []
    assert f"[{WEAK_MX_IP}]" not in pf.log()
