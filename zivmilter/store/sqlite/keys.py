"""Key rotation on SQLite: store/rekey.py over this backend's tables (wrapped message keys are
in `messages`), and what comes after it (store/peppers.py): access codes renewed as they are
proven, carried peppers pruned."""

from __future__ import annotations

from zivmilter import defaults
from zivmilter.store import peppers, rekey
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

    def prove_access_code(
        self, recipient_id: int, stored_hash: str | None, code: str
    ) -> str | None:
        held, renewed = peppers.prove(self._sealing, stored_hash, code, self._peppers)
        if renewed and held and stored_hash:  # (both are, when renewed)
            with self._transaction() as cur:
                peppers.renew(cur, recipient_id, stored_hash, held, "?")
        return held

    def prune_peppers(self, grace: float = defaults.PEPPER_PRUNE_GRACE) -> list[str]:
        now = int(self._now())  # before the count: a mark never postdates what it saw
        with self._lock:
            names = peppers.named(self._conn, _COLUMNS, "?")
        with self._transaction() as cur:
            return peppers.prune(cur, names, "?", now, grace)

    def _peppers(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return rekey.carried(self._conn)
