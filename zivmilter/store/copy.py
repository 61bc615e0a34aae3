"""`zivmilter store copy`: every row and content of one store into another, empty one, SQLite to
PostgreSQL or back, then a check that counts match and that every message, reply, attachment and
large attachment kept apart still decrypts to the same bytes through the destination.

The two schemas are mirrors (postgresql/schema.py), so rows are copied column by column as they
are, ciphertexts and wrapped keys included: nothing is decrypted and sealed again, which is why
both configurations must name the same key file. Two differences are mapped here: a message's
wrapped key is `messages.wrapped_key` in SQLite and a row of `message_keys` in PostgreSQL; a
content kept outside its row (a blob file, or PostgreSQL chunks) is copied into its row in the
destination (the ciphertext is the same either way; reading handles both).

Stop the milter and the portal while copying (a message stored meanwhile would be missed; the
count check would then fail).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from zivmilter import crypto
from zivmilter.core.config import Config
from zivmilter.errors import StoreError
from zivmilter.store.blobs import BlobStore, FileBlobStore
from zivmilter.store.interfaces import Store

# Tables in foreign-key order, with the columns both backends have.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("messages", ("id", "rfc822_id", "queue_id", "sender", "subject", "created_at",
                  "expires_at", "revoked_at", "portal_view")),
    ("message_keys", ("message_id", "wrapped_key")),
    ("conversations", ("id", "message_id", "number")),
    ("recipients", ("id", "message_id", "address", "conversation", "method", "delivery", "rule",
                    "level", "token_hash", "verification", "phone", "access_code_hash", "hint",
                    "notified_at", "opened_at", "failed_attempts", "lockouts", "locked_until",
                    "revoked_at", "failed_streak", "otp_secret", "otp_sent_at", "otp_sends",
                    "receipt_sent_at", "session_gen")),
    ("blobs", ("id", "message_id", "kind", "path", "size", "cipher_size", "sha256",
               "deleted_at", "data")),
    ("parts", ("message_id", "leaf", "blob_id", "filename", "content_type")),
    ("handovers", ("message_id", "retry_key", "tokens", "created_at")),
    ("handed_copies", ("message_id", "copy", "at")),
    ("contacts", ("address", "sms", "access_code_hash", "used_at", "language")),
    ("accounts", ("address", "kind", "active", "password_hash", "totp_secret", "created_at",
                  "totp_last_step", "failed_attempts", "failed_streak", "lockouts",
                  "locked_until", "session_gen")),
    ("invites", ("token_hash", "address", "created_at", "expires_at", "used_at")),
    ("audit", ("id", "at", "message_id", "recipient", "event", "detail")),
    ("replies", ("id", "message_id", "recipient_id", "conversation", "blob_id", "created_at",
                 "sent_at", "refused_at")),
    ("attachments", ("id", "message_id", "blob_id", "filename", "content_type", "token_hash",
                     "created_at", "wrapped_key")),
    ("handover_attachments", ("attachment_id", "message_id", "link")),
    ("download_claims", ("id", "attachment_id", "address", "recipient_id", "created_at",
                         "otp_secret", "otp_sent_at", "otp_sends", "funded", "failed_streak",
                         "lockouts", "locked_until")),
    ("claim_budget", ("address", "at")),
    ("idd_domains", ("domain", "added_at")),
    ("devices", ("digest", "address", "created_at", "expires_at", "used_at")),
    ("recipient_keys", ("ident", "kind", "material", "imported_at")),
    ("recipient_key_addresses", ("ident", "address")),
    ("peppers", ("key_id", "sealed", "unused_since")),
    # Rate-limit state, but copied: a lock in force holds on in the destination, as an
    # account's does (its counters are columns of `accounts`), so a copy does not tell
    # addresses without an account apart; tags are HMACs under the same KEK on both sides.
    ("sign_in_counts", ("tag", "failed_streak", "lockouts", "locked_until", "failed_at")),
)  # fmt: skip
_IDENTITY = ("conversations", "recipients", "audit")  # ids that other rows refer to: kept
_ORDER = {"replies": "created_at, id", "audit": "id"}


@dataclass(frozen=True)
class CopyReport:
    rows: dict[str, int]  # table -> rows copied (equal on both sides)
    contents_checked: int  # messages, replies and attachments decrypted on both sides


class _Side:
    """One store's rows, read or written in one transaction."""

    kind: str

    def rows(self, table: str, cols: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def insert(self, table: str, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def count(self, table: str) -> int:
        raise NotImplementedError

    def open_content(self, ref: str) -> BinaryIO:
        raise NotImplementedError

    def finish(self) -> None:
        """Commit what was inserted."""

    def close(self) -> None:
        raise NotImplementedError


class _SqliteSide(_Side):
    kind = "sqlite"

    def __init__(self, cfg: Config, kek: bytes) -> None:
        from zivmilter.store.sqlite import DB_NAME, SqliteStore

        SqliteStore.open(cfg.store.path, kek).close()  # created and migrated if need be
        self._conn = sqlite3.connect(os.path.join(cfg.store.path, DB_NAME), isolation_level=None)
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("BEGIN IMMEDIATE")
        self._blobs: BlobStore = FileBlobStore(cfg.store.path)

    def rows(self, table: str, cols: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        if table == "message_keys":
            yield from self._conn.execute(
                "SELECT id, wrapped_key FROM messages WHERE wrapped_key IS NOT NULL ORDER BY id"
            )
            return
        order = "rowid" if table == "replies" else _ORDER.get(table, "1")
        yield from self._conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")

    def insert(self, table: str, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if table == "message_keys":
            self._conn.executemany(
                "UPDATE messages SET wrapped_key = ? WHERE id = ?", [(k, m) for m, k in rows]
            )
            return
        if table == "accounts":
            i = list(cols).index("active")
            rows = [(*r[:i], int(r[i]), *r[i + 1 :]) for r in rows]
        marks = ", ".join("?" for _ in cols)
        self._conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)

    def count(self, table: str) -> int:
        if table == "message_keys":
            sql = "SELECT count(*) FROM messages WHERE wrapped_key IS NOT NULL"
        else:
            sql = f"SELECT count(*) FROM {table}"
        return int(self._conn.execute(sql).fetchone()[0])

    def open_content(self, ref: str) -> BinaryIO:
        return self._blobs.open(ref)

    def finish(self) -> None:
        self._conn.execute("COMMIT")
        self._conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        self._conn.close()


class _PostgresSide(_Side):
    kind = "postgresql"

    def __init__(self, cfg: Config, migrate: bool) -> None:
        from psycopg_pool import ConnectionPool

        from zivmilter.store.postgresql.blobs import PgBlobStore
        from zivmilter.store.postgresql.connection import connect, connection_kwargs
        from zivmilter.store.postgresql.schema import check_version, migrate_database

        if migrate:
            migrate_database(cfg.store.dsn, cfg.store.password_file)
        self._conn = connect(cfg.store.dsn, cfg.store.password_file)
        self._cur = self._conn.cursor()
        check_version(self._cur, cfg.store.dsn)
        self._pool = ConnectionPool(
            cfg.store.dsn, kwargs=connection_kwargs(cfg.store.password_file), min_size=1,
            max_size=2,
        )  # fmt: skip
        self._blobs = PgBlobStore(self._pool, lambda: 0.0)

    def rows(self, table: str, cols: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        order = _ORDER.get(table, "1")
        if table == "replies":
            order = "seq"
        yield from self._cur.execute(
            f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}".encode()
        ).fetchall()

    def insert(self, table: str, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if table == "accounts":
            i = list(cols).index("active")
            rows = [(*r[:i], bool(r[i]), *r[i + 1 :]) for r in rows]
        overriding = " OVERRIDING SYSTEM VALUE" if table in _IDENTITY else ""
        marks = ", ".join("%s" for _ in cols)
        self._cur.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}){overriding} VALUES ({marks})".encode(), rows
        )
        if table in _IDENTITY:  # new rows continue after the copied ids
            self._cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" GREATEST((SELECT max(id) FROM {table}), 1))".encode()
            )

    def count(self, table: str) -> int:
        row = self._cur.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
        return 0 if row is None else int(row[0])

    def open_content(self, ref: str) -> BinaryIO:
        return self._blobs.open(ref)

    def finish(self) -> None:
        self._conn.commit()

    def close(self) -> None:
        self._pool.close()
        self._conn.close()


def _side(cfg: Config, kek: bytes, destination: bool) -> _Side:
    if cfg.store.backend == "postgresql":
        return _PostgresSide(cfg, migrate=destination)
    return _SqliteSide(cfg, kek)


def copy_store(src_cfg: Config, dst_cfg: Config) -> CopyReport:
    """Copy the store `src_cfg` names into the empty one `dst_cfg` names (same key file), then
    check it. StoreError when the destination holds data, the keys differ, or a check fails."""
    kek = crypto.load_kek(src_cfg.store.key_file)
    if crypto.load_kek(dst_cfg.store.key_file) != kek:
        raise StoreError(
            f"{dst_cfg.source}: store.key_file is not the same key as {src_cfg.source}'s:"
            " the copied contents would not open (copy the key file first)"
        )
    src = _side(src_cfg, kek, destination=False)
    try:
        dst = _side(dst_cfg, kek, destination=True)
        try:
            busy = [t for t, _ in TABLES if dst.count(t)]
            if busy:
                raise StoreError(
                    f"{dst_cfg.source}: the destination store is not empty ({', '.join(busy)}):"
                    " copy only into a new store"
                )
            counts: dict[str, int] = {}
            for table, cols in TABLES:
                rows = list(src.rows(table, cols))
                if table == "blobs":
                    rows = [_inline(src, cols, r) for r in rows]
                dst.insert(table, cols, rows)
                counts[table] = len(rows)
            dst.finish()
            for table, _ in TABLES:
                if dst.count(table) != counts[table] or src.count(table) != counts[table]:
                    raise StoreError(
                        f"store copy: {table}: {counts[table]} rows read, destination holds"
                        f" {dst.count(table)}, source now {src.count(table)}"
                    )
        finally:
            dst.close()
    finally:
        src.close()
    return CopyReport(counts, verify_copy(src_cfg, dst_cfg))


def _inline(src: _Side, cols: Sequence[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `blobs` row with its content in the row (path ''), read from the source's blob store."""
    values = dict(zip(cols, row, strict=True))
    if values["path"] and values["deleted_at"] is None:
        with src.open_content(str(values["path"])) as fh:
            values["data"] = fh.read()
        values["path"] = ""
    elif values["path"]:
        values["path"] = ""  # deleted: nothing left to copy
    return tuple(values[c] for c in cols)


def verify_copy(src_cfg: Config, dst_cfg: Config) -> int:
    """Every message, reply, attachment and large attachment kept apart (`parts`) readable in
    the source reads the same (SHA-256 of the plaintext) through the destination; returns how
    many were compared."""
    from zivmilter.store import open_store

    checked = 0
    with (
        contextlib.closing(open_store(src_cfg, read_only=True)) as src,  # only compared
        contextlib.closing(open_store(dst_cfg)) as dst,
    ):
        side = _side(src_cfg, crypto.load_kek(src_cfg.store.key_file), destination=False)
        try:
            ids = {t: [str(r[0]) for r in side.rows(t, ("id",))] for t in ("messages", "replies")}
            attachments = [str(r[0]) for r in side.rows("attachments", ("id",))]
            parts = [(str(r[0]), int(r[1])) for r in side.rows("parts", ("message_id", "leaf"))]
        finally:
            side.close()
        for mid in ids["messages"]:
            _same(f"message {mid}", src.open_content(mid), dst.open_content(mid))
            _same(f"message {mid} record", _record(src, mid), _record(dst, mid))
            checked += 1
        for rid in ids["replies"]:
            _same(f"reply {rid}", src.open_reply(rid), dst.open_reply(rid))
            checked += 1
        for aid in attachments:
            _same(f"attachment {aid}", src.open_attachment(aid), dst.open_attachment(aid))
            checked += 1
        for mid, leaf in parts:
            _same(f"message {mid} part {leaf}", src.open_part(mid, leaf), dst.open_part(mid, leaf))
            _same(
                f"message {mid} part {leaf} record",
                io.BytesIO(repr(src.part(mid, leaf)).encode()),
                io.BytesIO(repr(dst.part(mid, leaf)).encode()),
            )
            checked += 1
    return checked


def _record(store: Store, message_id: str) -> BinaryIO:
    return io.BytesIO(repr((store.message(message_id), store.recipients(message_id))).encode())


def _same(what: str, a: BinaryIO | None, b: BinaryIO | None) -> None:
    if (a is None) != (b is None):
        raise StoreError(f"store copy: {what}: readable on one side only")
    if a is None or b is None:
        return
    with a, b:
        if _digest(a) != _digest(b):
            raise StoreError(f"store copy: {what}: differs after the copy")


def _digest(fh: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()
