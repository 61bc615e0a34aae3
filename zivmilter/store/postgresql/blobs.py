"""Large encrypted contents in PostgreSQL: the `BlobStore` of this backend, so a node needs no
shared filesystem. A content is encrypted as it is read (crypto.encrypt_stream) into chunks of
`CHUNK` bytes, rows of `blob_chunks`, committed before `write` returns (durable, like an fsynced
blob file); its reference is `pg:<blob id>`. Reading streams the chunks back one at a time.

As with blob files, the chunks are written before the rows that refer to them: a crash between
the two leaves chunks no `blobs` row names, which `sweep` removes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, BinaryIO

import psycopg

from zivmilter import crypto
from zivmilter.errors import StoreError
from zivmilter.store.postgresql.connection import ConnectionSource

CHUNK = 1024 * 1024  # ciphertext bytes per row: large enough to be few, small enough for memory
_PREFIX = "pg:"


class PgBlobStore:
    """Contents as rows of `blob_chunks`, through the store's pool (or the connection of the
    request scope the caller is in: connection.py)."""

    def __init__(self, pool: ConnectionSource, now: Callable[[], float]) -> None:
        self._pool = pool
        self._now = now

    def write(self, blob_id: str, key: bytes, src: BinaryIO) -> tuple[str, crypto.Encrypted]:
        ref = _PREFIX + blob_id
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                out = _ChunkWriter(cur, ref, int(self._now()))
                written = crypto.encrypt_stream(key, src, out)  # type: ignore[arg-type]
                out.flush()
        except psycopg.Error as exc:
            raise StoreError(f"cannot write the encrypted copy: {exc}") from None
        return ref, written

    def open(self, ref: str) -> BinaryIO:
        """The ciphertext, read chunk by chunk (OSError when there is none: as a missing file)."""
        reader = _ChunkReader(self._pool, ref)
        if not reader.exists():
            raise FileNotFoundError(f"{ref}: no such content")
        return io.BufferedReader(reader, buffer_size=CHUNK)

    def remove(self, ref: str) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM blob_chunks WHERE ref = %s", (ref,))

    def sweep(self, known: set[str], older_than: float) -> int:
        with self._pool.connection() as conn:
            refs = [
                str(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT ref FROM blob_chunks WHERE created_at < %s",
                    (int(older_than),),
                )
            ]
            gone = [r for r in refs if r not in known]
            if gone:
                conn.execute("DELETE FROM blob_chunks WHERE ref = ANY(%s)", (gone,))
        return len(gone)


class _ChunkWriter(io.RawIOBase):
    """A file-like sink for encrypt_stream: every CHUNK bytes become one row."""

    def __init__(self, cur: psycopg.Cursor[Any], ref: str, now: int) -> None:
        super().__init__()
        self._cur, self._ref, self._now = cur, ref, now
        self._buf = bytearray()
        self._seq = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buf += data
        while len(self._buf) >= CHUNK:
            self._emit(bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]
        return len(data)

    def flush(self) -> None:
        if self._buf or self._seq == 0:
            self._emit(bytes(self._buf))
            self._buf.clear()

    def _emit(self, chunk: bytes) -> None:
        self._cur.execute(
            "INSERT INTO blob_chunks (ref, seq, data, created_at) VALUES (%s, %s, %s, %s)",
            (self._ref, self._seq, chunk, self._now),
        )
        self._seq += 1


class _ChunkReader(io.RawIOBase):
    """The ciphertext of one reference, a chunk per query (memory stays at one chunk)."""

    def __init__(self, pool: ConnectionSource, ref: str) -> None:
        super().__init__()
        self._pool, self._ref = pool, ref
        self._seq = 0
        self._chunk = memoryview(b"")
        self._eof = False

    def exists(self) -> bool:
        return self._fetch()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._chunk and not self._eof and not self._fetch():
            self._eof = True
        if not self._chunk:
            return 0
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n

    def _fetch(self) -> bool:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT data FROM blob_chunks WHERE ref = %s AND seq = %s", (self._ref, self._seq)
            ).fetchone()
        if row is None:
            return False
        self._seq += 1
        self._chunk = memoryview(bytes(row[0]))
        return True
