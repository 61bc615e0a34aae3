"""What a probe of a recipient domain found, as frozen values (and their JSON form).

probe.py and starttls.py fill these in, grade.py turns them into levels, cache.py stores their JSON
and commands.py prints it. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zivmilter.core.levels import Level, TlsVersion


@dataclass(frozen=True)
class TlsaRecord:
    """One TLSA record (RFC 6698): usage, selector, matching type, association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    @classmethod
    def parse(cls, text: str) -> TlsaRecord:
        """`"3 1 1 ab12..."`; ValueError when it is not that shape."""
        parts = text.split()
        if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
            raise ValueError(f"{text!r} is not a TLSA record")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), bytes.fromhex("".join(parts[3:])))


@dataclass(frozen=True)
class Dnssec:
    """Which RRsets of an MX host the validating resolver marked authenticated (AD bit)."""

    mx: bool = False  # the domain's MX RRset (for an implicit MX: its authenticated absence)
    address: bool = False  # the host's A/AAAA RRsets
    tlsa: bool = False  # the TLSA RRset or its authenticated absence; False when not looked up

    def to_json(self) -> dict[str, bool]:
        return {"mx": self.mx, "address": self.address, "tlsa": self.tlsa}


@dataclass(frozen=True)
class TlsResult:
    """One SMTP connection to one address of an MX host, up to and including the TLS handshake."""

    address: str
    connected: bool = False  # TCP connected; an unreachable address is skipped, as an MTA does
    starttls: bool = False  # the server offered STARTTLS
    tls_version: str | None = None  # as OpenSSL names it ("TLSv1.3"); None: no handshake
    pkix_valid: bool = False
    pkix_error: str | None = None
    chain: tuple[bytes, ...] = ()  # DER certificates as presented, leaf first
    error: str | None = None  # why the connection or handshake did not complete


@dataclass(frozen=True)
class DaneOutcome:
    valid: bool
    reason: str


@dataclass(frozen=True)
class HostResult:
    """One MX host, graded by its weakest answering address."""

    host: str
    preference: int
    addresses: tuple[str, ...] = ()
    starttls: bool = False
    tls_version: str | None = None
    pkix_valid: bool = False
    pkix_error: str | None = None
    dnssec: Dnssec = Dnssec()
    tlsa: tuple[TlsaRecord, ...] = ()
    dane_valid: bool | None = None  # None: no usable DNSSEC-validated TLSA records to check
    error: str | None = None
    level: Level = Level.NONE
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "preference": self.preference,
            "addresses": list(self.addresses),
            "starttls": self.starttls,
            "tls_version": self.tls_version,
            "pkix_valid": self.pkix_valid,
            "pkix_error": self.pkix_error,
            "dnssec": self.dnssec.to_json(),
            "tlsa": [str(r) for r in self.tlsa],
            "dane_valid": self.dane_valid,
            "error": self.error,
            "level": self.level.value,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, h: dict[str, Any]) -> HostResult:
        return cls(
            host=h["host"],
            preference=int(h["preference"]),
            addresses=tuple(h.get("addresses", ())),
            starttls=bool(h.get("starttls")),
            tls_version=h.get("tls_version"),
            pkix_valid=bool(h.get("pkix_valid")),
            pkix_error=h.get("pkix_error"),
            dnssec=Dnssec(**h.get("dnssec", {})),
            tlsa=tuple(TlsaRecord.parse(t) for t in h.get("tlsa", ())),
            dane_valid=h.get("dane_valid"),
            error=h.get("error"),
            level=Level.parse(h.get("level")),
            reason=h.get("reason", ""),
        )


@dataclass(frozen=True)
class NtaLookup:
    """The apex TXT records that look like NTA 7516 declarations, and whether they were signed."""

    records: tuple[str, ...] = ()
    secure: bool = False
    error: str | None = None  # the TXT lookup failed (SERVFAIL, timeout); nothing is known

    def to_json(self) -> dict[str, Any]:
        return {"records": list(self.records), "secure": self.secure, "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NtaLookup:
        return cls(tuple(data.get("records", ())), bool(data.get("secure")), data.get("error"))


@dataclass(frozen=True)
class DomainResult:
    """A whole probe: the domain's level (weakest host), its hosts and its NTA 7516 lookup, and
    the ntamx hosts its NTA 7516 record names, probed the same way (graded apart: grade.py)."""

    domain: str
    level: Level
    tls_version: TlsVersion | None
    reason: str
    checked_at: float
    mx: tuple[HostResult, ...] = ()
    nta: NtaLookup = field(default_factory=NtaLookup)
    ntamx: tuple[HostResult, ...] = ()  # lowest preference first; () when none were probed

    @property
    def failed(self) -> bool:
        """Cached with the failure TTL: nothing usable, or some step went wrong.

        A failed NTA 7516 TXT lookup counts too: it says nothing about the domain's
        compliance, and rule 2 would be judged on that non-answer until the entry expires. So
        does a failure at an ntamx host, on which rule 2 is judged when the record names any.
        """
        return (
            self.level is Level.NONE
            or any(h.error for h in self.mx)
            or self.nta.error is not None
            or any(h.error for h in self.ntamx)
        )

    def to_json(self) -> dict[str, Any]:
        """The cache's stored form; commands.py picks the published keys from it."""
        return {
            "domain": self.domain,
            "level": self.level.value,
            "tls_version": self.tls_version.value if self.tls_version else None,
            "reason": self.reason,
            "checked_at": self.checked_at,
            "mx": [h.to_json() for h in self.mx],
            "nta": self.nta.to_json(),
            "ntamx": [h.to_json() for h in self.ntamx],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainResult:
        return cls(
            domain=data["domain"],
            level=Level.parse(data["level"]),
            tls_version=TlsVersion.parse(data.get("tls_version")),
            reason=data.get("reason", ""),
            checked_at=float(data["checked_at"]),
            mx=tuple(HostResult.from_json(h) for h in data.get("mx", ())),
            nta=NtaLookup.from_json(data.get("nta", {})),
            # absent from rows written before ntamx hosts were probed
            ntamx=tuple(HostResult.from_json(h) for h in data.get("ntamx", ())),
        )
