"""The portal's stateless credentials: signed cookies ("passes"), CSRF tokens, sealed form values.

Pure: keys in, strings out, no I/O. The keys are derived from the store's KEK with HKDF, so every
portal instance that can read the store agrees on them and there is no extra secret file; the
app (app.py) sets and reads the cookies. A pass names what it opens (one recipient's link or one
large attachment), how far its holder got, until when, and the session generation it was issued
under: the store keeps that counter, and signing out or disabling an account moves it on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from zivmilter import crypto
from zivmilter.errors import StoreError

_VERSION = "2"  # 2: with the session generation


@dataclass(frozen=True, repr=False)
class PortalKeys:
    cookie: bytes  # HMAC-SHA256 of pass cookies
    csrf: bytes  # HMAC-SHA256 of CSRF tokens
    seal: bytes  # AES-256-GCM of values the portal hands to the browser to get back
    enrol: bytes  # HMAC-SHA256 that derives an enrolment's authenticator secret
    device: bytes  # HMAC-SHA256 of trusted-device cookies and their names

    @classmethod
    def from_kek(cls, raw_kek: bytes) -> PortalKeys:
        return cls(
            _hkdf(raw_kek, b"zivmilter/portal/cookie/v1"),
            _hkdf(raw_kek, b"zivmilter/portal/csrf/v1"),
            _hkdf(raw_kek, b"zivmilter/portal/seal/v1"),
            _hkdf(raw_kek, b"zivmilter/portal/enrol/v1"),
            _hkdf(raw_kek, b"zivmilter/portal/device/v1"),
        )

    def __repr__(self) -> str:
        return "PortalKeys(<secret>)"


class Stage(IntEnum):
    LINK = 0  # opened the personal link (had the token)
    ENROL = 1  # account password correct, authenticator not yet enrolled
    VERIFIED = 2  # proved who they are: may read, download and reply


@dataclass(frozen=True)
class Pass:
    """What a cookie proves. `scope` is "r<recipient id>" or "a<attachment id>"; `who` is the
    recipient id that verified (for attachments, where the visitor says who they are); `gen` the
    session generation of the recipient it belongs to (`subject`) when it was issued."""

    scope: str
    stage: Stage
    expires: int
    nonce: str
    who: int = 0
    gen: int = 0

    @classmethod
    def new(
        cls, scope: str, stage: Stage, now: float, lifetime: int, who: int = 0, gen: int = 0
    ) -> Pass:
        return cls(scope, stage, int(now) + lifetime, secrets.token_urlsafe(12), who, gen)

    @property
    def subject(self) -> int:
        """The recipient whose sessions this pass is one of (0: nobody's yet)."""
        return subject_of(self.scope, self.who)


def subject_of(scope: str, who: int) -> int:
    if scope.startswith("r") and scope[1:].isdigit():
        return int(scope[1:])
    return max(who, 0)


def cookie_name(scope: str) -> str:
    return "zv_" + scope


def encode_pass(keys: PortalKeys, p: Pass) -> str:
    fields = (p.scope, str(int(p.stage)), str(p.who), str(p.expires), p.nonce, str(p.gen))
    payload = "|".join((_VERSION, *fields))
    raw = payload.encode("ascii")
    return _b64(raw) + "." + _b64(hmac.new(keys.cookie, raw, hashlib.sha256).digest())


def decode_pass(keys: PortalKeys, value: str | None, scope: str, now: float) -> Pass | None:
    """The pass in a cookie value if it is genuine, for `scope`, and not expired; else None."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    try:
        raw, got = _unb64(body), _unb64(mac)
    except ValueError:
        return None
    if not hmac.compare_digest(got, hmac.new(keys.cookie, raw, hashlib.sha256).digest()):
        return None
    try:
        version, got_scope, stage, who, expires, nonce, gen = raw.decode("ascii").split("|")
        p = Pass(got_scope, Stage(int(stage)), int(expires), nonce, int(who), int(gen))
    except ValueError:
        return None
    if version != _VERSION or p.scope != scope or p.expires <= now:
        return None
    return p


def csrf_token(keys: PortalKeys, p: Pass, form: str) -> str:
    """A token for one form of one pass: it changes with every new cookie."""
    msg = f"{p.scope}|{p.nonce}|{form}".encode()
    return _b64(hmac.new(keys.csrf, msg, hashlib.sha256).digest())


def csrf_ok(keys: PortalKeys, p: Pass, form: str, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode("ascii", "replace"), csrf_token(keys, p, form).encode())


def enrolment_secret(keys: PortalKeys, p: Pass, size: int) -> bytes:
    """The authenticator secret one enrolment offers: the same for as long as its pass lasts,
    so that reloading the page (or switching its language) does not change the QR code the
    recipient has already scanned; a new sign-in (a new pass) gets a new one."""
    if size > hashlib.sha256().digest_size:
        raise ValueError("an enrolment secret is at most 32 bytes")
    info = f"{p.scope}|{p.nonce}".encode("ascii")
    return hmac.new(keys.enrol, info, hashlib.sha256).digest()[:size]


# --- trusted devices (issue 25) -----------------------------------------------------------------
# A browser the recipient asked to remember after an SMS or emailed code holds a random token in
# a cookie of its own per address; the cookie's MAC binds the token to that address and its
# expiry, and the store keeps only the token's digest (so `contacts forget` can end it).

_DEVICE_VERSION = "d1"


def device_cookie_name(keys: PortalKeys, address: str) -> str:
    """One cookie per remembered address, named without showing the address."""
    mac = hmac.new(keys.device, b"name|" + address.lower().encode(), hashlib.sha256).digest()
    return "zv_d" + _b64(mac[:12])


def new_device_token() -> str:
    return secrets.token_urlsafe(32)


def device_digest(token: str) -> str:
    """What the store keeps of a device token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def encode_device(keys: PortalKeys, address: str, token: str, expires: int) -> str:
    payload = f"{_DEVICE_VERSION}|{token}|{expires}"
    return payload + "." + _b64(_device_mac(keys, payload, address))


def decode_device(keys: PortalKeys, value: str | None, address: str, now: float) -> str | None:
    """The token in a device cookie if it is genuine, for `address` and not expired."""
    if not value or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    try:
        got = _unb64(mac)
    except ValueError:
        return None
    if not hmac.compare_digest(got, _device_mac(keys, payload, address)):
        return None
    version, _, rest = payload.partition("|")
    token, _, expires = rest.partition("|")
    if version != _DEVICE_VERSION or not expires.isdigit() or int(expires) <= now or not token:
        return None
    return token


def _device_mac(keys: PortalKeys, payload: str, address: str) -> bytes:
    msg = f"{payload}|{address.lower()}".encode("utf-8", "replace")
    return hmac.new(keys.device, msg, hashlib.sha256).digest()


def seal_value(keys: PortalKeys, data: bytes, context: str) -> str:
    """Encrypt a value for a hidden form field; only this portal can read it back unchanged."""
    return _b64(crypto.seal(keys.seal, data, context))


def unseal_value(keys: PortalKeys, text: str, context: str) -> bytes | None:
    try:
        return crypto.unseal(keys.seal, _unb64(text), context)
    except (ValueError, StoreError):
        return None


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None
