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

from tests.store.common import Clock, _lock_after_five
from tests.store.conftest import backend_params
from tests.store.test_contract_otp import Backend
from zivmilter import defaults
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
