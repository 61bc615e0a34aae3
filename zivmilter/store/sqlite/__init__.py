"""The SQLite backend: metadata in SQLite (WAL, synchronous=FULL), each content encrypted, up to
`inline_max` bytes (256 KiB by default: nearly all mail) in its `blobs` row, larger ones as a blob
file under `<path>/blobs/`.

`SqliteStore` is composed of one mixin per aggregate (messages.py, links.py, attachments.py,
replies.py, accounts.py, senders.py, contacts.py, audit.py) over `SqliteBase` (connection.py: the
connection, its lock, transactions, group commit). Mixins rather than one object per aggregate
because the aggregates share one connection, one lock and often one transaction (a save writes
messages, blobs and the audit log at once; revoking the last link revokes the message): separate
objects would hand a cursor or the lock back and forth, and every call from the milter would pay
one more indirection on its hot path. The PostgreSQL backend brings its own mixins over its own
base; the sealing (sealing.py), the blob files (blobs.py) and what the rows mean (store/rows.py,
store/attempts.py and one module per aggregate: store/claims.py, store/senders.py...) are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from zivmilter import defaults
from zivmilter.store.blobs import BlobStore, FileBlobStore
from zivmilter.store.readonly import ReadOnlyBlobs
from zivmilter.store.sealing import Sealing
from zivmilter.store.sqlite.accounts import AccountsMixin
from zivmilter.store.sqlite.attachments import AttachmentsMixin
from zivmilter.store.sqlite.audit import AuditMixin
from zivmilter.store.sqlite.claims import ClaimsMixin
from zivmilter.store.sqlite.connection import connect, connect_read_only
from zivmilter.store.sqlite.contacts import ContactsMixin, IddMixin
from zivmilter.store.sqlite.devices import DevicesMixin
from zivmilter.store.sqlite.handovers import HandoversMixin
from zivmilter.store.sqlite.keys import KeysMixin
from zivmilter.store.sqlite.links import LinksMixin
from zivmilter.store.sqlite.recipientkeys import RecipientKeysMixin
from zivmilter.store.sqlite.replies import RepliesMixin
from zivmilter.store.sqlite.schema import DB_NAME, SCHEMA_VERSION
from zivmilter.store.sqlite.senders import SendersMixin


class SqliteStore(
    KeysMixin,
    LinksMixin,
    SendersMixin,
    HandoversMixin,
    AttachmentsMixin,
    ClaimsMixin,
    RepliesMixin,
    AccountsMixin,
    ContactsMixin,
    DevicesMixin,
    IddMixin,
    RecipientKeysMixin,
    AuditMixin,
):
    """The SQLite + blob-file store. Create with `SqliteStore.open(path, kek)`."""

    @classmethod
    def open(
        cls,
        path: str,
        kek: bytes,
        *,
        previous: Sequence[bytes] = (),
        now: Callable[[], float] = time.time,
        inline_max: int = defaults.STORE_INLINE_MAX,
        read_only: bool = False,
    ) -> SqliteStore:
        """Open (creating if needed) the store in folder `path`; `kek` from `crypto.load_kek`.

        Contents up to `inline_max` bytes are kept in the database, larger ones in blob files.
        `read_only`: open an existing store only to read it (connection.connect_read_only):
        nothing is created or migrated, and every change raises StoreError."""
        sealing = Sealing.from_bytes(kek, previous)
        blobs: BlobStore = FileBlobStore(path)
        if read_only:
            conn = connect_read_only(path)
            blobs = ReadOnlyBlobs(blobs, path)
        else:
            conn = connect(path)
        store = cls(path, sealing, conn, blobs, now, inline_max, read_only=read_only)
        store._check_kek()
        return store


__all__ = ["DB_NAME", "SCHEMA_VERSION", "SqliteStore"]
