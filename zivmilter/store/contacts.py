"""The organization's contact book (SPEC 8) and the admins' IDD domain list, the same for every
backend: a contact's SMS number sealed on the way in and opened on the way out, entries read
back. Plain values in, plain values out; the SQL is sqlite/contacts.py's and
postgresql/contacts.py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zivmilter.core.addresses import normalize_address
from zivmilter.core.facts import Contact
from zivmilter.store.records import ContactEntry
from zivmilter.store.rows import dt_or_none
from zivmilter.store.sealing import Sealing

# What each backend's SELECT of the contact book names, in this order.
ENTRY_COLUMNS = "address, sms, access_code_hash IS NOT NULL, used_at, language"


def contact(sealing: Sealing, address: str, row: Any) -> Contact | None:
    """`address`'s contact from (sms, access_code_hash, language)."""
    if row is None:
        return None
    sms = None if row[0] is None else sealing.unseal_contact_sms(address, bytes(row[0]))
    return Contact(sms=sms, access_code=row[1] is not None, language=row[2])


def entries(sealing: Sealing, rows: Iterable[Any]) -> list[ContactEntry]:
    """From ENTRY_COLUMNS."""
    return [
        ContactEntry(
            str(r[0]),
            None if r[1] is None else sealing.unseal_contact_sms(str(r[0]), bytes(r[1])),
            bool(r[2]),
            dt_or_none(r[3]),
            r[4],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Remembered:
    """What a recipient used successfully, to upsert (None keeps what the book has)."""

    address: str
    sms: bytes | None  # sealed
    access_code_hash: str | None
    used_at: int
    detail: str  # of the audit event `contact-remembered`


def remembered(
    sealing: Sealing, address: str, sms: str | None, access_code_hash: str | None, now: float
) -> Remembered:
    key = normalize_address(address)
    sealed = None if sms is None else sealing.seal_contact_sms(key, sms)
    return Remembered(key, sealed, access_code_hash, int(now), "sms" if sms else "access-code")


def domains(rows: Iterable[Any]) -> list[str]:
    """From (domain)."""
    return [str(r[0]) for r in rows]


def idd_event(enabled: bool) -> str:
    """The audit event of adding (enabled) or removing an IDD domain."""
    return "idd-added" if enabled else "idd-removed"
