"""Key rotation on SQLite: store/rekey.py over this backend's tables (wrapped message keys are
in `messages`)."""

from __future__ import annotations

from zivmilter.store import rekey
from zivmilter.store.records import KeyUsage
from zivmilter.store.sqlite.connection import SqliteBase

_COLUMNS = rekey.columns(("messages", "id"))


class KeysMixin(SqliteBase):
    def key_usage(self) -> KeyUsage:
        with self._lock:
            return rekey.usage(self._conn, self._sealing, _COLUMNS)

    def rekey_batch(self, limit: int) -> int:
        with self._transaction() as cur:
            return rekey.rekey_batch(cur, self._sealing, _COLUMNS, limit, "?")
