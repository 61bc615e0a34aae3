"""The audit log, the same for every backend: its rows read back as events, and an export walked
page by page (an export of years of events never holds them all in memory). Plain values in,
plain values out; the SQL is sqlite/audit.py's and postgresql/audit.py's (and each backend's
`audit()`, which appends inside the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from zivmilter.store.records import AuditEvent
from zivmilter.store.rows import dt

EXPORT_PAGE = 1000  # events a page of an export reads


def events(rows: Iterable[Any]) -> list[AuditEvent]:
    """From (at, message_id, recipient, event, detail) rows."""
    return [AuditEvent(dt(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def export_since(since: datetime | None) -> int:
    """The `at` an export starts from (epoch seconds)."""
    return int(since.timestamp()) if since else 0


def export(page: Callable[[int], Sequence[Any]]) -> Iterator[AuditEvent]:
    """Every event of the pages `page(last)` reads: (id, at, message_id, recipient, event,
    detail) rows of ids above `last`, in id order, EXPORT_PAGE at the most; none at the end."""
    last = 0
    while True:
        rows = page(last)
        if not rows:
            return
        for r in rows:
            yield AuditEvent(dt(r[1]), r[2], r[3], r[4], r[5])
        last = int(rows[-1][0])
