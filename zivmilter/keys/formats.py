"""The message encrypted to its recipient's own key, in a format every mail client reads:
PGP/MIME (RFC 3156) through pysequoia, S/MIME 4.0 enveloped data (RFC 8551) through
cryptography's PKCS7EnvelopeBuilder.

Both carry the whole original MIME entity (attachments, HTML), its header fields inside the
encrypted part as protected headers (RFC 9788, `hp="cipher"`): the Subject is read from there
by a client that knows them, while the outer Subject is "..." (or the neutral subject with
`notification.subject: neutral`). Trace fields stay outside; directive headers were removed
before (gateway/spool.py's clean copy).

cryptography 45+ encrypts S/MIME to RSA certificates only, with AES-128-CBC or AES-256-CBC
(EnvelopedData; no AuthEnvelopedData/AES-GCM): AES-256-CBC is used, which every S/MIME client
reads (RFC 8551 2.7: MUST support AES-128-CBC, SHOULD AES-256-CBC and AES-GCM).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from typing import Literal

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from zivmilter.core.header_block import field_name, split_fields
from zivmilter.core.keys import KeyKind, RecipientKey

OBSCURED_SUBJECT = "..."  # what RFC 9788 clients and Autocrypt show for a protected Subject

# Fields that describe the way, not the message: they stay outside only.
_TRACE = frozenset({"received", "return-path", "x-original-to", "delivered-to"})
# Outside, besides the new MIME fields: what the MTA and the recipient's client need to file the
# message (addressing, threading); everything else only inside.
_OUTER = ("From", "Sender", "Reply-To", "To", "Cc", "Date", "Message-ID", "In-Reply-To",
          "References")  # fmt: skip
_LONE_LF = re.compile(rb"(?<!\r)\n")
_B64_LINE = 76


def _crlf(data: bytes) -> bytes:
    return _LONE_LF.sub(b"\r\n", data)


def _split(message: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:  # no body: all header
        head, body = message, b""
    return split_fields(head + b"\r\n"), body


def inner_entity(message: bytes, outer: Sequence[bytes] = ()) -> bytes:
    """The cryptographic payload: the original entity with its header fields protected
    (RFC 9788: every non-trace field inside, the Content-Type marked `hp="cipher"`, and an
    `HP-Outer` field for each field of the outer header, so that a client can tell what was
    obscured outside, the Subject, from what was left as it is)."""
    fields, body = _split(_crlf(message))
    out: list[bytes] = [
        b"HP-Outer: " + f
        for f in outer
        if field_name(f).lower() not in ("mime-version", "content-type")
    ]
    content_type = b'Content-Type: text/plain; charset="us-ascii"'
    for f in fields:
        name = field_name(f).lower()
        if not name or name in _TRACE:
            continue
        if name == "content-type":
            content_type = f.rstrip(b"\r\n")
            continue
        out.append(f if f.endswith(b"\r\n") else f + b"\r\n")
    ct = content_type.rstrip().rstrip(b";")
    out.insert(0, ct + b';\r\n hp="cipher"\r\n')
    return b"".join(out) + b"\r\n" + body


def _outer_fields(message: bytes, subject: str) -> list[bytes]:
    fields, _ = _split(_crlf(message))
    wanted = {n.lower() for n in _OUTER}
    out = [f if f.endswith(b"\r\n") else f + b"\r\n" for f in fields if field_name(f).lower()
           in wanted]  # fmt: skip
    out.append(f"Subject: {subject}\r\n".encode())
    out.append(b"MIME-Version: 1.0\r\n")
    return out


def pgp_mime(message: bytes, keys: Sequence[RecipientKey], subject: str) -> bytes:
    """RFC 3156 multipart/encrypted, the payload encrypted (ASCII-armored) to every key."""
    certs = [pysequoia.Cert.from_bytes(k.material) for k in keys]
    head = _outer_fields(message, subject)
    armored = pysequoia.encrypt(inner_entity(message, head), certs, armor=True)
    boundary = f"=_zm_pgp_{secrets.token_urlsafe(16)}"
    head.append(
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        f' boundary="{boundary}"\r\n'.encode()
    )
    body = (
        b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
        + f"--{boundary}\r\n".encode()
        + b"Content-Type: application/pgp-encrypted\r\n"
        + b"Content-Description: PGP/MIME version identification\r\n\r\n"
        + b"Version: 1\r\n\r\n"
        + f"--{boundary}\r\n".encode()
        + b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        + b"Content-Description: OpenPGP encrypted message\r\n"
        + b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        + _crlf(armored).rstrip(b"\r\n")
        + b"\r\n\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    return b"".join(head) + b"\r\n" + body


def smime_enveloped(message: bytes, keys: Sequence[RecipientKey], subject: str) -> bytes:
    """RFC 8551 application/pkcs7-mime; smime-type=enveloped-data, AES-256-CBC, to every
    certificate."""
    head = _outer_fields(message, subject)
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(inner_entity(message, head))
    for k in keys:
        builder = builder.add_recipient(x509.load_der_x509_certificate(k.material))
    builder = builder.set_content_encryption_algorithm(algorithms.AES256)
    der = builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    b64 = base64.b64encode(der)
    lines = b"\r\n".join(b64[i : i + _B64_LINE] for i in range(0, len(b64), _B64_LINE))
    head += [
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n"
        b' name="smime.p7m"\r\n',
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n',
        b"Content-Transfer-Encoding: base64\r\n",
    ]
    return b"".join(head) + b"\r\n" + lines + b"\r\n"


def outer_subject(mode: Literal["show", "neutral"], neutral: str) -> str:
    return OBSCURED_SUBJECT if mode == "show" else neutral


def recipients_keys(key: RecipientKey, sender_key: RecipientKey | None) -> list[RecipientKey]:
    """The recipient's key, and the sender's own (`encryption.copy_to_sender`) when it is of
    the same kind: one message cannot be both PGP/MIME and S/MIME."""
    if sender_key is None or sender_key.kind is not key.kind or sender_key.ident == key.ident:
        return [key]
    return [key, sender_key]


def encrypt_message(message: bytes, keys: Sequence[RecipientKey], subject: str) -> bytes:
    """The message encrypted to `keys` (the recipient's first; all of one kind)."""
    kinds = {k.kind for k in keys}
    if len(kinds) != 1:
        raise ValueError("keys of one kind only")
    for k in keys:
        if not k.material:  # a key pinned in a facts file: for explain, not for mail
            raise ValueError(f"{k.kind.value} key {k.ident} of {k.address} has no key material")
    if KeyKind.OPENPGP in kinds:
        return pgp_mime(message, keys, subject)
    return smime_enveloped(message, keys, subject)
