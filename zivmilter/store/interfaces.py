"""What callers need from a store, one small Protocol per aggregate, and `Store`, their union.

Each caller is typed to the narrowest one it uses (the gateway: `GatewayStore`; the live facts:
`FactsStore`; the account commands: `AccountStore`), so a new backend (PostgreSQL) and a test fake
see at a glance what a caller relies on. Every change a method makes is one transaction; a
check-then-act (attempt counters, one-time codes, the last link of a message) is checked and set
in that same transaction, so it holds when several processes share one database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO, Protocol

from zivmilter import defaults
from zivmilter.core.facts import Contact
from zivmilter.store.records import (
    Account,
    AccountKind,
    AttachmentRecord,
    Attempt,
    AuditEvent,
    ClaimAttempt,
    ClaimRecord,
    ContactEntry,
    Handover,
    KeyUsage,
    LinkState,
    LinkView,
    MessageRecord,
    NewMessage,
    OtpState,
    PartRecord,
    RecipientRecord,
    ReplyRecord,
    ReplyUsage,
    SavedAttachment,
    SavedMessage,
    SentPage,
    SignInAttempt,
    StoredKey,
)


class MessageStore(Protocol):
    """Messages, their recipients and links, with the portal's verification state of a link."""

    def save_message(self, message: NewMessage) -> SavedMessage: ...
    def discard(self, message_id: str) -> None: ...
    def open_content(self, message_id: str) -> BinaryIO | None: ...
    def part(self, message_id: str, index: int) -> PartRecord | None: ...
    def open_part(self, message_id: str, index: int) -> BinaryIO | None: ...
    def message(self, message_id: str) -> MessageRecord | None: ...
    def find_messages(self, ref: str) -> list[MessageRecord]: ...
    def find_recipient_by_token(self, token: str) -> RecipientRecord | None: ...
    def recipient(self, recipient_id: int) -> RecipientRecord | None: ...
    def recipients(self, message_id: str) -> list[RecipientRecord]: ...
    def access_code_matches(self, stored_hash: str | None, code: str) -> bool: ...
    def mark_notified(self, message_id: str, address: str) -> None: ...
    def mark_opened(self, recipient_id: int) -> bool: ...
    def revoke(self, message_id: str, reason: str = "") -> bool: ...
    def revoke_recipient(self, message_id: str, address: str, reason: str = "") -> bool: ...
    def purge_expired(self, reply_grace: float = defaults.UNSENT_REPLY_GRACE) -> int: ...
    def portal_view(self, message_id: str) -> bytes | None: ...
    def save_portal_view(self, message_id: str, view: bytes) -> None: ...
    # a link's verification state (the portal decides lockouts and rate limits, passed in)
    def link_state(self, recipient_id: int) -> LinkState | None: ...
    def link_view(self, recipient_id: int, *, with_view: bool = False) -> LinkView | None:
        """`recipient`, `link_state`, `session_generation` and the contact book's language of
        its address, and `with_view` its message's `portal_view`, in one read (one snapshot);
        None for no such recipient."""
        ...

    def claim_attempt(
        self, recipient_id: int, lockout: Callable[[int, int], float | None], detail: str = ""
    ) -> Attempt: ...
    def settle_attempt(self, attempt: Attempt, ok: bool, detail: str = "") -> datetime | None: ...
    def record_verified(self, recipient_id: int, detail: str = "") -> None: ...
    def claim_otp(
        self, recipient_id: int, secret: bytes, min_interval: float, max_sends: int
    ) -> float: ...
    def otp(self, recipient_id: int) -> OtpState | None: ...
    def consume_otp(
        self, recipient_id: int, valid: Callable[[bytes, datetime], bool], detail: str = ""
    ) -> bool: ...
    def clear_otp(self, recipient_id: int) -> None: ...
    # portal sessions: a pass is good while the generation it was issued under is current
    def session_generation(self, recipient_id: int) -> int | None:
        """The link's counter plus that of the account of its address (disabling an account
        bumps it: `AccountStore.set_account_active`); None for no such recipient."""
        ...

    def end_sessions(self, recipient_id: int, reason: str = "") -> None: ...


class HandoverStore(Protocol):
    """What a client's retry of a tempfailed message needs: the stored message and links of the
    first try, and which copies the MTA already took (so none is handed over twice)."""

    def remember_handover(
        self, message_id: str, retry_key: str, tokens: dict[str, str]
    ) -> None: ...
    def find_handover(self, retry_key: str, window: float) -> Handover | None: ...
    def mark_handed(self, message_id: str, copy: str) -> None: ...
    def end_handover(self, message_id: str) -> None: ...


class AttachmentStore(Protocol):
    """Large attachments of direct deliveries, kept for download (SPEC 5)."""

    def save_attachment(
        self,
        message_id: str,
        filename: str,
        content_type: str,
        content: BinaryIO | bytes | str | os.PathLike[str],
        handover: str | None = None,
    ) -> SavedAttachment:
        """Keep a large attachment of a stored message; `handover`: the caller's key for it
        in the message's handover, under which a client's retry finds it again (with its
        token: `Handover.attachments`) until the handover ends. None: not remembered."""
        ...

    def find_attachment_by_token(self, token: str) -> AttachmentRecord | None: ...
    def attachment(self, attachment_id: str) -> AttachmentRecord | None: ...
    def open_attachment(self, attachment_id: str) -> BinaryIO | None: ...


class ClaimStore(Protocol):
    """Claims on shared download links (/d/): a visitor says which address they are, and that
    claim, not the address, carries the one-time code and the lockout. What one address may
    get in an hour over all its claims (codes, account answer rounds) is capped in the same
    transactions (`per_hour`), so that many claims add no guesses and no flood of mail."""

    def open_claim(self, attachment_id: str, address: str, recipient_id: int | None) -> int: ...
    def claim(self, claim_id: int) -> ClaimRecord | None: ...
    def issue_claim_code(
        self, claim_id: int, secret: bytes, min_interval: float, max_sends: int, per_hour: int
    ) -> float:
        """0.0: `secret` stored as the claim's code (send it); else the seconds to wait
        (`inf`: none left for this claim, or for its address this hour)."""
        ...

    def claim_code(self, claim_id: int) -> OtpState | None: ...
    def drop_claim_code(self, claim_id: int) -> None: ...
    def claim_answer(
        self,
        claim_id: int,
        lockout: Callable[[int, int], float | None],
        *,
        funded: bool,
        per_hour: int,
        detail: str = "",
    ) -> ClaimAttempt: ...
    def settle_claim_answer(
        self, attempt: ClaimAttempt, ok: bool, detail: str = ""
    ) -> datetime | None: ...
    def consume_claim_code(
        self, claim_id: int, valid: Callable[[bytes, datetime], bool]
    ) -> bool: ...


class ReplyStore(Protocol):
    """Secure replies written in the portal, until the MTA has taken them."""

    def save_reply(self, recipient_id: int, content: bytes) -> str: ...
    def mark_reply_sent(self, reply_id: str, detail: str = "") -> None: ...
    def mark_reply_undeliverable(self, reply_id: str, detail: str) -> None: ...
    def replies(self, recipient_id: int) -> list[ReplyRecord]: ...
    def unsent_replies(
        self, older_than: float = 0.0, *, refused: bool = False, message_id: str | None = None
    ) -> list[ReplyRecord]: ...
    def open_reply(self, reply_id: str) -> BinaryIO | None: ...
    def reply_usage(self, recipient_id: int, since: float) -> ReplyUsage:
        """Replies (number, plaintext bytes) written at or after `since` by this link and by
        its address over all its links: what the portal's quotas count."""
        ...

    def free_bytes(self) -> int:
        """Bytes free (to this process) on the file system that holds the store's contents."""
        ...


class AccountStore(Protocol):
    """Sender and recipient accounts, with their authenticator secrets."""

    def has_account(self, address: str) -> bool: ...
    def account(self, address: str) -> Account | None: ...
    def accounts(self) -> list[Account]: ...
    def add_account(
        self,
        address: str,
        kind: AccountKind,
        password_hash: str | None = None,
        totp_secret: bytes | None = None,
    ) -> None:
        """Create, or replace (a reset: its portal sessions end, as at a switch-off)."""
        ...

    def set_account_active(self, address: str, active: bool) -> bool:
        """Switching an account off also ends its portal sessions (its session generation)."""
        ...

    def end_account_sessions(self, address: str, reason: str = "") -> bool:
        """End every portal session of the account (its session generation moves on: the
        sender's `/sent/` sessions and the address's link sessions); False: no such account."""
        ...

    def totp_secret(self, address: str) -> bytes | None: ...
    def enrol_totp(self, address: str, secret: bytes) -> bool: ...
    def use_totp_step(self, address: str, step: int) -> bool: ...


class SenderStore(Protocol):
    """The sender's side of the portal (issue 19): enrolment invitations, sign-in lockout,
    sent items, expiry and read receipts. Revocation is `MessageStore.revoke[_recipient]`."""

    def add_invite(self, address: str, lifetime: float) -> str | None:
        """A one-time enrolment token for an active sender account (None: there is none);
        earlier unused invitations of the address end. Only the token's digest is kept."""
        ...

    def invite_address(self, token_hash: str) -> str | None:
        """The address an unused, unexpired invitation enrols, while its account is an active
        sender account."""
        ...

    def redeem_invite(
        self, token_hash: str, password_hash: str, totp_secret: bytes, totp_step: int
    ) -> str | None:
        """Use the invitation (checked and spent in one transaction): set the account's
        password and authenticator (the confirming code's step counts as used) and clear its
        lockout. The address, or None when the invitation no longer holds."""
        ...

    def claim_sign_in(
        self, address: str, lockout: Callable[[int, int], float | None], detail: str = ""
    ) -> SignInAttempt: ...
    def settle_sign_in(self, attempt: SignInAttempt, ok: bool) -> datetime | None: ...
    def prune_sign_in_counts(self, keep: float = defaults.SIGN_IN_COUNT_KEEP_SECONDS) -> int:
        """Forget the sign-in counters of addresses without a sender account whose last wrong
        sign-in is `keep` seconds old and whose lock has passed (maintenance); how many."""
        ...

    def sent_messages(
        self, senders: Sequence[str], query: str = "", offset: int = 0, limit: int = 20
    ) -> SentPage:
        """Messages by these senders, newest first; `query` (case-insensitive) matches the
        subject or a recipient's address."""
        ...

    def set_expiry(self, message_id: str, expires_at: datetime, reason: str = "") -> bool:
        """Set or change when a message expires; False when it is revoked, expired already
        (before the purge took its key) or has no open notification link (a direct delivery
        cannot expire, SPEC 8)."""
        ...

    def claim_read_receipt(self, recipient_id: int) -> bool:
        """True once per recipient (the first caller): its read receipt is to be sent."""
        ...


class ContactBook(Protocol):
    """The organization's contact book: what recipients used successfully (SPEC 8)."""

    def contact(self, address: str) -> Contact | None: ...
    def contacts(self) -> list[ContactEntry]: ...
    def remember_contact(
        self, address: str, sms: str | None = None, access_code_hash: str | None = None
    ) -> None: ...
    def remember_language(self, address: str, language: str) -> None:
        """The language the recipient chose in the portal: the next notification's (issue 25).
        Forgotten with the rest of the entry (`forget_contact`)."""
        ...

    def forget_contact(self, address: str) -> bool: ...


class TrustedDevices(Protocol):
    """Browsers a recipient asked to remember after an SMS or emailed code (issue 25): a digest
    of each browser's token and the one address it opens links of, so that they can be listed
    and ended (`zivmilter contacts list|forget`)."""

    def remember_device(self, address: str, digest: str, expires_at: float) -> None: ...
    def use_device(self, address: str, digest: str, message_id: str | None = None) -> bool:
        """True when `digest` is a live browser of `address` (then audited as used)."""
        ...

    def devices(self) -> dict[str, int]:
        """Live browsers per address."""
        ...

    def forget_devices(self, address: str) -> int:
        """End them all for `address`: how many were live."""
        ...


class RecipientKeys(Protocol):
    """Recipients' public keys the organization imported (issue 26, `zivmilter keys`); the
    key store source of keys/keystore.py reads them."""

    def import_recipient_key(self, key: StoredKey) -> bool:
        """Store (or replace, by ident) a key for its addresses: True when it was new."""
        ...

    def recipient_keys(self, address: str | None = None) -> list[StoredKey]:
        """All keys (by ident), or those imported for `address`."""
        ...

    def recipient_key(self, ident: str) -> StoredKey | None: ...
    def remove_recipient_key(self, ident: str) -> bool: ...


class IddList(Protocol):
    """Domains an admin listed as having inbound direct delivery (SPEC 4, rule 1)."""

    def idd_domains(self) -> list[str]: ...
    def set_idd_domain(self, domain: str, enabled: bool) -> bool: ...


class AuditLog(Protocol):
    """The audit log: it outlives what it describes."""

    def record_event(
        self,
        event: str,
        message_id: str | None = None,
        recipient: str | None = None,
        detail: str = "",
    ) -> None: ...
    def events(self, message_id: str) -> list[AuditEvent]: ...
    def export_events(
        self, since: datetime | None = None, message_id: str | None = None
    ) -> Iterator[AuditEvent]: ...


class Housekeeping(Protocol):
    """What `zivmilter maintenance` runs besides expiry: blob files a crash left behind, and
    the erasure of what revocations destroyed; and the lock that makes it one run at a time."""

    def housekeeping_lock(self) -> AbstractContextManager[bool]:
        """Hold the store's housekeeping lock while the block runs: True when this handle got
        it, so that no other maintenance run, in this process, on this node or another, gets it
        until the block ends; False at once when another run holds it (never waits: that run
        does the work). Maintenance hands unsent replies over inside it, so two runs at once
        never hand one reply over twice (PostgreSQL: pg_try_advisory_lock on a session of its
        own; SQLite: flock on a lock file in the store folder)."""
        ...

    def sweep_orphans(self, older_than: float = 3600.0) -> int: ...
    def finish_erasure(self, wait: float | None = None) -> bool:
        """Make what revocations destroyed unreadable on the disk too (for SQLite: fold back
        and truncate its write-ahead log); False while a reader still holds the old pages
        (then the next checkpoint, or maintenance, finishes it)."""
        ...


class KeyRotation(Protocol):
    """Key rotation (`zivmilter rekey`, `status --keys`; store/rekey.py): the store is opened
    with a key ring, the current KEK and the previous ones it still reads."""

    def key_usage(self) -> KeyUsage:
        """What depends on which KEK of the ring."""
        ...

    def rekey_batch(self, limit: int) -> int:
        """Rewrap (or re-seal) up to `limit` values not under the current KEK, in one
        transaction; how many, 0 when nothing is left to rewrite. Safe while others write."""
        ...

    # After a rotation the previous keys' peppers are carried over (store/peppers.py) until no
    # access-code hash names them any more.
    def prove_access_code(
        self, recipient_id: int, stored_hash: str | None, code: str
    ) -> str | None:
        """The hash `code` proves to be its own: `stored_hash` (the recipient's), or None when
        the code does not match it (like `access_code_matches`). A hash made with a previous
        KEK's pepper is made again with the current one, and the new one put in place of the
        old wherever the recipient's address holds it (their rows, their contact-book entry;
        a compare-and-set on the old value, so a change meanwhile stays): that one is
        returned, what the contact book should remember."""
        ...

    def prune_peppers(self, grace: float = defaults.PEPPER_PRUNE_GRACE) -> list[str]:
        """Let go of the carried peppers no live access-code hash has named for `grace`
        seconds (maintenance: marked by one run, pruned by a later one); their key ids."""
        ...


class Store(
    KeyRotation,
    MessageStore,
    HandoverStore,
    AttachmentStore,
    ClaimStore,
    ReplyStore,
    AccountStore,
    SenderStore,
    ContactBook,
    TrustedDevices,
    IddList,
    RecipientKeys,
    AuditLog,
    Housekeeping,
    Protocol,
):
    """All of it, for those who need all (the portal, the maintenance and portal commands)."""

    def close(self) -> None: ...

    def request_scope(self) -> AbstractContextManager[None]:
        """The calls this thread makes inside the block share one database connection (the
        portal runs each request's store work in one): PostgreSQL takes it from the pool at the
        first call and returns it when the block ends, where each call took its own; SQLite
        has one connection anyway. Every call still reads the database as it is then: only a
        connection is held, nothing read."""
        ...


# -- what one caller uses, named for it ----------------------------------------------------------


class GatewayStore(MessageStore, HandoverStore, AttachmentStore, AccountStore, Protocol):
    """The end-of-message use case: it saves (or discards) a message and its large attachments,
    recognizes a client's retry, and reads sender accounts when it is given none of its own."""


class FactsStore(AccountStore, ContactBook, IddList, Protocol):
    """The milter's live facts: accounts, the contact book and the IDD list."""
