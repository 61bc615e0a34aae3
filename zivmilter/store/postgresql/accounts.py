"""SQL of accounts (senders, recipients) and their authenticator secrets, for PostgreSQL."""

from __future__ import annotations

from zivmilter.core.addresses import normalize_address
from zivmilter.store import accounts
from zivmilter.store.accounts import ACCOUNT_COLUMNS
from zivmilter.store.postgresql.connection import PgBase, audit
from zivmilter.store.records import Account, AccountKind, address_key


class AccountsMixin(PgBase):
    def has_account(self, address: str) -> bool:
        key = address_key(address)
        if key is None:
            return False
        with self._read() as cur:
            row = cur.execute(
                "SELECT 1 FROM accounts WHERE address = %s AND active", (key,)
            ).fetchone()
        return row is not None

    def account(self, address: str) -> Account | None:
        key = address_key(address)
        if key is None:
            return None
        with self._read() as cur:
            row = cur.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE address = %s", (key,)
            ).fetchone()
        return accounts.maybe_account(row)

    def accounts(self) -> list[Account]:
        """Every account, senders and recipients, by kind and address."""
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY kind, address"
            ).fetchall()
        return [accounts.account(r) for r in rows]

    def use_totp_step(self, address: str, step: int) -> bool:
        """Spend an authenticator time step: True only for a step later than any used before.

        Locking: one conditional UPDATE; a concurrent spender of the same step waits for the
        row and re-checks the condition on the version it committed, so one of them wins."""
        key = address_key(address)
        if key is None:
            return False
        with self._transaction() as cur:
            cur.execute(
                "UPDATE accounts SET totp_last_step = %s WHERE address = %s"
                " AND (totp_last_step IS NULL OR totp_last_step < %s)",
                (step, key, step),
            )
            return cur.rowcount == 1

    def totp_secret(self, address: str) -> bytes | None:
        key = address_key(address)
        if key is None:
            return None
        with self._read() as cur:
            row = cur.execute(
                "SELECT totp_secret FROM accounts WHERE address = %s", (key,)
            ).fetchone()
        return accounts.totp_secret(self._sealing, key, row)

    def enrol_totp(self, address: str, secret: bytes) -> bool:
        """Keep an authenticator secret for an active account that has none: checked and set in
        one statement, so a second enrolment (another browser, a stale enrolment page) can never
        replace the one in place. False when nothing was set.

        Locking: the conditional UPDATE's row count decides (re-checked after a concurrent
        writer of the row commits)."""
        key = address_key(address)
        if key is None:
            return False
        sealed = self._sealing.seal_totp(key, secret)
        now = int(self._now())
        with self._transaction() as cur:
            done = cur.execute(
                "UPDATE accounts SET totp_secret = %s WHERE address = %s AND active"
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
        """Create or replace an account, active; the caller hashes `password_hash` itself.
        Replacing one ends its portal sessions (a reset: see `session_generation`)."""
        new = accounts.new_account(
            self._sealing, address, kind, password_hash, totp_secret, self._now()
        )
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO accounts (address, kind, active, password_hash, totp_secret,"
                " created_at) VALUES (%s, %s, TRUE, %s, %s, %s) ON CONFLICT (address) DO UPDATE SET"
                " kind = excluded.kind, active = TRUE, password_hash = excluded.password_hash,"
                # new credentials: the sessions the old ones opened end (session_generation)
                " totp_secret = excluded.totp_secret, session_gen = accounts.session_gen + 1",
                (new.address, new.kind, new.password_hash, new.totp_secret, new.created_at),
            )
            audit(cur, new.created_at, None, new.address, "account-added", new.kind)

    def set_account_active(self, address: str, active: bool) -> bool:
        """Switch an account on or off; False when there is no such account. Switching it off
        ends its portal sessions too (see `session_generation`).

        Locking: one UPDATE of the account row, its session counter moved on in the database,
        so a switch-off and a sign-out at once both count."""
        key = normalize_address(address)
        now = int(self._now())
        with self._transaction() as cur:
            n = cur.execute(
                "UPDATE accounts SET active = %s, session_gen = session_gen + %s"
                " WHERE address = %s",
                (active, accounts.session_step(active), key),
            ).rowcount
            if n:
                audit(cur, now, None, key, accounts.switch_event(active), "")
        return bool(n)

    def end_account_sessions(self, address: str, reason: str = "") -> bool:
        """End the account's portal sessions (sign-out of the sent items): passes issued before
        no longer count, wherever their cookies went. False when there is no such account.

        Locking: one UPDATE of the account row, its counter moved on in the database, so two
        sign-outs (or a sign-out and a switch-off) at once both count."""
        key = address_key(address)
        if key is None:
            return False
        now = int(self._now())
        with self._transaction() as cur:
            n = cur.execute(
                "UPDATE accounts SET session_gen = session_gen + 1 WHERE address = %s", (key,)
            ).rowcount
            if n:
                audit(cur, now, None, key, "sessions-ended", reason)
        return bool(n)
