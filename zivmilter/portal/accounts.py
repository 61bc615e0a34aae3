"""Recipient accounts of the guest portal: password (argon2id) plus an authenticator (TOTP).

`zivmilter account add ADDRESS --recipient` (cli/accounts.py) calls
`add_recipient_account`; the authenticator is enrolled at the first sign-in in the portal, where
the recipient scans a QR code (segno: pure Python, no imaging library, SVG output that needs no
inline script or style). Sender accounts are not managed here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from zivmilter import crypto
from zivmilter.core.addresses import normalize_address
from zivmilter.errors import StoreError
from zivmilter.portal import verify
from zivmilter.store import AccountStore

MIN_PASSWORD_LENGTH = 12
_HASHER = PasswordHasher()  # argon2id, the library's current RFC 9106 parameters


@dataclass(frozen=True, repr=False)
class NewRecipientAccount:
    address: str
    password: str | None  # the generated password to hand to the recipient; None if given

    def __repr__(self) -> str:
        return f"NewRecipientAccount(address={self.address!r})"


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_valid(stored_hash: str | None, password: str) -> bool:
    """argon2 hashes (this module) and scrypt hashes (crypto.hash_secret) are both understood."""
    if not stored_hash or not password:
        return False
    if stored_hash.startswith("scrypt$"):
        try:
            return crypto.verify_secret(stored_hash, password)
        except StoreError:
            return False
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def add_recipient_account(
    store: AccountStore, address: str, password: str | None = None
) -> NewRecipientAccount:
    """Create (or reset) a recipient account. Without `password`, one is generated and returned.

    A reset clears the authenticator: the recipient enrols a new one at the next sign-in.
    Raises ValueError for a password shorter than MIN_PASSWORD_LENGTH or an address that has a
    sender account, MessageError for an unusable address.
    """
    key = normalize_address(address)
    existing = store.account(key)
    if existing is not None and existing.kind != "recipient":
        raise ValueError(f"{key} is a {existing.kind} account, not a recipient account")
    generated = None
    if password is None:
        generated = password = secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    store.add_account(key, "recipient", password_hash=hash_password(password), totp_secret=None)
    return NewRecipientAccount(key, generated)


def enrol_authenticator(store: AccountStore, address: str, secret: bytes) -> bool:
    """Keep the authenticator secret the recipient just confirmed, only while the account has
    none (the store checks and sets it at once); False if the account is gone, disabled or has
    an authenticator already. Only an admin's reset (`add_recipient_account`) clears one."""
    return store.enrol_totp(address, secret)


def qr_svg(uri: str) -> str:
    """An inline <svg> of the otpauth:// URI, for the enrolment page."""
    qr = segno.make(uri, error="m")
    return str(qr.svg_inline(scale=5, border=4, dark="#111", light="#fff", omitsize=True))


def enrolment_uri(secret: bytes, address: str, issuer: str) -> str:
    return verify.provisioning_uri(secret, address, issuer)


__all__ = [
    "MIN_PASSWORD_LENGTH",
    "NewRecipientAccount",
    "add_recipient_account",
    "enrol_authenticator",
    "enrolment_uri",
    "hash_password",
    "password_valid",
    "qr_svg",
]
