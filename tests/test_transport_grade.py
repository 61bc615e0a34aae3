"""From probe facts to levels (SPEC 4): per connection, and the weakest host for the domain."""

from __future__ import annotations

import pytest

from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport.grade import grade_connection, grade_domain
from zivmilter.transport.model import DaneOutcome, Dnssec, HostResult, TlsResult

TLS13 = TlsResult("192.0.2.1", True, True, "TLSv1.3", pkix_valid=False, pkix_error="self-signed")
PKIX = TlsResult("192.0.2.1", True, True, "TLSv1.2", pkix_valid=True)
TLS11 = TlsResult("192.0.2.1", True, True, "TLSv1.1", error="only TLSv1.1 offered")
NO_TLS = TlsResult("192.0.2.1", True, False, error="STARTTLS not offered")
FAILED = TlsResult("192.0.2.1", True, True, None, error="TLS handshake failed: x")
ALL_SIGNED = Dnssec(mx=True, address=True, tlsa=True)
MX_SIGNED = Dnssec(mx=True)
UNSIGNED = Dnssec()
MATCH = DaneOutcome(True, "matches")
NO_MATCH = DaneOutcome(False, "no match")

ROWS = [
    # (connection, dnssec, dane outcome, level)
    (NO_TLS, ALL_SIGNED, MATCH, Level.NONE),
    (FAILED, ALL_SIGNED, None, Level.NONE),
    (TLS11, ALL_SIGNED, MATCH, Level.NONE),  # DANE does not lift TLS < 1.2
    (TLS13, UNSIGNED, None, Level.TLS),
    (TLS13, ALL_SIGNED, MATCH, Level.DANE),  # DANE-EE needs no CA
    (TLS13, ALL_SIGNED, NO_MATCH, Level.TLS),
    (TLS13, Dnssec(mx=True, address=False, tlsa=True), MATCH, Level.TLS),  # addresses unsigned
    (TLS13, Dnssec(mx=False, address=True, tlsa=True), MATCH, Level.TLS),  # MX unsigned
    (TLS13, Dnssec(mx=True, address=True, tlsa=False), MATCH, Level.TLS),  # TLSA unsigned
    (PKIX, UNSIGNED, None, Level.PKIX),
    (PKIX, MX_SIGNED, None, Level.PANE),
    (PKIX, ALL_SIGNED, NO_MATCH, Level.PANE),
    (PKIX, ALL_SIGNED, MATCH, Level.DANE),
]


@pytest.mark.parametrize(("tls", "dnssec", "outcome", "level"), ROWS)
def test_connection_levels(
    tls: TlsResult, dnssec: Dnssec, outcome: DaneOutcome | None, level: Level
) -> None:
    got, reason = grade_connection(tls, dnssec, outcome)
    assert got is level, reason
    assert reason


def _host(name: str, level: Level, version: str | None = "TLSv1.3") -> HostResult:
    return HostResult(name, 10, tls_version=version, level=level, reason=f"{level.value} reason")


def test_weakest_host_wins() -> None:
    hosts = [
        _host("mx1", Level.DANE),
        _host("mx2", Level.PKIX, "TLSv1.2"),
        _host("mx3", Level.PANE),
    ]
    level, version, reason = grade_domain(hosts)
    assert level is Level.PKIX and version is TlsVersion.TLS1_2
    assert "mx2" in reason


def test_one_host_without_tls_makes_the_domain_none() -> None:
    level, version, _ = grade_domain([_host("mx1", Level.DANE), _host("mx2", Level.NONE, None)])
    assert level is Level.NONE and version is None


def test_no_hosts_is_none() -> None:
    assert grade_domain([])[0] is Level.NONE


def test_all_equal_hosts() -> None:
    level, version, reason = grade_domain([_host("a", Level.PANE), _host("b", Level.PANE)])
    assert level is Level.PANE and version is TlsVersion.TLS1_3 and "all 2" in reason
