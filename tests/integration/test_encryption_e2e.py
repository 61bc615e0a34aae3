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
from collections.abc import Iterator
from pathlib import Path

import pytest

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

pytestmark = pytest.mark.integration
_ = ca, keys  # module fixtures from the shared harness

PLAIN_IP, TLS_IP = "127.0.0.50", "127.0.0.51"
HOSTS = (
    "127.0.0.1 localhost\n"
    f"{PLAIN_IP} oldmail.example smime.example\n"
    f"{TLS_IP} partner.example pgp.example\n"
)
FACTS = {"transport": {"partner.example": "pkix", "pgp.example": "tls"}}
CANARY = "CANARY-5e2e-lab the biopsy was benign"
ORIGINAL = Original("Biopsy results", CANARY, os.urandom(20_000), "report.pdf")
RCPTS = ["carol@oldmail.example", "bob@partner.example", "kim@pgp.example", "sam@smime.example"]


@pytest.fixture(scope="module")
def sinks(ca: TlsCA) -> Iterator[tuple[Sink, Sink]]:
    with receiving_servers(HOSTS, PLAIN_IP, TLS_IP, ca) as servers:
        yield servers


@pytest.fixture(scope="module")
def gateway(
    sinks: tuple[Sink, Sink], ca: TlsCA, keys: RecipientKeys
) -> Iterator[tuple[PostfixInstance, ZivmilterProcess]]:
    config = {"policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}}}
    with encrypting_gateway(ca, keys, FACTS, config) as running:
        yield running


def test_four_kinds_of_recipient_and_real_tools_open_the_encrypted_copies(
    gateway: tuple[PostfixInstance, ZivmilterProcess],
    sinks: tuple[Sink, Sink],
    keys: RecipientKeys,
    tmp_path: Path,
) -> None:
    sent = ORIGINAL.message(
        RCPTS, "<enc-e2e-1@hospital.example>", "nobody@elsewhere.example sms +31612345678"
    )
    at_plain, at_tls = deliver(gateway, sinks, RCPTS, sent, (2, 2))
    assert set(at_plain) == {"carol@oldmail.example", "sam@smime.example"}
    assert set(at_tls) == {"bob@partner.example", "kim@pgp.example"}
    for r in [*at_plain.values(), *at_tls.values()]:
        assert b"zivver-" not in r.data.lower() and b"x-zivmilter-route" not in r.data.lower()
    # the direct copy: the text, over verified TLS
    direct = at_tls["bob@partner.example"]
    assert CANARY.encode() in direct.data
    # the notification: a link, never the text
    note = at_plain["carol@oldmail.example"]
    assert CANARY.split()[0].encode() not in note.data
    assert "https://secure.hospital.example/m/" in note.message().get_body(("plain",)).get_content()
    # the PGP/MIME copy: over TLS (its MX's level), nothing readable on the wire
    pgp = at_tls["kim@pgp.example"]
    assert pgp.tls_version in ("TLSv1.2", "TLSv1.3")
    assert CANARY.split()[0].encode() not in pgp.data and b"Biopsy" not in pgp.data
    outer = email.message_from_bytes(pgp.data, policy=email.policy.default)
    assert outer.get_content_type() == "multipart/encrypted" and outer["Subject"] == "..."
    ORIGINAL.check_bytes(keys.gpg.decrypt(list(outer.iter_parts())[1].get_payload(decode=True)))
    # the S/MIME copy: through the default route (no level found for smime.example)
    sm = at_plain["sam@smime.example"]
    assert CANARY.split()[0].encode() not in sm.data and b"Biopsy" not in sm.data
    ORIGINAL.check_bytes(openssl_cms_decrypt(sm.data, keys.sam, tmp_path / "cms"))
    log = gateway[1].log()
    assert "to=<kim@pgp.example> delivery=encrypted method=own_key level=tls rule=K" in log
    assert "to=<sam@smime.example> delivery=encrypted method=own_key level=none rule=K" in log
