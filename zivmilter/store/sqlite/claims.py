"""SQL of claims on shared download links (/d/): who a visitor says they are, with that claim's
own one-time code and lockout, and the hourly budget of each claimed address.

What the rows mean (limits, counters, what an answer writes) is store/claims.py's, shared with
PostgreSQL (postgresql/claims.py); decisions (lockout length, rate limits) are the portal's,
passed in. Each method here reads and writes in one transaction (BEGIN IMMEDIATE: one writer at
a time), so a check-then-act holds when several portal processes share the database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime

from zivmilter.store import attempts, claims
from zivmilter.store.attempts import Lockout
from zivmilter.store.records import ClaimAttempt, ClaimRecord, OtpState
from zivmilter.store.sqlite.connection import audit, ts
from zivmilter.store.sqlite.messages import MessagesMixin

_CLAIM = (
    "SELECT a.message_id, c.address, c.failed_streak, c.lockouts, c.locked_until, c.funded"
    " FROM download_claims c JOIN attachments a ON a.id = c.attachment_id WHERE c.id = ?"
)


class ClaimsMixin(MessagesMixin):
    def open_claim(self, attachment_id: str, address: str, recipient_id: int | None) -> int:
        """A new claim (its id is random: a pass names it); old claims and spent budget go."""
        new = claims.new_claim(self._now())
        with self._transaction() as cur:
            cur.execute("DELETE FROM download_claims WHERE created_at <= ?", (new.claims_before,))
            cur.execute("DELETE FROM claim_budget WHERE at <= ?", (new.budget_before,))
            cur.execute(
                "INSERT INTO download_claims (id, attachment_id, address, recipient_id,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                (new.id, attachment_id, address, recipient_id, new.created_at),
            )
        return new.id

    def claim(self, claim_id: int) -> ClaimRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, attachment_id, address, recipient_id, locked_until"
                " FROM download_claims WHERE id = ?",
                (claim_id,),
            ).fetchone()
        return claims.record(row)

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
                "SELECT address, otp_sent_at, otp_sends FROM download_claims WHERE id = ?",
                (claim_id,),
            ).fetchone()
            ask = claims.code_request(row, now, min_interval, max_sends)
            if ask.wait:
                return ask.wait
            if not _take_budget(cur, ask.address, now, per_hour):
                return attempts.NONE_LEFT
            cur.execute(
                "UPDATE download_claims SET otp_secret = ?, otp_sent_at = ?,"
                " otp_sends = otp_sends + 1 WHERE id = ?",
                (sealed, now, claim_id),
            )
        return 0.0

    def claim_code(self, claim_id: int) -> OtpState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT otp_secret, otp_sent_at FROM download_claims WHERE id = ?", (claim_id,)
            ).fetchone()
        return claims.code(self._sealing, claim_id, row)

    def drop_claim_code(self, claim_id: int) -> None:
        """Forget the code and its send slot (sending it failed: let the visitor ask again).
        Its share of the address's budget stays spent."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE download_claims SET otp_secret = NULL, otp_sent_at = NULL,"
                " otp_sends = MAX(otp_sends - 1, 0) WHERE id = ? AND otp_secret IS NOT NULL",
                (claim_id,),
            )

    def claim_answer(
        self, claim_id: int, lockout: Lockout, *, funded: bool, per_hour: int, detail: str = ""
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
                return claims.refused(claim_id)
            claim = claims.Answered.read(row)
            locked = claim.counters.locked(now)
            if locked is not None:
                audit(cur, now, claim.message_id, claim.address, "verify-while-locked", detail)
                return claims.refused(claim_id, locked)
            share = None
            if claim.needs_share(funded):
                share = _take_budget(cur, claim.address, now, per_hour)
            n = claim.count(claim_id, now, lockout, share)
            cur.execute(
                "UPDATE download_claims SET failed_streak = ?, lockouts = ?,"
                " locked_until = COALESCE(?, locked_until), funded = ? WHERE id = ?",
                (n.streak, n.lockouts, n.until, n.funded, claim_id),
            )
        return n.attempt

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
            for event, text in attempts.settle_events(attempt, ok, detail):
                audit(cur, now, message_id, address, event, text)
            if ok:
                cur.execute(
                    "UPDATE download_claims SET failed_streak = 0, otp_secret = NULL, funded = 0,"
                    " lockouts = lockouts - (? IS NOT NULL AND locked_until IS ?),"
                    " locked_until = CASE WHEN locked_until IS ? THEN NULL ELSE locked_until END"
                    " WHERE id = ?",
                    (set_lock, set_lock, set_lock, attempt.claim_id),
                )
            elif set_lock is not None:
                cur.execute(
                    "UPDATE download_claims SET otp_secret = NULL, funded = 0 WHERE id = ?",
                    (attempt.claim_id,),
                )
            row = cur.execute(
                "SELECT locked_until FROM download_claims WHERE id = ?", (attempt.claim_id,)
            ).fetchone()
        return attempts.settled_lock(row, now)

    def consume_claim_code(self, claim_id: int, valid: Callable[[bytes, datetime], bool]) -> bool:
        """Spend the claim's code if `valid(secret, sent_at)` says the answer is that code:
        compared and cleared in one transaction (`consume_otp`'s rule). Only this claim's code
        counts: a code mailed for another claim on the same address opens nothing here."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT otp_secret, otp_sent_at FROM download_claims WHERE id = ?", (claim_id,)
            ).fetchone()
            stored = claims.stored_code(self._sealing, claim_id, row)
            if stored is None or not valid(stored[1].secret, stored[1].sent_at):
                return False
            done = cur.execute(
                "UPDATE download_claims SET otp_secret = NULL WHERE id = ? AND otp_secret = ?",
                (claim_id, stored[0]),
            ).rowcount
        return done == 1


def _take_budget(cur: sqlite3.Cursor, address: str, now: int, per_hour: int) -> bool:
    """One share of `address`'s hourly budget, if any is left (in the caller's transaction)."""
    used = cur.execute(
        "SELECT COUNT(*) FROM claim_budget WHERE address = ? AND at > ?",
        (address, claims.budget_since(now)),
    ).fetchone()[0]
    if int(used) >= per_hour:
        return False
    cur.execute("INSERT INTO claim_budget (address, at) VALUES (?, ?)", (address, now))
    return True
