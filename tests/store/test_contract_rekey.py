"""Key rotation through `Store` (store/rekey.py), on every backend: a store opened with a key ring
reads what each of its keys wrapped, `rekey_batch` moves everything onto the current key, and
then the old key can go: everything still opens under the new key alone."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.store.common import CODE, MARK_SUBJECT, PHONE, new_message, raw_message
from zivmilter import crypto
from zivmilter.errors import StoreError
from zivmilter.store import Store


def _everything(st: Store) -> tuple[str, int, int]:
    """A message (sms and access-code recipients), an enrolled account, a contact (a number
    and a remembered access code), a one-time code secret and a shared download link's code,
    all under `st`'s current key."""
    saved = st.save_message(new_message())
    st.add_account("erin@example.net", "recipient", password_hash="$argon2id$x")
    assert st.enrol_totp("erin@example.net", b"T" * 20)
    carol = st.find_recipient_by_token(saved.tokens["carol@example.com"])
    assert carol is not None
    st.remember_contact("frank@example.net", sms=PHONE, access_code_hash=carol.access_code_hash)
    bob = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert bob is not None
    st.claim_otp(bob.id, b"O" * 20, 0.0, 5)
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"%PDF" * 100)
    claim = st.open_claim(kept.id, "dan@partner.example", None)
    assert st.issue_claim_code(claim, b"S" * 20, 0, 10, 1) == 0.0
    return saved.id, bob.id, claim


def test_rekey_moves_everything_to_the_new_key(reopen: Callable[..., Store], kek: bytes) -> None:
    old, new = kek, os.urandom(32)
    before = reopen(kek=old)
    message_id, bob_id, claim = _everything(before)
    saved_before = before.save_message(new_message(rfc822_id="<m2@example.org>"))
    before.close()

    ring = reopen(kek=new, previous=(old,))
    usage = ring.key_usage()
    old_id, new_id = crypto.key_id(old).hex(), crypto.key_id(new).hex()
    assert usage.current == new_id and usage.ring == (new_id, old_id)
    assert usage.counts["message keys"] == {old_id: 2}
    assert usage.counts["authenticator secrets"] == {old_id: 1}
    # Stored mid-rotation: under the new key at once, and both still open.
    during = ring.save_message(new_message(rfc822_id="<m3@example.org>"))
    assert ring.key_usage().counts["message keys"] == {old_id: 2, new_id: 1}

    rewritten = []
    while n := ring.rekey_batch(2):  # small batches: resumable, each its own transaction
        rewritten.append(n)
    # two message keys, an attachment key, totp, contact, otp secret, download code
    assert sum(rewritten) == 2 + 1 + 1 + 1 + 1 + 1
    usage = ring.key_usage()
    assert usage.counts["message keys"] == {new_id: 3}
    for kind in (
        "attachment keys", "authenticator secrets", "contact numbers", "one-time code secrets",
        "download codes",
    ):  # fmt: skip
        assert usage.counts[kind] == {new_id: 1}, kind
    # The access codes cannot be re-peppered without the codes: the old key's pepper was
    # carried over, sealed under the new key, so they now depend on the new key alone.
    assert usage.counts["access-code peppers"] == {new_id: 1}
    assert usage.counts["access codes"] == {new_id: 3}
    assert usage.counts["remembered access codes"] == {new_id: 1}
    assert usage.depending_on_others() == 0
    assert ring.rekey_batch(10) == 0  # nothing left: a second run is a no-op

    # The old key retired: everything but those access codes opens under the new key alone.
    after = reopen(kek=new)
    tokens_before = saved_before.tokens
    for saved in (saved_before, during):
        content = after.open_content(saved.id)
        assert content is not None and content.read() == raw_message()
    first = after.recipients(message_id)
    assert {r.address for r in first} >= {"bob@example.net", "carol@example.com"}
    bob = next(r for r in first if r.address == "bob@example.net")
    assert bob.phone == PHONE
    assert after.totp_secret("erin@example.net") == b"T" * 20
    contact = after.contact("frank@example.net")
    assert contact is not None and contact.sms == PHONE
    otp = after.otp(bob_id)
    assert otp is not None and otp.secret == b"O" * 20
    content = after.open_content(message_id)
    assert content is not None and content.read() == raw_message()
    record = after.message(message_id)
    assert record is not None and record.subject is not None
    assert record.subject.startswith(MARK_SUBJECT)
    carol = after.find_recipient_by_token(tokens_before["carol@example.com"])
    assert carol is not None and carol.access_code_hash is not None
    assert ring.access_code_matches(carol.access_code_hash, CODE)  # with the ring: yes
    # Without the old key too, through its carried pepper (and only with the right code).
    assert after.access_code_matches(carol.access_code_hash, CODE)
    assert not after.access_code_matches(carol.access_code_hash, "W" + CODE[1:])
    remembered = after.contact("frank@example.net")
    assert remembered is not None and remembered.access_code
    code = after.claim_code(claim)
    assert code is not None and code.secret == b"S" * 20
    # And the old key alone no longer opens the store.
    with pytest.raises(StoreError, match="wrong key-encryption key"):
        reopen(kek=old)


def test_a_second_rotation_carries_the_first_keys_pepper_along(
    reopen: Callable[..., Store], kek: bytes
) -> None:
    first, second, third = kek, os.urandom(32), os.urandom(32)
    st = reopen(kek=first)
    saved = st.save_message(new_message())
    st.close()
    ring = reopen(kek=second, previous=(first,))
    while ring.rekey_batch(100):
        pass
    ring.close()
    # The first key is gone; the second is retired in its turn: the carried pepper is resealed.
    ring = reopen(kek=third, previous=(second,))
    before = ring.key_usage()
    second_id, third_id = crypto.key_id(second).hex(), crypto.key_id(third).hex()
    assert before.counts["access codes"] == {second_id: 1}
    assert before.depending_on_others() > 0  # `status --keys`: the second key is still needed
    while ring.rekey_batch(100):
        pass
    usage = ring.key_usage()
    assert usage.counts["access-code peppers"] == {third_id: 2}
    assert usage.counts["access codes"] == {third_id: 1}
    assert usage.depending_on_others() == 0
    after = reopen(kek=third)
    carol = after.find_recipient_by_token(saved.tokens["carol@example.com"])
    assert carol is not None and carol.access_code_hash is not None
    assert after.access_code_matches(carol.access_code_hash, CODE)


def test_before_rekey_status_counts_every_access_code_under_the_old_key(
    reopen: Callable[..., Store], kek: bytes
) -> None:
    old, new = kek, os.urandom(32)
    st = reopen(kek=old)
    saved = st.save_message(new_message())
    st.close()
    ring = reopen(kek=new, previous=(old,))
    # Before `rekey`: `status --keys` says the old key is still needed, for all of it.
    usage = ring.key_usage()
    assert usage.counts["access codes"] == {crypto.key_id(old).hex(): 1}
    assert usage.depending_on_others() > 0
    carol = ring.find_recipient_by_token(saved.tokens["carol@example.com"])
    assert carol is not None and carol.access_code_hash is not None
    assert ring.access_code_matches(carol.access_code_hash, CODE)
    ring.close()
    with pytest.raises(StoreError, match="wrong key-encryption key"):
        reopen(kek=new)  # retired too early: the store says so at once


def test_a_new_store_records_its_key(reopen: Callable[..., Store], kek: bytes) -> None:
    st = reopen()
    st.save_message(new_message())
    usage = st.key_usage()
    assert usage.ring == (crypto.key_id(kek).hex(),)
    assert usage.depending_on_others() == 0
    assert st.rekey_batch(100) == 0
