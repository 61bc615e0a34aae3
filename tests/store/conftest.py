"""The store fixtures. `st` runs each contract test against every backend: a backend is one
entry in BACKENDS and one factory. SQLite's own tests (test_sqlite.py) take the SQLite variants
only (`sqlite_st`).

The PostgreSQL entries start a private cluster (tests/harness/postgres.py: initdb and pg_ctl as
the postgres user), so they are integration tests: `pytest --fast` deselects them, and they run
inside scripts/sandbox, where the cluster's port is private."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.common import Clock
from zivmilter import defaults
from zivmilter.store import SqliteStore, Store

INTEGRATION = {"postgresql", "postgresql-chunks"}


def _sqlite(
    path: Path,
    kek: bytes,
    clock: Clock,
    inline_max: int,
    previous: tuple[bytes, ...] = (),
    read_only: bool = False,
) -> SqliteStore:
    return SqliteStore.open(
        str(path / "store"),
        kek,
        previous=previous,
        now=clock,
        inline_max=inline_max,
        read_only=read_only,
    )


def _postgresql(
    path: Path,
    kek: bytes,
    clock: Clock,
    inline_max: int,
    previous: tuple[bytes, ...] = (),
    read_only: bool = False,
) -> Store:
    from tests.harness.postgres import shared_cluster
    from zivmilter.store.postgresql import PostgresStore

    # One database per test (per tmp_path): every handle a test opens reaches the same one.
    dsn = shared_cluster().database_for(path)
    return PostgresStore.open(
        dsn,
        kek,
        previous=previous,
        now=clock,
        inline_max=inline_max,
        pool_size=12,
        read_only=read_only,
    )


# SQLite with the variants it must pass in: contents kept in its rows (the default for mail up
# to 256 KiB) or, larger, in blob files (`inline_max=0` puts every content there).
SQLITE: dict[str, Callable[[Path, bytes, Clock], SqliteStore]] = {
    "sqlite-inline": lambda p, k, c: _sqlite(p, k, c, defaults.STORE_INLINE_MAX),
    "sqlite-files": lambda p, k, c: _sqlite(p, k, c, 0),
}

# Every backend the contract suite runs against. A factory opens one more store object on the
# same database each time it is called (as another process would), `previous=` the older keys
# of its key ring, `read_only=True` as the commands that only read open it. PostgreSQL keeps
# contents in their rows or in `blob_chunks`.
BACKENDS: dict[str, Callable[..., Store]] = {
    "sqlite-inline": lambda p, k, c, **kw: _sqlite(p, k, c, defaults.STORE_INLINE_MAX, **kw),
    "sqlite-files": lambda p, k, c, **kw: _sqlite(p, k, c, 0, **kw),
    "postgresql": lambda p, k, c, **kw: _postgresql(p, k, c, defaults.STORE_INLINE_MAX, **kw),
    "postgresql-chunks": lambda p, k, c, **kw: _postgresql(p, k, c, 0, **kw),
}


def backend_params() -> list[Any]:
    """BACKENDS as pytest parameters, the PostgreSQL ones marked integration."""
    return [
        pytest.param(name, marks=pytest.mark.integration) if name in INTEGRATION else name
        for name in sorted(BACKENDS)
    ]


@pytest.fixture(autouse=True)
def _drop_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases a test used (the cluster itself lives for the session)."""
    yield
    from tests.harness import postgres

    cluster = postgres.started()
    if cluster is not None:
        cluster.drop_all()


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def st(backend: str, tmp_path: Path, kek: bytes, clock: Clock) -> Iterator[Store]:
    """The store under test, once per backend."""
    s = BACKENDS[backend](tmp_path, kek, clock)
    yield s
    s.close()


@pytest.fixture
def reopen(
    backend: str, tmp_path: Path, kek: bytes, clock: Clock
) -> Iterator[Callable[..., Store]]:
    """Opens another store object on `st`'s database (`kek=` another key to try, `previous=`
    older keys it also reads, `read_only=True`); each is closed after the test."""
    opened: list[Store] = []

    def open_again(
        *, kek: bytes = kek, previous: tuple[bytes, ...] = (), read_only: bool = False
    ) -> Store:
        s = BACKENDS[backend](tmp_path, kek, clock, previous=previous, read_only=read_only)
        opened.append(s)
        return s

    yield open_again
    for s in opened:
        s.close()


@pytest.fixture(params=sorted(SQLITE))
def sqlite_st(
    request: pytest.FixtureRequest, tmp_path: Path, kek: bytes, clock: Clock
) -> Iterator[SqliteStore]:
    """A SQLite store, in each variant, for SQLite's own checks."""
    s = SQLITE[request.param](tmp_path, kek, clock)
    yield s
    s.close()
