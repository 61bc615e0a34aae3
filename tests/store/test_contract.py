"""The store contract: what every backend must do, checked through `Store` only (round trips,
revocation, expiry, tokens, verification state, accounts, the contact book, concurrency)."""

from __future__ import annotations

import base64
import os
import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.store.common import (
    CODE,
    HINT,
    MARK_SUBJECT,
    PHONE,
    Clock,
    _lock_after_five,
    new_message,
    raw_message,
    recipients,
)
from zivmilter import crypto, defaults
from zivmilter.errors import StoreError
from zivmilter.store import NewRecipient, SqliteStore


def test_saved_copy_decrypts_to_original_bytes(st: SqliteStore) -> None:
    raw = raw_message()
    saved = st.save_message(new_message(raw))
    content = st.open_content(saved.id)
    assert content is not None
    assert content.read() == raw
    assert saved.size == len(raw)


def test_records_hold_the_decision(st: SqliteStore, clock: Clock) -> None:
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=30)
    saved = st.save_message(new_message(expires_at=expires))
    msg = st.message(saved.id)
    assert msg is not None
    assert msg.sender == "alice@example.org"
    assert msg.subject == MARK_SUBJECT + " Grüße"
    assert msg.rfc822_id == "<m1@example.org>" and msg.queue_id == "4XyZ12"
    assert msg.expires_at == expires.replace(microsecond=0)
    by_addr = {r.address: r for r in st.recipients(saved.id)}
    assert set(by_addr) == {
        "bob@example.net",
        "carol@example.com",
        "dave@example.net",
        "erin@example.org",
    }
    assert by_addr["bob@example.net"].phone == PHONE
    assert by_addr["erin@example.org"].delivery == "direct"
    assert by_addr["erin@example.org"].level == "pkix"
    assert by_addr["dave@example.net"].conversation == 2
    carol = by_addr["carol@example.com"]
    assert carol.hint == HINT
    assert carol.access_code_hash is not None
    assert crypto.verify_secret(carol.access_code_hash, CODE)
    assert not crypto.verify_secret(carol.access_code_hash, CODE + "x")


def test_expired_content_cannot_be_opened(st: SqliteStore, clock: Clock) -> None:
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=1)
    saved = st.save_message(new_message(expires_at=expires))
    keep = st.save_message(new_message())
    assert st.open_content(saved.id) is not None
    clock.t += 2 * 86400
    assert st.open_content(saved.id) is None
    assert st.purge_expired() == 1
    assert st.message(saved.id).revoked_at is not None  # type: ignore[union-attr]
    assert st.open_content(keep.id) is not None


def test_a_direct_only_message_does_not_expire(st: SqliteStore, clock: Clock) -> None:
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=1)
    direct = [r for r in recipients() if r.delivery == "direct"]
    saved = st.save_message(new_message(recipients=direct, expires_at=expires))  # as stored once
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"ATTACHMENT")
    clock.t += 2 * 86400
    assert st.purge_expired() == 0
    assert st.message(saved.id).revoked_at is None  # type: ignore[union-attr]
    stream = st.open_attachment(kept.id)
    assert stream is not None and stream.read() == b"ATTACHMENT"


def test_tokens_only_for_notification_recipients(st: SqliteStore) -> None:
    saved = st.save_message(new_message())
    assert set(saved.tokens) == {"bob@example.net", "carol@example.com", "dave@example.net"}
    assert "erin@example.org" not in saved.tokens
    assert "tokens=<3>" in repr(saved)
    for token in saved.tokens.values():
        assert token not in repr(saved)


def test_tokens_are_unique_and_long(st: SqliteStore) -> None:
    seen: set[str] = set()
    quick = [r for r in recipients() if r.verification != "access_code"]  # no scrypt: fast
    quick.append(NewRecipient("frank@example.net", 3, "email", "notification", "A7", None, "email"))
    for _ in range(30):
        saved = st.save_message(new_message(recipients=quick))
        for token in saved.tokens.values():
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            assert len(raw) * 8 >= 128
            seen.add(token)
    assert len(seen) == 90


def test_find_recipient_by_token(st: SqliteStore) -> None:
    saved = st.save_message(new_message())
    rec = st.find_recipient_by_token(saved.tokens["carol@example.com"])
    assert rec is not None
    assert rec.address == "carol@example.com"
    assert rec.message.id == saved.id
    assert rec.verification == "access_code"
    assert st.find_recipient_by_token("not-a-token") is None
    assert st.find_recipient_by_token(saved.tokens["carol@example.com"] + "x") is None
    assert PHONE not in repr(st.find_recipient_by_token(saved.tokens["bob@example.net"]))


def test_eight_threads_save_at_once(st: SqliteStore) -> None:
    barrier = threading.Barrier(8)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            raw = raw_message(f"thread-{n}", extra=os.urandom(200_000))
            barrier.wait()
            saved = st.save_message(new_message(raw))
            content = st.open_content(saved.id)
            assert content is not None and content.read() == raw
            results[n] = saved.id
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(results.values())) == 8
    for n, mid in results.items():
        content = st.open_content(mid)
        assert content is not None and f"thread-{n}".encode() in content.read()


def test_a_right_answer_claimed_before_the_limit_still_counts(st: SqliteStore) -> None:
    saved = st.save_message(new_message(recipients=recipients()[:1]))
    (rec,) = st.recipients(saved.id)
    for _ in range(defaults.LOCKOUT_AFTER - 1):
        assert st.settle_attempt(st.claim_attempt(rec.id, _lock_after_five), False) is None
    last = st.claim_attempt(rec.id, _lock_after_five)  # the fifth: it locks while in flight
    assert last.admitted and last.locked_until is not None
    late = st.claim_attempt(rec.id, _lock_after_five)
    assert not late.admitted and late.locked_until == last.locked_until
    assert st.settle_attempt(last, True) is None  # right after all: its own lock is lifted
    after = st.recipient(rec.id)
    assert after is not None and after.locked_until is None and after.lockouts == 0
    assert after.failed_attempts == defaults.LOCKOUT_AFTER - 1
    assert st.claim_attempt(rec.id, _lock_after_five).admitted
    events = [e.event for e in st.events(saved.id)]
    assert events.count("verify-failed") == defaults.LOCKOUT_AFTER - 1
    assert "locked" not in events and events.count("verify-while-locked") == 1


def test_accounts(st: SqliteStore) -> None:
    assert not st.has_account("bob@example.net")
    st.add_account("Bob@Example.NET", "recipient", password_hash="$argon2id$x", totp_secret=b"K")
    assert st.has_account("bob@EXAMPLE.net")
    acct = st.account("bob@example.net")
    assert acct is not None and acct.kind == "recipient" and acct.has_totp and acct.active
    assert st.totp_secret("bob@example.net") == b"K"
    assert st.set_account_active("bob@example.net", False)
    assert not st.has_account("bob@example.net")
    assert not st.set_account_active("nobody@example.net", True)
    assert not st.has_account("not an address")


def test_only_one_authenticator_enrols_even_at_once(st: SqliteStore) -> None:
    st.add_account("erin@example.net", "recipient", password_hash="$argon2id$x")
    barrier = threading.Barrier(8)
    won: list[bytes] = []

    def enrol(n: int) -> None:
        barrier.wait()
        if st.enrol_totp("erin@example.net", bytes([n]) * 20):
            won.append(bytes([n]) * 20)

    threads = [threading.Thread(target=enrol, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and st.totp_secret("erin@example.net") == won[0]
    assert not st.enrol_totp("erin@example.net", b"K" * 20)  # later ones: never
    assert st.totp_secret("erin@example.net") == won[0]
    st.add_account("nobody@example.net", "recipient")
    st.set_account_active("nobody@example.net", False)
    assert not st.enrol_totp("nobody@example.net", b"K" * 20)  # disabled
    assert not st.enrol_totp("ghost@example.net", b"K" * 20)  # no account


def test_remembered_method_without_contact_is_an_error(st: SqliteStore) -> None:
    msg = new_message(
        recipients=[NewRecipient("x@example.net", 1, "sms", "notification", "A5", None, "sms")]
    )
    with pytest.raises(StoreError, match="no number"):
        st.save_message(msg)


@pytest.mark.parametrize(
    "bad",
    [
        NewRecipient("x@example.net", 1, "m", "notification", "A7"),  # no verification
        NewRecipient("x@example.net", 1, "m", "direct", "A4", verification="email"),
        NewRecipient("x@example.net", 1, "m", "notification", "A3", None, "email", PHONE),
        NewRecipient("x@example.net", 1, "m", "elsewhere", "A3"),  # type: ignore[arg-type]
    ],
)
def test_inconsistent_recipient_is_refused(st: SqliteStore, bad: NewRecipient) -> None:
    with pytest.raises(ValueError):
        st.save_message(new_message(recipients=[bad]))
