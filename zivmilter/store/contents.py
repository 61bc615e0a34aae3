"""Encrypted contents (originals, their large parts, replies, attachments), the same for every
backend: written under a message's or an attachment's data key (blobs.py: in memory for the
row, or apart in the backend's `BlobStore`), the values of their `blobs` row, and read back.
Plain values in, plain values out; the SQL is sqlite/contents.py's and postgresql/contents.py's.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

from zivmilter.errors import StoreError
from zivmilter.store.blobs import (
    BlobStore,
    Content,
    EncryptedContent,
    decrypting_reader,
    encrypt_content,
)
from zivmilter.store.sealing import DataKey, Sealing


def encrypt(
    blobs: BlobStore, inline_max: int, key: DataKey, items: Sequence[tuple[str, Content]]
) -> list[EncryptedContent]:
    """Each (blob id, content) encrypted under `key`: in memory when small (its row will carry
    it), else durably into `blobs`. When one fails, those written before it are removed."""
    done: list[EncryptedContent] = []
    try:
        for blob_id, content in items:
            done.append(
                encrypt_content(blobs, inline_max, blob_id, key.content_key(blob_id), content)
            )
    except BaseException:
        remove(blobs, [c.ref for c in done])
        raise
    return done


def remove(blobs: BlobStore, refs: Iterable[str]) -> None:
    """Remove contents kept apart; a content kept in its row ('') goes with the row (or its
    data set to NULL)."""
    for ref in refs:
        if ref:
            blobs.remove(ref)


def blob_row(blob: EncryptedContent, blob_id: str, message_id: str, kind: str) -> tuple[Any, ...]:
    """A `blobs` row: (id, message_id, kind, path, size, cipher_size, sha256, data)."""
    w = blob.written
    return (blob_id, message_id, kind, blob.ref, w.size, w.cipher_size, w.sha256, blob.data)


def stored(sealing: Sealing, row: Any) -> tuple[str, DataKey] | None:
    """The blob and the key of a content (an attachment, a reply) from (blob_id, wrapped key),
    or None when there is no such content or its key is gone."""
    if row is None or row[1] is None:
        return None
    return str(row[0]), sealing.data_key(bytes(row[1]))


def reader(blobs: BlobStore, blob_id: str, key: DataKey, row: Any) -> BinaryIO | None:
    """A content's plaintext as read, from its row's (path, sha256, data); None when there is
    no such row (the blob is deleted)."""
    if row is None:
        return None
    fh: BinaryIO
    if not row[0]:  # kept in the row
        if row[2] is None:
            raise StoreError(f"blob {blob_id}: encrypted copy missing from its row")
        fh = io.BytesIO(bytes(row[2]))
    else:
        try:
            fh = blobs.open(str(row[0]))
        except OSError as exc:
            raise StoreError(f"blob {blob_id}: encrypted copy unreadable: {exc}") from None
    return decrypting_reader(key.content_key(blob_id), fh, str(row[1]))
