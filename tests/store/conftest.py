"""The store fixtures. `st` runs each test against every backend: a new backend (PostgreSQL) is one
entry in BACKENDS and one factory."""

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


def _sqlite(path: Path, kek: bytes, clock: Clock, inline_max: int) -> Store:
    return SqliteStore.open(str(path / "store"), kek, now=clock, inline_max=inline_max)


# Each backend with the variants it must pass in: SQLite keeps contents in its rows (the default
# for mail up to 256 KiB) or, larger, in blob files (`inline_max=0` puts every content there).
BACKENDS: dict[str, Callable[[Path, bytes, Clock], Store]] = {
    "sqlite-inline": lambda p, k, c: _sqlite(p, k, c, defaults.STORE_INLINE_MAX),
    "sqlite-files": lambda p, k, c: _sqlite(p, k, c, 0),
}


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=sorted(BACKENDS))
def st(request: pytest.FixtureRequest, tmp_path: Path, kek: bytes, clock: Clock) -> Iterator[Any]:
    """The store under test, once per backend (typed Any: SQLite-specific tests reach into the
    SQLite store, contract tests use only `Store`)."""
    s = BACKENDS[request.param](tmp_path, kek, clock)
    yield s
    s.close()
