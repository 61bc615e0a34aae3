"""Encryption to the recipient's own key (issue 26) on a real Postfix with the real `zivmilter
run`: keys imported with `zivmilter keys import` into the milter's store; one message to four
recipients of four kinds split into a notification, a direct copy, a PGP/MIME copy and an S/MIME
copy; the receiving servers' copies opened with `gpg --decrypt` and `openssl cms -decrypt`, the
text found only there (and in the direct copy, over TLS).
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.harness.cli import zivmilter_in_process
from tests.harness.keys import GnuPG, Issued, SmimeCA, openssl_cms_decrypt
from tests.harness.postfix import PostfixInstance
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink, server_tls_context
from tests.harness.zivmilter import ZivmilterProcess, attach

pytestmark = pytest.mark.integration

PLAIN_IP, TLS_IP = "127.0.0.50", "127.0.0.51"
HOSTS = (
    "127.0.0.1 localhost\n"
    f"{PLAIN_IP} oldmail.example smime.example\n"
    f"{TLS_IP} partner.example pgp.example\n"
)
FACTS = {"transport": {"partner.example": "pkix", "pgp.example": "tls"}}
CANARY = "CANARY-5e2e-lab the biopsy was benign"
ATTACHMENT = os.urandom(20_000)
RCPTS = ["carol@oldmail.example", "bob@partner.example", "kim@pgp.example", "sam@smime.example"]


@pytest.fixture(scope="module")
def ca_file() -> Iterator[tuple[trustme.CA, str]]:
    ca = trustme.CA()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(ca.cert_pem.bytes())
    os.chmod(f.name, 0o644)
    yield ca, f.name
    os.unlink(f.name)


@pytest.fixture(scope="module")
def sinks(ca_file: tuple[trustme.CA, str]) -> Iterator[dict[str, Sink]]:
    ca, _ = ca_file
    with (
        bind_mounted("/etc/hosts", HOSTS),
        Sink(PLAIN_IP, 25) as plain,
        Sink(TLS_IP, 25, tls=server_tls_context(ca.issue_cert("partner.example"))) as tls,
    ):
        yield {"plain": plain, "tls": tls}


@pytest.fixture(scope="module")
def keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GnuPG, SmimeCA, Issued, Path]]:
    base = tmp_path_factory.mktemp("keys")
    with GnuPG(base / "gnupg") as gpg:
        yield _keys(base, gpg)


def _keys(base: Path, gpg: GnuPG) -> tuple[GnuPG, SmimeCA, Issued, Path]:
    (base / "kim.pgp").write_bytes(gpg.generate("Kim <kim@pgp.example>"))
    ca = SmimeCA()
    trust = ca.write_pem(base / "trust.pem")
    sam = ca.issue("sam@smime.example")
    (base / "sam.pem").write_bytes(sam.pem)
    os.chmod(base, 0o755)
    for f in base.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)
    return gpg, ca, sam, trust


@pytest.fixture(scope="module")
def gateway(
    sinks: dict[str, Sink],
    ca_file: tuple[trustme.CA, str],
    keys: tuple[GnuPG, SmimeCA, Issued, Path],
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    trust = keys[3]
    pf = PostfixInstance(tls_ca_file=ca_file[1])
    config = {
        "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
        "encryption": {"enabled": True, "smime": {"trust_store": str(trust)}},
    }
    z = attach(pf, facts=FACTS, config=config)
    with z:
        for name in ("kim.pgp", "sam.pem"):
            got = zivmilter_in_process(
                "keys", "import", str(trust.parent / name), "--config", str(z.config_file)
            )
            assert got.returncode == 0, got.stderr
            assert ": usable" in got.stdout, got.stdout
        with pf:
            yield pf, z


def message() -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = ", ".join(RCPTS)
    msg["Subject"] = "Biopsy results"
    msg["Message-ID"] = "<enc-e2e-1@hospital.example>"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    msg["zivver-access-right"] = "nobody@elsewhere.example sms +31612345678"
    msg.set_content(f"Dear colleagues,\n{CANARY}\n")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_four_kinds_of_recipient_and_real_tools_open_the_encrypted_copies(
    gateway: tuple[PostfixInstance, ZivmilterProcess],
    sinks: dict[str, Sink],
    keys: tuple[GnuPG, SmimeCA, Issued, Path],
    tmp_path: Path,
) -> None:
    pf, z = gateway
    gpg, _, sam, _ = keys
    plain, tls = sinks["plain"], sinks["tls"]
    p0, t0 = len(plain.received), len(tls.received)
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        assert s.sendmail("alice@hospital.example", RCPTS, message()) == {}
    at_plain = {r.rcpt_tos: r for r in plain.wait_for(p0 + 2)[p0:]}
    at_tls = {r.rcpt_tos: r for r in tls.wait_for(t0 + 2)[t0:]}
    time.sleep(1)
    assert len(plain.received) == p0 + 2 and len(tls.received) == t0 + 2, z.log()
    assert set(at_plain) == {("carol@oldmail.example",), ("sam@smime.example",)}
    assert set(at_tls) == {("bob@partner.example",), ("kim@pgp.example",)}
    for r in [*at_plain.values(), *at_tls.values()]:
        assert b"zivver-" not in r.data.lower() and b"x-zivmilter-route" not in r.data.lower()
    # the direct copy: the text, over verified TLS
    direct = at_tls[("bob@partner.example",)]
    assert CANARY.encode() in direct.data
    # the notification: a link, never the text
    note = at_plain[("carol@oldmail.example",)]
    assert CANARY.split()[0].encode() not in note.data
    assert "https://secure.hospital.example/m/" in note.message().get_body(("plain",)).get_content()
    # the PGP/MIME copy: over TLS (its MX's level), nothing readable on the wire
    pgp = at_tls[("kim@pgp.example",)]
    assert pgp.tls_version in ("TLSv1.2", "TLSv1.3")
    assert CANARY.split()[0].encode() not in pgp.data and b"Biopsy" not in pgp.data
    outer = email.message_from_bytes(pgp.data, policy=email.policy.default)
    assert outer.get_content_type() == "multipart/encrypted" and outer["Subject"] == "..."
    inner = email.message_from_bytes(
        gpg.decrypt(list(outer.iter_parts())[1].get_payload(decode=True)),
        policy=email.policy.default,
    )
    check_original(inner)
    # the S/MIME copy: through the default route (no level found for smime.example)
    sm = at_plain[("sam@smime.example",)]
    assert CANARY.split()[0].encode() not in sm.data and b"Biopsy" not in sm.data
    opened = openssl_cms_decrypt(sm.data, sam, tmp_path / "cms")
    check_original(email.message_from_bytes(opened, policy=email.policy.default))
    log = z.log()
    assert "to=<kim@pgp.example> delivery=encrypted method=own_key level=tls rule=K" in log
    assert "to=<sam@smime.example> delivery=encrypted method=own_key level=none rule=K" in log


def check_original(inner: email.message.EmailMessage) -> None:
    assert inner["Subject"] == "Biopsy results"  # protected inside
    assert "zivver-access-right" not in inner
    body = inner.get_body(("plain",))
    assert body is not None and CANARY in body.get_content()
    (att,) = list(inner.iter_attachments())
    assert att.get_filename() == "report.pdf" and att.get_content() == ATTACHMENT
