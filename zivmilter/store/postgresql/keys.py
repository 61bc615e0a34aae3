"""Key rotation on PostgreSQL: store/rekey.py over this backend's tables (wrapped message keys are
rows of `message_keys`), and what comes after it (store/peppers.py): access codes renewed as
they are proven, carried peppers pruned."""

from __future__ import annotations

from zivmilter import defaults
from zivmilter.store import peppers, rekey
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

    def prove_access_code(
        self, recipient_id: int, stored_hash: str | None, code: str
    ) -> str | None:
        held, renewed = peppers.prove(self._sealing, stored_hash, code, self._peppers)
        if renewed and held and stored_hash:  # (both are, when renewed)
            with self._transaction() as cur:
                # Under READ COMMITTED an UPDATE waits for a row another transaction changes,
                # then checks its WHERE again: the compare-and-set on the old hash holds across
                # nodes.
                peppers.renew(cur, recipient_id, stored_hash, held, "%s")
        return held

    def prune_peppers(self, grace: float = defaults.PEPPER_PRUNE_GRACE) -> list[str]:
        now = int(self._now())  # before the count: a mark never postdates what it saw
        with self._read() as cur:
            names = peppers.named(cur, _COLUMNS, "%s")
        with self._transaction() as cur:
            return peppers.prune(cur, names, "%s", now, grace)

    def _peppers(self) -> list[tuple[str, bytes]]:
        with self._read() as cur:
            return rekey.carried(cur)
