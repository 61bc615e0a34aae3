"""SQL of accounts (senders, recipients) and their authenticator secrets."""

from __future__ import annotations

from zivmilter.core.addresses import normalize_address
from zivmilter.store.records import Account, AccountKind, address_key
from zivmilter.store.sqlite.connection import SqliteBase, audit


class AccountsMixin(SqliteBase):
    def has_account(self, address: str) -> bool:
        key = address_key(address)
        if key is None:
            return False
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM accounts WHERE address = ? AND active = 1", (key,)
            ).fetchone()
        return row is not None

    def account(self, address: str) -> Account | None:
        key = address_key(address)
        if key is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT address, kind, active, password_hash, totp_secret IS NOT NULL"
                " FROM accounts WHERE address = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return Account(str(row[0]), row[1], bool(row[2]), row[3], bool(row[4]))

    def accounts(self) -> list[Account]:
        """Every account, senders and recipients, by kind and address."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT address, kind, active, password_hash, totp_secret IS NOT NULL"
                " FROM accounts ORDER BY kind, address"
            ).fetchall()
        return [Account(str(r[0]), r[1], bool(r[2]), r[3], bool(r[4])) for r in rows]

    def use_totp_step(self, address: str, step: int) -> bool:
        """Spend an authenticator time step: True only for a step later than any used before."""
        key = address_key(address)
        if key is None:
            return False
        with self._transaction() as cur:
            cur.execute(
                "UPDATE accounts SET totp_last_step = ? WHERE address = ?"
                " AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, key, step),
            )
            return cur.rowcount == 1

    def totp_secret(self, address: str) -> bytes | None:
        key = address_key(address)
        if key is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT totp_secret FROM accounts WHERE address = ?", (key,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return self._sealing.unseal_totp(key, bytes(row[0]))

    def enrol_totp(self, address: str, secret: bytes) -> bool:
        """Keep an authenticator secret for an active account that has none: checked and set in
        one statement, so a second enrolment (another browser, a stale enrolment page) can never
        replace the one in place. False when nothing was set."""
        key = address_key(address)
        if key is None:
            return False
        sealed = self._sealing.seal_totp(key, secret)
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE accounts SET totp_secret = ? WHERE address = ? AND active = 1"
                " AND totp_secret IS NULL",
                (sealed, key),
            ).rowcount
            if done:
                audit(cur, now, None, key, "authenticator-enrolled", "")
        return bool(done)

    def add_account(
        self,
        address: str,
        kind: AccountKind,
        password_hash: str | None = None,
        totp_secret: bytes | None = None,
    ) -> None:
        """Create or replace an account, active; the caller hashes `password_hash` itself."""
        if kind not in ("sender", "recipient"):
            raise ValueError(f"account kind {kind!r}")
        key = normalize_address(address)
        sealed = None if totp_secret is None else self._sealing.seal_totp(key, totp_secret)
        now = int(self._now())
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO accounts (address, kind, active, password_hash, totp_secret,"
                " created_at) VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET"
                " kind = excluded.kind, active = 1, password_hash = excluded.password_hash,"
                " totp_secret = excluded.totp_secret",
                (key, kind, password_hash, sealed, now),
            )
            audit(cur, now, None, key, "account-added", kind)

    def set_account_active(self, address: str, active: bool) -> bool:
        """Switch an account on or off; False when there is no such account. Switching it off
        ends its portal sessions too (see `session_generation`)."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            n = cur.execute(
                "UPDATE accounts SET active = ?, session_gen = session_gen + ? WHERE address = ?",
                (int(active), int(not active), key),
            ).rowcount
            if n:
                audit(cur, now, None, key, "account-active" if active else "account-inactive", "")
        return bool(n)
