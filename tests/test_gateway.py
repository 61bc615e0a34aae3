"""What the gateway keeps in the store for a secured message (in-process, real encrypted store;
the MTA is a recording stand-in, the Postfix runs are in tests/integration)."""

from __future__ import annotations

import io

import pytest

from tests.fakes import Collecting, make_config
from zivmilter.core.facts import facts_from_mapping
from zivmilter.gateway import Gateway, Transaction
from zivmilter.store import MessageRecord, SqliteStore


def gateway(store: SqliteStore, **policy: object) -> Gateway:
    cfg = make_config(
        {
            "submission": {"any_address_of_own_domains": True},
            "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}, **policy},
        }
    )
    facts = facts_from_mapping({"transport": {"partner.example": "pkix"}})
    return Gateway(cfg, facts, store, Collecting(), hostname="gw.test")


def transaction(raw: bytes, sender: str, rcpts: list[str]) -> Transaction:
    head, _, _ = raw.partition(b"\r\n\r\n")
    headers: list[tuple[str, str]] = []
    for line in head.decode().split("\r\n"):
        if line[:1] in " \t":
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
        else:
            name, _, value = line.partition(":")
            headers.append((name, value.lstrip(" ")))
    return Transaction(
        "QID1", sender, [f"<{r}>" for r in rcpts], headers, io.BytesIO(raw), len(head) + 4,
        "127.0.0.1",
    )  # fmt: skip


def message(msgid: str, sender: str = "Dr. Alice <alice@hospital.example>") -> bytes:
    return (
        f"From: {sender}\r\nTo: bob@partner.example, carol@oldmail.example\r\n"
        f"Subject: results\r\nMessage-ID: <{msgid}@hospital.example>\r\n\r\nSECRET\r\n"
    ).encode()


def stored(store: SqliteStore, msgid: str) -> MessageRecord:
    (found,) = store.find_messages(f"<{msgid}@hospital.example>")
    return found


def test_only_messages_with_notifications_expire(store: SqliteStore) -> None:
    gw = gateway(store, expiry_days=30)
    gw.process(transaction(message("m1"), "<alice@hospital.example>", ["bob@partner.example"]))
    direct_only = stored(store, "m1")
    assert direct_only.expires_at is None  # a direct copy is delivered: it cannot expire
    both = ["bob@partner.example", "carol@oldmail.example"]
    gw.process(transaction(message("m2"), "<alice@hospital.example>", both))
    mixed = stored(store, "m2")
    assert mixed.expires_at is not None
    assert (mixed.expires_at - mixed.created_at).days == 30


@pytest.mark.parametrize("envelope", ["<bounces+x1@hospital.example>", "<>"])
def test_the_author_is_stored_not_the_envelope_sender(store: SqliteStore, envelope: str) -> None:
    """Application relays send with a bounce or null envelope sender: replies and the portal's
    "from" must name the message's author (its From), normalized."""
    gw = gateway(store)
    raw = message("m3", sender='"Dr. Alice" <Alice@Hospital.EXAMPLE>, lab@hospital.example')
    gw.process(transaction(raw, envelope, ["carol@oldmail.example"]))
    assert stored(store, "m3").sender == "alice@hospital.example"
