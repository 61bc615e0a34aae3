"""Carried peppers after a key rotation, for both backends: which access-code hashes still name
each, a hash renewed as its code is proven, and a pepper no hash names any more let go.

`rekey` (rekey.py) carries a previous KEK's pepper into table `peppers`, because a hash cannot be
re-peppered without its code. The code is known once: when a recipient proves it in the portal.
Then the hash is made again under the current KEK's pepper (`renew`), a compare-and-set on the
old value in every row that holds that very hash (the recipient's, the contact book's copy of it
and other messages' copies of that; a salted hash is the same string only where it was copied),
so a row changed meanwhile keeps its change. Maintenance then prunes a carried pepper that no
live hash names (`prune`): a recipient's hash of a message or link that is revoked (or expired,
which revokes it) opens nothing any more, so it keeps no pepper. Pruning takes two runs at least
`grace` apart, the first marking the pepper (`unused_since`), because a hash read before it may
still be written after it: a contact book's code copied into a message being stored. A request
lasts seconds, the grace a day; a pepper named again meanwhile loses its mark.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from zivmilter.errors import StoreError
from zivmilter.store.records import address_key
from zivmilter.store.sealing import Peppers, Sealing

if TYPE_CHECKING:
    from zivmilter.store.rekey import Column, _Cursor

PEPPERED = "scrypt-hmac"  # crypto.hash_secret's scheme for a peppered hash


def named(cur: _Cursor, cols: tuple[Column, ...], param: str) -> dict[str, int]:
    """Live peppered access-code hashes per key id (hex) their scheme names; '' counts those
    written before key ids (peppered by one key of the ring then, which one is not said)."""
    counts: dict[str, int] = {}
    for col in cols:
        if col.renew is not None:
            continue  # not a hash: a sealed or wrapped value (rekey.py renews those)
        scheme = _scheme(col.column, param)
        rows = cur.execute(
            f"SELECT {scheme}, count(*) FROM {col.table}"
            f" WHERE {col.column} IS NOT NULL{col.live} GROUP BY {scheme}"
        ).fetchall()
        for value, n in rows:
            name, sep, kid = str(value).partition(":")
            if name != PEPPERED:
                continue  # plain scrypt: no pepper in it
            key = kid.lower() if sep else ""
            counts[key] = counts.get(key, 0) + int(n)
    return counts


def prove(
    sealing: Sealing, stored_hash: str | None, code: str, carried: Callable[[], Peppers]
) -> tuple[str | None, bool]:
    """(the hash `code` proves, None when it does not match; whether that hash is a new one to
    `renew` the old with). The new hash is made here, before the transaction: scrypt takes
    a tenth of a second, and no lock is held meanwhile."""
    if not stored_hash:
        return None, False
    try:
        if not sealing.access_code_matches(stored_hash, code, carried):
            return None, False
    except StoreError:
        return None, False  # malformed, or its pepper gone: no code matches it
    if not sealing.needs_new_pepper(stored_hash):
        return stored_hash, False
    return sealing.hash_access_code(code), True


def renew(cur: _Cursor, recipient_id: int, old: str, new: str, param: str) -> int:
    """Put `new` (a hash of the same code under the current KEK) in place of `old` wherever the
    recipient's address holds exactly `old`: their rows and their contact-book entry. How many
    rows changed (0 when each changed meanwhile, or the recipient is gone)."""
    row = cur.execute(f"SELECT address FROM recipients WHERE id = {param}", (recipient_id,))
    found = row.fetchone()
    if found is None:
        return 0
    address = str(found[0])
    n = int(
        cur.execute(
            f"UPDATE recipients SET access_code_hash = {param}"
            f" WHERE address = {param} AND access_code_hash = {param}",
            (new, address, old),
        ).rowcount
    )
    key = address_key(address)
    if key is not None:
        n += int(
            cur.execute(
                f"UPDATE contacts SET access_code_hash = {param}"
                f" WHERE address = {param} AND access_code_hash = {param}",
                (new, key, old),
            ).rowcount
        )
    return n


def prune(cur: _Cursor, names: dict[str, int], param: str, now: int, grace: float) -> list[str]:
    """Mark the carried peppers no live hash names (`names`: `named`'s counts), unmark those
    named again, and remove those marked at least `grace` seconds ago and still named by none:
    their key ids (hex). The counts may be read before this transaction (then SQLite's writers,
    the milter's saves, do not wait for the scan): a hash naming a pepper that appears between
    them and the removal is a late copy of one read before the mark, which the grace covers."""
    unnamed = names.get("", 0)  # might be any carried pepper's: they keep every one
    pruned = []
    for kid, since in cur.execute("SELECT key_id, unused_since FROM peppers").fetchall():
        kid = str(kid)
        if names.get(kid, 0) or unnamed:
            if since is not None:
                cur.execute(
                    f"UPDATE peppers SET unused_since = NULL WHERE key_id = {param}", (kid,)
                )
        elif since is None:
            cur.execute(
                f"UPDATE peppers SET unused_since = {param} WHERE key_id = {param}", (now, kid)
            )
        elif now - int(since) >= grace:
            cur.execute(f"DELETE FROM peppers WHERE key_id = {param}", (kid,))
            pruned.append(kid)
    return pruned


def _scheme(column: str, param: str) -> str:
    """SQL for a hash's scheme: what comes before its first '$' (`scrypt-hmac:KEYID`)."""
    if param == "?":  # SQLite
        return f"substr({column}, 1, instr({column}, '$') - 1)"
    return f"split_part({column}, '$', 1)"
