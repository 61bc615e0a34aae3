"""TLSA matching for SMTP (RFC 7672), on certificates already fetched: pure, no I/O.

DANE-EE(3) matches the leaf alone, names and dates ignored. DANE-TA(2) matches an issuer the
server presented, and the chain from there down to the leaf must verify for the MX host name
(cryptography's verifier, with that issuer as the only trust anchor); a leaf without DNS
subjectAltNames is checked by its subject CN (RFC 7672 3.2.3). PKIX-TA(0) and PKIX-EE(1)
are unusable for SMTP. probe.py calls `check` once per connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from zivmilter.transport.model import DaneOutcome, TlsaRecord

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
_SELECTORS = (0, 1)  # full certificate, SubjectPublicKeyInfo
_MTYPES = (0, 1, 2)  # exact, SHA-256, SHA-512


def usable(record: TlsaRecord) -> bool:
    """RFC 7672 3.1: only DANE-TA/DANE-EE with known selector and matching type count."""
    return (
        record.usage in (DANE_TA, DANE_EE)
        and record.selector in _SELECTORS
        and record.mtype in _MTYPES
    )


def association(cert_der: bytes, selector: int, mtype: int) -> bytes:
    """The data a TLSA record with this selector and matching type holds for a certificate."""
    if selector == 0:
        data = cert_der
    else:
        cert = x509.load_der_x509_certificate(cert_der)
        data = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: TlsaRecord, cert_der: bytes) -> bool:
    try:
        return association(cert_der, record.selector, record.mtype) == record.data
    except ValueError:  # a certificate cryptography cannot parse matches nothing
        return False


def check(
    records: Sequence[TlsaRecord],
    chain: Sequence[bytes],
    host: str,
    now: datetime,
    *,
    other_names: Sequence[str] = (),
) -> DaneOutcome:
    """Does any usable record match the presented chain (leaf first) for MX host `host`?

    `other_names` are further reference identifiers for DANE-TA name checks: the CNAME
    expansion of the MX host name (RFC 7672 3.2.2).
    """
    good = [r for r in records if usable(r)]
    if not records:
        return DaneOutcome(False, "no TLSA records")
    if not good:
        return DaneOutcome(
            False, "no usable TLSA records (RFC 7672 accepts only DANE-TA(2) and DANE-EE(3))"
        )
    if not chain:
        return DaneOutcome(False, "the server presented no certificate")
    leaf = chain[0]
    for record in good:
        if record.usage == DANE_EE and _matches(record, leaf):
            return DaneOutcome(True, f"TLSA {_short(record)} matches the server's certificate")
    problems: list[str] = []
    for record in good:
        if record.usage != DANE_TA:
            continue
        for anchor in chain[1:]:
            if not _matches(record, anchor):
                continue
            names = (host, *other_names)
            problem = _verify_below(anchor, chain, names, now)
            if problem is None:
                return DaneOutcome(
                    True,
                    f"TLSA {_short(record)} matches a CA of the chain, valid for "
                    + " or ".join(names),
                )
            problems.append(f"TLSA {_short(record)} matches a CA but {problem}")
    if problems:
        return DaneOutcome(False, "; ".join(problems))
    return DaneOutcome(False, "no usable TLSA record matches the presented certificate chain")


def _short(record: TlsaRecord) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data.hex()[:16]}…"


def _verify_below(
    anchor_der: bytes, chain: Sequence[bytes], names: Sequence[str], now: datetime
) -> str | None:
    """None when the leaf chains up to `anchor_der` and names one of `names`; else the problem."""
    try:
        certs = [x509.load_der_x509_certificate(c) for c in chain]
        anchor = x509.load_der_x509_certificate(anchor_der)
    except ValueError as exc:
        return f"a certificate cannot be parsed ({exc})"
    # The web-PKI profile's extension rules do not bind a domain's own CA: demand only what makes
    # a chain meaningful (CA certificates say so; the leaf carries the names checked).
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    builder = verification.PolicyBuilder().store(verification.Store([anchor])).time(now)
    leaf, intermediates = certs[0], certs[1:]
    try:
        sans = _dns_sans(leaf)
    except ValueError as exc:  # a malformed extension: no name fallback around it
        return f"the server's certificate cannot be parsed ({exc})"
    if not sans:
        # RFC 7672 3.2.3: without DNS-ID subjectAltNames the subject CN is the name to check.
        # cryptography's server verifier insists on a SAN, so verify the chain with no name
        # (a client verifier, extension rules off for the leaf) and compare the CN here.
        try:
            builder.extension_policies(
                ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all()
            ).build_client_verifier().verify(leaf, intermediates)
        except (verification.VerificationError, ValueError) as exc:
            return f"the chain does not verify: {exc}"
        cns = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if any(_cn_matches(cn, name) for cn in cns for name in names):
            return None
        return f"the certificate (no subjectAltName) has CN {', '.join(cns) or 'none'}"
    ee_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    builder = builder.extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
    problem = "no reference name"
    for name in names:
        try:
            builder.build_server_verifier(x509.DNSName(name)).verify(leaf, intermediates)
        except (verification.VerificationError, ValueError) as exc:
            problem = f"the chain does not verify: {exc}"
            continue
        return None
    return problem


def _dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def _cn_matches(cn: str, name: str) -> bool:
    """A CN names `name`: equal ignoring case, or `*.` standing for exactly its first label."""
    cn, name = cn.lower().rstrip("."), name.lower().rstrip(".")
    if cn.startswith("*."):
        first, dot, rest = name.partition(".")
        return bool(first) and bool(dot) and rest == cn[2:] and "." in rest
    return cn == name
