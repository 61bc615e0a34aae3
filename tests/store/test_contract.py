"""The store contract: what every backend must do, checked through `Store` only (round trips,
revocation, expiry, tokens, verification state, accounts, the contact book, concurrency)."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from zivmilter.core.facts import Contact
from zivmilter.errors import StoreError
from zivmilter.store import NewPart, NewRecipient, PartRecord, ReplyUsage, Store


def test_saved_copy_decrypts_to_original_bytes(st: Store) -> None:
    raw = raw_message()
    saved = st.save_message(new_message(raw))
    content = st.open_content(saved.id)
    assert content is not None
    assert content.read() == raw
    assert saved.size == len(raw)


@pytest.mark.parametrize("kind", ["bytes", "file", "path"])
def test_content_sources(st: Store, tmp_path: Path, kind: str) -> None:
    raw = raw_message(extra=os.urandom(3 * crypto.RECORD_SIZE + 5))
    src: object = raw
    if kind == "file":
        src = io.BytesIO(raw)
    elif kind == "path":
        p = tmp_path / "spool.eml"
        p.write_bytes(raw)
        src = str(p)
    saved = st.save_message(new_message(src))
    content = st.open_content(saved.id)
    assert content is not None
    assert content.read() == raw


def test_reopen_keeps_data(st: Store, reopen: Callable[..., Store]) -> None:
    saved = st.save_message(new_message())
    st.close()
    again = reopen()
    assert again.find_recipient_by_token(saved.tokens["dave@example.net"]) is not None
    content = again.open_content(saved.id)
    assert content is not None and content.read() == raw_message()


def test_wrong_kek_fails_with_store_error(st: Store, reopen: Callable[..., Store]) -> None:
    saved = st.save_message(new_message())
    with pytest.raises(StoreError, match="wrong key-encryption key"):
        reopen(kek=os.urandom(32))
    content = reopen().open_content(saved.id)  # the right key still reads it
    assert content is not None and content.read() == raw_message()


def test_wrong_kek_never_yields_garbage_on_read(reopen: Callable[..., Store]) -> None:
    # An empty store accepts any key at open; reading another key's message must still fail.
    a = reopen()
    b = reopen(kek=os.urandom(32))
    saved = a.save_message(new_message())
    with pytest.raises(StoreError):
        b.open_content(saved.id)
    with pytest.raises(StoreError):
        b.message(saved.id)


def test_records_hold_the_decision(st: Store, clock: Clock) -> None:
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
    assert st.access_code_matches(carol.access_code_hash, CODE)
    assert not st.access_code_matches(carol.access_code_hash, CODE + "x")


def test_an_access_code_hash_does_not_verify_without_the_kek(st: Store) -> None:
    """Against a stolen database: the stored hash takes the KEK's pepper to check a guess."""
    saved = st.save_message(new_message())
    carol = {r.address: r for r in st.recipients(saved.id)}["carol@example.com"]
    assert carol.access_code_hash is not None
    assert st.access_code_matches(carol.access_code_hash, CODE)
    assert not crypto.verify_secret(carol.access_code_hash, CODE)  # scrypt alone
    assert not crypto.verify_secret(carol.access_code_hash, CODE, pepper=os.urandom(32))


def test_access_code_hashes_written_before_the_pepper_still_verify(st: Store) -> None:
    old = crypto.hash_secret(CODE)  # as stored by a zivmilter before the pepper
    assert st.access_code_matches(old, CODE)
    assert not st.access_code_matches(old, CODE + "x")
    assert not st.access_code_matches(None, CODE)
    assert not st.access_code_matches("garbage", CODE)


def test_expired_content_cannot_be_opened(st: Store, clock: Clock) -> None:
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=1)
    saved = st.save_message(new_message(expires_at=expires))
    keep = st.save_message(new_message())
    assert st.open_content(saved.id) is not None
    clock.t += 2 * 86400
    assert st.open_content(saved.id) is None
    assert st.purge_expired() == 1
    assert st.message(saved.id).revoked_at is not None  # type: ignore[union-attr]
    assert st.open_content(keep.id) is not None


def test_revoked_content_cannot_be_opened(st: Store) -> None:
    saved = st.save_message(new_message())
    token = saved.tokens["bob@example.net"]
    assert st.revoke(saved.id, "sender withdrew it")
    assert st.open_content(saved.id) is None
    assert not st.revoke(saved.id)
    rec = st.find_recipient_by_token(token)
    assert rec is not None
    assert rec.message.revoked_at is not None
    assert rec.message.subject is None and rec.phone is None
    assert not rec.message.available(datetime.now(UTC))
    assert [e.event for e in st.events(saved.id)] == ["stored", "revoked"]


def test_revocation_keeps_direct_attachments_and_drops_the_rest(st: Store) -> None:
    """Revoking ends the notification links; the direct copy's large attachment (own key)
    stays readable, everything sealed under the message's key goes."""
    saved = st.save_message(new_message())
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"ATTACHMENT" * 1000)
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None
    reply = st.save_reply(rec.id, b"Subject: Re\r\n\r\nREPLY\r\n")
    st.save_portal_view(saved.id, b"VIEW")
    assert st.portal_view(saved.id) == b"VIEW"
    assert st.revoke(saved.id)
    assert st.open_content(saved.id) is None and st.open_reply(reply) is None
    assert st.portal_view(saved.id) is None
    att = st.attachment(kept.id)
    assert att is not None and att.available and att.filename == "scan.pdf"
    stream = st.open_attachment(kept.id)
    assert stream is not None and stream.read() == b"ATTACHMENT" * 1000


def test_large_attachments_kept_apart_stream_until_the_message_ends(
    st: Store, clock: Clock
) -> None:
    """The parts a save keeps apart (NewMessage.parts) read back by their leaf index, and end
    with the message: revoked or expired, they are gone like its content."""
    big = os.urandom(3 * crypto.RECORD_SIZE + 7)
    parts = [
        NewPart(2, "scan 1.pdf", "application/pdf", big),
        NewPart(5, "röntgen.png", "image/png", io.BytesIO(b"PNG" * 10)),
    ]
    saved = st.save_message(new_message(parts=parts))
    assert st.part(saved.id, 2) == PartRecord(2, "scan 1.pdf", "application/pdf", len(big))
    assert st.part(saved.id, 5) == PartRecord(5, "röntgen.png", "image/png", 30)
    assert st.part(saved.id, 3) is None and st.open_part(saved.id, 3) is None
    stream = st.open_part(saved.id, 2)
    assert stream is not None
    with stream:
        assert stream.read(1000) == big[:1000] and stream.read() == big[1000:]
    clock.t += 1
    expiring = st.save_message(
        new_message(parts=parts[1:], expires_at=datetime.fromtimestamp(clock.t + 60, UTC))
    )
    clock.t += 61
    assert st.part(expiring.id, 5) is None and st.open_part(expiring.id, 5) is None
    assert st.revoke(saved.id)
    assert st.part(saved.id, 2) is None and st.open_part(saved.id, 2) is None
    ordinary = st.save_message(new_message())
    assert st.part(ordinary.id, 0) is None and st.open_part(ordinary.id, 0) is None


def test_discard_forgets_everything(st: Store) -> None:
    saved = st.save_message(new_message())
    st.discard(saved.id)
    assert st.message(saved.id) is None
    assert st.open_content(saved.id) is None
    assert st.find_recipient_by_token(saved.tokens["bob@example.net"]) is None


def test_notified_and_opened_are_recorded(st: Store) -> None:
    saved = st.save_message(new_message())
    st.mark_notified(saved.id, "bob@example.net")
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None and rec.notified_at is not None and rec.opened_at is None
    st.mark_opened(rec.id)
    st.mark_opened(rec.id)
    rec2 = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec2 is not None and rec2.opened_at is not None
    events = [(e.event, e.recipient) for e in st.events(saved.id)]
    assert events == [
        ("stored", None),
        ("notified", "bob@example.net"),
        ("opened", "bob@example.net"),
        ("opened", "bob@example.net"),
    ]


def test_a_direct_only_message_does_not_expire(st: Store, clock: Clock) -> None:
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=1)
    direct = [r for r in recipients() if r.delivery == "direct"]
    saved = st.save_message(new_message(recipients=direct, expires_at=expires))  # as stored once
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"ATTACHMENT")
    clock.t += 2 * 86400
    assert st.purge_expired() == 0
    assert st.message(saved.id).revoked_at is None  # type: ignore[union-attr]
    stream = st.open_attachment(kept.id)
    assert stream is not None and stream.read() == b"ATTACHMENT"


def test_tokens_only_for_notification_recipients(st: Store) -> None:
    saved = st.save_message(new_message())
    assert set(saved.tokens) == {"bob@example.net", "carol@example.com", "dave@example.net"}
    assert "erin@example.org" not in saved.tokens
    assert "tokens=<3>" in repr(saved)
    for token in saved.tokens.values():
        assert token not in repr(saved)


def test_tokens_are_unique_and_long(st: Store) -> None:
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


def test_find_recipient_by_token(st: Store) -> None:
    saved = st.save_message(new_message())
    rec = st.find_recipient_by_token(saved.tokens["carol@example.com"])
    assert rec is not None
    assert rec.address == "carol@example.com"
    assert rec.message.id == saved.id
    assert rec.verification == "access_code"
    assert st.find_recipient_by_token("not-a-token") is None
    assert st.find_recipient_by_token(saved.tokens["carol@example.com"] + "x") is None
    assert PHONE not in repr(st.find_recipient_by_token(saved.tokens["bob@example.net"]))


def test_eight_threads_save_at_once(st: Store) -> None:
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


def test_a_right_answer_claimed_before_the_limit_still_counts(st: Store) -> None:
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


def test_answers_in_flight_at_once_cannot_pass_the_lockout(
    st: Store, reopen: Callable[..., Store], clock: Clock
) -> None:
    """Sixteen wrong answers at once, from two portal processes (two store objects on one
    database): only as many are compared as the lockout allows, the rest are refused."""
    stores = [st, reopen()]
    saved = stores[0].save_message(new_message(recipients=recipients()[:1]))
    (rec,) = [r for r in stores[0].recipients(saved.id) if r.delivery == "notification"]
    n = 16
    barrier = threading.Barrier(n)
    admitted: list[bool] = []
    errors: list[BaseException] = []

    def answer(i: int) -> None:
        s = stores[i % 2]
        try:
            barrier.wait()
            attempt = s.claim_attempt(rec.id, _lock_after_five, "access_code")
            admitted.append(attempt.admitted)
            if attempt.admitted:
                time.sleep(0.05)  # comparing (scrypt, argon2) takes about this long
                s.settle_attempt(attempt, False, "access_code")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert admitted.count(True) == defaults.LOCKOUT_AFTER
    events = [e.event for e in stores[0].events(saved.id)]
    assert events.count("verify-failed") == defaults.LOCKOUT_AFTER
    assert events.count("locked") == 1
    assert events.count("verify-while-locked") == n - defaults.LOCKOUT_AFTER
    after = stores[1].recipient(rec.id)
    assert after is not None and after.failed_attempts == defaults.LOCKOUT_AFTER
    assert after.locked_until is not None and after.locked_until.timestamp() == clock.t + 60
    assert not stores[0].claim_attempt(rec.id, _lock_after_five).admitted  # the right code too


def test_accounts(st: Store) -> None:
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


def test_sign_out_and_account_disable_move_the_session_generation_on(st: Store) -> None:
    saved = st.save_message(new_message())
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None and st.session_generation(rec.id) == 0
    st.end_sessions(rec.id, "signed out")
    assert st.session_generation(rec.id) == 1
    st.add_account("bob@example.net", "recipient", password_hash="$argon2id$x")
    assert st.session_generation(rec.id) == 1
    st.set_account_active("bob@example.net", True)  # switching on ends nothing
    assert st.session_generation(rec.id) == 1
    st.set_account_active("bob@example.net", False)
    assert st.session_generation(rec.id) == 2
    st.add_account("bob@example.net", "recipient", password_hash="$argon2id$y")  # a reset
    assert st.session_generation(rec.id) == 3
    st.end_account_sessions("bob@example.net", "signed out")  # the sender's side's sign-out
    assert st.session_generation(rec.id) == 4
    assert st.session_generation(rec.id + 1000) is None
    assert ("sessions-ended", "bob@example.net") in [
        (e.event, e.recipient) for e in st.events(saved.id)
    ]


def test_link_view_is_the_recipient_its_link_state_and_session_generation(st: Store) -> None:
    """The portal's one read per request behind a link: whatever moves, it agrees with the
    reads it stands for (with the view: five)."""
    saved = st.save_message(new_message())
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None

    def agrees() -> None:
        for with_view in (False, True):
            found = st.link_view(rec.id, with_view=with_view)
            assert found is not None
            assert found.recipient == st.recipient(rec.id)
            assert found.state == st.link_state(rec.id)
            assert found.generation == st.session_generation(rec.id)
            contact = st.contact(rec.address)
            assert found.language == (contact.language if contact is not None else None)
            assert found.view == (st.portal_view(saved.id) if with_view else None)

    agrees()
    st.save_portal_view(saved.id, b"the kept view")
    st.remember_language("Bob@Example.NET", "de")  # the contact book keys it normalized
    agrees()
    found = st.link_view(rec.id, with_view=True)
    assert found is not None and found.view == b"the kept view" and found.language == "de"
    found = st.link_view(rec.id)
    assert found is not None and found.recipient.phone == PHONE  # unsealed, as `recipient`
    assert st.claim_otp(rec.id, b"s" * 20, 0, 5) == 0
    st.settle_attempt(st.claim_attempt(rec.id, _lock_after_five), False)
    agrees()
    found = st.link_view(rec.id)
    assert found is not None and found.state.otp_sends == 1 and found.state.failed_streak == 1
    st.end_sessions(rec.id, "signed out")
    st.add_account("bob@example.net", "recipient", password_hash="$argon2id$x")
    st.set_account_active("bob@example.net", False)
    agrees()
    found = st.link_view(rec.id)
    assert found is not None and found.generation == 2  # the link's 1 and the account's 1
    assert st.revoke_recipient(saved.id, "bob@example.net", "test")
    agrees()
    found = st.link_view(rec.id)
    assert found is not None and found.state.revoked_at is not None
    assert st.revoke(saved.id, "test")
    agrees()
    found = st.link_view(rec.id, with_view=True)
    assert found is not None and found.view is None  # the message's key is gone
    assert st.link_view(rec.id + 1000) is None


def test_reply_usage_counts_a_link_and_its_address_over_a_window(st: Store, clock: Clock) -> None:
    first, second = st.save_message(new_message()), st.save_message(new_message())
    a = st.find_recipient_by_token(first.tokens["bob@example.net"])
    b = st.find_recipient_by_token(second.tokens["bob@example.net"])
    c = st.find_recipient_by_token(first.tokens["carol@example.com"])
    assert a is not None and b is not None and c is not None
    st.save_reply(a.id, b"x" * 100)
    clock.t += 60
    start = clock.t
    st.save_reply(a.id, b"y" * 10)
    st.save_reply(b.id, b"z" * 1000)
    st.save_reply(c.id, b"w" * 5)  # another address
    assert st.reply_usage(a.id, start - 3600) == ReplyUsage(2, 110, 3, 1110)
    assert st.reply_usage(a.id, start) == ReplyUsage(1, 10, 2, 1010)
    assert st.reply_usage(b.id, start) == ReplyUsage(1, 1000, 2, 1010)
    assert st.free_bytes() > 0


def test_only_one_authenticator_enrols_even_at_once(st: Store) -> None:
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


def test_contact_book_feeds_remembered_methods(st: Store) -> None:
    assert st.contact("bob@example.net") is None
    st.remember_contact("Bob@example.net", sms=PHONE)
    st.remember_contact("bob@example.net", access_code_hash=crypto.hash_secret(CODE))
    assert st.contact("bob@example.net") == Contact(sms=PHONE, access_code=True)
    # Rules 5/6: no number or code in the directive, the contact book supplies it.
    msg = new_message(
        recipients=[
            NewRecipient("bob@example.net", 1, "sms", "notification", "A5", verification="sms"),
        ]
    )
    saved = st.save_message(msg)
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None and rec.phone == PHONE
    msg2 = new_message(
        recipients=[
            NewRecipient(
                "bob@example.net",
                1,
                "access_code",
                "notification",
                "A6",
                verification="access_code",
            ),
        ]
    )
    saved2 = st.save_message(msg2)
    rec2 = st.find_recipient_by_token(saved2.tokens["bob@example.net"])
    assert rec2 is not None and rec2.access_code_hash is not None
    assert st.access_code_matches(rec2.access_code_hash, CODE)  # remembered before the pepper


def test_contact_book_remembers_the_language_chosen_in_the_portal(st: Store) -> None:
    # Issue 25: the recipient's choice, for the next notification to them; not a method.
    st.remember_language("Dora@example.net", "de")
    assert st.contact("dora@example.net") == Contact(language="de")
    assert [e.used_at for e in st.contacts() if e.address == "dora@example.net"] == [None]
    st.remember_contact("dora@example.net", sms=PHONE)
    st.remember_language("dora@example.net", "nl")
    assert st.contact("dora@example.net") == Contact(sms=PHONE, language="nl")
    # a language alone is no remembered number (rule 5): the message still needs one
    msg = new_message(
        recipients=[NewRecipient("x@example.net", 1, "sms", "notification", "A5", None, "sms")]
    )
    st.remember_language("x@example.net", "de")
    with pytest.raises(StoreError):
        st.save_message(msg)
    assert st.forget_contact("dora@example.net")
    assert st.contact("dora@example.net") is None


def test_remembered_method_without_contact_is_an_error(st: Store) -> None:
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
def test_inconsistent_recipient_is_refused(st: Store, bad: NewRecipient) -> None:
    with pytest.raises(ValueError):
        st.save_message(new_message(recipients=[bad]))


def test_audit_export_filters_by_time_and_message(st: Store, clock: Clock) -> None:
    # `zivmilter audit export --since DATE --message ID`: oldest first, through the store alone.
    st.record_event("first", "m-1", "a@x.example", "one")
    clock.t += 3600
    cut = datetime.fromtimestamp(clock.t, UTC)
    st.record_event("second", "m-2", None, "two")
    st.record_event("third", "m-1", "b@x.example", "three")
    everything = [e.event for e in st.export_events()]
    assert everything[-3:] == ["first", "second", "third"]
    assert [e.event for e in st.export_events(since=cut)] == ["second", "third"]
    assert [e.event for e in st.export_events(message_id="m-1")] == ["first", "third"]
    assert [e.detail for e in st.export_events(since=cut, message_id="m-1")] == ["three"]
