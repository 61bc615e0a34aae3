"""Recipients' own keys (OpenPGP certificates, S/MIME certificates): the values the policy core
and `explain` see, and the small interfaces between where keys come from and who judges them.

The split: a *source* (the organization's key store, OpenPGP WKD, DNSSEC-validated OPENPGPKEY or
SMIMEA) only finds `Candidate`s and says how far it can be trusted (`provenance`); a *validator*
judges each candidate for one address at one moment (expired, revoked, not for encryption, wrong
address, untrusted chain) and turns it into a `RecipientKey` or a `SkippedKey`. A source never
decides that a key is good, and a key is never trusted more than its source.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class KeyKind(enum.Enum):
    OPENPGP = "openpgp"
    SMIME = "smime"


class KeySource(enum.Enum):
    """Where a key was found; the configured order of lookups names these values."""

    KEYSTORE = "keystore"  # the organization's own store (`zivmilter keys import`)
    WKD = "wkd"  # OpenPGP Web Key Directory over HTTPS, PKIX-verified
    OPENPGPKEY = "openpgpkey"  # RFC 7929, DNSSEC-validated only
    SMIMEA = "smimea"  # RFC 8162, DNSSEC-validated only


@dataclass(frozen=True)
class Candidate:
    """A key as a source found it, not yet judged."""

    kind: KeyKind
    material: bytes = field(repr=False)  # OpenPGP certificate (binary or armored) or X.509 DER
    source: KeySource
    provenance: str  # how the source was reached and why it may be believed, for `explain`
    # S/MIME: whether the certificate must still chain to the configured trust store. False only
    # where DNSSEC alone vouches for it: an SMIMEA record of usage DANE-EE(3) (RFC 8162/6698).
    needs_ca_chain: bool = True


@dataclass(frozen=True)
class RecipientKey:
    """A key judged fit to encrypt to `address` now."""

    kind: KeyKind
    address: str
    ident: str  # OpenPGP: primary key fingerprint (upper-case hex); S/MIME: certificate serial
    source: KeySource
    trusted_because: str  # one line for `explain`: the source's provenance and the checks passed
    not_after: datetime | None  # when the key (or certificate) expires; None for no expiry
    material: bytes = field(repr=False)


@dataclass(frozen=True)
class SkippedKey:
    """A candidate that was found but may not be used, and why (shown by `explain`)."""

    kind: KeyKind
    ident: str  # as RecipientKey.ident, or "" when the material could not be read at all
    source: KeySource
    reason: str  # "expired 2026-01-01", "revoked", "no encryption-capable key", ...


@dataclass(frozen=True)
class KeyLookup:
    """The outcome of looking for a recipient's key: the one to use (if any) and what was
    skipped on the way."""

    key: RecipientKey | None = None
    skipped: tuple[SkippedKey, ...] = ()


class CandidateSource(Protocol):
    """One place keys are found. Never raises for an unknown address or an unreachable source:
    it finds nothing (and may log why)."""

    def candidates(self, address: str) -> Sequence[Candidate]: ...


class KeyFinder(Protocol):
    """What the policy core's facts ask: the trusted key for an address, after every configured
    source in order and every candidate judged."""

    def lookup(self, address: str) -> KeyLookup: ...
