"""SQL of the recipients' public keys the organization imported (issue 26, `zivmilter keys`)."""

from __future__ import annotations

from collections.abc import Sequence

from zivmilter.store import recipientkeys
from zivmilter.store.recipientkeys import KEY_COLUMNS
from zivmilter.store.records import StoredKey, address_key
from zivmilter.store.sqlite.connection import SqliteBase, audit


class RecipientKeysMixin(SqliteBase):
    def import_recipient_key(self, key: StoredKey) -> bool:
        now = int(self._now())
        with self._transaction() as cur:
            new = (
                cur.execute("SELECT 1 FROM recipient_keys WHERE ident = ?", (key.ident,))
                .fetchone() is None
            )  # fmt: skip
            cur.execute(
                "INSERT INTO recipient_keys (ident, kind, material, imported_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (ident) DO UPDATE SET kind = excluded.kind,"
                " material = excluded.material, imported_at = excluded.imported_at",
                (key.ident, key.kind, key.material, now),
            )
            cur.execute("DELETE FROM recipient_key_addresses WHERE ident = ?", (key.ident,))
            cur.executemany(
                "INSERT INTO recipient_key_addresses (ident, address) VALUES (?, ?)",
                recipientkeys.address_rows(key),
            )
            audit(cur, now, None, None, "key-imported", recipientkeys.import_detail(key))
        return new

    def recipient_keys(self, address: str | None = None) -> list[StoredKey]:
        args: tuple[str, ...] = ()
        if address is None:
            where = ""
        else:
            norm = address_key(address)
            if norm is None:
                return []
            where = (
                " WHERE k.ident IN (SELECT ident FROM recipient_key_addresses WHERE address = ?)"
            )
            args = (norm,)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {KEY_COLUMNS} FROM recipient_keys k{where}"
                " ORDER BY k.imported_at, k.ident",
                args,
            ).fetchall()
            addresses = self._addresses(recipientkeys.idents(rows))
        return recipientkeys.stored_keys(rows, addresses)

    def recipient_key(self, ident: str) -> StoredKey | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {KEY_COLUMNS} FROM recipient_keys k WHERE k.ident = ?", (ident,)
            ).fetchone()
            if row is None:
                return None
            addresses = self._addresses([ident])
        return recipientkeys.stored_key(row, addresses[ident])

    def remove_recipient_key(self, ident: str) -> bool:
        with self._transaction() as cur:
            n = cur.execute("DELETE FROM recipient_keys WHERE ident = ?", (ident,)).rowcount
            if n:
                audit(cur, int(self._now()), None, None, "key-removed", ident)
        return bool(n)

    def _addresses(self, idents: Sequence[str]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for ident in idents:
            rows = self._conn.execute(
                "SELECT address FROM recipient_key_addresses WHERE ident = ? ORDER BY address",
                (ident,),
            ).fetchall()
            out[ident] = recipientkeys.addresses(rows)
        return out
