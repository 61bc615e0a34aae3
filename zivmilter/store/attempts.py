"""A lockable row's counters of wrong answers, the same for every backend: what the row says,
the lock in force now, and what one more answer, counted as wrong before it is compared, writes.

Claims on download links (claims.py) and sender sign-ins (senders.py) count this way, as links
do. The lockout's length is the portal's decision (`lockout(streak, lockouts)`: seconds, or None
while the limit is not reached), passed in; each backend reads and writes the counters with its
own SQL, under its own locking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zivmilter.store.rows import dt, dt_or_none

Lockout = Callable[[int, int], float | None]


def lock_in_force(locked_until: Any, now: int) -> datetime | None:
    """The end of a stored lock (epoch seconds, or None) when it still holds at `now`."""
    if locked_until is None or now >= int(locked_until):
        return None
    return dt(locked_until)


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
