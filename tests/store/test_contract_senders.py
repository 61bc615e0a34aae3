"""The store contract for the sender's side of the portal (issue 19): invitations, the sign-in
lockout of sender accounts, sent items, expiry and read receipts; through `Store` only."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.store.common import Clock, _lock_after_five, new_message
from zivmilter import crypto, defaults
from zivmilter.store import NewRecipient, Store


def test_an_invitation_enrols_once_and_only_an_active_sender(st: Store, clock: Clock) -> None:
    assert st.add_invite("alice@example.org", 3600) is None  # no account
    st.add_account("bob@example.net", "recipient")
    assert st.add_invite("bob@example.net", 3600) is None  # not a sender
    st.add_account("Alice@Example.ORG", "sender")
    first = st.add_invite("alice@example.org", 3600)
    token = st.add_invite("alice@example.org", 3600)
    assert first is not None and token is not None and len(token) >= 22
    assert st.invite_address(crypto.token_hash(first)) is None  # a new one ends the old one
    digest = crypto.token_hash(token)
    assert st.invite_address(digest) == "alice@example.org"
    assert st.redeem_invite(digest, "$argon2id$x", b"S" * 20, 7) == "alice@example.org"
    acct = st.account("alice@example.org")
    assert acct is not None and acct.kind == "sender" and acct.password_hash == "$argon2id$x"
    assert acct.has_totp and st.totp_secret("alice@example.org") == b"S" * 20
    assert not st.use_totp_step("alice@example.org", 7)  # the confirming code is spent
    assert st.redeem_invite(digest, "$argon2id$y", b"T" * 20, 8) is None  # once
    assert st.invite_address(digest) is None

    late = st.add_invite("alice@example.org", 3600)
    assert late is not None
    clock.t += 3601
    assert st.redeem_invite(crypto.token_hash(late), "$argon2id$y", b"T" * 20, 9) is None
    off = st.add_invite("alice@example.org", 3600)
    assert off is not None
    st.set_account_active("alice@example.org", False)
    assert st.invite_address(crypto.token_hash(off)) is None


def test_sign_out_and_a_new_enrolment_end_the_account_s_sessions(st: Store) -> None:
    st.add_account("alice@example.org", "sender")
    acct = st.account("alice@example.org")
    assert acct is not None and acct.session_gen == 0
    assert st.end_account_sessions("Alice@Example.ORG", "signed out")
    assert st.account("alice@example.org").session_gen == 1  # type: ignore[union-attr]
    token = st.add_invite("alice@example.org", 3600)
    assert token is not None
    assert st.redeem_invite(crypto.token_hash(token), "$argon2id$x", b"S" * 20, 7)
    assert st.account("alice@example.org").session_gen == 2  # type: ignore[union-attr]
    assert not st.end_account_sessions("nobody@example.org")
    ended = [e for e in st.export_events() if e.event == "sessions-ended"]
    assert [(e.recipient, e.detail) for e in ended] == [("alice@example.org", "signed out")]


@pytest.mark.parametrize("address", ["alice@example.org", "nobody@example.org"])
def test_sign_ins_in_flight_at_once_cannot_pass_the_lockout(st: Store, address: str) -> None:
    """Also for an address without an account: its own row counts them one after the other."""
    st.add_account("alice@example.org", "sender")
    barrier = threading.Barrier(8)
    admitted: list[bool] = []

    def claim() -> None:
        barrier.wait()
        admitted.append(st.claim_sign_in(address, _lock_after_five).admitted)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert admitted.count(True) == 5, "the fifth claim locks; the others are refused"
    refused = st.claim_sign_in(address, _lock_after_five)
    assert not refused.admitted and refused.locked_until is not None


def test_a_right_sign_in_clears_the_streak(st: Store, clock: Clock) -> None:
    st.add_account("alice@example.org", "sender")
    for _ in range(4):
        st.settle_sign_in(st.claim_sign_in("alice@example.org", _lock_after_five), False)
    last = st.claim_sign_in("alice@example.org", _lock_after_five)  # locks while in flight
    assert last.admitted and last.locked_until is not None
    assert not st.claim_sign_in("alice@example.org", _lock_after_five).admitted
    assert st.settle_sign_in(last, True) is None  # right after all: its own lock is lifted
    for _ in range(4):  # a new streak of four does not lock
        attempt = st.claim_sign_in("alice@example.org", _lock_after_five)
        assert attempt.admitted and st.settle_sign_in(attempt, False) is None
    unknown = st.claim_sign_in("nobody@example.org", _lock_after_five)
    assert unknown.admitted and unknown.counted  # counted as an account's (see below)


def _six_wrong(st: Store, address: str) -> list[tuple[bool, object, object]]:
    seen = []
    for _ in range(6):
        attempt = st.claim_sign_in(address, _lock_after_five)
        seen.append((attempt.admitted, attempt.locked_until, st.settle_sign_in(attempt, False)))
    return seen


def test_an_address_without_a_sender_account_locks_as_an_account_does(
    st: Store, clock: Clock
) -> None:
    """The lockout does not tell whether a sender account exists: no account, a recipient's
    account and a sender account switched off count, lock and double their locks as an active
    sender account does; and none of them gets an account, an audit line or a row naming it."""
    st.add_account("alice@example.org", "sender")
    st.add_account("bob@example.net", "recipient")
    st.add_account("carol@example.org", "sender")
    st.set_account_active("carol@example.org", False)
    others = ["nobody@example.org", "Nobody2@Example.ORG", "bob@example.net", "carol@example.org"]
    events_before = list(st.export_events())
    known = _six_wrong(st, "alice@example.org")
    first_lock = clock.t + 60
    assert [(a, u is not None, s is not None) for a, u, s in known] == (
        [(True, False, False)] * 4 + [(True, True, True), (False, True, True)]
    )
    assert known[4][2] == known[5][2] == datetime.fromtimestamp(first_lock, UTC)
    for address in others:
        assert _six_wrong(st, address) == known, address
    clock.t += 61  # every lock has passed: the next five lock for twice as long
    known = _six_wrong(st, "alice@example.org")
    assert known[4][2] == datetime.fromtimestamp(clock.t + 120, UTC)
    for address in others:
        assert _six_wrong(st, address) == known, address
    assert st.account("nobody@example.org") is None and st.account("nobody2@example.org") is None
    assert st.account("carol@example.org").active is False  # type: ignore[union-attr]
    new_events = list(st.export_events())[len(events_before) :]
    assert all(e.recipient == "alice@example.org" for e in new_events), new_events


def test_maintenance_forgets_the_counts_of_addresses_without_an_account(
    st: Store, clock: Clock
) -> None:
    """Once a week has passed since the last wrong sign-in, and no lock holds; an account's
    own counters stay."""
    st.add_account("alice@example.org", "sender")
    for address in ("nobody@example.org", "alice@example.org"):
        for _ in range(4):
            st.settle_sign_in(st.claim_sign_in(address, _lock_after_five), False)
    clock.t += defaults.SIGN_IN_COUNT_KEEP_SECONDS - 1
    assert st.prune_sign_in_counts() == 0  # its last wrong sign-in is not a week old yet
    clock.t += 1
    assert st.prune_sign_in_counts() == 1
    assert st.prune_sign_in_counts() == 0
    fifth = st.claim_sign_in("alice@example.org", _lock_after_five)
    assert fifth.locked_until is not None  # the account's streak stays
    for _ in range(4):  # the other starts afresh
        attempt = st.claim_sign_in("nobody@example.org", _lock_after_five)
        assert attempt.admitted and st.settle_sign_in(attempt, False) is None
    locking = st.claim_sign_in("nobody@example.org", _lock_after_five)
    assert locking.locked_until is not None
    assert st.prune_sign_in_counts(keep=0) == 0  # a lock in force is kept
    clock.t += 61
    assert st.prune_sign_in_counts(keep=0) == 1
    assert st.claim_sign_in("nobody@example.org", _lock_after_five).admitted


def test_sent_items_newest_first_paged_searched_and_only_the_senders(
    st: Store, clock: Clock
) -> None:
    ids = []
    for n in range(5):
        clock.t += 60
        to = NewRecipient(
            f"r{n}@partner.example", 1, "email", "notification", "A7", verification="email"
        )
        saved = st.save_message(new_message(subject=f"Results {n}", recipients=[to]))
        ids.append(saved.id)
    other = st.save_message(new_message(sender="mallory@example.org", subject="Results 9"))
    page = st.sent_messages(["alice@example.org"], offset=0, limit=2)
    assert page.total == 5 and [m.id for m in page.messages] == ids[::-1][:2]
    assert [m.id for m in st.sent_messages(["ALICE@example.org"], offset=4).messages] == ids[:1]
    assert [m.subject for m in st.sent_messages(["alice@example.org"], "results 3").messages] == [
        "Results 3"
    ]
    by_rcpt = st.sent_messages(["alice@example.org"], "R1@PARTNER")
    assert by_rcpt.total == 1 and by_rcpt.messages[0].id == ids[1]
    found = st.sent_messages(["alice@example.org"], "results", offset=1, limit=2)
    assert found.total == 5 and [m.id for m in found.messages] == ids[::-1][1:3]
    assert other.id not in {m.id for m in st.sent_messages(["alice@example.org"]).messages}
    assert st.sent_messages([]).total == 0


def test_expiry_is_set_only_while_a_notification_link_is_open(st: Store, clock: Clock) -> None:
    saved = st.save_message(new_message())
    when = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=3)
    assert st.set_expiry(saved.id, when, "by the sender")
    msg = st.message(saved.id)
    assert msg is not None and msg.expires_at == when.replace(microsecond=0)
    direct = st.save_message(
        new_message(recipients=[NewRecipient("x@example.net", 1, "transport", "direct", "A4")])
    )
    assert not st.set_expiry(direct.id, when)
    clock.t += 3 * 24 * 3600  # expired, not yet purged: final all the same
    assert not st.set_expiry(saved.id, when + timedelta(days=30))
    msg = st.message(saved.id)
    assert msg is not None and msg.expires_at == when.replace(microsecond=0)
    st.revoke(saved.id)
    assert not st.set_expiry(saved.id, when)
    assert [e.event for e in st.events(saved.id)].count("expiry-set") == 1


def test_a_read_receipt_is_claimed_once(st: Store) -> None:
    saved = st.save_message(new_message())
    rid = st.recipients(saved.id)[0].id
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        results.append(st.claim_read_receipt(rid))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 1


def test_an_invitation_redeemed_at_once_enrols_one_caller(st: Store) -> None:
    st.add_account("alice@example.org", "sender")
    token = st.add_invite("alice@example.org", 3600)
    assert token is not None
    digest = crypto.token_hash(token)
    barrier = threading.Barrier(4)
    results: list[str | None] = []

    def redeem(n: int) -> None:
        barrier.wait()
        results.append(st.redeem_invite(digest, f"$argon2id${n}", bytes([65 + n]) * 20, n))

    threads = [threading.Thread(target=redeem, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count("alice@example.org") == 1 and results.count(None) == 3
    acct = st.account("alice@example.org")
    assert acct is not None and acct.password_hash is not None
    winner = int(acct.password_hash.rsplit("$", 1)[1])  # password and secret of one caller
    assert st.totp_secret("alice@example.org") == bytes([65 + winner]) * 20
