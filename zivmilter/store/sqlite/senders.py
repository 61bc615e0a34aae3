"""SQL of the sender's side of the portal: enrolment invitations, the sign-in lockout of sender
accounts (and of addresses without one, `sign_in_counts`), sent items, expiry and read receipts
(issue 19).

What the rows mean is store/senders.py's, shared with PostgreSQL. As for links (links.py), the
lockout's length is the portal's decision, passed in; each check-then-act here (an invitation
spent, a sign-in claimed, a receipt claimed) is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from zivmilter import defaults
from zivmilter.store import attempts
from zivmilter.store import senders as sender_side
from zivmilter.store.attempts import Counters, Lockout
from zivmilter.store.records import SentPage, SignInAttempt
from zivmilter.store.sqlite.connection import audit, ts
from zivmilter.store.sqlite.messages import MESSAGE_FIELDS, MessagesMixin

_SENDER = "kind = 'sender' AND active = 1"


class SendersMixin(MessagesMixin):
    # -- invitations ----------------------------------------------------------------------

    def add_invite(self, address: str, lifetime: float) -> str | None:
        new = sender_side.new_invite(address, self._now(), lifetime)
        if new is None:
            return None
        with self._transaction() as cur:
            row = cur.execute(
                f"SELECT 1 FROM accounts WHERE address = ? AND {_SENDER}", (new.address,)
            ).fetchone()
            if row is None:
                return None
            cur.execute("DELETE FROM invites WHERE address = ? AND used_at IS NULL", (new.address,))
            cur.execute(
                "INSERT INTO invites (token_hash, address, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (new.token_hash, new.address, new.created_at, new.expires_at),
            )
            audit(cur, new.created_at, None, new.address, "invite-issued", "")
        return new.token

    def invite_address(self, token_hash: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT i.address FROM invites i JOIN accounts a ON a.address = i.address"
                " WHERE i.token_hash = ? AND i.used_at IS NULL AND i.expires_at > ?"
                " AND a.kind = 'sender' AND a.active = 1",
                (token_hash, int(self._now())),
            ).fetchone()
        return sender_side.invited(row)

    def redeem_invite(
        self, token_hash: str, password_hash: str, totp_secret: bytes, totp_step: int
    ) -> str | None:
        now = int(self._now())
        address = self.invite_address(token_hash)
        if address is None:
            return None
        sealed = self._sealing.seal_totp(address, totp_secret)
        with self._transaction() as cur:
            spent = cur.execute(
                "UPDATE invites SET used_at = ? WHERE token_hash = ? AND used_at IS NULL"
                " AND expires_at > ? AND address IN (SELECT address FROM accounts"
                f" WHERE {_SENDER})",
                (now, token_hash, now),
            ).rowcount
            if not spent:
                return None
            cur.execute(
                "UPDATE accounts SET password_hash = ?, totp_secret = ?, totp_last_step = ?,"
                " failed_streak = 0, locked_until = NULL, session_gen = session_gen + 1"
                " WHERE address = ?",
                (password_hash, sealed, totp_step, address),
            )
            audit(cur, now, None, address, "sender-enrolled", "password and authenticator set")
        return address

    # -- signing in -----------------------------------------------------------------------

    def claim_sign_in(self, address: str, lockout: Lockout, detail: str = "") -> SignInAttempt:
        """Claim one sign-in of `address` before comparing it (see `SignInAttempt`): counted
        as wrong at once, refused while the account is locked."""
        key = sender_side.sign_in_key(address)
        tag = self._sealing.sign_in_tag(key)  # for every address: the same work either way
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT failed_streak, lockouts, locked_until FROM accounts"
                f" WHERE address = ? AND {_SENDER}",
                (key,),
            ).fetchone()
            if row is None:
                return self._claim_without_account(cur, key, tag, now, lockout)
            counters = Counters.read(row[0], row[1], row[2])
            locked = counters.locked(now)
            if locked is not None:
                audit(cur, now, None, key, "sign-in-while-locked", detail)
                return SignInAttempt(key, False, locked)
            n = counters.count(now, lockout)
            cur.execute(
                "UPDATE accounts SET failed_attempts = failed_attempts + 1, failed_streak = ?,"
                " lockouts = ?, locked_until = COALESCE(?, locked_until) WHERE address = ?",
                (n.streak, n.lockouts, n.until, key),
            )
        return SignInAttempt(key, True, n.locked_until, counted=True)

    def settle_sign_in(self, attempt: SignInAttempt, ok: bool) -> datetime | None:
        """Settle a claimed sign-in as `settle_attempt` settles a link's answer: a right one
        takes back its count, ends the streak and lifts a lock its own claim set (it was in
        before the limit); a wrong one is audited. The end of the lock in force now, if any."""
        if not attempt.admitted:
            return attempt.locked_until
        now = int(self._now())
        set_lock = ts(attempt.locked_until)
        if attempt.tag is not None:
            return self._settle_without_account(attempt.tag, ok and attempt.counted, set_lock, now)
        with self._transaction() as cur:
            if ok and attempt.counted:
                cur.execute(
                    "UPDATE accounts SET failed_attempts = MAX(failed_attempts - 1, 0),"
                    " failed_streak = 0,"
                    " lockouts = lockouts - (? IS NOT NULL AND locked_until IS ?),"
                    " locked_until = CASE WHEN locked_until IS ? THEN NULL ELSE locked_until END"
                    " WHERE address = ?",
                    (set_lock, set_lock, set_lock, attempt.address),
                )
            for event, detail in sender_side.settle_events(attempt, ok):
                audit(cur, now, None, attempt.address, event, detail)
            row = cur.execute(
                "SELECT locked_until FROM accounts WHERE address = ?", (attempt.address,)
            ).fetchone()
        return attempts.settled_lock(row, now)

    def _claim_without_account(
        self, cur: sqlite3.Cursor, key: str, tag: str, now: int, lockout: Lockout
    ) -> SignInAttempt:
        """An address without an active sender account counts on its own row of
        `sign_in_counts` (made at its first wrong sign-in), locked as an account's row is: one
        transaction, BEGIN IMMEDIATE. Nothing is audited: the audit would list the address."""
        row = cur.execute(
            "SELECT failed_streak, lockouts, locked_until FROM sign_in_counts WHERE tag = ?",
            (tag,),
        ).fetchone()
        counters = Counters.read(*(row if row is not None else (0, 0, None)))
        locked = counters.locked(now)
        if locked is not None:
            return SignInAttempt(key, False, locked, tag=tag)
        n = counters.count(now, lockout)
        cur.execute(
            "INSERT INTO sign_in_counts (tag, failed_streak, lockouts, locked_until, failed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tag) DO UPDATE SET"
            " failed_streak = excluded.failed_streak, lockouts = excluded.lockouts,"
            " locked_until = COALESCE(excluded.locked_until, sign_in_counts.locked_until),"
            " failed_at = excluded.failed_at",
            (tag, n.streak, n.lockouts, n.until, now),
        )
        return SignInAttempt(key, True, n.locked_until, counted=True, tag=tag)

    def _settle_without_account(
        self, tag: str, right: bool, set_lock: int | None, now: int
    ) -> datetime | None:
        """As `settle_sign_in` for an account's row (right only when an account came to be
        between the claim and the comparison)."""
        with self._transaction() as cur:
            if right:
                cur.execute(
                    "UPDATE sign_in_counts SET failed_streak = 0,"
                    " lockouts = lockouts - (? IS NOT NULL AND locked_until IS ?),"
                    " locked_until = CASE WHEN locked_until IS ? THEN NULL ELSE locked_until END"
                    " WHERE tag = ?",
                    (set_lock, set_lock, set_lock, tag),
                )
            row = cur.execute(
                "SELECT locked_until FROM sign_in_counts WHERE tag = ?", (tag,)
            ).fetchone()
        return attempts.settled_lock(row, now)

    def prune_sign_in_counts(self, keep: float = defaults.SIGN_IN_COUNT_KEEP_SECONDS) -> int:
        now = int(self._now())
        with self._transaction() as cur:
            return cur.execute(
                "DELETE FROM sign_in_counts WHERE failed_at <= ?"
                " AND (locked_until IS NULL OR locked_until <= ?)",
                (now - int(keep), now),
            ).rowcount

    # -- sent items -----------------------------------------------------------------------

    def sent_messages(
        self, senders: Sequence[str], query: str = "", offset: int = 0, limit: int = 20
    ) -> SentPage:
        """Newest first, through the messages_sender index. The subject is sealed, so a search
        decrypts the subjects of the senders' messages to match them (AES-GCM: microseconds
        each); a page without a search decrypts only its own."""
        keys = sender_side.sender_keys(senders)
        if not keys:
            return SentPage([], 0)
        marks = ", ".join("?" * len(keys))
        select = (
            f"SELECT {', '.join(MESSAGE_FIELDS)} FROM messages m WHERE m.sender IN ({marks})"
            " ORDER BY m.created_at DESC, m.id DESC"
        )
        needle = sender_side.needle(query)
        with self._lock:
            if not needle:
                (total,) = self._conn.execute(
                    f"SELECT COUNT(*) FROM messages WHERE sender IN ({marks})", keys
                ).fetchone()
                rows = self._conn.execute(
                    select + " LIMIT ? OFFSET ?", (*keys, limit, offset)
                ).fetchall()
                return sender_side.page(self._sealing, rows, total)
            rows = self._conn.execute(select, keys).fetchall()
            by_recipient = {
                str(r[0])
                for r in self._conn.execute(
                    "SELECT DISTINCT r.message_id FROM recipients r JOIN messages m"
                    f" ON m.id = r.message_id WHERE m.sender IN ({marks})"
                    " AND instr(lower(r.address), ?) > 0",
                    (*keys, needle),
                )
            }
        return sender_side.search(self._sealing, rows, by_recipient, needle, offset, limit)

    def set_expiry(self, message_id: str, expires_at: datetime, reason: str = "") -> bool:
        at = ts(expires_at)
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE messages SET expires_at = ? WHERE id = ? AND revoked_at IS NULL"
                # expired is final, as revoked is (the purge takes its key in a while)
                " AND (expires_at IS NULL OR expires_at > ?)"
                " AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = messages.id"
                " AND r.delivery = 'notification' AND r.revoked_at IS NULL)",
                (at, message_id, now),
            ).rowcount
            if done:
                audit(
                    cur, now, message_id, None, "expiry-set", sender_side.expiry_detail(at, reason)
                )
        return bool(done)

    def claim_read_receipt(self, recipient_id: int) -> bool:
        now = int(self._now())
        with self._transaction() as cur:
            return (
                cur.execute(
                    "UPDATE recipients SET receipt_sent_at = ? WHERE id = ?"
                    " AND receipt_sent_at IS NULL",
                    (now, recipient_id),
                ).rowcount
                == 1
            )
