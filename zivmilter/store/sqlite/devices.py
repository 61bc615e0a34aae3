"""SQL of the trusted devices (issue 25): browsers a recipient asked to remember after an SMS or
emailed code. Only a digest of each browser's token is kept, with the one address it
opens links of; the portal (portal/links.py) signs and checks the cookie that carries the token."""

from __future__ import annotations

from zivmilter.core.addresses import normalize_address
from zivmilter.store.sqlite.connection import SqliteBase, audit


class DevicesMixin(SqliteBase):
    def remember_device(self, address: str, digest: str, expires_at: float) -> None:
        """Remember a browser of `address` until `expires_at` (its token's `digest`)."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute("DELETE FROM devices WHERE expires_at <= ?", (now,))
            cur.execute(
                "INSERT INTO devices (digest, address, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (digest, key, now, int(expires_at)),
            )
            audit(cur, now, None, key, "device-remembered", "")

    def use_device(self, address: str, digest: str, message_id: str | None = None) -> bool:
        """True when `digest` is a browser remembered for `address` and not expired or ended;
        the use is then recorded (the audit event names the message it opened)."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            n = cur.execute(
                "UPDATE devices SET used_at = ?"
                " WHERE digest = ? AND address = ? AND expires_at > ?",
                (now, digest, key, now),
            ).rowcount
            if n:
                audit(cur, now, message_id, key, "device-used", "")
        return bool(n)

    def devices(self) -> dict[str, int]:
        """How many browsers each address has remembered now (never the tokens)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT address, count(*) FROM devices WHERE expires_at > ?"
                " GROUP BY address ORDER BY address",
                (int(self._now()),),
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def forget_devices(self, address: str) -> int:
        """End every browser remembered for `address`: how many were still live."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            live = cur.execute(
                "SELECT count(*) FROM devices WHERE address = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            cur.execute("DELETE FROM devices WHERE address = ?", (key,))
            n = 0 if live is None else int(live[0])
            if n:
                audit(cur, now, None, key, "devices-ended", str(n))
        return n
