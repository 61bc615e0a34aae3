"""The store fixtures. `st` runs each test against every backend: a backend is one entry in
BACKENDS and one factory.

The PostgreSQL entries start a private cluster (tests/harness/postgres.py: initdb and pg_ctl as
the postgres user), so they are integration tests: `pytest --fast` deselects them, and they run
inside scripts/sandbox, where the cluster's port is private."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.common import (
    Clock,
)
from zivmilter import defaults
from zivmilter.store import SqliteStore, Store

INTEGRATION = {"postgresql", "postgresql-chunks"}


def _sqlite(path: Path, kek: bytes, clock: Clock, inline_max: int) -> Store:
    return SqliteStore.open(str(path / "store"), kek, now=clock, inline_max=inline_max)


# Each backend with the variants it must pass in: SQLite keeps contents in its rows (the default
# for mail up to 256 KiB) or, larger, in blob files (`inline_max=0` puts every content there).
def _postgresql(path: Path, kek: bytes, clock: Clock, inline_max: int) -> Store:
    from tests.harness.postgres import shared_cluster
    from zivmilter.store.postgresql import PostgresStore

    # One database per test (per tmp_path): every handle a test opens reaches the same one.
    dsn = shared_cluster().database_for(path)
    return PostgresStore.open(dsn, kek, now=clock, inline_max=inline_max, pool_size=12)


# Each backend with the variants it must pass in: SQLite keeps contents in its rows (the default
# for mail up to 256 KiB) or, larger, in blob files (`inline_max=0` puts every content there);
# PostgreSQL in its rows or in `blob_chunks`.
BACKENDS: dict[str, Callable[[Path, bytes, Clock], Store]] = {
    "sqlite-inline": lambda p, k, c: _sqlite(p, k, c, defaults.STORE_INLINE_MAX),
    "sqlite-files": lambda p, k, c: _sqlite(p, k, c, 0),
    "postgresql": lambda p, k, c: _postgresql(p, k, c, defaults.STORE_INLINE_MAX),
    "postgresql-chunks": lambda p, k, c: _postgresql(p, k, c, 0),
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
def st(request: pytest.FixtureRequest, tmp_path: Path, kek: bytes, clock: Clock) -> Iterator[Any]:
    """The store under test, once per backend (typed Any: SQLite-specific tests reach into the
    SQLite store, contract tests use only `Store`)."""
    s = BACKENDS[request.param](tmp_path, kek, clock)
    yield s
    s.close()
