"""Large attachments of direct deliveries, kept for download (SPEC 5), the same for every
backend: a new one's ids, token and data key of its own (it outlives its message's revocation and
expiry, SPEC 8), its sealed name, and its rows read back. Plain values in, plain values out; the
SQL is sqlite/attachments.py's and postgresql/attachments.py's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zivmilter import crypto, defaults
from zivmilter.errors import StoreError
from zivmilter.store.records import AttachmentRecord, SavedAttachment
from zivmilter.store.rows import MESSAGE_COLUMNS, dt, message_record
from zivmilter.store.sealing import DataKey, Sealing


def not_live(message_id: str) -> StoreError:
    """Why an attachment cannot be kept: its message is not in the store, or revoked."""
    return StoreError(f"message {message_id}: unknown or revoked")


@dataclass(frozen=True, slots=True)
class NewAttachment:
    """An attachment to keep: its ids, its data key, its sealed name, and its token (handed out
    once; only its hash is kept)."""

    id: str
    blob_id: str
    key: DataKey
    filename: bytes  # sealed
    token: str
    token_hash: str


def new_attachment(sealing: Sealing, filename: str) -> NewAttachment:
    key = sealing.new_data_key()
    attachment_id = secrets.token_hex(16)
    blob_id = secrets.token_hex(16)
    token = secrets.token_urlsafe(defaults.LINK_TOKEN_BYTES)
    sealed = key.seal_filename(attachment_id, filename)
    return NewAttachment(attachment_id, blob_id, key, sealed, token, crypto.token_hash(token))


def handover_row(new: NewAttachment, message_id: str, handover: str) -> tuple[str, str, bytes]:
    """The row that lets a client's retry find this attachment again (`handover`: the caller's
    key for it), its token sealed under the attachment's own key: (attachment_id, message_id,
    link)."""
    link = json.dumps({"key": handover, "token": new.token}).encode()
    return new.id, message_id, new.key.seal_handover_link(new.id, link)


def handover_links(sealing: Sealing, rows: Iterable[Any]) -> dict[str, SavedAttachment]:
    """A handover's attachments from (attachment_id, link, wrapped key) rows, by their key."""
    out: dict[str, SavedAttachment] = {}
    for aid, sealed, wrapped in rows:
        key = sealing.data_key(bytes(wrapped))
        link = json.loads(key.unseal_handover_link(str(aid), bytes(sealed)))
        out[str(link["key"])] = SavedAttachment(str(aid), str(link["token"]))
    return out


def found(row: Any) -> str | None:
    """The attachment id from (id), or None."""
    return None if row is None else str(row[0])


def record(sealing: Sealing, row: Any) -> AttachmentRecord | None:
    """From the message's columns (rows.MESSAGE_COLUMNS of them), then the attachment's id,
    sealed filename, content type, size, created_at, wrapped key (its own, or its message's)
    and its blob's deleted_at."""
    if row is None:
        return None
    message = message_record(sealing, row[:MESSAGE_COLUMNS])
    aid, sealed, ctype, size, created, wrapped, deleted = row[MESSAGE_COLUMNS:]
    available = wrapped is not None and deleted is None
    filename = None
    if sealed is not None and available:
        key = sealing.data_key(bytes(wrapped))
        filename = key.unseal_filename(str(aid), bytes(sealed))
    return AttachmentRecord(
        str(aid), message, filename, str(ctype), int(size), dt(created), available
    )
