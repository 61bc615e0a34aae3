"""The encrypted formats (zivmilter/keys/formats.py), opened by the real tools a recipient's
client relies on: `gpg --decrypt` with the recipient's secret key, `openssl cms -decrypt` with
the recipient's certificate key. What comes out is the whole original entity (text, HTML, the
attachment's bytes) with the Subject protected inside; nothing readable is outside."""

from __future__ import annotations

import email
import email.policy
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.harness.keys import GnuPG, SmimeCA, openssl_cms_decrypt
from zivmilter.core.keys import Candidate, KeyKind, KeySource, RecipientKey
from zivmilter.keys import formats, judge

CANARY = "CANARY-7f3a9 the patient's diagnosis"
ATTACHMENT = os.urandom(3000) + b"\x00\xff"


def original() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@hospital.example>"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = "Lab results for J. Doe"
    msg["Message-ID"] = "<m1@hospital.example>"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    msg.set_content(f"Dear Bob,\n{CANARY}\n")
    msg.add_alternative(f"<p>{CANARY}</p>", subtype="html")
    msg.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="scan.pdf")
    data = msg.as_bytes(policy=email.policy.SMTP)
    return b"Received: from client by mta\r\n" + data


def key_for(kind: KeyKind, material: bytes, address: str, trust: str | None) -> RecipientKey:
    got = judge.validator(trust)(
        Candidate(kind, material, KeySource.KEYSTORE, "test"), address, datetime.now(UTC)
    )
    assert isinstance(got, RecipientKey), got
    return got


def check_opened(inner: bytes) -> None:
    opened = email.message_from_bytes(inner, policy=email.policy.default)
    assert opened["Subject"] == "Lab results for J. Doe"  # protected header
    assert opened["From"] == "Alice <alice@hospital.example>"
    assert opened.get_param("hp") == "cipher"
    outer = [str(v) for v in opened.get_all("HP-Outer")]
    assert "To: bob@partner.example" in outer  # what the outer header showed, field by field
    assert any(v in outer for v in ("Subject: ...", "Subject: Secure message"))
    assert "Received" not in opened
    body = opened.get_body(("plain",))
    assert body is not None and CANARY in body.get_content()
    html = opened.get_body(("html",))
    assert html is not None and CANARY in html.get_content()
    (att,) = list(opened.iter_attachments())
    assert att.get_filename() == "scan.pdf" and att.get_content() == ATTACHMENT


def check_outside(wire: bytes, subject: str) -> email.message.Message:
    assert CANARY.encode() not in wire and b"Lab results" not in wire
    outer = email.message_from_bytes(wire, policy=email.policy.default)
    assert outer["Subject"] == subject
    assert outer["To"] == "bob@partner.example" and outer["Message-ID"] == "<m1@hospital.example>"
    assert "Received" not in outer
    return outer


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


def test_pgp_mime_opens_with_gnupg(gpg: GnuPG) -> None:
    key = key_for(KeyKind.OPENPGP, gpg.generate("Bob <bob@partner.example>"),
                  "bob@partner.example", None)  # fmt: skip
    wire = formats.encrypt_message(original(), [key], formats.OBSCURED_SUBJECT)
    outer = check_outside(wire, "...")
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    version, payload = outer.iter_parts()
    assert version.get_content_type() == "application/pgp-encrypted"
    assert version.get_content().strip() == b"Version: 1"
    armored = payload.get_payload(decode=True)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    check_opened(gpg.decrypt(armored))


def test_a_copy_for_the_sender_opens_with_either_key(gpg: GnuPG, tmp_path: Path) -> None:
    bob = key_for(KeyKind.OPENPGP, gpg.generate("Bob2 <bob2@partner.example>"),
                  "bob2@partner.example", None)  # fmt: skip
    with GnuPG(tmp_path / "alice") as other:
        alice = key_for(KeyKind.OPENPGP, other.generate("Alice <alice@hospital.example>"),
                        "alice@hospital.example", None)  # fmt: skip
        wire = formats.encrypt_message(original(), [bob, alice], "Secure message")
        outer = check_outside(wire, "Secure message")
        armored = list(outer.iter_parts())[1].get_payload(decode=True)
        check_opened(gpg.decrypt(armored))
        check_opened(other.decrypt(armored))


def test_smime_enveloped_data_opens_with_openssl(tmp_path: Path) -> None:
    ca = SmimeCA()
    trust = str(ca.write_pem(tmp_path / "ca.pem"))
    dana = ca.issue("bob@partner.example")
    key = key_for(KeyKind.SMIME, dana.der, "bob@partner.example", trust)
    wire = formats.encrypt_message(original(), [key], "...")
    outer = check_outside(wire, "...")
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer.get_param("smime-type") == "enveloped-data"
    check_opened(openssl_cms_decrypt(wire, dana, tmp_path / "cms"))
