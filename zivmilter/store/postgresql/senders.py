"""SQL of the sender's side of the portal (PostgreSQL): enrolment invitations, the sign-in
lockout of sender accounts (and of addresses without one, `sign_in_counts`), sent items, expiry
and read receipts (issue 19).

What the rows mean is store/senders.py's, shared with SQLite. As for links (links.py), the
lockout's length is the portal's decision, passed in; each check-then-act here is one
transaction that locks what it decides on (each method says how), so it holds when the portals
of several nodes share the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from zivmilter import defaults
from zivmilter.store import attempts
from zivmilter.store import senders as sender_side
from zivmilter.store.attempts import Counters, Lockout
from zivmilter.store.postgresql.connection import Cursor, audit, ts
from zivmilter.store.postgresql.messages import KEY_JOIN, MESSAGE_FIELDS, MessagesMixin
from zivmilter.store.records import SentPage, SignInAttempt

_SENDER = "kind = 'sender' AND active"


class SendersMixin(MessagesMixin):
    # -- invitations ----------------------------------------------------------------------

    def add_invite(self, address: str, lifetime: float) -> str | None:
        """A one-time enrolment token for an active sender account; earlier unused
        invitations of the address end.

        Locking: the account row FOR UPDATE: invitations of one address, from any node, are
        issued one after the other, so exactly one unused invitation remains, and none is
        issued for an account switched off meanwhile."""
        new = sender_side.new_invite(address, self._now(), lifetime)
        if new is None:
            return None
        with self._transaction() as cur:
            row = cur.execute(
                f"SELECT 1 FROM accounts WHERE address = %s AND {_SENDER} FOR UPDATE",
                (new.address,),
            ).fetchone()
            if row is None:
                return None
            cur.execute(
                "DELETE FROM invites WHERE address = %s AND used_at IS NULL", (new.address,)
            )
            cur.execute(
                "INSERT INTO invites (token_hash, address, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s)",
                (new.token_hash, new.address, new.created_at, new.expires_at),
            )
            audit(cur, new.created_at, None, new.address, "invite-issued", "")
        return new.token

    def invite_address(self, token_hash: str) -> str | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT i.address FROM invites i JOIN accounts a ON a.address = i.address"
                " WHERE i.token_hash = %s AND i.used_at IS NULL AND i.expires_at > %s"
                " AND a.kind = 'sender' AND a.active",
                (token_hash, int(self._now())),
            ).fetchone()
        return sender_side.invited(row)

    def redeem_invite(
        self, token_hash: str, password_hash: str, totp_secret: bytes, totp_step: int
    ) -> str | None:
        """Spend the invitation and set the account's password and authenticator.

        Locking: the invitation and its account row FOR UPDATE (one SELECT over both): a
        second redeemer, on any node, waits for the first, then PostgreSQL re-checks the
        conditions on the rows the first committed and finds the invitation used. The
        conditional UPDATE of the invitation then spends it (its row count decides)."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT i.address FROM invites i JOIN accounts a ON a.address = i.address"
                " WHERE i.token_hash = %s AND i.used_at IS NULL AND i.expires_at > %s"
                " AND a.kind = 'sender' AND a.active FOR UPDATE",
                (token_hash, now),
            ).fetchone()
            if row is None:
                return None
            address = str(row[0])
            spent = cur.execute(
                "UPDATE invites SET used_at = %s WHERE token_hash = %s AND used_at IS NULL",
                (now, token_hash),
            ).rowcount
            if spent != 1:
                return None
            cur.execute(
                "UPDATE accounts SET password_hash = %s, totp_secret = %s, totp_last_step = %s,"
                " failed_streak = 0, locked_until = NULL, session_gen = session_gen + 1"
                " WHERE address = %s",
                (password_hash, self._sealing.seal_totp(address, totp_secret), totp_step, address),
            )
            audit(cur, now, None, address, "sender-enrolled", "password and authenticator set")
        return address

    # -- signing in -----------------------------------------------------------------------

    def claim_sign_in(self, address: str, lockout: Lockout, detail: str = "") -> SignInAttempt:
        """Claim one sign-in of `address` before comparing it (see `SignInAttempt`): counted
        as wrong at once, refused while the account is locked.

        Locking: the account row FOR UPDATE: sign-ins of one account, from any portal node,
        are counted one after the other, so the limit holds however many arrive at once."""
        key = sender_side.sign_in_key(address)
        tag = self._sealing.sign_in_tag(key)  # for every address: the same work either way
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT failed_streak, lockouts, locked_until FROM accounts"
                f" WHERE address = %s AND {_SENDER} FOR UPDATE",
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
                "UPDATE accounts SET failed_attempts = failed_attempts + 1, failed_streak = %s,"
                " lockouts = %s, locked_until = COALESCE(%s, locked_until) WHERE address = %s",
                (n.streak, n.lockouts, n.until, key),
            )
        return SignInAttempt(key, True, n.locked_until, counted=True)

    def settle_sign_in(self, attempt: SignInAttempt, ok: bool) -> datetime | None:
        """Settle a claimed sign-in as `settle_attempt` settles a link's answer: a right one
        takes back its count, ends the streak and lifts a lock its own claim set (it was in
        before the limit); a wrong one is audited. The end of the lock in force now, if any.

        Locking: the account row FOR UPDATE, then one UPDATE whose conditions compare with
        the lock this claim set (a later claim's lock is left alone)."""
        if not attempt.admitted:
            return attempt.locked_until
        now = int(self._now())
        set_lock = ts(attempt.locked_until)
        if attempt.tag is not None:
            return self._settle_without_account(attempt.tag, ok and attempt.counted, set_lock, now)
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT locked_until FROM accounts WHERE address = %s FOR UPDATE",
                (attempt.address,),
            ).fetchone()
            if ok and attempt.counted and row is not None:
                cur.execute(
                    "UPDATE accounts SET failed_attempts = GREATEST(failed_attempts - 1, 0),"
                    " failed_streak = 0,"
                    " lockouts = lockouts - CASE WHEN %s::bigint IS NOT NULL"
                    " AND locked_until IS NOT DISTINCT FROM %s::bigint THEN 1 ELSE 0 END,"
                    " locked_until = CASE WHEN locked_until IS NOT DISTINCT FROM %s::bigint"
                    " THEN NULL ELSE locked_until END"
                    " WHERE address = %s RETURNING locked_until",
                    (set_lock, set_lock, set_lock, attempt.address),
                )
                row = cur.fetchone()
            for event, detail in sender_side.settle_events(attempt, ok):
                audit(cur, now, None, attempt.address, event, detail)
        return attempts.settled_lock(row, now)

    def _claim_without_account(
        self, cur: Cursor, key: str, tag: str, now: int, lockout: Lockout
    ) -> SignInAttempt:
        """An address without an active sender account counts on its own row of
        `sign_in_counts`, locked as an account's row is. Nothing is audited: the audit would
        list the address.

        Locking: the row is made if missing (INSERT ... ON CONFLICT DO NOTHING: a second
        maker, on any node, waits for the first's insert, then does nothing), then taken FOR
        UPDATE: the claims of one address are counted one after the other."""
        cur.execute(
            "INSERT INTO sign_in_counts (tag, failed_at) VALUES (%s, %s)"
            " ON CONFLICT (tag) DO NOTHING",
            (tag, now),
        )
        row = cur.execute(
            "SELECT failed_streak, lockouts, locked_until FROM sign_in_counts"
            " WHERE tag = %s FOR UPDATE",
            (tag,),
        ).fetchone()
        counters = Counters.read(*(row if row is not None else (0, 0, None)))
        locked = counters.locked(now)
        if locked is not None:
            return SignInAttempt(key, False, locked, tag=tag)
        n = counters.count(now, lockout)
        # an upsert: a maintenance run may have pruned the (old, unlocked) row meanwhile
        cur.execute(
            "INSERT INTO sign_in_counts (tag, failed_streak, lockouts, locked_until, failed_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tag) DO UPDATE SET"
            " failed_streak = EXCLUDED.failed_streak, lockouts = EXCLUDED.lockouts,"
            " locked_until = COALESCE(EXCLUDED.locked_until, sign_in_counts.locked_until),"
            " failed_at = EXCLUDED.failed_at",
            (tag, n.streak, n.lockouts, n.until, now),
        )
        return SignInAttempt(key, True, n.locked_until, counted=True, tag=tag)

    def _settle_without_account(
        self, tag: str, right: bool, set_lock: int | None, now: int
    ) -> datetime | None:
        """As `settle_sign_in` for an account's row (right only when an account came to be
        between the claim and the comparison). Locking: the row FOR UPDATE, as there."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT locked_until FROM sign_in_counts WHERE tag = %s FOR UPDATE", (tag,)
            ).fetchone()
            if right and row is not None:
                cur.execute(
                    "UPDATE sign_in_counts SET failed_streak = 0,"
                    " lockouts = lockouts - CASE WHEN %s::bigint IS NOT NULL"
                    " AND locked_until IS NOT DISTINCT FROM %s::bigint THEN 1 ELSE 0 END,"
                    " locked_until = CASE WHEN locked_until IS NOT DISTINCT FROM %s::bigint"
                    " THEN NULL ELSE locked_until END"
                    " WHERE tag = %s RETURNING locked_until",
                    (set_lock, set_lock, set_lock, tag),
                )
                row = cur.fetchone()
        return attempts.settled_lock(row, now)

    def prune_sign_in_counts(self, keep: float = defaults.SIGN_IN_COUNT_KEEP_SECONDS) -> int:
        """Locking: one DELETE; a claim that holds a row meanwhile is waited for, and the row
        re-checked as it committed it."""
        now = int(self._now())
        with self._transaction() as cur:
            return cur.execute(
                "DELETE FROM sign_in_counts WHERE failed_at <= %s"
                " AND (locked_until IS NULL OR locked_until <= %s)",
                (now - int(keep), now),
            ).rowcount

    # -- sent items -----------------------------------------------------------------------

    def sent_messages(
        self, senders: Sequence[str], query: str = "", offset: int = 0, limit: int = 20
    ) -> SentPage:
        """Newest first, through the messages_sender index (ties in id order, bytewise, as in
        SQLite). The subject is sealed, so a search decrypts the subjects of the senders'
        messages to match them (AES-GCM: microseconds each); a page without a search decrypts
        only its own. Reads only: one transaction, so the count and the page agree."""
        keys = sender_side.sender_keys(senders)
        if not keys:
            return SentPage([], 0)
        select = (
            f"SELECT {', '.join(MESSAGE_FIELDS)} FROM messages m{KEY_JOIN}"
            ' WHERE m.sender = ANY(%s) ORDER BY m.created_at DESC, m.id COLLATE "C" DESC'
        )
        needle = sender_side.needle(query)
        with self._read() as cur:
            if not needle:
                counted = cur.execute(
                    "SELECT COUNT(*) FROM messages WHERE sender = ANY(%s)", (keys,)
                ).fetchone()
                rows = cur.execute(select + " LIMIT %s OFFSET %s", (keys, limit, offset)).fetchall()
                total = 0 if counted is None else counted[0]
                return sender_side.page(self._sealing, rows, total)
            rows = cur.execute(select, (keys,)).fetchall()
            by_recipient = {
                str(r[0])
                for r in cur.execute(
                    "SELECT DISTINCT r.message_id FROM recipients r JOIN messages m"
                    " ON m.id = r.message_id WHERE m.sender = ANY(%s)"
                    " AND strpos(lower(r.address), %s) > 0",
                    (keys, needle),
                ).fetchall()
            }
        return sender_side.search(self._sealing, rows, by_recipient, needle, offset, limit)

    def set_expiry(self, message_id: str, expires_at: datetime, reason: str = "") -> bool:
        """Set when the message expires, while it has an open notification link.

        Locking: the message row FOR UPDATE first, as `revoke_recipient` takes it, so an
        expiry and the revocation of the message's last link run one after the other; the
        conditional UPDATE then reads the links as committed (its row count decides)."""
        at = ts(expires_at)
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute("SELECT 1 FROM messages WHERE id = %s FOR UPDATE", (message_id,))
            done = cur.execute(
                "UPDATE messages SET expires_at = %s WHERE id = %s AND revoked_at IS NULL"
                # expired is final, as revoked is (the purge takes its key in a while)
                " AND (expires_at IS NULL OR expires_at > %s)"
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
        """True for the first caller only.

        Locking: one conditional UPDATE; a concurrent claimer, on any node, waits for the row
        and re-checks `receipt_sent_at IS NULL` on the version the first committed, so its
        row count is 0."""
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE recipients SET receipt_sent_at = %s WHERE id = %s"
                " AND receipt_sent_at IS NULL",
                (now, recipient_id),
            ).rowcount
        return done == 1
