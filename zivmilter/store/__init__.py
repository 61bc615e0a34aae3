"""The encrypted message store: what the milter saves before it accepts, what the portal reads.

- records.py: the values in and out; interfaces.py: one Protocol per aggregate and `Store`,
  their union (callers take the narrowest one they use);
- sealing.py: the key hierarchy and every encryption context (the only caller of crypto's
  seal/unseal/wrap in the store); blobs.py: encrypted contents, and the blob files;
- what the rows mean, once for both backends (plain values in and out, no SQL): rows.py
  (messages, recipients), attempts.py (a lockable row's counters and one-time code: links',
  claims', sign-ins'), and one module per aggregate: messages.py, contents.py, replies.py,
  claims.py, senders.py, accounts.py, contacts.py, recipientkeys.py, audit.py, attachments.py;
- sqlite/: the single-machine backend (connection and group commit, schema, one module of SQL
  and its locking per aggregate); postgresql/: the backend for several nodes on one PostgreSQL
  (the same shape, its own SQL, contents in the database; needs the `postgresql` extra).

Every command opens the store with `open_store(config)`; one that only reads it with
`open_store(config, read_only=True)` (readonly.py).
"""

from __future__ import annotations

import os

from zivmilter import crypto
from zivmilter.core.config import Config
from zivmilter.errors import StoreError
from zivmilter.store.interfaces import (
    AccountStore,
    AttachmentStore,
    AuditLog,
    ContactBook,
    FactsStore,
    GatewayStore,
    HandoverStore,
    Housekeeping,
    IddList,
    KeyRotation,
    MessageStore,
    RecipientKeys,
    ReplyStore,
    SenderStore,
    Store,
    TrustedDevices,
)
from zivmilter.store.records import (
    Account,
    AccountKind,
    AttachmentRecord,
    Attempt,
    AuditEvent,
    ClaimAttempt,
    ClaimRecord,
    ContactEntry,
    Delivery,
    Handover,
    KeyUsage,
    LinkState,
    LinkView,
    MessageRecord,
    NewMessage,
    NewPart,
    NewRecipient,
    OtpState,
    PartRecord,
    RecipientRecord,
    ReplyRecord,
    ReplyUsage,
    SavedAttachment,
    SavedMessage,
    SentPage,
    SignInAttempt,
    StoredKey,
    Verification,
)
from zivmilter.store.sqlite import DB_NAME, SCHEMA_VERSION, SqliteStore


def open_store(cfg: Config, *, read_only: bool = False) -> Store:
    """The store a configuration names, opened with its key-encryption key: the one way every
    command (milter, portal, maintenance, accounts, idd) opens it.

    KeyFileError when the key is missing or readable by others; StoreError when the folder
    cannot be created or the store opened (PostgreSQL: unreachable, or its schema older than
    this zivmilter). The one place that picks the backend.

    `read_only`, for commands that only read: the store must exist (nothing is created, no
    migration runs, SQLite takes no write lock and reads files it may not write; PostgreSQL's
    sessions are read-only), and every method that would change it raises StoreError."""
    kek = crypto.load_kek(cfg.store.key_file)
    # During a key rotation (README "Key rotation") the store also reads what older keys wrapped.
    previous = [crypto.load_kek(path) for path in cfg.store.previous_key_files]
    if cfg.store.backend == "postgresql":
        try:
            from zivmilter.store.postgresql import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"store.backend postgresql needs psycopg ({exc}): install zivmilter[postgresql]"
            ) from None
        return PostgresStore.open(
            cfg.store.dsn,
            kek,
            previous=previous,
            passfile=cfg.store.password_file,
            pool_size=cfg.store.pool_size,
            local_path=cfg.store.path,
            read_only=read_only,
        )
    if read_only:
        return SqliteStore.open(cfg.store.path, kek, previous=previous, read_only=True)
    try:
        os.makedirs(cfg.store.path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{cfg.store.path}: cannot create the store folder: {exc}") from None
    return SqliteStore.open(cfg.store.path, kek, previous=previous)


__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "Account",
    "AccountKind",
    "AccountStore",
    "AttachmentRecord",
    "AttachmentStore",
    "Attempt",
    "AuditEvent",
    "AuditLog",
    "ClaimAttempt",
    "ClaimRecord",
    "ContactBook",
    "ContactEntry",
    "Delivery",
    "FactsStore",
    "GatewayStore",
    "Handover",
    "HandoverStore",
    "Housekeeping",
    "IddList",
    "KeyRotation",
    "KeyUsage",
    "LinkState",
    "LinkView",
    "MessageRecord",
    "MessageStore",
    "NewMessage",
    "NewPart",
    "NewRecipient",
    "OtpState",
    "PartRecord",
    "RecipientKeys",
    "RecipientRecord",
    "ReplyRecord",
    "ReplyStore",
    "ReplyUsage",
    "SavedAttachment",
    "SavedMessage",
    "SenderStore",
    "SentPage",
    "SignInAttempt",
    "SqliteStore",
    "Store",
    "StoredKey",
    "TrustedDevices",
    "Verification",
    "open_store",
]
