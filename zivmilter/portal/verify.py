"""How a recipient proves who they are: one-time codes, authenticator codes, passwords, lockout.

Pure apart from the clock the caller passes in: the portal app (app.py) asks these functions and
stores what they decide through the store's portal methods. One-time codes for SMS and email are
TOTP values (`cryptography`'s twofactor module) of a fresh secret per code; authenticator codes
are standard RFC 6238 TOTP; passwords are argon2id (accounts.py hashes them).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from zivmilter import crypto, defaults
from zivmilter.errors import StoreError

OTP_SECRET_BYTES = 20  # RFC 4226 recommends 160 bits


def lockout_seconds(
    streak: int,
    lockouts: int,
    *,
    after: int = defaults.LOCKOUT_AFTER,
    base: int = defaults.LOCKOUT_BASE_SECONDS,
    cap: int = defaults.LOCKOUT_MAX_SECONDS,
) -> float | None:
    """After `streak` wrong answers in a row: lock for how long (None: not yet).

    The lock doubles with every earlier lockout of the same link: 1, 2, 4 ... minutes, up to a day.
    """
    if streak < after:
        return None
    return float(min(cap, base * 2 ** min(lockouts, 32)))


def locked(locked_until: datetime | None, now: float) -> float:
    """Seconds the link stays locked (0: open)."""
    if locked_until is None:
        return 0.0
    return max(0.0, locked_until.timestamp() - now)


# --- one-time codes (SMS, verification email) ---------------------------------------------------


def new_otp_secret() -> bytes:
    return secrets.token_bytes(OTP_SECRET_BYTES)


def _otp(secret: bytes) -> TOTP:
    # One time step as long as the code is valid: the code is the value at the moment it is sent.
    step = defaults.OTP_VALIDITY_SECONDS
    return TOTP(secret, defaults.OTP_DIGITS, SHA1(), step, enforce_key_length=False)


def otp_code(secret: bytes, sent_at: datetime) -> str:
    return _otp(secret).generate(int(sent_at.timestamp())).decode("ascii")


def otp_valid(secret: bytes, sent_at: datetime, code: str, now: float) -> bool:
    """The code sent at `sent_at` is `code`, and it is younger than its validity."""
    age = now - sent_at.timestamp()
    if not 0 <= age <= defaults.OTP_VALIDITY_SECONDS:
        return False
    return _verify(_otp(secret), clean_code(code), int(sent_at.timestamp()))


# --- authenticator (account second factor) -----------------------------------------------------


def new_totp_secret() -> bytes:
    return secrets.token_bytes(OTP_SECRET_BYTES)


def account_totp(secret: bytes) -> TOTP:
    return TOTP(secret, 6, SHA1(), defaults.TOTP_STEP_SECONDS, enforce_key_length=False)


def totp_step(secret: bytes, code: str, now: float) -> int | None:
    """The time step an authenticator code belongs to: now, or a step either side (phone
    clocks drift); None when it matches none. The caller lets each step count once."""
    totp, code = account_totp(secret), clean_code(code)
    step = defaults.TOTP_STEP_SECONDS
    for k in range(-defaults.TOTP_DRIFT_STEPS, defaults.TOTP_DRIFT_STEPS + 1):
        at = int(now) + k * step
        if _verify(totp, code, at):
            return at // step
    return None


def totp_valid(secret: bytes, code: str, now: float) -> bool:
    """An authenticator code for now, or a step either side."""
    return totp_step(secret, code, now) is not None


def provisioning_uri(secret: bytes, address: str, issuer: str) -> str:
    return account_totp(secret).get_provisioning_uri(address, issuer)


# --- access codes and passwords -------------------------------------------------------------------


def access_code_valid(
    stored_hash: str | None, code: str, matches: Callable[[str, str], bool] = crypto.verify_secret
) -> bool:
    """Compare against the scrypt hash (constant time inside `crypto.verify_secret`); `matches`
    is the store's `access_code_matches`, which knows the KEK's pepper."""
    if not stored_hash:
        return False
    try:
        return matches(stored_hash, code.strip())
    except StoreError:
        return False


def clean_code(code: str) -> str:
    """What people type: spaces and dashes between digit groups are not part of the code."""
    return "".join(c for c in code if c not in " -\t")


def _verify(totp: TOTP, code: str, at: int) -> bool:
    if not code.isascii() or not code.isdigit():
        return False
    try:
        totp.verify(code.encode("ascii"), at)  # constant-time comparison inside
    except InvalidToken:
        return False
    return True
