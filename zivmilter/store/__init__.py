"""The encrypted message store: what the milter saves before it accepts, what the portal reads.

- records.py: the values in and out; interfaces.py: one Protocol per aggregate and `Store`,
  their union (callers take the narrowest one they use);
- sealing.py: the key hierarchy and every encryption context (the only caller of crypto's
  seal/unseal/wrap in the store); blobs.py: encrypted contents, and the blob files;
- sqlite/: the backend (connection and group commit, schema, one module of SQL per aggregate).

Every command opens the store with `open_store(config)`.
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
    MessageStore,
    ReplyStore,
    Store,
)
from zivmilter.store.records import (
    Account,
    AccountKind,
    AttachmentRecord,
    Attempt,
    AuditEvent,
    ContactEntry,
    Delivery,
    Handover,
    LinkState,
    MessageRecord,
    NewMessage,
    NewRecipient,
    OtpState,
    RecipientRecord,
    ReplyRecord,
    SavedAttachment,
    SavedMessage,
    Verification,
)
from zivmilter.store.sqlite import DB_NAME, SCHEMA_VERSION, SqliteStore


def open_store(cfg: Config) -> Store:
    """The store a configuration names, opened with its key-encryption key: the one way every
    command (milter, portal, maintenance, accounts, idd) opens it.

    KeyFileError when the key is missing or readable by others; StoreError when the folder
    cannot be created or the store opened. The one place that picks the backend (SQLite today:
    a PostgreSQL store would be chosen here from the configuration)."""
    kek = crypto.load_kek(cfg.store.key_file)
    try:
        os.makedirs(cfg.store.path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{cfg.store.path}: cannot create the store folder: {exc}") from None
    return SqliteStore.open(cfg.store.path, kek)


def open_configured(cfg: Config) -> Store:
    """The former name of `open_store`, kept for code written against it."""
    return open_store(cfg)


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
    "ContactBook",
    "ContactEntry",
    "Delivery",
    "FactsStore",
    "GatewayStore",
    "Handover",
    "HandoverStore",
    "Housekeeping",
    "IddList",
    "LinkState",
    "MessageRecord",
    "MessageStore",
    "NewMessage",
    "NewRecipient",
    "OtpState",
    "RecipientRecord",
    "ReplyRecord",
    "ReplyStore",
    "SavedAttachment",
    "SavedMessage",
    "SqliteStore",
    "Store",
    "Verification",
    "open_configured",
    "open_store",
]
