"""SQL of a link's portal state: its revocation, verification attempts and one-time codes.

Decisions (lockout length, rate limits) are the portal's, passed in; what the counters and the
code mean is store/attempts.py's, shared with PostgreSQL. Each method here reads and writes in
one transaction, so a check-then-act holds when several portal processes share the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from zivmilter.core.addresses import normalize_address
from zivmilter.store import attempts, rows
from zivmilter.store.attempts import Counters
from zivmilter.store.records import Attempt, LinkState, LinkView, OtpState
from zivmilter.store.rows import RECIPIENT_FIELDS
from zivmilter.store.sqlite.connection import audit, recipient_ref, ts
from zivmilter.store.sqlite.messages import MESSAGE_FIELDS, MessagesMixin


class LinksMixin(MessagesMixin):
    def link_state(self, recipient_id: int) -> LinkState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT revoked_at, failed_streak, otp_sent_at, otp_sends FROM recipients"
                " WHERE id = ?",
                (recipient_id,),
            ).fetchone()
        return rows.link_state(row)

    def link_view(self, recipient_id: int, *, with_view: bool = False) -> LinkView | None:
        sql = _LINK_VIEW_WITH_VIEW if with_view else _LINK_VIEW
        with self._lock:
            row = self._conn.execute(sql, (recipient_id,)).fetchone()
        return rows.link_view(self._sealing, row, with_view)

    def session_generation(self, recipient_id: int) -> int | None:
        """The generation of this recipient's portal sessions: their link's and their address's
        account's counters together (both only go up). None when there is no such recipient."""
        with self._lock:
            row = self._conn.execute(
                "SELECT r.session_gen + COALESCE(a.session_gen, 0) FROM recipients r"
                " LEFT JOIN accounts a ON a.address = r.address WHERE r.id = ?",
                (recipient_id,),
            ).fetchone()
        return None if row is None else int(row[0])

    def end_sessions(self, recipient_id: int, reason: str = "") -> None:
        """End every portal session of this recipient's link (sign-out): passes issued before
        no longer count, wherever their cookies went."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "UPDATE recipients SET session_gen = session_gen + 1 WHERE id = ?"
                " RETURNING message_id, address",
                (recipient_id,),
            ).fetchone()
            if row is not None:
                audit(cur, now, str(row[0]), str(row[1]), "sessions-ended", reason)

    def revoke_recipient(self, message_id: str, address: str, reason: str = "") -> bool:
        """Revoke one notification recipient's link; the last one revokes the whole message
        (its data key destroyed). False when there is no such live link."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE recipients SET revoked_at = ?, otp_secret = NULL WHERE message_id = ?"
                " AND address = ? AND delivery = 'notification' AND revoked_at IS NULL",
                (now, message_id, key),
            ).rowcount
            if not done:
                return False
            audit(cur, now, message_id, key, "revoked", reason)
            left = cur.execute(
                "SELECT COUNT(*) FROM recipients WHERE message_id = ?"
                " AND delivery = 'notification' AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()[0]
        if not left:
            self.revoke(message_id, reason or "every link revoked")
        return True

    def claim_attempt(
        self, recipient_id: int, lockout: Callable[[int, int], float | None], detail: str = ""
    ) -> Attempt:
        """Claim one answer before comparing it: refused while the link is locked (audited as
        `verify-while-locked`), otherwise counted as a wrong answer at once, in the same
        transaction; `lockout(streak, lockouts)` says for how many seconds the link locks when
        this answer reaches the limit (None: not yet). Settle it with `settle_attempt`."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, failed_streak, lockouts, locked_until"
                " FROM recipients WHERE id = ?",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return Attempt(recipient_id, False, None)
            counters = Counters.read(row[2], row[3], row[4])
            locked = counters.locked(now)
            if locked is not None:
                audit(cur, now, str(row[0]), str(row[1]), "verify-while-locked", detail)
                return Attempt(recipient_id, False, locked)
            n = counters.count(now, lockout)
            cur.execute(
                "UPDATE recipients SET failed_attempts = failed_attempts + 1, failed_streak = ?,"
                " lockouts = ?, locked_until = COALESCE(?, locked_until) WHERE id = ?",
                (n.streak, n.lockouts, n.until, recipient_id),
            )
        return Attempt(recipient_id, True, n.locked_until, n.seconds)

    def settle_attempt(self, attempt: Attempt, ok: bool, detail: str = "") -> datetime | None:
        """The outcome of a claimed answer. Wrong: it stays counted (audited as `verify-failed`,
        and `locked` when its claim locked the link). Right: its count is taken back, the streak
        ends, and a lock its own claim set is lifted (the answer was in before the limit).
        Returns the end of the lock in force now, if any."""
        if not attempt.admitted:
            return attempt.locked_until
        now = int(self._now())
        set_lock = ts(attempt.locked_until)
        with self._transaction() as cur:
            row = recipient_ref(cur, attempt.recipient_id)
            if row is None:
                return None
            message_id, address = str(row[0]), str(row[1])
            if ok:
                cur.execute(
                    "UPDATE recipients SET failed_attempts = MAX(failed_attempts - 1, 0),"
                    " failed_streak = 0,"
                    " lockouts = lockouts - (? IS NOT NULL AND locked_until IS ?),"
                    " locked_until = CASE WHEN locked_until IS ? THEN NULL ELSE locked_until END"
                    " WHERE id = ?",
                    (set_lock, set_lock, set_lock, attempt.recipient_id),
                )
            for event, text in attempts.settle_events(attempt, ok, detail):
                audit(cur, now, message_id, address, event, text)
            row = cur.execute(
                "SELECT locked_until FROM recipients WHERE id = ?", (attempt.recipient_id,)
            ).fetchone()
        return attempts.settled_lock(row, now)

    def record_verified(self, recipient_id: int, detail: str = "") -> None:
        """A successful verification: the failure streak and the one-time code are spent."""
        now = int(self._now())
        with self._transaction() as cur:
            row = recipient_ref(cur, recipient_id)
            if row is None:
                return
            cur.execute(
                "UPDATE recipients SET failed_streak = 0, otp_secret = NULL, otp_sends = 0"
                " WHERE id = ?",
                (recipient_id,),
            )
            audit(cur, now, str(row[0]), str(row[1]), "verified", detail)

    def claim_otp(
        self, recipient_id: int, secret: bytes, min_interval: float, max_sends: int
    ) -> float:
        """Store a new one-time code secret if the rate limits allow one now: returns 0.0 when
        stored (the caller sends the code), else the seconds to wait (`inf`: none left)."""
        now = int(self._now())
        sealed = self._sealing.seal_otp(recipient_id, secret)
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, otp_sent_at, otp_sends FROM recipients WHERE id = ?",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return attempts.NONE_LEFT
            wait = attempts.code_wait(row[2], row[3], now, min_interval, max_sends)
            if wait:
                return wait
            cur.execute(
                "UPDATE recipients SET otp_secret = ?, otp_sent_at = ?, otp_sends = otp_sends + 1"
                " WHERE id = ?",
                (sealed, now, recipient_id),
            )
            audit(cur, now, str(row[0]), str(row[1]), "code-issued", f"#{int(row[3]) + 1}")
        return 0.0

    def otp(self, recipient_id: int) -> OtpState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT otp_secret, otp_sent_at FROM recipients WHERE id = ?", (recipient_id,)
            ).fetchone()
        stored = attempts.stored_code(row, partial(self._sealing.unseal_otp, recipient_id))
        return None if stored is None else stored[1]

    def consume_otp(
        self, recipient_id: int, valid: Callable[[bytes, datetime], bool], detail: str = ""
    ) -> bool:
        """Spend the link's one-time code if `valid(secret, sent_at)` says the answer is that
        code: compared and consumed in one transaction, and recorded as `verified` (with what
        `record_verified` resets) in the same one. True for exactly one caller per code.

        Compare-and-consume: the code is read, compared (the caller's check: the code is a TOTP
        value of a sealed secret, which SQL cannot compute), then cleared by an UPDATE that
        matches the very sealed value that was compared (a fresh nonce per code); its row
        count decides. Here BEGIN IMMEDIATE already serializes the step; the conditional UPDATE
        keeps it right where the read takes no lock (PostgreSQL, READ COMMITTED: the UPDATE
        re-checks its WHERE on the row a concurrent consumer changed, and matches nothing).
        A newer code (`claim_otp`), a revoked link, or a winner first: False. (A revoked
        message is the caller's to refuse: its direct copies' download links still verify.)"""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, otp_secret, otp_sent_at FROM recipients WHERE id = ?",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return False
            stored = attempts.stored_code(row[2:], partial(self._sealing.unseal_otp, recipient_id))
            if stored is None or not valid(stored[1].secret, stored[1].sent_at):
                return False
            done = cur.execute(
                "UPDATE recipients SET otp_secret = NULL, failed_streak = 0, otp_sends = 0"
                " WHERE id = ? AND otp_secret = ? AND revoked_at IS NULL",
                (recipient_id, stored[0]),
            ).rowcount
            if done != 1:
                return False
            audit(cur, now, str(row[0]), str(row[1]), "verified", detail)
        return True

    def clear_otp(self, recipient_id: int) -> None:
        """Forget the code secret and its send slot (sending it failed: let the user retry)."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE recipients SET otp_secret = NULL, otp_sent_at = NULL,"
                " otp_sends = MAX(otp_sends - 1, 0) WHERE id = ? AND otp_secret IS NOT NULL",
                (recipient_id,),
            )


# `recipient` (messages.py's _RECIPIENT_SELECT), then `link_state`, `session_generation` and the
# contact's language (`contact`); with the view, `portal_view`'s sealed view last.
_LINK_VIEW_COLUMNS = (
    f"SELECT {', '.join(MESSAGE_FIELDS)}, "
    + ", ".join("m.wrapped_key" if f == "wrapped_key" else "r." + f for f in RECIPIENT_FIELDS)
    + ", r.revoked_at, r.failed_streak, r.otp_sent_at, r.otp_sends,"
    " r.session_gen + COALESCE(a.session_gen, 0), c.language"
)
_LINK_VIEW_FROM = (
    " FROM recipients r JOIN messages m ON m.id = r.message_id"
    " LEFT JOIN accounts a ON a.address = r.address"
    " LEFT JOIN contacts c ON c.address = r.address WHERE r.id = ?"
)
_LINK_VIEW = _LINK_VIEW_COLUMNS + _LINK_VIEW_FROM
_LINK_VIEW_WITH_VIEW = _LINK_VIEW_COLUMNS + ", m.portal_view" + _LINK_VIEW_FROM
