"""Recipients' keys for the tests, made with the real tools that later decrypt: GnuPG keys in a
private homedir (the recipient's secret key stays there for `gpg --decrypt`), S/MIME certificates
from a throwaway CA made with cryptography (the key in a PEM file for `openssl cms -decrypt`).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class GnuPG:
    """One private GnuPG homedir holding the tests' recipients' secret keys. A context manager:
    its end stops the gpg-agent that key generation and decryption start."""

    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home

    def __enter__(self) -> GnuPG:
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip

    def run(self, *args: str, data: bytes | None = None) -> bytes:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        done = subprocess.run(
            [
                "gpg",
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *args,
            ],
            input=data,
            capture_output=True,
            env=env,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout

    def generate(self, uid: str, usage: str = "default", algo: str = "future-default") -> bytes:
        """A new key for `uid`; its public certificate (binary)."""
        self.run("--quick-gen-key", uid, algo, usage, "1y")
        return self.export(uid)

    def key_of(self, uid: str) -> bytes:
        """The public certificate of `uid`'s key, made at the first call."""
        address = uid.rsplit("<", 1)[-1].rstrip(">")
        return self.export(f"<{address}>") or self.generate(uid)

    def export(self, uid: str) -> bytes:
        return self.run("--export", uid)

    def decrypt(self, data: bytes) -> bytes:
        return self.run("--decrypt", data=data)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    key_pem: bytes

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


# Generating a 2048-bit RSA key is most of what issuing a certificate costs (some 60 ms of CPU):
# the certificates are new for each CA, their keys come from a pool made as needed in this
# process. A CA takes each key of the pool once, so no two certificates of one CA share a key.
_RSA_KEYS: list[rsa.RSAPrivateKey] = []


def _rsa_key(n: int) -> rsa.RSAPrivateKey:
    while len(_RSA_KEYS) <= n:
        _RSA_KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _RSA_KEYS[n]


class SmimeCA:
    """A throwaway CA issuing S/MIME certificates."""

    def __init__(self, name: str = "Test S/MIME CA") -> None:
        self._issued = 0  # the certificates issued so far: the next one's key in the pool
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(
        self,
        address: str,
        *,
        valid_days: int = 365,
        starts_days_ago: int = 1,
        key_encipherment: bool = True,
        san: bool = True,
    ) -> Issued:
        key = _rsa_key(self._issued)
        self._issued += 1
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(address))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=starts_days_ago))
            .not_valid_after(now - timedelta(days=starts_days_ago) + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    True, False, key_encipherment, False, False, False, False, False, False
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Issued(cert, key_pem)


def openssl_cms_decrypt(data: bytes, issued: Issued, workdir: Path) -> bytes:
    """`openssl cms -decrypt` of a whole S/MIME message with the recipient's key."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert = workdir / "recip.pem"
    key = workdir / "recip.key"
    cert.write_bytes(issued.pem)
    key.write_bytes(issued.key_pem)
    done = subprocess.run(
        ["openssl", "cms", "-decrypt", "-recip", str(cert), "-inkey", str(key)],
        input=data,
        capture_output=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"openssl cms -decrypt: {done.stderr.decode()}")
    return done.stdout
