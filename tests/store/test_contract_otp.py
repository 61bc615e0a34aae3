"""The store's contract for one-time codes (issue 24): a code is compared and consumed in one
step, so it lets exactly one answer in, however many sessions, threads or processes race.

The other check-then-acts on the portal's path that the store decides are here too (an open
racing a revocation).

Written against the `Store` protocol only, so every backend in tests/store/conftest.py's BACKENDS
runs it (opened twice on one place, a backend gives further handles on the same store, as other
portal processes would hold).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

from tests.store.common import Clock
from tests.store.conftest import BACKENDS, backend_params
from zivmilter import defaults
from zivmilter.portal import verify
from zivmilter.store import NewMessage, NewRecipient, Store

RACERS = 8


class Backend:
    """Opens handles on one store: the first for the test, more for racing threads."""

    def __init__(self, kind: str, tmp: Path, clock: Clock) -> None:
        self.kind, self.tmp, self.clock = kind, tmp, clock
        self.kek = os.urandom(32)

    def open(self) -> Store:
        return BACKENDS[self.kind](self.tmp, self.kek, self.clock)


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Backend:
    return Backend(request.param, tmp_path, clock)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


def link(store: Store) -> tuple[str, int]:
    """A stored message with one recipient who verifies by email: (message id, recipient id)."""
    saved = store.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="Lab results",
            content=b"Subject: Lab results\r\n\r\nthe results\r\n",
            recipients=[
                NewRecipient("sam@example.org", 1, "x", "notification", "A7", verification="email")
            ],
        )
    )
    (rec,) = store.recipients(saved.id)
    return saved.id, rec.id


def issue(store: Store, rid: int) -> str:
    """Ask for a code (no rate limit in the way) and return it as the recipient receives it."""
    assert store.claim_otp(rid, verify.new_otp_secret(), 0, defaults.OTP_MAX_SENDS) == 0.0
    state = store.otp(rid)
    assert state is not None
    return verify.otp_code(state.secret, state.sent_at)


def answer(code: str, clock: Clock) -> Callable[[bytes, datetime], bool]:
    return lambda secret, sent_at: verify.otp_valid(secret, sent_at, code, clock())


def verified(store: Store, mid: str) -> int:
    return [e.event for e in store.events(mid)].count("verified")


def test_the_right_code_works_once(store: Store, clock: Clock) -> None:
    mid, rid = link(store)
    code = issue(store, rid)
    assert store.consume_otp(rid, answer(code, clock), "email")
    assert not store.consume_otp(rid, answer(code, clock), "email"), "a used code never again"
    assert store.otp(rid) is None
    assert verified(store, mid) == 1
    state = store.link_state(rid)
    assert state is not None and state.otp_sends == 0 and state.failed_streak == 0


def test_a_wrong_code_consumes_nothing(store: Store, clock: Clock) -> None:
    mid, rid = link(store)
    code = issue(store, rid)
    wrong = f"{(int(code) + 1) % 10**defaults.OTP_DIGITS:0{defaults.OTP_DIGITS}d}"
    assert not store.consume_otp(rid, answer(wrong, clock), "email")
    assert verified(store, mid) == 0
    assert store.consume_otp(rid, answer(code, clock), "email")  # the right one still works


def test_a_new_code_voids_the_old_one(store: Store, clock: Clock) -> None:
    mid, rid = link(store)
    old = issue(store, rid)
    clock.t += 1
    new = issue(store, rid)
    if old != new:  # one in a million: the two codes happen to be equal
        assert not store.consume_otp(rid, answer(old, clock), "email")
    assert store.consume_otp(rid, answer(new, clock), "email")
    assert verified(store, mid) == 1


def test_an_expired_code_does_not_work(store: Store, clock: Clock) -> None:
    _, rid = link(store)
    code = issue(store, rid)
    clock.t += defaults.OTP_VALIDITY_SECONDS + 1
    assert not store.consume_otp(rid, answer(code, clock), "email")


def test_no_code_works_after_its_link_is_revoked(store: Store, clock: Clock) -> None:
    mid, rid = link(store)
    code = issue(store, rid)
    assert store.revoke_recipient(mid, "sam@example.org", "test")
    assert not store.consume_otp(rid, answer(code, clock), "email")
    assert verified(store, mid) == 0
    assert not store.consume_otp(rid + 1000, answer(code, clock), "email")  # no such link


def race(backend: Backend, rid: int, check: Callable[[bytes, datetime], bool]) -> list[bool]:
    """RACERS threads consume with the same answer, each with its own handle on the store (as
    separate portal processes would be), released together by a barrier."""
    barrier = threading.Barrier(RACERS)
    won: list[bool] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with closing(backend.open()) as mine:
                barrier.wait()
                won.append(mine.consume_otp(rid, check, "email"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return won


def test_racing_consumers_of_one_code_let_exactly_one_in(
    store: Store, backend: Backend, clock: Clock
) -> None:
    for _ in range(3):
        mid, rid = link(store)
        code = issue(store, rid)
        won = race(backend, rid, answer(code, clock))
        assert sorted(won) == [False] * (RACERS - 1) + [True]
        assert verified(store, mid) == 1


# --- other check-then-acts on the portal's path ------------------------------------------------


def test_an_open_after_the_revocation_is_refused_and_not_logged(store: Store) -> None:
    """The open is checked against the revocation in its own transaction: a page that read the
    message just before a revoke committed is refused, so no open follows `revoked` in the log."""
    mid, rid = link(store)
    assert store.mark_opened(rid)
    assert store.revoke(mid, "test")
    assert not store.mark_opened(rid)
    events = [e.event for e in store.events(mid)]
    assert events.count("opened") == 1
    assert events.index("opened") < events.index("revoked")
    assert not store.mark_opened(rid + 1000)  # no such link
