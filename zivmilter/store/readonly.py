"""A store opened read-only (`open_store(config, read_only=True)`, for the commands that only
read): the one refusal every write path of both backends raises, and a blob store that reads.

The backends refuse before they touch anything (their transactions, group commit, locks and
blob writes call `refused`), and the database refuses too, as a second line: SQLite's connection
is opened `mode=ro`, PostgreSQL's sessions are `default_transaction_read_only`. So a write that
slipped past the first fails loudly rather than writing.
"""

from __future__ import annotations

from typing import BinaryIO

from zivmilter import crypto
from zivmilter.errors import StoreError
from zivmilter.store.blobs import BlobStore


def refused(where: str, what: str) -> StoreError:
    """The error a write raises on a read-only store: `what` would have changed `where`."""
    return StoreError(
        f"{where}: the store is open read-only here (a command that only reads): "
        f"{what} would change it"
    )


class ReadOnlyBlobs:
    """A `BlobStore` that reads `inner` and refuses every change."""

    def __init__(self, inner: BlobStore, where: str) -> None:
        self._inner = inner
        self._where = where

    def write(self, blob_id: str, key: bytes, src: BinaryIO) -> tuple[str, crypto.Encrypted]:
        raise refused(self._where, "writing a content")

    def open(self, ref: str) -> BinaryIO:
        return self._inner.open(ref)

    def remove(self, ref: str) -> None:
        raise refused(self._where, "removing a content")

    def sweep(self, known: set[str], older_than: float) -> int:
        raise refused(self._where, "sweeping orphaned contents")
