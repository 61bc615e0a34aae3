"""Secure replies, the same for every backend: where a new one goes (its recipient's message,
address and conversation, and the message's data key: a reply is sealed with it, so revoking the
message destroys the reply too), its ids, and its rows read back. Plain values in, plain values
out; the SQL is sqlite/replies.py's and postgresql/replies.py's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from zivmilter.errors import StoreError
from zivmilter.store.records import ReplyRecord
from zivmilter.store.rows import dt, dt_or_none
from zivmilter.store.sealing import DataKey, Sealing


def gone(recipient_id: int) -> StoreError:
    """Why a reply cannot be stored: its message is not in the store any more, or revoked."""
    return StoreError(f"recipient {recipient_id}: message gone, cannot store a reply")


@dataclass(frozen=True, slots=True)
class NewReply:
    id: str
    blob_id: str
    message_id: str
    address: str
    conversation: int
    key: DataKey  # the message's


def new_reply(sealing: Sealing, recipient_id: int, row: Any) -> NewReply:
    """From the recipient's (message_id, address, conversation) and its live message's wrapped
    key; StoreError (`gone`) when there is none."""
    if row is None or row[3] is None:
        raise gone(recipient_id)
    key = sealing.data_key(bytes(row[3]))
    reply_id, blob_id = secrets.token_hex(16), secrets.token_hex(16)
    return NewReply(reply_id, blob_id, str(row[0]), str(row[1]), int(row[2]), key)


def record(row: Any) -> ReplyRecord:
    """From (id, message_id, recipient_id, conversation, created_at, sent_at, size, refused_at)."""
    return ReplyRecord(
        str(row[0]),
        str(row[1]),
        int(row[2]),
        int(row[3]),
        dt(row[4]),
        dt_or_none(row[5]),
        int(row[6]),
        dt_or_none(row[7]),
    )
