"""Accounts (senders, recipients), the same for every backend: an account's row read back, a new
one checked and its authenticator secret sealed, and what switching one on or off writes.
Plain values in, plain values out; the SQL is sqlite/accounts.py's and postgresql/accounts.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zivmilter.core.addresses import normalize_address
from zivmilter.store.records import Account, AccountKind
from zivmilter.store.sealing import Sealing

# What each backend's SELECT of an account names, in this order.
ACCOUNT_COLUMNS = "address, kind, active, password_hash, totp_secret IS NOT NULL, session_gen"


def account(row: Any) -> Account:
    """From ACCOUNT_COLUMNS."""
    return Account(str(row[0]), row[1], bool(row[2]), row[3], bool(row[4]), int(row[5]))


def maybe_account(row: Any) -> Account | None:
    return None if row is None else account(row)


def totp_secret(sealing: Sealing, address: str, row: Any) -> bytes | None:
    """The authenticator secret from (totp_secret); None when there is none."""
    if row is None or row[0] is None:
        return None
    return sealing.unseal_totp(address, bytes(row[0]))


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account to create or replace, active."""

    address: str
    kind: AccountKind
    password_hash: str | None
    totp_secret: bytes | None  # sealed
    created_at: int


def new_account(
    sealing: Sealing,
    address: str,
    kind: AccountKind,
    password_hash: str | None,
    totp_secret: bytes | None,
    now: float,
) -> NewAccount:
    """ValueError for a kind that is neither sender nor recipient, or no address."""
    if kind not in ("sender", "recipient"):
        raise ValueError(f"account kind {kind!r}")
    key = normalize_address(address)
    sealed = None if totp_secret is None else sealing.seal_totp(key, totp_secret)
    return NewAccount(key, kind, password_hash, sealed, int(now))


def switch_event(active: bool) -> str:
    """The audit event of switching an account on or off."""
    return "account-active" if active else "account-inactive"


def session_step(active: bool) -> int:
    """How far the account's session generation moves on: switching it off ends its sessions."""
    return int(not active)
