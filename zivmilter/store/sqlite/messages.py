"""SQL of messages and their recipients: saving (the milter's hot path), reading, revocation.

Everything sealed or hashed happens before the store's lock is taken (store/messages.py prepares
the rows, shared with PostgreSQL); inside it, only inserts.
"""

from __future__ import annotations

import sqlite3
from typing import Any, BinaryIO, Literal

from zivmilter import crypto, defaults
from zivmilter.store import contents, messages, rekey
from zivmilter.store.records import (
    MessageRecord,
    NewMessage,
    PartRecord,
    RecipientRecord,
    SavedMessage,
)
from zivmilter.store.rows import RECIPIENT_FIELDS, message_record, recipient_record
from zivmilter.store.sealing import DataKey
from zivmilter.store.sqlite.connection import audit
from zivmilter.store.sqlite.contents import ContentsMixin, insert_blob


class MessagesMixin(ContentsMixin):
    # -- saving ---------------------------------------------------------------------------

    def save_message(self, message: NewMessage) -> SavedMessage:
        """Encrypt and durably store a message; returns its id and the recipients' link tokens."""
        # Everything hashed (scrypt takes ~0.1 s) and sealed before taking the store's lock;
        # `write` only inserts.
        new = messages.prepare(self._sealing, message, self._now(), self._remembered)
        blobs = contents.encrypt(self._blobs, self._inline_max, new.key, new.contents)

        def write(cur: sqlite3.Cursor) -> None:
            cur.execute(
                "INSERT INTO messages (id, rfc822_id, queue_id, sender, subject, created_at,"
                " expires_at, wrapped_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*new.message, new.key.wrapped),
            )
            cur.executemany(
                "INSERT INTO conversations (message_id, number) VALUES (?, ?)", new.conversations
            )
            cur.executemany(
                "INSERT INTO recipients (message_id, address, conversation, method, delivery,"
                " rule, level, token_hash, verification, phone, access_code_hash, hint,"
                " notified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                new.recipients,
            )
            for (blob_id, kind, _), blob in zip(new.blobs, blobs, strict=True):
                insert_blob(cur, blob, blob_id, new.id, kind)
            cur.executemany(
                "INSERT INTO parts (message_id, leaf, blob_id, filename, content_type)"
                " VALUES (?, ?, ?, ?, ?)",
                new.parts,
            )
            if new.handover is not None:
                cur.execute(
                    "INSERT INTO handovers (message_id, retry_key, tokens, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    new.handover,
                )
            audit(cur, new.created_at, new.id, None, "stored", f"queue {message.queue_id}")

        try:
            self._commit_grouped(write)
        except BaseException:
            contents.remove(self._blobs, [b.ref for b in blobs])
            raise
        return SavedMessage(id=new.id, tokens=new.tokens, size=blobs[0].written.size)

    def _remembered(self, column: Literal["sms", "access_code_hash"], address: str) -> Any:
        """The contact book's (column,) of `address`, or None."""
        with self._lock:
            return self._conn.execute(
                f"SELECT {column} FROM contacts WHERE address = ?", (address,)
            ).fetchone()

    def access_code_matches(self, stored_hash: str | None, code: str) -> bool:
        return messages.access_code_matches(self._sealing, stored_hash, code, self._carried_peppers)

    def _carried_peppers(self) -> list[tuple[str, bytes]]:
        """The peppers a key rotation carried over (store/rekey.py), read when a hash needs one."""
        with self._lock:
            return rekey.carried(self._conn)

    def discard(self, message_id: str) -> None:
        """Forget a message entirely: the milter stored it but could not accept it after all."""
        with self._transaction() as cur:
            paths = [
                str(row[0])
                for row in cur.execute("SELECT path FROM blobs WHERE message_id = ?", (message_id,))
            ]
            cur.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            audit(cur, int(self._now()), message_id, None, "discarded", "")
        contents.remove(self._blobs, paths)

    # -- reading --------------------------------------------------------------------------

    def message(self, message_id: str) -> MessageRecord | None:
        with self._lock:
            row = self._conn.execute(_MESSAGE_SELECT + " WHERE m.id = ?", (message_id,)).fetchone()
        return None if row is None else message_record(self._sealing, row)

    def find_messages(self, ref: str) -> list[MessageRecord]:
        """Messages by store id or RFC 822 Message-ID (angle brackets optional), oldest first."""
        bare, angled = messages.message_ref(ref)
        with self._lock:
            rows = self._conn.execute(
                _MESSAGE_SELECT + " WHERE m.id = ? OR m.rfc822_id IN (?, ?)"
                " ORDER BY m.created_at, m.id",
                (bare, angled, bare),
            ).fetchall()
        return [message_record(self._sealing, r) for r in rows]

    def open_content(self, message_id: str) -> BinaryIO | None:
        """The original message bytes, decrypted as read; None if unknown, revoked or expired.

        Reading raises StoreError if the blob does not decrypt (wrong key, damage, truncation):
        treat an error at any point, also at the end, as "no message".
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM blobs WHERE message_id = ? AND kind = 'message'"
                " AND deleted_at IS NULL",
                (message_id,),
            ).fetchone()
        key = None if row is None else self._live_message_key(message_id)
        return None if row is None or key is None else self._open_blob(str(row[0]), key)

    def part(self, message_id: str, index: int) -> PartRecord | None:
        """A large attachment kept apart at save (`NewMessage.parts`); None when the message
        has none at that index (saved before schema 8, or the part was small: parse the
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
        with self._lock:
            return self._conn.execute(
                "SELECT p.blob_id, p.filename, p.content_type, b.size FROM parts p"
                " JOIN blobs b ON b.id = p.blob_id"
                " WHERE p.message_id = ? AND p.leaf = ? AND b.deleted_at IS NULL",
                (message_id, index),
            ).fetchone()

    def find_recipient_by_token(self, token: str) -> RecipientRecord | None:
        """The recipient a link token belongs to (also when revoked or expired: check `message`)."""
        digest = crypto.token_hash(token)
        with self._lock:
            row = self._conn.execute(
                _RECIPIENT_SELECT + " WHERE r.token_hash = ?", (digest,)
            ).fetchone()
        return None if row is None else recipient_record(self._sealing, row)

    def recipient(self, recipient_id: int) -> RecipientRecord | None:
        with self._lock:
            row = self._conn.execute(
                _RECIPIENT_SELECT + " WHERE r.id = ?", (recipient_id,)
            ).fetchone()
        return None if row is None else recipient_record(self._sealing, row)

    def recipients(self, message_id: str) -> list[RecipientRecord]:
        with self._lock:
            rows = self._conn.execute(
                _RECIPIENT_SELECT + " WHERE r.message_id = ? ORDER BY r.id", (message_id,)
            ).fetchall()
        return [recipient_record(self._sealing, row) for row in rows]

    def mark_notified(self, message_id: str, address: str) -> None:
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute(
                "UPDATE recipients SET notified_at = ? WHERE message_id = ? AND address = ?",
                (now, message_id, address),
            )
            audit(cur, now, message_id, address, "notified", "")

    def mark_opened(self, recipient_id: int) -> bool:
        """Record an open (SPEC 8: every open is recorded); the first one sets `opened_at`.
        False, recording nothing, when the message is revoked by now: checked in the open's
        own transaction, so the audit log never shows an open after the revocation (a page
        that read the message just before a revoke committed is not shown; the caller shows
        the revoked page instead).

        Every view of a message writes one, so it commits without an fsync of its own (WAL
        with synchronous=NORMAL): it survives a crash of the process and reaches the disk with
        the next durable commit or checkpoint; a power loss can drop the last few. With an fsync
        per view, bench/portal.sh's p99 rose from ~65 ms to 80-330 ms (target: 100 ms)."""
        now = int(self._now())
        with self._lock:  # the setting is the connection's: no other transaction meanwhile
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction() as cur:
                    row = cur.execute(
                        "SELECT r.message_id, r.address FROM recipients r JOIN messages m"
                        " ON m.id = r.message_id WHERE r.id = ? AND m.revoked_at IS NULL",
                        (recipient_id,),
                    ).fetchone()
                    if row is None:
                        return False
                    cur.execute(
                        "UPDATE recipients SET opened_at = COALESCE(opened_at, ?) WHERE id = ?",
                        (now, recipient_id),
                    )
                    audit(cur, now, str(row[0]), str(row[1]), "opened", "")
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")
        return True

    def portal_view(self, message_id: str) -> bytes | None:
        """What the portal keeps of a message to show it without parsing it again (its headers,
        body text and attachment list); sealed with the message's own key, so revoking the
        message (destroying that key) makes it unreadable too."""
        with self._lock:
            row = self._conn.execute(
                "SELECT portal_view, wrapped_key FROM messages WHERE id = ? AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        return self._sealing.data_key(bytes(row[1])).unseal_portal_view(message_id, bytes(row[0]))

    def save_portal_view(self, message_id: str, view: bytes) -> None:
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped_key FROM messages WHERE id = ? AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None:
            return
        sealed = self._sealing.data_key(bytes(row[0])).seal_portal_view(message_id, view)
        with self._transaction() as cur:
            cur.execute(
                "UPDATE messages SET portal_view = ? WHERE id = ? AND revoked_at IS NULL",
                (sealed, message_id),
            )

    # -- revocation and expiry ------------------------------------------------------------

    def revoke(self, message_id: str, reason: str = "") -> bool:
        """End the notification links: destroy the message's wrapped data key, its encrypted
        copy and large attachments kept apart, replies and kept view; False if already gone.
        Large attachments of direct copies stay (their own keys): a direct delivery cannot be
        revoked (SPEC 8)."""
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE messages SET wrapped_key = NULL, subject = NULL, portal_view = NULL,"
                " revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, message_id),
            ).rowcount
            if not done:
                return False
            cur.execute(
                "UPDATE recipients SET phone = NULL, hint = NULL WHERE message_id = ?",
                (message_id,),
            )
            cur.execute("UPDATE parts SET filename = NULL WHERE message_id = ?", (message_id,))
            # A secure reply the MTA has not taken yet goes with the message's key: on record.
            for reply_id, address in cur.execute(
                "SELECT p.id, r.address FROM replies p JOIN recipients r ON r.id = p.recipient_id"
                " WHERE p.message_id = ? AND p.sent_at IS NULL",
                (message_id,),
            ).fetchall():
                dropped = messages.reply_dropped(reply_id)
                audit(cur, now, message_id, str(address), "reply-dropped", dropped)
            paths = [
                str(row[0])
                for row in cur.execute(
                    "SELECT path FROM blobs WHERE message_id = ? AND kind != 'attachment'"
                    " AND deleted_at IS NULL",
                    (message_id,),
                )
            ]
            cur.execute(
                "UPDATE blobs SET deleted_at = ?, data = NULL"
                " WHERE message_id = ? AND kind != 'attachment' AND deleted_at IS NULL",
                (now, message_id),
            )
            audit(cur, now, message_id, None, "revoked", reason)
        contents.remove(self._blobs, paths)
        # Old page images in the WAL still hold the wrapped key; fold them back and truncate.
        # A reader may hold them a while longer: `finish_erasure` says whether they are gone.
        self.finish_erasure()
        return True

    def purge_expired(self, reply_grace: float = defaults.UNSENT_REPLY_GRACE) -> int:
        """Revoke every notification message past its expiry (run from a timer); returns how
        many. A message delivered directly to every recipient does not expire (SPEC 8).

        A message with a secure reply the MTA has not taken yet (nor refused) keeps its key
        for `reply_grace` seconds after that reply was written, so that maintenance can still
        send it; its recipients cannot read it meanwhile (expiry is checked on every read)."""
        now = int(self._now())
        with self._lock:
            ids = [
                str(row[0])
                for row in self._conn.execute(
                    "SELECT id FROM messages m WHERE revoked_at IS NULL AND expires_at IS NOT NULL"
                    " AND expires_at <= ? AND EXISTS (SELECT 1 FROM recipients r"
                    " WHERE r.message_id = m.id AND r.delivery = 'notification')"
                    " AND NOT EXISTS (SELECT 1 FROM replies p WHERE p.message_id = m.id"
                    " AND p.sent_at IS NULL AND p.refused_at IS NULL AND p.created_at > ?)",
                    (now, now - int(reply_grace)),
                )
            ]
        return sum(1 for i in ids if self.revoke(i, "expired"))

    # -- rows to records ------------------------------------------------------------------

    def _check_kek(self) -> None:
        """Fail at start, not at the first portal visit, when the KEK is not the store's."""
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped_key FROM messages WHERE wrapped_key IS NOT NULL LIMIT 1"
            ).fetchone()
        if row is not None:
            self._sealing.data_key(bytes(row[0]))

    def _live_message_key(self, message_id: str) -> DataKey | None:
        """The message's data key while its content may be read: None once revoked or expired."""
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped_key, expires_at FROM messages WHERE id = ? AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        return messages.live_key(self._sealing, row, self._now())


MESSAGE_FIELDS = (
    "m.id", "m.rfc822_id", "m.queue_id", "m.sender", "m.subject", "m.wrapped_key",
    "m.created_at", "m.expires_at", "m.revoked_at",
    "(SELECT size FROM blobs b WHERE b.message_id = m.id AND b.kind = 'message')",
)  # fmt: skip
_MESSAGE_SELECT = f"SELECT {', '.join(MESSAGE_FIELDS)} FROM messages m"
_RECIPIENT_SELECT = (
    f"SELECT {', '.join(MESSAGE_FIELDS)}, "
    + ", ".join("m.wrapped_key" if f == "wrapped_key" else "r." + f for f in RECIPIENT_FIELDS)
    + " FROM recipients r JOIN messages m ON m.id = r.message_id"
)
