"""The store's values: what callers hand in (`NewMessage`, `NewRecipient`) and what they get back
(records), the same for every backend. Plain frozen dataclasses, no I/O; interfaces.py says which
aggregate uses which."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import BinaryIO, Literal

from zivmilter.core.addresses import normalize_address
from zivmilter.errors import MessageError

Delivery = Literal["notification", "direct"]
Verification = Literal["account", "sms", "access_code", "email"]
AccountKind = Literal["sender", "recipient"]

_DELIVERIES = ("notification", "direct")
_VERIFICATIONS = ("account", "sms", "access_code", "email")


# ---------------------------------------------------------------------------------------------
# Values in and out


@dataclass(frozen=True)
class NewRecipient:
    """One envelope recipient of a message being saved, as the policy decided it.

    `phone` (sms) and `access_code` (access_code) come from the sender's directive; when they are
    None for those kinds, the contact book's remembered number or code hash is used (rules 5/6).
    """

    address: str
    conversation: int
    method: str  # the policy's method name, e.g. "account", "access_right", "email"
    delivery: Delivery
    rule: str  # which rule decided, e.g. "A3"
    level: str | None = None  # transport level of a direct delivery (levels.Level value)
    verification: Verification | None = None  # how a notification recipient proves identity
    phone: str | None = None
    access_code: str | None = None
    hint: str | None = None  # the sender's hint for an access code


@dataclass(frozen=True, repr=False)
class NewPart:
    """A large attachment of a message being saved, decoded (mail/parts.py numbers and names
    it): kept as a blob of its own under the message's key, so that the portal streams it
    instead of parsing the whole message for one download."""

    index: int  # the leaf's index in the message, as the portal numbers it
    filename: str
    content_type: str
    content: BinaryIO | bytes | str | os.PathLike[str]

    def __repr__(self) -> str:  # file names often name a patient: kept out of logs
        return f"NewPart(index={self.index}, content_type={self.content_type!r})"


@dataclass(frozen=True)
class NewMessage:
    """A message to store. `content` is the raw RFC 5322 message: a binary file, bytes or a path;
    `parts`, its large attachments decoded (none for ordinary mail)."""

    sender: str  # the author (From): secure replies go here; not a bounce envelope sender
    subject: str
    content: BinaryIO | bytes | str | os.PathLike[str]
    recipients: Sequence[NewRecipient]
    rfc822_id: str | None = None
    queue_id: str = ""
    expires_at: datetime | None = None
    parts: Sequence[NewPart] = ()
    # A client's retry of this message finds it by this key (handovers): kept in the save's own
    # transaction, so recognizing retries costs the hot path no commit of its own.
    retry_key: str | None = None


@dataclass(frozen=True, repr=False)
class SavedMessage:
    """The store's id of the message and the link tokens of notification recipients.

    This is the only time the plaintext tokens exist: the store keeps their SHA-256 only.
    """

    id: str
    tokens: dict[str, str]  # normalized recipient address -> link token
    size: int  # bytes of the original message

    def __repr__(self) -> str:  # tokens are credentials: keep them out of logs
        return f"SavedMessage(id={self.id!r}, tokens=<{len(self.tokens)}>, size={self.size})"


@dataclass(frozen=True, repr=False)
class Handover:
    """A stored message found again for a client's retry (store/sqlite/handovers.py): its id,
    the link tokens its notifications carry, the copies the MTA already took (by the key the
    gateway gave them), and the large attachments an earlier try kept for its direct copies (by
    the key the gateway gave them: `AttachmentStore.save_attachment(handover=...)`)."""

    message_id: str
    tokens: dict[str, str]  # normalized recipient address -> link token
    handed: frozenset[str]
    attachments: Mapping[str, SavedAttachment] = field(default_factory=dict)

    def __repr__(self) -> str:  # tokens are credentials: keep them out of logs
        return (
            f"Handover(message_id={self.message_id!r}, handed={len(self.handed)},"
            f" attachments={len(self.attachments)})"
        )


@dataclass(frozen=True)
class MessageRecord:
    id: str
    rfc822_id: str | None
    queue_id: str
    sender: str
    subject: str | None  # None once revoked
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    size: int

    def available(self, now: datetime) -> bool:
        """Content can still be opened: neither revoked nor expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, repr=False)
class RecipientRecord:
    id: int
    message: MessageRecord
    address: str
    conversation: int
    method: str
    delivery: Delivery
    rule: str
    level: str | None
    verification: Verification | None
    phone: str | None  # decrypted; None once revoked
    hint: str | None
    access_code_hash: str | None  # check with the store's access_code_matches
    notified_at: datetime | None
    opened_at: datetime | None
    failed_attempts: int
    lockouts: int
    locked_until: datetime | None

    def __repr__(self) -> str:  # phone numbers never go to logs
        return (
            f"RecipientRecord(id={self.id}, message={self.message.id!r}, address={self.address!r},"
            f" verification={self.verification!r})"
        )


@dataclass(frozen=True)
class Account:
    address: str
    kind: AccountKind
    active: bool
    password_hash: str | None
    has_totp: bool
    # The generation of its portal sessions: sign-out, a new enrolment and switching it off
    # move it on, and a sender's session issued under an older one no longer counts.
    session_gen: int = 0


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    message_id: str | None
    recipient: str | None
    event: str
    detail: str


# -- portal values (guest portal, `revoke`, `status`, `contacts`) ------------------------------


@dataclass(frozen=True)
class LinkState:
    """A link's portal state beyond `RecipientRecord`: its own revocation, consecutive failures,
    and the one-time codes sent for it (rate limits)."""

    revoked_at: datetime | None
    failed_streak: int  # wrong codes since the last success or lockout
    otp_sent_at: datetime | None
    otp_sends: int  # codes sent since the last success


@dataclass(frozen=True)
class LinkView:
    """What every request behind a personal link needs first, read at once (`link_view`): the
    recipient with its message, its link's state, its session generation (as
    `session_generation` gives it) and its address's language in the contact book (as
    `contact` gives it); asked `with_view`, also the message's kept portal view (as
    `portal_view` gives it: None once revoked), for the pages that show the message."""

    recipient: RecipientRecord
    state: LinkState
    generation: int
    language: str | None = None  # the address's language in the contact book, if it chose one
    view: bytes | None = None  # with_view: the kept portal view (`portal_view`), if kept


@dataclass(frozen=True)
class Attempt:
    """One answer to a link's verification, claimed against its lockout before it is checked
    (`claim_attempt`) and settled after (`settle_attempt`).

    A claimed answer counts as a wrong one until it is settled as right, so answers checked at
    the same time (several requests, several portal processes) can never add up to more guesses
    than the lockout allows: the claim that reaches the limit locks the link, and every claim
    after it is refused."""

    recipient_id: int
    admitted: bool  # False: the link is locked; nothing may be compared
    locked_until: datetime | None  # refused: the lock in force; admitted: the lock it set
    lock_seconds: int = 0  # admitted: the length of the lock it set (0: none)


@dataclass(frozen=True, repr=False)
class OtpState:
    """The secret of the last one-time code sent for a link, and when it was sent."""

    secret: bytes
    sent_at: datetime

    def __repr__(self) -> str:
        return f"OtpState(sent_at={self.sent_at.isoformat()})"


@dataclass(frozen=True)
class ReplyRecord:
    id: str
    message_id: str
    recipient_id: int
    conversation: int
    created_at: datetime
    sent_at: datetime | None
    size: int
    refused_at: datetime | None = None  # the MTA refused it for good: retried only on request


@dataclass(frozen=True)
class ClaimRecord:
    """A visitor's claim to be `address` on a shared download link (a /d/ link of a direct
    copy): one browser session, one address. It holds its own one-time code and its own count
    of wrong answers, so what one claimant does never locks another out of the same link."""

    id: int
    attachment_id: str
    address: str
    recipient_id: int | None  # None: the address is not a direct recipient of the message
    locked_until: datetime | None


@dataclass(frozen=True)
class ClaimAttempt:
    """One answer on a claim, counted (as wrong until it proves right) before it is compared:
    `Attempt`'s rule, per claim. `compare` is False when the answer is admitted and counted but
    has nothing to be compared against: an account answer whose claim could get no share of
    its address's hourly budget (`ClaimStore.claim_answer`)."""

    claim_id: int
    admitted: bool
    locked_until: datetime | None
    lock_seconds: int = 0
    compare: bool = True


@dataclass(frozen=True)
class SignInAttempt:
    """A sender's sign-in, claimed against the account's lockout before the password and code
    are compared (`claim_sign_in`), settled after (`settle_sign_in`): the same rule as a link's
    `Attempt`. An address without an active sender account is counted and locked alike, on
    a row of its own named by `tag` (no account is made, and its address is not stored); its
    sign-in fails on the comparison."""

    address: str
    admitted: bool
    locked_until: datetime | None
    counted: bool = False  # a row took the claim: settle it
    tag: str | None = None  # the claim counted on `sign_in_counts` (no sender account)


@dataclass(frozen=True)
class SentPage:
    """One page of a sender's sent items, newest first, and how many match in all."""

    messages: list[MessageRecord]
    total: int


@dataclass(frozen=True)
class ReplyUsage:
    """Replies written since a moment: by one link, and by its address over all its links."""

    link_count: int
    link_bytes: int
    recipient_count: int
    recipient_bytes: int


@dataclass(frozen=True)
class StoredKey:
    """A recipient's public key or certificate the organization imported (`zivmilter keys`):
    stored as given, judged again at every use (keys/judge.py)."""

    ident: str  # OpenPGP fingerprint (upper-case hex) or S/MIME certificate serial (hex)
    kind: str  # "openpgp" or "smime" (core.keys.KeyKind values)
    addresses: tuple[str, ...]  # normalized; the ones it was imported for
    material: bytes = field(repr=False)  # OpenPGP certificate (binary) or X.509 DER
    imported_at: datetime | None = None


@dataclass(frozen=True, repr=False)
class ContactEntry:
    """One contact-book entry, for `zivmilter contacts list` (the number decrypted)."""

    address: str
    sms: str | None
    access_code: bool
    used_at: datetime | None
    language: str | None = None  # chosen in the portal (issue 25)

    def __repr__(self) -> str:
        return f"ContactEntry(address={self.address!r})"


@dataclass(frozen=True)
class AttachmentRecord:
    """A large attachment of a direct-delivered message, kept for download (SPEC 5).

    It has a data key of its own and outlives the message's revocation and expiry: those end
    the notification links, and a direct copy can be neither revoked nor expired (SPEC 8)."""

    id: str
    message: MessageRecord
    filename: str | None  # None when the content is gone (see `available`)
    content_type: str
    size: int
    created_at: datetime
    # False when its content is gone: sealed under its message's key (stored by a zivmilter
    # before schema 6), it went with that key when the message was revoked.
    available: bool = True


@dataclass(frozen=True, repr=False)
class PartRecord:
    """A large attachment of a stored message, kept apart at save (`NewMessage.parts`)."""

    index: int
    filename: str
    content_type: str
    size: int

    def __repr__(self) -> str:
        return f"PartRecord(index={self.index}, size={self.size})"


@dataclass(frozen=True, repr=False)
class SavedAttachment:
    """The attachment's id and its download token (the store keeps only the token's hash)."""

    id: str
    token: str

    def __repr__(self) -> str:
        return f"SavedAttachment(id={self.id!r})"


def checked_recipient(r: NewRecipient) -> NewRecipient:
    """Validate a recipient and normalize its address (a caller's bug raises ValueError)."""
    if r.delivery not in _DELIVERIES:
        raise ValueError(f"{r.address}: delivery {r.delivery!r}")
    if r.verification is not None and r.verification not in _VERIFICATIONS:
        raise ValueError(f"{r.address}: verification {r.verification!r}")
    if r.delivery == "notification" and r.verification is None:
        raise ValueError(f"{r.address}: a notification recipient needs a verification kind")
    if r.delivery == "direct" and (r.verification or r.phone or r.access_code):
        raise ValueError(f"{r.address}: a direct recipient has no verification")
    if r.phone is not None and r.verification != "sms":
        raise ValueError(f"{r.address}: a phone number without sms verification")
    if r.access_code is not None and r.verification != "access_code":
        raise ValueError(f"{r.address}: an access code without access-code verification")
    address = normalize_address(r.address)
    return r if address == r.address else replace(r, address=address)


def address_key(address: str) -> str | None:
    """The normalized address; None when it is none (a lookup then finds nothing)."""
    try:
        return normalize_address(address)
    except MessageError:
        return None


@dataclass(frozen=True)
class KeyUsage:
    """What depends on which key-encryption key (`zivmilter status --keys`): ids in hex."""

    current: str  # the id of store.key_file's KEK
    ring: tuple[str, ...]  # every KEK the store was opened with, the current one first
    # kind ("message keys", ...) -> KEK id -> values; '' = a KEK not in the ring, or none named
    counts: Mapping[str, Mapping[str, int]]
    # carried pepper's KEK id -> the live access-code hashes naming it (store/peppers.py:
    # maintenance prunes one no hash names); hashes peppered before key ids name none, and
    # keep every carried pepper
    peppers: Mapping[str, int] = field(default_factory=dict)
    peppered_without_id: int = 0

    def depending_on_others(self) -> int:
        """Values not under the current KEK: 0 when every previous key file can be retired."""
        return sum(n for per in self.counts.values() for k, n in per.items() if k != self.current)
