"""SPF for submission (SPEC 7) against a real authoritative DNS (NSD) behind a validating resolver
(Unbound), from tests/harness/dns.py: pass, fail, softfail, neutral, none, temperror.

First the adapter alone (spf.PySpfChecker, asking the resolver configured as "IP" or "IP@PORT"),
then the whole path: a client outside the trusted networks submits to a real Postfix with the
real zivmilter, and the SMTP reply is what the test checks.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.dns import AUTH_ADDRESS, RESOLVER_ADDRESS, TestDns, Zone, shared_dns
from tests.harness.postfix import HOST, PostfixInstance
from tests.harness.sink import Sink
from tests.harness.zivmilter import attach
from zivmilter.core.submission import SpfVerdict
from zivmilter.transport.spf import PySpfChecker

pytestmark = pytest.mark.integration

__all__ = ["shared_dns"]  # the session fixture, imported so pytest finds it here

CLIENT = "127.0.0.9"  # the submitting client; zivmilter trusts 127.0.0.1/32 only
SINK_IP = "127.0.0.32"
SPF_RECORDS = {
    "pass": f'@ TXT "v=spf1 ip4:{CLIENT} -all"',
    "fail": '@ TXT "v=spf1 ip4:192.0.2.1 -all"',
    "softfail": '@ TXT "v=spf1 ip4:192.0.2.1 ~all"',
    "neutral": '@ TXT "v=spf1 ?all"',
    "none": '@ TXT "just some text, no SPF"',
    # Signed with signatures that expired: the validating resolver answers SERVFAIL.
    "temperror": f'@ TXT "v=spf1 ip4:{CLIENT} -all"',
}
# Pass through an include and an a: mechanism: more than one lookup, all through our resolver.
INCLUDE_ZONE = Zone(
    "spf-include.example",
    records=[
        '@ TXT "v=spf1 include:_spf.spf-include.example -all"',
        '_spf TXT "v=spf1 a:relay.spf-include.example -all"',
        f"relay A {CLIENT}",
    ],
)


def domain(result: str) -> str:
    # Not under .test: Unbound answers NXDOMAIN for that whole TLD itself (RFC 6761 default).
    return f"spf-{result}.example"


ZONES = [
    Zone(domain(name), records=[record], signed=name == "temperror", bogus=name == "temperror")
    for name, record in SPF_RECORDS.items()
] + [INCLUDE_ZONE]
DOMAINS = [z.name for z in ZONES]


@pytest.fixture(scope="module")
def dns_zones(shared_dns: TestDns) -> Iterator[TestDns]:
    shared_dns.set_zones(ZONES)
    yield shared_dns


# --- the adapter alone ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("pass", SpfVerdict.PASS),
        ("fail", SpfVerdict.FAIL),
        ("softfail", SpfVerdict.SOFTFAIL),
        ("neutral", SpfVerdict.NEUTRAL),
        ("none", SpfVerdict.NONE),
        ("temperror", SpfVerdict.TEMPERROR),
        ("include", SpfVerdict.PASS),
    ],
)
def test_adapter_through_the_validating_resolver(
    dns_zones: TestDns, name: str, verdict: SpfVerdict
) -> None:
    checker = PySpfChecker([RESOLVER_ADDRESS], timeout=5)
    result = checker.check(CLIENT, f"app@{domain(name)}", "client.example")
    assert result.verdict is verdict, (result, dns_zones.log())


def test_adapter_asks_the_configured_server_and_port(dns_zones: TestDns) -> None:
    # NSD answers its own zones directly: IP@PORT reaches it, the resolver is bypassed.
    checker = PySpfChecker([f"{AUTH_ADDRESS}@53"], timeout=5)
    assert checker.check(CLIENT, "app@spf-pass.example").verdict is SpfVerdict.PASS
    assert checker.check("192.0.2.77", "app@spf-pass.example").verdict is SpfVerdict.FAIL


def test_adapter_temperror_when_no_server_answers(dns_zones: TestDns) -> None:
    checker = PySpfChecker(["127.0.0.77@53"], timeout=2)  # nobody listens there
    started = time.monotonic()
    result = checker.check(CLIENT, "app@spf-pass.example")
    assert result.verdict is SpfVerdict.TEMPERROR, result
    assert time.monotonic() - started < 10


# --- through Postfix and the milter --------------------------------------------------------

CONFIG: dict[str, Any] = {
    "organization": {"domains": DOMAINS},
    "submission": {
        "trusted_networks": ["127.0.0.1/32"],
        "spf": True,
        "any_address_of_own_domains": True,
    },
    "transport": {"resolver": [RESOLVER_ADDRESS]},
}
FACTS: dict[str, Any] = {"transport": {"partner.example": "none"}}


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink(SINK_IP, 25) as s:
        yield s


@pytest.fixture(scope="module")
def gateway(dns_zones: TestDns, sink: Sink) -> Iterator[PostfixInstance]:
    pf = PostfixInstance(relayhost=f"[{SINK_IP}]:25")
    with attach(pf, config=CONFIG, facts=FACTS), pf:
        yield pf


def submit(pf: PostfixInstance, sender: str) -> tuple[int, str]:
    data = (
        f"From: {sender}\r\nTo: bob@partner.example\r\nSubject: SPF test\r\n"
        f"Message-ID: <{time.monotonic_ns()}@spf.example>\r\n\r\nBody.\r\n"
    ).encode()
    with smtplib.SMTP(HOST, pf.smtp_port, timeout=60, source_address=(CLIENT, 0)) as s:
        try:
            s.sendmail(sender, ["bob@partner.example"], data)
        except smtplib.SMTPDataError as exc:
            error = exc.smtp_error
            text = error if isinstance(error, str) else error.decode("ascii", "replace")
            return exc.smtp_code, text
    return 250, "ok"


@pytest.mark.parametrize("name", ["pass", "include"])
def test_spf_pass_is_accepted(gateway: PostfixInstance, sink: Sink, name: str) -> None:
    before = len(sink.received)
    assert submit(gateway, f"app@{domain(name)}") == (250, "ok")
    got = sink.wait_for(before + 1)[before:]
    assert any("bob@partner.example" in r.rcpt_tos for r in got)


@pytest.mark.parametrize("name", ["fail", "softfail", "neutral", "none"])
def test_spf_other_results_are_rejected(gateway: PostfixInstance, name: str) -> None:
    code, text = submit(gateway, f"app@{domain(name)}")
    assert code == 550, text
    assert text.startswith("5.7.1 not allowed to submit"), text
    assert f"SPF {name} for {domain(name)}" in text


def test_spf_temperror_is_a_temporary_failure(gateway: PostfixInstance) -> None:
    code, text = submit(gateway, f"app@{domain('temperror')}")
    assert code == 451, text
    assert text.startswith("4.7.1 SPF check failed temporarily"), text
    assert f"SPF temperror for {domain('temperror')}" in text


def test_spf_is_not_asked_for_a_domain_that_is_not_ours(gateway: PostfixInstance) -> None:
    # Whatever its SPF says, the organization does not send for this domain.
    code, text = submit(gateway, "app@stranger.example")
    assert code == 550 and "stranger.example is not one of organization.domains" in text


def test_spf_switched_on_for_one_listener_only(dns_zones: TestDns, sink: Sink) -> None:
    # submission.spf is off; the listener Postfix names ({daemon_name}, by default its
    # myhostname) has SPF on: its mail from an SPF-passing domain is accepted, and `run` must
    # have built an SPF checker for that listener alone.
    from tests.harness.postfix import MYHOSTNAME

    config = {
        **CONFIG,
        "submission": {
            "trusted_networks": [],
            "spf": False,
            "any_address_of_own_domains": True,
            "listeners": {
                MYHOSTNAME: {
                    "trusted_networks": [],
                    "spf": True,
                    "any_address_of_own_domains": True,
                }
            },
        },
    }
    pf = PostfixInstance(relayhost=f"[{SINK_IP}]:25")
    with attach(pf, config=config, facts=FACTS), pf:
        before = len(sink.received)
        assert submit(pf, f"app@{domain('pass')}") == (250, "ok")
        sink.wait_for(before + 1)
        code, text = submit(pf, f"app@{domain('fail')}")
        assert code == 550 and "SPF fail" in text, text
