"""SmtpReinjector against a real SMTP server on loopback (aiosmtpd): what it asks for, and
what it does when a message needs more than the listener offers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
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
    # reply (a Postfix reload, an smtpd crash): the MTA may have queued it. (One session, so
    # that "first" and "second" are the batch's order; parallel sessions: below.)
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "250" if n == 0 else "drop") as listener:
        copies = [
            Outgoing("a@org.example", [f"r{i}@x.example"], b"Subject: a\r\n\r\nx\r\n", f"c{i}")
            for i in range(3)
        ]
        with pytest.raises(DeliveryError) as caught:
            SmtpReinjector("127.0.0.1", port, 10, sessions=1).send(copies)
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
        SmtpReinjector("127.0.0.1", port, 10, sessions=1).send([noted("a"), noted("b"), noted("c")])
    assert seen == ["a: 2.0", "b: 2.0"]


def _copies(count: int, seen: list[tuple[str, int]] | None = None) -> list[Outgoing]:
    """`count` copies to r0@, r1@...; each acceptance noted in `seen` with the thread it ran in."""

    def noted(rcpt: str) -> Callable[[str], None] | None:
        if seen is None:
            return None
        return lambda reply: seen.append((rcpt, threading.get_ident()))

    return [
        Outgoing(
            "a@org.example",
            [f"r{i}@x.example"],
            f"Subject: {i}\r\n\r\nx\r\n".encode(),
            f"c{i}",
            on_accepted=noted(f"r{i}@x.example"),
        )
        for i in range(count)
    ]


class _Sessions(_Keep):
    """Notes the client port of each message: how many sessions the batch came over.

    The sessions take copies as they come free, so a session the scheduler started late could
    find none left on a loaded machine (the batch then came over two: a failure that was the
    test's, not the reinjector's). So each copy's answer waits, up to a few seconds, until
    `sessions` of them have sent a copy: held answers keep the first sessions from taking more,
    and sessions that are not parallel still end with fewer."""

    def __init__(self, sessions: int) -> None:
        super().__init__()
        self.sessions = sessions
        self.peers: set[int] = set()
        self._all_sent: asyncio.Event | None = None  # made on the server's event loop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.add(session.peer[1])
        if self._all_sent is None:
            self._all_sent = asyncio.Event()
        if len(self.peers) >= self.sessions:
            self._all_sent.set()
        with contextlib.suppress(TimeoutError):  # under the client's timeout (10 s)
            await asyncio.wait_for(self._all_sent.wait(), 5)
        return await super().handle_DATA(server, session, envelope)


def test_a_batch_goes_over_parallel_sessions_and_is_reported_in_the_callers_thread() -> None:
    keep, port = _Sessions(3), free_port()
    ctl = Controller(keep, hostname="127.0.0.1", port=port)
    ctl.start()
    seen: list[tuple[str, int]] = []
    try:
        replies = SmtpReinjector("127.0.0.1", port, 10, sessions=3).send(_copies(12, seen))
    finally:
        ctl.stop()
    assert len(replies) == 12 and all(r.startswith("2.0.0 Ok") for r in replies)
    assert sorted(rcpts[0] for _, rcpts, _, _ in keep.got) == sorted(
        f"r{i}@x.example" for i in range(12)
    )
    assert len(keep.peers) == 3
    # the store behind the callbacks is used from the caller's thread only
    assert sorted(r for r, _ in seen) == sorted(f"r{i}@x.example" for i in range(12))
    assert {thread for _, thread in seen} == {threading.get_ident()}


def test_a_batch_of_one_opens_one_session() -> None:
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "250") as listener:
        SmtpReinjector("127.0.0.1", port, 10, sessions=4).send(_copies(1))
    assert listener.sessions == 1 and len(listener.received) == 1


def _two_failures(fifth: str, sixth: str) -> Callable[[int], str]:
    """The fifth copy fails, but only once a sixth copy arrived (in another session): so that
    two sessions fail, not one that stops the others first."""
    sixth_came = threading.Event()

    def answer(n: int) -> str:
        if n == 4:
            sixth_came.wait(10)
            return fifth
        if n == 5:
            sixth_came.set()
            return sixth
        return "250"

    return answer


@pytest.mark.parametrize(
    ("answer", "permanent", "uncertain"),
    [
        (lambda n: "drop" if n == 4 else "250", False, True),
        (lambda n: "554" if n == 4 else "250", True, False),
        (lambda n: "452" if n == 4 else "250", False, False),
        (_two_failures("554", "drop"), False, True),
        (_two_failures("554", "452"), False, False),
    ],
    ids=["drop", "5xx", "4xx", "5xx-and-drop", "5xx-and-4xx"],
)
def test_a_failure_in_one_of_parallel_sessions_keeps_the_accounting_exact(
    answer: Callable[[int], str], permanent: bool, uncertain: bool
) -> None:
    # Three sessions; the fifth (and sixth) copy the listener gets fails. The others stop after
    # the copy they are on; exactly the copies answered 250 are reported accepted, a copy
    # dropped after its final dot makes the batch uncertain, and only 5xx alone is permanent.
    port = free_port()
    seen: list[tuple[str, int]] = []
    with (
        FlakyListener("127.0.0.1", port, answer) as listener,
        pytest.raises(DeliveryError) as caught,
    ):
        SmtpReinjector("127.0.0.1", port, 10, sessions=3).send(_copies(30, seen))
    taken = sorted(t.rcpt_tos[0] for t in listener.received if not t.dropped)
    assert sorted(r for r, _ in seen) == taken
    assert caught.value.accepted == len(taken)
    assert 4 <= len(taken) < 30  # the batch stopped: not every copy was sent
    assert caught.value.permanent is permanent
    assert caught.value.uncertain is uncertain


def test_a_defect_in_one_of_parallel_sessions_fails_the_batch_by_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Not an SMTP or socket error (a bug while writing a copy): the batch must not end short
    # with no failure (the gateway would see fewer replies than copies and nothing named); it
    # fails, uncertain, and the accepted count stays exact.
    from zivmilter.delivery import reinject

    written = reinject._dot_stuffed
    calls = iter(range(1000))
    calls_lock = threading.Lock()

    def faulty(content: Any) -> Any:
        with calls_lock:
            n = next(calls)
        if n == 4:
            raise RuntimeError("a defect")
        return written(content)

    monkeypatch.setattr(reinject, "_dot_stuffed", faulty)
    port = free_port()
    seen: list[tuple[str, int]] = []
    with (
        FlakyListener("127.0.0.1", port, lambda n: "250") as listener,
        pytest.raises(DeliveryError) as caught,
    ):
        SmtpReinjector("127.0.0.1", port, 10, sessions=3).send(_copies(30, seen))
    assert "RuntimeError('a defect')" in str(caught.value)
    assert caught.value.uncertain is True and caught.value.permanent is False
    taken = sorted(t.rcpt_tos[0] for t in listener.received if not t.dropped)
    assert sorted(r for r, _ in seen) == taken and caught.value.accepted == len(taken)
    assert 4 <= len(taken) < 30
    assert "re-injection session to 127.0.0.1" in caplog.text


def test_pipelined_envelopes_are_sent_in_one_write() -> None:
    # The listener holds its MAIL and RCPT replies back until DATA: a client waiting for each
    # reply would hang until its timeout.
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "250", pipelining=True) as listener:
        two = Outgoing(
            "a@org.example", ["x@x.example", "y@x.example"], b"Subject: 2\r\n\r\n.\r\n", "2"
        )
        replies = SmtpReinjector("127.0.0.1", port, 5, sessions=1).send([*_copies(3), two])
    assert len(replies) == 4
    assert [t.rcpt_tos for t in listener.received] == [
        ("r0@x.example",), ("r1@x.example",), ("r2@x.example",), ("x@x.example", "y@x.example")
    ]  # fmt: skip
    assert listener.received[3].data == b"Subject: 2\r\n\r\n.\r\n"  # stuffed, then unstuffed


@pytest.mark.parametrize(
    ("refused", "permanent"),
    [("y@x.example", False), ("x@x.example", True)],
    ids=["4xx-second-rcpt", "5xx-first-rcpt"],
)
def test_a_refusal_mid_pipeline_refuses_the_copy_without_sending_it(
    refused: str, permanent: bool
) -> None:
    # A copy to x@ and y@: one RCPT is refused while the other is taken, so DATA is still
    # answered 354; the copy must not go to the other recipient alone (nor empty).
    port = free_port()
    code = "550 5.1.1 unknown" if permanent else "450 4.2.1 busy"
    with FlakyListener(
        "127.0.0.1", port, lambda n: "250", pipelining=True,
        refuse_rcpt=lambda address: code if address == refused else None,
    ) as listener:  # fmt: skip
        two = Outgoing(
            "a@org.example", ["x@x.example", "y@x.example"], b"Subject: 2\r\n\r\nx\r\n", "two"
        )
        with pytest.raises(DeliveryError) as caught:
            SmtpReinjector("127.0.0.1", port, 5, sessions=1).send([*_copies(2), two, *_copies(1)])
    assert f"RCPT TO {refused} refused: {code[:3]}" in str(caught.value)
    assert caught.value.permanent is permanent and caught.value.uncertain is False
    assert caught.value.accepted == 2
    assert [t.rcpt_tos for t in listener.received] == [("r0@x.example",), ("r1@x.example",)]
