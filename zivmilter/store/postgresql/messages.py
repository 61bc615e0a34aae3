"""SQL of messages and their recipients (PostgreSQL): saving (the milter's hot path), reading,
revocation and expiry.

Everything sealed or hashed happens before the transaction starts (store/messages.py prepares
the rows, shared with SQLite); inside it, only inserts. A message's wrapped data key is a row of
`message_keys` (schema.py): revocation deletes it, and expiry's maintenance run rewrites that
small table so the deleted keys leave its file too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

import psycopg

from zivmilter import crypto, defaults
from zivmilter.errors import StoreError
from zivmilter.store import contents, messages, rekey
from zivmilter.store.postgresql.connection import Cursor, audit
from zivmilter.store.postgresql.contents import ContentsMixin, insert_blob
from zivmilter.store.postgresql.schema import HOUSEKEEPING_LOCK, MAINTENANCE_LOCK
from zivmilter.store.records import (
    MessageRecord,
    NewMessage,
    PartRecord,
    RecipientRecord,
    SavedMessage,
)
from zivmilter.store.rows import RECIPIENT_FIELDS, message_record, recipient_record
from zivmilter.store.sealing import DataKey


class MessagesMixin(ContentsMixin):
    # -- saving ---------------------------------------------------------------------------

    def save_message(self, message: NewMessage) -> SavedMessage:
        """Encrypt and durably store a message; returns its id and the recipients' link tokens."""
        # Everything hashed (scrypt takes ~0.1 s) and sealed before the transaction starts,
        # which only inserts. Its contents, large attachments (NewMessage.parts) as contents of
        # their own under the same key, are written before it too (a large one committed to
        # its chunks).
        new = messages.prepare(self._sealing, message, self._now(), self._remembered)
        blobs = contents.encrypt(self._blobs, self._inline_max, new.key, new.contents)

        def write(cur: Cursor) -> None:
            cur.execute(
                "INSERT INTO messages (id, rfc822_id, queue_id, sender, subject, created_at,"
                " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                new.message,
            )
            cur.execute(
                "INSERT INTO message_keys (message_id, wrapped_key) VALUES (%s, %s)",
                (new.id, new.key.wrapped),
            )
            cur.executemany(
                "INSERT INTO conversations (message_id, number) VALUES (%s, %s)", new.conversations
            )
            cur.executemany(
                "INSERT INTO recipients (message_id, address, conversation, method, delivery,"
                " rule, level, token_hash, verification, phone, access_code_hash, hint,"
                " notified_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                new.recipients,
            )
            for (blob_id, kind, _), blob in zip(new.blobs, blobs, strict=True):
                insert_blob(cur, blob, blob_id, new.id, kind)
            cur.executemany(
                "INSERT INTO parts (message_id, leaf, blob_id, filename, content_type)"
                " VALUES (%s, %s, %s, %s, %s)",
                new.parts,
            )
            if new.handover is not None:  # a client's retry finds it (postgresql/handovers.py)
                cur.execute(
                    "INSERT INTO handovers (message_id, retry_key, tokens, created_at)"
                    " VALUES (%s, %s, %s, %s)",
                    new.handover,
                )
            audit(cur, new.created_at, new.id, None, "stored", f"queue {message.queue_id}")

        try:
            # No group commit by hand: each thread commits on a connection of its own, and
            # PostgreSQL flushes the commits that arrive together with one WAL write. The
            # inserts go in one round trip (pipeline mode): they read nothing back.
            with self._pipelined() as cur:
                write(cur)
        except BaseException:
            contents.remove(self._blobs, [b.ref for b in blobs])
            raise
        return SavedMessage(id=new.id, tokens=new.tokens, size=blobs[0].written.size)

    def _remembered(self, column: Literal["sms", "access_code_hash"], address: str) -> Any:
        """The contact book's (column,) of `address`, or None."""
        with self._read() as cur:
            return cur.execute(
                f"SELECT {column} FROM contacts WHERE address = %s", (address,)
            ).fetchone()

    def access_code_matches(self, stored_hash: str | None, code: str) -> bool:
        return messages.access_code_matches(self._sealing, stored_hash, code, self._carried_peppers)

    def _carried_peppers(self) -> list[tuple[str, bytes]]:
        """The peppers a key rotation carried over (store/rekey.py), read when a hash needs one."""
        with self._read() as cur:
            return rekey.carried(cur)

    def discard(self, message_id: str) -> None:
        """Forget a message entirely: the milter stored it but could not accept it after all."""
        with self._transaction() as cur:
            paths = [
                str(row[0])
                for row in cur.execute(
                    "SELECT path FROM blobs WHERE message_id = %s", (message_id,)
                ).fetchall()
            ]
            cur.execute("DELETE FROM messages WHERE id = %s", (message_id,))
            audit(cur, int(self._now()), message_id, None, "discarded", "")
        contents.remove(self._blobs, paths)

    # -- reading --------------------------------------------------------------------------

    def message(self, message_id: str) -> MessageRecord | None:
        with self._read() as cur:
            row = cur.execute(_MESSAGE_SELECT + " WHERE m.id = %s", (message_id,)).fetchone()
        return None if row is None else message_record(self._sealing, row)

    def find_messages(self, ref: str) -> list[MessageRecord]:
        """Messages by store id or RFC 822 Message-ID (angle brackets optional), oldest first."""
        bare, angled = messages.message_ref(ref)
        with self._read() as cur:
            rows = cur.execute(
                _MESSAGE_SELECT + " WHERE m.id = %s OR m.rfc822_id IN (%s, %s)"
                " ORDER BY m.created_at, m.id",
                (bare, angled, bare),
            ).fetchall()
        return [message_record(self._sealing, r) for r in rows]

    def open_content(self, message_id: str) -> BinaryIO | None:
        """The original message bytes, decrypted as read; None if unknown, revoked or expired.

        Reading raises StoreError if the blob does not decrypt (wrong key, damage, truncation):
        treat an error at any point, also at the end, as "no message".
        """
        with self._read() as cur:
            row = cur.execute(
                "SELECT id FROM blobs WHERE message_id = %s AND kind = 'message'"
                " AND deleted_at IS NULL",
                (message_id,),
            ).fetchone()
        key = None if row is None else self._live_message_key(message_id)
        return None if row is None or key is None else self._open_blob(str(row[0]), key)

    def part(self, message_id: str, index: int) -> PartRecord | None:
        """A large attachment kept apart at save (`NewMessage.parts`); None when the message
        has none at that index (saved before schema 4, or the part was small: parse the
        message), or is revoked or expired."""
        row = self._part_row(message_id, index)
        key = None if row is None else self._live_message_key(message_id)
        return messages.part_record(key, message_id, index, row)

    def open_part(self, message_id: str, index: int) -> BinaryIO | None:
        """That attachment's bytes, decrypted as read (errors as for `open_content`)."""
        row = self._part_row(message_id, index)
        key = None if row is None else self._live_message_key(message_id)
        return None if row is None or key is None else self._open_blob(str(row[0]), key)

    def _part_row(self, message_id: str, index: int) -> Any:
        with self._read() as cur:
            return cur.execute(
                "SELECT p.blob_id, p.filename, p.content_type, b.size FROM parts p"
                " JOIN blobs b ON b.id = p.blob_id"
                " WHERE p.message_id = %s AND p.leaf = %s AND b.deleted_at IS NULL",
                (message_id, index),
            ).fetchone()

    def find_recipient_by_token(self, token: str) -> RecipientRecord | None:
        """The recipient a link token belongs to (also when revoked or expired: check `message`)."""
        digest = crypto.token_hash(token)
        with self._read() as cur:
            row = cur.execute(_RECIPIENT_SELECT + " WHERE r.token_hash = %s", (digest,)).fetchone()
        return None if row is None else recipient_record(self._sealing, row)

    def recipient(self, recipient_id: int) -> RecipientRecord | None:
        with self._read() as cur:
            row = cur.execute(_RECIPIENT_SELECT + " WHERE r.id = %s", (recipient_id,)).fetchone()
        return None if row is None else recipient_record(self._sealing, row)

    def recipients(self, message_id: str) -> list[RecipientRecord]:
        with self._read() as cur:
            rows = cur.execute(
                _RECIPIENT_SELECT + " WHERE r.message_id = %s ORDER BY r.id", (message_id,)
            ).fetchall()
        return [recipient_record(self._sealing, row) for row in rows]

    def mark_notified(self, message_id: str, address: str) -> None:
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute(
                "UPDATE recipients SET notified_at = %s WHERE message_id = %s AND address = %s",
                (now, message_id, address),
            )
            audit(cur, now, message_id, address, "notified", "")

    def mark_opened(self, recipient_id: int) -> bool:
        """Record an open (SPEC 8: every open is recorded); the first one sets `opened_at`.
        False, recording nothing, when the message is revoked by now.

        Locking: the message row is read FOR SHARE in the open's own transaction: a revocation
        (an UPDATE of that row) committed first makes the read find nothing; one in flight
        waits until this open commits. So the audit log never shows an open after the
        revocation, on any node.

        Every view of a message writes one, so it commits without waiting for its WAL flush
        (synchronous_commit=off for this transaction only, as SQLite's synchronous=NORMAL):
        it survives a crash of any zivmilter process; a crash of the database server itself
        can drop the last few (at most 3 x wal_writer_delay).

        One statement (the read, the update and the audit row as its CTEs, the commit setting
        by set_config for its own transaction), in autocommit: it is its transaction, the
        lock held until it commits. One round trip and one statement per view, where BEGIN,
        SET LOCAL and COMMIT around it made four (pipelined: two round trips)."""
        now = int(self._now())
        with self._statement() as cur:
            cur.execute(_MARK_OPENED, (recipient_id, now, now))
            return cur.fetchone() is not None

    def portal_view(self, message_id: str) -> bytes | None:
        """What the portal keeps of a message to show it without parsing it again (its headers,
        body text and attachment list); sealed with the message's own key, so revoking the
        message (destroying that key) makes it unreadable too."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT m.portal_view, k.wrapped_key FROM messages m"
                " JOIN message_keys k ON k.message_id = m.id"
                " WHERE m.id = %s AND m.revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        return self._sealing.data_key(bytes(row[1])).unseal_portal_view(message_id, bytes(row[0]))

    def save_portal_view(self, message_id: str, view: bytes) -> None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT k.wrapped_key FROM messages m JOIN message_keys k ON k.message_id = m.id"
                " WHERE m.id = %s AND m.revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None:
            return
        sealed = self._sealing.data_key(bytes(row[0])).seal_portal_view(message_id, view)
        with self._transaction() as cur:
            cur.execute(
                "UPDATE messages SET portal_view = %s WHERE id = %s AND revoked_at IS NULL",
                (sealed, message_id),
            )

    # -- revocation and expiry ------------------------------------------------------------

    def revoke(self, message_id: str, reason: str = "") -> bool:
        """End the notification links: delete the message's wrapped data key, its encrypted
        copy and large attachments kept apart (their `parts` rows stay, names erased), replies
        and kept view; False if already gone. Large attachments of direct copies stay (their own
        keys): a direct delivery cannot be revoked (SPEC 8).

        Locking: the conditional UPDATE of the message row decides (a second revoker, on any
        node, waits for the first and then matches nothing). What the deletion guarantees on
        PostgreSQL: README "Several nodes"."""
        now = int(self._now())
        with self._transaction() as cur:
            paths = self._revoke_in(cur, message_id, reason, now)
        if paths is None:
            return False
        contents.remove(self._blobs, paths)
        return True

    def _revoke_in(self, cur: Cursor, message_id: str, reason: str, now: int) -> list[str] | None:
        """Revoke inside the caller's transaction: the references of the contents to remove
        after it commits, or None when the message was revoked already."""
        done = cur.execute(
            "UPDATE messages SET subject = NULL, portal_view = NULL, revoked_at = %s"
            " WHERE id = %s AND revoked_at IS NULL",
            (now, message_id),
        ).rowcount
        if not done:
            return None
        cur.execute("DELETE FROM message_keys WHERE message_id = %s", (message_id,))
        cur.execute(
            "UPDATE recipients SET phone = NULL, hint = NULL WHERE message_id = %s",
            (message_id,),
        )
        cur.execute("UPDATE parts SET filename = NULL WHERE message_id = %s", (message_id,))
        # A secure reply the MTA has not taken yet goes with the message's key: on record.
        for reply_id, address in cur.execute(
            "SELECT p.id, r.address FROM replies p JOIN recipients r ON r.id = p.recipient_id"
            " WHERE p.message_id = %s AND p.sent_at IS NULL",
            (message_id,),
        ).fetchall():
            dropped = messages.reply_dropped(reply_id)
            audit(cur, now, message_id, str(address), "reply-dropped", dropped)
        paths = [
            str(row[0])
            for row in cur.execute(
                "SELECT path FROM blobs WHERE message_id = %s AND kind != 'attachment'"
                " AND deleted_at IS NULL",
                (message_id,),
            ).fetchall()
        ]
        cur.execute(
            "UPDATE blobs SET deleted_at = %s, data = NULL"
            " WHERE message_id = %s AND kind != 'attachment' AND deleted_at IS NULL",
            (now, message_id),
        )
        audit(cur, now, message_id, None, "revoked", reason)
        return [p for p in paths if p]

    def purge_expired(self, reply_grace: float = defaults.UNSENT_REPLY_GRACE) -> int:
        """Revoke every notification message past its expiry (run from a timer); returns how
        many. A message delivered directly to every recipient does not expire (SPEC 8).

        A message with a secure reply the MTA has not taken yet (nor refused) keeps its key
        for `reply_grace` seconds after that reply was written, so that maintenance can still
        send it; its recipients cannot read it meanwhile (expiry is checked on every read).

        Locking: each message is revoked by `revoke` (its conditional UPDATE decides), so two
        runs at once, on two nodes, revoke each message once. Then `shred_keys` rewrites the
        key table, under an advisory lock (one run does it; the other skips it)."""
        now = int(self._now())
        with self._read() as cur:
            ids = [
                str(row[0])
                for row in cur.execute(
                    "SELECT id FROM messages m WHERE revoked_at IS NULL AND expires_at IS NOT NULL"
                    " AND expires_at <= %s AND EXISTS (SELECT 1 FROM recipients r"
                    " WHERE r.message_id = m.id AND r.delivery = 'notification')"
                    " AND NOT EXISTS (SELECT 1 FROM replies p WHERE p.message_id = m.id"
                    " AND p.sent_at IS NULL AND p.refused_at IS NULL AND p.created_at > %s)",
                    (now, now - int(reply_grace)),
                ).fetchall()
            ]
        revoked = sum(1 for i in ids if self.revoke(i, "expired"))
        self.shred_keys()
        return revoked

    def shred_keys(self) -> bool:
        """Rewrite `message_keys` into a new file (VACUUM FULL), so that the wrapped keys of
        messages revoked since the last run leave the live table's file: a deleted row lives
        on in its page until then (README "Several nodes"). False when another node is doing
        it, or the table's lock was not granted within a few seconds (the next run does it).

        Locking: pg_try_advisory_lock (one node at a time) and lock_timeout, so a long
        transaction elsewhere makes this run skip rather than stall every save behind it."""
        from zivmilter.store.postgresql.connection import connect

        conn = connect(self._dsn, self._passfile, autocommit=True)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK,)).fetchone()
            if row is None or not row[0]:
                return False
            try:
                conn.execute("SET lock_timeout = '5s'")
                conn.execute("VACUUM (FULL) message_keys")
                return True
            except psycopg.errors.LockNotAvailable:
                return False
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK,))
        except psycopg.Error as exc:
            raise StoreError(f"store database: rewriting the key table: {exc}") from exc
        finally:
            conn.close()

    def finish_erasure(self, wait: float | None = None) -> bool:
        """What a revocation destroyed, gone from the live table's file too (`shred_keys`):
        False when another node is rewriting it or its lock was not granted (maintenance's next
        run does it). `wait` is SQLite's; here the rewrite's own lock timeout bounds it. Copies
        in WAL archives, replicas and backups age out with them (README "Several nodes")."""
        return self.shred_keys()

    @contextlib.contextmanager
    def housekeeping_lock(self) -> Iterator[bool]:
        """True while this handle holds the housekeeping lock, False when another run (on any
        node) holds it; see `Housekeeping`.

        Locking: pg_try_advisory_lock on a session of its own, outside the pool, held until the
        block ends (closing the session releases it, so a run that dies leaves no lock behind;
        a session the server loses releases it too: keep the run shorter than tcp timeouts)."""
        from zivmilter.store.postgresql.connection import connect

        conn = connect(self._dsn, self._passfile, autocommit=True)
        try:
            try:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (HOUSEKEEPING_LOCK,)
                ).fetchone()
            except psycopg.Error as exc:
                raise StoreError(f"store database: the housekeeping lock: {exc}") from exc
            yield bool(row and row[0])
        finally:
            conn.close()

    def _live(self, message_id: str, cur: Cursor | None = None) -> bool:
        """Whether the message exists and is not revoked; inside a transaction (`cur`), its row
        stays locked FOR SHARE until that ends, so no revocation commits meanwhile."""
        sql = "SELECT 1 FROM messages WHERE id = %s AND revoked_at IS NULL"
        if cur is not None:
            return cur.execute(sql + " FOR SHARE", (message_id,)).fetchone() is not None
        with self._read() as c:
            return c.execute(sql, (message_id,)).fetchone() is not None

    # -- rows to records ------------------------------------------------------------------

    def _check_kek(self) -> None:
        """Fail at start, not at the first portal visit, when the KEK is not the store's."""
        with self._read() as cur:
            row = cur.execute("SELECT wrapped_key FROM message_keys LIMIT 1").fetchone()
        if row is not None:
            self._sealing.data_key(bytes(row[0]))

    def _live_message_key(self, message_id: str) -> DataKey | None:
        """The message's data key while its content may be read: None once revoked or expired."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT k.wrapped_key, m.expires_at FROM messages m"
                " JOIN message_keys k ON k.message_id = m.id"
                " WHERE m.id = %s AND m.revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        return messages.live_key(self._sealing, row, self._now())


MESSAGE_FIELDS = (
    "m.id", "m.rfc822_id", "m.queue_id", "m.sender", "m.subject", "k.wrapped_key",
    "m.created_at", "m.expires_at", "m.revoked_at",
    "(SELECT size FROM blobs b WHERE b.message_id = m.id AND b.kind = 'message')",
)  # fmt: skip
KEY_JOIN = " LEFT JOIN message_keys k ON k.message_id = m.id"
_MESSAGE_SELECT = f"SELECT {', '.join(MESSAGE_FIELDS)} FROM messages m" + KEY_JOIN
_RECIPIENT_SELECT = (
    f"SELECT {', '.join(MESSAGE_FIELDS)}, "
    + ", ".join("k.wrapped_key" if f == "wrapped_key" else "r." + f for f in RECIPIENT_FIELDS)
    + " FROM recipients r JOIN messages m ON m.id = r.message_id"
    + KEY_JOIN
)

# mark_opened: nothing when the message is revoked (the read finds no row), else the first
# open's time and an audit row as `audit` writes it.
_MARK_OPENED = (
    "WITH opened AS (SELECT r.id, r.message_id, r.address FROM recipients r JOIN messages m"
    " ON m.id = r.message_id WHERE r.id = %s AND m.revoked_at IS NULL FOR SHARE OF m),"
    " marked AS (UPDATE recipients SET opened_at = COALESCE(opened_at, %s)"
    " WHERE id IN (SELECT id FROM opened))"
    " INSERT INTO audit (at, message_id, recipient, event, detail)"
    " SELECT %s, message_id, address, 'opened', '' FROM opened"
    # synchronous_commit=off for this statement's transaction only (is_local): read at its
    # commit; with no row (revoked) nothing is written, so nothing waits for a flush either
    " WHERE set_config('synchronous_commit', 'off', true) = 'off'"
    " RETURNING message_id"
)
