"""SQL of large attachments of direct deliveries, kept for download (SPEC 5), for PostgreSQL.

Each has a data key of its own: it outlives its message's revocation and expiry (SPEC 8).
"""

from __future__ import annotations

import secrets
from typing import BinaryIO

from zivmilter import crypto, defaults
from zivmilter.errors import StoreError
from zivmilter.store.blobs import Content
from zivmilter.store.postgresql.connection import audit, dt
from zivmilter.store.postgresql.contents import insert_blob
from zivmilter.store.postgresql.messages import KEY_JOIN, MESSAGE_FIELDS, MessagesMixin
from zivmilter.store.records import AttachmentRecord, SavedAttachment
from zivmilter.store.rows import message_record


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
        message destroys that key, and the direct copy's link must keep working.

        Locking: the message row is read FOR SHARE in the inserting transaction, so a
        revocation on another node either commits first (refused here) or waits for this."""
        if not self._live(message_id):
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
                if not self._live(message_id, cur):
                    raise StoreError(f"message {message_id}: unknown or revoked")
                insert_blob(cur, blob, blob_id, message_id, "attachment")
                cur.execute(
                    "INSERT INTO attachments (id, message_id, blob_id, filename, content_type,"
                    " token_hash, created_at, wrapped_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
        with self._read() as cur:
            row = cur.execute(
                "SELECT id FROM attachments WHERE token_hash = %s", (crypto.token_hash(token),)
            ).fetchone()
        return None if row is None else self.attachment(str(row[0]))

    def attachment(self, attachment_id: str) -> AttachmentRecord | None:
        with self._read() as cur:
            row = cur.execute(
                f"SELECT {', '.join(MESSAGE_FIELDS)}, a.id, a.filename, a.content_type,"
                " b.size, a.created_at, COALESCE(a.wrapped_key, k.wrapped_key), b.deleted_at"
                " FROM attachments a"
                " JOIN messages m ON m.id = a.message_id JOIN blobs b ON b.id = a.blob_id"
                + KEY_JOIN
                + " WHERE a.id = %s",
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
        with self._read() as cur:
            # An attachment without a key of its own (stored by SQLite before its schema 6, then
            # copied here by `zivmilter store copy`) is sealed under its message's key, and ends
            # with it: a copy of that key would keep the revoked message's content readable.
            row = cur.execute(
                "SELECT a.blob_id, COALESCE(a.wrapped_key, k.wrapped_key) FROM attachments a"
                " LEFT JOIN message_keys k ON k.message_id = a.message_id WHERE a.id = %s",
                (attachment_id,),
            ).fetchone()
        if row is None or row[1] is None:
            return None
        return self._open_blob(str(row[0]), self._sealing.data_key(bytes(row[1])))
