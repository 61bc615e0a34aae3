"""Envelope encryption of stored messages, built only from `cryptography` primitives.

The store (store/sealing.py, store/blobs.py) calls this module; nothing here touches a database.

**Keys.** The key-encryption key (KEK) file holds 32 random bytes. Independent subkeys are derived
from it with HKDF-SHA256 (distinct `info` labels): a *wrap key*, a *field key* and a *pepper* for
access-code hashes, so the KEK itself never keys two algorithms. Each stored message gets its own
random 256-bit *data key*, wrapped with the wrap key by AES key wrap (RFC 3394,
`keywrap.aes_key_wrap`): deterministic, integrity-checked, and made for wrapping keys; a wrong KEK
fails the integrity check instead of yielding a wrong key. Revoking a message destroys its wrapped
data key. From the data key, HKDF again derives one *content key* per blob and one *message field
key* (for the encrypted subject, phone number and hint), so no AES-GCM key is ever used with two
nonce schemes.

**Content (streaming).** A blob is `MAGIC` followed by records. The plaintext is cut into
`RECORD_SIZE` (64 KiB) pieces; record *i* is sealed with AES-256-GCM under the content key with
the 96-bit nonce `i (11 bytes, big-endian) || final (1 byte, 0 or 1)` and the magic as associated
data. This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, CRYPTO 2015: nonce-based
online AE), as used by age and Tink's streaming AEAD. Why it is safe:
- nonces never repeat under one key: the content key is unique to one blob (fresh random data
  key, HKDF per blob id) and the counter is unique per record;
- reordering or dropping a record changes the counter that decryption uses, so the tag fails;
- truncation at a record boundary leaves a last record sealed with final=0, which decryption
  opens with final=1 and fails; appending after the final record fails likewise;
- every record is authenticated before any of its bytes are released. A truncated blob is
  reported at its end (StoreError from `read`), so readers must treat an error at any point
  as "no message".
At most one record plus one read-ahead record is in memory, whatever the message size.

**Small fields** (subject, phone number, TOTP secret) are sealed with AES-256-GCM, a random
96-bit nonce (safe far beyond any count of fields this store will hold) and associated data that
names the table, column and row, so a ciphertext cannot be moved to another row.

**Secrets that are only compared** (access codes) are hashed with scrypt (`hash_secret`), over an
HMAC with the KEK's pepper: a stolen database without the KEK file gives nothing to try codes
against. The hash names its scheme (`scrypt-hmac$`, older ones `scrypt$`), so both verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import secrets
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from zivmilter import defaults
from zivmilter.errors import KeyFileError, StoreError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

KEY_BYTES = 32
MAGIC = b"ZMB1"  # zivmilter blob, format 1
RECORD_SIZE = defaults.STORE_RECORD_BYTES
_TAG = 16
_NONCE = 12
_KEK_PREFIX = "zivmilter-kek-v1:"


# ---------------------------------------------------------------------------------------------
# The key-encryption key


@dataclass(frozen=True, repr=False)
class Kek:
    """The subkeys derived from the KEK file; the raw key is not kept."""

    wrap_key: bytes
    field_key: bytes
    # Mixed into access-code hashes (`hash_secret(..., pepper=)`): a stolen database alone
    # does not let anyone try codes against them.
    pepper: bytes
    # Names the key in what it wraps and seals (`key_id`), so that a store can say which KEK
    # each wrapped key depends on; not secret, and says nothing about the key.
    id: bytes = b""

    @classmethod
    def from_bytes(cls, raw: bytes) -> Kek:
        if len(raw) != KEY_BYTES:
            raise KeyFileError(f"a key-encryption key is {KEY_BYTES} bytes, not {len(raw)}")
        return cls(
            _hkdf(raw, b"zivmilter/kek/wrap/v1"),
            _hkdf(raw, b"zivmilter/kek/fields/v1"),
            _hkdf(raw, b"zivmilter/kek/secret-pepper/v1"),
            key_id(raw),
        )

    def __repr__(self) -> str:  # never print key material into a log or a traceback
        return "Kek(<secret>)"


KEY_ID_BYTES = 8


def key_id(raw: bytes) -> bytes:
    """A KEK's fingerprint: 8 bytes of HKDF under a label of its own (one-way; it names the key
    in `status --keys` and in wrapped keys, and cannot be turned back into any subkey)."""
    return _hkdf(raw, b"zivmilter/kek/key-id/v1")[:KEY_ID_BYTES]


def keygen(path: str) -> None:
    """Write a new random KEK to `path`, mode 0600; refuse to overwrite an existing file."""
    text = _KEK_PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii") + "\n"
    try:
        # O_EXCL: an existing key is never replaced (that would orphan every stored message).
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it; never widened
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def load_kek(path: str) -> bytes:
    """The 32 raw KEK bytes from `path`; KeyFileError when missing, malformed or too readable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: key file missing (create one with `zivmilter keygen`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: readable or writable by group/others"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600` on it"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: malformed key file (not text)") from None
    if not text.startswith(_KEK_PREFIX):
        raise KeyFileError(f"{path}: malformed key file (expected a line '{_KEK_PREFIX}BASE64')")
    try:
        raw = base64.b64decode(text[len(_KEK_PREFIX) :], validate=True)
    except binascii.Error:
        raise KeyFileError(f"{path}: malformed key file (bad base64)") from None
    if len(raw) != KEY_BYTES:
        raise KeyFileError(
            f"{path}: malformed key file ({len(raw)} key bytes, expected {KEY_BYTES})"
        )
    return raw


# ---------------------------------------------------------------------------------------------
# Data keys


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def wrap_data_key(kek: Kek, data_key: bytes) -> bytes:
    return aes_key_wrap(kek.wrap_key, data_key)


def unwrap_data_key(kek: Kek, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap(kek.wrap_key, wrapped)
    except InvalidUnwrap:
        raise StoreError(
            "cannot unwrap a message key: wrong key-encryption key, or the store is damaged"
        ) from None


def content_key(data_key: bytes, blob_id: str) -> bytes:
    return _hkdf(data_key, b"zivmilter/blob/v1/" + blob_id.encode("ascii"))


def message_field_key(data_key: bytes) -> bytes:
    return _hkdf(data_key, b"zivmilter/message-fields/v1")


# ---------------------------------------------------------------------------------------------
# Small fields


def seal(key: bytes, plaintext: bytes, context: str) -> bytes:
    """AES-256-GCM with a random nonce; `context` (table/column/row) is bound as associated data."""
    nonce = secrets.token_bytes(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode("utf-8"))


def unseal(key: bytes, sealed: bytes, context: str) -> bytes:
    if len(sealed) < _NONCE + _TAG:
        raise StoreError(f"encrypted field {context}: too short, the store is damaged")
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], context.encode("utf-8"))
    except InvalidTag:
        raise StoreError(
            f"encrypted field {context}: cannot decrypt (wrong key or damaged store)"
        ) from None


# ---------------------------------------------------------------------------------------------
# Streaming content


@dataclass(frozen=True)
class Encrypted:
    """What `encrypt_stream` wrote."""

    size: int  # plaintext bytes
    cipher_size: int  # bytes written, magic included
    sha256: str  # hex digest of everything written


def _record_nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(_NONCE - 1, "big") + (b"\x01" if final else b"\x00")


def read_full(src: BinaryIO, n: int) -> bytes:
    """Read exactly n bytes unless EOF comes first (raw streams may return short reads)."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = src.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def encrypt_stream(key: bytes, src: BinaryIO, dst: BinaryIO) -> Encrypted:
    """Encrypt all of `src` into `dst` record by record; memory stays at two records."""
    aead = AESGCM(key)
    digest = hashlib.sha256()
    size = 0
    written = 0

    def out(data: bytes) -> None:
        nonlocal written
        dst.write(data)
        digest.update(data)
        written += len(data)

    out(MAGIC)
    index = 0
    current = read_full(src, RECORD_SIZE)
    while True:
        # Read ahead one record: the last record must be sealed as final, and only the next
        # read tells whether this one is the last.
        following = read_full(src, RECORD_SIZE) if len(current) == RECORD_SIZE else b""
        final = not following
        out(aead.encrypt(_record_nonce(index, final), current, MAGIC))
        size += len(current)
        if final:
            break
        index += 1
        current = following
    return Encrypted(size=size, cipher_size=written, sha256=digest.hexdigest())


class DecryptingReader(io.RawIOBase):
    """A readable binary stream of the plaintext of a blob; faults raise StoreError.

    If `sha256` is given, the ciphertext digest is checked at the end as well (it is also
    implied by the AEAD tags; the digest catches a blob file swapped for another message's).
    """

    def __init__(self, key: bytes, src: BinaryIO, sha256: str | None = None) -> None:
        super().__init__()
        self._aead = AESGCM(key)
        self._src = src
        self._want = sha256
        self._digest = hashlib.sha256()
        self._index = 0
        self._buffer = b""
        self._pos = 0
        self._done = False
        magic = read_full(src, len(MAGIC))
        self._digest.update(magic)
        if magic != MAGIC:
            raise StoreError("stored blob has an unknown format (damaged store?)")
        self._next = self._read_record()

    def _read_record(self) -> bytes:
        data = read_full(self._src, RECORD_SIZE + _TAG)
        self._digest.update(data)
        return data

    def _advance(self) -> None:
        current = self._next
        following = self._read_record() if len(current) == RECORD_SIZE + _TAG else b""
        final = not following
        try:
            plain = self._aead.decrypt(_record_nonce(self._index, final), current, MAGIC)
        except InvalidTag:
            raise StoreError(
                "stored message cannot be decrypted: wrong key, or the blob is damaged or truncated"
            ) from None
        if final:
            self._done = True
            if self._src.read(1):
                raise StoreError("stored blob has data after its final record (damaged store?)")
            if self._want is not None and not hmac.compare_digest(
                self._digest.hexdigest(), self._want
            ):
                raise StoreError("stored blob does not match its recorded digest")
        self._index += 1
        self._next = following
        self._buffer = plain
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._pos >= len(self._buffer):
            if self._done:
                return 0
            self._advance()
        n = min(len(view), len(self._buffer) - self._pos)
        view[:n] = self._buffer[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._src.close()
        super().close()


# ---------------------------------------------------------------------------------------------
# Hashed secrets


def hash_secret(secret: str, pepper: bytes | None = None, pepper_id: bytes = b"") -> str:
    """A salted scrypt hash of a low-entropy secret (access code), self-describing.

    With a `pepper` (the KEK's, for access codes) scrypt hashes HMAC-SHA256(pepper, secret),
    marked `scrypt-hmac`: without the KEK, a copy of the database gives nothing to guess
    against; with a `pepper_id` (the KEK's `key_id`) the scheme names it, `scrypt-hmac:HEX`, so
    that a store knows which KEK a hash depends on. Plain `scrypt` hashes (written before, and
    sender passwords) still verify."""
    n, r, p = defaults.SCRYPT_N, defaults.SCRYPT_R, defaults.SCRYPT_P
    salt = secrets.token_bytes(16)
    scheme, material = _SCRYPT, secret.encode("utf-8")
    if pepper is not None:
        scheme, material = _SCRYPT_HMAC, hmac.digest(pepper, material, "sha256")
        if pepper_id:
            scheme += ":" + pepper_id.hex()
    digest = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(material)
    return f"{scheme}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_secret(stored: str, secret: str, pepper: bytes | None = None) -> bool:
    """True when `secret` matches a `hash_secret` value; a malformed hash is StoreError.

    A peppered hash never matches without its pepper."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        scheme = scheme.split(":", 1)[0]
        if scheme not in (_SCRYPT, _SCRYPT_HMAC):
            raise ValueError(scheme)
        want = _unb64(digest)
        kdf = Scrypt(salt=_unb64(salt), length=len(want), n=int(n), r=int(r), p=int(p))
    except ValueError:
        raise StoreError("a stored secret hash is malformed (damaged store?)") from None
    material = secret.encode("utf-8")
    if scheme == _SCRYPT_HMAC:
        if pepper is None:
            return False
        material = hmac.digest(pepper, material, "sha256")
    got = kdf.derive(material)
    return hmac.compare_digest(got, want)


def pepper_id(stored: str) -> bytes | None:
    """The key id a `hash_secret` value names (`scrypt-hmac:HEX$...`); None when it names none."""
    scheme = stored.split("$", 1)[0]
    _, sep, hexid = scheme.partition(":")
    if not sep:
        return None
    try:
        return bytes.fromhex(hexid)
    except ValueError:
        raise StoreError("a stored secret hash is malformed (damaged store?)") from None


_SCRYPT = "scrypt"  # scrypt(secret)
_SCRYPT_HMAC = "scrypt-hmac"  # scrypt(HMAC-SHA256(KEK pepper, secret))


def keyed_digest(key: bytes, label: bytes, data: bytes) -> str:
    """HMAC-SHA256 of `data` under a subkey of `key` for `label` (HKDF): a stable name for a
    value that only the key's holder can compute, so a table keyed by it lists nothing a
    stolen database alone could read back or test guesses against."""
    return hmac.new(_hkdf(key, label), data, hashlib.sha256).hexdigest()


def token_hash(token: str) -> str:
    """The stored form of a link token: tokens carry ≥128 random bits, so a plain SHA-256 does."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------------------


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
