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
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.harness.dns import TestDns, Zone, shared_dns
from tests.harness.encryption import (
    Original,
    RecipientKeys,
    TlsCA,
    ca,
    deliver,
    encrypting_gateway,
    keys,
    receiving_servers,
)
from tests.harness.keys import openssl_cms_decrypt
from tests.harness.postfix import PostfixInstance
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess
from tests.integration.test_keyfind import WkdServer, _advanced, _openpgpkey

pytestmark = pytest.mark.integration
_ = shared_dns, ca, keys  # fixtures from the shared harness

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
ORIGINAL = Original("Scan results", CANARY, ATTACHMENT, "scan.pdf")
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
def published(shared_dns: TestDns, ca: TlsCA, keys: RecipientKeys) -> Iterator[TestDns]:
    """wendy's key on a WKD server (advanced method), otto's in a signed OPENPGPKEY record."""
    gpg = keys.gpg
    wendy, otto = (
        gpg.generate("Wendy <wendy@wkd.example>"),
        gpg.generate("Otto <otto@dnskey.example>"),
    )
    shared_dns.set_zones([
        Zone("wkd.example", records=[f"openpgpkey A {WKD_IP}"]),
        Zone("dnskey.example", signed=True, records=[_openpgpkey("otto", otto)]),
    ])  # fmt: skip
    server = WkdServer(WKD_IP, ca.ca, ["openpgpkey.wkd.example"], {
        _advanced("wkd.example", "wendy"): wendy,
    })  # fmt: skip
    try:
        yield shared_dns
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sinks(ca: TlsCA) -> Iterator[tuple[Sink, Sink]]:
    with receiving_servers(HOSTS, PLAIN_IP, TLS_IP, ca) as servers:
        yield servers


@pytest.fixture(scope="module")
def gateway(
    published: TestDns, sinks: tuple[Sink, Sink], ca: TlsCA, keys: RecipientKeys
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    config = {
        "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
        "transport": {"resolver": [published.resolver]},
        "encryption": {"pdf": True, "wkd": {"ca_file": ca.file}},
    }
    with encrypting_gateway(ca, keys, FACTS, config) as running:
        yield running


def test_every_kind_of_recipient_gets_its_copy_and_real_tools_open_them(
    gateway: tuple[PostfixInstance, ZivmilterProcess],
    sinks: tuple[Sink, Sink],
    keys: RecipientKeys,
    tmp_path: Path,
) -> None:
    sent = ORIGINAL.message(
        RCPTS, "<allkinds-1@hospital.example>", f"pat@pdf.example access-code {ACCESS_CODE}"
    )
    at_plain, at_tls = deliver(gateway, sinks, RCPTS, sent, (5, 2), timeout=120)
    at = at_plain | at_tls
    z = gateway[1]
    assert set(at) == set(RCPTS), z.log()
    word = CANARY.split()[0].encode()
    for rcpt, r in at.items():
        assert ACCESS_CODE.encode() not in r.data, rcpt
        assert b"zivver-" not in r.data.lower() and b"x-zivmilter-route" not in r.data.lower()
        if rcpt != "bob@partner.example":
            assert word not in r.data, rcpt
    assert CANARY.encode() in at["bob@partner.example"].data  # the direct copy, over TLS
    assert "/m/" in at["carol@oldmail.example"].message().get_body(("plain",)).get_content()
    for rcpt in ("kim@pgp.example", "wendy@wkd.example", "otto@dnskey.example"):
        outer = email.message_from_bytes(at[rcpt].data, policy=email.policy.default)
        assert outer.get_content_type() == "multipart/encrypted", rcpt
        armored = list(outer.iter_parts())[1].get_payload(decode=True)
        ORIGINAL.check_bytes(keys.gpg.decrypt(armored))
    opened = openssl_cms_decrypt(at["sam@smime.example"].data, keys.sam, tmp_path / "cms")
    ORIGINAL.check_bytes(opened)
    check_pdf(at["pat@pdf.example"].message(), tmp_path)
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
