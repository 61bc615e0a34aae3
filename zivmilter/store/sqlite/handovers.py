"""SQL of handovers: what a client's retry of a tempfailed message finds of the first try.

The milter tempfails a message when a copy could not be handed to the MTA; copies it handed
before that go out all the same. The client retries the whole message: the gateway finds the
stored message by its retry key (a digest of envelope, decisions, Message-ID and content), reuses
its links (the tokens, sealed with the message's field key: a notification already sent carries
one) and its large attachments kept for the direct copies (their tokens, sealed with each
attachment's own key: a direct copy already sent may carry one; `handover_attachments`), and
leaves out the copies recorded here as taken. Once the milter answers with the message's plan,
the handover ends: its rows (and the sealed tokens) go; the attachments stay.

Recognizing retries costs the milter's hot path no commit of its own: the handover is written in
the message's own save (`NewMessage.retry_key`), an attachment's token in that attachment's save
(`save_attachment(handover=...)`), and its end rides along the next grouped commit
(`_defer`); until then this process already treats it as ended (`_ending`).

Marks are written the moment the MTA took a copy, without an fsync of their own (WAL with
synchronous=NORMAL, as `mark_opened`): they survive a kill of the milter, which is what they are
for; a power loss can drop the last few, and then a copy is sent twice, never lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from zivmilter.store import attachments, messages
from zivmilter.store.records import Handover
from zivmilter.store.sqlite.messages import MessagesMixin


class HandoversMixin(MessagesMixin):
    def remember_handover(self, message_id: str, retry_key: str, tokens: dict[str, str]) -> None:
        """Keep the retry key and the sealed link tokens of a message just saved."""
        key = self._live_message_key(message_id)
        if key is None:
            return
        sealed = messages.seal_tokens(key, message_id, tokens)
        self._lightly(
            lambda cur: cur.execute(
                "INSERT OR REPLACE INTO handovers (message_id, retry_key, tokens, created_at)"
                " VALUES (?, ?, ?, ?)",
                (message_id, retry_key, sealed, int(self._now())),
            )
        )

    def find_handover(self, retry_key: str, window: float) -> Handover | None:
        """The newest live message stored under `retry_key` within the last `window` seconds
        (a revoked or expired one is not reused), with the copies the MTA took and the large
        attachments kept for its direct copies."""
        since = int(self._now() - window)
        with self._queue_lock:
            ending = set(self._ending)
        with self._lock:
            rows = self._conn.execute(
                "SELECT h.message_id, h.tokens FROM handovers h JOIN messages m"
                " ON m.id = h.message_id WHERE h.retry_key = ? AND h.created_at >= ?"
                " AND m.revoked_at IS NULL ORDER BY h.created_at DESC, h.message_id DESC",
                (retry_key, since),
            ).fetchall()
        for message_id, sealed in rows:
            if message_id in ending:
                continue  # ended: its rows go with the next commit
            key = self._live_message_key(str(message_id))
            if key is None:
                continue
            tokens = messages.open_tokens(key, str(message_id), bytes(sealed))
            with self._lock:
                handed = self._conn.execute(
                    "SELECT copy FROM handed_copies WHERE message_id = ?", (message_id,)
                ).fetchall()
                links = self._conn.execute(
                    "SELECT h.attachment_id, h.link, a.wrapped_key FROM handover_attachments h"
                    " JOIN attachments a ON a.id = h.attachment_id WHERE h.message_id = ?",
                    (message_id,),
                ).fetchall()
            return Handover(
                str(message_id),
                tokens,
                frozenset(str(r[0]) for r in handed),
                attachments.handover_links(self._sealing, links),
            )
        return None

    def mark_handed(self, message_id: str, copy: str) -> None:
        """The MTA took this copy of the message: a retry must not hand it over again."""
        now = int(self._now())

        self._lightly(
            lambda cur: cur.execute(
                "INSERT OR IGNORE INTO handed_copies (message_id, copy, at) VALUES (?, ?, ?)",
                (message_id, copy, now),
            )
        )

    def end_handover(self, message_id: str) -> None:
        """The message went through: forget its retry key, sealed tokens, marks and kept
        attachments' tokens (the attachments stay: the copies carry their links). The same
        message sent again later is a new message, as it was before retries were recognized."""

        def forget(cur: sqlite3.Cursor) -> None:
            cur.execute("DELETE FROM handovers WHERE message_id = ?", (message_id,))
            cur.execute("DELETE FROM handed_copies WHERE message_id = ?", (message_id,))
            cur.execute("DELETE FROM handover_attachments WHERE message_id = ?", (message_id,))
            with self._queue_lock:
                self._ending.discard(message_id)

        with self._queue_lock:
            self._ending.add(message_id)
        self._defer(forget)

    def _lightly(self, write: Callable[[sqlite3.Cursor], object]) -> None:
        with self._lock, self._normal_sync(), self._transaction() as cur:
            write(cur)

    @contextmanager
    def _normal_sync(self) -> Iterator[None]:
        """No fsync for this commit (see the module docstring); the connection's setting, so
        under the store's lock."""
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")
