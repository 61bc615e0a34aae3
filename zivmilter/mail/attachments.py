"""Large attachments of direct-delivered copies become secure download links (SPEC 5).

A direct copy goes out as the sender wrote it, except that an attachment above
`policy.large_attachment_bytes` is kept in the encrypted store and replaced by a short text part
with its link `<base_url>/d/<token>`: the portal asks the recipient to sign in or verify their
address before it streams the file. MIME is parsed and written by the `email` package (compat32:
payloads stay encoded until a part is known to be large, so small parts cost nothing).
"""

from __future__ import annotations

import base64
import binascii
import quopri
from collections.abc import Callable
from dataclasses import dataclass
from email import charset
from email.message import Message
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.policy import compat32
from typing import BinaryIO

from zivmilter.core.message import clean_filename
from zivmilter.mail.parts import top_level_type

_WIRE = compat32.clone(linesep="\r\n")
_UTF8_QP = charset.Charset("utf-8")
_UTF8_QP.body_encoding = charset.QP  # readable in the raw message too

#: (filename, content type, decoded bytes) -> download link
SaveFn = Callable[[str, str, bytes], str]


@dataclass(frozen=True)
class Replaced:
    filename: str
    size: int
    link: str


def _decoded_size_estimate(part: Message) -> int:
    payload = part.get_payload()
    if not isinstance(payload, str):
        return 0
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        return len(payload) * 3 // 4
    return len(payload)


def _decode(part: Message) -> bytes:
    payload = part.get_payload()
    assert isinstance(payload, str)
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    raw = payload.encode("ascii", "surrogateescape")
    if cte == "base64":
        try:
            return base64.b64decode(raw)
        except binascii.Error:
            return raw
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _notice(replaced: Replaced) -> MIMEText:
    mb = replaced.size / (1024 * 1024)
    text = (
        f"The attachment {replaced.filename} ({mb:.1f} MB) was too large to send along and is "
        "kept securely for you. Download it here (you will be asked to sign in or to confirm "
        f"your email address):\n\n    {replaced.link}\n\n"
        f"De bijlage {replaced.filename} ({mb:.1f} MB) was te groot om mee te sturen en wordt "
        "beveiligd voor u bewaard. Download hem hier (u logt in of bevestigt uw e-mailadres):"
        f"\n\n    {replaced.link}\n"
    )
    part = MIMEText(text, "plain", _UTF8_QP, policy=_WIRE)  # type: ignore[arg-type]
    del part["MIME-Version"]
    part["Content-Disposition"] = "inline"  # shown in place of the attachment
    return part


def replace_large(
    source: BinaryIO, limit: int, save: SaveFn
) -> tuple[bytes, list[Replaced]] | None:
    """The message with every attachment above `limit` replaced, or None when nothing is that
    large (then the copy goes out byte for byte as it was)."""
    source.seek(0, 2)
    if source.tell() <= limit:  # no part can be larger than the whole message
        return None
    if top_level_type(source) != "multipart":
        return None  # a single part is the message itself, not an attachment: sent as it is
    source.seek(0)
    msg = BytesParser(policy=_WIRE).parse(source)
    replaced: list[Replaced] = []

    def walk(container: Message) -> None:
        parts = container.get_payload()
        if not isinstance(parts, list):
            return
        for i, part in enumerate(parts):
            if part.is_multipart():
                walk(part)
                continue
            if _decoded_size_estimate(part) <= limit:
                continue
            data = _decode(part)
            if len(data) <= limit:
                continue
            name = clean_filename(part.get_filename() or "") or "attachment.bin"
            link = save(name, part.get_content_type(), data)
            r = Replaced(name, len(data), link)
            replaced.append(r)
            parts[i] = _notice(r)

    if msg.is_multipart():
        walk(msg)
    if not replaced:
        return None
    return msg.as_bytes(), replaced
