"""What the store seals with which key: the key hierarchy and every encryption context, named once.

Key hierarchy (the algorithms are crypto.py's; this module only picks keys and contexts):
- the KEK (key-encryption key, a file outside the store) wraps each message's data key (AES-KW)
  and, through its field key, seals what belongs to no message: account authenticator secrets,
  contact-book numbers, one-time code secrets; its pepper goes into every access-code hash;
- a message's data key derives its contents' keys (one per blob: the original, its large
  attachments kept apart, secure replies) and its field key, which seals the subject,
  recipients' numbers and hints, those attachments' names, and the portal's kept view.
  Revoking a message destroys its wrapped data key: all of these go with it;
- a large attachment of a direct delivery has a data key of its own (it outlives its message's
  revocation, SPEC 8), sealing its content and its file name.

Each sealed field is bound to its context (table, column and row), so a sealed value copied into
another row does not open there. This is the only module of the store that calls crypto's
seal/unseal and key wrapping; the SQL modules hold sealed bytes and keys, never a context.
"""

from __future__ import annotations

from zivmilter import crypto


class DataKey:
    """A message's (or a large attachment's) data key, with its wrapped form for the row."""

    __slots__ = ("_field_key", "raw", "wrapped")

    def __init__(self, raw: bytes, wrapped: bytes) -> None:
        self.raw = raw
        self.wrapped = wrapped
        self._field_key: bytes | None = None

    def __repr__(self) -> str:  # key material stays out of logs
        return "DataKey(<secret>)"

    @property
    def field_key(self) -> bytes:
        if self._field_key is None:
            self._field_key = crypto.message_field_key(self.raw)
        return self._field_key

    def content_key(self, blob_id: str) -> bytes:
        """The key of one content (blob) under this data key."""
        return crypto.content_key(self.raw, blob_id)

    # -- fields of a message ----------------------------------------------------------------

    def seal_subject(self, message_id: str, subject: str) -> bytes:
        return crypto.seal(self.field_key, subject.encode("utf-8"), _subject(message_id))

    def unseal_subject(self, message_id: str, sealed: bytes) -> str:
        return crypto.unseal(self.field_key, sealed, _subject(message_id)).decode()

    def seal_phone(self, message_id: str, address: str, phone: str) -> bytes:
        return crypto.seal(self.field_key, phone.encode(), _phone(message_id, address))

    def unseal_phone(self, message_id: str, address: str, sealed: bytes) -> str:
        return crypto.unseal(self.field_key, sealed, _phone(message_id, address)).decode()

    def seal_hint(self, message_id: str, address: str, hint: str) -> bytes:
        return crypto.seal(self.field_key, hint.encode(), _hint(message_id, address))

    def unseal_hint(self, message_id: str, address: str, sealed: bytes) -> str:
        return crypto.unseal(self.field_key, sealed, _hint(message_id, address)).decode()

    def seal_tokens(self, message_id: str, tokens: bytes) -> bytes:
        """The link tokens, kept for a retry of the same message (store/sqlite/handovers.py)."""
        return crypto.seal(self.field_key, tokens, _tokens(message_id))

    def unseal_tokens(self, message_id: str, sealed: bytes) -> bytes:
        return crypto.unseal(self.field_key, sealed, _tokens(message_id))

    def seal_portal_view(self, message_id: str, view: bytes) -> bytes:
        return crypto.seal(self.field_key, view, _portal_view(message_id))

    def unseal_portal_view(self, message_id: str, sealed: bytes) -> bytes:
        return crypto.unseal(self.field_key, sealed, _portal_view(message_id))

    def seal_part_name(self, message_id: str, index: int, filename: str) -> bytes:
        return crypto.seal(self.field_key, filename.encode("utf-8"), _part_name(message_id, index))

    def unseal_part_name(self, message_id: str, index: int, sealed: bytes) -> str:
        return crypto.unseal(self.field_key, sealed, _part_name(message_id, index)).decode()

    # -- fields of a large attachment (under its own data key) ----------------------------

    def seal_filename(self, attachment_id: str, filename: str) -> bytes:
        return crypto.seal(self.field_key, filename.encode("utf-8"), _filename(attachment_id))

    def unseal_filename(self, attachment_id: str, sealed: bytes) -> str:
        return crypto.unseal(self.field_key, sealed, _filename(attachment_id)).decode("utf-8")


class Sealing:
    """The KEK's side: data keys wrapped and unwrapped, and what it seals itself."""

    __slots__ = ("_kek",)

    def __init__(self, kek: crypto.Kek) -> None:
        self._kek = kek

    @classmethod
    def from_bytes(cls, kek: bytes) -> Sealing:
        """From `crypto.load_kek`'s bytes (KeyFileError when they are not a KEK)."""
        return cls(crypto.Kek.from_bytes(kek))

    def __repr__(self) -> str:
        return "Sealing(<kek>)"

    def new_data_key(self) -> DataKey:
        """A fresh data key, wrapped for its row."""
        raw = crypto.new_data_key()
        return DataKey(raw, crypto.wrap_data_key(self._kek, raw))

    def data_key(self, wrapped: bytes) -> DataKey:
        """A row's data key (StoreError when the KEK is not the one that wrapped it)."""
        return DataKey(crypto.unwrap_data_key(self._kek, wrapped), wrapped)

    # -- sealed with the KEK's field key: no message's key, not destroyed by a revocation --

    def seal_totp(self, address: str, secret: bytes) -> bytes:
        return crypto.seal(self._kek.field_key, secret, _totp(address))

    def unseal_totp(self, address: str, sealed: bytes) -> bytes:
        return crypto.unseal(self._kek.field_key, sealed, _totp(address))

    def seal_contact_sms(self, address: str, sms: str) -> bytes:
        return crypto.seal(self._kek.field_key, sms.encode(), _contact_sms(address))

    def unseal_contact_sms(self, address: str, sealed: bytes) -> str:
        return crypto.unseal(self._kek.field_key, sealed, _contact_sms(address)).decode()

    # -- access codes: hashed with the KEK's pepper ---------------------------------------

    def hash_access_code(self, code: str) -> str:
        return crypto.hash_secret(code, pepper=self._kek.pepper)

    def access_code_matches(self, stored_hash: str, code: str) -> bool:
        """Also true for a hash written before the pepper (plain scrypt); StoreError when the
        stored hash is malformed."""
        return crypto.verify_secret(stored_hash, code, pepper=self._kek.pepper)

    def seal_otp(self, recipient_id: int, secret: bytes) -> bytes:
        return crypto.seal(self._kek.field_key, secret, _otp(recipient_id))

    def unseal_otp(self, recipient_id: int, sealed: bytes) -> bytes:
        return crypto.unseal(self._kek.field_key, sealed, _otp(recipient_id))

    def seal_claim_code(self, claim_id: int, secret: bytes) -> bytes:
        return crypto.seal(self._kek.field_key, secret, _claim_code(claim_id))

    def unseal_claim_code(self, claim_id: int, sealed: bytes) -> bytes:
        return crypto.unseal(self._kek.field_key, sealed, _claim_code(claim_id))


# Encryption contexts: "<table>.<column>:<row>". Never change one: what was sealed with it would
# no longer open.


def _subject(message_id: str) -> str:
    return "messages.subject:" + message_id


def _tokens(message_id: str) -> str:
    return f"handovers.tokens:{message_id}"


def _portal_view(message_id: str) -> str:
    return "messages.portal_view:" + message_id


def _part_name(message_id: str, index: int) -> str:
    return f"parts.filename:{message_id}:{index}"


def _phone(message_id: str, address: str) -> str:
    return f"recipients.phone:{message_id}:{address}"


def _hint(message_id: str, address: str) -> str:
    return f"recipients.hint:{message_id}:{address}"


def _otp(recipient_id: int) -> str:
    return f"recipients.otp:{recipient_id}"


def _claim_code(claim_id: int) -> str:
    return f"download_claims.otp_secret:{claim_id}"


def _filename(attachment_id: str) -> str:
    return "attachments.filename:" + attachment_id


def _totp(address: str) -> str:
    return "accounts.totp_secret:" + address


def _contact_sms(address: str) -> str:
    return "contacts.sms:" + address
