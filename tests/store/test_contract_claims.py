"""The store's contract for claims on shared download links (issue 15 item 12): a claim's code
opens that claim only, a wrong streak locks that claim only and spends its code, and an
address's codes (and account answer rounds) per hour are capped over all its claims.

Written against the `Store` protocol only: every backend in tests/store/conftest.py runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tests.store.common import Clock
from zivmilter import defaults
from zivmilter.portal import verify
from zivmilter.store import NewMessage, NewRecipient, Store

ADDRESS = "dan@partner.example"


def shared(st: Store) -> tuple[str, int]:
    """A direct copy's large attachment: (attachment id, dan's recipient id)."""
    saved = st.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="Scan",
            content=b"Subject: Scan\r\n\r\nsee the link\r\n",
            recipients=[NewRecipient(ADDRESS, 1, "x", "direct", "B3", level="pkix")],
        )
    )
    (rec,) = st.recipients(saved.id)
    att = st.save_attachment(saved.id, "scan.bin", "application/octet-stream", b"x" * 99)
    return att.id, rec.id


def issue(st: Store, claim_id: int, per_hour: int = 10) -> str | None:
    """Ask for the claim's code (no resend interval in the way): the code, or None if refused."""
    if st.issue_claim_code(claim_id, verify.new_otp_secret(), 0, 10, per_hour) != 0.0:
        return None
    state = st.claim_code(claim_id)
    assert state is not None
    return verify.otp_code(state.secret, state.sent_at)


def answer(code: str, clock: Clock) -> Callable[[bytes, datetime], bool]:
    return lambda secret, sent_at: verify.otp_valid(secret, sent_at, code, clock())


def lock_after_five(streak: int, lockouts: int) -> float | None:
    return verify.lockout_seconds(streak, lockouts)


def try_code(st: Store, claim_id: int, code: str, clock: Clock) -> bool | None:
    """One answer as the portal gives it: None when the claim is locked, else whether it was
    right."""
    attempt = st.claim_answer(claim_id, lock_after_five, funded=False, per_hour=10)
    if not attempt.admitted:
        return None
    ok = attempt.compare and st.consume_claim_code(claim_id, answer(code, clock))
    st.settle_claim_answer(attempt, ok)
    return ok


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_a_code_opens_only_the_claim_it_was_issued_to(st: Store, clock: Clock) -> None:
    aid, rid = shared(st)
    mine, theirs = st.open_claim(aid, ADDRESS, rid), st.open_claim(aid, ADDRESS, rid)
    code = issue(st, mine)
    assert code is not None
    assert try_code(st, theirs, code, clock) is False
    assert try_code(st, mine, code, clock) is True
    assert try_code(st, mine, code, clock) is False  # spent
    claim = st.claim(mine)
    assert claim is not None and claim.address == ADDRESS and claim.recipient_id == rid
    assert claim.attachment_id == aid and claim.locked_until is None
    stranger = st.claim(st.open_claim(aid, "mallory@evil.example", None))
    assert stranger is not None and stranger.recipient_id is None


def test_a_wrong_streak_locks_its_own_claim_only_and_spends_its_code(
    st: Store, clock: Clock
) -> None:
    aid, rid = shared(st)
    attacker, owner = st.open_claim(aid, ADDRESS, rid), st.open_claim(aid, ADDRESS, rid)
    bait = issue(st, attacker)
    assert bait is not None
    for _ in range(defaults.LOCKOUT_AFTER):
        assert try_code(st, attacker, wrong(bait), clock) is False
    locked = st.claim(attacker)
    assert locked is not None and locked.locked_until is not None
    assert try_code(st, attacker, bait, clock) is None  # locked: not even compared
    code = issue(st, owner)
    assert code is not None and try_code(st, owner, code, clock) is True
    clock.t += defaults.LOCKOUT_BASE_SECONDS + 1
    assert try_code(st, attacker, bait, clock) is False  # its code went with the lock
    events = [e.event for e in st.events(st.recipient(rid).message.id)]  # type: ignore[union-attr]
    assert events.count("locked") == 1 and "verify-while-locked" in events


def test_an_address_gets_so_many_codes_an_hour_over_all_claims(st: Store, clock: Clock) -> None:
    aid, rid = shared(st)
    claims = [st.open_claim(aid, ADDRESS, rid) for _ in range(4)]
    assert [issue(st, c, per_hour=3) is not None for c in claims] == [True, True, True, False]
    other = st.open_claim(aid, "eve@partner.example", None)
    assert issue(st, other, per_hour=3) is not None  # another address has its own budget
    clock.t += 3601
    assert issue(st, claims[3], per_hour=3) is not None


def test_account_answer_rounds_take_a_share_of_the_address_budget(st: Store, clock: Clock) -> None:
    aid, rid = shared(st)
    first, second = st.open_claim(aid, ADDRESS, rid), st.open_claim(aid, ADDRESS, rid)

    def account(claim_id: int) -> bool:
        attempt = st.claim_answer(claim_id, lock_after_five, funded=True, per_hour=1)
        assert attempt.admitted
        st.settle_claim_answer(attempt, False)
        return attempt.compare

    assert account(first) and account(first)  # one share for the whole round
    assert not account(second)  # none left this hour: counted, not compared
    for _ in range(defaults.LOCKOUT_AFTER - 2):
        account(first)
    clock.t += defaults.LOCKOUT_BASE_SECONDS + 1
    assert not account(first)  # the lock ended its round; a new one needs a new share
    clock.t += 3601
    assert account(second)


def test_a_claims_codes_wait_their_interval_and_end_at_their_cap(st: Store, clock: Clock) -> None:
    aid, rid = shared(st)
    claim = st.open_claim(aid, ADDRESS, rid)

    def ask() -> float:
        return st.issue_claim_code(claim, verify.new_otp_secret(), 60, 2, 10)

    assert ask() == 0.0
    clock.t += 20
    assert ask() == 40.0  # the rest of the interval since the last code
    assert st.claim_code(claim) is not None
    clock.t += 40
    assert ask() == 0.0
    clock.t += 600
    assert ask() == float("inf")  # two codes in all for this claim
    st.drop_claim_code(claim)  # sending the last one failed: its slot comes back
    assert st.claim_code(claim) is None
    assert ask() == 0.0
    other = st.open_claim(aid, ADDRESS, rid)  # the same address's other claim: limits of its own
    assert st.issue_claim_code(other, verify.new_otp_secret(), 60, 2, 10) == 0.0
