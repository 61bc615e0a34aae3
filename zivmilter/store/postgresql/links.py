"""SQL of a link's portal state (PostgreSQL): its revocation, verification attempts and one-time
codes.

Decisions (lockout length, rate limits) are the portal's, passed in; what the counters and the
code mean is store/attempts.py's, shared with SQLite. Each method here reads and writes in one
transaction and locks what it decides on (each says how), so a check-then-act holds when the
portals of several nodes share the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from zivmilter.core.addresses import normalize_address
from zivmilter.store import attempts, contents, rows
from zivmilter.store.attempts import Counters
from zivmilter.store.postgresql.connection import audit, recipient_ref, ts
from zivmilter.store.postgresql.messages import KEY_JOIN, MESSAGE_FIELDS, MessagesMixin
from zivmilter.store.records import Attempt, LinkState, LinkView, OtpState
from zivmilter.store.rows import RECIPIENT_FIELDS


class LinksMixin(MessagesMixin):
    def link_state(self, recipient_id: int) -> LinkState | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT revoked_at, failed_streak, otp_sent_at, otp_sends FROM recipients"
                " WHERE id = %s",
                (recipient_id,),
            ).fetchone()
        return rows.link_state(row)

    def link_view(self, recipient_id: int, *, with_view: bool = False) -> LinkView | None:
        """Locking: none, one plain read (one statement: one snapshot). The portal reads it at
        the start of every request behind a link, where it was four reads (five for the
        message's page and its frame)."""
        with self._read() as cur:
            sql = _LINK_VIEW_WITH_VIEW if with_view else _LINK_VIEW
            row = cur.execute(sql, (recipient_id,)).fetchone()
        return rows.link_view(self._sealing, row, with_view)

    def session_generation(self, recipient_id: int) -> int | None:
        """The generation of this recipient's portal sessions: their link's and their address's
        account's counters together (both only go up). None when there is no such recipient.

        Locking: none, a plain read of committed counters: a pass issued from a generation that
        `end_sessions` or `set_account_active` moves on a moment later names the old one, and
        fails its next check on any node."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT r.session_gen + COALESCE(a.session_gen, 0) FROM recipients r"
                " LEFT JOIN accounts a ON a.address = r.address WHERE r.id = %s",
                (recipient_id,),
            ).fetchone()
        return None if row is None else int(row[0])

    def end_sessions(self, recipient_id: int, reason: str = "") -> None:
        """End every portal session of this recipient's link (sign-out): passes issued before
        no longer count, wherever their cookies went.

        Locking: the UPDATE of the recipient row adds one to its counter in the database (not
        a value read before), so sign-outs on two nodes at once each move it on."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "UPDATE recipients SET session_gen = session_gen + 1 WHERE id = %s"
                " RETURNING message_id, address",
                (recipient_id,),
            ).fetchone()
            if row is not None:
                audit(cur, now, str(row[0]), str(row[1]), "sessions-ended", reason)

    def revoke_recipient(self, message_id: str, address: str, reason: str = "") -> bool:
        """Revoke one notification recipient's link; the last one revokes the whole message
        (its data key destroyed). False when there is no such live link.

        Locking: the message row FOR UPDATE first, so revocations of links of one message run
        one after the other: two nodes revoking the last two links at once cannot each see the
        other's link still live, and the last one revokes the message in the same transaction.
        """
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute("SELECT 1 FROM messages WHERE id = %s FOR UPDATE", (message_id,))
            done = cur.execute(
                "UPDATE recipients SET revoked_at = %s, otp_secret = NULL WHERE message_id = %s"
                " AND address = %s AND delivery = 'notification' AND revoked_at IS NULL",
                (now, message_id, key),
            ).rowcount
            if not done:
                return False
            audit(cur, now, message_id, key, "revoked", reason)
            row = cur.execute(
                "SELECT COUNT(*) FROM recipients WHERE message_id = %s"
                " AND delivery = 'notification' AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
            paths: list[str] | None = None
            if row is not None and not row[0]:
                paths = self._revoke_in(cur, message_id, reason or "every link revoked", now)
        contents.remove(self._blobs, paths or ())
        return True

    def claim_attempt(
        self, recipient_id: int, lockout: Callable[[int, int], float | None], detail: str = ""
    ) -> Attempt:
        """Claim one answer before comparing it: refused while the link is locked (audited as
        `verify-while-locked`), otherwise counted as a wrong answer at once, in the same
        transaction; `lockout(streak, lockouts)` says for how many seconds the link locks when
        this answer reaches the limit (None: not yet). Settle it with `settle_attempt`.

        Locking: the recipient row FOR UPDATE: claims on one link, from any portal node, are
        counted one after the other, so the limit holds however many arrive at once."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, failed_streak, lockouts, locked_until"
                " FROM recipients WHERE id = %s FOR UPDATE",
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
                "UPDATE recipients SET failed_attempts = failed_attempts + 1, failed_streak = %s,"
                " lockouts = %s, locked_until = COALESCE(%s, locked_until) WHERE id = %s",
                (n.streak, n.lockouts, n.until, recipient_id),
            )
        return Attempt(recipient_id, True, n.locked_until, n.seconds)

    def settle_attempt(self, attempt: Attempt, ok: bool, detail: str = "") -> datetime | None:
        """The outcome of a claimed answer. Wrong: it stays counted (audited as `verify-failed`,
        and `locked` when its claim locked the link). Right: its count is taken back, the streak
        ends, and a lock its own claim set is lifted (the answer was in before the limit).
        Returns the end of the lock in force now, if any.

        Locking: the recipient row FOR UPDATE, then one UPDATE whose conditions compare with
        the lock this claim set (a later claim's lock is left alone)."""
        if not attempt.admitted:
            return attempt.locked_until
        now = int(self._now())
        set_lock = ts(attempt.locked_until)
        with self._transaction() as cur:
            row = recipient_ref(cur, attempt.recipient_id, lock=True)
            if row is None:
                return None
            message_id, address = str(row[0]), str(row[1])
            if ok:
                cur.execute(
                    "UPDATE recipients SET failed_attempts = GREATEST(failed_attempts - 1, 0),"
                    " failed_streak = 0,"
                    " lockouts = lockouts - CASE WHEN %s::bigint IS NOT NULL"
                    " AND locked_until IS NOT DISTINCT FROM %s::bigint THEN 1 ELSE 0 END,"
                    " locked_until = CASE WHEN locked_until IS NOT DISTINCT FROM %s::bigint"
                    " THEN NULL ELSE locked_until END"
                    " WHERE id = %s",
                    (set_lock, set_lock, set_lock, attempt.recipient_id),
                )
            for event, text in attempts.settle_events(attempt, ok, detail):
                audit(cur, now, message_id, address, event, text)
            row = cur.execute(
                "SELECT locked_until FROM recipients WHERE id = %s", (attempt.recipient_id,)
            ).fetchone()
        return attempts.settled_lock(row, now)

    def record_verified(self, recipient_id: int, detail: str = "") -> None:
        """A successful verification: the failure streak and the one-time code are spent.
        (Plain UPDATEs of one row: no decision on what was read.)"""
        now = int(self._now())
        with self._transaction() as cur:
            row = recipient_ref(cur, recipient_id)
            if row is None:
                return
            cur.execute(
                "UPDATE recipients SET failed_streak = 0, otp_secret = NULL, otp_sends = 0"
                " WHERE id = %s",
                (recipient_id,),
            )
            audit(cur, now, str(row[0]), str(row[1]), "verified", detail)

    def claim_otp(
        self, recipient_id: int, secret: bytes, min_interval: float, max_sends: int
    ) -> float:
        """Store a new one-time code secret if the rate limits allow one now: returns 0.0 when
        stored (the caller sends the code), else the seconds to wait (`inf`: none left).

        Locking: the recipient row FOR UPDATE: requests from several nodes at once are rate
        limited one after the other (one of them gets the slot)."""
        now = int(self._now())
        sealed = self._sealing.seal_otp(recipient_id, secret)
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, otp_sent_at, otp_sends FROM recipients WHERE id = %s"
                " FOR UPDATE",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return attempts.NONE_LEFT
            wait = attempts.code_wait(row[2], row[3], now, min_interval, max_sends)
            if wait:
                return wait
            cur.execute(
                "UPDATE recipients SET otp_secret = %s, otp_sent_at = %s, otp_sends = otp_sends + 1"
                " WHERE id = %s",
                (sealed, now, recipient_id),
            )
            audit(cur, now, str(row[0]), str(row[1]), "code-issued", f"#{int(row[3]) + 1}")
        return 0.0

    def otp(self, recipient_id: int) -> OtpState | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT otp_secret, otp_sent_at FROM recipients WHERE id = %s", (recipient_id,)
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
        count decides. Locking: the read is FOR UPDATE, so consumers on several nodes compare
        one after the other; the conditional UPDATE would keep it right even without that
        (READ COMMITTED re-checks its WHERE on the row a concurrent consumer changed).
        A newer code (`claim_otp`), a revoked link, or a winner first: False. (A revoked
        message is the caller's to refuse: its direct copies' download links still verify.)"""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, otp_secret, otp_sent_at FROM recipients WHERE id = %s"
                " FOR UPDATE",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return False
            stored = attempts.stored_code(row[2:], partial(self._sealing.unseal_otp, recipient_id))
            if stored is None or not valid(stored[1].secret, stored[1].sent_at):
                return False
            done = cur.execute(
                "UPDATE recipients SET otp_secret = NULL, failed_streak = 0, otp_sends = 0"
                " WHERE id = %s AND otp_secret = %s AND revoked_at IS NULL",
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
                " otp_sends = GREATEST(otp_sends - 1, 0) WHERE id = %s AND otp_secret IS NOT NULL",
                (recipient_id,),
            )


# `recipient` (messages.py's _RECIPIENT_SELECT), then `link_state`, `session_generation` and the
# contact's language (`contact`); with the view, `portal_view`'s sealed view last.
_LINK_VIEW_COLUMNS = (
    f"SELECT {', '.join(MESSAGE_FIELDS)}, "
    + ", ".join("k.wrapped_key" if f == "wrapped_key" else "r." + f for f in RECIPIENT_FIELDS)
    + ", r.revoked_at, r.failed_streak, r.otp_sent_at, r.otp_sends,"
    " r.session_gen + COALESCE(a.session_gen, 0), c.language"
)
_LINK_VIEW_FROM = (
    " FROM recipients r JOIN messages m ON m.id = r.message_id"
    + KEY_JOIN
    + " LEFT JOIN accounts a ON a.address = r.address"
    " LEFT JOIN contacts c ON c.address = r.address WHERE r.id = %s"
)
_LINK_VIEW = _LINK_VIEW_COLUMNS + _LINK_VIEW_FROM
_LINK_VIEW_WITH_VIEW = _LINK_VIEW_COLUMNS + ", m.portal_view" + _LINK_VIEW_FROM
