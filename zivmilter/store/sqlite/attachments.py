"""SQL of large attachments of direct deliveries, kept for download (SPEC 5).

Each has a data key of its own: it outlives its message's revocation and expiry (SPEC 8).
"""

from __future__ import annotations

import secrets
from typing import BinaryIO

from zivmilter import crypto, defaults
from zivmilter.errors import StoreError
from zivmilter.store.blobs import Content
from zivmilter.store.records import AttachmentRecord, SavedAttachment
from zivmilter.store.rows import message_record
from zivmilter.store.sqlite.connection import audit, dt
from zivmilter.store.sqlite.contents import insert_blob
from zivmilter.store.sqlite.messages import MESSAGE_FIELDS, MessagesMixin


class AttachmentsMixin(MessagesMixin):
    def save_attachment(
        self,
        message_id: str,
        filename: str,
        content_type: str,
        content: Content,
    ) -> SavedAttachment:
        """Keep a large attachment of a stored message for download; returns its token (the
        only time it exists). The gateway puts the link in the direct copies instead.

        It is sealed under a data key of its own, not the message's: revoking or expiring the
        message destroys that key, and the direct copy's link must keep working."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND revoked_at IS NULL", (message_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"message {message_id}: unknown or revoked")
        key = self._sealing.new_data_key()
        attachment_id = secrets.token_hex(16)
        blob_id = secrets.token_hex(16)
        token = secrets.token_urlsafe(defaults.LINK_TOKEN_BYTES)
        blob = self._write_blob(blob_id, key, content)
        sealed_name = key.seal_filename(attachment_id, filename)
        now = int(self._now())
        try:
            with self._transaction() as cur:
                insert_blob(cur, blob, blob_id, message_id, "attachment")
                cur.execute(
                    "INSERT INTO attachments (id, message_id, blob_id, filename, content_type,"
                    " token_hash, created_at, wrapped_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        attachment_id,
                        message_id,
                        blob_id,
                        sealed_name,
                        content_type,
                        crypto.token_hash(token),
                        now,
                        key.wrapped,
                    ),
                )
                audit(cur, now, message_id, None, "attachment-stored", attachment_id)
        except BaseException:
            self._remove_blob(blob.ref)
            raise
        return SavedAttachment(attachment_id, token)

    def find_attachment_by_token(self, token: str) -> AttachmentRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM attachments WHERE token_hash = ?", (crypto.token_hash(token),)
            ).fetchone()
        return None if row is None else self.attachment(str(row[0]))

    def attachment(self, attachment_id: str) -> AttachmentRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(MESSAGE_FIELDS)}, a.id, a.filename, a.content_type,"
                " b.size, a.created_at, COALESCE(a.wrapped_key, m.wrapped_key), b.deleted_at"
                " FROM attachments a"
                " JOIN messages m ON m.id = a.message_id JOIN blobs b ON b.id = a.blob_id"
                " WHERE a.id = ?",
                (attachment_id,),
            ).fetchone()
        if row is None:
            return None
        n = len(MESSAGE_FIELDS)
        message = message_record(self._sealing, row[:n])
        aid, sealed, ctype, size, created, wrapped, deleted = row[n:]
        available = wrapped is not None and deleted is None
        filename = None
        if sealed is not None and available:
            key = self._sealing.data_key(bytes(wrapped))
            filename = key.unseal_filename(str(aid), bytes(sealed))
        return AttachmentRecord(
            str(aid), message, filename, str(ctype), int(size), dt(created), available
        )

    def open_attachment(self, attachment_id: str) -> BinaryIO | None:
        """The attachment's bytes, decrypted as read; it does not expire with its message."""
        with self._lock:
            # An attachment without a key of its own (written by a zivmilter before schema 6 while
            # this one ran) is still sealed under its message's key.
            row = self._conn.execute(
                "SELECT a.blob_id, COALESCE(a.wrapped_key, m.wrapped_key) FROM attachments a"
                " JOIN messages m ON m.id = a.message_id WHERE a.id = ?",
                (attachment_id,),
            ).fetchone()
        if row is None or row[1] is None:
            return None
        return self._open_blob(str(row[0]), self._sealing.data_key(bytes(row[1])))
