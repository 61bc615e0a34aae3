"""SQL of the audit log (PostgreSQL): no foreign keys, it outlives what it describes."""

from __future__ import annotations

from zivmilter.store.postgresql.connection import PgBase, audit, dt
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
        return [AuditEvent(dt(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
