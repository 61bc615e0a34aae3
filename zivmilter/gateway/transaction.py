"""What the MTA tells the gateway about one message (Transaction) and what the gateway asks the
MTA to change in it (Plan): plain values passed between the milter adapter and the use case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from zivmilter.core.message import utf8_text


def message_id_of(headers: list[tuple[str, str]]) -> str:
    """The Message-ID among header fields as the MTA gave them, as text; "-" without one."""
    for name, value in headers:
        if name.lower() == "message-id":
            return utf8_text(value.strip())
    return "-"


@dataclass
class Transaction:
    """What the MTA told the milter about one message."""

    queue_id: str
    sender: str  # envelope sender as given ("<>" or "" for the null sender)
    recipients: list[str]  # RCPT TO arguments exactly as given (needed for delrcpt)
    headers: list[tuple[str, str]]  # in order, values as the MTA sent them
    message: BinaryIO  # the whole message (header block + body), CRLF line ends
    body_offset: int  # where the body starts in `message`
    client_address: str | None = None
    auth_login: str | None = None
    listener: str | None = None  # the MTA's {daemon_name}: submission rules may differ per listener
    # ESMTP parameters of each RCPT TO (NOTIFY=..., ORCPT=...), by the argument as given
    recipient_params: dict[str, tuple[str, ...]] = field(default_factory=dict)
    helo: str | None = None  # the client's HELO/EHLO name
    mta: str | None = None  # the MTA's `v` macro: "Postfix 3.7.11", Sendmail's "8.17.1"

    @property
    def message_id(self) -> str:
        """The Message-ID as text (raw 8-bit bytes read as UTF-8), for logs and the store."""
        return message_id_of(self.headers)


@dataclass
class Plan:
    """Changes to the current transaction, for the milter adapter to apply as they are."""

    delete_headers: list[tuple[str, int]] = field(default_factory=list)  # (name, 1-based index)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    replace_body: bytes | None = None
    delete_recipients: list[str] = field(default_factory=list)  # raw RCPT forms
    discard: bool = False  # every recipient was handled elsewhere (re-injected or failed)
    summary: str = ""
    # Refuse the whole message: "550 5.7.1 text" or "451 4.7.1 text" (who may submit, SPEC 7).
    reject: str | None = None
    # (name, 1-based index, new value): the Subject without its trigger word (SPEC 6).
    change_headers: list[tuple[str, int, str]] = field(default_factory=list)
    selected: bool = True  # False: not selected for securing, passed as it is (SPEC 6)
