"""The portal's pure decisions: lockout growth, one-time and authenticator codes, access codes,
passwords, signed passes and CSRF tokens (zivmilter/portal/verify.py, security.py, accounts.py)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from zivmilter import crypto, defaults
from zivmilter.portal import accounts, verify
from zivmilter.portal.security import (
    Pass,
    PortalKeys,
    Stage,
    csrf_ok,
    csrf_token,
    decode_pass,
    encode_pass,
    seal_value,
    unseal_value,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("streak", "lockouts", "expected"),
    [
        (1, 0, None),
        (defaults.LOCKOUT_AFTER - 1, 0, None),
        (defaults.LOCKOUT_AFTER, 0, defaults.LOCKOUT_BASE_SECONDS),
        (defaults.LOCKOUT_AFTER, 1, 2 * defaults.LOCKOUT_BASE_SECONDS),
        (defaults.LOCKOUT_AFTER, 3, 8 * defaults.LOCKOUT_BASE_SECONDS),
        (defaults.LOCKOUT_AFTER, 40, defaults.LOCKOUT_MAX_SECONDS),
    ],
)
def test_lockout_grows_with_each_lockout_up_to_a_cap(
    streak: int, lockouts: int, expected: int | None
) -> None:
    got = verify.lockout_seconds(streak, lockouts)
    assert got == (None if expected is None else float(expected))


def test_locked_counts_down() -> None:
    until = datetime.fromtimestamp(NOW + 90, UTC)
    assert verify.locked(until, NOW) == 90
    assert verify.locked(until, NOW + 91) == 0
    assert verify.locked(None, NOW) == 0


def test_one_time_code_is_valid_only_for_its_validity() -> None:
    secret = verify.new_otp_secret()
    sent = datetime.fromtimestamp(NOW, UTC)
    code = verify.otp_code(secret, sent)
    assert len(code) == defaults.OTP_DIGITS and code.isdigit()
    assert verify.otp_valid(secret, sent, code, NOW + 1)
    assert verify.otp_valid(secret, sent, code[:3] + " " + code[3:], NOW + 1)  # typed in groups
    assert verify.otp_valid(secret, sent, code, NOW + defaults.OTP_VALIDITY_SECONDS)
    assert not verify.otp_valid(secret, sent, code, NOW + defaults.OTP_VALIDITY_SECONDS + 1)
    assert not verify.otp_valid(secret, sent, code, NOW - 5)  # from the future: no
    wrong = f"{(int(code) + 1) % 10**defaults.OTP_DIGITS:0{defaults.OTP_DIGITS}d}"
    assert not verify.otp_valid(secret, sent, wrong, NOW + 1)
    assert not verify.otp_valid(secret, sent, "", NOW + 1)
    assert not verify.otp_valid(secret, sent, "١٢٣٤٥٦", NOW + 1)  # non-ASCII digits
    # A new secret per code: an older code is worthless once a new one was sent.
    assert not verify.otp_valid(verify.new_otp_secret(), sent, code, NOW + 1)


def test_authenticator_codes_accept_one_step_of_drift() -> None:
    secret = verify.new_totp_secret()
    app = TOTP(secret, 6, SHA1(), 30, enforce_key_length=False)  # what a phone computes
    step = defaults.TOTP_STEP_SECONDS
    assert verify.totp_valid(secret, app.generate(int(NOW)).decode(), NOW)
    assert verify.totp_valid(secret, app.generate(int(NOW) - step).decode(), NOW)
    assert verify.totp_valid(secret, app.generate(int(NOW) + step).decode(), NOW)
    assert not verify.totp_valid(secret, app.generate(int(NOW) - 3 * step).decode(), NOW)
    uri = verify.provisioning_uri(secret, "erin@example.net", "Hospital")
    assert uri.startswith("otpauth://totp/Hospital:erin%40example.net?")
    assert base64.b32encode(secret).decode().rstrip("=") in uri


@pytest.mark.real_hash_cost
def test_access_code_compared_against_its_hash() -> None:
    stored = crypto.hash_secret("tulip-42")
    assert verify.access_code_valid(stored, "tulip-42")
    assert verify.access_code_valid(stored, " tulip-42 ")
    assert not verify.access_code_valid(stored, "tulip-43")
    assert not verify.access_code_valid(None, "tulip-42")
    assert not verify.access_code_valid("garbage", "tulip-42")


@pytest.mark.real_hash_cost
def test_passwords_argon2_and_scrypt() -> None:
    hashed = accounts.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert accounts.password_valid(hashed, "correct horse battery")
    assert not accounts.password_valid(hashed, "correct horse battery!")
    assert not accounts.password_valid(None, "x")
    assert not accounts.password_valid("$argon2id$broken", "x")
    legacy = crypto.hash_secret("sender password 1")  # sender accounts may use scrypt
    assert accounts.password_valid(legacy, "sender password 1")
    assert not accounts.password_valid(legacy, "sender password 2")


@pytest.fixture
def keys() -> PortalKeys:
    return PortalKeys.from_kek(os.urandom(32))


def test_pass_round_trip_and_tampering(keys: PortalKeys) -> None:
    p = Pass.new("r7", Stage.VERIFIED, NOW, 3600)
    value = encode_pass(keys, p)
    assert decode_pass(keys, value, "r7", NOW + 10) == p
    assert decode_pass(keys, value, "r8", NOW + 10) is None  # bound to one recipient
    assert decode_pass(keys, value, "r7", NOW + 3600) is None  # expired
    body, mac = value.split(".")
    forged_body = (
        base64.urlsafe_b64encode(base64.urlsafe_b64decode(body + "==").replace(b"|r7|", b"|r8|"))
        .decode()
        .rstrip("=")
    )
    assert decode_pass(keys, f"{forged_body}.{mac}", "r8", NOW) is None
    assert decode_pass(keys, value[:-2] + "AA", "r7", NOW) is None
    assert decode_pass(PortalKeys.from_kek(os.urandom(32)), value, "r7", NOW) is None
    for junk in ("", "x", "a.b.c", "%%%.%%%", None):
        assert decode_pass(keys, junk, "r7", NOW) is None


def test_keys_follow_the_kek() -> None:
    kek = os.urandom(32)
    a, b = PortalKeys.from_kek(kek), PortalKeys.from_kek(kek)
    p = Pass.new("r1", Stage.LINK, NOW, 60)
    assert decode_pass(b, encode_pass(a, p), "r1", NOW) == p  # another instance agrees
    assert len({a.cookie, a.csrf, a.seal}) == 3
    assert "secret" in repr(a) and a.cookie.hex() not in repr(a)


def test_csrf_tokens_are_per_cookie_and_form(keys: PortalKeys) -> None:
    p = Pass.new("r1", Stage.LINK, NOW, 60)
    q = Pass.new("r1", Stage.LINK, NOW, 60)  # another cookie for the same link
    token = csrf_token(keys, p, "verify")
    assert csrf_ok(keys, p, "verify", token)
    assert not csrf_ok(keys, p, "reply", token)
    assert not csrf_ok(keys, q, "verify", token)
    assert not csrf_ok(keys, p, "verify", "")
    assert not csrf_ok(keys, p, "verify", None)
    assert not csrf_ok(keys, p, "verify", "é" + token)


def test_sealed_form_values(keys: PortalKeys) -> None:
    sealed = seal_value(keys, b"secret bytes", "enrol:1:n")
    assert b"secret bytes" not in base64.urlsafe_b64decode(sealed + "==")
    assert unseal_value(keys, sealed, "enrol:1:n") == b"secret bytes"
    assert unseal_value(keys, sealed, "enrol:2:n") is None
    assert unseal_value(keys, "not base64 !", "enrol:1:n") is None
    assert unseal_value(keys, "", "enrol:1:n") is None
