"""From what a probe found to a level (SPEC 4): per connection, per MX host, per domain.

Pure: probe.py gathers the facts (DNS answers, TLS outcomes, DANE checks) and asks here. The
weakest connection decides a host, the weakest host decides the domain.
"""

from __future__ import annotations

from collections.abc import Sequence

from zivmilter.core.facts import TransportFact
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport.model import DaneOutcome, Dnssec, HostResult, TlsResult

_GOOD_TLS = {"TLSv1.2": TlsVersion.TLS1_2, "TLSv1.3": TlsVersion.TLS1_3}


def tls_version(openssl_name: str | None) -> TlsVersion | None:
    """TLS 1.2 or later as a TlsVersion; None for anything older (or no TLS at all)."""
    return _GOOD_TLS.get(openssl_name or "")


def grade_connection(tls: TlsResult, dnssec: Dnssec, dane: DaneOutcome | None) -> tuple[Level, str]:
    """The level one connection meets, and why."""
    if not tls.starttls:
        return Level.NONE, tls.error or "STARTTLS not offered"
    if tls.tls_version is None:
        return Level.NONE, tls.error or "TLS handshake failed"
    if tls_version(tls.tls_version) is None:
        return Level.NONE, f"only {tls.tls_version} negotiated; TLS 1.2 or later is required"
    if dane is not None and dane.valid and dnssec.mx and dnssec.address and dnssec.tlsa:
        return Level.DANE, f"DANE: {dane.reason}"
    if tls.pkix_valid:
        if dnssec.mx:
            return Level.PANE, "CA-valid certificate and DNSSEC-signed MX records"
        return Level.PKIX, "CA-valid certificate; MX records not DNSSEC-signed"
    why = f"certificate not CA-valid ({tls.pkix_error or 'unknown reason'})"
    return Level.TLS, f"{tls.tls_version} without authentication: {why}"


def weakest_host(hosts: Sequence[HostResult]) -> HostResult | None:
    """The host that decides the domain's level; ties go to the first (lowest preference)."""
    best: HostResult | None = None
    for host in hosts:
        if best is None or host.level < best.level:
            best = host
    return best


def grade_domain(
    hosts: Sequence[HostResult], kind: str = "MX"
) -> tuple[Level, TlsVersion | None, str]:
    """Level, weakest negotiated TLS version, and reason of a domain from its MX hosts (or,
    with kind="ntamx", from the ntamx hosts of its NTA 7516 record)."""
    worst = weakest_host(hosts)
    if worst is None:
        return Level.NONE, None, f"no {kind} host to deliver to"
    versions = [tls_version(h.tls_version) for h in hosts]
    weakest_version = None if None in versions else min(v for v in versions if v is not None)
    if len(hosts) == 1:
        reason = f"{worst.host}: {worst.reason}"
    elif all(h.level == worst.level for h in hosts):
        reason = (
            f"all {len(hosts)} {kind} hosts are {worst.level.value} ({worst.host}: {worst.reason})"
        )
    else:
        reason = f"weakest of {len(hosts)} {kind} hosts is {worst.host}: {worst.reason}"
    return worst.level, weakest_version, reason


def grade_ntamx(hosts: Sequence[HostResult]) -> TransportFact | None:
    """What the ntamx hosts of an NTA 7516 record meet, for the policy core (NtaFact); None
    when none were probed."""
    if not hosts:
        return None
    level, version, reason = grade_domain(hosts, "ntamx")
    return TransportFact(level, version, reason)
