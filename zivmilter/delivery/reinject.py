"""Hand messages back to the MTA: SMTP to the milter-free Postfix listener (`reinject.*`).

Used for every copy the current milter transaction cannot carry (other notification
recipients, other direct-delivery levels, DSNs). Each message must be accepted with 250, or
DeliveryError is raised and the milter tempfails the original: nothing is lost. A refusal (a
4xx/5xx reply) is told apart from a copy whose fate is unknown (the connection lost after its
final "."): the MTA may have queued that one. Each copy's `on_accepted` runs as soon as the MTA
took it, so a retry of the original can leave out what went out before (gateway.py). A batch
is spread over a few sessions at once, each pipelining its envelopes: most of a copy's time is
Postfix writing it to its queue, and the sessions overlap those waits. Bodies are streamed,
never held whole in memory.
"""

from __future__ import annotations

import logging
import queue
import re
import smtplib
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from zivmilter import defaults, metrics
from zivmilter.errors import DeliveryError

log = logging.getLogger("zivmilter.reinject")

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Outgoing:
    """One message to hand back: envelope plus content (bytes, or a file read from its start)."""

    sender: str  # "" for the null sender of a DSN
    recipients: Sequence[str]
    content: bytes | BinaryIO
    what: str  # for logs: "notification to x", "direct-pkix copy", "DSN"
    # called with the MTA's reply once it took this copy (before the next one is sent)
    on_accepted: Callable[[str], None] | None = None


class Reinjector(Protocol):
    def send(self, messages: Sequence[Outgoing]) -> list[str]: ...


def _dot_stuffed(content: bytes | BinaryIO) -> Iterable[bytes]:
    """CRLF line endings and transparency (RFC 5321 4.5.2), chunk by chunk."""
    if isinstance(content, bytes):
        stream: Iterable[bytes] = [content]
    else:
        content.seek(0)
        stream = iter(lambda: content.read(_CHUNK), b"")
    carry = b""
    at_line_start = True
    for chunk in stream:
        data = carry + chunk
        # keep an incomplete trailing line (a CR of a split CRLF with it) for the next chunk
        cut = data.rfind(b"\n") + 1
        carry, data = data[cut:], data[:cut]
        if not data:
            continue
        data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
        if at_line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        at_line_start = data.endswith(b"\n")
        yield data
    if carry:
        data = re.sub(rb"\r$", b"", carry)
        if at_line_start and data.startswith(b"."):
            data = b"." + data
        yield data + b"\r\n"


def _utf8_header(content: bytes | BinaryIO) -> bool:
    """Whether the message's header block holds 8-bit bytes (read from the start of a file)."""
    if isinstance(content, bytes):
        head = content[:_CHUNK]
    else:
        content.seek(0)
        head = content.read(_CHUNK)
        content.seek(0)
    end = head.find(b"\r\n\r\n")
    return not (head if end < 0 else head[:end]).isascii()


class SmtpReinjector:
    """Sends a batch over up to `sessions` SMTP sessions in parallel; any refusal is a
    DeliveryError.

    Each session takes the next copy not yet sent; with the listener's PIPELINING (RFC 2920,
    Postfix offers it) a copy's MAIL, RCPT and DATA go in one write. A failure in one session
    stops the others after the copy they are sending (its reply is still awaited: once its
    final "." is written, only the reply tells whether the MTA took it). Workers only talk
    SMTP: every `on_accepted` runs in the caller's thread (the store's connection stays there),
    as soon as the MTA's 250 for that copy has been read.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        helo: str | None = None,
        sessions: int = defaults.REINJECT_SESSIONS,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.helo = helo or socket.getfqdn()
        self.sessions = max(1, sessions)

    def send(self, messages: Sequence[Outgoing]) -> list[str]:
        """Send all; returns the MTA's reply per message (with its queue id), in their order."""
        if not messages:
            return []
        replies: list[str | None] = [None] * len(messages)
        pending = iter(enumerate(messages))
        take_lock = threading.Lock()
        stop = threading.Event()

        def take() -> tuple[int, Outgoing] | None:
            with take_lock:
                return None if stop.is_set() else next(pending, None)

        count = min(self.sessions, len(messages))
        if count == 1:  # no thread for one session: each copy reported as it is taken

            def accepted(index: int, reply: str) -> None:
                replies[index] = reply
                callback = messages[index].on_accepted
                if callback is not None:
                    callback(reply)

            failure = self._session(take, accepted)
            failures = [] if failure is None else [failure]
        else:
            failures = self._parallel(count, messages, replies, take, stop)
        if failures:
            metrics.reinject_failed()
            first = failures[0]
            more = f" (and {len(failures) - 1} more failed)" if len(failures) > 1 else ""
            raise DeliveryError(
                f"{first}{more}",
                accepted=sum(r is not None for r in replies),
                permanent=all(f.permanent for f in failures),
                uncertain=any(f.uncertain for f in failures),
            ) from first
        return [r for r in replies if r is not None]

    def _parallel(
        self,
        count: int,
        messages: Sequence[Outgoing],
        replies: list[str | None],
        take: Callable[[], tuple[int, Outgoing] | None],
        stop: threading.Event,
    ) -> list[DeliveryError]:
        """`count` sessions in threads; their acceptances are handed to this thread in order."""
        events: queue.SimpleQueue[tuple[int, str] | DeliveryError | None] = queue.SimpleQueue()
        failures: list[DeliveryError] = []

        def worker() -> None:
            try:
                try:
                    failure = self._session(take, lambda index, reply: events.put((index, reply)))
                except Exception as exc:  # a defect, not the MTA's answer: the batch fails
                    # with it, named, rather than ending short with no failure; uncertain, as
                    # the copy it was on may have been sent whole.
                    log.exception("re-injection session to %s:%d failed", self.host, self.port)
                    failure = DeliveryError(
                        f"re-injection to {self.host}:{self.port} failed: {exc!r}", uncertain=True
                    )
                if failure is not None:
                    stop.set()  # the others finish the copy they are on, then end
                    events.put(failure)
            finally:
                events.put(None)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        running = count
        try:
            while running:
                event = events.get()
                if event is None:
                    running -= 1
                elif isinstance(event, DeliveryError):
                    failures.append(event)
                else:
                    index, reply = event
                    replies[index] = reply
                    callback = messages[index].on_accepted
                    if callback is not None:
                        callback(reply)
        finally:  # also when a callback failed: no session outlives the batch
            stop.set()
            for thread in threads:
                thread.join()
        return failures

    def _session(
        self,
        take: Callable[[], tuple[int, Outgoing] | None],
        accepted: Callable[[int, str], None],
    ) -> DeliveryError | None:
        """One SMTP session sending copies until none is left (or the batch stops): the
        failure that ended it, if any."""
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                _no_delay(smtp)
                smtp.ehlo(self.helo)
                try:
                    while (item := take()) is not None:
                        index, msg = item
                        accepted(index, self._one(smtp, msg))
                except (DeliveryError, OSError, smtplib.SMTPException):
                    raise
                except Exception:
                    # Not the MTA's answer (a defect, a callback's error), maybe mid-DATA: no
                    # QUIT, whose reply would not come before the timeout.
                    smtp.close()
                    raise
        except DeliveryError as exc:
            return exc
        except (OSError, smtplib.SMTPException) as exc:
            return DeliveryError(f"re-injection to {self.host}:{self.port} failed: {exc}")
        return None

    def _one(self, smtp: smtplib.SMTP, msg: Outgoing) -> str:
        options: list[str] = []
        smtp.command_encoding = "ascii"
        if not (msg.sender.isascii() and all(r.isascii() for r in msg.recipients)):
            # an internationalized address (RFC 6531): only with the listener's SMTPUTF8
            if not smtp.has_extn("smtputf8"):
                raise DeliveryError(
                    f"{msg.what}: the listener does not offer SMTPUTF8, which a non-ASCII"
                    " address needs (Postfix: smtputf8_enable = yes)"
                )
            options.append("SMTPUTF8")
            smtp.command_encoding = "utf-8"
        elif _utf8_header(msg.content) and smtp.has_extn("smtputf8"):
            options.append("SMTPUTF8")  # UTF-8 in the header (RFC 6532), e.g. jörg@ in To
        if smtp.has_extn("pipelining"):
            _envelope_pipelined(smtp, msg, options)
        else:
            _envelope(smtp, msg, options)
        for piece in _dot_stuffed(msg.content):
            smtp.send(piece)
        smtp.send(b".\r\n")
        try:
            code, reply_bytes = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            # The whole message is at the MTA: it may have queued it before the connection was
            # lost (a reload, a crash, a reply slower than our timeout). Not a refusal.
            raise DeliveryError(
                f"{msg.what}: no reply after the end of data, the MTA may have queued it: {exc}",
                uncertain=True,
            ) from exc
        if code != 250:
            raise _refused(f"{msg.what}: message refused", code, reply_bytes)
        return reply_bytes.decode(errors="replace")


def _envelope(smtp: smtplib.SMTP, msg: Outgoing, options: list[str]) -> None:
    """MAIL, each RCPT and DATA, each waiting for its reply, up to DATA's 354."""
    code, reply = smtp.mail(msg.sender, options)
    if code != 250:
        raise _refused(f"{msg.what}: MAIL FROM refused", code, reply)
    for rcpt in msg.recipients:
        code, reply = smtp.rcpt(rcpt)
        if code not in (250, 251):
            raise _refused(f"{msg.what}: RCPT TO {rcpt} refused", code, reply)
    code, reply = smtp.docmd("DATA")
    if code != 354:
        raise _refused(f"{msg.what}: DATA refused", code, reply)


def _envelope_pipelined(smtp: smtplib.SMTP, msg: Outgoing, options: list[str]) -> None:
    """MAIL, every RCPT and DATA in one write (RFC 2920), then their replies in order, up to
    DATA's 354. A refusal of MAIL or of any RCPT is the copy's refusal: when DATA was still
    answered 354 (other recipients were taken), the session is closed before any content, so
    nothing is queued."""
    encoding = smtp.command_encoding
    option_text = "".join(f" {o}" for o in options)
    commands = [f"MAIL FROM:{smtplib.quoteaddr(msg.sender)}{option_text}"]
    commands += [f"RCPT TO:{smtplib.quoteaddr(rcpt)}" for rcpt in msg.recipients]
    commands.append("DATA")
    smtp.send("".join(f"{c}\r\n" for c in commands).encode(encoding))
    refusal: DeliveryError | None = None
    code, reply = smtp.getreply()
    if code != 250:
        refusal = _refused(f"{msg.what}: MAIL FROM refused", code, reply)
    for rcpt in msg.recipients:
        code, reply = smtp.getreply()
        if code not in (250, 251) and refusal is None:
            refusal = _refused(f"{msg.what}: RCPT TO {rcpt} refused", code, reply)
    code, reply = smtp.getreply()
    if refusal is not None:
        if code == 354:  # the listener waits for content: end the session without a "."
            smtp.close()
        raise refusal
    if code != 354:
        raise _refused(f"{msg.what}: DATA refused", code, reply)


def _no_delay(smtp: smtplib.SMTP) -> None:
    """TCP_NODELAY on the client's socket. The final "." of each copy is a small write right
    after the content; with Nagle's algorithm it waits for the ACK of that content, which the
    MTA delays: 40 ms per copy, 4 s for a message to 100 notification recipients (the trap
    POSTFIX-NOTES describes for the milter socket). Every command waits for its reply anyway:
    the kernel gains nothing by holding small writes back."""
    if smtp.sock is not None:
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _refused(what: str, code: int, reply: bytes) -> DeliveryError:
    """The MTA's refusal: for good when it says so (5xx), else worth another try."""
    return DeliveryError(
        f"{what}: {code} {reply.decode(errors='replace')}", permanent=500 <= code <= 599
    )
