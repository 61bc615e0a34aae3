"""The encrypted message store: what the milter saves before it accepts, what the portal reads.

`Store` is the Protocol the milter and the portal program against; `SqliteStore` keeps metadata
in SQLite (WAL, synchronous=FULL) and each content encrypted: up to `inline_max` bytes (256 KiB by
default: nearly all mail) in its `blobs` row, larger ones as a blob file under `<path>/blobs/`.
All cryptography lives in crypto.py; this module only decides what is sealed with which key and
in what order things reach the disk.

Durability (SPEC 10: never accept before the encrypted copy is durably stored), in this order:
1. a large content is encrypted into `blobs/XX/.ID.tmp`, flushed and fsynced, renamed to
   `blobs/XX/ID.zmb`, and the folder is fsynced (the name is durable); a small one is
   encrypted in memory;
2. the rows (with a small content's ciphertext) are committed in one transaction (WAL +
   synchronous=FULL: fsynced at commit);
3. only then does `save_message` return. A crash between 1 and 2 leaves an unreferenced blob
   file of ciphertext (harmless; `sweep_orphans` removes it), never a row without its blob.

Group commit: saves from many milter threads share commits. A saver queues its rows and takes
the store's lock; whoever holds it writes every queued save in one transaction (each in a
savepoint of its own, so one failing save fails alone) and commits once. A saver whose rows a
previous holder already committed returns at once. One fsync then covers all the messages that
arrived while the previous commit was on its way to the disk.

Thread safety: one connection guarded by a lock; the slow parts (encryption, hashing) run
outside it. Other processes (the portal) use their own store object; SQLite's WAL and busy
timeout arbitrate between them.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal, Protocol, cast

from zivmilter import crypto, defaults
from zivmilter.core.addresses import normalize_address
from zivmilter.core.config import Config
from zivmilter.core.facts import Contact
from zivmilter.errors import MessageError, StoreError

Delivery = Literal["notification", "direct"]
Verification = Literal["account", "sms", "access_code", "email"]
AccountKind = Literal["sender", "recipient"]

_DELIVERIES = ("notification", "direct")
_VERIFICATIONS = ("account", "sms", "access_code", "email")


# ---------------------------------------------------------------------------------------------
# Values in and out


@dataclass(frozen=True)
class NewRecipient:
    """One envelope recipient of a message being saved, as the policy decided it.

    `phone` (sms) and `access_code` (access_code) come from the sender's directive; when they are
    None for those kinds, the contact book's remembered number or code hash is used (rules 5/6).
    """

    address: str
    conversation: int
    method: str  # the policy's method name, e.g. "account", "access_right", "email"
    delivery: Delivery
    rule: str  # which rule decided, e.g. "A3"
    level: str | None = None  # transport level of a direct delivery (levels.Level value)
    verification: Verification | None = None  # how a notification recipient proves identity
    phone: str | None = None
    access_code: str | None = None
    hint: str | None = None  # the sender's hint for an access code


@dataclass(frozen=True)
class NewMessage:
    """A message to store. `content` is the raw RFC 5322 message: a binary file, bytes or a path."""

    sender: str  # the author (From): secure replies go here; not a bounce envelope sender
    subject: str
    content: BinaryIO | bytes | str | os.PathLike[str]
    recipients: Sequence[NewRecipient]
    rfc822_id: str | None = None
    queue_id: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, repr=False)
class SavedMessage:
    """The store's id of the message and the link tokens of notification recipients.

    This is the only time the plaintext tokens exist: the store keeps their SHA-256 only.
    """

    id: str
    tokens: dict[str, str]  # normalized recipient address -> link token
    size: int  # bytes of the original message

    def __repr__(self) -> str:  # tokens are credentials: keep them out of logs
        return f"SavedMessage(id={self.id!r}, tokens=<{len(self.tokens)}>, size={self.size})"


@dataclass(frozen=True)
class MessageRecord:
    id: str
    rfc822_id: str | None
    queue_id: str
    sender: str
    subject: str | None  # None once revoked
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    size: int

    def available(self, now: datetime) -> bool:
        """Content can still be opened: neither revoked nor expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, repr=False)
class RecipientRecord:
    id: int
    message: MessageRecord
    address: str
    conversation: int
    method: str
    delivery: Delivery
    rule: str
    level: str | None
    verification: Verification | None
    phone: str | None  # decrypted; None once revoked
    hint: str | None
    access_code_hash: str | None  # check with crypto.verify_secret
    notified_at: datetime | None
    opened_at: datetime | None
    failed_attempts: int
    lockouts: int
    locked_until: datetime | None

    def __repr__(self) -> str:  # phone numbers never go to logs
        return (
            f"RecipientRecord(id={self.id}, message={self.message.id!r}, address={self.address!r},"
            f" verification={self.verification!r})"
        )


@dataclass(frozen=True)
class Account:
    address: str
    kind: AccountKind
    active: bool
    password_hash: str | None
    has_totp: bool


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    message_id: str | None
    recipient: str | None
    event: str
    detail: str


# -- portal values (guest portal, `revoke`, `status`, `contacts`) ------------------------------


@dataclass(frozen=True)
class LinkState:
    """A link's portal state beyond `RecipientRecord`: its own revocation, consecutive failures,
    and the one-time codes sent for it (rate limits)."""

    revoked_at: datetime | None
    failed_streak: int  # wrong codes since the last success or lockout
    otp_sent_at: datetime | None
    otp_sends: int  # codes sent since the last success


@dataclass(frozen=True)
class Attempt:
    """One answer to a link's verification, claimed against its lockout before it is checked
    (`claim_attempt`) and settled after (`settle_attempt`).

    A claimed answer counts as a wrong one until it is settled as right, so answers checked at
    the same time (several requests, several portal processes) can never add up to more guesses
    than the lockout allows: the claim that reaches the limit locks the link, and every claim
    after it is refused."""

    recipient_id: int
    admitted: bool  # False: the link is locked; nothing may be compared
    locked_until: datetime | None  # refused: the lock in force; admitted: the lock it set
    lock_seconds: int = 0  # admitted: the length of the lock it set (0: none)


@dataclass(frozen=True, repr=False)
class OtpState:
    """The secret of the last one-time code sent for a link, and when it was sent."""

    secret: bytes
    sent_at: datetime

    def __repr__(self) -> str:
        return f"OtpState(sent_at={self.sent_at.isoformat()})"


@dataclass(frozen=True)
class ReplyRecord:
    id: str
    message_id: str
    recipient_id: int
    conversation: int
    created_at: datetime
    sent_at: datetime | None
    size: int
    refused_at: datetime | None = None  # the MTA refused it for good: retried only on request


@dataclass(frozen=True, repr=False)
class ContactEntry:
    """One contact-book entry, for `zivmilter contacts list` (the number decrypted)."""

    address: str
    sms: str | None
    access_code: bool
    used_at: datetime | None

    def __repr__(self) -> str:
        return f"ContactEntry(address={self.address!r})"


@dataclass(frozen=True)
class AttachmentRecord:
    """A large attachment of a direct-delivered message, kept for download (SPEC 5).

    It has a data key of its own and outlives the message's revocation and expiry: those end
    the notification links, and a direct copy can be neither revoked nor expired (SPEC 8)."""

    id: str
    message: MessageRecord
    filename: str | None  # None when the content is gone (see `available`)
    content_type: str
    size: int
    created_at: datetime
    # False when its content is gone: sealed under its message's key (stored by a zivmilter
    # before schema 6), it went with that key when the message was revoked.
    available: bool = True


@dataclass(frozen=True, repr=False)
class SavedAttachment:
    """The attachment's id and its download token (the store keeps only the token's hash)."""

    id: str
    token: str

    def __repr__(self) -> str:
        return f"SavedAttachment(id={self.id!r})"


class Store(Protocol):
    """What the milter and the portal need from a store; a PostgreSQL backend implements it too."""

    def save_message(self, message: NewMessage) -> SavedMessage: ...
    def discard(self, message_id: str) -> None: ...
    def open_content(self, message_id: str) -> BinaryIO | None: ...
    def message(self, message_id: str) -> MessageRecord | None: ...
    def find_recipient_by_token(self, token: str) -> RecipientRecord | None: ...
    def recipients(self, message_id: str) -> list[RecipientRecord]: ...
    def mark_notified(self, message_id: str, address: str) -> None: ...
    def mark_opened(self, recipient_id: int) -> bool: ...
    def revoke(self, message_id: str, reason: str = "") -> bool: ...
    def purge_expired(self, reply_grace: float = ...) -> int: ...
    def has_account(self, address: str) -> bool: ...
    def account(self, address: str) -> Account | None: ...
    def accounts(self) -> list[Account]: ...
    def totp_secret(self, address: str) -> bytes | None: ...
    def enrol_totp(self, address: str, secret: bytes) -> bool: ...
    def use_totp_step(self, address: str, step: int) -> bool: ...
    def add_account(
        self,
        address: str,
        kind: AccountKind,
        password_hash: str | None = None,
        totp_secret: bytes | None = None,
    ) -> None: ...
    def set_account_active(self, address: str, active: bool) -> bool: ...
    def contact(self, address: str) -> Contact | None: ...
    def idd_domains(self) -> list[str]: ...
    def set_idd_domain(self, domain: str, enabled: bool) -> bool: ...
    def remember_contact(
        self, address: str, sms: str | None = None, access_code_hash: str | None = None
    ) -> None: ...
    def record_event(
        self,
        event: str,
        message_id: str | None = None,
        recipient: str | None = None,
        detail: str = "",
    ) -> None: ...
    def events(self, message_id: str) -> list[AuditEvent]: ...
    # portal (zivmilter/portal): links, one-time codes, replies, contact book, large attachments
    def recipient(self, recipient_id: int) -> RecipientRecord | None: ...
    def link_state(self, recipient_id: int) -> LinkState | None: ...
    def find_messages(self, ref: str) -> list[MessageRecord]: ...
    def portal_view(self, message_id: str) -> bytes | None: ...
    def save_portal_view(self, message_id: str, view: bytes) -> None: ...
    def revoke_recipient(self, message_id: str, address: str, reason: str = "") -> bool: ...
    def claim_attempt(
        self, recipient_id: int, lockout: Callable[[int, int], float | None], detail: str = ""
    ) -> Attempt: ...
    def settle_attempt(self, attempt: Attempt, ok: bool, detail: str = "") -> datetime | None: ...
    def record_verified(self, recipient_id: int, detail: str = "") -> None: ...
    def claim_otp(
        self, recipient_id: int, secret: bytes, min_interval: float, max_sends: int
    ) -> float: ...
    def otp(self, recipient_id: int) -> OtpState | None: ...
    def consume_otp(
        self, recipient_id: int, valid: Callable[[bytes, datetime], bool], detail: str = ""
    ) -> bool: ...
    def clear_otp(self, recipient_id: int) -> None: ...
    def save_reply(self, recipient_id: int, content: bytes) -> str: ...
    def mark_reply_sent(self, reply_id: str, detail: str = "") -> None: ...
    def mark_reply_undeliverable(self, reply_id: str, detail: str) -> None: ...
    def replies(self, recipient_id: int) -> list[ReplyRecord]: ...
    def unsent_replies(
        self, older_than: float = 0.0, *, refused: bool = False, message_id: str | None = None
    ) -> list[ReplyRecord]: ...
    def open_reply(self, reply_id: str) -> BinaryIO | None: ...
    def contacts(self) -> list[ContactEntry]: ...
    def forget_contact(self, address: str) -> bool: ...
    def save_attachment(
        self,
        message_id: str,
        filename: str,
        content_type: str,
        content: BinaryIO | bytes | str | os.PathLike[str],
    ) -> SavedAttachment: ...
    def find_attachment_by_token(self, token: str) -> AttachmentRecord | None: ...
    def attachment(self, attachment_id: str) -> AttachmentRecord | None: ...
    def open_attachment(self, attachment_id: str) -> BinaryIO | None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Schema: each entry moves the database one version up; never edit an applied entry.

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,      -- random: appears in portal URLs, must not be guessable
        rfc822_id   TEXT,                  -- Message-ID header
        queue_id    TEXT NOT NULL DEFAULT '',
        sender      TEXT NOT NULL,
        subject     BLOB,                  -- sealed with the message field key; NULL once revoked
        wrapped_key BLOB,                  -- data key, AES-KW under the KEK; NULL once revoked
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        revoked_at  INTEGER
    );
    CREATE INDEX messages_sender ON messages (sender, created_at);
    CREATE INDEX messages_expiry ON messages (expires_at)
        WHERE expires_at IS NOT NULL AND revoked_at IS NULL;

    CREATE TABLE conversations (
        id         INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        number     INTEGER NOT NULL,
        UNIQUE (message_id, number)
    );

    CREATE TABLE recipients (
        id               INTEGER PRIMARY KEY,
        message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        address          TEXT NOT NULL,
        conversation     INTEGER NOT NULL,
        method           TEXT NOT NULL,
        delivery         TEXT NOT NULL CHECK (delivery IN ('notification', 'direct')),
        rule             TEXT NOT NULL,
        level            TEXT,
        token_hash       TEXT UNIQUE,      -- SHA-256 of the link token; the token is never stored
        verification     TEXT CHECK (verification IN ('account', 'sms', 'access_code', 'email')),
        phone            BLOB,             -- sealed with the message field key
        access_code_hash TEXT,             -- crypto.hash_secret (scrypt)
        hint             BLOB,             -- sealed with the message field key
        notified_at      INTEGER,
        opened_at        INTEGER,
        failed_attempts  INTEGER NOT NULL DEFAULT 0,
        lockouts         INTEGER NOT NULL DEFAULT 0,
        locked_until     INTEGER,
        UNIQUE (message_id, address),
        FOREIGN KEY (message_id, conversation)
            REFERENCES conversations (message_id, number) ON DELETE CASCADE
    );
    CREATE INDEX recipients_address ON recipients (address);

    CREATE TABLE blobs (
        id          TEXT PRIMARY KEY,      -- also names the content key (HKDF info)
        message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,         -- 'message': the original; later 'attachment'
        path        TEXT NOT NULL,         -- relative to the store folder
        size        INTEGER NOT NULL,      -- plaintext bytes
        cipher_size INTEGER NOT NULL,
        sha256      TEXT NOT NULL,         -- of the blob file
        deleted_at  INTEGER
    );
    CREATE INDEX blobs_message ON blobs (message_id);

    CREATE TABLE contacts (                -- the organization's contact book (SPEC 8)
        address          TEXT PRIMARY KEY,
        sms              BLOB,             -- sealed with the KEK field key
        access_code_hash TEXT,
        used_at          INTEGER
    );

    CREATE TABLE accounts (
        address       TEXT PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('sender', 'recipient')),
        active        INTEGER NOT NULL DEFAULT 1,
        password_hash TEXT,
        totp_secret   BLOB,                -- sealed with the KEK field key
        created_at    INTEGER NOT NULL
    );

    CREATE TABLE audit (                   -- no foreign key: the log outlives what it describes
        id         INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        message_id TEXT,
        recipient  TEXT,
        event      TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_message ON audit (message_id, id);
    """,
    # 2: the guest portal (zivmilter/portal)
    """
    ALTER TABLE recipients ADD COLUMN revoked_at INTEGER;    -- this recipient's link revoked
    ALTER TABLE recipients ADD COLUMN failed_streak INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recipients ADD COLUMN otp_secret BLOB;       -- sealed with the KEK field key
    ALTER TABLE recipients ADD COLUMN otp_sent_at INTEGER;
    ALTER TABLE recipients ADD COLUMN otp_sends INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN portal_view BLOB;        -- sealed with the message field key
    CREATE INDEX messages_rfc822 ON messages (rfc822_id);

    CREATE TABLE replies (                 -- secure replies written in the portal
        id           TEXT PRIMARY KEY,
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        recipient_id INTEGER NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
        conversation INTEGER NOT NULL,
        blob_id      TEXT NOT NULL,        -- the reply as sent, sealed with the message's data key
        created_at   INTEGER NOT NULL,
        sent_at      INTEGER
    );
    CREATE INDEX replies_recipient ON replies (recipient_id, created_at);

    CREATE TABLE attachments (             -- large attachments of direct deliveries (SPEC 5)
        id           TEXT PRIMARY KEY,
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        blob_id      TEXT NOT NULL,
        filename     BLOB,                 -- sealed with the message field key
        content_type TEXT NOT NULL,
        token_hash   TEXT NOT NULL UNIQUE, -- SHA-256 of the download token
        created_at   INTEGER NOT NULL
    );
    """,
    # 3: domains of organizations with inbound direct delivery, kept by admins (SPEC 4, rule 1)
    """
    CREATE TABLE idd_domains (
        domain       TEXT PRIMARY KEY,     -- normalized, A-labels
        added_at     INTEGER NOT NULL
    );
    """,
    # 4: an authenticator code counts once: the last time step used, per account
    """
    ALTER TABLE accounts ADD COLUMN totp_last_step INTEGER;
    """,
    # 5: small contents inline (path ''): one fsync per commit instead of three per message
    """
    ALTER TABLE blobs ADD COLUMN data BLOB;  -- the ciphertext when path is ''; NULL once deleted
    """,
    # 6: a large attachment of a direct delivery gets a data key of its own, so that revoking or
    # expiring the message (which ends its notification links) leaves the download links of the
    # direct copies working (SPEC 8). Attachments stored before were sealed under the message's
    # key and keep NULL here: they end with their message, because a copy of that key would
    # keep the revoked message's content readable.
    """
    ALTER TABLE attachments ADD COLUMN wrapped_key BLOB;  -- AES-KW under the KEK
    """,
    # 7: a secure reply the MTA refused for good (5xx) is not handed over again and again
    """
    ALTER TABLE replies ADD COLUMN refused_at INTEGER;
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)
DB_NAME = "store.sqlite3"
BLOB_DIR = "blobs"
_BLOB_SUFFIX = ".zmb"


# ---------------------------------------------------------------------------------------------


class SqliteStore:
    """The SQLite + blob-file store. Create with `SqliteStore.open(path, kek)`."""

    def __init__(
        self,
        path: str,
        kek: crypto.Kek,
        conn: sqlite3.Connection,
        now: Callable[[], float],
        inline_max: int,
    ) -> None:
        self._path = path
        self._blobs = os.path.join(path, BLOB_DIR)
        self._kek = kek
        self._conn = conn
        self._now = now
        self._inline_max = inline_max
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queued: list[_Pending] = []

    @classmethod
    def open(
        cls,
        path: str,
        kek: bytes,
        *,
        now: Callable[[], float] = time.time,
        inline_max: int = defaults.STORE_INLINE_MAX,
    ) -> SqliteStore:
        """Open (creating if needed) the store in folder `path`; `kek` from `crypto.load_kek`.

        Contents up to `inline_max` bytes are kept in the database, larger ones in blob files."""
        key = crypto.Kek.from_bytes(kek)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(path, BLOB_DIR), mode=0o700, exist_ok=True)
            db = os.path.join(path, DB_NAME)
            # Create the file ourselves so it (and SQLite's -wal/-shm, which copy its mode) is 0600.
            os.close(os.open(db, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(
                db,
                timeout=defaults.STORE_BUSY_TIMEOUT,
                isolation_level=None,  # transactions are explicit below
                check_same_thread=False,  # guarded by the store's lock
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: SQLite refused WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Revocation relies on destroying the wrapped key: make SQLite zero freed content.
            conn.execute("PRAGMA secure_delete=ON")
            _migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{path}: cannot prepare the store database: {exc}") from None
        except StoreError:
            conn.close()
            raise
        store = cls(path, key, conn, now, inline_max)
        store._check_kek()
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- saving ---------------------------------------------------------------------------

    def save_message(self, message: NewMessage) -> SavedMessage:
        """Encrypt and durably store a message; returns its id and the recipients' link tokens."""
        recipients = [_checked(r) for r in message.recipients]
        if not recipients:
            raise ValueError("a stored message needs at least one recipient")
        if len({r.address for r in recipients}) != len(recipients):
            raise ValueError("a recipient appears twice")
        sender = normalize_address(message.sender)
        message_id = _ordered_id()
        blob_id = _ordered_id()
        data_key = crypto.new_data_key()
        field_key = crypto.message_field_key(data_key)
        created = int(self._now())

        # scrypt takes ~0.1 s: hash before taking the store's lock, not inside the transaction.
        secrets_of = {r.address: self._verification_data(r) for r in recipients}
        tokens: dict[str, str] = {}
        for r in recipients:
            if r.delivery == "notification":
                tokens[r.address] = secrets.token_urlsafe(defaults.LINK_TOKEN_BYTES)
        wrapped_key = crypto.wrap_data_key(self._kek, data_key)

        # Everything sealed and hashed here, outside the lock; `write` only inserts.
        message_row = (
            message_id,
            message.rfc822_id,
            message.queue_id,
            sender,
            crypto.seal(field_key, message.subject.encode("utf-8"), _ctx_subject(message_id)),
            wrapped_key,
            created,
            _ts(message.expires_at),
        )
        recipient_rows = []
        for r in recipients:
            token = tokens.get(r.address)
            phone, code_hash = secrets_of[r.address]
            ctx = f"{message_id}:{r.address}"
            recipient_rows.append(
                (
                    message_id,
                    r.address,
                    r.conversation,
                    r.method,
                    r.delivery,
                    r.rule,
                    r.level,
                    None if token is None else crypto.token_hash(token),
                    r.verification,
                    None
                    if phone is None
                    else crypto.seal(field_key, phone.encode(), "recipients.phone:" + ctx),
                    code_hash,
                    None
                    if r.hint is None
                    else crypto.seal(field_key, r.hint.encode(), "recipients.hint:" + ctx),
                    # The milter hands the notification to the MTA in the same transaction,
                    # or discards this message: saved means notified.
                    created if r.delivery == "notification" else None,
                )
            )

        blob = self._write_blob(blob_id, data_key, message.content)

        def write(cur: sqlite3.Cursor) -> None:
            cur.execute(
                "INSERT INTO messages (id, rfc822_id, queue_id, sender, subject, wrapped_key,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                message_row,
            )
            cur.executemany(
                "INSERT INTO conversations (message_id, number) VALUES (?, ?)",
                [(message_id, n) for n in sorted({r.conversation for r in recipients})],
            )
            cur.executemany(
                "INSERT INTO recipients (message_id, address, conversation, method, delivery,"
                " rule, level, token_hash, verification, phone, access_code_hash, hint,"
                " notified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                recipient_rows,
            )
            _insert_blob(cur, blob, blob_id, message_id, "message")
            _audit(cur, created, message_id, None, "stored", f"queue {message.queue_id}")

        try:
            self._commit_grouped(write)
        except BaseException:
            self._remove_blob(blob.path)
            raise
        return SavedMessage(id=message_id, tokens=tokens, size=blob.written.size)

    def _verification_data(self, r: NewRecipient) -> tuple[str | None, str | None]:
        """(phone, access code hash) for a recipient, from the directive or the contact book."""
        if r.verification == "sms":
            if r.phone is not None:
                return r.phone, None
            with self._lock:
                row = self._conn.execute(
                    "SELECT sms FROM contacts WHERE address = ?", (r.address,)
                ).fetchone()
            if row is None or row[0] is None:
                raise StoreError(
                    f"{r.address}: sms verification, but no number given or remembered"
                )
            return self._unseal_contact(r.address, bytes(row[0])), None
        if r.verification == "access_code":
            if r.access_code is not None:
                return None, crypto.hash_secret(r.access_code)
            with self._lock:
                row = self._conn.execute(
                    "SELECT access_code_hash FROM contacts WHERE address = ?", (r.address,)
                ).fetchone()
            if row is None or row[0] is None:
                raise StoreError(
                    f"{r.address}: access-code verification, but no code given or remembered"
                )
            return None, str(row[0])
        return None, None

    def _write_blob(
        self, blob_id: str, data_key: bytes, content: BinaryIO | bytes | str | os.PathLike[str]
    ) -> _Blob:
        """Encrypt a content: in memory when small (the row will carry it), else to its file."""
        key = crypto.content_key(data_key, blob_id)
        with _source(content) as src:
            head = crypto.read_full(src, self._inline_max + 1)
            if len(head) <= self._inline_max:
                out = io.BytesIO()
                written = crypto.encrypt_stream(key, io.BytesIO(head), out)
                return _Blob("", written, out.getvalue())
            return self._write_blob_file(blob_id, key, cast(BinaryIO, _Chained(head, src)))

    def _write_blob_file(self, blob_id: str, key: bytes, src: BinaryIO) -> _Blob:
        folder = os.path.join(self._blobs, blob_id[:2])
        relpath = os.path.join(BLOB_DIR, blob_id[:2], blob_id + _BLOB_SUFFIX)
        final = os.path.join(self._path, relpath)
        tmp = os.path.join(folder, f".{blob_id}.tmp")
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o700, exist_ok=True)
                _fsync_dir(self._blobs)  # the new folder's entry must survive a crash too
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
        return _Blob(relpath, written, None)

    def _remove_blob(self, relpath: str) -> None:
        if not relpath:  # kept in its row: gone with the row (or its data set to NULL)
            return
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._path, relpath))

    def discard(self, message_id: str) -> None:
        """Forget a message entirely: the milter stored it but could not accept it after all."""
        with self._transaction() as cur:
            paths = [
                str(row[0])
                for row in cur.execute("SELECT path FROM blobs WHERE message_id = ?", (message_id,))
            ]
            cur.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            _audit(cur, int(self._now()), message_id, None, "discarded", "")
        for p in paths:
            self._remove_blob(p)

    # -- reading --------------------------------------------------------------------------

    def message(self, message_id: str) -> MessageRecord | None:
        with self._lock:
            row = self._conn.execute(_MESSAGE_SELECT + " WHERE m.id = ?", (message_id,)).fetchone()
        return None if row is None else self._message_record(row)

    def open_content(self, message_id: str) -> BinaryIO | None:
        """The original message bytes, decrypted as read; None if unknown, revoked or expired.

        Reading raises StoreError if the blob does not decrypt (wrong key, damage, truncation):
        treat an error at any point, also at the end, as "no message".
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM blobs WHERE message_id = ? AND kind = 'message'"
                " AND deleted_at IS NULL",
                (message_id,),
            ).fetchone()
        key = None if row is None else self._live_message_key(message_id)
        return None if row is None or key is None else self._open_blob(str(row[0]), key)

    def find_recipient_by_token(self, token: str) -> RecipientRecord | None:
        """The recipient a link token belongs to (also when revoked or expired: check `message`)."""
        digest = crypto.token_hash(token)
        with self._lock:
            row = self._conn.execute(
                _RECIPIENT_SELECT + " WHERE r.token_hash = ?", (digest,)
            ).fetchone()
        return None if row is None else self._recipient_record(row)

    def recipients(self, message_id: str) -> list[RecipientRecord]:
        with self._lock:
            rows = self._conn.execute(
                _RECIPIENT_SELECT + " WHERE r.message_id = ? ORDER BY r.id", (message_id,)
            ).fetchall()
        return [self._recipient_record(row) for row in rows]

    def mark_notified(self, message_id: str, address: str) -> None:
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute(
                "UPDATE recipients SET notified_at = ? WHERE message_id = ? AND address = ?",
                (now, message_id, address),
            )
            _audit(cur, now, message_id, address, "notified", "")

    def mark_opened(self, recipient_id: int) -> bool:
        """Record an open (SPEC 8: every open is recorded); the first one sets `opened_at`.
        False, recording nothing, when the message is revoked by now: checked in the open's
        own transaction, so the audit log never shows an open after the revocation (a page
        that read the message just before a revoke committed is not shown; the caller shows
        the revoked page instead).

        Every view of a message writes one, so it commits without an fsync of its own (WAL
        with synchronous=NORMAL): it survives a crash of the process and reaches the disk with
        the next durable commit or checkpoint; a power loss can drop the last few. With an fsync
        per view, bench/portal.sh's p99 rose from ~65 ms to 80-330 ms (target: 100 ms)."""
        now = int(self._now())
        with self._lock:  # the setting is the connection's: no other transaction meanwhile
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction() as cur:
                    row = cur.execute(
                        "SELECT r.message_id, r.address FROM recipients r JOIN messages m"
                        " ON m.id = r.message_id WHERE r.id = ? AND m.revoked_at IS NULL",
                        (recipient_id,),
                    ).fetchone()
                    if row is None:
                        return False
                    cur.execute(
                        "UPDATE recipients SET opened_at = COALESCE(opened_at, ?) WHERE id = ?",
                        (now, recipient_id),
                    )
                    _audit(cur, now, str(row[0]), str(row[1]), "opened", "")
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")
        return True

    # -- revocation and expiry ------------------------------------------------------------

    def revoke(self, message_id: str, reason: str = "") -> bool:
        """End the notification links: destroy the message's wrapped data key, its encrypted
        copy, replies and kept view; False if already gone. Large attachments of direct copies
        stay (their own keys): a direct delivery cannot be revoked (SPEC 8)."""
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE messages SET wrapped_key = NULL, subject = NULL, portal_view = NULL,"
                " revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, message_id),
            ).rowcount
            if not done:
                return False
            cur.execute(
                "UPDATE recipients SET phone = NULL, hint = NULL WHERE message_id = ?",
                (message_id,),
            )
            # A secure reply the MTA has not taken yet goes with the message's key: on record.
            for reply_id, address in cur.execute(
                "SELECT p.id, r.address FROM replies p JOIN recipients r ON r.id = p.recipient_id"
                " WHERE p.message_id = ? AND p.sent_at IS NULL",
                (message_id,),
            ).fetchall():
                _audit(
                    cur, now, message_id, str(address), "reply-dropped",
                    f"{reply_id}: not delivered when its message was revoked;"
                    " maintenance will not send it",
                )  # fmt: skip
            paths = [
                str(row[0])
                for row in cur.execute(
                    "SELECT path FROM blobs WHERE message_id = ? AND kind != 'attachment'"
                    " AND deleted_at IS NULL",
                    (message_id,),
                )
            ]
            cur.execute(
                "UPDATE blobs SET deleted_at = ?, data = NULL"
                " WHERE message_id = ? AND kind != 'attachment' AND deleted_at IS NULL",
                (now, message_id),
            )
            _audit(cur, now, message_id, None, "revoked", reason)
        for p in paths:
            self._remove_blob(p)
        with self._lock, contextlib.suppress(sqlite3.Error):
            # Old page images in the WAL still hold the wrapped key; fold them back and truncate.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def purge_expired(self, reply_grace: float = defaults.UNSENT_REPLY_GRACE) -> int:
        """Revoke every notification message past its expiry (run from a timer); returns how
        many. A message delivered directly to every recipient does not expire (SPEC 8).

        A message with a secure reply the MTA has not taken yet (nor refused) keeps its key
        for `reply_grace` seconds after that reply was written, so that maintenance can still
        send it; its recipients cannot read it meanwhile (expiry is checked on every read)."""
        now = int(self._now())
        with self._lock:
            ids = [
                str(row[0])
                for row in self._conn.execute(
                    "SELECT id FROM messages m WHERE revoked_at IS NULL AND expires_at IS NOT NULL"
                    " AND expires_at <= ? AND EXISTS (SELECT 1 FROM recipients r"
                    " WHERE r.message_id = m.id AND r.delivery = 'notification')"
                    " AND NOT EXISTS (SELECT 1 FROM replies p WHERE p.message_id = m.id"
                    " AND p.sent_at IS NULL AND p.refused_at IS NULL AND p.created_at > ?)",
                    (now, now - int(reply_grace)),
                )
            ]
        return sum(1 for i in ids if self.revoke(i, "expired"))

    def sweep_orphans(self, older_than: float = 3600.0) -> int:
        """Remove blob files no row refers to (left by a crash mid-save); returns how many."""
        with self._lock:
            known = {str(r[0]) for r in self._conn.execute("SELECT path FROM blobs")}
        removed = 0
        limit = self._now() - older_than
        for folder, _dirs, files in os.walk(self._blobs):
            for name in files:
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, self._path)
                if rel in known:
                    continue
                with contextlib.suppress(OSError):
                    if os.stat(full).st_mtime < limit:
                        os.unlink(full)
                        removed += 1
        return removed

    # -- accounts and contact book ---------------------------------------------------------

    def has_account(self, address: str) -> bool:
        key = _key_or_none(address)
        if key is None:
            return False
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM accounts WHERE address = ? AND active = 1", (key,)
            ).fetchone()
        return row is not None

    def account(self, address: str) -> Account | None:
        key = _key_or_none(address)
        if key is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT address, kind, active, password_hash, totp_secret IS NOT NULL"
                " FROM accounts WHERE address = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return Account(str(row[0]), row[1], bool(row[2]), row[3], bool(row[4]))

    def accounts(self) -> list[Account]:
        """Every account, senders and recipients, by kind and address."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT address, kind, active, password_hash, totp_secret IS NOT NULL"
                " FROM accounts ORDER BY kind, address"
            ).fetchall()
        return [Account(str(r[0]), r[1], bool(r[2]), r[3], bool(r[4])) for r in rows]

    def use_totp_step(self, address: str, step: int) -> bool:
        """Spend an authenticator time step: True only for a step later than any used before."""
        key = _key_or_none(address)
        if key is None:
            return False
        with self._transaction() as cur:
            cur.execute(
                "UPDATE accounts SET totp_last_step = ? WHERE address = ?"
                " AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, key, step),
            )
            return cur.rowcount == 1

    def totp_secret(self, address: str) -> bytes | None:
        key = _key_or_none(address)
        if key is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT totp_secret FROM accounts WHERE address = ?", (key,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return crypto.unseal(self._kek.field_key, bytes(row[0]), "accounts.totp_secret:" + key)

    def enrol_totp(self, address: str, secret: bytes) -> bool:
        """Keep an authenticator secret for an active account that has none: checked and set in
        one statement, so a second enrolment (another browser, a stale enrolment page) can never
        replace the one in place. False when nothing was set."""
        key = _key_or_none(address)
        if key is None:
            return False
        sealed = crypto.seal(self._kek.field_key, secret, "accounts.totp_secret:" + key)
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE accounts SET totp_secret = ? WHERE address = ? AND active = 1"
                " AND totp_secret IS NULL",
                (sealed, key),
            ).rowcount
            if done:
                _audit(cur, now, None, key, "authenticator-enrolled", "")
        return bool(done)

    def add_account(
        self,
        address: str,
        kind: AccountKind,
        password_hash: str | None = None,
        totp_secret: bytes | None = None,
    ) -> None:
        """Create or replace an account, active; the caller hashes `password_hash` itself."""
        if kind not in ("sender", "recipient"):
            raise ValueError(f"account kind {kind!r}")
        key = normalize_address(address)
        sealed = (
            None
            if totp_secret is None
            else crypto.seal(self._kek.field_key, totp_secret, "accounts.totp_secret:" + key)
        )
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO accounts (address, kind, active, password_hash, totp_secret,"
                " created_at) VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET"
                " kind = excluded.kind, active = 1, password_hash = excluded.password_hash,"
                " totp_secret = excluded.totp_secret",
                (key, kind, password_hash, sealed, now),
            )
            _audit(cur, now, None, key, "account-added", kind)

    def set_account_active(self, address: str, active: bool) -> bool:
        """Switch an account on or off; False when there is no such account."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            n = cur.execute(
                "UPDATE accounts SET active = ? WHERE address = ?", (int(active), key)
            ).rowcount
            if n:
                _audit(cur, now, None, key, "account-active" if active else "account-inactive", "")
        return bool(n)

    def idd_domains(self) -> list[str]:
        """Domains an admin listed as having inbound direct delivery (besides idd.domains)."""
        with self._lock:
            rows = self._conn.execute("SELECT domain FROM idd_domains ORDER BY domain").fetchall()
        return [str(r[0]) for r in rows]

    def set_idd_domain(self, domain: str, enabled: bool) -> bool:
        """Add (enabled) or remove a domain; False when nothing changed."""
        now = int(self._now())
        with self._transaction() as cur:
            if enabled:
                cur.execute(
                    "INSERT OR IGNORE INTO idd_domains (domain, added_at) VALUES (?, ?)",
                    (domain, now),
                )
            else:
                cur.execute("DELETE FROM idd_domains WHERE domain = ?", (domain,))
            changed = cur.rowcount > 0
            if changed:
                _audit(cur, now, None, None, "idd-added" if enabled else "idd-removed", domain)
        return changed

    def contact(self, address: str) -> Contact | None:
        key = _key_or_none(address)
        if key is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT sms, access_code_hash FROM contacts WHERE address = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        sms = None if row[0] is None else self._unseal_contact(key, bytes(row[0]))
        return Contact(sms=sms, access_code=row[1] is not None)

    def remember_contact(
        self, address: str, sms: str | None = None, access_code_hash: str | None = None
    ) -> None:
        """Remember an SMS number or access code (hash) the recipient used successfully."""
        key = normalize_address(address)
        sealed = (
            None
            if sms is None
            else crypto.seal(self._kek.field_key, sms.encode(), "contacts.sms:" + key)
        )
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO contacts (address, sms, access_code_hash, used_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET sms = COALESCE(excluded.sms, sms),"
                " access_code_hash = COALESCE(excluded.access_code_hash, access_code_hash),"
                " used_at = excluded.used_at",
                (key, sealed, access_code_hash, now),
            )
            _audit(cur, now, None, key, "contact-remembered", "sms" if sms else "access-code")

    def _unseal_contact(self, key: str, sealed: bytes) -> str:
        return crypto.unseal(self._kek.field_key, sealed, "contacts.sms:" + key).decode()

    # -- audit log ------------------------------------------------------------------------

    def record_event(
        self,
        event: str,
        message_id: str | None = None,
        recipient: str | None = None,
        detail: str = "",
    ) -> None:
        with self._transaction() as cur:
            _audit(cur, int(self._now()), message_id, recipient, event, detail)

    def events(self, message_id: str) -> list[AuditEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, message_id, recipient, event, detail FROM audit"
                " WHERE message_id = ? ORDER BY id",
                (message_id,),
            ).fetchall()
        return [AuditEvent(_dt(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    # -- internals ------------------------------------------------------------------------

    def _commit_grouped(self, write: Callable[[sqlite3.Cursor], None]) -> None:
        """Run `write` in a transaction, committed durably before this returns; concurrent
        callers share transactions and so fsyncs (see the module docstring)."""
        mine = _Pending(write)
        with self._queue_lock:
            self._queued.append(mine)
        with self._lock:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._write_batch(batch)
        if mine.error is not None:
            raise mine.error

    def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            with self._transaction() as cur:
                if len(batch) == 1:  # alone: its failure rolls the transaction back
                    batch[0].write(cur)
                    return
                for job in batch:
                    cur.execute("SAVEPOINT job")
                    try:
                        job.write(cur)
                    except BaseException as exc:  # this save fails alone
                        cur.execute("ROLLBACK TO job")
                        job.error = exc
                    cur.execute("RELEASE job")
        except BaseException as exc:  # the commit failed: none of them is stored
            for job in batch:
                job.error = job.error or exc
        finally:
            for job in batch:
                job.done = True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                # IMMEDIATE takes the write lock up front: no deadlock on a later upgrade.
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"store database: {exc}") from exc
            finally:
                cur.close()

    def _check_kek(self) -> None:
        """Fail at start, not at the first portal visit, when the KEK is not the store's."""
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped_key FROM messages WHERE wrapped_key IS NOT NULL LIMIT 1"
            ).fetchone()
        if row is not None:
            crypto.unwrap_data_key(self._kek, bytes(row[0]))

    def _message_record(self, row: Any) -> MessageRecord:
        mid, rfc822_id, queue_id, sender, subject, wrapped, created, expires, revoked, size = row
        text = None
        if subject is not None and wrapped is not None:
            field_key = crypto.message_field_key(crypto.unwrap_data_key(self._kek, bytes(wrapped)))
            text = crypto.unseal(field_key, bytes(subject), _ctx_subject(str(mid))).decode()
        return MessageRecord(
            id=str(mid),
            rfc822_id=None if rfc822_id is None else str(rfc822_id),
            queue_id=str(queue_id),
            sender=str(sender),
            subject=text,
            created_at=_dt(created),
            expires_at=_dt_or_none(expires),
            revoked_at=_dt_or_none(revoked),
            size=int(size or 0),
        )

    def _recipient_record(self, row: Any) -> RecipientRecord:
        message = self._message_record(row[: len(_MESSAGE_FIELDS)])
        r = dict(zip(_RECIPIENT_FIELDS, row[len(_MESSAGE_FIELDS) :], strict=True))
        address = str(r["address"])
        phone = hint = None
        wrapped = r["wrapped_key"]
        if wrapped is not None and (r["phone"] is not None or r["hint"] is not None):
            field_key = crypto.message_field_key(crypto.unwrap_data_key(self._kek, bytes(wrapped)))
            ctx = f"{message.id}:{address}"
            if r["phone"] is not None:
                phone = crypto.unseal(field_key, bytes(r["phone"]), "recipients.phone:" + ctx)
            if r["hint"] is not None:
                hint = crypto.unseal(field_key, bytes(r["hint"]), "recipients.hint:" + ctx)
        return RecipientRecord(
            id=int(r["id"]),
            message=message,
            address=address,
            conversation=int(r["conversation"]),
            method=str(r["method"]),
            delivery=r["delivery"],
            rule=str(r["rule"]),
            level=r["level"],
            verification=r["verification"],
            phone=None if phone is None else phone.decode(),
            hint=None if hint is None else hint.decode(),
            access_code_hash=r["access_code_hash"],
            notified_at=_dt_or_none(r["notified_at"]),
            opened_at=_dt_or_none(r["opened_at"]),
            failed_attempts=int(r["failed_attempts"]),
            lockouts=int(r["lockouts"]),
            locked_until=_dt_or_none(r["locked_until"]),
        )

    # =========================================================================================
    # portal: what the guest portal (zivmilter/portal) and its commands (`revoke`, `status`,
    # `contacts`) need. Decisions (lockout length, rate limits) are made by the caller and
    # passed in; this section only reads and writes, each change in one transaction.

    def recipient(self, recipient_id: int) -> RecipientRecord | None:
        with self._lock:
            row = self._conn.execute(
                _RECIPIENT_SELECT + " WHERE r.id = ?", (recipient_id,)
            ).fetchone()
        return None if row is None else self._recipient_record(row)

    def link_state(self, recipient_id: int) -> LinkState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT revoked_at, failed_streak, otp_sent_at, otp_sends FROM recipients"
                " WHERE id = ?",
                (recipient_id,),
            ).fetchone()
        if row is None:
            return None
        return LinkState(_dt_or_none(row[0]), int(row[1]), _dt_or_none(row[2]), int(row[3]))

    def portal_view(self, message_id: str) -> bytes | None:
        """What the portal keeps of a message to show it without parsing it again (its headers,
        body text and attachment list); sealed with the message's own key, so revoking the
        message (destroying that key) makes it unreadable too."""
        with self._lock:
            row = self._conn.execute(
                "SELECT portal_view, wrapped_key FROM messages WHERE id = ? AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        field_key = crypto.message_field_key(crypto.unwrap_data_key(self._kek, bytes(row[1])))
        return crypto.unseal(field_key, bytes(row[0]), "messages.portal_view:" + message_id)

    def save_portal_view(self, message_id: str, view: bytes) -> None:
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped_key FROM messages WHERE id = ? AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None:
            return
        field_key = crypto.message_field_key(crypto.unwrap_data_key(self._kek, bytes(row[0])))
        sealed = crypto.seal(field_key, view, "messages.portal_view:" + message_id)
        with self._transaction() as cur:
            cur.execute(
                "UPDATE messages SET portal_view = ? WHERE id = ? AND revoked_at IS NULL",
                (sealed, message_id),
            )

    def find_messages(self, ref: str) -> list[MessageRecord]:
        """Messages by store id or RFC 822 Message-ID (angle brackets optional), oldest first."""
        ref = ref.strip()
        bare = ref[1:-1] if ref.startswith("<") and ref.endswith(">") else ref
        with self._lock:
            rows = self._conn.execute(
                _MESSAGE_SELECT + " WHERE m.id = ? OR m.rfc822_id IN (?, ?)"
                " ORDER BY m.created_at, m.id",
                (bare, f"<{bare}>", bare),
            ).fetchall()
        return [self._message_record(r) for r in rows]

    def revoke_recipient(self, message_id: str, address: str, reason: str = "") -> bool:
        """Revoke one notification recipient's link; the last one revokes the whole message
        (its data key destroyed). False when there is no such live link."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE recipients SET revoked_at = ?, otp_secret = NULL WHERE message_id = ?"
                " AND address = ? AND delivery = 'notification' AND revoked_at IS NULL",
                (now, message_id, key),
            ).rowcount
            if not done:
                return False
            _audit(cur, now, message_id, key, "revoked", reason)
            left = cur.execute(
                "SELECT COUNT(*) FROM recipients WHERE message_id = ?"
                " AND delivery = 'notification' AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()[0]
        if not left:
            self.revoke(message_id, reason or "every link revoked")
        return True

    def claim_attempt(
        self, recipient_id: int, lockout: Callable[[int, int], float | None], detail: str = ""
    ) -> Attempt:
        """Claim one answer before comparing it: refused while the link is locked (audited as
        `verify-while-locked`), otherwise counted as a wrong answer at once, in the same
        transaction; `lockout(streak, lockouts)` says for how many seconds the link locks when
        this answer reaches the limit (None: not yet). Settle it with `settle_attempt`."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, failed_streak, lockouts, locked_until"
                " FROM recipients WHERE id = ?",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return Attempt(recipient_id, False, None)
            message_id, address = str(row[0]), str(row[1])
            streak, lockouts, locked = int(row[2]) + 1, int(row[3]), row[4]
            if locked is not None and now < int(locked):
                _audit(cur, now, message_id, address, "verify-while-locked", detail)
                return Attempt(recipient_id, False, _dt(locked))
            seconds = lockout(streak, lockouts)
            until = None if seconds is None else now + int(seconds)
            cur.execute(
                "UPDATE recipients SET failed_attempts = failed_attempts + 1, failed_streak = ?,"
                " lockouts = ?, locked_until = COALESCE(?, locked_until) WHERE id = ?",
                (
                    0 if until is not None else streak,
                    lockouts + 1 if until is not None else lockouts,
                    until,
                    recipient_id,
                ),
            )
        return Attempt(recipient_id, True, _dt_or_none(until), int(seconds or 0))

    def settle_attempt(self, attempt: Attempt, ok: bool, detail: str = "") -> datetime | None:
        """The outcome of a claimed answer. Wrong: it stays counted (audited as `verify-failed`,
        and `locked` when its claim locked the link). Right: its count is taken back, the streak
        ends, and a lock its own claim set is lifted (the answer was in before the limit).
        Returns the end of the lock in force now, if any."""
        if not attempt.admitted:
            return attempt.locked_until
        now = int(self._now())
        set_lock = _ts(attempt.locked_until)
        with self._transaction() as cur:
            row = _recipient_ref(cur, attempt.recipient_id)
            if row is None:
                return None
            message_id, address = str(row[0]), str(row[1])
            if ok:
                cur.execute(
                    "UPDATE recipients SET failed_attempts = MAX(failed_attempts - 1, 0),"
                    " failed_streak = 0,"
                    " lockouts = lockouts - (? IS NOT NULL AND locked_until IS ?),"
                    " locked_until = CASE WHEN locked_until IS ? THEN NULL ELSE locked_until END"
                    " WHERE id = ?",
                    (set_lock, set_lock, set_lock, attempt.recipient_id),
                )
            else:
                _audit(cur, now, message_id, address, "verify-failed", detail)
                if set_lock is not None:
                    _audit(cur, now, message_id, address, "locked", f"{attempt.lock_seconds} s")
            locked = cur.execute(
                "SELECT locked_until FROM recipients WHERE id = ?", (attempt.recipient_id,)
            ).fetchone()[0]
        return _dt(locked) if locked is not None and now < int(locked) else None

    def record_verified(self, recipient_id: int, detail: str = "") -> None:
        """A successful verification: the failure streak and the one-time code are spent."""
        now = int(self._now())
        with self._transaction() as cur:
            row = _recipient_ref(cur, recipient_id)
            if row is None:
                return
            cur.execute(
                "UPDATE recipients SET failed_streak = 0, otp_secret = NULL, otp_sends = 0"
                " WHERE id = ?",
                (recipient_id,),
            )
            _audit(cur, now, str(row[0]), str(row[1]), "verified", detail)

    def claim_otp(
        self, recipient_id: int, secret: bytes, min_interval: float, max_sends: int
    ) -> float:
        """Store a new one-time code secret if the rate limits allow one now: returns 0.0 when
        stored (the caller sends the code), else the seconds to wait (`inf`: none left)."""
        now = int(self._now())
        sealed = crypto.seal(self._kek.field_key, secret, f"recipients.otp:{recipient_id}")
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, otp_sent_at, otp_sends FROM recipients WHERE id = ?",
                (recipient_id,),
            ).fetchone()
            if row is None:
                return float("inf")
            sent_at, sends = row[2], int(row[3])
            if sends >= max_sends:
                return float("inf")
            if sent_at is not None and now - int(sent_at) < min_interval:
                return float(min_interval - (now - int(sent_at)))
            cur.execute(
                "UPDATE recipients SET otp_secret = ?, otp_sent_at = ?, otp_sends = otp_sends + 1"
                " WHERE id = ?",
                (sealed, now, recipient_id),
            )
            _audit(cur, now, str(row[0]), str(row[1]), "code-issued", f"#{sends + 1}")
        return 0.0

    def otp(self, recipient_id: int) -> OtpState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT otp_secret, otp_sent_at FROM recipients WHERE id = ?", (recipient_id,)
            ).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        secret = crypto.unseal(self._kek.field_key, bytes(row[0]), f"recipients.otp:{recipient_id}")
        return OtpState(secret, _dt(row[1]))

    def consume_otp(
        self, recipient_id: int, valid: Callable[[bytes, datetime], bool], detail: str = ""
    ) -> bool:
        """Spend the link's one-time code if `valid(secret, sent_at)` says the answer is that
        code: compared and consumed in one transaction, and recorded as `verified` (with what
        `record_verified` resets) in the same one. True for exactly one caller per code.

        Compare-and-consume: the code is read, compared (the caller's check: the code is a TOTP
        value of a sealed secret, which SQL cannot compute), then cleared by an UPDATE that
        matches the very sealed value that was compared (a fresh nonce per code); its row
        count decides. Here BEGIN IMMEDIATE already serializes the step; the conditional UPDATE
        keeps it right where the read takes no lock (PostgreSQL, READ COMMITTED: the UPDATE
        re-checks its WHERE on the row a concurrent consumer changed, and matches nothing).
        A newer code (`claim_otp`), a revoked link, or a winner first: False. (A revoked
        message is the caller's to refuse: its direct copies' download links still verify.)"""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT message_id, address, otp_secret, otp_sent_at FROM recipients WHERE id = ?",
                (recipient_id,),
            ).fetchone()
            if row is None or row[2] is None or row[3] is None:
                return False
            sealed = bytes(row[2])
            secret = crypto.unseal(self._kek.field_key, sealed, f"recipients.otp:{recipient_id}")
            if not valid(secret, _dt(row[3])):
                return False
            done = cur.execute(
                "UPDATE recipients SET otp_secret = NULL, failed_streak = 0, otp_sends = 0"
                " WHERE id = ? AND otp_secret = ? AND revoked_at IS NULL",
                (recipient_id, sealed),
            ).rowcount
            if done != 1:
                return False
            _audit(cur, now, str(row[0]), str(row[1]), "verified", detail)
        return True

    def clear_otp(self, recipient_id: int) -> None:
        """Forget the code secret and its send slot (sending it failed: let the user retry)."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE recipients SET otp_secret = NULL, otp_sent_at = NULL,"
                " otp_sends = MAX(otp_sends - 1, 0) WHERE id = ? AND otp_secret IS NOT NULL",
                (recipient_id,),
            )

    def save_reply(self, recipient_id: int, content: bytes) -> str:
        """Durably store a reply (RFC 5322 bytes) in the recipient's conversation; returns its id.

        It is sealed with the message's data key, so revoking the message destroys it too.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT r.message_id, r.address, r.conversation, m.wrapped_key FROM recipients r"
                " JOIN messages m ON m.id = r.message_id WHERE r.id = ? AND m.revoked_at IS NULL",
                (recipient_id,),
            ).fetchone()
        if row is None or row[3] is None:
            raise StoreError(f"recipient {recipient_id}: message gone, cannot store a reply")
        message_id, address, conversation = str(row[0]), str(row[1]), int(row[2])
        data_key = crypto.unwrap_data_key(self._kek, bytes(row[3]))
        reply_id = secrets.token_hex(16)
        blob_id = secrets.token_hex(16)
        blob = self._write_blob(blob_id, data_key, content)
        now = int(self._now())
        try:
            with self._transaction() as cur:
                _insert_blob(cur, blob, blob_id, message_id, "reply")
                cur.execute(
                    "INSERT INTO replies (id, message_id, recipient_id, conversation, blob_id,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (reply_id, message_id, recipient_id, conversation, blob_id, now),
                )
                _audit(cur, now, message_id, address, "reply-stored", reply_id)
        except BaseException:
            self._remove_blob(blob.path)
            raise
        return reply_id

    def mark_reply_sent(self, reply_id: str, detail: str = "") -> None:
        self._mark_reply(reply_id, "sent_at", "reply-sent", detail)

    def mark_reply_undeliverable(self, reply_id: str, detail: str) -> None:
        """The MTA refused this reply for good: `unsent_replies` offers it again only when
        asked to (`zivmilter maintenance --retry-refused`, once the cause is mended)."""
        self._mark_reply(reply_id, "refused_at", "reply-undeliverable", detail)

    def _mark_reply(
        self, reply_id: str, column: Literal["sent_at", "refused_at"], event: str, detail: str
    ) -> None:
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT p.message_id, r.address FROM replies p"
                " JOIN recipients r ON r.id = p.recipient_id WHERE p.id = ?",
                (reply_id,),
            ).fetchone()
            if row is None:
                return
            cur.execute(f"UPDATE replies SET {column} = ? WHERE id = ?", (now, reply_id))
            _audit(cur, now, str(row[0]), str(row[1]), event, detail)

    def replies(self, recipient_id: int) -> list[ReplyRecord]:
        """The replies this recipient wrote, oldest first."""
        return self._reply_records("p.recipient_id = ?", (recipient_id,))

    def unsent_replies(
        self, older_than: float = 0.0, *, refused: bool = False, message_id: str | None = None
    ) -> list[ReplyRecord]:
        """Replies the MTA did not take yet (a failed hand-over in the portal), oldest first;
        only those written `older_than` seconds ago or earlier (one the portal is handing over
        right now is not unsent yet). Those it refused for good only with `refused`; only
        those to `message_id` when given."""
        where = "p.sent_at IS NULL AND p.created_at <= ?"
        args: tuple[Any, ...] = (int(self._now() - older_than),)
        if not refused:
            where += " AND p.refused_at IS NULL"
        if message_id is not None:
            where += " AND p.message_id = ?"
            args += (message_id,)
        return self._reply_records(where, args)

    def _reply_records(self, where: str, args: tuple[Any, ...]) -> list[ReplyRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.id, p.message_id, p.recipient_id, p.conversation, p.created_at,"
                " p.sent_at, b.size, p.refused_at FROM replies p JOIN blobs b ON b.id = p.blob_id"
                f" WHERE {where} AND b.deleted_at IS NULL ORDER BY p.created_at, p.rowid",
                args,
            ).fetchall()
        return [
            ReplyRecord(
                str(r[0]),
                str(r[1]),
                int(r[2]),
                int(r[3]),
                _dt(r[4]),
                _dt_or_none(r[5]),
                int(r[6]),
                _dt_or_none(r[7]),
            )
            for r in rows
        ]

    def open_reply(self, reply_id: str) -> BinaryIO | None:
        """A reply's content, to hand it to the MTA; None once its message is revoked. Also
        past the message's expiry: the reply was written before it, and goes to the sender
        (expiry closes the message to its recipients)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT p.blob_id, m.wrapped_key FROM replies p"
                " JOIN messages m ON m.id = p.message_id"
                " WHERE p.id = ? AND m.revoked_at IS NULL",
                (reply_id,),
            ).fetchone()
        if row is None or row[1] is None:
            return None
        return self._open_blob(str(row[0]), crypto.unwrap_data_key(self._kek, bytes(row[1])))

    def contacts(self) -> list[ContactEntry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT address, sms, access_code_hash IS NOT NULL, used_at FROM contacts"
                " ORDER BY address"
            ).fetchall()
        return [
            ContactEntry(
                str(r[0]),
                None if r[1] is None else self._unseal_contact(str(r[0]), bytes(r[1])),
                bool(r[2]),
                _dt_or_none(r[3]),
            )
            for r in rows
        ]

    def forget_contact(self, address: str) -> bool:
        key = normalize_address(address)
        with self._transaction() as cur:
            n = cur.execute("DELETE FROM contacts WHERE address = ?", (key,)).rowcount
            if n:
                _audit(cur, int(self._now()), None, key, "contact-forgotten", "")
        return bool(n)

    def save_attachment(
        self,
        message_id: str,
        filename: str,
        content_type: str,
        content: BinaryIO | bytes | str | os.PathLike[str],
    ) -> SavedAttachment:
        """Keep a large attachment of a stored message for download; returns its token (the
        only time it exists). The gateway puts the link in the direct copies instead.

        It is sealed under a data key of its own, not the message's: revoking or expiring the
        message destroys that key, and the direct copy's link must keep working."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND revoked_at IS NULL", (message_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"message {message_id}: unknown or revoked")
        data_key = crypto.new_data_key()
        wrapped_key = crypto.wrap_data_key(self._kek, data_key)
        attachment_id = secrets.token_hex(16)
        blob_id = secrets.token_hex(16)
        token = secrets.token_urlsafe(defaults.LINK_TOKEN_BYTES)
        blob = self._write_blob(blob_id, data_key, content)
        sealed_name = crypto.seal(
            crypto.message_field_key(data_key),
            filename.encode("utf-8"),
            "attachments.filename:" + attachment_id,
        )
        now = int(self._now())
        try:
            with self._transaction() as cur:
                _insert_blob(cur, blob, blob_id, message_id, "attachment")
                cur.execute(
                    "INSERT INTO attachments (id, message_id, blob_id, filename, content_type,"
                    " token_hash, created_at, wrapped_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        attachment_id,
                        message_id,
                        blob_id,
                        sealed_name,
                        content_type,
                        crypto.token_hash(token),
                        now,
                        wrapped_key,
                    ),
                )
                _audit(cur, now, message_id, None, "attachment-stored", attachment_id)
        except BaseException:
            self._remove_blob(blob.path)
            raise
        return SavedAttachment(attachment_id, token)

    def find_attachment_by_token(self, token: str) -> AttachmentRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id FROM attachments WHERE token_hash = ?", (crypto.token_hash(token),)
            ).fetchone()
        return None if row is None else self.attachment(str(row[0]))

    def attachment(self, attachment_id: str) -> AttachmentRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_MESSAGE_FIELDS)}, a.id, a.filename, a.content_type,"
                " b.size, a.created_at, COALESCE(a.wrapped_key, m.wrapped_key), b.deleted_at"
                " FROM attachments a"
                " JOIN messages m ON m.id = a.message_id JOIN blobs b ON b.id = a.blob_id"
                " WHERE a.id = ?",
                (attachment_id,),
            ).fetchone()
        if row is None:
            return None
        n = len(_MESSAGE_FIELDS)
        message = self._message_record(row[:n])
        aid, sealed, ctype, size, created, wrapped, deleted = row[n:]
        available = wrapped is not None and deleted is None
        filename = None
        if sealed is not None and available:
            field_key = crypto.message_field_key(crypto.unwrap_data_key(self._kek, bytes(wrapped)))
            filename = crypto.unseal(
                field_key, bytes(sealed), "attachments.filename:" + str(aid)
            ).decode("utf-8")
        return AttachmentRecord(
            str(aid), message, filename, str(ctype), int(size), _dt(created), available
        )

    def open_attachment(self, attachment_id: str) -> BinaryIO | None:
        """The attachment's bytes, decrypted as read; it does not expire with its message."""
        with self._lock:
            # An attachment without a key of its own (written by a zivmilter before schema 6 while
            # this one ran) is still sealed under its message's key.
            row = self._conn.execute(
                "SELECT a.blob_id, COALESCE(a.wrapped_key, m.wrapped_key) FROM attachments a"
                " JOIN messages m ON m.id = a.message_id WHERE a.id = ?",
                (attachment_id,),
            ).fetchone()
        if row is None or row[1] is None:
            return None
        return self._open_blob(str(row[0]), crypto.unwrap_data_key(self._kek, bytes(row[1])))

    def _live_message_key(self, message_id: str) -> bytes | None:
        """The message's data key while its content may be read: None once revoked or expired."""
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped_key, expires_at FROM messages WHERE id = ? AND revoked_at IS NULL",
                (message_id,),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        if row[1] is not None and int(self._now()) >= int(row[1]):
            return None
        return crypto.unwrap_data_key(self._kek, bytes(row[0]))

    def _open_blob(self, blob_id: str, data_key: bytes) -> BinaryIO | None:
        """A blob's plaintext as read, under `data_key`; None once the blob is deleted."""
        with self._lock:
            row = self._conn.execute(
                "SELECT path, sha256, data FROM blobs WHERE id = ? AND deleted_at IS NULL",
                (blob_id,),
            ).fetchone()
        if row is None:
            return None
        fh: BinaryIO
        if not row[0]:  # kept in the row
            if row[2] is None:
                raise StoreError(f"blob {blob_id}: encrypted copy missing from its row")
            fh = io.BytesIO(bytes(row[2]))
        else:
            try:
                fh = open(os.path.join(self._path, str(row[0])), "rb")  # noqa: SIM115 - returned
            except OSError as exc:
                raise StoreError(f"blob {blob_id}: encrypted copy unreadable: {exc}") from None
        try:
            raw = crypto.DecryptingReader(crypto.content_key(data_key, blob_id), fh, str(row[1]))
        except BaseException:
            fh.close()
            raise
        return io.BufferedReader(raw, buffer_size=crypto.RECORD_SIZE)

    # end of the portal section
    # =========================================================================================


_MESSAGE_FIELDS = (
    "m.id", "m.rfc822_id", "m.queue_id", "m.sender", "m.subject", "m.wrapped_key",
    "m.created_at", "m.expires_at", "m.revoked_at",
    "(SELECT size FROM blobs b WHERE b.message_id = m.id AND b.kind = 'message')",
)  # fmt: skip
_RECIPIENT_FIELDS = (
    "id", "address", "conversation", "method", "delivery", "rule", "level", "verification",
    "phone", "access_code_hash", "hint", "notified_at", "opened_at", "failed_attempts",
    "lockouts", "locked_until", "wrapped_key",
)  # fmt: skip
_MESSAGE_SELECT = f"SELECT {', '.join(_MESSAGE_FIELDS)} FROM messages m"
_RECIPIENT_SELECT = (
    f"SELECT {', '.join(_MESSAGE_FIELDS)}, "
    + ", ".join("m.wrapped_key" if f == "wrapped_key" else "r." + f for f in _RECIPIENT_FIELDS)
    + " FROM recipients r JOIN messages m ON m.id = r.message_id"
)


# ---------------------------------------------------------------------------------------------


def open_configured(cfg: Config) -> SqliteStore:
    """The store a configuration names, opened with its key-encryption key (KeyFileError when
    the key is missing or readable by others)."""
    return SqliteStore.open(cfg.store.path, crypto.load_kek(cfg.store.key_file))


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = 0 if row is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {current} is newer than this zivmilter ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            for statement in _statements(_MIGRATIONS[version]):
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _checked(r: NewRecipient) -> NewRecipient:
    """Validate a recipient and normalize its address (a caller's bug raises ValueError)."""
    if r.delivery not in _DELIVERIES:
        raise ValueError(f"{r.address}: delivery {r.delivery!r}")
    if r.verification is not None and r.verification not in _VERIFICATIONS:
        raise ValueError(f"{r.address}: verification {r.verification!r}")
    if r.delivery == "notification" and r.verification is None:
        raise ValueError(f"{r.address}: a notification recipient needs a verification kind")
    if r.delivery == "direct" and (r.verification or r.phone or r.access_code):
        raise ValueError(f"{r.address}: a direct recipient has no verification")
    if r.phone is not None and r.verification != "sms":
        raise ValueError(f"{r.address}: a phone number without sms verification")
    if r.access_code is not None and r.verification != "access_code":
        raise ValueError(f"{r.address}: an access code without access-code verification")
    address = normalize_address(r.address)
    return r if address == r.address else replace(r, address=address)


def _key_or_none(address: str) -> str | None:
    try:
        return normalize_address(address)
    except MessageError:
        return None


@dataclass(eq=False)
class _Blob:
    """An encrypted content: in its file (`path`) or, small, in memory for its row (`data`)."""

    path: str  # relative to the store folder; '' when the row carries the ciphertext
    written: crypto.Encrypted
    data: bytes | None


@dataclass(eq=False)
class _Pending:
    """A save waiting for a group commit."""

    write: Callable[[sqlite3.Cursor], None]
    done: bool = False
    error: BaseException | None = None


def _insert_blob(
    cur: sqlite3.Cursor, blob: _Blob, blob_id: str, message_id: str, kind: str
) -> None:
    cur.execute(
        "INSERT INTO blobs (id, message_id, kind, path, size, cipher_size, sha256, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            blob_id,
            message_id,
            kind,
            blob.path,
            blob.written.size,
            blob.written.cipher_size,
            blob.written.sha256,
            blob.data,
        ),
    )


def _ordered_id() -> str:
    """A message or blob id: 128 random bits (unguessable) behind the time in milliseconds.

    Ids in creation order make every index keyed by them grow at its right edge: a save then
    dirties the few pages it shares with the saves before it, not a random page per index
    (measured for 5 KB messages committed six at a time: 13 pages written per save before, 8
    after)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(16)}"


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
def _source(content: BinaryIO | bytes | str | os.PathLike[str]) -> Iterator[BinaryIO]:
    if isinstance(content, bytes):
        yield io.BytesIO(content)
    elif isinstance(content, str | os.PathLike):
        with open(content, "rb") as fh:
            yield fh
    else:
        yield content  # the caller's file: the caller closes it


def _recipient_ref(cur: sqlite3.Cursor, recipient_id: int) -> Any:
    """(message id, address) of a recipient row, for its audit events; None when it is gone."""
    return cur.execute(
        "SELECT message_id, address FROM recipients WHERE id = ?", (recipient_id,)
    ).fetchone()


def _audit(
    cur: sqlite3.Cursor,
    at: int,
    message_id: str | None,
    recipient: str | None,
    event: str,
    detail: str,
) -> None:
    cur.execute(
        "INSERT INTO audit (at, message_id, recipient, event, detail) VALUES (?, ?, ?, ?, ?)",
        (at, message_id, recipient, event, detail),
    )


def _ctx_subject(message_id: str) -> str:
    return "messages.subject:" + message_id


def _ts(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(value.timestamp())


def _dt(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def _dt_or_none(value: Any) -> datetime | None:
    return None if value is None else _dt(value)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "Account",
    "AttachmentRecord",
    "Attempt",
    "AuditEvent",
    "ContactEntry",
    "LinkState",
    "MessageRecord",
    "NewMessage",
    "NewRecipient",
    "OtpState",
    "RecipientRecord",
    "ReplyRecord",
    "SavedAttachment",
    "SavedMessage",
    "SqliteStore",
    "Store",
]
