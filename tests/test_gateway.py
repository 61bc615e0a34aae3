"""What the gateway keeps in the store for a secured message (in-process, real encrypted store;
the MTA is a recording stand-in, the Postfix runs are in tests/integration)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.fakes import Collecting, make_config
from tests.harness.flaky_listener import FlakyListener
from tests.harness.postfix import free_port
from zivmilter import crypto
from zivmilter.core.facts import facts_from_mapping
from zivmilter.delivery.reinject import Outgoing, SmtpReinjector
from zivmilter.errors import DeliveryError
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


# -- a copy the MTA may have taken, and a client's retry ------------------------------------

THREE = ["carol@oldmail.example", "dave@oldmail.example", "erin@oldmail.example"]
ALICE = "<alice@hospital.example>"


def _token(data: bytes) -> str:
    found = re.search(rb"/m/([A-Za-z0-9_-]+)", data)
    assert found is not None, data
    return found.group(1).decode()


def _opens(store: SqliteStore, token: str) -> bool:
    """What the portal checks before it shows a notification's message."""
    found = store.find_recipient_by_token(token)
    return found is not None and store.open_content(found.message.id) is not None


def test_a_copy_without_a_reply_after_its_final_dot_keeps_its_link(store: SqliteStore) -> None:
    # The listener reads the whole first re-injected notification, then hangs up without a
    # reply (a Postfix reload): it may be queued, so its link must lead to the message, and the
    # milter still tempfails (DeliveryError) so that the client retries.
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "drop") as listener:
        gw = gateway(store)
        gw.reinjector = SmtpReinjector("127.0.0.1", port, 10)
        with pytest.raises(DeliveryError) as caught:
            gw.process(transaction(message("drop1"), ALICE, THREE[:2]))
    assert caught.value.uncertain and not caught.value.permanent
    (maybe,) = listener.received
    assert maybe.dropped
    assert _opens(store, _token(maybe.data))


class _TakesThenFails(Collecting):
    """Takes `n` copies, then refuses the rest (4xx) or dies (a kill -9 of the milter; also
    when it took them all: before the milter's answer reached the MTA)."""

    def __init__(self, n: int, fault: BaseException) -> None:
        super().__init__()
        self.n, self.fault = n, fault

    def send(self, messages: Sequence[Outgoing]) -> list[str]:
        super().send(messages[: self.n])
        if len(messages) >= self.n:
            raise self.fault
        return ["250 2.0.0 Ok: queued"] * len(messages)


def _each_once(first: Collecting, retry: Collecting, kept: list[str]) -> dict[str, bytes]:
    """Every recipient got exactly one copy over both tries (the kept one went with the
    retry's accepted transaction); their contents by recipient."""
    got: dict[str, list[bytes]] = {}
    for out in [*first.sent, *retry.sent]:
        assert isinstance(out.content, bytes)
        for rcpt in out.recipients:
            got.setdefault(rcpt, []).append(out.content)
    for rcpt in kept:
        got.setdefault(rcpt, []).append(b"(kept)")
    assert {r: len(c) for r, c in got.items()} == dict.fromkeys(got, 1), got
    return {r: c[0] for r, c in got.items()}


@pytest.mark.parametrize(
    "fault",
    [DeliveryError("452 4.3.1 the listener is full", accepted=1), SystemExit("kill -9")],
    ids=["refused", "killed"],
)
def test_a_retry_hands_over_only_what_is_missing(tmp_path: Path, fault: BaseException) -> None:
    # Three notification recipients: one stays in the milter's transaction, two are re-injected;
    # the first of those is taken, then the listener refuses (or the milter dies). The client
    # sends the same message again: the one taken is not sent twice, its link still works, and
    # the others get theirs; one stored message in all.
    path = str(tmp_path / "store")
    crypto.keygen(str(tmp_path / "k"))
    kek = crypto.load_kek(str(tmp_path / "k"))
    store = SqliteStore.open(path, kek)
    first = _TakesThenFails(1, fault)
    gw = gateway(store)
    gw.reinjector = first
    with pytest.raises(type(fault)):
        gw.process(transaction(message("retry1"), ALICE, THREE))
    store.close()  # as after a kill: the retry's milter opens the store anew

    store = SqliteStore.open(path, kek)
    retry = Collecting()
    gw = gateway(store)
    gw.reinjector = retry
    plan = gw.process(transaction(message("retry1"), ALICE, THREE))
    assert plan.replace_body is not None and not plan.discard
    kept = [r for r in THREE if r not in {x for o in retry.sent for x in o.recipients}]
    kept = [r for r in kept if r not in {x for o in first.sent for x in o.recipients}]
    assert len(kept) == 1
    contents = _each_once(first, retry, kept)
    assert len(stored_all(store, "retry1")) == 1
    kept_token = _token(plan.replace_body)
    for content in [*contents.values(), plan.replace_body]:
        token = kept_token if content == b"(kept)" else _token(content)
        assert _opens(store, token)
    store.close()


def test_a_retry_after_a_dsn_was_taken_sends_no_second_dsn(store: SqliteStore) -> None:
    rcpts = [*THREE, "bad@@oldmail.example"]
    first = _TakesThenFails(3, SystemExit("kill -9"))  # two notifications and the DSN
    gw = gateway(store)
    gw.reinjector = first
    with pytest.raises(SystemExit):
        gw.process(transaction(message("dsn1"), ALICE, rcpts))
    retry = Collecting()
    gw.reinjector = retry
    gw.process(transaction(message("dsn1"), ALICE, rcpts))
    assert [o.what for o in first.sent][-1] == "DSN"
    assert retry.sent == []  # all taken before: only the kept copy goes, in the transaction


def test_the_same_message_after_it_went_through_is_a_new_one(store: SqliteStore) -> None:
    # Once the milter answered with its plan the handover is over: a later identical message
    # (a user sending it again) is delivered again, as before retries were recognized.
    gw = gateway(store)
    for _ in range(2):
        gw.process(transaction(message("again1"), ALICE, THREE[:2]))
    assert isinstance(gw.reinjector, Collecting)
    assert [o.what for o in gw.reinjector.sent] == [f"notification to {THREE[1]}"] * 2
    assert len(stored_all(store, "again1")) == 2


def test_a_message_without_message_id_is_never_taken_for_a_retry(store: SqliteStore) -> None:
    # Nothing tells two such messages apart: both are delivered whole.
    raw = message("x").replace(b"Message-ID: <x@hospital.example>\r\n", b"")
    first = _TakesThenFails(1, DeliveryError("452 full", accepted=1))
    gw = gateway(store)
    gw.reinjector = first
    with pytest.raises(DeliveryError):
        gw.process(transaction(raw, ALICE, THREE))
    retry = Collecting()
    gw.reinjector = retry
    gw.process(transaction(raw, ALICE, THREE))
    assert len(retry.sent) == 2  # all re-injected again: a second notification, its own link
    assert not any(out.content == first.sent[0].content for out in retry.sent)


def stored_all(store: SqliteStore, msgid: str) -> list[MessageRecord]:
    return store.find_messages(f"<{msgid}@hospital.example>")


def test_a_retry_is_recognized_under_the_date_postfix_added_anew(store: SqliteStore) -> None:
    # A client that sends no Date gets one from Postfix, with the time of each try.
    def dated(second: int) -> bytes:
        return message("dated1").replace(
            b"\r\n\r\n",
            f"\r\nDate: Mon, 7 Dec 2026 11:23:{second:02d} +0000 (UTC)\r\n\r\n".encode(),
        )

    first = _TakesThenFails(1, DeliveryError("452 full", accepted=1))
    gw = gateway(store)
    gw.reinjector = first
    with pytest.raises(DeliveryError):
        gw.process(transaction(dated(30), ALICE, THREE))
    retry = Collecting()
    gw.reinjector = retry
    gw.process(transaction(dated(31), ALICE, THREE))
    assert [o.what for o in retry.sent] == [f"notification to {THREE[2]}"]
    assert len(stored_all(store, "dated1")) == 1


def test_a_bare_cr_cannot_hide_nesting_from_the_copy_that_is_stored(store: SqliteStore) -> None:
    # A CR without its LF in a directive field ends the header block for the `email` parser:
    # the message as passed parses as one text part, but the copy without the directive (the
    # one stored and sent) has the Content-Type below it and nests 150 deep. That copy is
    # measured too: refused for good, nothing stored or sent.
    from tests.harness.messages import nested_message
    from zivmilter.core import limits

    deep = nested_message(150, b"", b"Content-Type: text/plain\r\n\r\ninnermost\r\n")
    content_type, _, body = deep.partition(b"\r\n\r\n")
    headers = [
        ("From", "alice@hospital.example"),
        ("To", "carol@oldmail.example"),
        ("Message-ID", "<cr@hospital.example>"),
        ("zivver-access-right", "carol@oldmail.example sms +31612345678\rX-hidden"),
        ("Content-Type", content_type.decode().partition(": ")[2]),
    ]
    head = b"".join(f"{n}: {v}\r\n".encode() for n, v in headers) + b"\r\n"
    assert limits.mime_depth(io.BytesIO(head + body), 100) == 0  # as passed: one part
    gw = gateway(store)
    tx = Transaction(
        "QID1", "<alice@hospital.example>", ["<carol@oldmail.example>"], headers,
        io.BytesIO(head + body), len(head), "127.0.0.1",
    )  # fmt: skip
    plan = gw.process(tx)
    assert plan.reject is not None and plan.reject.startswith("554 5.6.0 MIME nesting deeper")
    assert gw.reinjector.sent == []  # type: ignore[attr-defined]
    assert store.find_messages("<cr@hospital.example>") == []
