"""SmtpReinjector against a real SMTP server on loopback (aiosmtpd): what it asks for, and
what it does when a message needs more than the listener offers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.harness.flaky_listener import FlakyListener
from tests.harness.postfix import free_port
from zivmilter.delivery.reinject import Outgoing, SmtpReinjector
from zivmilter.errors import DeliveryError


class _Keep:
    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got.append(
            (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options),
             envelope.original_content)
        )  # fmt: skip
        return "250 2.0.0 Ok: queued as X"


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[_Keep, int, bool]]:
    keep, port = _Keep(), free_port()
    ctl = Controller(keep, hostname="127.0.0.1", port=port, enable_SMTPUTF8=request.param)
    ctl.start()
    yield keep, port, request.param
    ctl.stop()


NOTE = (
    b"From: a@org.example\r\nTo: bob@x.example, J\xc3\xb6rg <j\xc3\xb6rg@x.example>\r\n\r\nhi\r\n"
)


def test_utf8_header_asks_for_smtputf8_where_offered(listener: tuple[_Keep, int, bool]) -> None:
    keep, port, offered = listener
    out = Outgoing("a@org.example", ["bob@x.example"], NOTE, "notification to bob@x.example")
    (reply,) = SmtpReinjector("127.0.0.1", port, 10).send([out])
    assert reply.startswith("2.0.0 Ok")
    ((sender, rcpts, options, data),) = keep.got
    assert (sender, rcpts) == ("a@org.example", ["bob@x.example"])
    assert ("SMTPUTF8" in options) is offered
    assert data == NOTE


def test_internationalized_address_needs_smtputf8(listener: tuple[_Keep, int, bool]) -> None:
    keep, port, offered = listener
    out = Outgoing("a@org.example", ["jörg@x.example"], NOTE, "notification to jörg@x.example")
    if offered:
        SmtpReinjector("127.0.0.1", port, 10).send([out])
        assert keep.got[0][1] == ["jörg@x.example"] and "SMTPUTF8" in keep.got[0][2]
    else:
        with pytest.raises(DeliveryError, match="SMTPUTF8"):
            SmtpReinjector("127.0.0.1", port, 10).send([out])
        assert keep.got == []


class _Picky(_Keep):
    """Refuses unknown@ for good (550) and busy@ for now (450) at RCPT; the sender banned@ for
    good (553) at MAIL; a message saying REFUSE for good (554), LATER for now (451) after its
    data."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("banned@"):
            return "553 5.7.1 <banned@org.example>: Sender address rejected"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("unknown@"):
            return "550 5.1.1 <unknown@x.example>: Recipient address rejected: User unknown"
        if address.startswith("busy@"):
            return "450 4.2.1 <busy@x.example>: Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"REFUSE" in envelope.original_content:
            return "554 5.7.1 Message refused by policy"
        if b"LATER" in envelope.original_content:
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(
    ("sender", "rcpt", "body", "permanent", "reply"),
    [
        ("a@org.example", "unknown@x.example", b"hi", True, "unknown@x.example refused: 550"),
        ("a@org.example", "busy@x.example", b"hi", False, "RCPT TO busy@x.example refused: 450"),
        ("banned@org.example", "bob@x.example", b"hi", True, "MAIL FROM refused: 553 5.7.1"),
        ("a@org.example", "bob@x.example", b"REFUSE", True, "message refused: 554 5.7.1"),
        ("a@org.example", "bob@x.example", b"LATER", False, "message refused: 451 4.3.0"),
    ],
    ids=["5xx-rcpt", "4xx-rcpt", "5xx-mail", "5xx-end-of-data", "4xx-end-of-data"],
)
def test_a_5xx_refusal_is_permanent_a_4xx_is_not(
    sender: str, rcpt: str, body: bytes, permanent: bool, reply: str
) -> None:
    keep, port = _Picky(), free_port()
    ctl = Controller(keep, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        first = Outgoing("a@org.example", ["bob@x.example"], b"Subject: a\r\n\r\nfine\r\n", "a")
        second = Outgoing(sender, [rcpt], b"Subject: b\r\n\r\n" + body + b"\r\n", "b")
        with pytest.raises(DeliveryError) as caught:
            SmtpReinjector("127.0.0.1", port, 10).send([first, second])
    finally:
        ctl.stop()
    assert caught.value.permanent is permanent
    assert caught.value.uncertain is False  # a clear answer: the copy was not queued
    assert caught.value.accepted == 1  # the first copy was taken: it goes out
    assert reply in str(caught.value)
    assert len(keep.got) == 1


def test_a_listener_that_is_down_is_not_a_permanent_refusal() -> None:
    out = Outgoing("a@org.example", ["bob@x.example"], b"Subject: a\r\n\r\nx\r\n", "a")
    with pytest.raises(DeliveryError) as caught:
        SmtpReinjector("127.0.0.1", free_port(), 5).send([out])
    assert caught.value.permanent is False and caught.value.accepted == 0


def _nodelay_of_socket_named(address: tuple[str, int]) -> int:
    """TCP_NODELAY of this process's TCP socket bound to `address` (the re-injector's end)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue  # not a socket
        with sock:
            if sock.family == socket.AF_INET and sock.getsockname() == address:
                return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    raise AssertionError(f"no socket of this process is bound to {address}")


class _SeesTheClient(_Keep):
    """Looks at the client's end of each connection while its message comes in: the
    re-injector runs in this process, so that socket is one of ours."""

    def __init__(self) -> None:
        super().__init__()
        self.nodelay: list[int] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.nodelay.append(_nodelay_of_socket_named(tuple(session.peer[:2])))
        return await super().handle_DATA(server, session, envelope)


def test_copies_are_written_without_nagle_delay() -> None:
    # The final "." of each copy is a small write after the content: with Nagle's algorithm it
    # waits for the ACK of the content, which the MTA delays (40 ms per copy, POSTFIX-NOTES).
    keep, port = _SeesTheClient(), free_port()
    ctl = Controller(keep, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        copies = [
            Outgoing("a@org.example", [f"r{i}@x.example"], b"Subject: a\r\n\r\nx\r\n", "a")
            for i in range(2)
        ]
        SmtpReinjector("127.0.0.1", port, 10).send(copies)
    finally:
        ctl.stop()
    assert len(keep.got) == 2
    assert keep.nodelay and all(keep.nodelay)


def test_a_connection_lost_after_the_final_dot_is_not_a_refusal() -> None:
    # The listener takes the first copy, then reads the whole second one and hangs up without a
    # reply (a Postfix reload, an smtpd crash): the MTA may have queued it.
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "250" if n == 0 else "drop") as listener:
        copies = [
            Outgoing("a@org.example", [f"r{i}@x.example"], b"Subject: a\r\n\r\nx\r\n", f"c{i}")
            for i in range(3)
        ]
        with pytest.raises(DeliveryError) as caught:
            SmtpReinjector("127.0.0.1", port, 10).send(copies)
    assert caught.value.uncertain is True and caught.value.permanent is False
    assert caught.value.accepted == 1
    assert "no reply after the end of data" in str(caught.value)
    assert [t.rcpt_tos for t in listener.received] == [("r0@x.example",), ("r1@x.example",)]


def test_a_refusal_at_the_end_of_data_is_certain() -> None:
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "452"):
        out = Outgoing("a@org.example", ["bob@x.example"], b"Subject: a\r\n\r\nx\r\n", "a")
        with pytest.raises(DeliveryError) as caught:
            SmtpReinjector("127.0.0.1", port, 10).send([out])
    assert caught.value.uncertain is False and caught.value.accepted == 0


def test_each_copy_is_reported_as_soon_as_it_is_taken() -> None:
    # A retry of the original leaves out what the MTA took: it must learn of each copy before
    # the next one is sent, not once the batch is over (a crash would lose that).
    port = free_port()
    seen: list[str] = []

    def noted(name: str) -> Outgoing:
        return Outgoing(
            "a@org.example", [f"{name}@x.example"], b"Subject: a\r\n\r\nx\r\n", name,
            on_accepted=lambda reply: seen.append(f"{name}: {reply[:3]}"),
        )  # fmt: skip

    with (
        FlakyListener("127.0.0.1", port, lambda n: "250" if n < 2 else "452"),
        pytest.raises(DeliveryError),
    ):
        SmtpReinjector("127.0.0.1", port, 10).send([noted("a"), noted("b"), noted("c")])
    assert seen == ["a: 2.0", "b: 2.0"]
