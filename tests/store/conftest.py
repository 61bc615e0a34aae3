"""The store fixtures. `st` runs each contract test against every backend: a new backend
(PostgreSQL) is one entry in BACKENDS and one factory. SQLite's own tests (test_sqlite.py) take
the SQLite variants only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.store.common import Clock
from zivmilter import defaults
from zivmilter.store import SqliteStore, Store


def _sqlite(path: Path, kek: bytes, clock: Clock, inline_max: int) -> SqliteStore:
    return SqliteStore.open(str(path / "store"), kek, now=clock, inline_max=inline_max)


# SQLite with the variants it must pass in: contents kept in its rows (the default for mail up
# to 256 KiB) or, larger, in blob files (`inline_max=0` puts every content there).
SQLITE: dict[str, Callable[[Path, bytes, Clock], SqliteStore]] = {
    "sqlite-inline": lambda p, k, c: _sqlite(p, k, c, defaults.STORE_INLINE_MAX),
    "sqlite-files": lambda p, k, c: _sqlite(p, k, c, 0),
}

# Every backend the contract suite runs against. A factory opens one more store object on the
# same database each time it is called (as another process would).
BACKENDS: dict[str, Callable[[Path, bytes, Clock], Store]] = {**SQLITE}


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=sorted(BACKENDS))
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
    """Opens another store object on `st`'s database (`kek=` another key to try); each is
    closed after the test."""
    opened: list[Store] = []

    def open_again(*, kek: bytes = kek) -> Store:
        s = BACKENDS[backend](tmp_path, kek, clock)
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
