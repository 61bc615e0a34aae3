"""The `blobs` table: encrypted contents (originals, replies, attachments), inline or in files.

Durability of a save (SPEC 10: never accept before the encrypted copy is durably stored):
1. a large content is encrypted into its blob file, fsynced, renamed, its folder fsynced
   (blobs.FileBlobStore.write); a small one is encrypted in memory;
2. the rows (with a small content's ciphertext) are committed in one transaction (WAL +
   synchronous=FULL: fsynced at commit);
3. only then does the save return. A crash between 1 and 2 leaves an unreferenced blob file of
   ciphertext (harmless; `sweep_orphans` removes it), never a row without its blob.
"""

from __future__ import annotations

import sqlite3
from typing import BinaryIO

from zivmilter.store import contents
from zivmilter.store.blobs import Content, EncryptedContent
from zivmilter.store.sealing import DataKey
from zivmilter.store.sqlite.connection import SqliteBase


class ContentsMixin(SqliteBase):
    def _write_blob(self, blob_id: str, key: DataKey, content: Content) -> EncryptedContent:
        """Encrypt a content: in memory when small (the row will carry it), else to its file."""
        return contents.encrypt(self._blobs, self._inline_max, key, [(blob_id, content)])[0]

    def _remove_blob(self, ref: str) -> None:
        contents.remove(self._blobs, [ref])

    def _open_blob(self, blob_id: str, key: DataKey) -> BinaryIO | None:
        """A blob's plaintext as read, under `key`; None once the blob is deleted."""
        with self._lock:
            row = self._conn.execute(
                "SELECT path, sha256, data FROM blobs WHERE id = ? AND deleted_at IS NULL",
                (blob_id,),
            ).fetchone()
        return contents.reader(self._blobs, blob_id, key, row)

    def sweep_orphans(self, older_than: float = 3600.0) -> int:
        """Remove blob files no row refers to (left by a crash mid-save); returns how many."""
        with self._lock:
            known = {str(r[0]) for r in self._conn.execute("SELECT path FROM blobs")}
        return self._blobs.sweep(known, self._now() - older_than)


def insert_blob(
    cur: sqlite3.Cursor, blob: EncryptedContent, blob_id: str, message_id: str, kind: str
) -> None:
    cur.execute(
        "INSERT INTO blobs (id, message_id, kind, path, size, cipher_size, sha256, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        contents.blob_row(blob, blob_id, message_id, kind),
    )
