"""The sender's side of the portal, the same for every backend: enrolment invitations, the
sign-in lockout of sender accounts (its counters are attempts.py's), what a search of sent items
finds, and the audit of an expiry. Plain values in, plain values out.

An address without an active sender account is counted and locked exactly as an account is, on
a row of `sign_in_counts` named by `Sealing.sign_in_tag` (an HMAC under the KEK), so the lockout
does not tell whether an account exists, and a stolen database does not list the addresses that
were tried; maintenance prunes those rows (`prune_sign_in_counts`).

The SQL and its locking are each backend's: sqlite/senders.py and postgresql/senders.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from zivmilter import crypto, defaults
from zivmilter.store.records import MessageRecord, SentPage, SignInAttempt, address_key
from zivmilter.store.rows import dt, message_record
from zivmilter.store.sealing import Sealing


@dataclass(frozen=True, slots=True)
class NewInvite:
    """An invitation to insert; `token` is handed out once, only its hash is kept."""

    address: str
    token: str
    token_hash: str
    created_at: int
    expires_at: int


def new_invite(address: str, now: float, lifetime: float) -> NewInvite | None:
    """None when `address` is no address (no account can have it)."""
    key = address_key(address)
    if key is None:
        return None
    token = secrets.token_urlsafe(defaults.LINK_TOKEN_BYTES)
    at = int(now)
    return NewInvite(key, token, crypto.token_hash(token), at, at + int(lifetime))


def invited(row: Any) -> str | None:
    """The invited address from (address), or None."""
    return None if row is None else str(row[0])


# -- signing in -------------------------------------------------------------------------------


def sign_in_key(address: str) -> str:
    """The account row a sign-in of `address` counts on."""
    return address_key(address) or address


def settle_events(attempt: SignInAttempt, ok: bool) -> list[tuple[str, str]]:
    """The audit events (event, detail) of settling an admitted sign-in."""
    if ok:
        return [("sign-in", "sent items")]
    if not attempt.counted:
        return []
    events = [("sign-in-failed", "sent items")]
    if attempt.locked_until is not None:
        events.append(("locked", "sign-in"))
    return events


# -- sent items -------------------------------------------------------------------------------


def sender_keys(senders: Iterable[str]) -> list[str]:
    return [k for k in (address_key(s) for s in senders) if k is not None]


def needle(query: str) -> str:
    """What a search looks for, in subjects and recipients' addresses (lower case)."""
    return query.strip().casefold()


def page(sealing: Sealing, rows: Iterable[Any], total: Any) -> SentPage:
    """A page read as such (no search): its rows, and the count of all."""
    return SentPage([message_record(sealing, r) for r in rows], int(total))


def search(
    sealing: Sealing,
    rows: Sequence[Any],
    by_recipient: Collection[str],
    needle: str,
    offset: int,
    limit: int,
) -> SentPage:
    """The page of a search: of the senders' messages (`rows`, newest first), those whose id is
    in `by_recipient` (a recipient's address matched) or whose subject holds `needle`."""
    found: list[MessageRecord] = []
    for row in rows:
        record = message_record(sealing, row)
        if record.id in by_recipient or needle in (record.subject or "").casefold():
            found.append(record)
    return SentPage(found[offset : offset + limit], len(found))


def expiry_detail(at: Any, reason: str) -> str:
    """The audit detail of `expiry-set`, for the stored `at` (epoch seconds)."""
    when = dt(at).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when} {reason}".strip()
