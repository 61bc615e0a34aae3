"""SQL of handovers (PostgreSQL): what a client's retry of a tempfailed message finds of the first
try (the use: sqlite/handovers.py's docstring; the same contract, tests/store).

Durability, the trade-off SQLite makes with synchronous=NORMAL, made explicitly here: these
writes commit with `SET LOCAL synchronous_commit = off` (this transaction only, as `mark_opened`).
A mark is written the moment the MTA took a copy, on the milter's path; it must survive a kill
of the milter, which it does (the commit is in the server's WAL buffers, flushed within
3 x wal_writer_delay). A crash of the database server itself can drop the last few: then a
retry hands a copy over twice, or stores the message again, never loses one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from zivmilter.store import attachments, messages
from zivmilter.store.postgresql.connection import Cursor
from zivmilter.store.postgresql.messages import MessagesMixin
from zivmilter.store.records import Handover


class HandoversMixin(MessagesMixin):
    def remember_handover(self, message_id: str, retry_key: str, tokens: dict[str, str]) -> None:
        """Keep the retry key and the sealed link tokens of a message just saved.

        Locking: one INSERT ... SELECT from the live message row: its foreign key check locks
        that row (KEY SHARE), so a discard on another node waits or has already removed it (then
        nothing is inserted); a later revocation makes `find_handover` skip the row."""
        key = self._live_message_key(message_id)
        if key is None:
            return
        sealed = messages.seal_tokens(key, message_id, tokens)
        with self._lightly() as cur:
            cur.execute(
                "INSERT INTO handovers (message_id, retry_key, tokens, created_at)"
                " SELECT id, %s, %s, %s FROM messages WHERE id = %s AND revoked_at IS NULL"
                " ON CONFLICT (message_id) DO UPDATE SET retry_key = excluded.retry_key,"
                " tokens = excluded.tokens, created_at = excluded.created_at",
                (retry_key, sealed, int(self._now()), message_id),
            )

    def find_handover(self, retry_key: str, window: float) -> Handover | None:
        """The newest live message stored under `retry_key` within the last `window` seconds
        (a revoked or expired one is not reused), with the copies the MTA took and the large
        attachments kept for its direct copies.

        Locking: none; one transaction reads the handover, the message's key, the marks and
        the attachments' links together. A revocation committing just after is the
        revocation's business: the reused links are dead then, as the first try's would be."""
        now = int(self._now())
        with self._read() as cur:
            row = cur.execute(
                "SELECT h.message_id, h.tokens, k.wrapped_key FROM handovers h"
                " JOIN messages m ON m.id = h.message_id"
                " JOIN message_keys k ON k.message_id = m.id"
                " WHERE h.retry_key = %s AND h.created_at >= %s AND m.revoked_at IS NULL"
                " AND (m.expires_at IS NULL OR m.expires_at > %s)"
                " ORDER BY h.created_at DESC, h.message_id DESC LIMIT 1",
                (retry_key, int(now - window), now),
            ).fetchone()
            if row is None:
                return None
            message_id = str(row[0])
            handed = cur.execute(
                "SELECT copy FROM handed_copies WHERE message_id = %s", (message_id,)
            ).fetchall()
            links = cur.execute(
                "SELECT h.attachment_id, h.link, a.wrapped_key FROM handover_attachments h"
                " JOIN attachments a ON a.id = h.attachment_id WHERE h.message_id = %s",
                (message_id,),
            ).fetchall()
        key = self._sealing.data_key(bytes(row[2]))
        tokens = messages.open_tokens(key, message_id, bytes(row[1]))
        return Handover(
            message_id,
            tokens,
            frozenset(str(r[0]) for r in handed),
            attachments.handover_links(self._sealing, links),
        )

    def mark_handed(self, message_id: str, copy: str) -> None:
        """The MTA took this copy of the message: a retry must not hand it over again.

        Committed without waiting for its WAL flush (see the module docstring). Locking: one
        INSERT, a mark made twice (two nodes, or a retry) counts once (ON CONFLICT)."""
        with self._lightly() as cur:
            cur.execute(
                "INSERT INTO handed_copies (message_id, copy, at)"
                " SELECT id, %s, %s FROM messages WHERE id = %s ON CONFLICT DO NOTHING",
                (copy, int(self._now()), message_id),
            )

    def end_handover(self, message_id: str) -> None:
        """The message went through: forget its retry key, sealed tokens, marks and kept
        attachments' tokens (the attachments stay: the copies carry their links). The same
        message sent again later is a new message, as it was before retries were recognized.

        Locking: none needed: the DELETEs in one transaction, of rows only this message's own
        milter transaction writes (it ends the handover once it has answered)."""
        with self._lightly() as cur:
            cur.execute("DELETE FROM handovers WHERE message_id = %s", (message_id,))
            cur.execute("DELETE FROM handed_copies WHERE message_id = %s", (message_id,))
            cur.execute("DELETE FROM handover_attachments WHERE message_id = %s", (message_id,))

    @contextlib.contextmanager
    def _lightly(self) -> Iterator[Cursor]:
        """A transaction committed without waiting for its WAL flush (the module docstring)."""
        with self._transaction() as cur:
            cur.execute("SET LOCAL synchronous_commit = off")
            yield cur
