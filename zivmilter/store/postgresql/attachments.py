"""SQL of large attachments of direct deliveries, kept for download (SPEC 5), for PostgreSQL.

Each has a data key of its own: it outlives its message's revocation and expiry (SPEC 8).
"""

from __future__ import annotations

from typing import BinaryIO

from zivmilter import crypto
from zivmilter.store import attachments, contents
from zivmilter.store.blobs import Content
from zivmilter.store.postgresql.connection import audit
from zivmilter.store.postgresql.contents import insert_blob
from zivmilter.store.postgresql.messages import KEY_JOIN, MESSAGE_FIELDS, MessagesMixin
from zivmilter.store.records import AttachmentRecord, SavedAttachment


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
        instead of storing the attachment again.

        Locking: the message row is read FOR SHARE in the inserting transaction, so a
        revocation on another node either commits first (refused here) or waits for this."""
        if not self._live(message_id):
            raise attachments.not_live(message_id)
        new = attachments.new_attachment(self._sealing, filename)
        blob = self._write_blob(new.blob_id, new.key, content)
        now = int(self._now())
        try:
            with self._transaction() as cur:
                if not self._live(message_id, cur):
                    raise attachments.not_live(message_id)
                insert_blob(cur, blob, new.blob_id, message_id, "attachment")
                cur.execute(
                    "INSERT INTO attachments (id, message_id, blob_id, filename, content_type,"
                    " token_hash, created_at, wrapped_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
                        " VALUES (%s, %s, %s)",
                        attachments.handover_row(new, message_id, handover),
                    )
                audit(cur, now, message_id, None, "attachment-stored", new.id)
        except BaseException:
            self._remove_blob(blob.ref)
            raise
        return SavedAttachment(new.id, new.token)

    def find_attachment_by_token(self, token: str) -> AttachmentRecord | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT id FROM attachments WHERE token_hash = %s", (crypto.token_hash(token),)
            ).fetchone()
        attachment_id = attachments.found(row)
        return None if attachment_id is None else self.attachment(attachment_id)

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
        return attachments.record(self._sealing, row)

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
        stored = contents.stored(self._sealing, row)
        return None if stored is None else self._open_blob(*stored)
