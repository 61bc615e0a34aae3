"""Key rotation on PostgreSQL: store/rekey.py over this backend's tables (wrapped message keys are
rows of `message_keys`)."""

from __future__ import annotations

from zivmilter.store import rekey
from zivmilter.store.postgresql.connection import PgBase
from zivmilter.store.records import KeyUsage

_COLUMNS = rekey.columns(("message_keys", "message_id"))


class KeysMixin(PgBase):
    def key_usage(self) -> KeyUsage:
        with self._read() as cur:
            return rekey.usage(cur, self._sealing, _COLUMNS)

    def rekey_batch(self, limit: int) -> int:
        with self._transaction() as cur:
            return rekey.rekey_batch(cur, self._sealing, _COLUMNS, limit, "%s")
