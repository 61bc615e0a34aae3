"""One message to recipients of every kind through the real Postfix and `zivmilter run` (issue
26): a notification, a direct copy, PGP/MIME to a key from the organization's key store, to a key
found by WKD (HTTPS on loopback, trustme CA) and to one found by OPENPGPKEY (a DNSSEC-signed zone
on the tests' NSD + Unbound), S/MIME, and an encrypted PDF for the sender's access code
(`encryption.pdf`). At the receiving servers gpg, openssl and qpdf open each copy to the original
(body canary, attachment bytes); the canary is nowhere on the wire but in the direct copy, and the
access code nowhere at all.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from tests.harness.cli import zivmilter_in_process
from tests.harness.dns import TestDns, Zone, shared_dns
from tests.harness.keys import GnuPG, Issued, SmimeCA, openssl_cms_decrypt
from tests.harness.postfix import PostfixInstance
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink, server_tls_context
from tests.harness.zivmilter import ZivmilterProcess, attach
from tests.integration.test_keyfind import WkdServer, _advanced, _openpgpkey

pytestmark = pytest.mark.integration
_ = shared_dns  # the session fixture, used by `gateway` below

PLAIN_IP, TLS_IP, WKD_IP = "127.0.0.60", "127.0.0.61", "127.0.8.1"
HOSTS = (
    "127.0.0.1 localhost\n"
    f"{PLAIN_IP} oldmail.example smime.example wkd.example dnskey.example pdf.example\n"
    f"{TLS_IP} partner.example pgp.example\n"
)
FACTS = {"transport": {"partner.example": "pkix", "pgp.example": "tls"}}
CANARY = "CANARY-allkinds the scan shows no change"
ACCESS_CODE = "amber-heron-7731"
ATTACHMENT = os.urandom(30_000)
RCPTS = [
    "carol@oldmail.example",  # notification
    "bob@partner.example",  # direct (ODD domain, MX meets pkix)
    "kim@pgp.example",  # OpenPGP, the organization's key store
    "wendy@wkd.example",  # OpenPGP, found by WKD
    "otto@dnskey.example",  # OpenPGP, found by OPENPGPKEY (DNSSEC)
    "sam@smime.example",  # S/MIME, the key store
    "pat@pdf.example",  # encrypted PDF, the sender's access code
]


@pytest.fixture(scope="module")
def ca() -> Iterator[tuple[trustme.CA, str]]:
    ca = trustme.CA()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(ca.cert_pem.bytes())
    os.chmod(f.name, 0o644)
    yield ca, f.name
    os.unlink(f.name)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GnuPG, Issued, Path]]:
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
        yield gpg, sam, trust


@pytest.fixture(scope="module")
def published(
    shared_dns: TestDns, ca: tuple[trustme.CA, str], keys: tuple[GnuPG, Issued, Path]
) -> Iterator[TestDns]:
    """wendy's key on a WKD server (advanced method), otto's in a signed OPENPGPKEY record."""
    gpg = keys[0]
    wendy, otto = (
        gpg.generate("Wendy <wendy@wkd.example>"),
        gpg.generate("Otto <otto@dnskey.example>"),
    )
    shared_dns.set_zones([
        Zone("wkd.example", records=[f"openpgpkey A {WKD_IP}"]),
        Zone("dnskey.example", signed=True, records=[_openpgpkey("otto", otto)]),
    ])  # fmt: skip
    server = WkdServer(WKD_IP, ca[0], ["openpgpkey.wkd.example"], {
        _advanced("wkd.example", "wendy"): wendy,
    })  # fmt: skip
    try:
        yield shared_dns
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sinks(ca: tuple[trustme.CA, str]) -> Iterator[dict[str, Sink]]:
    with (
        bind_mounted("/etc/hosts", HOSTS),
        Sink(PLAIN_IP, 25) as plain,
        Sink(TLS_IP, 25, tls=server_tls_context(ca[0].issue_cert("partner.example"))) as tls,
    ):
        yield {"plain": plain, "tls": tls}


@pytest.fixture(scope="module")
def gateway(
    published: TestDns,
    sinks: dict[str, Sink],
    ca: tuple[trustme.CA, str],
    keys: tuple[GnuPG, Issued, Path],
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    trust = keys[2]
    pf = PostfixInstance(tls_ca_file=ca[1])
    config = {
        "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
        "transport": {"resolver": [published.resolver]},
        "encryption": {
            "enabled": True,
            "pdf": True,
            "wkd": {"ca_file": ca[1]},
            "smime": {"trust_store": str(trust)},
        },
    }
    z = attach(pf, facts=FACTS, config=config)
    with z:
        for name in ("kim.pgp", "sam.pem"):
            got = zivmilter_in_process(
                "keys", "import", str(trust.parent / name), "--config", str(z.config_file)
            )
            assert got.returncode == 0, got.stderr
        with pf:
            yield pf, z


def message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = ", ".join(RCPTS)
    msg["Subject"] = "Scan results"
    msg["Message-ID"] = "<allkinds-1@hospital.example>"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    msg["zivver-access-right"] = f"pat@pdf.example access-code {ACCESS_CODE}"
    msg.set_content(f"Dear colleagues,\n{CANARY}\n")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_every_kind_of_recipient_gets_its_copy_and_real_tools_open_them(
    gateway: tuple[PostfixInstance, ZivmilterProcess],
    sinks: dict[str, Sink],
    keys: tuple[GnuPG, Issued, Path],
    tmp_path: Path,
) -> None:
    pf, z = gateway
    gpg, sam, _ = keys
    plain, tls = sinks["plain"], sinks["tls"]
    p0, t0 = len(plain.received), len(tls.received)
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=120) as s:
        assert s.sendmail("alice@hospital.example", RCPTS, message()) == {}
    at = {r.rcpt_tos: r for r in plain.wait_for(p0 + 5, timeout=120)[p0:]}
    at |= {r.rcpt_tos: r for r in tls.wait_for(t0 + 2, timeout=120)[t0:]}
    time.sleep(1)
    assert len(plain.received) == p0 + 5 and len(tls.received) == t0 + 2, z.log()
    assert set(at) == {(r,) for r in RCPTS}, z.log()
    word = CANARY.split()[0].encode()
    for (rcpt,), r in at.items():
        assert ACCESS_CODE.encode() not in r.data, rcpt
        assert b"zivver-" not in r.data.lower() and b"x-zivmilter-route" not in r.data.lower()
        if rcpt != "bob@partner.example":
            assert word not in r.data, rcpt
    assert CANARY.encode() in at["bob@partner.example",].data  # the direct copy, over TLS
    assert "/m/" in at["carol@oldmail.example",].message().get_body(("plain",)).get_content()
    for rcpt in ("kim@pgp.example", "wendy@wkd.example", "otto@dnskey.example"):
        outer = email.message_from_bytes(at[rcpt,].data, policy=email.policy.default)
        assert outer.get_content_type() == "multipart/encrypted", rcpt
        armored = list(outer.iter_parts())[1].get_payload(decode=True)
        check_original(email.message_from_bytes(gpg.decrypt(armored), policy=email.policy.default))
    opened = openssl_cms_decrypt(at["sam@smime.example",].data, sam, tmp_path / "cms")
    check_original(email.message_from_bytes(opened, policy=email.policy.default))
    check_pdf(at["pat@pdf.example",].message(), tmp_path)
    log = z.log()
    assert ACCESS_CODE not in log
    for rcpt, how in [
        ("kim@pgp.example", "method=own_key level=tls rule=K"),
        ("wendy@wkd.example", "method=own_key level=none rule=K"),
        ("otto@dnskey.example", "method=own_key level=none rule=K"),
        ("sam@smime.example", "method=own_key level=none rule=K"),
        ("pat@pdf.example", "method=pdf level=none rule=K"),
    ]:
        assert f"to=<{rcpt}> delivery=encrypted {how}" in log, log
    assert "encrypted to openpgp key" in log and "(wkd)" in log and "(openpgpkey)" in log


def check_original(inner: EmailMessage) -> None:
    assert inner["Subject"] == "Scan results"
    assert "zivver-access-right" not in inner
    body = inner.get_body(("plain",))
    assert body is not None and CANARY in body.get_content()
    (att,) = list(inner.iter_attachments())
    assert att.get_filename() == "scan.pdf" and att.get_content() == ATTACHMENT


def check_pdf(mail: EmailMessage, tmp_path: Path) -> None:
    """qpdf opens the PDF with the access code (and not without); the text and the attachment
    are the original's."""
    (pdf,) = [p for p in mail.walk() if p.get_content_type() == "application/pdf"]
    src, out = tmp_path / "m.pdf", tmp_path / "plain.pdf"
    src.write_bytes(pdf.get_payload(decode=True))
    shut = subprocess.run(["qpdf", "--decrypt", str(src), str(out)], capture_output=True)
    assert shut.returncode != 0  # no password, no content
    done = subprocess.run(
        ["qpdf", f"--password={ACCESS_CODE}", "--decrypt", str(src), str(out)], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(out), "-"], capture_output=True)
    assert CANARY in text.stdout.decode() and "Scan results" in text.stdout.decode()
    got = subprocess.run(["qpdf", "--show-attachment=scan.pdf", str(out)], capture_output=True)
    assert got.returncode == 0 and got.stdout == ATTACHMENT
