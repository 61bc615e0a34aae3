"""SmtpReinjector against a real SMTP server on loopback (aiosmtpd): what it asks for, and
what it does when a message needs more than the listener offers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.harness.postfix import free_port
from zivmilter.errors import DeliveryError
from zivmilter.reinject import Outgoing, SmtpReinjector


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
    b"From: a@org.example\r\nTo: bob@x.example, J\xc3\xb6rg <j\xc3\xb6rg@x.example>\r\n"
    b"\r\nhi\r\n"
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
