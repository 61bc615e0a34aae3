"""The store contract under concurrency: check-then-acts that hold however many handles race
(each handle is what another portal or maintenance process, on this node or another, holds).

Every backend in BACKENDS runs these; on PostgreSQL the handles have connection pools of their
own, as separate nodes would, so the locking each method's docstring states is what is tested.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.harness.postfix import free_port
from tests.harness.sink import Sink
from tests.store.common import Clock, _lock_after_five
from tests.store.conftest import backend_params
from tests.store.test_contract_otp import Backend
from zivmilter import defaults
from zivmilter.delivery.reinject import SmtpReinjector
from zivmilter.delivery.replies import resend_replies
from zivmilter.store import NewMessage, NewRecipient, Store

RACERS = 8
T = TypeVar("T")


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Backend:
    return Backend(request.param, tmp_path, clock)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


def together(backend: Backend, jobs: list[Callable[[Store], T]]) -> list[T]:
    """Run each job on a handle of its own, released together by a barrier."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with closing(backend.open()) as mine:
                barrier.wait()
                results[i] = jobs[i](mine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def message(store: Store, *addresses: str, expires: datetime | None = None) -> str:
    saved = store.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="Lab results",
            content=b"Subject: Lab results\r\n\r\nthe results\r\n",
            recipients=[
                NewRecipient(a, 1, "x", "notification", "A7", verification="email")
                for a in addresses
            ],
            expires_at=expires,
        )
    )
    return saved.id


def test_wrong_answers_at_once_still_lock_after_the_limit(store: Store, backend: Backend) -> None:
    """Twice the limit of wrong answers, from as many handles at once, wrongly settled: exactly
    `LOCKOUT_AFTER` are admitted, the last of them locks the link, the rest are refused."""
    mid = message(store, "sam@example.org")
    (rec,) = store.recipients(mid)

    def wrong(s: Store) -> bool:
        attempt = s.claim_attempt(rec.id, _lock_after_five, "test")
        s.settle_attempt(attempt, False, "test")
        return attempt.admitted

    admitted = together(backend, [wrong] * (2 * defaults.LOCKOUT_AFTER))
    assert admitted.count(True) == defaults.LOCKOUT_AFTER
    after = store.recipient(rec.id)
    assert after is not None and after.lockouts == 1 and after.locked_until is not None
    assert after.failed_attempts == defaults.LOCKOUT_AFTER
    events = [e.event for e in store.events(mid)]
    assert events.count("verify-failed") == defaults.LOCKOUT_AFTER
    assert events.count("locked") == 1
    assert events.count("verify-while-locked") == defaults.LOCKOUT_AFTER


def test_revoking_the_last_two_links_at_once_revokes_the_message(
    store: Store, backend: Backend
) -> None:
    for _ in range(3):
        mid = message(store, "sam@example.org", "kim@example.org")
        done = together(
            backend,
            [
                lambda s, m=mid, a=a: s.revoke_recipient(m, a, "test")  # type: ignore[misc]
                for a in ("sam@example.org", "kim@example.org")
            ],
        )
        assert done == [True, True]
        msg = store.message(mid)
        assert msg is not None and msg.revoked_at is not None
        assert store.open_content(mid) is None
        assert [e.event for e in store.events(mid)].count("revoked") == 3  # 2 links, 1 message


def test_two_maintenance_runs_at_once_expire_each_message_once(
    store: Store, backend: Backend, clock: Clock
) -> None:
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=1)
    ids = [message(store, f"r{n}@example.org", expires=expires) for n in range(6)]
    clock.t += 2 * 86400
    counts = together(backend, [lambda s: s.purge_expired()] * 2)
    assert sum(counts) == len(ids)
    for mid in ids:
        events = [e.event for e in store.events(mid)]
        assert events.count("revoked") == 1
    assert store.purge_expired() == 0


def test_the_housekeeping_lock_is_held_by_one_handle_at_a_time(
    store: Store, backend: Backend
) -> None:
    """What another node's maintenance run sees: refused at once while one holds the lock,
    granted as soon as it is let go (and after a run that failed inside it)."""
    with closing(backend.open()) as other:
        with store.housekeeping_lock() as first:
            assert first
            with other.housekeeping_lock() as second:
                assert not second
        with other.housekeeping_lock() as second:
            assert second
        with pytest.raises(RuntimeError), store.housekeeping_lock() as again:
            assert again
            raise RuntimeError("a run that fails")
        with other.housekeeping_lock() as after:
            assert after


def test_maintenance_runs_at_once_hand_each_reply_over_once(store: Store, backend: Backend) -> None:
    """Four runs at once, on handles of their own (as on four nodes), each handing the unsent
    replies over under the housekeeping lock: the MTA gets every reply exactly once."""
    mids = [message(store, f"r{n}@example.org") for n in range(6)]
    for n, mid in enumerate(mids):
        (rec,) = store.recipients(mid)
        store.save_reply(rec.id, f"Subject: reply {n}\r\n\r\nthanks {n}\r\n".encode())
    port = free_port()

    def run(s: Store) -> int:
        with s.housekeeping_lock() as ours:
            if not ours:
                return 0
            mailer = SmtpReinjector("127.0.0.1", port, 10.0)
            done = resend_replies(
                s, mailer, "portal@hospital.example", older_than=0, retry_refused=False
            )
            return done.sent

    with Sink("127.0.0.1", port) as mta:
        sent = together(backend, [run] * 4)
        assert sum(sent) == len(mids)
        bodies = sorted(r.message()["Subject"] for r in mta.received)
    assert bodies == sorted(f"reply {n}" for n in range(6))
    assert store.unsent_replies() == []
