"""SQL of the audit log (PostgreSQL): no foreign keys, it outlives what it describes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from zivmilter.store import audit as audit_log
from zivmilter.store.postgresql.connection import PgBase, audit
from zivmilter.store.records import AuditEvent


class AuditMixin(PgBase):
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
        with self._read() as cur:
            rows = cur.execute(
                "SELECT at, message_id, recipient, event, detail FROM audit"
                " WHERE message_id = %s ORDER BY id",
                (message_id,),
            ).fetchall()
        return audit_log.events(rows)

    def export_events(
        self, since: datetime | None = None, message_id: str | None = None
    ) -> Iterator[AuditEvent]:
        """Every event from `since` on (all of a message's with `message_id`), oldest first, in
        pages: an export of years of events never holds them all in memory."""
        start = audit_log.export_since(since)

        def page(last: int) -> list[Any]:
            with self._read() as cur:
                return cur.execute(
                    "SELECT id, at, message_id, recipient, event, detail FROM audit"
                    " WHERE id > %s AND at >= %s"
                    " AND (%s::text IS NULL OR message_id = %s::text)"
                    " ORDER BY id LIMIT %s",
                    (last, start, message_id, message_id, audit_log.EXPORT_PAGE),
                ).fetchall()

        yield from audit_log.export(page)
