"""A store opened read-only (`open_store(config, read_only=True)`, for the commands that only
read), on every backend: it reads what a writer wrote, and every method that would change the
store raises StoreError, changing nothing, while the writer goes on. SQLite's own side (locks,
files it may not write, a missing store) is in test_sqlite_readonly.py."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.store.common import Clock, _lock_after_five, new_message, raw_message
from zivmilter import crypto
from zivmilter.errors import StoreError
from zivmilter.store import Store, StoredKey

KEY = StoredKey("A" * 40, "openpgp", ("bob@example.net",), b"\x99\x01pgp")
DEVICE = hashlib.sha256(b"browser").hexdigest()


@dataclass(frozen=True)
class Written:
    """What the writer stored: one of each kind of row the read-only store is tried on."""

    message_id: str
    recipient_id: int  # bob's notification link
    attachment_id: str
    reply_id: str
    claim_id: int
    token: str


def _write_everything(st: Store, clock: Clock) -> Written:
    saved = st.save_message(new_message(expires_at=datetime.fromtimestamp(clock() + 3600, UTC)))
    bob = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert bob is not None
    attachment = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"ATTACHMENT" * 9)
    reply = st.save_reply(bob.id, b"Subject: Re\r\n\r\nREPLY\r\n")
    claim = st.open_claim(attachment.id, "bob@example.net", bob.id)
    st.add_account("alice@example.org", "sender")
    st.remember_contact("carol@example.com", sms="+31612345678")
    st.remember_device("bob@example.net", DEVICE, clock() + 3600)
    st.set_idd_domain("partner.example", True)
    st.import_recipient_key(KEY)
    st.record_event("checked", saved.id, "bob@example.net", "by the writer")
    return Written(saved.id, bob.id, attachment.id, reply, claim, saved.tokens["bob@example.net"])


def test_a_read_only_store_reads_what_a_writer_wrote(
    st: Store, reopen: Callable[..., Store], clock: Clock
) -> None:
    w = _write_everything(st, clock)
    ro = reopen(read_only=True)
    content = ro.open_content(w.message_id)
    assert content is not None and content.read() == raw_message()
    assert [m.id for m in ro.find_messages(w.message_id)] == [w.message_id]
    found = ro.find_recipient_by_token(w.token)
    assert found is not None and found.address == "bob@example.net"
    assert {r.address for r in ro.recipients(w.message_id)} == {
        r.address for r in st.recipients(w.message_id)
    }
    attachment = ro.open_attachment(w.attachment_id)
    assert attachment is not None and attachment.read() == b"ATTACHMENT" * 9
    reply = ro.open_reply(w.reply_id)
    assert reply is not None and reply.read() == b"Subject: Re\r\n\r\nREPLY\r\n"
    assert [a.address for a in ro.accounts()] == ["alice@example.org"]
    assert [c.address for c in ro.contacts()] == ["carol@example.com"]
    assert ro.devices() == {"bob@example.net": 1}
    assert ro.idd_domains() == ["partner.example"]
    assert ro.recipient_keys("bob@example.net") == st.recipient_keys("bob@example.net")
    assert ro.key_usage() == st.key_usage()
    assert [e.event for e in ro.export_events(message_id=w.message_id)] == [
        e.event for e in st.export_events(message_id=w.message_id)
    ]
    # ...and what the writer writes afterwards: every read sees the store as it is now
    later = st.save_message(new_message())
    assert ro.message(later.id) is not None


def _writes(st: Store, w: Written, clock: Clock) -> dict[str, Callable[[Store], Any]]:
    """Every method that changes a store, called through `ro` on rows that exist, so that on a
    writable store each would write. Attempts to settle come from the writer (`st`)."""
    attempt = st.claim_attempt(w.recipient_id, _lock_after_five)
    answer = st.claim_answer(w.claim_id, _lock_after_five, funded=False, per_hour=10)
    sign_in = st.claim_sign_in("alice@example.org", _lock_after_five)
    no_account = st.claim_sign_in("nobody@example.org", _lock_after_five)
    invite = st.add_invite("alice@example.org", 3600)
    assert invite is not None
    later = datetime.fromtimestamp(clock() + 7200, UTC)

    def locked(ro: Store) -> None:
        with ro.housekeeping_lock():
            pass

    def purge_after_expiry(ro: Store) -> int:
        clock.t += 7200  # the message has expired: a writable store would revoke it
        try:
            return ro.purge_expired(reply_grace=0.0)  # its unsent reply does not hold it
        finally:
            clock.t -= 7200

    return {
        "save_message": lambda ro: ro.save_message(new_message()),
        "discard": lambda ro: ro.discard(w.message_id),
        "mark_notified": lambda ro: ro.mark_notified(w.message_id, "bob@example.net"),
        "mark_opened": lambda ro: ro.mark_opened(w.recipient_id),
        "revoke": lambda ro: ro.revoke(w.message_id, "test"),
        "revoke_recipient": lambda ro: ro.revoke_recipient(w.message_id, "bob@example.net"),
        "purge_expired": purge_after_expiry,
        "save_portal_view": lambda ro: ro.save_portal_view(w.message_id, b"VIEW"),
        "claim_attempt": lambda ro: ro.claim_attempt(w.recipient_id, _lock_after_five),
        "settle_attempt": lambda ro: ro.settle_attempt(attempt, False),
        "record_verified": lambda ro: ro.record_verified(w.recipient_id),
        "claim_otp": lambda ro: ro.claim_otp(w.recipient_id, b"secret", 0.0, 5),
        "consume_otp": lambda ro: ro.consume_otp(w.recipient_id, lambda s, t: True),
        "clear_otp": lambda ro: ro.clear_otp(w.recipient_id),
        "end_sessions": lambda ro: ro.end_sessions(w.recipient_id),
        "remember_handover": lambda ro: ro.remember_handover(w.message_id, "k", {}),
        "mark_handed": lambda ro: ro.mark_handed(w.message_id, "copy"),
        "end_handover": lambda ro: ro.end_handover(w.message_id),
        "save_attachment": lambda ro: ro.save_attachment(w.message_id, "a", "text/plain", b"x"),
        "open_claim": lambda ro: ro.open_claim(w.attachment_id, "bob@example.net", None),
        "issue_claim_code": lambda ro: ro.issue_claim_code(w.claim_id, b"s", 0.0, 5, 10),
        "drop_claim_code": lambda ro: ro.drop_claim_code(w.claim_id),
        "claim_answer": lambda ro: ro.claim_answer(
            w.claim_id, _lock_after_five, funded=False, per_hour=10
        ),
        "settle_claim_answer": lambda ro: ro.settle_claim_answer(answer, False),
        "consume_claim_code": lambda ro: ro.consume_claim_code(w.claim_id, lambda s, t: True),
        "save_reply": lambda ro: ro.save_reply(w.recipient_id, b"Subject: x\r\n\r\ny\r\n"),
        "mark_reply_sent": lambda ro: ro.mark_reply_sent(w.reply_id),
        "mark_reply_undeliverable": lambda ro: ro.mark_reply_undeliverable(w.reply_id, "550"),
        "add_account": lambda ro: ro.add_account("dave@example.org", "sender"),
        "set_account_active": lambda ro: ro.set_account_active("alice@example.org", False),
        "end_account_sessions": lambda ro: ro.end_account_sessions("alice@example.org"),
        "enrol_totp": lambda ro: ro.enrol_totp("alice@example.org", b"secret"),
        "use_totp_step": lambda ro: ro.use_totp_step("alice@example.org", 1),
        "add_invite": lambda ro: ro.add_invite("alice@example.org", 3600),
        "redeem_invite": lambda ro: ro.redeem_invite(
            crypto.token_hash(invite), "$argon2id$x", b"S" * 20, 7
        ),
        "claim_sign_in": lambda ro: ro.claim_sign_in("alice@example.org", _lock_after_five),
        "settle_sign_in": lambda ro: ro.settle_sign_in(sign_in, False),
        "claim_sign_in without an account": lambda ro: ro.claim_sign_in(
            "nobody@example.org", _lock_after_five
        ),
        "settle_sign_in without an account": lambda ro: ro.settle_sign_in(no_account, False),
        "prune_sign_in_counts": lambda ro: ro.prune_sign_in_counts(keep=0),
        "set_expiry": lambda ro: ro.set_expiry(w.message_id, later),
        "claim_read_receipt": lambda ro: ro.claim_read_receipt(w.recipient_id),
        "remember_contact": lambda ro: ro.remember_contact("erin@example.org", sms="+3161"),
        "remember_language": lambda ro: ro.remember_language("carol@example.com", "de"),
        "forget_contact": lambda ro: ro.forget_contact("carol@example.com"),
        "remember_device": lambda ro: ro.remember_device("erin@example.org", "0" * 64, 1e10),
        "use_device": lambda ro: ro.use_device("bob@example.net", DEVICE, w.message_id),
        "forget_devices": lambda ro: ro.forget_devices("bob@example.net"),
        "import_recipient_key": lambda ro: ro.import_recipient_key(KEY),
        "remove_recipient_key": lambda ro: ro.remove_recipient_key(KEY.ident),
        "set_idd_domain": lambda ro: ro.set_idd_domain("partner.example", False),
        "record_event": lambda ro: ro.record_event("tried", w.message_id),
        "housekeeping_lock": locked,
        "sweep_orphans": lambda ro: ro.sweep_orphans(0.0),
        "finish_erasure": lambda ro: ro.finish_erasure(0.0),
        "rekey_batch": lambda ro: ro.rekey_batch(10),
    }


def _snapshot(st: Store, w: Written) -> tuple[Any, ...]:
    """What the writer reads of everything the writes above would change."""
    return (
        st.message(w.message_id),
        st.recipients(w.message_id),
        st.link_state(w.recipient_id),
        st.otp(w.recipient_id),
        st.claim(w.claim_id),
        st.replies(w.recipient_id),
        st.accounts(),
        st.contacts(),
        st.devices(),
        st.idd_domains(),
        st.recipient_keys(),
        [(e.event, e.detail) for e in st.export_events()],
        st.unsent_replies(),
    )


def test_every_write_through_a_read_only_store_fails_and_changes_nothing(
    st: Store, reopen: Callable[..., Store], clock: Clock
) -> None:
    w = _write_everything(st, clock)
    writes = _writes(st, w, clock)
    before = _snapshot(st, w)
    ro = reopen(read_only=True)
    answered = {}
    for name, write in writes.items():
        try:
            answered[name] = write(ro)
        except StoreError as exc:
            assert "the store is open read-only here" in str(exc), (name, exc)
            assert "would change it" in str(exc), (name, exc)
    assert answered == {}  # none returned as if it had done its work
    assert _snapshot(st, w) == before
    # The writer still writes, and the read-only store still reads (nothing half-open).
    assert st.revoke(w.message_id, "by the writer")
    gone = ro.message(w.message_id)
    assert gone is not None and gone.revoked_at is not None
    ro.close()


def test_a_write_past_the_store_s_own_refusal_fails_in_the_database(
    backend: str, st: Store, reopen: Callable[..., Store], clock: Clock
) -> None:
    """The second line: SQLite's connection is `mode=ro`, PostgreSQL's sessions read-only, so
    a method that forgot to refuse would fail loudly, not write."""
    saved = st.save_message(new_message())
    ro: Any = reopen(read_only=True)
    insert = "INSERT INTO idd_domains (domain, added_at) VALUES ('x.example', 1)"
    if backend.startswith("sqlite"):
        import sqlite3

        with pytest.raises(sqlite3.OperationalError, match="readonly database"):
            ro._conn.execute(insert)
    else:
        with pytest.raises(StoreError, match="read-only transaction"), ro._read() as cur:
            cur.execute(insert)
        with (  # a request scope's connection too
            pytest.raises(StoreError, match="read-only transaction"),
            ro.request_scope(),
            ro._read() as cur,
        ):
            cur.execute("UPDATE messages SET queue_id = 'x' WHERE id = %s", (saved.id,))
    assert st.idd_domains() == []
    assert ro.message(saved.id) == st.message(saved.id)


def test_a_read_only_store_still_checks_the_key(st: Store, reopen: Callable[..., Store]) -> None:
    st.save_message(new_message())
    with pytest.raises(StoreError, match="wrong key-encryption key"):
        reopen(kek=os.urandom(32), read_only=True)
