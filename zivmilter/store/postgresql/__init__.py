"""The PostgreSQL backend, for several gateway nodes on one database (README "Several nodes").

Metadata and every content in PostgreSQL: contents up to `inline_max` bytes in their `blobs` row,
larger ones in `blob_chunks` (blobs.py: the `BlobStore` of this backend), so a node needs no shared
filesystem. `PostgresStore` is composed like `SqliteStore`: one mixin per aggregate (messages.py,
links.py, handovers.py, attachments.py, replies.py, accounts.py, senders.py, contacts.py,
audit.py), each with its own SQL in PostgreSQL's dialect, over `PgBase` (connection.py: the pool
and transactions). The sealing (store/sealing.py) is shared with SQLite: the same key file opens
both; so is what the rows mean (store/rows.py, store/attempts.py, store/claims.py...).

Each check-then-act is one transaction that locks what it decides on; the methods say how.
The schema is migrated by `zivmilter store migrate` (schema.py), never at start: a database
whose schema is older than this zivmilter is refused with a message naming that command.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import psycopg

from zivmilter import defaults
from zivmilter.errors import StoreError
from zivmilter.store.blobs import BlobStore
from zivmilter.store.postgresql.accounts import AccountsMixin
from zivmilter.store.postgresql.attachments import AttachmentsMixin
from zivmilter.store.postgresql.audit import AuditMixin
from zivmilter.store.postgresql.blobs import PgBlobStore
from zivmilter.store.postgresql.claims import ClaimsMixin
from zivmilter.store.postgresql.connection import Connections, describe, open_pool
from zivmilter.store.postgresql.contacts import ContactsMixin, IddMixin
from zivmilter.store.postgresql.devices import DevicesMixin
from zivmilter.store.postgresql.handovers import HandoversMixin
from zivmilter.store.postgresql.keys import KeysMixin
from zivmilter.store.postgresql.links import LinksMixin
from zivmilter.store.postgresql.recipientkeys import RecipientKeysMixin
from zivmilter.store.postgresql.replies import RepliesMixin
from zivmilter.store.postgresql.schema import SCHEMA_VERSION, check_version, migrate_database
from zivmilter.store.postgresql.senders import SendersMixin
from zivmilter.store.readonly import ReadOnlyBlobs
from zivmilter.store.sealing import Sealing


class PostgresStore(
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
    """The PostgreSQL store. Create with `PostgresStore.open(dsn, kek)`."""

    @classmethod
    def open(
        cls,
        dsn: str,
        kek: bytes,
        *,
        previous: Sequence[bytes] = (),
        passfile: str | None = None,
        pool_size: int = defaults.STORE_POOL_SIZE,
        now: Callable[[], float] = time.time,
        inline_max: int = defaults.STORE_INLINE_MAX,
        local_path: str | None = None,
        read_only: bool = False,
    ) -> PostgresStore:
        """Open the store in the database `dsn` (a libpq connection string or URI, without a
        password: libpq reads it from `passfile`, PGPASSFILE or ~/.pgpass); `kek` from
        `crypto.load_kek`. StoreError when the database is unreachable or its schema is not
        this zivmilter's (`zivmilter store migrate` upgrades it). `local_path` is this node's
        `store.path`, whose free space `free_bytes` reports (the store keeps nothing there).
        `read_only`: every session is read-only and every change raises StoreError."""
        sealing = Sealing.from_bytes(kek, previous)
        pool = open_pool(dsn, passfile, pool_size, read_only=read_only)
        try:
            with pool.connection() as conn, conn.cursor() as cur:
                check_version(cur, dsn)
            connections = Connections(pool)
            blobs: BlobStore = PgBlobStore(connections, now)  # a request scope's connection too
            if read_only:
                blobs = ReadOnlyBlobs(blobs, f"PostgreSQL {describe(dsn)}")
            store = cls(
                dsn,
                passfile,
                sealing,
                connections,
                blobs,
                now,
                inline_max,
                local_path,
                read_only=read_only,
            )
            store._check_kek()
        except psycopg.Error as exc:
            pool.close()
            raise StoreError(f"PostgreSQL {describe(dsn)}: {exc}") from None
        except BaseException:
            pool.close()
            raise
        return store

    # The two changes made on sessions of their own, outside the read-only pool (messages.py):
    # refused here on a read-only store.

    def shred_keys(self) -> bool:
        self._writable("rewriting the key table")
        return super().shred_keys()

    @contextlib.contextmanager
    def housekeeping_lock(self) -> Iterator[bool]:
        self._writable("the housekeeping lock")
        with super().housekeeping_lock() as ours:
            yield ours


__all__ = ["SCHEMA_VERSION", "PostgresStore", "migrate_database"]
