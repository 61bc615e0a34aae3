"""A lockable row's counters of wrong answers, the same for every backend: what the row says,
the lock in force now, what one more answer, counted as wrong before it is compared, writes,
and what settling it audits. And the one-time code such a row holds: when its own limits let
one more be sent, and the code as stored.

Links (a recipient's row), claims on download links (claims.py) and sender sign-ins
(senders.py, no codes) count this way. The lockout's length is the portal's decision
(`lockout(streak, lockouts)`: seconds, or None while the limit is not reached), passed in; each
backend reads and writes the counters with its own SQL, under its own locking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zivmilter.store.records import Attempt, ClaimAttempt, OtpState
from zivmilter.store.rows import dt, dt_or_none

Lockout = Callable[[int, int], float | None]
NONE_LEFT = float("inf")  # no code now, nor later


def lock_in_force(locked_until: Any, now: int) -> datetime | None:
    """The end of a stored lock (epoch seconds, or None) when it still holds at `now`."""
    if locked_until is None or now >= int(locked_until):
        return None
    return dt(locked_until)


def settled_lock(row: Any, now: int) -> datetime | None:
    """The lock in force once an answer is settled, from the row's (locked_until) or None."""
    return None if row is None else lock_in_force(row[0], now)


def settle_events(attempt: Attempt | ClaimAttempt, ok: bool, detail: str) -> list[tuple[str, str]]:
    """The audit events (event, detail) of settling an admitted answer on a link or a claim."""
    if ok:
        return []
    events = [("verify-failed", detail)]
    if attempt.locked_until is not None:
        events.append(("locked", f"{attempt.lock_seconds} s"))
    return events


@dataclass(frozen=True, slots=True)
class Counters:
    """A row's counters as read, for the answer being claimed."""

    streak: int  # this answer's place in the streak of wrong answers (the stored streak + 1)
    lockouts: int
    locked_until: int | None  # epoch seconds

    @classmethod
    def read(cls, failed_streak: Any, lockouts: Any, locked_until: Any) -> Counters:
        locked = None if locked_until is None else int(locked_until)
        return cls(int(failed_streak) + 1, int(lockouts), locked)

    def locked(self, now: int) -> datetime | None:
        """The lock in force at `now`: the answer is refused, and not counted."""
        return lock_in_force(self.locked_until, now)

    def count(self, now: int, lockout: Lockout) -> Count:
        """The answer counted as wrong; when it reaches the limit, the row locks."""
        seconds = lockout(self.streak, self.lockouts)
        if seconds is None:
            return Count(self.streak, self.lockouts, None, 0)
        return Count(0, self.lockouts + 1, now + int(seconds), int(seconds))


@dataclass(frozen=True, slots=True)
class Count:
    """What a counted answer writes: `streak` and `lockouts` as they are to be stored, and the
    lock it set (`until`, epoch seconds; None keeps the row's lock as it is)."""

    streak: int
    lockouts: int
    until: int | None
    seconds: int  # the length of the lock it set (0: none)

    @property
    def locked_until(self) -> datetime | None:
        return dt_or_none(self.until)


# -- one-time codes ---------------------------------------------------------------------------


def code_wait(sent_at: Any, sends: Any, now: int, min_interval: float, max_sends: int) -> float:
    """From a row's (otp_sent_at, otp_sends): 0.0 when its own limits let a code be sent now,
    else the seconds to wait (NONE_LEFT: none left)."""
    if int(sends) >= max_sends:
        return NONE_LEFT
    if sent_at is not None and now - int(sent_at) < min_interval:
        return float(min_interval - (now - int(sent_at)))
    return 0.0


def stored_code(row: Any, unseal: Callable[[bytes], bytes]) -> tuple[bytes, OtpState] | None:
    """A row's code from its (otp_secret, otp_sent_at), as stored (sealed: what the conditional
    UPDATE that spends it compares) and opened with `unseal`; None when it has none."""
    if row is None or row[0] is None or row[1] is None:
        return None
    sealed = bytes(row[0])
    return sealed, OtpState(unseal(sealed), dt(row[1]))
