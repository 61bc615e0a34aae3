"""A real receiving SMTP server for tests (aiosmtpd), optionally with STARTTLS.

It keeps every message's exact bytes, envelope and the TLS version it arrived over, so tests can
assert on what a recipient's mail server really got. Used by the Postfix and prober tests alike.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls_version: str | None  # e.g. "TLSv1.3"; None when the message came in clear text

    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    reply: str = "250 2.0.0 Ok: kept"
    refuse_after: int | None = None  # accept this many messages, then answer 452 to the rest
    refuse_rcpt: str | None = None  # the answer to every RCPT TO instead of 250, e.g. a 550

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse_rcpt is not None:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_after is not None and len(self.received) >= self.refuse_after:
            return "452 4.3.1 Insufficient system storage"
        ssl_obj = server.transport.get_extra_info("ssl_object") if server.transport else None
        data = envelope.original_content or envelope.content or b""
        item = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
            data=data if isinstance(data, bytes) else data.encode(),
            tls_version=ssl_obj.version() if ssl_obj is not None else None,
        )
        with self.cond:
            self.received.append(item)
            self.cond.notify_all()
        return self.reply


class Sink:
    """`with Sink("127.0.0.20", 25, tls=ctx) as sink: ...; sink.wait_for(2)`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2525,
        *,
        tls: ssl.SSLContext | None = None,
        hostname: str = "mx.test",
        refuse_after: int | None = None,
        refuse_rcpt: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._handler = _Handler(refuse_after=refuse_after, refuse_rcpt=refuse_rcpt)
        # room for the 50 MB messages of the memory bench (aiosmtpd's default is 32 MiB)
        kwargs: dict[str, Any] = {
            "server_hostname": hostname,
            "data_size_limit": 256 * 2**20,
            "enable_SMTPUTF8": True,  # internationalized addresses (RFC 6531) arrive too
        }
        if tls is not None:
            kwargs["tls_context"] = tls
        self._controller = Controller(
            self._handler, hostname=host, port=port, ready_timeout=10, **kwargs
        )

    def __enter__(self) -> Sink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        with self._handler.cond:
            return list(self._handler.received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until at least `count` messages arrived; fail the test on timeout."""
        deadline = time.monotonic() + timeout
        with self._handler.cond:
            while len(self._handler.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink {self.host}:{self.port}: expected {count} messages, "
                        f"got {len(self._handler.received)} in {timeout:.0f}s"
                    )
                self._handler.cond.wait(left)
            return list(self._handler.received)

    def for_rcpt(self, address: str) -> list[Received]:
        want = address.lower()
        return [r for r in self.received if want in (x.lower() for x in r.rcpt_tos)]


def server_tls_context(
    cert: Any,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    """A server context for a trustme LeafCert, limited to a protocol range."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if minimum < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 speak TLS 1.0/1.1 at all
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    cert.configure_cert(ctx)
    return ctx
