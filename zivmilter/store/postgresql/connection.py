"""The PostgreSQL connections: a pool shared by the threads of one process, transactions, and what
every aggregate's SQL shares (`PgBase`: the pool, the clock, the sealing keys, the blob store).

Thread safety: each transaction takes a connection of its own from the pool (psycopg_pool), so
the milter's threads write in parallel; PostgreSQL itself groups the commits that arrive while a
WAL flush is on its way (what SQLite's group commit does by hand in sqlite/connection.py).

Request scopes: inside `request_scope()` (the portal wraps each request's store work in one),
every call a thread makes shares one pooled connection, taken at the first call and returned
when the scope ends, instead of a pool round of its own per call (a portal view makes four or
five). Only a connection is held: every call still reads the database as it is now, so a
revocation on another node stops the next call, and nothing decrypted outlives the call.

Round trips: the pooled connections are in autocommit mode. A write (`_transaction`) is still
one BEGIN ... COMMIT block; a read (`_read`) sends its statements alone, without BEGIN and
COMMIT around them: under READ COMMITTED every statement reads a snapshot of its own anyway,
so a block around reads made them no more consistent, only two round trips longer (a portal
view is mostly reads). psycopg prepares a statement a connection has run a few times
(`prepare_threshold`, 5 by default): the portal's reads run prepared after their warm-up.

Isolation: READ COMMITTED, PostgreSQL's default. A check-then-act therefore never relies on a
plain read: each method that decides on what it read locks the rows it decides on (`SELECT ...
FOR UPDATE`, or a conditional UPDATE whose row count decides: an UPDATE waits for a concurrent
writer of the row and re-checks its WHERE on the new version). Each such method says which in
its docstring. Durability: synchronous_commit as the server sets it (on: see README "Several
nodes"); only an open's audit record (mark_opened) and a retry's handover records (handovers.py)
commit without waiting for their flush.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from zivmilter.errors import StoreError
from zivmilter.store.blobs import BlobStore
from zivmilter.store.readonly import refused
from zivmilter.store.rows import dt as dt  # re-exported: the backend's time helpers
from zivmilter.store.rows import dt_or_none as dt_or_none
from zivmilter.store.rows import ts as ts
from zivmilter.store.sealing import Sealing

Cursor = psycopg.Cursor[Any]


def connection_kwargs(passfile: str | None) -> dict[str, Any]:
    """libpq options besides the DSN: the password file when the configuration names one (else
    libpq reads PGPASSFILE or ~/.pgpass itself)."""
    kwargs: dict[str, Any] = {"application_name": "zivmilter"}
    if passfile:
        kwargs["passfile"] = passfile
    return kwargs


def connect(
    dsn: str, passfile: str | None = None, *, autocommit: bool = False
) -> psycopg.Connection[Any]:
    """One connection outside the pool (migrations, maintenance's locks, `store copy`)."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **connection_kwargs(passfile))
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL {describe(dsn)}: cannot connect: {exc}") from None


def open_pool(
    dsn: str, passfile: str | None, size: int, *, read_only: bool = False
) -> ConnectionPool:
    """The store's pool; `read_only`: every session of it is read-only (`_read_only_session`)."""
    pool = ConnectionPool(
        dsn,
        # autocommit: see the module docstring (`_read`); writes open their own blocks.
        kwargs={**connection_kwargs(passfile), "autocommit": True},
        configure=_read_only_session if read_only else None,
        min_size=1,
        max_size=size,
        open=False,
        name="zivmilter-store",
        timeout=30.0,
    )
    try:
        pool.open(wait=True, timeout=30.0)
    except (PoolTimeout, psycopg.Error) as exc:
        pool.close()
        raise StoreError(f"PostgreSQL {describe(dsn)}: cannot connect: {exc}") from None
    return pool


def _read_only_session(conn: psycopg.Connection[Any]) -> None:
    """A read-only store's connection: every transaction of the session read-only, the
    statements of autocommit included, so that a write the store's own refusal missed fails in
    the server (ReadOnlySqlTransaction, a StoreError through `_faults`) instead of writing. Set
    here, not in the DSN's `options`, which the configuration may already use."""
    conn.execute("SET SESSION default_transaction_read_only = on")


def describe(dsn: str) -> str:
    """A DSN for messages: host, port and database, never anything else it may hold."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable DSN)"
    host = parts.get("host", "(default host)")
    port = parts.get("port", "5432")
    return f"{host}:{port}/{parts.get('dbname', '(default database)')}"


@contextlib.contextmanager
def _faults() -> Iterator[None]:
    """Database faults inside the block as StoreError; a pool with no connection free says so
    (PoolTimeout is a psycopg.Error too, so it is caught first)."""
    try:
        yield
    except PoolTimeout as exc:
        raise StoreError(f"store database: no connection free: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"store database: {exc}") from exc


class ConnectionSource(Protocol):
    """Where a statement gets its connection: the pool itself, or `Connections` (the pool, or
    the connection the thread's request scope holds)."""

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


class _Held(threading.local):
    scoped = False  # inside a request scope on this thread
    conn: psycopg.Connection[Any] | None = None  # the scope's connection, once taken


class Connections:
    """The pool, and per thread the connection its request scope holds (module docstring)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._held = _Held()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The calls of this thread inside the block share one connection, taken from the pool
        at the first and returned when the block ends (the pool rolls back what a fault left
        open, and drops a broken connection). Nested: the outer scope holds it."""
        held = self._held
        if held.scoped:
            yield
            return
        held.scoped = True
        try:
            yield
        finally:
            conn, held.conn, held.scoped = held.conn, None, False
            if conn is not None:
                self.pool.putconn(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The scope's connection inside a request scope, else one from the pool for the block."""
        held = self._held
        if not held.scoped:
            with self.pool.connection() as conn:
                yield conn
            return
        if held.conn is None:
            held.conn = self.pool.getconn()
        yield held.conn


class PgBase:
    """The pool, the clock, the keys and the blob store; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        passfile: str | None,
        sealing: Sealing,
        connections: Connections,
        blobs: BlobStore,
        now: Callable[[], float],
        inline_max: int,
        local_path: str | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self._dsn = dsn
        self._read_only = read_only  # sessions read-only (open_pool): see _writable
        self._local_path = local_path  # this node's store.path: see RepliesMixin.free_bytes
        self._passfile = passfile
        self._sealing = sealing
        self._connections = connections
        self._blobs = blobs
        self._now = now
        self._inline_max = inline_max

    def close(self) -> None:
        self._connections.pool.close()

    def request_scope(self) -> AbstractContextManager[None]:
        """Share one pooled connection between this thread's calls in the block (see the
        module docstring)."""
        return self._connections.scope()

    def _writable(self, what: str) -> None:
        """Refuse `what` on a store opened read-only (store/readonly.py): every write path calls
        this before it touches anything (the read-only sessions would refuse too, later)."""
        if self._read_only:
            raise refused(f"PostgreSQL {describe(self._dsn)}", what)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        when it raises. Database faults become StoreError."""
        self._writable("a write transaction")
        with (
            _faults(),
            self._connections.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    @contextlib.contextmanager
    def _pipelined(self) -> Iterator[Cursor]:
        """`_transaction` in pipeline mode: BEGIN and the block's statements go out together
        and COMMIT with its end, results are waited for when read: two round trips where each
        statement took one. Only for statements that need no result of another before they
        are sent (a statement with CTEs joins those that do): the milter's save, the portal's
        open."""
        self._writable("a write transaction")
        with (
            _faults(),
            self._connections.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    @contextlib.contextmanager
    def _statement(self) -> Iterator[Cursor]:
        """A write that is one statement: in autocommit it is a transaction of its own (locks
        held, and its changes committed, as it ends), with no BEGIN and COMMIT round trips.
        Only for a single statement: two would be two transactions."""
        self._writable("a write")
        with self._read() as cur:
            yield cur

    @contextlib.contextmanager
    def _read(self) -> Iterator[Cursor]:
        """Reads on a pooled connection, each statement on its own (autocommit: no BEGIN and
        COMMIT round trips; under READ COMMITTED a block would not make several reads one
        snapshot either). Nothing that locks or writes goes here: that is `_transaction`'s."""
        with _faults(), self._connections.connection() as conn, conn.cursor() as cur:
            yield cur


def audit(
    cur: Cursor,
    at: int,
    message_id: str | None,
    recipient: str | None,
    event: str,
    detail: str,
) -> None:
    """Append to the audit log inside the caller's transaction."""
    cur.execute(
        "INSERT INTO audit (at, message_id, recipient, event, detail) VALUES (%s, %s, %s, %s, %s)",
        (at, message_id, recipient, event, detail),
    )


def recipient_ref(cur: Cursor, recipient_id: int, *, lock: bool = False) -> Any:
    """(message id, address) of a recipient row, for its audit events; None when it is gone.
    With `lock`, the row stays locked (FOR UPDATE) until the transaction ends."""
    cur.execute(
        "SELECT message_id, address FROM recipients WHERE id = %s"
        + (" FOR UPDATE" if lock else ""),
        (recipient_id,),
    )
    return cur.fetchone()
