"""Handing a stored secure reply to the MTA, for the portal (as the reply is written) and for
`zivmilter maintenance` (the replies the MTA did not take then).

One rule for both: the MTA's 250 marks the reply sent; a refusal for good (5xx) marks it
undeliverable (not offered again unless asked for); anything else (4xx, no connection) leaves it
unsent, on record, for the next maintenance run. The reply itself is already in the store.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from zivmilter.core.config import ReinjectConfig
from zivmilter.delivery.reinject import Outgoing, Reinjector, SmtpReinjector
from zivmilter.errors import DeliveryError
from zivmilter.store import MessageRecord, ReplyRecord


def reply_reinjector(cfg: ReinjectConfig) -> SmtpReinjector:
    """Where replies are handed over: they come from outside (a recipient's upload), so not to
    the milter-free listener of copies but to `reinject.replies_port`, whose Postfix listener
    runs the site's content filters (postfix/master.cf.zivmilter)."""
    return SmtpReinjector(cfg.host, cfg.replies_port, cfg.timeout)


class ReplyOutbox(Protocol):
    """What a hand-over needs of the store (SqliteStore is one)."""

    def message(self, message_id: str) -> MessageRecord | None: ...
    def unsent_replies(
        self, older_than: float = 0.0, *, refused: bool = False, message_id: str | None = None
    ) -> list[ReplyRecord]: ...
    def open_reply(self, reply_id: str) -> BinaryIO | None: ...
    def mark_reply_sent(self, reply_id: str, detail: str = "") -> None: ...
    def mark_reply_undeliverable(self, reply_id: str, detail: str) -> None: ...
    def record_event(
        self,
        event: str,
        message_id: str | None = None,
        recipient: str | None = None,
        detail: str = "",
    ) -> None: ...


class Handed(enum.Enum):
    SENT = "sent"  # the MTA took it (250)
    LATER = "later"  # not taken now (4xx, no connection): maintenance offers it again
    REFUSED = "refused"  # refused for good (5xx): undeliverable, not offered again


@dataclass(frozen=True)
class HandOver:
    outcome: Handed
    detail: str  # the MTA's answer, or why it did not take the reply


def hand_over_reply(
    store: ReplyOutbox,
    mailer: Reinjector,
    *,
    reply_id: str,
    message_id: str,
    to: str,
    content: bytes,
    sender: str,
    what: str,
    author: str | None = None,
) -> HandOver:
    """Offer the stored reply `reply_id` (to message `message_id`) to the MTA for `to`, and
    record how it went. `sender` is the envelope sender of the portal's mail
    (organization.portal_from); `what` names it in the MTA's errors; `author` (when known) goes
    with a failed hand-over into the audit log."""
    try:
        answers = mailer.send([Outgoing(sender, [to], content, what)])
    except DeliveryError as exc:
        if exc.permanent:  # as it is, it never will be taken: not offered again
            store.mark_reply_undeliverable(reply_id, str(exc))
            return HandOver(Handed.REFUSED, str(exc))
        store.record_event("reply-send-failed", message_id, author, str(exc))
        return HandOver(Handed.LATER, str(exc))
    answer = answers[0] if answers else ""
    store.mark_reply_sent(reply_id, answer)
    return HandOver(Handed.SENT, answer)


@dataclass(frozen=True)
class Refusal:
    """A reply the MTA refused for good in `resend_replies`: the admin is told once."""

    reply_id: str
    to: str
    detail: str


@dataclass(frozen=True)
class Resent:
    sent: int
    failed: int  # still failing: offered again next time
    refused: Sequence[Refusal]


def resend_replies(
    store: ReplyOutbox,
    mailer: Reinjector,
    sender: str,
    *,
    older_than: float,
    retry_refused: bool,
) -> Resent:
    """Offer the MTA again the replies it has not taken that were written `older_than` seconds
    ago or earlier (younger ones may be on their way through the portal right now); those it
    refused for good only with `retry_refused`."""
    sent = failed = 0
    refused: list[Refusal] = []
    for reply in store.unsent_replies(older_than, refused=retry_refused):
        message = store.message(reply.message_id)
        content = store.open_reply(reply.id)
        if message is None or content is None:
            continue  # revoked or expired meanwhile: nothing to deliver
        with content:
            data = content.read()
        result = hand_over_reply(
            store, mailer,
            reply_id=reply.id, message_id=message.id, to=message.sender, content=data,
            sender=sender, what=f"portal reply {reply.id}",
        )  # fmt: skip
        if result.outcome is Handed.SENT:
            sent += 1
        elif result.outcome is Handed.REFUSED:
            refused.append(Refusal(reply.id, message.sender, result.detail))
        else:
            failed += 1
    return Resent(sent, failed, refused)
