"""The gateway's split for recipients with their own keys (rule K, issue 26), in-process: a real
encrypted store holding the organization's imported keys, the key finder over it, a recording
MTA. Each encrypted recipient gets a copy of its own that GnuPG or OpenSSL opens to the original;
no copy but the direct one carries the text. (Through the real Postfix: tests/integration.)"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import Collecting, make_config
from tests.harness.keys import GnuPG, SmimeCA, openssl_cms_decrypt
from tests.test_gateway import _TakesThenFails, transaction
from zivmilter.core.facts import KeyedFacts, facts_from_mapping
from zivmilter.core.keys import KeyLookup
from zivmilter.errors import DeliveryError
from zivmilter.gateway import Gateway
from zivmilter.keys import keystore
from zivmilter.keys.wiring import key_finder
from zivmilter.store import SqliteStore

CANARY = b"CANARY-e2e-4242"
ALICE = "<alice@hospital.example>"
RCPTS = ["n@other.example", "d@direct.example", "k@partner.example", "s@smime.example"]


def message(msgid: str = "enc1") -> bytes:
    return (
        (
            "From: Dr. Alice <alice@hospital.example>\r\nTo: " + ", ".join(RCPTS) + "\r\n"
            f"Subject: Lab results\r\nMessage-ID: <{msgid}@hospital.example>\r\n"
            "zivver-direct-delivery: tls tls1.2 auth certificate-validation\r\n"
            "zivver-minimum-recipient-verification: email-verification\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + CANARY
        + b"\r\n"
    )


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


@pytest.fixture
def world(store: SqliteStore, gpg: GnuPG, tmp_path: Path) -> tuple[Gateway, Collecting, object]:
    ca = SmimeCA()
    trust = ca.write_pem(tmp_path / "trust.pem")
    smime = ca.issue("s@smime.example")
    for data in (gpg.key_of("K <k@partner.example>"), smime.pem):
        for read in keystore.read_key_file(data, "test"):
            store.import_recipient_key(keystore.stored_key(read, None, "test"))
    cfg = make_config(
        {
            "submission": {"any_address_of_own_domains": True},
            "encryption": {"enabled": True, "smime": {"trust_store": str(trust)}},
        }
    )
    pinned = facts_from_mapping(
        {"transport": {"direct.example": "pkix", "partner.example": "tls", "other.example": "tls"}}
    )
    facts = KeyedFacts(pinned, key_finder(cfg, store, discovered={}))
    mta = Collecting()
    return Gateway(cfg, facts, store, mta, hostname="gw.test"), mta, smime


def test_four_kinds_of_recipient_split_into_their_own_copies(
    world: tuple[Gateway, Collecting, object], gpg: GnuPG, store: SqliteStore, tmp_path: Path
) -> None:
    gw, mta, smime = world
    plan = gw.process(transaction(message(), ALICE, RCPTS))
    # the MX of direct.example meets the header's minimum: the transaction keeps that copy
    assert plan.add_headers == [("X-Zivmilter-Route", "direct-pkix")]
    assert sorted(plan.delete_recipients) == ["<k@partner.example>", "<n@other.example>",
                                              "<s@smime.example>"]  # fmt: skip
    by = {out.recipients[0]: out for out in mta.sent}
    assert sorted(by) == ["k@partner.example", "n@other.example", "s@smime.example"]
    for address, out in by.items():
        data = out.content if isinstance(out.content, bytes) else out.content.read()
        assert CANARY not in data, address  # nothing readable but the direct copy
        assert b"zivver-direct-delivery" not in data.lower()
        by[address] = data  # type: ignore[assignment]
    pgp = by["k@partner.example"]
    assert pgp.startswith(b"X-Zivmilter-Route: direct-tls\r\n")  # at the level found
    outer = email.message_from_bytes(pgp, policy=email.policy.default)
    assert outer["Subject"] == "..." and outer.get_content_type() == "multipart/encrypted"
    inner = gpg.decrypt(list(outer.iter_parts())[1].get_payload(decode=True))
    assert CANARY in inner and b"Subject: Lab results" in inner
    assert b"zivver-direct-delivery" not in inner.lower()
    sm = by["s@smime.example"]
    assert not sm.startswith(b"X-Zivmilter-Route")  # no probe result: the default relay
    opened = openssl_cms_decrypt(sm, smime, tmp_path / "cms")  # type: ignore[arg-type]
    assert CANARY in opened
    (record,) = store.find_messages("<enc1@hospital.example>")
    kinds = {r.address: (r.method, r.delivery) for r in store.recipients(record.id)}
    assert kinds["k@partner.example"] == ("own_key", "direct")
    assert kinds["n@other.example"][1] == "notification"


@pytest.fixture
def alice_home(tmp_path: Path) -> Iterator[GnuPG]:
    with GnuPG(tmp_path / "alice") as g:
        yield g


def test_a_copy_for_the_senders_own_key(store: SqliteStore, gpg: GnuPG, alice_home: GnuPG) -> None:
    for data in (gpg.generate("K2 <k2@partner.example>"),
                 alice_home.generate("Alice <alice@hospital.example>")):  # fmt: skip
        for read in keystore.read_key_file(data, "test"):
            store.import_recipient_key(keystore.stored_key(read, None, "test"))
    cfg = make_config({
        "submission": {"any_address_of_own_domains": True},
        "encryption": {"enabled": True, "copy_to_sender": True},
        "notification": {"subject": "neutral"},
    })  # fmt: skip
    facts = KeyedFacts(facts_from_mapping({}), key_finder(cfg, store, discovered={}))
    gw = Gateway(cfg, facts, store, Collecting(), hostname="gw.test")
    raw = (b"From: alice@hospital.example\r\nTo: k2@partner.example\r\nSubject: Lab\r\n"
           b"Message-ID: <enc2@hospital.example>\r\n\r\n" + CANARY + b"\r\n")  # fmt: skip
    plan = gw.process(transaction(raw, ALICE, ["k2@partner.example"]))
    assert plan.replace_body is not None and CANARY not in plan.replace_body  # kept copy
    assert ("Subject", "Secure message") in plan.add_headers
    payload = email.message_from_bytes(
        b"Content-Type: " + dict(plan.add_headers)["Content-Type"].encode() + b"\r\n\r\n"
        + plan.replace_body, policy=email.policy.default,
    )  # fmt: skip
    armored = list(payload.iter_parts())[1].get_payload(decode=True)
    assert CANARY in gpg.decrypt(armored)
    assert CANARY in alice_home.decrypt(armored)


class _NoMaterial:
    def lookup(self, address: str) -> KeyLookup:
        pinned = facts_from_mapping({"keys": {address: {"kind": "openpgp", "ident": "AB"}}})
        return pinned.recipient_key(address)


def test_a_key_that_cannot_encrypt_makes_the_milter_tempfail_with_nothing_sent(
    store: SqliteStore,
) -> None:
    cfg = make_config({"submission": {"any_address_of_own_domains": True},
                       "encryption": {"enabled": True}})  # fmt: skip
    mta = Collecting()
    gw = Gateway(cfg, KeyedFacts(facts_from_mapping({}), _NoMaterial()), store, mta)
    raw = (b"From: alice@hospital.example\r\nTo: k3@partner.example, n@other.example\r\n"
           b"Subject: Lab\r\nMessage-ID: <enc3@hospital.example>\r\n\r\n"
           + CANARY + b"\r\n")  # fmt: skip
    with pytest.raises(ValueError, match="has no key material"):
        gw.process(transaction(raw, ALICE, ["k3@partner.example", "n@other.example"]))
    assert mta.sent == []
    assert store.find_messages("<enc3@hospital.example>") == []  # discarded: the client retries


def test_a_retry_hands_over_only_the_encrypted_copies_still_missing(
    world: tuple[Gateway, Collecting, object], gpg: GnuPG
) -> None:
    # The direct copy stays in the transaction; the first re-injected copy (k's) is taken,
    # then the listener refuses: the client's retry sends the other two, not k's again.
    gw, _, _ = world
    first = _TakesThenFails(1, DeliveryError("452 4.3.1 the listener is full", accepted=1))
    gw.reinjector = first
    with pytest.raises(DeliveryError):
        gw.process(transaction(message("enc-retry"), ALICE, RCPTS))
    retry = Collecting()
    gw.reinjector = retry
    gw.process(transaction(message("enc-retry"), ALICE, RCPTS))
    assert [o.what for o in first.sent] == ["openpgp-encrypted copy to k@partner.example"]
    assert sorted(o.what for o in retry.sent) == [
        "notification to n@other.example",
        "smime-encrypted copy to s@smime.example",
    ]


def test_a_german_recipients_encrypted_copies_carry_the_german_neutral_subject(
    store: SqliteStore, gpg: GnuPG, tmp_path: Path
) -> None:
    ca = SmimeCA()
    smime = ca.issue("s@smime.de")
    for data in (gpg.key_of("K <k@partner.de>"), smime.pem):
        for read in keystore.read_key_file(data, "test"):
            store.import_recipient_key(keystore.stored_key(read, None, "test"))
    cfg = make_config({
        "submission": {"any_address_of_own_domains": True},
        "encryption": {"enabled": True,
                       "smime": {"trust_store": str(ca.write_pem(tmp_path / "trust.pem"))}},
        "notification": {"subject": "neutral",
                         "languages": {"partner.de": "de", "smime.de": "de"}},
    })  # fmt: skip
    mta = Collecting()
    facts = KeyedFacts(facts_from_mapping({}), key_finder(cfg, store, discovered={}))
    gw = Gateway(cfg, facts, store, mta, hostname="gw.test")
    raw = (b"From: alice@hospital.example\r\nTo: k@partner.de, s@smime.de\r\nSubject: Befund\r\n"
           b"Message-ID: <enc-de@hospital.example>\r\n\r\n" + CANARY + b"\r\n")  # fmt: skip
    plan = gw.process(transaction(raw, ALICE, ["k@partner.de", "s@smime.de"]))
    # one copy stays in the transaction (its Subject added), the other is re-injected
    assert ("Subject", "Sichere Nachricht") in plan.add_headers
    (out,) = mta.sent
    data = out.content if isinstance(out.content, bytes) else out.content.read()
    reinjected = email.message_from_bytes(data, policy=email.policy.default)
    assert reinjected["Subject"] == "Sichere Nachricht"
    assert CANARY not in data and b"Befund" not in data
    kept = dict(plan.add_headers)["Content-Type"]
    kinds = {kept.split(";")[0], reinjected.get_content_type()}
    assert kinds == {"multipart/encrypted", "application/pkcs7-mime"}  # PGP/MIME and S/MIME


def test_a_resent_bcc_recipient_is_hidden_in_the_encrypted_copy_and_the_store(
    world: tuple[Gateway, Collecting, object], gpg: GnuPG, store: SqliteStore
) -> None:
    # A message redirected ("bounced") by a mail client carries Resent-* fields; Resent-Bcc
    # names the hidden recipients of that sending as Bcc does (RFC 5322 3.6.6). The MTA drops
    # the field from the message it carries, but not from inside an encrypted copy, nor from
    # the copy the store keeps for the portal.
    gw, mta, _ = world
    raw = (b"From: alice@hospital.example\r\nTo: k@partner.example\r\nSubject: Lab\r\n"
           b"Message-ID: <enc-rbcc@hospital.example>\r\nResent-From: alice@hospital.example\r\n"
           b"Resent-To: k@partner.example\r\nRESENT-BCC: hidden@other.example\r\n"
           b"Bcc: hidden2@other.example\r\n\r\n" + CANARY + b"\r\n")  # fmt: skip
    rcpts = ["k@partner.example", "hidden@other.example", "hidden2@other.example"]
    plan = gw.process(transaction(raw, ALICE, rcpts))
    assert plan.replace_body is not None  # k's encrypted copy stays in the transaction
    payload = email.message_from_bytes(
        b"Content-Type: " + dict(plan.add_headers)["Content-Type"].encode() + b"\r\n\r\n"
        + plan.replace_body, policy=email.policy.default,
    )  # fmt: skip
    inner = gpg.decrypt(list(payload.iter_parts())[1].get_payload(decode=True))
    assert CANARY in inner and b"Resent-To: k@partner.example" in inner
    assert b"hidden" not in inner, inner.decode(errors="replace")
    (record,) = store.find_messages("<enc-rbcc@hospital.example>")
    content = store.open_content(record.id)
    assert content is not None
    with content:
        assert b"hidden" not in content.read()
    assert {o.recipients for o in mta.sent} == {("hidden@other.example",),
                                                ("hidden2@other.example",)}  # fmt: skip
