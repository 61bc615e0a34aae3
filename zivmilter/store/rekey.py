"""Key rotation, for both backends: what depends on which KEK, and rewriting it batch by batch.

What a KEK protects lives in a few columns: wrapped data keys (messages, large attachments) and
what its field key seals (authenticator secrets, contact-book numbers, one-time code secrets);
each value names the KEK that made it (sealing.py `key_of`). A batch rewrites up to `limit`
values not under the current KEK, each with a compare-and-set (`... WHERE col = old`), so a
revocation or a new code written meanwhile is never undone; rows written meanwhile are already
under the current KEK (the daemons write with the ring's current key). Access-code hashes
cannot be re-peppered without their codes: a batch first carries every previous KEK's pepper
over (table `peppers`, sealed under the current KEK, and resealed by the next rotation like any
sealed value), and a hash then depends on the KEK that seals its pepper, not on the one it was
made with. So once a rotation has run to its end, nothing depends on a previous key file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zivmilter import crypto
from zivmilter.errors import StoreError
from zivmilter.store.records import KeyUsage
from zivmilter.store.sealing import Sealing, key_of


class _Cursor(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class Column:
    """One column of values under a KEK: its table, the row key, and how to renew a value."""

    kind: str  # as `status --keys` names it
    table: str
    key: str
    column: str
    renew: Callable[[Sealing, Any, bytes], bytes] | None  # None: counted, never rewritten
    # SQL ANDed to the row filter: rows that still need a key (peppers.py; access codes of a
    # revoked message or link open nothing any more, as a revoked message has no key left)
    live: str = ""


def columns(message_keys: tuple[str, str]) -> tuple[Column, ...]:
    """The columns of a backend whose wrapped message keys are in `message_keys` (table, key)."""
    table, key = message_keys
    return (
        Column("message keys", table, key, "wrapped_key", lambda s, _k, v: s.rewrap(v)),
        Column("attachment keys", "attachments", "id", "wrapped_key", lambda s, _k, v: s.rewrap(v)),
        Column(
            "authenticator secrets", "accounts", "address", "totp_secret",
            lambda s, k, v: s.reseal_totp(str(k), v),
        ),
        Column(
            "contact numbers", "contacts", "address", "sms",
            lambda s, k, v: s.reseal_contact_sms(str(k), v),
        ),
        Column(
            "one-time code secrets", "recipients", "id", "otp_secret",
            lambda s, k, v: s.reseal_otp(int(k), v),
        ),
        Column(
            "download codes", "download_claims", "id", "otp_secret",
            lambda s, k, v: s.reseal_claim_code(int(k), v),
        ),
        Column(
            "access-code peppers", "peppers", "key_id", "sealed",
            lambda s, k, v: s.reseal_pepper(str(k), v),
        ),
        Column("access codes", "recipients", "id", "access_code_hash", None, _LIVE_RECIPIENT),
        Column("remembered access codes", "contacts", "address", "access_code_hash", None),
    )  # fmt: skip


_LIVE_RECIPIENT = (
    " AND revoked_at IS NULL AND message_id IN (SELECT id FROM messages WHERE revoked_at IS NULL)"
)


def usage(cur: _Cursor, sealing: Sealing, cols: tuple[Column, ...]) -> KeyUsage:
    """How many values of each kind each KEK protects; '' for a KEK not in the ring (or a value
    written before key ids, which names none). An access-code hash counts under the KEK that
    seals its pepper where one was carried over (`carried`), else under the KEK it names; the
    hashes naming each carried pepper are counted too (what keeps it from being pruned)."""
    ring = set(sealing.key_ids)
    sealed_by = {bytes.fromhex(kid): key_of(bytes(v)) for kid, v in carried(cur)}
    previous = set(sealing.key_ids[1:])
    counts: dict[str, dict[str, int]] = {}
    naming: dict[str, int] = {}  # key id hex ('' for none) -> peppered hashes naming it
    for col in cols:
        per = counts.setdefault(col.kind, {})
        rows = cur.execute(
            f"SELECT {col.column} FROM {col.table} WHERE {col.column} IS NOT NULL{col.live}"
        ).fetchall()
        for (value,) in rows:
            if col.renew is None:
                if not str(value).startswith("scrypt-hmac"):
                    continue  # plain scrypt: no KEK in it
                kid = crypto.pepper_id(str(value))
                named = kid.hex() if kid is not None else ""
                naming[named] = naming.get(named, 0) + 1
                if kid is None and previous <= sealed_by.keys():
                    kid = sealing.key_id  # before key ids: any pepper of the ring, all carried
                kid = sealed_by.get(kid, kid) if kid is not None else None
            else:
                kid = key_of(bytes(value))
            name = kid.hex() if kid is not None and kid in ring else ""
            per[name] = per.get(name, 0) + 1
    return KeyUsage(
        sealing.key_id.hex(),
        tuple(k.hex() for k in sealing.key_ids),
        counts,
        peppers={kid.hex(): naming.get(kid.hex(), 0) for kid in sealed_by},
        peppered_without_id=naming.get("", 0),
    )


def carried(cur: _Cursor) -> list[tuple[str, bytes]]:
    """The peppers of previous KEKs a rotation carried over: (key id hex, sealed pepper)."""
    return [(str(k), bytes(v)) for k, v in cur.execute("SELECT key_id, sealed FROM peppers")]


def carry_peppers(cur: _Cursor, sealing: Sealing, param: str) -> None:
    """Keep every previous KEK's pepper, sealed under the current KEK (once: a pepper already
    carried stays as it is, and a batch reseals it if another KEK sealed it)."""
    for kid, sealed in sealing.carry_peppers():
        cur.execute(
            f"INSERT INTO peppers (key_id, sealed) VALUES ({param}, {param})"
            " ON CONFLICT (key_id) DO NOTHING",
            (kid, sealed),
        )


def rekey_batch(
    cur: _Cursor, sealing: Sealing, cols: tuple[Column, ...], limit: int, param: str
) -> int:
    """Rewrite up to `limit` values not under the current KEK (`param`: the backend's
    placeholder); how many were rewritten, 0 when none is left."""
    carry_peppers(cur, sealing, param)
    head = b"\x01" + sealing.key_id
    done = 0
    for col in cols:
        if col.renew is None or done >= limit:
            continue
        rows = cur.execute(
            f"SELECT {col.key}, {col.column} FROM {col.table}"
            f" WHERE {col.column} IS NOT NULL AND {_prefix(col.column, param)} <> {param}"
            f" LIMIT {int(limit - done)}",
            (head,),
        ).fetchall()
        for key, value in rows:
            old = bytes(value)
            try:
                new = col.renew(sealing, key, old)
            except StoreError as exc:
                raise StoreError(f"{col.table}.{col.column} of {key}: {exc}") from None
            cur.execute(
                f"UPDATE {col.table} SET {col.column} = {param}"
                f" WHERE {col.key} = {param} AND {col.column} = {param}",
                (new, key, old),
            )
            done += 1
    return done


def _prefix(column: str, param: str) -> str:
    if param == "?":  # SQLite
        return f"substr({column}, 1, 9)"
    return f"substring({column} from 1 for 9)"
