"""The PostgreSQL connections: a pool shared by the threads of one process, transactions, and what
every aggregate's SQL shares (`PgBase`: the pool, the clock, the sealing keys, the blob store).

Thread safety: each transaction takes a connection of its own from the pool (psycopg_pool), so
the milter's threads write in parallel; PostgreSQL itself groups the commits that arrive while a
WAL flush is on its way (what SQLite's group commit does by hand in sqlite/connection.py).

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
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from zivmilter.errors import StoreError
from zivmilter.store.blobs import BlobStore
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


def open_pool(dsn: str, passfile: str | None, size: int) -> ConnectionPool:
    pool = ConnectionPool(
        dsn,
        # autocommit: see the module docstring (`_read`); writes open their own blocks.
        kwargs={**connection_kwargs(passfile), "autocommit": True},
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


def describe(dsn: str) -> str:
    """A DSN for messages: host, port and database, never anything else it may hold."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable DSN)"
    host = parts.get("host", "(default host)")
    port = parts.get("port", "5432")
    return f"{host}:{port}/{parts.get('dbname', '(default database)')}"


class PgBase:
    """The pool, the clock, the keys and the blob store; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        passfile: str | None,
        sealing: Sealing,
        pool: ConnectionPool,
        blobs: BlobStore,
        now: Callable[[], float],
        inline_max: int,
        local_path: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._local_path = local_path  # this node's store.path: see RepliesMixin.free_bytes
        self._passfile = passfile
        self._sealing = sealing
        self._pool = pool
        self._blobs = blobs
        self._now = now
        self._inline_max = inline_max

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        when it raises. Database faults become StoreError."""
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise StoreError(f"store database: {exc}") from exc
        except PoolTimeout as exc:
            raise StoreError(f"store database: no connection free: {exc}") from exc

    @contextlib.contextmanager
    def _pipelined(self) -> Iterator[Cursor]:
        """`_transaction` in pipeline mode: BEGIN and the block's statements go out together
        and COMMIT with its end, results are waited for when read: two round trips where each
        statement took one. Only for statements that need no result of another before they
        are sent (a statement with CTEs joins those that do): the milter's save, the portal's
        open."""
        try:
            with (
                self._pool.connection() as conn,
                conn.pipeline(),
                conn.transaction(),
                conn.cursor() as cur,
            ):
                yield cur
        except psycopg.Error as exc:
            raise StoreError(f"store database: {exc}") from exc
        except PoolTimeout as exc:
            raise StoreError(f"store database: no connection free: {exc}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[Cursor]:
        """Reads on a pooled connection, each statement on its own (autocommit: no BEGIN and
        COMMIT round trips; under READ COMMITTED a block would not make several reads one
        snapshot either). Nothing that locks or writes goes here: that is `_transaction`'s."""
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise StoreError(f"store database: {exc}") from exc
        except PoolTimeout as exc:
            raise StoreError(f"store database: no connection free: {exc}") from exc


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
