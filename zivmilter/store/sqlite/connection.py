"""The SQLite connection: opening it (PRAGMAs, migrations), transactions, and group commit.

`SqliteBase` holds what every aggregate's SQL shares: one connection, the lock that guards it,
the clock, the sealing keys and the blob store. The aggregate modules are mixins over it.

Thread safety: one connection guarded by one re-entrant lock; the slow parts (encryption, scrypt,
hashing) run outside it. Other processes (the portal) open a store object of their own; SQLite's
WAL and busy timeout arbitrate between them. Every change is one `BEGIN IMMEDIATE` transaction
(the write lock taken up front: no deadlock on a later upgrade), so a check-then-act in one
method holds against other processes too.

Group commit: saves from many milter threads share commits. A saver queues its rows and waits;
one writer thread (started by the first save) takes every queued save, writes them in one
transaction (each in a savepoint of its own, so one failing save fails alone), commits once and
wakes their savers. One fsync (WAL, synchronous=FULL) then covers all the messages that arrived
while the previous commit was on its way to the disk. Batch sizes go to the metrics
(`zivmilter_store_commit_batch_size`) and to `commit_batches`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from zivmilter import defaults, metrics
from zivmilter.errors import StoreError
from zivmilter.store.blobs import BLOB_DIR, BlobStore
from zivmilter.store.readonly import refused
from zivmilter.store.rows import dt as dt  # re-exported: the backend's time helpers
from zivmilter.store.rows import dt_or_none as dt_or_none
from zivmilter.store.rows import ts as ts
from zivmilter.store.sealing import Sealing
from zivmilter.store.sqlite.schema import DB_NAME, check_version, migrate

_log = logging.getLogger("zivmilter.store")

# The housekeeping lock's file, in the store folder (flock: see `housekeeping_lock`).
HOUSEKEEPING_LOCK = "housekeeping.lock"


def connect(path: str) -> sqlite3.Connection:
    """Open (creating if needed) the store folder `path` and its database, migrated."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(path, BLOB_DIR), mode=0o700, exist_ok=True)
        db = os.path.join(path, DB_NAME)
        _create_private(db)
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
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: cannot prepare the store database: {exc}") from None
    except StoreError:
        conn.close()
        raise
    return conn


def connect_read_only(path: str) -> sqlite3.Connection:
    """Open the existing database of the store folder `path` read-only (`mode=ro`): nothing is
    created, migrated or locked for writing, so this works beside a writer's transaction and on
    files the caller may only read. StoreError naming the path when there is no store there, or
    when SQLite cannot read it (see `_unreadable`)."""
    db = os.path.join(path, DB_NAME)
    uri = f"file:{urllib.parse.quote(os.path.abspath(db))}?mode=ro"
    try:
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=defaults.STORE_BUSY_TIMEOUT,
            isolation_level=None,  # every read is a statement of its own
            check_same_thread=False,  # guarded by the store's lock
        )
    except sqlite3.Error as exc:
        raise _unreadable(path, db, exc) from None
    try:
        check_version(conn, path)  # the first read: where SQLite opens the WAL and its index
    except sqlite3.Error as exc:
        conn.close()
        raise _unreadable(path, db, exc) from None
    except StoreError:
        conn.close()
        raise
    return conn


def _unreadable(path: str, db: str, exc: sqlite3.Error) -> StoreError:
    """Why a read-only open failed, in the admin's terms.

    A WAL database is read through its -wal and -shm files. While a writer (the milter, the
    portal) has the store open they exist, and a reader that may only read them still works
    (SQLite then builds its index of the WAL in its own memory). After the last writer closed
    cleanly they are gone, and SQLite must create them: where the folder is not writable to
    this user (another user's store, a read-only mount) that fails. We say so rather than fall
    back to `immutable=1`, which reads without any lock and ignores the WAL: correct only if
    nobody can write the database meanwhile, and neither the folder's mode nor a read-only
    mount (a read-only bind mount of a live store) tells us that; a milter starting during the
    read could checkpoint pages under it, and the answer would be wrong without an error."""
    try:
        os.stat(db)
    except FileNotFoundError:
        return StoreError(
            f"{path}: no store here ({DB_NAME} does not exist; `zivmilter run` makes it at its"
            " first start, `zivmilter store migrate --config FILE` at once)"
        )
    except OSError as err:  # a folder this user may not enter: not "no store"
        return StoreError(f"{path}: cannot open the store read-only: {db}: {err.strerror}")
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_READONLY_DIRECTORY", "SQLITE_CANTOPEN") and os.access(db, os.R_OK):
        return StoreError(
            f"{path}: cannot read the store read-only: SQLite needs to create {DB_NAME}-wal and"
            f" {DB_NAME}-shm beside it (they exist while the milter or portal has the store"
            f" open), and this folder is not writable here ({exc}). Run this as the store's"
            " user, or while the milter runs"
        )
    return StoreError(f"{path}: cannot open the store read-only: {exc}")


def _create_private(db: str) -> None:
    """Create the database file 0600 (SQLite's -wal/-shm copy its mode), and only when it does
    not exist: SQLite's locks are POSIX locks, held per process and per file, and closing *any*
    descriptor of the file drops all of this process's locks on it. Opening an existing database
    here besides SQLite (a second store in one process: the portal beside maintenance, a test)
    would silently release the first store's locks, and another process could then take the
    database exclusively (or delete its WAL) under it. A file that does not exist yet has no
    locks of ours to lose."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))


class SqliteBase:
    """One connection and its lock, transactions and group commit; see the module docstring."""

    def __init__(
        self,
        path: str,
        sealing: Sealing,
        conn: sqlite3.Connection,
        blobs: BlobStore,
        now: Callable[[], float],
        inline_max: int,
        *,
        read_only: bool = False,
    ) -> None:
        self._path = path
        self._read_only = read_only  # connect_read_only's connection: see _writable
        self._sealing = sealing
        self._conn = conn
        self._blobs = blobs
        self._now = now
        self._inline_max = inline_max
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue_ready = threading.Condition(self._queue_lock)  # saves queued, or closing
        self._queued: list[_Pending] = []
        self._writer: threading.Thread | None = None
        self._closing = False
        # Grouped commits so far: how many, and how many saves they held (`commit_batches`).
        self._batches = [0, 0]
        # Writes that need no commit of their own: they ride along the next grouped commit
        # (or close()), and a failed commit or a kill loses them. Only for what may be late or
        # lost: an ended handover (lost, the same message sent again within the retry window is
        # taken for a retry: its copies the MTA took are not sent twice).
        self._deferred: list[Callable[[sqlite3.Cursor], None]] = []
        self._ending: set[str] = set()  # handovers ended, their rows not yet deleted

    def request_scope(self) -> contextlib.AbstractContextManager[None]:
        """Nothing to share: every call of this store already uses its one connection."""
        return contextlib.nullcontext()

    def _writable(self, what: str) -> None:
        """Refuse `what` on a store opened read-only (store/readonly.py): every write path calls
        this before it touches anything (the `mode=ro` connection would refuse too, later)."""
        if self._read_only:
            raise refused(self._path, what)

    def close(self) -> None:
        with self._queue_ready:
            self._closing = True
            self._queue_ready.notify()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()  # every queued save written first
        with self._queue_lock:
            deferred, self._deferred = self._deferred, []
        with self._lock:
            if deferred:
                with contextlib.suppress(sqlite3.Error), self._transaction() as cur:
                    for write in deferred:
                        write(cur)
            self._conn.close()

    def _defer(self, write: Callable[[sqlite3.Cursor], None]) -> None:
        """Run `write` in the next grouped commit, or at close()."""
        self._writable("a deferred write")
        with self._queue_lock:
            self._deferred.append(write)

    def finish_erasure(self, wait: float | None = None) -> bool:
        """Fold the write-ahead log back into the database and truncate it, so that what a
        revocation destroyed (a wrapped key, with secure_delete zeroing its freed pages) is
        gone from the disk too. Waits up to `wait` seconds (defaults.STORE_CHECKPOINT_WAIT) for
        readers; False when a reader's transaction still holds old pages (they go at the next
        checkpoint: maintenance runs one)."""
        self._writable("a checkpoint")
        if wait is None:
            wait = defaults.STORE_CHECKPOINT_WAIT
        with self._lock:
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error:
                return False
            finally:
                restore = int(defaults.STORE_BUSY_TIMEOUT * 1000)
                self._conn.execute(f"PRAGMA busy_timeout = {restore}")
        return int(busy) == 0

    @contextlib.contextmanager
    def housekeeping_lock(self) -> Iterator[bool]:
        """True while this handle holds the housekeeping lock, False when another run holds
        it; see `Housekeeping`.

        Locking: flock on a file of its own in the store folder, not a transaction: an exclusive
        transaction held through maintenance's SMTP hand-overs would stall every save of the
        milter behind it. flock (unlike SQLite's POSIX locks) belongs to one open file, so two
        handles in one process exclude each other too, and the kernel drops it when the process
        dies."""
        self._writable("the housekeeping lock")
        try:
            fd = os.open(os.path.join(self._path, HOUSEKEEPING_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"{self._path}: the housekeeping lock: {exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def commit_batches(self) -> tuple[int, int]:
        """(grouped commits, saves they held) since the store was opened."""
        with self._queue_lock:
            return self._batches[0], self._batches[1]

    def _commit_grouped(self, write: Callable[[sqlite3.Cursor], None]) -> None:
        """Run `write` in a transaction, committed durably before this returns; concurrent
        callers share transactions and so fsyncs (see the module docstring)."""
        self._writable("saving")
        mine = _Pending(write)
        with self._queue_ready:
            if self._closing:
                raise StoreError(f"{self._path}: the store is closed")
            self._queued.append(mine)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_queued, name="zivmilter-store-writer", daemon=True
                )
                self._writer.start()
            self._queue_ready.notify()
        mine.written.wait()
        if mine.error is not None:
            raise mine.error

    def _write_queued(self) -> None:
        """The writer thread: every save queued meanwhile in one transaction, until close()."""
        while True:
            with self._queue_ready:
                while not self._queued and not self._closing:
                    self._queue_ready.wait()
                if not self._queued:
                    return  # closing, nothing left
            # The batch is taken under the store's lock: saves keep queueing while another
            # transaction (a revoke, the portal's writes) holds it.
            with self._lock:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                try:
                    self._write_batch(batch)
                except BaseException as exc:  # never leave a saver waiting
                    _log.exception("group commit failed")
                    for job in batch:
                        job.error = job.error or exc
            with self._queue_lock:
                self._batches[0] += 1
                self._batches[1] += len(batch)
            metrics.store_batch(len(batch))
            for job in batch:
                job.written.set()

    def _write_batch(self, batch: list[_Pending]) -> None:
        with self._queue_lock:
            deferred, self._deferred = self._deferred, []
        try:
            with self._transaction() as cur:
                for write in deferred:  # lost with a failed commit: see __init__
                    cur.execute("SAVEPOINT deferred")
                    try:
                        write(cur)
                    except sqlite3.Error:
                        cur.execute("ROLLBACK TO deferred")
                    cur.execute("RELEASE deferred")
                if len(batch) == 1 and not deferred:  # alone: its failure rolls it back
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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        self._writable("a write transaction")
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


@dataclass(eq=False)
class _Pending:
    """A save waiting for a group commit."""

    write: Callable[[sqlite3.Cursor], None]
    written: threading.Event = field(default_factory=threading.Event)  # committed, or error
    error: BaseException | None = None


def audit(
    cur: sqlite3.Cursor,
    at: int,
    message_id: str | None,
    recipient: str | None,
    event: str,
    detail: str,
) -> None:
    """Append to the audit log inside the caller's transaction."""
    cur.execute(
        "INSERT INTO audit (at, message_id, recipient, event, detail) VALUES (?, ?, ?, ?, ?)",
        (at, message_id, recipient, event, detail),
    )


def recipient_ref(cur: sqlite3.Cursor, recipient_id: int) -> Any:
    """(message id, address) of a recipient row, for its audit events; None when it is gone."""
    return cur.execute(
        "SELECT message_id, address FROM recipients WHERE id = ?", (recipient_id,)
    ).fetchone()
