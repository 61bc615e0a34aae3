"""SQL of claims on shared download links (/d/), for PostgreSQL: the same contract as
sqlite/claims.py (tests/store), and the same meaning of the rows (store/claims.py).

Locking: a method that decides on a claim reads its row FOR UPDATE, so answers and codes of one
claim are counted one after the other on any node; a share of an address's hourly budget is
taken under a transaction-scoped advisory lock on that address (the budget has no row to lock
until it is taken), so nodes racing for the last share cannot both get it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from zivmilter.store import attempts, claims
from zivmilter.store.attempts import Lockout
from zivmilter.store.postgresql.connection import Cursor, audit, ts
from zivmilter.store.postgresql.messages import MessagesMixin
from zivmilter.store.records import ClaimAttempt, ClaimRecord, OtpState

_CLAIM = (
    "SELECT a.message_id, c.address, c.failed_streak, c.lockouts, c.locked_until, c.funded"
    " FROM download_claims c JOIN attachments a ON a.id = c.attachment_id WHERE c.id = %s"
    " FOR UPDATE OF c"
)


class ClaimsMixin(MessagesMixin):
    def open_claim(self, attachment_id: str, address: str, recipient_id: int | None) -> int:
        """A new claim (its id is random: a pass names it); old claims and spent budget go."""
        new = claims.new_claim(self._now())
        with self._transaction() as cur:
            cur.execute("DELETE FROM download_claims WHERE created_at <= %s", (new.claims_before,))
            cur.execute("DELETE FROM claim_budget WHERE at <= %s", (new.budget_before,))
            cur.execute(
                "INSERT INTO download_claims (id, attachment_id, address, recipient_id,"
                " created_at) VALUES (%s, %s, %s, %s, %s)",
                (new.id, attachment_id, address, recipient_id, new.created_at),
            )
        return new.id

    def claim(self, claim_id: int) -> ClaimRecord | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT id, attachment_id, address, recipient_id, locked_until"
                " FROM download_claims WHERE id = %s",
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
                "SELECT address, otp_sent_at, otp_sends FROM download_claims WHERE id = %s"
                " FOR UPDATE",
                (claim_id,),
            ).fetchone()
            ask = claims.code_request(row, now, min_interval, max_sends)
            if ask.wait:
                return ask.wait
            if not _take_budget(cur, ask.address, now, per_hour):
                return attempts.NONE_LEFT
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
        return claims.code(self._sealing, claim_id, row)

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
                "UPDATE download_claims SET failed_streak = %s, lockouts = %s,"
                " locked_until = COALESCE(%s, locked_until), funded = %s WHERE id = %s",
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
                    " lockouts = lockouts - CASE WHEN locked_until = %s::bigint THEN 1 ELSE 0 END,"
                    " locked_until = CASE WHEN locked_until = %s::bigint THEN NULL"
                    " ELSE locked_until END"
                    " WHERE id = %s",
                    (set_lock, set_lock, attempt.claim_id),
                )
            elif set_lock is not None:
                cur.execute(
                    "UPDATE download_claims SET otp_secret = NULL, funded = 0 WHERE id = %s",
                    (attempt.claim_id,),
                )
            row = cur.execute(
                "SELECT locked_until FROM download_claims WHERE id = %s", (attempt.claim_id,)
            ).fetchone()
        return attempts.settled_lock(row, now)

    def consume_claim_code(self, claim_id: int, valid: Callable[[bytes, datetime], bool]) -> bool:
        """Spend the claim's code if `valid(secret, sent_at)` says the answer is that code:
        compared and cleared in one transaction (`consume_otp`'s rule). Only this claim's code
        counts: a code mailed for another claim on the same address opens nothing here."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT otp_secret, otp_sent_at FROM download_claims WHERE id = %s FOR UPDATE",
                (claim_id,),
            ).fetchone()
            stored = claims.stored_code(self._sealing, claim_id, row)
            if stored is None or not valid(stored[1].secret, stored[1].sent_at):
                return False
            done = cur.execute(
                "UPDATE download_claims SET otp_secret = NULL WHERE id = %s AND otp_secret = %s",
                (claim_id, stored[0]),
            ).rowcount
        return done == 1


def _take_budget(cur: Cursor, address: str, now: int, per_hour: int) -> bool:
    """One share of `address`'s hourly budget, if any is left (in the caller's transaction)."""
    key = int.from_bytes(hashlib.sha256(address.encode()).digest()[:8], "big", signed=True)
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
    row = cur.execute(
        "SELECT COUNT(*) FROM claim_budget WHERE address = %s AND at > %s",
        (address, claims.budget_since(now)),
    ).fetchone()
    if row is None or int(row[0]) >= per_hour:
        return False
    cur.execute("INSERT INTO claim_budget (address, at) VALUES (%s, %s)", (address, now))
    return True
