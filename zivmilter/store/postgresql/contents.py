"""The `blobs` table (PostgreSQL): encrypted contents (originals, replies, attachments), inline
in their row or, larger, in `blob_chunks` (postgresql/blobs.py).

Durability of a save (SPEC 10: never accept before the encrypted copy is durably stored):
1. a large content is encrypted into its chunks, committed (synchronous_commit=on: flushed);
   a small one is encrypted in memory;
2. the rows (with a small content's ciphertext) are committed in one transaction;
3. only then does the save return. A crash between 1 and 2 leaves chunks no row refers to
   (ciphertext, harmless; `sweep_orphans` removes them), never a row without its content.
"""

from __future__ import annotations

from typing import BinaryIO

from zivmilter.store import contents
from zivmilter.store.blobs import Content, EncryptedContent
from zivmilter.store.postgresql.connection import Cursor, PgBase
from zivmilter.store.sealing import DataKey


class ContentsMixin(PgBase):
    def _write_blob(self, blob_id: str, key: DataKey, content: Content) -> EncryptedContent:
        """Encrypt a content: in memory when small (the row will carry it), else to its chunks."""
        return contents.encrypt(self._blobs, self._inline_max, key, [(blob_id, content)])[0]

    def _remove_blob(self, ref: str) -> None:
        contents.remove(self._blobs, [ref])

    def _open_blob(self, blob_id: str, key: DataKey) -> BinaryIO | None:
        """A blob's plaintext as read, under `key`; None once the blob is deleted."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT path, sha256, data FROM blobs WHERE id = %s AND deleted_at IS NULL",
                (blob_id,),
            ).fetchone()
        return contents.reader(self._blobs, blob_id, key, row)

    def sweep_orphans(self, older_than: float = 3600.0) -> int:
        """Remove chunks no row refers to (left by a crash mid-save); returns how many contents."""
        with self._read() as cur:
            known = {str(r[0]) for r in cur.execute("SELECT path FROM blobs WHERE path != ''")}
        return self._blobs.sweep(known, self._now() - older_than)


def insert_blob(
    cur: Cursor, blob: EncryptedContent, blob_id: str, message_id: str, kind: str
) -> None:
    cur.execute(
        "INSERT INTO blobs (id, message_id, kind, path, size, cipher_size, sha256, data)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        contents.blob_row(blob, blob_id, message_id, kind),
    )
