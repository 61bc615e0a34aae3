"""Envelope encryption: key files, streaming records, tamper detection, secret hashes."""

from __future__ import annotations

import io
import os
import stat
import tracemalloc
from pathlib import Path

import pytest

from zivmilter import crypto
from zivmilter.errors import KeyFileError, StoreError

R = crypto.RECORD_SIZE
MARKER = b"ZIVMILTER-PLAINTEXT-MARKER-7f3a"


def _encrypt(key: bytes, data: bytes) -> bytes:
    out = io.BytesIO()
    crypto.encrypt_stream(key, io.BytesIO(data), out)
    return out.getvalue()


def _decrypt(key: bytes, blob: bytes) -> bytes:
    return crypto.DecryptingReader(key, io.BytesIO(blob)).read()


# --- key file -----------------------------------------------------------------------------


def test_keygen_writes_private_file_and_load_reads_it(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "store.key")
    crypto.keygen(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = crypto.load_kek(path)
    assert len(key) == 32
    assert crypto.load_kek(path) == key


def test_keygen_refuses_to_overwrite(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "store.key")
    crypto.keygen(path)
    before = Path(path).read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        crypto.keygen(path)
    assert Path(path).read_bytes() == before


def test_two_keygens_differ(tmp_path: str) -> None:
    a, b = os.path.join(tmp_path, "a"), os.path.join(tmp_path, "b")
    crypto.keygen(a)
    crypto.keygen(b)
    assert crypto.load_kek(a) != crypto.load_kek(b)


def test_load_kek_missing(tmp_path: str) -> None:
    with pytest.raises(KeyFileError, match="missing"):
        crypto.load_kek(os.path.join(tmp_path, "nope.key"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "malformed"),
        (b"hello\n", "malformed"),
        (b"zivmilter-kek-v1:!!!notbase64\n", "bad base64"),
        (b"zivmilter-kek-v1:" + b"QUJD" + b"\n", "3 key bytes"),
        (b"\xff\xfe", "not text"),
    ],
)
def test_load_kek_malformed(tmp_path: str, content: bytes, problem: str) -> None:
    path = os.path.join(tmp_path, "bad.key")
    with open(path, "wb") as fh:
        fh.write(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=problem):
        crypto.load_kek(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_load_kek_refuses_group_or_other_access(tmp_path: str, mode: int) -> None:
    path = os.path.join(tmp_path, "store.key")
    crypto.keygen(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        crypto.load_kek(path)


def test_kek_repr_hides_key() -> None:
    kek = crypto.Kek.from_bytes(b"\x01" * 32)
    assert "01" not in repr(kek) and "secret" in repr(kek)


# --- data keys ----------------------------------------------------------------------------


def test_wrap_roundtrip_and_wrong_kek() -> None:
    kek = crypto.Kek.from_bytes(os.urandom(32))
    other = crypto.Kek.from_bytes(os.urandom(32))
    dk = crypto.new_data_key()
    wrapped = crypto.wrap_data_key(kek, dk)
    assert dk not in wrapped
    assert crypto.unwrap_data_key(kek, wrapped) == dk
    with pytest.raises(StoreError, match="wrong key-encryption key"):
        crypto.unwrap_data_key(other, wrapped)


def test_data_keys_are_random() -> None:
    assert len({crypto.new_data_key() for _ in range(100)}) == 100


# --- streaming content --------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, R - 1, R, R + 1, 3 * R, 3 * R + 17])
def test_stream_roundtrip(size: int) -> None:
    key = crypto.new_data_key()
    data = os.urandom(size)
    out = io.BytesIO()
    result = crypto.encrypt_stream(key, io.BytesIO(data), out)
    blob = out.getvalue()
    assert result.size == size
    assert result.cipher_size == len(blob)
    records = max(1, -(-size // R))
    assert len(blob) == len(crypto.MAGIC) + size + 16 * records
    reader = crypto.DecryptingReader(key, io.BytesIO(blob), result.sha256)
    assert reader.read() == data


def test_ciphertext_hides_plaintext() -> None:
    data = (MARKER + b"\r\n") * 5000
    blob = _encrypt(crypto.new_data_key(), data)
    assert MARKER not in blob
    assert MARKER[:12] not in blob


def test_wrong_key_fails_cleanly() -> None:
    blob = _encrypt(crypto.new_data_key(), b"hello " * 100)
    with pytest.raises(StoreError, match="cannot be decrypted"):
        _decrypt(crypto.new_data_key(), blob)


def _records(blob: bytes) -> list[bytes]:
    body = blob[len(crypto.MAGIC) :]
    return [body[i : i + R + 16] for i in range(0, len(body), R + 16)]


def test_truncation_at_record_boundary_is_detected() -> None:
    key = crypto.new_data_key()
    blob = _encrypt(key, os.urandom(3 * R + 100))
    recs = _records(blob)
    truncated = crypto.MAGIC + b"".join(recs[:2])
    reader = crypto.DecryptingReader(key, io.BytesIO(truncated))
    with pytest.raises(StoreError):
        reader.read()


def test_dropped_or_reordered_records_are_detected() -> None:
    key = crypto.new_data_key()
    blob = _encrypt(key, os.urandom(3 * R + 100))
    r0, r1, r2, r3 = _records(blob)
    for bad in ([r0, r2, r3], [r1, r0, r2, r3], [r0, r1, r2, r2, r3]):
        with pytest.raises(StoreError):
            _decrypt(key, crypto.MAGIC + b"".join(bad))


def test_bit_flip_and_appended_data_are_detected() -> None:
    key = crypto.new_data_key()
    blob = bytearray(_encrypt(key, b"x" * 1000))
    flipped = bytes(blob[:100]) + bytes([blob[100] ^ 1]) + bytes(blob[101:])
    with pytest.raises(StoreError):
        _decrypt(key, flipped)
    with pytest.raises(StoreError):
        _decrypt(key, bytes(blob) + b"more")
    with pytest.raises(StoreError, match="unknown format"):
        _decrypt(key, b"XXXX" + bytes(blob[4:]))


def test_digest_mismatch_is_detected() -> None:
    key = crypto.new_data_key()
    blob = _encrypt(key, b"hello")
    reader = crypto.DecryptingReader(key, io.BytesIO(blob), "0" * 64)
    with pytest.raises(StoreError, match="digest"):
        reader.read()


class _Source(io.RawIOBase):
    """Produces `size` bytes on demand, never holding them; remembers the largest read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.largest = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.largest = max(self.largest, n)
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"m" * n


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        n = len(memoryview(b))  # type: ignore[arg-type]
        self.count += n
        return n


def test_fifty_megabytes_stream_in_bounded_memory() -> None:
    size = 50 * 1024 * 1024
    src, sink = _Source(size), _Sink()
    tracemalloc.start()
    try:
        result = crypto.encrypt_stream(crypto.new_data_key(), src, sink)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == size
    assert src.largest <= R
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes: the message was held in memory"


# --- sealed fields and hashed secrets ------------------------------------------------------


def test_seal_binds_context() -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal(key, b"+31612345678", "contacts.sms:a@example.org")
    assert crypto.unseal(key, sealed, "contacts.sms:a@example.org") == b"+31612345678"
    with pytest.raises(StoreError):
        crypto.unseal(key, sealed, "contacts.sms:b@example.org")
    with pytest.raises(StoreError):
        crypto.unseal(crypto.new_data_key(), sealed, "contacts.sms:a@example.org")
    assert crypto.seal(key, b"x", "c") != crypto.seal(key, b"x", "c")  # random nonces


@pytest.mark.real_hash_cost
def test_hash_secret() -> None:
    h = crypto.hash_secret("8421-abc")
    assert "8421" not in h and h.startswith("scrypt$32768$8$1$")  # the production cost
    assert crypto.verify_secret(h, "8421-abc")
    assert not crypto.verify_secret(h, "8421-abd")
    assert crypto.hash_secret("8421-abc") != h  # salted
    with pytest.raises(StoreError):
        crypto.verify_secret("md5$xyz", "8421-abc")
