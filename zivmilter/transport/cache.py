"""The transport cache: probe results per domain in `<store.path>/transport.sqlite3` (WAL).

Written by the milter's background prober (live.py) and `zivmilter probe`; odd.py keeps its list
copies in the same file. Each row holds the level, weakest TLS version, the whole result as JSON,
when it was checked and when it expires (success and failure have their own TTLs).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass

from zivmilter import defaults
from zivmilter.core.config import Config, TransportConfig
from zivmilter.errors import StoreError
from zivmilter.transport.model import DomainResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transport (
    domain      TEXT PRIMARY KEY,
    level       TEXT NOT NULL,
    tls_version TEXT,
    details     TEXT NOT NULL,   -- DomainResult.to_json(): per-MX details, NTA lookup, reason
    checked_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
"""


def db_path(config: Config) -> str:
    return os.path.join(config.store.path, defaults.TRANSPORT_DB_FILE)


def connect(path: str) -> sqlite3.Connection:
    """A connection in WAL mode (readers never wait on the writer); StoreError if impossible."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        conn = sqlite3.connect(
            path,
            timeout=defaults.SQLITE_BUSY_TIMEOUT,
            check_same_thread=False,
            isolation_level=None,  # autocommit: every statement here is its own transaction
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a lost cache row is re-probed, not lost mail
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"{path}: cannot open the transport cache: {exc}") from None
    return conn


def ttl_for(result: DomainResult, config: TransportConfig) -> int:
    return config.cache_ttl_failure if result.failed else config.cache_ttl_success


@dataclass(frozen=True)
class Cached:
    result: DomainResult
    expires_at: float


class TransportCache:
    """Rows of the `transport` table; one connection shared by threads under a lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = connect(path)
        try:
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot set up the transport cache: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def put(self, result: DomainResult, expires_at: float) -> None:
        row = (
            result.domain,
            result.level.value,
            result.tls_version.value if result.tls_version else None,
            json.dumps(result.to_json(), separators=(",", ":")),
            result.checked_at,
            expires_at,
        )
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO transport VALUES (?, ?, ?, ?, ?, ?)", row
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write {result.domain}: {exc}") from None

    def get(self, domain: str) -> Cached | None:
        """The stored row for a domain, expired or not (the caller compares with its clock)."""
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT details, expires_at FROM transport WHERE domain = ?", (domain,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read {domain}: {exc}") from None
        return _cached(row) if row else None

    def fresh(self, now: float) -> list[Cached]:
        """Every row that has not expired yet (the milter loads them at start)."""
        try:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT details, expires_at FROM transport WHERE expires_at > ?", (now,)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the transport cache: {exc}") from None
        return [c for c in (_cached(r) for r in rows) if c is not None]

    def purge(self, before: float) -> int:
        """Forget rows that expired before `before`; returns how many."""
        try:
            with self._lock:
                cur = self._conn.execute("DELETE FROM transport WHERE expires_at < ?", (before,))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot purge the transport cache: {exc}") from None
        return cur.rowcount


def _cached(row: tuple[str, float]) -> Cached | None:
    try:
        return Cached(DomainResult.from_json(json.loads(row[0])), float(row[1]))
    except (ValueError, KeyError, TypeError):
        return None  # a row an older or newer version wrote differently: probe again
