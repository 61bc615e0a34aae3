"""What the store seals with which key: the key hierarchy and every encryption context, named once.

Key hierarchy (the algorithms are crypto.py's; this module only picks keys and contexts):
- the KEK (key-encryption key, a file outside the store) wraps each message's data key (AES-KW)
  and, through its field key, seals what belongs to no message: account authenticator secrets,
  contact-book numbers, one-time code secrets; its pepper goes into every access-code hash
  (a previous KEK's pepper, carried over by `rekey`, is sealed under the current one); a
  subkey of its field key names the sign-in counters of addresses without an account
  (`sign_in_tag`), so their table lists no address;
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

from collections.abc import Callable, Iterable, Sequence

from zivmilter import crypto
from zivmilter.errors import StoreError

Peppers = Iterable[tuple[str, bytes]]  # (KEK id hex, pepper sealed under a KEK of the ring)


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

    def seal_handover_link(self, attachment_id: str, link: bytes) -> bytes:
        """The gateway's key for the attachment and its token, kept while its message's
        handover lasts: a client's retry puts the same link in its direct copy."""
        return crypto.seal(self.field_key, link, _handover_link(attachment_id))

    def unseal_handover_link(self, attachment_id: str, sealed: bytes) -> bytes:
        return crypto.unseal(self.field_key, sealed, _handover_link(attachment_id))


class Sealing:
    """The KEK's side: data keys wrapped and unwrapped, and what it seals itself.

    A key ring: the current KEK (`store.key_file`) wraps and seals everything new; the previous
    ones (`store.previous_key_files`, during a rotation) only open what they wrapped. Every wrapped
    key and KEK-sealed field starts with `_TAG` and the id of the KEK that made it, so it opens
    under that key directly and a store can count what still depends on each key (`key_of`);
    values written before key ids (untagged) are tried under every key of the ring.
    """

    __slots__ = ("_by_id", "_kek", "_ring")

    def __init__(self, kek: crypto.Kek, previous: Sequence[crypto.Kek] = ()) -> None:
        self._kek = kek
        self._ring = (kek, *(k for k in previous if k.id != kek.id))
        self._by_id = {k.id: k for k in self._ring}

    @classmethod
    def from_bytes(cls, kek: bytes, previous: Sequence[bytes] = ()) -> Sealing:
        """From `crypto.load_kek`'s bytes (KeyFileError when they are not a KEK)."""
        return cls(crypto.Kek.from_bytes(kek), [crypto.Kek.from_bytes(p) for p in previous])

    def __repr__(self) -> str:
        return "Sealing(<kek>)"

    @property
    def key_id(self) -> bytes:
        """The current KEK's id: what everything new is wrapped and sealed under."""
        return self._kek.id

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """The ids of every KEK of the ring, the current one first."""
        return tuple(k.id for k in self._ring)

    def new_data_key(self) -> DataKey:
        """A fresh data key, wrapped for its row."""
        raw = crypto.new_data_key()
        return DataKey(raw, self._wrap(raw))

    def data_key(self, wrapped: bytes) -> DataKey:
        """A row's data key (StoreError when no KEK of the ring wrapped it)."""
        return DataKey(self._unwrap(wrapped), wrapped)

    def rewrap(self, wrapped: bytes) -> bytes:
        """The same data key wrapped under the current KEK (`zivmilter rekey`)."""
        return self._wrap(self._unwrap(wrapped))

    def _wrap(self, raw: bytes) -> bytes:
        return _TAG + self._kek.id + crypto.wrap_data_key(self._kek, raw)

    def _unwrap(self, wrapped: bytes) -> bytes:
        kid = key_of(wrapped)
        if kid is not None and len(wrapped) == _WRAPPED_TAGGED:
            kek = self._by_id.get(kid)
            if kek is None:
                raise StoreError(_missing(kid))
            return crypto.unwrap_data_key(kek, wrapped[_HEAD:])
        return _first(lambda k: crypto.unwrap_data_key(k, wrapped), self._ring)

    def _seal(self, plain: bytes, context: str) -> bytes:
        return _TAG + self._kek.id + crypto.seal(self._kek.field_key, plain, context)

    def _unseal(self, sealed: bytes, context: str) -> bytes:
        kid = key_of(sealed)
        kek = self._by_id.get(kid) if kid is not None else None
        if kek is not None:
            try:
                return crypto.unseal(kek.field_key, sealed[_HEAD:], context)
            except StoreError:
                pass  # a value from before key ids whose first bytes look like a tag: see below
        try:
            return _first(lambda k: crypto.unseal(k.field_key, sealed, context), self._ring)
        except StoreError:
            if kid is not None and kek is None:
                raise StoreError(_missing(kid)) from None
            raise

    # -- sealed with the KEK's field key: no message's key, not destroyed by a revocation --

    def seal_totp(self, address: str, secret: bytes) -> bytes:
        return self._seal(secret, _totp(address))

    def unseal_totp(self, address: str, sealed: bytes) -> bytes:
        return self._unseal(sealed, _totp(address))

    def reseal_totp(self, address: str, sealed: bytes) -> bytes:
        return self._seal(self._unseal(sealed, _totp(address)), _totp(address))

    def seal_contact_sms(self, address: str, sms: str) -> bytes:
        return self._seal(sms.encode(), _contact_sms(address))

    def unseal_contact_sms(self, address: str, sealed: bytes) -> str:
        return self._unseal(sealed, _contact_sms(address)).decode()

    def reseal_contact_sms(self, address: str, sealed: bytes) -> bytes:
        return self._seal(self._unseal(sealed, _contact_sms(address)), _contact_sms(address))

    # -- access codes: hashed with the KEK's pepper ---------------------------------------
    # A hash cannot be re-peppered without its code, so `rekey` carries a previous KEK's pepper
    # over instead: sealed under the current KEK in the store (`carry_peppers`, table
    # `peppers`), it lets a hash of that KEK match once the key file itself is gone. The pepper
    # is an HKDF subkey of its own: it opens nothing else the old key wrapped or sealed.

    def hash_access_code(self, code: str) -> str:
        return crypto.hash_secret(code, pepper=self._kek.pepper, pepper_id=self._kek.id)

    def access_code_matches(
        self, stored_hash: str, code: str, carried: Callable[[], Peppers] = lambda: ()
    ) -> bool:
        """Also true for a hash written before the pepper (plain scrypt); StoreError when the
        stored hash is malformed, or peppered by a KEK that is neither in the ring nor carried
        over (`carried`: the store's (key id hex, sealed pepper) rows, read only when needed)."""
        kid = crypto.pepper_id(stored_hash)
        if kid is not None:
            kek = self._by_id.get(kid)
            if kek is not None:
                return crypto.verify_secret(stored_hash, code, pepper=kek.pepper)
            pepper = self.open_peppers(carried()).get(kid)
            if pepper is None:
                raise StoreError(_missing(kid))
            return crypto.verify_secret(stored_hash, code, pepper=pepper)
        # Written before key ids: peppered by whichever KEK was current then.
        peppers = [k.pepper for k in self._ring]
        if any(crypto.verify_secret(stored_hash, code, pepper=p) for p in peppers):
            return True
        if not stored_hash.startswith("scrypt-hmac"):
            return False  # plain scrypt: no pepper in it, the first try said all
        others = self.open_peppers(carried())
        return any(
            crypto.verify_secret(stored_hash, code, pepper=p)
            for k, p in others.items()
            if k not in self._by_id
        )

    def needs_new_pepper(self, stored_hash: str) -> bool:
        """A peppered hash not made with the current KEK's pepper (a previous key's, in the
        ring or carried over, or one written before key ids): once its code is proven, hash it
        again (store/peppers.py) so that the old pepper can go. Plain scrypt has none."""
        if not stored_hash.startswith("scrypt-hmac"):
            return False
        return crypto.pepper_id(stored_hash) != self._kek.id

    def carry_peppers(self) -> list[tuple[str, bytes]]:
        """(key id hex, sealed pepper) of every previous KEK of the ring, sealed under the
        current one: what `rekey` keeps so that the previous key files can go."""
        return [(k.id.hex(), self._seal(k.pepper, _pepper(k.id.hex()))) for k in self._ring[1:]]

    def open_peppers(self, rows: Peppers) -> dict[bytes, bytes]:
        """Key id -> pepper of the carried rows (StoreError when one does not open)."""
        return {
            bytes.fromhex(kid): self._unseal(bytes(sealed), _pepper(kid)) for kid, sealed in rows
        }

    def reseal_pepper(self, kid: str, sealed: bytes) -> bytes:
        return self._seal(self._unseal(sealed, _pepper(kid)), _pepper(kid))

    # -- names that only the KEK's holder can compute ------------------------------------

    def sign_in_tag(self, address: str) -> str:
        """The name of an address's sign-in counters when it has no sender account (table
        `sign_in_counts`): an HMAC under the current KEK, so a stolen database does not list
        the addresses someone tried, nor lets anyone test a guess against it. A rotation starts
        such counts afresh (minutes of lock at most; an account's own counters stay)."""
        return crypto.keyed_digest(self._kek.field_key, _SIGN_IN_TAG, address.encode("utf-8"))

    def seal_otp(self, recipient_id: int, secret: bytes) -> bytes:
        return self._seal(secret, _otp(recipient_id))

    def unseal_otp(self, recipient_id: int, sealed: bytes) -> bytes:
        return self._unseal(sealed, _otp(recipient_id))

    def reseal_otp(self, recipient_id: int, sealed: bytes) -> bytes:
        return self._seal(self._unseal(sealed, _otp(recipient_id)), _otp(recipient_id))

    # A claim's code lives minutes, but `rekey` reseals it all the same: `status --keys` then
    # says a previous key can go only when nothing at all still needs it.
    def seal_claim_code(self, claim_id: int, secret: bytes) -> bytes:
        return self._seal(secret, _claim_code(claim_id))

    def unseal_claim_code(self, claim_id: int, sealed: bytes) -> bytes:
        return self._unseal(sealed, _claim_code(claim_id))

    def reseal_claim_code(self, claim_id: int, sealed: bytes) -> bytes:
        return self._seal(self._unseal(sealed, _claim_code(claim_id)), _claim_code(claim_id))


# A wrapped key or KEK-sealed value that names its KEK: _TAG || key id (8 bytes) || the rest.
_TAG = b"\x01"
_HEAD = len(_TAG) + crypto.KEY_ID_BYTES
_WRAPPED_TAGGED = _HEAD + crypto.KEY_BYTES + 8  # AES-KW adds 8 bytes


def key_of(value: bytes) -> bytes | None:
    """The id of the KEK a wrapped key or KEK-sealed field names; None when it names none."""
    if len(value) > _HEAD and value[:1] == _TAG:
        return value[1:_HEAD]
    return None


def _missing(kid: bytes) -> str:
    return (
        f"wrong key-encryption key: this was stored under key {kid.hex()}, which is neither"
        " store.key_file nor one of store.previous_key_files (was a key retired too early?)"
    )


def _first(attempt: Callable[[crypto.Kek], bytes], ring: Sequence[crypto.Kek]) -> bytes:
    """The first KEK of the ring under which `attempt` succeeds (AES-KW and AES-GCM check
    integrity: a wrong key fails, it never yields wrong bytes); the last error otherwise."""
    error: StoreError | None = None
    for kek in ring:
        try:
            return attempt(kek)
        except StoreError as exc:
            error = exc
    assert error is not None
    raise error


# Encryption contexts: "<table>.<column>:<row>". Never change one: what was sealed with it would
# no longer open.


def _subject(message_id: str) -> str:
    return "messages.subject:" + message_id


def _tokens(message_id: str) -> str:
    return f"handovers.tokens:{message_id}"


def _handover_link(attachment_id: str) -> str:
    return f"handover_attachments.link:{attachment_id}"


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


_SIGN_IN_TAG = b"zivmilter/kek/sign-in-counts/v1"  # never change: every count would restart


def _totp(address: str) -> str:
    return "accounts.totp_secret:" + address


def _contact_sms(address: str) -> str:
    return "contacts.sms:" + address


def _pepper(kid_hex: str) -> str:
    return "peppers.sealed:" + kid_hex
