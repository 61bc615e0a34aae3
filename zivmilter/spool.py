"""A message in flight, kept in memory while small and encrypted on disk when large.

The milter spools each message it receives (mta/milter.py) and the gateway makes working copies
of it (gateway/gateway.py); a plain SpooledTemporaryFile would leave a large message readable
in the temp folder, and after a crash or kill -9 on the disk. Here a message above `max_size`
goes to an unnamed temporary file encrypted under a fresh random key that lives only in this
object's memory: whatever is left on disk is ciphertext nobody can open.

**Format.** The plaintext is cut into `RECORD` (64 KiB) records; record *i* is sealed with
AES-256-GCM (`cryptography`) with the 96-bit nonce *i* (big-endian) and stored at offset
*i* × (`RECORD` + 16), so any position can be read without reading what comes before. Safe
because the key is used for this one file only and each record is sealed exactly once: writes
only append, and the last, incomplete record stays in memory until it is full. A record moved,
swapped or altered fails its tag (its nonce is its position); the length is kept in memory, so
truncation is seen as well. At most two records of plaintext are held in memory.
"""

from __future__ import annotations

import io
import tempfile
from typing import TYPE_CHECKING, BinaryIO, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

RECORD = 64 * 1024
_TAG = 16


class EncryptedSpool(io.BufferedIOBase):
    """A seekable, append-only binary file: plaintext in memory up to `max_size` bytes, then
    AES-GCM records in an unnamed temporary file (in `dir`, else the system's temp folder)."""

    def __init__(self, max_size: int, dir: str | None = None) -> None:
        super().__init__()
        self.max_size = max_size
        self._dir = dir
        self._memory: io.BytesIO | None = io.BytesIO()
        self._file: BinaryIO | None = None
        self._aead: AESGCM | None = None
        self._tail = bytearray()  # plaintext of the last, incomplete record
        self._sealed = 0  # records written to the file
        self._size = 0
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None  # the last record opened

    @property
    def rolled_over(self) -> bool:
        """Whether the content went to disk (encrypted)."""
        return self._file is not None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def write(self, data: ReadableBuffer) -> int:
        self._check_open()
        if self._pos != self._size:
            raise io.UnsupportedOperation("a spool is written at its end only")
        chunk = memoryview(data).cast("B")
        n = len(chunk)
        if self._memory is not None and self._size + n > self.max_size:
            self._roll_over()
        if self._memory is not None:
            self._memory.write(chunk)
        else:
            self._tail += chunk
            self._seal_full_records()
        self._size += n
        self._pos = self._size
        return n

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if self._memory is not None:
            data = self._memory.getbuffer()[self._pos : end].tobytes()
            self._pos = max(self._pos, end)
            return data
        pieces: list[bytes] = []
        while self._pos < end:
            index, within = divmod(self._pos, RECORD)
            take = self._record(index)[within : within + end - self._pos]
            pieces.append(take)
            self._pos += len(take)
        return b"".join(pieces)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readinto1(self, buffer: WriteableBuffer) -> int:
        return self.readinto(buffer)

    def peek(self, size: int = 0) -> bytes:
        """What follows, without moving (the rest of the current record): makes readline fast."""
        self._check_open()
        if self._pos >= self._size:
            return b""
        if self._memory is not None:
            return self._memory.getbuffer()[self._pos : self._pos + RECORD].tobytes()
        index, within = divmod(self._pos, RECORD)
        return self._record(index)[within:]

    def close(self) -> None:
        if not self.closed:
            if self._file is not None:
                self._file.close()
            self._memory = self._file = self._aead = self._cached = None
            self._tail = bytearray()
        super().close()

    # -- records ----------------------------------------------------------------------------
    def _roll_over(self) -> None:
        assert self._memory is not None
        held = self._memory.getvalue()
        self._memory = None
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))  # never leaves this object
        self._file = cast(BinaryIO, tempfile.TemporaryFile(dir=self._dir))  # noqa: SIM115
        self._tail = bytearray(held)
        self._seal_full_records()

    def _seal_full_records(self) -> None:
        assert self._file is not None and self._aead is not None
        if len(self._tail) < RECORD:
            return
        self._file.seek(self._sealed * (RECORD + _TAG))
        while len(self._tail) >= RECORD:
            record = bytes(self._tail[:RECORD])
            del self._tail[:RECORD]
            self._file.write(self._aead.encrypt(_nonce(self._sealed), record, None))
            self._sealed += 1

    def _record(self, index: int) -> bytes:
        if index == self._sealed:
            return bytes(self._tail)
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        assert self._file is not None and self._aead is not None
        self._file.seek(index * (RECORD + _TAG))
        sealed = self._file.read(RECORD + _TAG)
        try:
            plain = self._aead.decrypt(_nonce(index), sealed, None)
        except InvalidTag:
            raise OSError(f"spool file altered on disk (record {index})") from None
        self._cached = (index, plain)
        return plain

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed spool")


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def spool_file(max_size: int) -> BinaryIO:
    """A new spool for a message in flight (see EncryptedSpool), typed as the file it acts as."""
    return cast(BinaryIO, EncryptedSpool(max_size))
