"""The set-up the end-to-end encryption tests share (issue 26): a throwaway TLS CA, a plain and a
TLS receiving server under names from /etc/hosts, the recipients' keys (kim's OpenPGP key, sam's
S/MIME certificate and the trust store that vouches for it), a real Postfix with `zivmilter run`
whose store holds those keys (imported with `zivmilter keys import`), the test message, and the
check that a decrypted copy is the original.

Test modules import the `ca` and `keys` fixtures from here and build their `gateway` fixture
with `encrypting_gateway`.
"""

from __future__ import annotations

import contextlib
import email.policy
import os
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.harness.cli import zivmilter_in_process
from tests.harness.keys import GnuPG, Issued, SmimeCA
from tests.harness.postfix import PostfixInstance, ca_file
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Received, Sink, server_tls_context
from tests.harness.zivmilter import ZivmilterProcess, attach


@dataclass(frozen=True)
class TlsCA:
    """A throwaway CA and the world-readable PEM file of its certificate (Postfix and the
    milter read it as their own users)."""

    ca: trustme.CA
    file: str


@dataclass(frozen=True)
class RecipientKeys:
    """kim@pgp.example's secret key in `gpg`; sam@smime.example's certificate and key; the S/MIME
    trust store. `kim.pgp`, `sam.pem` and `trust.pem` lie side by side, readable by all."""

    gpg: GnuPG
    smime: SmimeCA
    sam: Issued
    trust: Path


@pytest.fixture(scope="module")
def ca() -> Iterator[TlsCA]:
    ca = trustme.CA()
    with ca_file(ca) as path:
        yield TlsCA(ca, path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecipientKeys]:
    base = tmp_path_factory.mktemp("keys")
    with GnuPG(base / "gnupg") as gpg:
        (base / "kim.pgp").write_bytes(gpg.generate("Kim <kim@pgp.example>"))
        smime = SmimeCA()
        trust = smime.write_pem(base / "trust.pem")
        sam = smime.issue("sam@smime.example")
        (base / "sam.pem").write_bytes(sam.pem)
        os.chmod(base, 0o755)
        for f in base.iterdir():
            if f.is_file():
                os.chmod(f, 0o644)
        yield RecipientKeys(gpg, smime, sam, trust)


@contextlib.contextmanager
def receiving_servers(
    hosts: str, plain_ip: str, tls_ip: str, ca: TlsCA
) -> Iterator[tuple[Sink, Sink]]:
    """A plain server on `plain_ip` and one with a certificate for partner.example on `tls_ip`,
    both on port 25, with `hosts` as /etc/hosts."""
    with (
        bind_mounted("/etc/hosts", hosts),
        Sink(plain_ip, 25) as plain,
        Sink(tls_ip, 25, tls=server_tls_context(ca.ca.issue_cert("partner.example"))) as tls,
    ):
        yield plain, tls


@contextlib.contextmanager
def encrypting_gateway(
    ca: TlsCA,
    keys: RecipientKeys,
    facts: dict[str, Any],
    config: dict[str, Any],
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    """Postfix trusting `ca` with `zivmilter run` (encryption on, S/MIME trusting `keys.trust`,
    plus `config`), kim's and sam's keys imported into its store and found usable."""
    pf = PostfixInstance(tls_ca_file=ca.file)
    encryption = config.get("encryption", {})
    config = {
        **config,
        "encryption": {
            **encryption,
            "enabled": True,
            "smime": {**encryption.get("smime", {}), "trust_store": str(keys.trust)},
        },
    }
    z = attach(pf, facts=facts, config=config)
    with z:
        for name in ("kim.pgp", "sam.pem"):
            got = zivmilter_in_process(
                "keys", "import", str(keys.trust.parent / name), "--config", str(z.config_file)
            )
            assert got.returncode == 0, got.stderr
            assert ": usable" in got.stdout, got.stdout
        with pf:
            yield pf, z


def deliver(
    running: tuple[PostfixInstance, ZivmilterProcess],
    servers: tuple[Sink, Sink],
    rcpts: list[str],
    data: bytes,
    copies: tuple[int, int],
    timeout: float = 30.0,
) -> tuple[dict[str, Received], dict[str, Received]]:
    """Send `data` from alice@hospital.example to `rcpts` through Postfix; wait until the plain
    and the TLS server received `copies` new messages (and a second longer, for strays: exactly
    that many); return each server's new copies by their one recipient."""
    pf, z = running
    plain, tls = servers
    p0, t0 = len(plain.received), len(tls.received)
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=max(60.0, timeout)) as s:
        assert s.sendmail("alice@hospital.example", rcpts, data) == {}
    got = plain.wait_for(p0 + copies[0], timeout)[p0:], tls.wait_for(t0 + copies[1], timeout)[t0:]
    time.sleep(1)
    assert len(plain.received) == p0 + copies[0] and len(tls.received) == t0 + copies[1], z.log()
    by_rcpt = [{r.rcpt_tos[0]: r for r in new} for new in got]
    for new, mapped in zip(got, by_rcpt, strict=True):
        assert all(len(r.rcpt_tos) == 1 for r in new) and len(mapped) == len(new), z.log()
    return by_rcpt[0], by_rcpt[1]


@dataclass(frozen=True)
class Original:
    """What the sender wrote: one text with a canary and one attachment."""

    subject: str
    canary: str
    attachment: bytes
    filename: str

    def message(self, rcpts: list[str], message_id: str, access_right: str) -> bytes:
        msg = EmailMessage()
        msg["From"] = "Dr. Alice <alice@hospital.example>"
        msg["To"] = ", ".join(rcpts)
        msg["Subject"] = self.subject
        msg["Message-ID"] = message_id
        msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
        msg["zivver-access-right"] = access_right
        msg.set_content(f"Dear colleagues,\n{self.canary}\n")
        msg.add_attachment(
            self.attachment, maintype="application", subtype="pdf", filename=self.filename
        )
        return msg.as_bytes(policy=email.policy.SMTP)

    def check(self, inner: EmailMessage) -> None:
        """A decrypted copy is the original: subject protected inside, text, attachment; the
        directive gone."""
        assert inner["Subject"] == self.subject
        assert "zivver-access-right" not in inner
        body = inner.get_body(("plain",))
        assert body is not None and self.canary in body.get_content()
        (att,) = list(inner.iter_attachments())
        assert att.get_filename() == self.filename and att.get_content() == self.attachment

    def check_bytes(self, data: bytes) -> None:
        self.check(email.message_from_bytes(data, policy=email.policy.default))  # type: ignore[arg-type]
