"""SQL of claims on shared download links (/d/), for PostgreSQL: the same contract as
sqlite/claims.py (tests/store).

Locking: a method that decides on a claim reads its row FOR UPDATE, so answers and codes of one
claim are counted one after the other on any node; a share of an address's hourly budget is
taken under a transaction-scoped advisory lock on that address (the budget has no row to lock
until it is taken), so nodes racing for the last share cannot both get it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime

from zivmilter import defaults
from zivmilter.store.postgresql.connection import Cursor, audit, dt, dt_or_none, ts
from zivmilter.store.postgresql.messages import MessagesMixin
from zivmilter.store.records import ClaimAttempt, ClaimRecord, OtpState

BUDGET_WINDOW = 3600  # seconds: `per_hour` counts what an address got in the last hour

_CLAIM = (
    "SELECT a.message_id, c.address, c.failed_streak, c.lockouts, c.locked_until, c.funded"
    " FROM download_claims c JOIN attachments a ON a.id = c.attachment_id WHERE c.id = %s"
    " FOR UPDATE OF c"
)


class ClaimsMixin(MessagesMixin):
    def open_claim(self, attachment_id: str, address: str, recipient_id: int | None) -> int:
        """A new claim (its id is random: a pass names it); old claims and spent budget go."""
        now = int(self._now())
        claim_id = secrets.randbelow(2**62) + 1
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM download_claims WHERE created_at <= %s",
                (now - defaults.CLAIM_KEEP_SECONDS,),
            )
            cur.execute("DELETE FROM claim_budget WHERE at <= %s", (now - BUDGET_WINDOW,))
            cur.execute(
                "INSERT INTO download_claims (id, attachment_id, address, recipient_id,"
                " created_at) VALUES (%s, %s, %s, %s, %s)",
                (claim_id, attachment_id, address, recipient_id, now),
            )
        return claim_id

    def claim(self, claim_id: int) -> ClaimRecord | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT id, attachment_id, address, recipient_id, locked_until"
                " FROM download_claims WHERE id = %s",
                (claim_id,),
            ).fetchone()
        if row is None:
            return None
        recipient = None if row[3] is None else int(row[3])
        return ClaimRecord(int(row[0]), str(row[1]), str(row[2]), recipient, dt_or_none(row[4]))

    def issue_claim_code(
        self, claim_id: int, secret: bytes, min_interval: float, max_sends: int, per_hour: int
    ) -> float:
        """Store `secret` as the claim's one-time code if the claim's limits (`min_interval`
        between codes, `max_sends` in all) and its address's budget (`per_hour` codes over all
        its claims) allow one now: 0.0, or the seconds to wait (`inf`: none left)."""
        now = int(self._now())
        sealed = self._sealing.seal_claim_code(claim_id, secret)
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT address, otp_sent_at, otp_sends FROM download_claims WHERE id = %s"
                " FOR UPDATE",
                (claim_id,),
            ).fetchone()
            if row is None:
                return float("inf")
            sent_at, sends = row[1], int(row[2])
            if sends >= max_sends:
                return float("inf")
            if sent_at is not None and now - int(sent_at) < min_interval:
                return float(min_interval - (now - int(sent_at)))
            if not _take_budget(cur, str(row[0]), now, per_hour):
                return float("inf")
            cur.execute(
                "UPDATE download_claims SET otp_secret = %s, otp_sent_at = %s,"
                " otp_sends = otp_sends + 1 WHERE id = %s",
                (sealed, now, claim_id),
            )
        return 0.0

    def claim_code(self, claim_id: int) -> OtpState | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT otp_secret, otp_sent_at FROM download_claims WHERE id = %s", (claim_id,)
            ).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        return OtpState(self._sealing.unseal_claim_code(claim_id, bytes(row[0])), dt(row[1]))

    def drop_claim_code(self, claim_id: int) -> None:
        """Forget the code and its send slot (sending it failed: let the visitor ask again).
        Its share of the address's budget stays spent."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE download_claims SET otp_secret = NULL, otp_sent_at = NULL,"
                " otp_sends = GREATEST(otp_sends - 1, 0) WHERE id = %s AND otp_secret IS NOT NULL",
                (claim_id,),
            )

    def claim_answer(
        self,
        claim_id: int,
        lockout: Callable[[int, int], float | None],
        *,
        funded: bool,
        per_hour: int,
        detail: str = "",
    ) -> ClaimAttempt:
        """`claim_attempt` for a claim: refused while the claim is locked, otherwise counted as
        wrong at once. With `funded` (an answer with no code behind it: an account's password
        and authenticator), each round of answers up to a lock takes one share of the address's
        `per_hour` budget first, as each code does; with none left the answer is counted and
        refused without a comparison (`compare` False), which looks like a wrong answer."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(_CLAIM, (claim_id,)).fetchone()
            if row is None:
                return ClaimAttempt(claim_id, False, None)
            message_id, address = str(row[0]), str(row[1])
            streak, lockouts, locked, has_share = int(row[2]) + 1, int(row[3]), row[4], row[5]
            if locked is not None and now < int(locked):
                audit(cur, now, message_id, address, "verify-while-locked", detail)
                return ClaimAttempt(claim_id, False, dt(locked))
            compare = True
            if funded and not has_share:
                has_share = _take_budget(cur, address, now, per_hour)
                compare = bool(has_share)
            seconds = lockout(streak, lockouts)
            until = None if seconds is None else now + int(seconds)
            cur.execute(
                "UPDATE download_claims SET failed_streak = %s, lockouts = %s,"
                " locked_until = COALESCE(%s, locked_until), funded = %s WHERE id = %s",
                (
                    0 if until is not None else streak,
                    lockouts + 1 if until is not None else lockouts,
                    until,
                    int(bool(has_share)),
                    claim_id,
                ),
            )
        return ClaimAttempt(claim_id, True, dt_or_none(until), int(seconds or 0), compare)

    def settle_claim_answer(
        self, attempt: ClaimAttempt, ok: bool, detail: str = ""
    ) -> datetime | None:
        """`settle_attempt` for a claim. A wrong answer that locked the claim also spends its
        code and its share of the budget: a round of answers never outlives its lock."""
        if not attempt.admitted:
            return attempt.locked_until
        now = int(self._now())
        set_lock = ts(attempt.locked_until)
        with self._transaction() as cur:
            row = cur.execute(_CLAIM, (attempt.claim_id,)).fetchone()
            if row is None:
                return None
            message_id, address = str(row[0]), str(row[1])
            if ok:
                cur.execute(
                    "UPDATE download_claims SET failed_streak = 0, otp_secret = NULL, funded = 0,"
                    " lockouts = lockouts - CASE WHEN locked_until = %s::bigint THEN 1 ELSE 0 END,"
                    " locked_until = CASE WHEN locked_until = %s::bigint THEN NULL"
                    " ELSE locked_until END"
                    " WHERE id = %s",
                    (set_lock, set_lock, attempt.claim_id),
                )
            else:
                audit(cur, now, message_id, address, "verify-failed", detail)
                if set_lock is not None:
                    audit(cur, now, message_id, address, "locked", f"{attempt.lock_seconds} s")
                    cur.execute(
                        "UPDATE download_claims SET otp_secret = NULL, funded = 0 WHERE id = %s",
                        (attempt.claim_id,),
                    )
            row = cur.execute(
                "SELECT locked_until FROM download_claims WHERE id = %s", (attempt.claim_id,)
            ).fetchone()
        locked = None if row is None else row[0]
        return dt(locked) if locked is not None and now < int(locked) else None

    def consume_claim_code(self, claim_id: int, valid: Callable[[bytes, datetime], bool]) -> bool:
        """Spend the claim's code if `valid(secret, sent_at)` says the answer is that code:
        compared and cleared in one transaction (`consume_otp`'s rule). Only this claim's code
        counts: a code mailed for another claim on the same address opens nothing here."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT otp_secret, otp_sent_at FROM download_claims WHERE id = %s FOR UPDATE",
                (claim_id,),
            ).fetchone()
            if row is None or row[0] is None or row[1] is None:
                return False
            sealed = bytes(row[0])
            if not valid(self._sealing.unseal_claim_code(claim_id, sealed), dt(row[1])):
                return False
            done = cur.execute(
                "UPDATE download_claims SET otp_secret = NULL WHERE id = %s AND otp_secret = %s",
                (claim_id, sealed),
            ).rowcount
        return done == 1


def _take_budget(cur: Cursor, address: str, now: int, per_hour: int) -> bool:
    """One share of `address`'s hourly budget, if any is left (in the caller's transaction)."""
    key = int.from_bytes(hashlib.sha256(address.encode()).digest()[:8], "big", signed=True)
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
    row = cur.execute(
        "SELECT COUNT(*) FROM claim_budget WHERE address = %s AND at > %s",
        (address, now - BUDGET_WINDOW),
    ).fetchone()
    if row is None or int(row[0]) >= per_hour:
        return False
    cur.execute("INSERT INTO claim_budget (address, at) VALUES (%s, %s)", (address, now))
    return True
