"""The organization's own key store as a key source (`encryption.sources: [keystore, ...]`),
and reading the files `zivmilter keys import` takes: OpenPGP certificates (armored or binary,
one or several) and S/MIME certificates (PEM, one or several, or DER).

A stored key is trusted because the organization imported it; it is judged again at each use
(judge.py), so an imported key that expires or that its owner revokes is skipped, not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pysequoia.packet import PacketPile, Tag

from zivmilter.core.addresses import normalize_address
from zivmilter.core.keys import Candidate, KeyKind, KeySource
from zivmilter.errors import MessageError, ZivmilterError
from zivmilter.keys import judge
from zivmilter.store.interfaces import RecipientKeys
from zivmilter.store.records import StoredKey

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def provenance(key: StoredKey) -> str:
    day = key.imported_at.strftime("%Y-%m-%d") if key.imported_at else "an unknown date"
    return f"imported by the organization on {day}"


class KeystoreSource:
    """`CandidateSource` over the store's imported keys."""

    def __init__(self, store: RecipientKeys) -> None:
        self._store = store

    def candidates(self, address: str) -> Sequence[Candidate]:
        return [self.candidate(k) for k in self._store.recipient_keys(address)]

    @staticmethod
    def candidate(key: StoredKey) -> Candidate:
        return Candidate(KeyKind(key.kind), key.material, KeySource.KEYSTORE, provenance(key))


@dataclass(frozen=True)
class ReadKey:
    """One key read from an import file, before it is stored."""

    kind: KeyKind
    ident: str
    own_addresses: tuple[str, ...]  # the certificate's User IDs or subjectAltName addresses
    material: bytes = field(repr=False)


def _normalized(addresses: Sequence[str]) -> tuple[str, ...]:
    out = []
    for a in addresses:
        try:
            out.append(normalize_address(a))
        except ZivmilterError:
            continue  # a User ID whose address we could not use: never matched anyway
    return tuple(dict.fromkeys(out))


def _smime(cert: x509.Certificate) -> ReadKey:
    return ReadKey(
        KeyKind.SMIME,
        judge.smime_ident(cert),
        _normalized(judge.smime_addresses(cert)),
        cert.public_bytes(serialization.Encoding.DER),
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def read_key_file(data: bytes, name: str) -> list[ReadKey]:
    """The keys in an import file; MessageError naming the file for anything else."""
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN CERTIFICATE-----"):
        try:
            pems = [x509.load_pem_x509_certificate(m) for m in _PEM_CERT.findall(data)]
        except ValueError as exc:
            raise MessageError(f"{name}: not a readable PEM certificate: {exc}") from None
        # A certificate with its chain: the CA certificates are not recipients' keys (the
        # chain is judged against encryption.smime.trust_store, which must hold them).
        leaves = [c for c in pems if not _is_ca(c)]
        return [_smime(c) for c in leaves or pems]
    if not stripped.startswith(b"-----BEGIN PGP"):
        try:
            return [_smime(x509.load_der_x509_certificate(data))]
        except ValueError:
            pass  # not DER: binary OpenPGP, or nothing
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except Exception as exc:  # pysequoia raises plain exceptions from Rust
        raise MessageError(
            f"{name}: neither an OpenPGP certificate nor an X.509 certificate"
            f" ({judge.sequoia_error(exc)})"
        ) from None
    if not certs:
        raise MessageError(f"{name}: no certificate in it")
    if _has_secret_keys(data):
        raise MessageError(f"{name}: holds a secret key: export and import the public key only")
    out = []
    for cert in certs:
        out.append(
            ReadKey(
                KeyKind.OPENPGP,
                cert.fingerprint.upper(),
                _normalized(judge.openpgp_user_addresses(cert)),
                bytes(cert),
            )
        )
    return out


def _has_secret_keys(data: bytes) -> bool:
    try:
        pile = PacketPile.from_bytes(data)
    except Exception:
        return False  # Cert.split_bytes read it: then it is the certificates it found
    return any(p.tag in (Tag.SecretKey, Tag.SecretSubkey) for p in pile)


def stored_key(read: ReadKey, address: str | None, name: str) -> StoredKey:
    """What to store for one read key: for its own addresses, or for `address` only, which must
    be one of them (a key is only ever used for an address it names)."""
    if address is None:
        if not read.own_addresses:
            raise MessageError(f"{name}: {read.kind.value} key {read.ident} names no address")
        return StoredKey(read.ident, read.kind.value, read.own_addresses, read.material)
    norm = normalize_address(address)
    if norm not in read.own_addresses:
        where = "a User ID" if read.kind is KeyKind.OPENPGP else "in the subjectAltName"
        raise MessageError(
            f"{name}: {norm} is not {where} of {read.kind.value} key {read.ident}"
            f" (it names: {', '.join(read.own_addresses) or 'no address'})"
        )
    return StoredKey(read.ident, read.kind.value, (norm,), read.material)
