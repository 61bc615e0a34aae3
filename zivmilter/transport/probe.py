"""The prober: what transport security a recipient domain's MX hosts offer (SPEC 4, 4a).

MX lookup (implicit MX, null MX), per host its addresses, TLSA records and STARTTLS outcome
(starttls.py), all through the configured validating resolver (resolver.py); grade.py and dane.py
judge; the apex NTA 7516 TXT record comes along, and the ntamx hosts it names are probed like MX
hosts. Every failure is a value with a reason: `probe` never raises. live.py runs it in the
background, commands.py for `zivmilter probe`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from zivmilter import defaults
from zivmilter.core.addresses import normalize_domain
from zivmilter.core.config import TransportConfig
from zivmilter.core.levels import Level
from zivmilter.transport import dane, grade, nta7516
from zivmilter.transport.model import (
    DaneOutcome,
    Dnssec,
    DomainResult,
    HostResult,
    NtaLookup,
    TlsaRecord,
    TlsResult,
)
from zivmilter.transport.resolver import DnsAnswer, Resolver
from zivmilter.transport.starttls import probe_address

log = logging.getLogger("zivmilter.transport")

Clock = Callable[[], float]


@dataclass(frozen=True)
class _Addresses:
    addresses: list[str]
    secure: bool  # every address RRset validated (AD), CNAME chain included
    problem: str | None
    canonical: str  # the host name after CNAME expansion; the host itself without a CNAME


@dataclass(frozen=True)
class _Tlsa:
    records: tuple[TlsaRecord, ...]
    secure: bool
    problem: str | None
    base: str  # the TLSA base domain these records (or their absence) belong to


class Prober:
    """`Prober(config.transport).probe("example.org") -> DomainResult`; thread-safe."""

    def __init__(
        self, config: TransportConfig, *, clock: Clock = time.time, ehlo: str | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        self.ehlo = ehlo or socket.gethostname() or "localhost"
        self.resolver = Resolver(config.resolver)

    def __call__(self, domain: str) -> DomainResult:
        return self.probe(domain)

    def probe(self, domain: str) -> DomainResult:
        checked_at = self.clock()
        try:
            name = normalize_domain(domain)
        except ValueError as exc:
            return DomainResult(domain, Level.NONE, None, str(exc), checked_at)
        try:
            return self._probe(name, checked_at)
        except Exception as exc:  # a fault here must not become an exception in the milter
            log.exception("probe of %s failed", name)
            return DomainResult(name, Level.NONE, None, f"internal error: {exc!r}", checked_at)

    # --- steps ---------------------------------------------------------------------------------

    def _left(self, deadline: float) -> float:
        return min(self.config.timeout, deadline - time.monotonic())

    def _probe(self, domain: str, checked_at: float) -> DomainResult:
        deadline = time.monotonic() + self.config.domain_budget
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=defaults.PROBE_HOSTS_PARALLEL, thread_name_prefix="probe"
        ) as pool:
            nta_future = pool.submit(self._nta, domain, deadline)
            mx = self.resolver.query(domain, "MX", self._left(deadline))
            hosts_or_reason = self._mx_hosts(domain, mx)
            futures = (
                []
                if isinstance(hosts_or_reason, str)
                else [
                    pool.submit(self._host, host, pref, mx.secure, deadline)
                    for pref, host in hosts_or_reason
                ]
            )
            nta = nta_future.result()
            # The ntamx hosts replace the MX hosts for NTA 7516 delivery (SPEC 4a): each is
            # probed as an MX host is. The record that names them stands in for the MX RRset,
            # so its DNSSEC status is theirs (a record counts only when signed anyway).
            ntamx_futures = [
                pool.submit(self._host, host, pref, nta.secure, deadline)
                for pref, host in _ntamx(nta)
            ]
            hosts = tuple(f.result() for f in futures)
            ntamx = tuple(f.result() for f in ntamx_futures)
        if isinstance(hosts_or_reason, str):
            return DomainResult(
                domain, Level.NONE, None, hosts_or_reason, checked_at, (), nta, ntamx
            )
        level, version, reason = grade.grade_domain(hosts)
        return DomainResult(domain, level, version, reason, checked_at, hosts, nta, ntamx)

    def _mx_hosts(self, domain: str, mx: DnsAnswer) -> list[tuple[int, str]] | str:
        """MX hosts by preference, or why the domain takes no mail we could probe."""
        if mx.status == "nxdomain":
            return "the domain does not exist (NXDOMAIN)"
        if mx.status == "error":
            return f"MX lookup failed: {mx.error}"
        if mx.status == "nodata":
            return [(0, domain)]  # implicit MX (RFC 5321 5.1): the domain's own addresses
        hosts: list[tuple[int, str]] = []
        for rdata in mx.records:
            target = rdata.exchange.to_text(omit_final_dot=True).lower()
            if target in ("", "."):
                return "null MX (RFC 7505): the domain accepts no mail"
            if (rdata.preference, target) not in hosts:
                hosts.append((int(rdata.preference), target))
        return sorted(hosts)

    def _addresses(self, host: str, deadline: float) -> _Addresses:
        """Addresses of a host, whether all its address RRsets validated, and a lookup problem."""
        found: list[str] = []
        secure = True
        problems: list[str] = []
        canonical = host
        for rdtype in ("A", "AAAA"):
            answer = self.resolver.query(host, rdtype, self._left(deadline))
            if answer.status == "error":
                problems.append(answer.error or f"{rdtype} lookup failed")
                secure = False
                continue
            secure = secure and answer.secure
            found += [r.address for r in answer.records]
            if answer.records and answer.canonical and canonical == host:
                canonical = answer.canonical
        if not found:
            problem = "; ".join(problems) or f"{host} has no address records"
            return _Addresses([], False, problem, host)
        # One family failing while the other answered is what Postfix shrugs off too.
        return _Addresses(found, secure, None, canonical)

    def _tlsa(self, host: str, canonical: str, deadline: float) -> _Tlsa:
        """The TLSA RRset of an MX host whose addresses validated (RFC 7672 2.2.3).

        A CNAME'd host is looked up at its fully expanded name first (the caller only gets here
        when the whole chain validated); when no secure TLSA records are there, at the MX name.
        A failed lookup stops the search: it is no proof of absence.
        """
        names = [canonical, host] if canonical != host else [host]
        result = _Tlsa((), False, None, host)
        for base in names:
            name = f"_{self.config.smtp_port}._tcp.{base}"
            answer = self.resolver.query(name, "TLSA", self._left(deadline))
            if answer.status == "error":
                return _Tlsa((), False, f"TLSA lookup failed: {answer.error}", base)
            records = tuple(
                TlsaRecord(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer.records
            )
            result = _Tlsa(records, answer.secure, None, base)
            if records and answer.secure:
                break
        return result

    def _host(self, host: str, preference: int, mx_secure: bool, deadline: float) -> HostResult:
        found = self._addresses(host, deadline)
        addresses = found.addresses
        dnssec = Dnssec(mx=mx_secure, address=found.secure)
        if found.problem is not None:
            return HostResult(
                host, preference, dnssec=dnssec, error=found.problem, reason=found.problem
            )
        tlsa: tuple[TlsaRecord, ...] = ()
        tlsa_problem = None
        # RFC 7672 3.2.2: DANE-TA name checks accept the MX name and its CNAME expansion.
        names = (host,) if found.canonical == host else (host, found.canonical)
        tlsa_note = ""
        # RFC 7672 2.2.2: TLSA records count only for hosts whose addresses validated.
        if mx_secure and found.secure:
            looked = self._tlsa(host, found.canonical, deadline)
            tlsa, tlsa_problem = looked.records, looked.problem
            dnssec = Dnssec(mx=True, address=True, tlsa=looked.secure)
            if looked.base != host:
                tlsa_note = f" (TLSA at {looked.base}, the CNAME target of {host})"
        graded: list[tuple[Level, str, TlsResult, DaneOutcome | None]] = []
        for address in addresses[: defaults.PROBE_MAX_ADDRESSES]:
            tls = probe_address(
                address,
                host,
                self.config.smtp_port,
                ca_file=self.config.ca_file,
                ehlo=self.ehlo,
                deadline=deadline,
                step=self.config.timeout,
            )
            outcome = None
            if tlsa and dnssec.tlsa and tls.chain:
                outcome = dane.check(
                    tlsa, tls.chain, host, datetime.now(UTC), other_names=names[1:]
                )
            level, reason = grade.grade_connection(tls, dnssec, outcome)
            graded.append((level, reason, tls, outcome))
        answering = [g for g in graded if g[2].connected] or graded
        level, reason, tls, outcome = min(answering, key=lambda g: g[0].rank)
        usable = [r for r in tlsa if dane.usable(r)] if dnssec.tlsa else []
        dane_valid = outcome.valid if outcome is not None and usable else None
        if usable and outcome is None:
            dane_valid = False  # there was something to match, but no certificate to match it on
        errors = [e for e in (tls.error, tlsa_problem) if e]
        if dane_valid is False and outcome is not None:
            errors.append(f"DANE: {outcome.reason}")
        return HostResult(
            host=host,
            preference=preference,
            addresses=tuple(addresses),
            starttls=tls.starttls,
            tls_version=tls.tls_version,
            pkix_valid=tls.pkix_valid,
            pkix_error=tls.pkix_error,
            dnssec=dnssec,
            tlsa=tlsa,
            dane_valid=dane_valid,
            error="; ".join(errors) or None,
            level=level,
            reason=reason + tlsa_note + (f" ({tlsa_problem})" if tlsa_problem else ""),
        )

    def _nta(self, domain: str, deadline: float) -> NtaLookup:
        answer = self.resolver.query(domain, "TXT", self._left(deadline))
        if answer.status == "error":
            return NtaLookup(error=answer.error)
        texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer.records]
        return NtaLookup(tuple(t for t in texts if nta7516.is_candidate(t)), answer.secure)


def _ntamx(lookup: NtaLookup) -> list[tuple[int, str]]:
    """(preference, host) of the ntamx hosts of a domain's NTA 7516 record, if it has one that
    is well-formed and signed (its dates are judged when it is used, not here)."""
    record = nta7516.interpret(lookup)
    return record.ntamx if isinstance(record, nta7516.NtaRecord) else []
