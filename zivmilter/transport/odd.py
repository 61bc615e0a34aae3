"""Outbound-direct-delivery domain lists fetched from URLs (SPEC 9).

`refresh(config, now)` (run by `zivmilter odd-refresh` from a daily timer) fetches the lists in
`policy.outbound_direct_delivery.lists` and keeps each one's last good copy in the transport
SQLite file; `OddLists.is_listed` answers the milter from memory. A copy serves through
consecutive fetch failures for up to 7 days, then is dropped; a URL gone from the configuration
stops counting at once. Lines are whole domains, `#` starts a comment, invalid lines are skipped
and reported. Time is always passed in, so tests can move it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zivmilter import defaults
from zivmilter.core.addresses import normalize_domain
from zivmilter.core.config import Config
from zivmilter.errors import StoreError
from zivmilter.transport.cache import connect, db_path

Clock = Callable[[], float]
Fetch = Callable[[str], bytes]  # URL -> body; raises OSError (URLError, HTTPError) on failure

_SCHEMA = """
CREATE TABLE IF NOT EXISTS odd_lists (
    url          TEXT PRIMARY KEY,
    domains      TEXT NOT NULL,   -- JSON list of the last good copy ([] when none or dropped)
    last_success REAL,            -- when that copy was fetched; NULL: never, or dropped
    last_attempt REAL NOT NULL,
    failures     INTEGER NOT NULL, -- consecutive failed fetches
    last_error   TEXT
);
"""


@dataclass(frozen=True)
class InvalidLine:
    number: int
    text: str
    reason: str


@dataclass(frozen=True)
class ListReport:
    """What one refresh did with one list URL."""

    url: str
    fetched: bool  # a fetch ran (it was due or forced)
    ok: bool  # the list is usable now (fresh, or the last good copy within 7 days)
    domains: int  # domains in the copy in use
    invalid: tuple[InvalidLine, ...] = ()
    error: str | None = None  # this run's fetch failure
    copy_age: float | None = None  # seconds since the copy in use was fetched
    dropped: bool = False  # the copy grew older than 7 days and was discarded


def parse_list(text: str) -> tuple[frozenset[str], tuple[InvalidLine, ...]]:
    """Domains of a list body, and its invalid lines (whole domains only: no `*.`, no URLs)."""
    domains: set[str] = set()
    invalid: list[InvalidLine] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            domains.add(normalize_domain(line))
        except ValueError as exc:
            invalid.append(InvalidLine(number, line[:200], str(exc)))
    return frozenset(domains), tuple(invalid)


def fetch_url(url: str) -> bytes:
    """GET with a timeout and a size cap; urllib is enough for one small text file a day."""
    request = urllib.request.Request(url, headers={"User-Agent": "zivmilter-odd-refresh"})
    with urllib.request.urlopen(request, timeout=defaults.ODD_FETCH_TIMEOUT) as response:
        body: bytes = response.read(defaults.ODD_MAX_LIST_BYTES + 1)
    if len(body) > defaults.ODD_MAX_LIST_BYTES:
        raise OSError(f"list larger than {defaults.ODD_MAX_LIST_BYTES} bytes")
    return body


def usable(last_success: float | None, now: float) -> bool:
    return last_success is not None and now - last_success <= defaults.ODD_STALE_MAX_SECONDS


class _Db:
    def __init__(self, config: Config) -> None:
        self.path = db_path(config)
        self.conn = connect(self.path)
        try:
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot set up the ODD list table: {exc}") from None

    def rows(self) -> dict[str, tuple[list[str], float | None, float, int, str | None]]:
        try:
            rows = self.conn.execute(
                "SELECT url, domains, last_success, last_attempt, failures, last_error"
                " FROM odd_lists"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the ODD lists: {exc}") from None
        return {r[0]: (json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows}

    def execute(self, sql: str, args: Iterable[object]) -> None:
        try:
            self.conn.execute(sql, tuple(args))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write the ODD lists: {exc}") from None


def refresh(
    config: Config,
    now: float | None = None,
    *,
    fetch: Fetch = fetch_url,
    force: bool = False,
) -> list[ListReport]:
    """Fetch every configured list that is due (24 h after its last good copy, or failing)."""
    now = time.time() if now is None else now
    urls = config.policy.outbound_direct_delivery.lists
    db = _Db(config)
    try:
        stored = db.rows()
        for gone in set(stored) - set(urls):
            db.execute("DELETE FROM odd_lists WHERE url = ?", (gone,))
        return [_refresh_one(db, url, stored.get(url), now, fetch, force) for url in urls]
    finally:
        db.conn.close()


def _refresh_one(
    db: _Db,
    url: str,
    row: tuple[list[str], float | None, float, int, str | None] | None,
    now: float,
    fetch: Fetch,
    force: bool,
) -> ListReport:
    domains, last_success, _attempt, failures, _error = row or ([], None, 0.0, 0, None)
    due = (
        force
        or last_success is None
        or failures > 0
        or now - last_success >= defaults.ODD_REFRESH_SECONDS - defaults.ODD_REFRESH_SLACK
    )
    if not due:
        age = now - last_success if last_success is not None else None
        return ListReport(url, False, True, len(domains), copy_age=age)
    error: str | None
    try:
        body = fetch(url)
        text = body.decode("utf-8")
        error = None
    except UnicodeDecodeError:
        error = "the list is not UTF-8 text"
    except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors; bad URLs ValueErrors
        error = _describe(exc)
    if error is None:
        found, invalid = parse_list(text)
        if found or not invalid:
            db.execute(
                "INSERT OR REPLACE INTO odd_lists VALUES (?, ?, ?, ?, 0, NULL)",
                (url, json.dumps(sorted(found)), now, now),
            )
            return ListReport(url, True, True, len(found), invalid, copy_age=0.0)
        # Nothing valid at all (an error page served with 200): keep the last good copy.
        error = f"no valid domain in the list ({len(invalid)} invalid lines)"
        failed_invalid = invalid
    else:
        failed_invalid = ()
    keep = usable(last_success, now)
    dropped = last_success is not None and not keep
    db.execute(
        "INSERT OR REPLACE INTO odd_lists VALUES (?, ?, ?, ?, ?, ?)",
        (
            url,
            json.dumps(domains if keep else []),
            last_success if keep else None,
            now,
            failures + 1,
            error,
        ),
    )
    age = now - last_success if keep and last_success is not None else None
    return ListReport(
        url, True, keep, len(domains) if keep else 0, failed_invalid, error, age, dropped
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot fetch: {exc.reason}"
    return str(exc) or type(exc).__name__


def listed_domains(config: Config, now: float) -> frozenset[str]:
    """Union of the usable copies of the lists the configuration names now."""
    urls = set(config.policy.outbound_direct_delivery.lists)
    if not urls:
        return frozenset()
    db = _Db(config)
    try:
        rows = db.rows()
    finally:
        db.conn.close()
    out: set[str] = set()
    for url, (domains, last_success, *_rest) in rows.items():
        if url in urls and usable(last_success, now):
            out.update(domains)
    return frozenset(out)


class OddLists:
    """The milter's in-memory view; `reload` re-reads what `odd-refresh` stored."""

    def __init__(self, config: Config, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self._domains: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def reload(self) -> None:
        domains = listed_domains(self.config, self.clock())
        with self._lock:
            self._domains = domains

    def is_listed(self, domain: str) -> bool:
        return domain in self._domains
