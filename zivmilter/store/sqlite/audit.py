"""SQL of the audit log: no foreign keys, it outlives what it describes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from zivmilter.store.records import AuditEvent
from zivmilter.store.sqlite.connection import SqliteBase, audit, dt


class AuditMixin(SqliteBase):
    def record_event(
        self,
        event: str,
        message_id: str | None = None,
        recipient: str | None = None,
        detail: str = "",
    ) -> None:
        with self._transaction() as cur:
            audit(cur, int(self._now()), message_id, recipient, event, detail)

    def events(self, message_id: str) -> list[AuditEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, message_id, recipient, event, detail FROM audit"
                " WHERE message_id = ? ORDER BY id",
                (message_id,),
            ).fetchall()
        return [AuditEvent(dt(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def export_events(
        self, since: datetime | None = None, message_id: str | None = None
    ) -> Iterator[AuditEvent]:
        """Every event from `since` on (all of a message's with `message_id`), oldest first, in
        pages: an export of years of events never holds them all in memory."""
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT id, at, message_id, recipient, event, detail FROM audit"
                    " WHERE id > ? AND at >= ? AND (? IS NULL OR message_id = ?)"
                    " ORDER BY id LIMIT 1000",
                    (last, int(since.timestamp()) if since else 0, message_id, message_id),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield AuditEvent(dt(r[1]), r[2], r[3], r[4], r[5])
            last = int(rows[-1][0])
