"""Messages and their recipients, the same for every backend: a new message checked and its
rows prepared before any transaction (ids, link tokens; the subject, phones, hints, part names
and retry tokens sealed; access codes hashed), and what a message's rows give back: its parts,
its key while it may be read, whether a code matches its access-code hash. Plain values in,
plain values out; the SQL, and what each transaction holds, are sqlite/messages.py's and
postgresql/messages.py's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from zivmilter import crypto, defaults
from zivmilter.core.addresses import normalize_address
from zivmilter.errors import StoreError
from zivmilter.store.blobs import Content
from zivmilter.store.records import NewMessage, NewRecipient, PartRecord, checked_recipient
from zivmilter.store.rows import ordered_id, ts
from zivmilter.store.sealing import DataKey, Peppers, Sealing

Remembered = Callable[[Literal["sms", "access_code_hash"], str], Any]
"""The contact book's (column,) of an address, or None: what a verification falls back on."""


def verification_data(
    sealing: Sealing, r: NewRecipient, remembered: Remembered
) -> tuple[str | None, str | None]:
    """(phone, access code hash) for a recipient, from the directive or the contact book."""
    if r.verification == "sms":
        if r.phone is not None:
            return r.phone, None
        row = remembered("sms", r.address)
        if row is None or row[0] is None:
            raise StoreError(f"{r.address}: sms verification, but no number given or remembered")
        return sealing.unseal_contact_sms(r.address, bytes(row[0])), None
    if r.verification == "access_code":
        if r.access_code is not None:
            return None, sealing.hash_access_code(r.access_code)
        row = remembered("access_code_hash", r.address)
        if row is None or row[0] is None:
            raise StoreError(
                f"{r.address}: access-code verification, but no code given or remembered"
            )
        return None, str(row[0])
    return None, None


@dataclass(frozen=True, slots=True)
class NewRows:
    """A message to insert: its rows, everything in them sealed and hashed already."""

    id: str
    key: DataKey
    created_at: int
    # id, rfc822_id, queue_id, sender, subject (sealed), created_at, expires_at
    message: tuple[Any, ...]
    conversations: list[tuple[str, int]]  # (message_id, number)
    # message_id, address, conversation, method, delivery, rule, level, token_hash,
    # verification, phone (sealed), access_code_hash, hint (sealed), notified_at
    recipients: list[tuple[Any, ...]]
    blobs: list[tuple[str, str, Content]]  # (blob id, kind, content): the message, its parts
    parts: list[tuple[Any, ...]]  # message_id, leaf, blob_id, filename (sealed), content_type
    handover: tuple[Any, ...] | None  # message_id, retry_key, tokens (sealed), created_at
    tokens: dict[str, str]  # the notification recipients' link tokens: only their hashes stay

    @property
    def contents(self) -> list[tuple[str, Content]]:
        """(blob id, content) of each content to encrypt, in `blobs`' order."""
        return [(blob_id, content) for blob_id, _, content in self.blobs]


def prepare(sealing: Sealing, message: NewMessage, now: float, remembered: Remembered) -> NewRows:
    """ValueError for a message without recipients or with one twice (or a recipient
    `checked_recipient` refuses); StoreError for a verification with nothing to verify by."""
    recipients = [checked_recipient(r) for r in message.recipients]
    if not recipients:
        raise ValueError("a stored message needs at least one recipient")
    if len({r.address for r in recipients}) != len(recipients):
        raise ValueError("a recipient appears twice")
    sender = normalize_address(message.sender)
    message_id = ordered_id()
    key = sealing.new_data_key()
    created = int(now)

    secrets_of = {r.address: verification_data(sealing, r, remembered) for r in recipients}
    tokens = {
        r.address: secrets.token_urlsafe(defaults.LINK_TOKEN_BYTES)
        for r in recipients
        if r.delivery == "notification"
    }
    recipient_rows = []
    for r in recipients:
        token = tokens.get(r.address)
        phone, code_hash = secrets_of[r.address]
        recipient_rows.append(
            (
                message_id,
                r.address,
                r.conversation,
                r.method,
                r.delivery,
                r.rule,
                r.level,
                None if token is None else crypto.token_hash(token),
                r.verification,
                None if phone is None else key.seal_phone(message_id, r.address, phone),
                code_hash,
                None if r.hint is None else key.seal_hint(message_id, r.address, r.hint),
                # The milter hands the notification to the MTA in the same transaction,
                # or discards this message: saved means notified.
                created if r.delivery == "notification" else None,
            )
        )
    blobs: list[tuple[str, str, Content]] = [(ordered_id(), "message", message.content)]
    parts = []
    for part in message.parts:  # large attachments, kept apart under the same key
        blob_id = ordered_id()
        blobs.append((blob_id, "part", part.content))
        name = key.seal_part_name(message_id, part.index, part.filename)
        parts.append((message_id, part.index, blob_id, name, part.content_type))
    handover = None
    if message.retry_key is not None:  # a client's retry finds it (handovers.py)
        handover = (message_id, message.retry_key, seal_tokens(key, message_id, tokens), created)
    return NewRows(
        id=message_id,
        key=key,
        created_at=created,
        message=(
            message_id,
            message.rfc822_id,
            message.queue_id,
            sender,
            key.seal_subject(message_id, message.subject),
            created,
            ts(message.expires_at),
        ),
        conversations=[(message_id, n) for n in sorted({r.conversation for r in recipients})],
        recipients=recipient_rows,
        blobs=blobs,
        parts=parts,
        handover=handover,
        tokens=tokens,
    )


def seal_tokens(key: DataKey, message_id: str, tokens: dict[str, str]) -> bytes:
    """A message's link tokens, sealed for its handover (what a client's retry reuses)."""
    return key.seal_tokens(message_id, json.dumps(tokens, sort_keys=True).encode())


def open_tokens(key: DataKey, message_id: str, sealed: bytes) -> dict[str, str]:
    return dict(json.loads(key.unseal_tokens(message_id, sealed)))


# -- reading ----------------------------------------------------------------------------------


def message_ref(ref: str) -> tuple[str, str]:
    """A store id or an RFC 822 Message-ID (angle brackets optional), as (bare, <bare>)."""
    ref = ref.strip()
    bare = ref[1:-1] if ref.startswith("<") and ref.endswith(">") else ref
    return bare, f"<{bare}>"


def live_key(sealing: Sealing, row: Any, now: float) -> DataKey | None:
    """The message's data key from its (wrapped_key, expires_at) while its content may be read:
    None once revoked (no row, or no key) or expired."""
    if row is None or row[0] is None:
        return None
    if row[1] is not None and int(now) >= int(row[1]):
        return None
    return sealing.data_key(bytes(row[0]))


def part_record(key: DataKey | None, message_id: str, index: int, row: Any) -> PartRecord | None:
    """From the part's (blob_id, filename, content_type, size) and its message's live key."""
    if row is None or key is None or row[1] is None:
        return None
    name = key.unseal_part_name(message_id, index, bytes(row[1]))
    return PartRecord(index, name, str(row[2]), int(row[3]))


def access_code_matches(
    sealing: Sealing, stored_hash: str | None, code: str, carried: Callable[[], Peppers]
) -> bool:
    """Whether `code` is the one a recipient's (or the contact book's) `access_code_hash` was
    made from; False for no hash or a malformed one. `carried`: the backend's read of the
    peppers a key rotation carried over (store/rekey.py), called only when a hash needs one."""
    if not stored_hash:
        return False
    try:
        return sealing.access_code_matches(stored_hash, code, carried)
    except StoreError:
        return False


def reply_dropped(reply_id: Any) -> str:
    """The audit detail of a secure reply the MTA had not taken when its message was revoked."""
    return f"{reply_id}: not delivered when its message was revoked; maintenance will not send it"
