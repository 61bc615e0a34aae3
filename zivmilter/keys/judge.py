"""Judging a found key for one address at one moment: a `RecipientKey` to encrypt to, or a
`SkippedKey` with the reason `explain` shows. Never raises for bad material.

OpenPGP: pysequoia parses the certificate under Sequoia's standard policy (valid self-signed
User IDs, revocation, expiry). pysequoia (0.1.35) has no per-subkey view, and its encryptor falls
back to an expired subkey when no live one exists, so whether a usable encryption subkey exists
at the moment judged is GnuPG's verdict (`gpg --show-keys --with-colons`: an upper-case E in
the primary key's capabilities means "usable for encryption as a whole"), in a throwaway
homedir, GnuPG's clock set to that moment.

S/MIME: cryptography reads the certificate (subjectAltName, keyUsage, validity); the chain and
the S/MIME purpose are OpenSSL's (`openssl verify -purpose smimeencrypt`) against the configured
trust store: cryptography's x509.verification implements only the web PKI's server and client
profiles (serverAuth/clientAuth), not emailProtection.
"""

from __future__ import annotations

import email.utils
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zivmilter.core.addresses import normalize_address
from zivmilter.core.keys import Candidate, KeyKind, RecipientKey, SkippedKey
from zivmilter.errors import ZivmilterError

log = logging.getLogger(__name__)

TOOL_TIMEOUT = 10.0  # seconds for one gpg or openssl run on one certificate

Validator = Callable[[Candidate, str, datetime], "RecipientKey | SkippedKey"]


def _day(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d")


def _key(address: str) -> str:
    try:
        return normalize_address(address)
    except ZivmilterError:
        return address.strip().lower()


def _same_address(a: str, b: str) -> bool:
    return _key(a) == _key(b)


# ---------------------------------------------------------------------------------------------
# OpenPGP


def sequoia_error(exc: Exception) -> str:
    """pysequoia's message without the Rust backtrace it may carry."""
    return str(exc).split("\n", 1)[0].strip() or type(exc).__name__


def openpgp_fingerprint(material: bytes) -> str:
    """The primary key's fingerprint, upper-case hex; ValueError for unreadable material."""
    try:
        return pysequoia.Cert.from_bytes(material).fingerprint.upper()
    except Exception as exc:  # pysequoia raises plain Exception subclasses from Rust
        raise ValueError(f"not an OpenPGP certificate: {sequoia_error(exc)}") from None


def openpgp_user_addresses(cert: pysequoia.Cert) -> list[str]:
    """The addresses of the certificate's valid, non-revoked User IDs."""
    out = []
    for uid in cert.user_ids:
        addr = email.utils.parseaddr(str(uid))[1]
        if addr and "@" in addr:
            out.append(addr)
    return out


class ToolFailed(Exception):
    """GnuPG or OpenSSL could not be run: the key is skipped (the recipient then gets what the
    tables decide, a notification: safe), and the fault is logged."""


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("%s could not judge a key: %s", argv[0], exc)
        raise ToolFailed(f"{argv[0]} could not be run ({exc})") from None


def gpg_can_encrypt(material: bytes, now: datetime) -> bool:
    """GnuPG's verdict: the certificate has a live, non-revoked encryption-capable key at
    `now` (GnuPG's own clock set to it with --faked-system-time, frozen: the trailing "!")."""
    with tempfile.TemporaryDirectory(prefix="zivmilter-gpg-") as home:
        path = os.path.join(home, "cert")
        with open(path, "wb") as f:
            f.write(material)
        done = _run(
            [
                "gpg",
                "--homedir",
                home,
                "--batch",
                "--no-tty",
                "--faked-system-time",
                f"{int(now.timestamp())}!",
                "--show-keys",
                "--with-colons",
                path,
            ]
        )
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] == "pub" and len(fields) > 11:
            return "E" in fields[11]
    return False


def judge_openpgp(candidate: Candidate, address: str, now: datetime) -> RecipientKey | SkippedKey:
    def skip(ident: str, reason: str) -> SkippedKey:
        return SkippedKey(KeyKind.OPENPGP, ident, candidate.source, reason)

    try:
        cert = pysequoia.Cert.from_bytes(candidate.material)
    except Exception as exc:
        return skip("", f"unreadable OpenPGP certificate ({sequoia_error(exc)})")
    ident = cert.fingerprint.upper()
    if cert.is_revoked:
        return skip(ident, "revoked")
    expires = cert.expiration
    if expires is not None and expires <= now:
        return skip(ident, f"expired {_day(expires)}")
    if not any(_same_address(a, address) for a in openpgp_user_addresses(cert)):
        return skip(ident, f"no valid User ID for {address}")
    try:
        usable = gpg_can_encrypt(bytes(cert), now)
    except ToolFailed as exc:
        return skip(ident, str(exc))
    if not usable:
        return skip(ident, "no usable encryption key (expired, revoked or sign-only subkeys)")
    checks = "valid User ID, not revoked, usable encryption subkey"
    return RecipientKey(
        kind=KeyKind.OPENPGP,
        address=address,
        ident=ident,
        source=candidate.source,
        trusted_because=f"{candidate.provenance}; {checks}",
        not_after=expires,
        material=bytes(cert),
    )


# ---------------------------------------------------------------------------------------------
# S/MIME


def load_certificate(material: bytes) -> x509.Certificate:
    """A certificate from PEM or DER; ValueError for anything else."""
    if material.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(material)
    return x509.load_der_x509_certificate(material)


def smime_ident(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "X")


def smime_addresses(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(a) for a in san.get_values_for_type(x509.RFC822Name)]


def _key_usage_problem(cert: x509.Certificate) -> str | None:
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        # cryptography's PKCS7EnvelopeBuilder encrypts to RSA recipients only (key transport)
        return "not an RSA key (only RSA key transport can be encrypted to)"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None  # RFC 8550 4.4.2: no keyUsage, no restriction
    if not usage.key_encipherment:
        return "keyUsage does not allow keyEncipherment"
    return None


def openssl_verify(cert: x509.Certificate, trust_store: str, now: datetime) -> str | None:
    """OpenSSL's chain validation for S/MIME encryption; None when it passes, else its error."""
    with tempfile.NamedTemporaryFile(prefix="zivmilter-cert-", suffix=".pem") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.flush()
        done = _run(
            [
                "openssl",
                "verify",
                "-CAfile",
                trust_store,
                "-purpose",
                "smimeencrypt",
                "-attime",
                str(int(now.timestamp())),
                f.name,
            ]
        )
    if done.returncode == 0:
        return None
    text = (done.stderr + done.stdout).decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
    detail = lines[0].split(":", 1)[-1].strip() if lines else text.strip()[:200]
    return f"chain not trusted ({detail})"


def judge_smime(
    candidate: Candidate, address: str, now: datetime, trust_store: str | None
) -> RecipientKey | SkippedKey:
    def skip(ident: str, reason: str) -> SkippedKey:
        return SkippedKey(KeyKind.SMIME, ident, candidate.source, reason)

    try:
        cert = load_certificate(candidate.material)
    except ValueError as exc:
        return skip("", f"unreadable X.509 certificate ({exc})")
    ident = smime_ident(cert)
    if cert.not_valid_after_utc <= now:
        return skip(ident, f"expired {_day(cert.not_valid_after_utc)}")
    if cert.not_valid_before_utc > now:
        return skip(ident, f"not valid before {_day(cert.not_valid_before_utc)}")
    if not any(_same_address(a, address) for a in smime_addresses(cert)):
        return skip(ident, f"{address} is not in the subjectAltName")
    problem = _key_usage_problem(cert)
    if problem:
        return skip(ident, problem)
    if not candidate.needs_ca_chain:
        # SMIMEA DANE-EE (RFC 8162 / RFC 7671): the DNSSEC-validated record itself vouches for
        # this very certificate; no CA chain is asked for.
        return _smime_key(cert, ident, candidate, address, "DANE-EE: the signed record names it")
    if trust_store is None:
        return skip(ident, "no S/MIME trust store configured (encryption.smime.trust_store)")
    try:
        problem = openssl_verify(cert, trust_store, now)
    except ToolFailed as exc:
        problem = str(exc)
    if problem:
        return skip(ident, problem)
    issuer = cert.issuer.rfc4514_string()
    trusted = f"chain to the trust store (issuer {issuer})"
    return _smime_key(cert, ident, candidate, address, trusted)


def _smime_key(
    cert: x509.Certificate, ident: str, candidate: Candidate, address: str, why: str
) -> RecipientKey:
    return RecipientKey(
        kind=KeyKind.SMIME,
        address=address,
        ident=ident,
        source=candidate.source,
        trusted_because=f"{candidate.provenance}; {why}",
        not_after=cert.not_valid_after_utc,
        material=cert.public_bytes(serialization.Encoding.DER),
    )


def validator(trust_store: str | None) -> Validator:
    """The validator for the configured S/MIME trust store: Candidate x address x now."""

    def judge(candidate: Candidate, address: str, now: datetime) -> RecipientKey | SkippedKey:
        if candidate.kind is KeyKind.OPENPGP:
            return judge_openpgp(candidate, address, now)
        return judge_smime(candidate, address, now, trust_store)

    return judge
