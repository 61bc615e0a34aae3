"""SQL of large attachments of direct deliveries, kept for download (SPEC 5).

Each has a data key of its own: it outlives its message's revocation and expiry (SPEC 8).
"""

from __future__ import annotations

from typing import BinaryIO

from zivmilter import crypto
from zivmilter.store import attachments, contents
from zivmilter.store.blobs import Content
from zivmilter.store.records import AttachmentRecord, SavedAttachment
from zivmilter.store.sqlite.connection import audit
from zivmilter.store.sqlite.contents import insert_blob
from zivmilter.store.sqlite.messages import MESSAGE_FIELDS, MessagesMixin


class AttachmentsMixin(MessagesMixin):
    def save_attachment(
        self,
        message_id: str,
        filename: str,
        content_type: str,
        content: Content,
        handover: str | None = None,
    ) -> SavedAttachment:
        """Keep a large attachment of a stored message for download; returns its token (the
        only time it exists). The gateway puts the link in the direct copies instead.

        It is sealed under a data key of its own, not the message's: revoking or expiring the
        message destroys that key, and the direct copy's link must keep working.

        With `handover` (the gateway's key for it) the token is kept too, sealed under the
        attachment's key, in the same transaction, until the message's handover ends: a
        client's retry of the message finds it (`find_handover`) and sends the same link
        instead of storing the attachment again."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND revoked_at IS NULL", (message_id,)
            ).fetchone()
        if row is None:
            raise attachments.not_live(message_id)
        new = attachments.new_attachment(self._sealing, filename)
        blob = self._write_blob(new.blob_id, new.key, content)
        now = int(self._now())
        try:
            with self._transaction() as cur:
                insert_blob(cur, blob, new.blob_id, message_id, "attachment")
                cur.execute(
                    "INSERT INTO attachments (id, message_id, blob_id, filename, content_type,"
                    " token_hash, created_at, wrapped_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new.id,
                        message_id,
                        new.blob_id,
                        new.filename,
                        content_type,
                        new.token_hash,
                        now,
                        new.key.wrapped,
                    ),
                )
                if handover is not None:
                    cur.execute(
                        "INSERT INTO handover_attachments (attachment_id, message_id, link)"
                        " VALUES (?, ?, ?)",
                        attachments.handover_row(new, message_id, handover),
                    )
                audit(cur, now, message_id, None, "attachment-stored", new.id)
        except BaseException:
            self._remove_blob(blob.ref)
            raise
        return SavedAttachment(new.id, new.token)

    def find_attachment_by_token(self, token: str) -> AttachmentRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM attachments WHERE token_hash = ?", (crypto.token_hash(token),)
            ).fetchone()
        attachment_id = attachments.found(row)
        return None if attachment_id is None else self.attachment(attachment_id)

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
        return attachments.record(self._sealing, row)

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
        stored = contents.stored(self._sealing, row)
        return None if stored is None else self._open_blob(*stored)
