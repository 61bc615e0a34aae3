"""SQL of secure replies (PostgreSQL): written in the portal, handed to the MTA by the portal or
maintenance.

A reply is sealed with its message's data key: revoking the message destroys it too. What the
rows mean is store/replies.py's, shared with SQLite.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, BinaryIO, Literal

from zivmilter.store import contents
from zivmilter.store import replies as reply_rows
from zivmilter.store.postgresql.connection import audit
from zivmilter.store.postgresql.contents import insert_blob
from zivmilter.store.postgresql.messages import MessagesMixin
from zivmilter.store.records import ReplyRecord, ReplyUsage


class RepliesMixin(MessagesMixin):
    def save_reply(self, recipient_id: int, content: bytes) -> str:
        """Durably store a reply (RFC 5322 bytes) in the recipient's conversation; returns its id.

        It is sealed with the message's data key, so revoking the message destroys it too.
        Locking: the message row FOR SHARE in the inserting transaction: a revocation on another
        node commits first (refused here) or waits, so no reply outlives its message's key.
        """
        with self._read() as cur:
            row = cur.execute(
                "SELECT r.message_id, r.address, r.conversation, k.wrapped_key FROM recipients r"
                " JOIN messages m ON m.id = r.message_id"
                " JOIN message_keys k ON k.message_id = m.id"
                " WHERE r.id = %s AND m.revoked_at IS NULL",
                (recipient_id,),
            ).fetchone()
        new = reply_rows.new_reply(self._sealing, recipient_id, row)
        blob = self._write_blob(new.blob_id, new.key, content)
        now = int(self._now())
        try:
            with self._transaction() as cur:
                if not self._live(new.message_id, cur):
                    raise reply_rows.gone(recipient_id)
                insert_blob(cur, blob, new.blob_id, new.message_id, "reply")
                cur.execute(
                    "INSERT INTO replies (id, message_id, recipient_id, conversation, blob_id,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (new.id, new.message_id, recipient_id, new.conversation, new.blob_id, now),
                )
                audit(cur, now, new.message_id, new.address, "reply-stored", new.id)
        except BaseException:
            self._remove_blob(blob.ref)
            raise
        return new.id

    def mark_reply_sent(self, reply_id: str, detail: str = "") -> None:
        self._mark_reply(reply_id, "sent_at", "reply-sent", detail)

    def mark_reply_undeliverable(self, reply_id: str, detail: str) -> None:
        """The MTA refused this reply for good: `unsent_replies` offers it again only when
        asked to (`zivmilter maintenance --retry-refused`, once the cause is mended)."""
        self._mark_reply(reply_id, "refused_at", "reply-undeliverable", detail)

    def _mark_reply(
        self, reply_id: str, column: Literal["sent_at", "refused_at"], event: str, detail: str
    ) -> None:
        """Record the MTA's answer to a hand-over. Locking: the reply row FOR UPDATE, so the
        mark and its audit record go together when a portal and maintenance answer at once."""
        now = int(self._now())
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT p.message_id, r.address FROM replies p"
                " JOIN recipients r ON r.id = p.recipient_id WHERE p.id = %s FOR UPDATE OF p",
                (reply_id,),
            ).fetchone()
            if row is None:
                return
            cur.execute(f"UPDATE replies SET {column} = %s WHERE id = %s", (now, reply_id))
            audit(cur, now, str(row[0]), str(row[1]), event, detail)

    def replies(self, recipient_id: int) -> list[ReplyRecord]:
        """The replies this recipient wrote, oldest first."""
        return self._reply_records("p.recipient_id = %s", (recipient_id,))

    def unsent_replies(
        self, older_than: float = 0.0, *, refused: bool = False, message_id: str | None = None
    ) -> list[ReplyRecord]:
        """Replies the MTA did not take yet (a failed hand-over in the portal), oldest first;
        only those written `older_than` seconds ago or earlier (one the portal is handing over
        right now is not unsent yet). Those it refused for good only with `refused`; only
        those to `message_id` when given."""
        where = "p.sent_at IS NULL AND p.created_at <= %s"
        args: tuple[Any, ...] = (int(self._now() - older_than),)
        if not refused:
            where += " AND p.refused_at IS NULL"
        if message_id is not None:
            where += " AND p.message_id = %s"
            args += (message_id,)
        return self._reply_records(where, args)

    def _reply_records(self, where: str, args: tuple[Any, ...]) -> list[ReplyRecord]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT p.id, p.message_id, p.recipient_id, p.conversation, p.created_at,"
                " p.sent_at, b.size, p.refused_at FROM replies p JOIN blobs b ON b.id = p.blob_id"
                f" WHERE {where} AND b.deleted_at IS NULL ORDER BY p.created_at, p.seq",
                args,
            ).fetchall()
        return [reply_rows.record(r) for r in rows]

    def reply_usage(self, recipient_id: int, since: float) -> ReplyUsage:
        """Replies written at or after `since` by this link and by its address (all its links).
        Erased replies still count: the quota is of what was written (a revoked message's
        reply blobs keep their row and size, `deleted_at` set).

        Locking: none, one read: two replies at the same moment may both pass a limit they
        reach together, on one node as on two (the portal's quotas bound a flood)."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT COUNT(*) FILTER (WHERE p.recipient_id = %(rid)s),"
                " COALESCE(SUM(b.size) FILTER (WHERE p.recipient_id = %(rid)s), 0),"
                " COUNT(*), COALESCE(SUM(b.size), 0)"
                " FROM replies p JOIN recipients r ON r.id = p.recipient_id"
                " JOIN blobs b ON b.id = p.blob_id"
                " WHERE r.address = (SELECT address FROM recipients WHERE id = %(rid)s)"
                " AND p.created_at >= %(since)s",
                {"rid": recipient_id, "since": int(since)},
            ).fetchone()
        if row is None:
            return ReplyUsage(0, 0, 0, 0)
        return ReplyUsage(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def free_bytes(self) -> int:
        """Bytes free (to this process) on this node's own disk, where the portal's check before
        storing a reply (`portal.reply_limits.min_free_bytes`) can still mean something: the
        least of the store folder (`store.path`, or the nearest folder above it that exists:
        the transport cache's) and the temporary folder (the milter's encrypted spool of large
        messages, and uploads on their way in).

        Not the database's disk: PostgreSQL tells no client how much room it has left, and a
        reply that does not fit there fails its INSERT (the portal answers with an error)
        without harming what is stored. A large sentinel instead would switch the check off;
        the node's folders keep it guarding what the node itself must still write to accept
        mail. A store opened without `local_path` (tests, `zivmilter store copy`) measures the
        temporary folder only."""
        folders = [tempfile.gettempdir()]
        if self._local_path is not None:
            folders.append(_existing(self._local_path))
        return min(_free(f) for f in folders)

    def open_reply(self, reply_id: str) -> BinaryIO | None:
        """A reply's content, to hand it to the MTA; None once its message is revoked. Also
        past the message's expiry: the reply was written before it, and goes to the sender
        (expiry closes the message to its recipients)."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT p.blob_id, k.wrapped_key FROM replies p"
                " JOIN messages m ON m.id = p.message_id"
                " JOIN message_keys k ON k.message_id = m.id"
                " WHERE p.id = %s AND m.revoked_at IS NULL",
                (reply_id,),
            ).fetchone()
        stored = contents.stored(self._sealing, row)
        return None if stored is None else self._open_blob(*stored)


def _existing(path: str) -> str:
    """`path`, or the nearest folder above it that exists (a node may not have made it yet)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _free(folder: str) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize
