"""The recipients' public keys the organization imported (issue 26, `zivmilter keys`), the same
for every backend: what an import writes, and the keys read back with their addresses. Plain
values in, plain values out; the SQL is sqlite/recipientkeys.py's and postgresql/'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zivmilter.store.records import StoredKey
from zivmilter.store.rows import dt_or_none

# What each backend's SELECT of a key names (over `recipient_keys k`), in this order.
KEY_COLUMNS = "k.ident, k.kind, k.material, k.imported_at"


def address_rows(key: StoredKey) -> list[tuple[str, str]]:
    """The (ident, address) rows of an imported key: each address once, in order."""
    return [(key.ident, a) for a in sorted(set(key.addresses))]


def import_detail(key: StoredKey) -> str:
    """The audit detail of `key-imported`."""
    return f"{key.kind} {key.ident}"


def stored_key(row: Any, addresses: Iterable[str]) -> StoredKey:
    """From KEY_COLUMNS, and the key's addresses (in order)."""
    return StoredKey(
        ident=str(row[0]),
        kind=str(row[1]),
        addresses=tuple(addresses),
        material=bytes(row[2]),
        imported_at=dt_or_none(row[3]),
    )


def stored_keys(rows: Iterable[Any], addresses: Mapping[str, Iterable[str]]) -> list[StoredKey]:
    """From KEY_COLUMNS rows, and each key's addresses by its ident."""
    return [stored_key(r, addresses.get(str(r[0]), ())) for r in rows]


def idents(rows: Iterable[Any]) -> list[str]:
    """The idents of KEY_COLUMNS rows."""
    return [str(r[0]) for r in rows]


def addresses(rows: Iterable[Any]) -> tuple[str, ...]:
    """One key's addresses from (address) rows."""
    return tuple(str(r[0]) for r in rows)
