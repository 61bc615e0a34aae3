"""Claims on shared download links (/d/), the same for every backend: a new claim's id and what
it clears, the limits of its one-time codes, its answers counted against its lockout and its
address's hourly budget, and its rows read back. Plain values in, plain values out.

The SQL, and the locking that makes each check-then-act hold across processes and nodes, is each
backend's: sqlite/claims.py (BEGIN IMMEDIATE) and postgresql/claims.py (FOR UPDATE, advisory
locks).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from zivmilter import defaults
from zivmilter.store import attempts
from zivmilter.store.attempts import NONE_LEFT, Counters, Lockout
from zivmilter.store.records import ClaimAttempt, ClaimRecord, OtpState
from zivmilter.store.rows import dt_or_none
from zivmilter.store.sealing import Sealing

BUDGET_WINDOW = 3600  # seconds: `per_hour` counts what an address got in the last hour


@dataclass(frozen=True, slots=True)
class NewClaim:
    """A claim to insert (its id is random: a pass names it), and what goes with it."""

    id: int
    created_at: int
    claims_before: int  # claims created at or before this are deleted
    budget_before: int  # shares of budgets taken at or before this are deleted


def new_claim(now: float) -> NewClaim:
    at = int(now)
    claim_id = secrets.randbelow(2**62) + 1
    return NewClaim(claim_id, at, at - defaults.CLAIM_KEEP_SECONDS, at - BUDGET_WINDOW)


def budget_since(now: int) -> int:
    """Shares taken after this count against `per_hour`."""
    return now - BUDGET_WINDOW


def record(row: Any) -> ClaimRecord | None:
    """From (id, attachment_id, address, recipient_id, locked_until)."""
    if row is None:
        return None
    recipient = None if row[3] is None else int(row[3])
    return ClaimRecord(int(row[0]), str(row[1]), str(row[2]), recipient, dt_or_none(row[4]))


def code(sealing: Sealing, claim_id: int, row: Any) -> OtpState | None:
    """The claim's code from (otp_secret, otp_sent_at); None when it has none."""
    stored = stored_code(sealing, claim_id, row)
    return None if stored is None else stored[1]


def stored_code(sealing: Sealing, claim_id: int, row: Any) -> tuple[bytes, OtpState] | None:
    """The claim's code as stored (sealed: what a conditional UPDATE compares) and opened."""
    return attempts.stored_code(row, partial(sealing.unseal_claim_code, claim_id))


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """Whether a code may be sent now, by the claim's own limits: `wait` 0.0 when it may (if
    the address's budget has a share left: `address`'s), else the seconds to wait (`inf`:
    none left)."""

    address: str
    wait: float


def code_request(row: Any, now: int, min_interval: float, max_sends: int) -> CodeRequest:
    """From the claim's (address, otp_sent_at, otp_sends)."""
    if row is None:
        return CodeRequest("", NONE_LEFT)
    return CodeRequest(
        str(row[0]), attempts.code_wait(row[1], row[2], now, min_interval, max_sends)
    )


@dataclass(frozen=True, slots=True)
class Answered:
    """A claim as an answer on it reads it: (message_id, address, failed_streak, lockouts,
    locked_until, funded) of the claim and its attachment."""

    message_id: str
    address: str
    counters: Counters
    funded: bool  # this round of answers already has its share of the budget

    @classmethod
    def read(cls, row: Any) -> Answered:
        counters = Counters.read(row[2], row[3], row[4])
        return cls(str(row[0]), str(row[1]), counters, bool(row[5]))

    def needs_share(self, funded: bool) -> bool:
        """An answer with no code behind it (`funded`) takes a share of the address's budget
        once per round of answers up to a lock: the caller takes it before `count`."""
        return funded and not self.funded

    def count(self, claim_id: int, now: int, lockout: Lockout, share: bool | None) -> Counted:
        """The answer counted as wrong. `share`: whether the share `needs_share` asked for was
        taken (None: none was needed); without it the answer is not compared."""
        counted = self.counters.count(now, lockout)
        funded = self.funded if share is None else share
        attempt = ClaimAttempt(
            claim_id, True, counted.locked_until, counted.seconds, share is not False
        )
        return Counted(counted.streak, counted.lockouts, counted.until, int(funded), attempt)


@dataclass(frozen=True, slots=True)
class Counted:
    """What `claim_answer` writes into the claim's row, and what it returns."""

    streak: int
    lockouts: int
    until: int | None  # a new lock; None keeps the claim's lock
    funded: int
    attempt: ClaimAttempt


def refused(claim_id: int, locked_until: datetime | None = None) -> ClaimAttempt:
    """An answer not admitted: the claim is unknown, or locked until `locked_until`."""
    return ClaimAttempt(claim_id, False, locked_until)
