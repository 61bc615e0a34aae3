"""Encrypted contents: small ones in memory for their row, large ones in blob files.

`BlobStore` is where a backend keeps contents too large for a row; `FileBlobStore` keeps them as
files under `<store>/blobs/XX/ID.zmb`, each durable (file and folder fsynced) before `write`
returns. `encrypt_content` decides inline or file; the keys come from sealing.py.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

from zivmilter import crypto
from zivmilter.errors import StoreError

BLOB_DIR = "blobs"
_BLOB_SUFFIX = ".zmb"

Content = BinaryIO | bytes | str | os.PathLike[str]


class BlobStore(Protocol):
    """Where encrypted contents too large for a row are kept, by reference (a relative path)."""

    def write(self, blob_id: str, key: bytes, src: BinaryIO) -> tuple[str, crypto.Encrypted]:
        """Encrypt `src` under `key` durably; returns its reference and what was written."""
        ...

    def open(self, ref: str) -> BinaryIO:
        """The ciphertext of a reference (OSError when it is unreadable)."""
        ...

    def remove(self, ref: str) -> None:
        """Delete a content; nothing when it is already gone."""
        ...

    def sweep(self, known: set[str], older_than: float) -> int:
        """Delete contents no row refers to, last changed before `older_than` (a timestamp)."""
        ...


class FileBlobStore:
    """Blob files under `<root>/blobs/`, references relative to `root`."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._dir = os.path.join(root, BLOB_DIR)

    def write(self, blob_id: str, key: bytes, src: BinaryIO) -> tuple[str, crypto.Encrypted]:
        """Encrypt into `XX/.ID.tmp`, fsync it, rename it to `XX/ID.zmb`, fsync the folder: the
        name is durable when this returns."""
        folder = os.path.join(self._dir, blob_id[:2])
        relpath = os.path.join(BLOB_DIR, blob_id[:2], blob_id + _BLOB_SUFFIX)
        final = os.path.join(self._root, relpath)
        tmp = os.path.join(folder, f".{blob_id}.tmp")
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o700, exist_ok=True)
                _fsync_dir(self._dir)  # the new folder's entry must survive a crash too
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    written = crypto.encrypt_stream(key, src, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(folder)
        except OSError as exc:
            raise StoreError(f"cannot write the encrypted copy: {exc}") from None
        return relpath, written

    def open(self, ref: str) -> BinaryIO:
        return open(os.path.join(self._root, ref), "rb")

    def remove(self, ref: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._root, ref))

    def sweep(self, known: set[str], older_than: float) -> int:
        removed = 0
        for folder, _dirs, files in os.walk(self._dir):
            for name in files:
                full = os.path.join(folder, name)
                if os.path.relpath(full, self._root) in known:
                    continue
                with contextlib.suppress(OSError):
                    if os.stat(full).st_mtime < older_than:
                        os.unlink(full)
                        removed += 1
        return removed


@dataclass(eq=False)
class EncryptedContent:
    """An encrypted content: in its blob (`ref`) or, small, in memory for its row (`data`)."""

    ref: str  # the BlobStore reference; '' when the row carries the ciphertext
    written: crypto.Encrypted
    data: bytes | None


def encrypt_content(
    blobs: BlobStore, inline_max: int, blob_id: str, key: bytes, content: Content
) -> EncryptedContent:
    """Encrypt a content: in memory when at most `inline_max` bytes (its row will carry it, one
    fsync at the commit), else durably into the blob store."""
    with _source(content) as src:
        head = crypto.read_full(src, inline_max + 1)
        if len(head) <= inline_max:
            out = io.BytesIO()
            written = crypto.encrypt_stream(key, io.BytesIO(head), out)
            return EncryptedContent("", written, out.getvalue())
        ref, written = blobs.write(blob_id, key, cast(BinaryIO, _Chained(head, src)))
        return EncryptedContent(ref, written, None)


def decrypting_reader(key: bytes, ciphertext: BinaryIO, sha256: str) -> BinaryIO:
    """A content's plaintext as read; the reader owns `ciphertext` (closed with it or on error)."""
    try:
        raw = crypto.DecryptingReader(key, ciphertext, sha256)
    except BaseException:
        ciphertext.close()
        raise
    return io.BufferedReader(raw, buffer_size=crypto.RECORD_SIZE)


class _Chained(io.RawIOBase):
    """Bytes already read, then the rest of the stream they came from."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _source(content: Content) -> Iterator[BinaryIO]:
    if isinstance(content, bytes):
        yield io.BytesIO(content)
    elif isinstance(content, str | os.PathLike):
        with open(content, "rb") as fh:
            yield fh
    else:
        yield content  # the caller's file: the caller closes it


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
