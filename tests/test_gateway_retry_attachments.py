"""A client's retry of a tempfailed message with a large attachment in its direct copies: the
store keeps that attachment once over all tries, and the link each copy carries opens it.

The gateway re-injects to a real SMTP listener that misbehaves on cue (FlakyListener); the link
is opened through the portal app, verified by the emailed code, as a recipient opens it.
"""

from __future__ import annotations

import contextlib
import email
import functools
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Collecting, make_config
from tests.harness.flaky_listener import FlakyListener
from tests.harness.postfix import free_port
from tests.test_gateway import transaction
from tests.test_portal_app import csrf
from zivmilter import crypto
from zivmilter.core.facts import facts_from_mapping
from zivmilter.delivery.reinject import SmtpReinjector
from zivmilter.errors import DeliveryError
from zivmilter.gateway import Gateway, Transaction
from zivmilter.portal.app import create_app
from zivmilter.portal.context import Portal
from zivmilter.portal.security import PortalKeys
from zivmilter.portal.sms import FileSms
from zivmilter.store import SqliteStore

with warnings.catch_warnings():  # Starlette 1.x deprecates its httpx-based client; it works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE = "http://portal.test"
ALICE = "<alice@hospital.example>"
DAN = "dan@secure.example"  # direct, DANE: the copy that stays in the milter's transaction
BOB = "bob@partner.example"  # direct, PKIX: a copy of its own, re-injected
CAROL = "carol@oldmail.example"  # a notification, re-injected
SCAN = os.urandom(30_000)  # over large_attachment_bytes: kept in the store, a link instead
LINK = re.compile(rb"/d/([A-Za-z0-9_-]{16,})")


@dataclass
class World:
    store: SqliteStore
    path: Path  # the store's folder
    gateway: Gateway
    portal_mail: Collecting
    app: Any  # the portal's ASGI app

    def attachments(self) -> int:
        """Large attachments the store holds (rows and their encrypted contents agree)."""
        db = sqlite3.connect(self.path / "store.sqlite3")
        try:
            (rows,) = db.execute("SELECT count(*) FROM attachments").fetchone()
            (blobs,) = db.execute(
                "SELECT count(*) FROM blobs WHERE kind = 'attachment' AND deleted_at IS NULL"
            ).fetchone()
        finally:
            db.close()
        assert rows == blobs
        return int(rows)

    def download(self, token: str, address: str) -> bytes:
        """Open a large-attachment link in a new browser, verify as `address` by the emailed
        code, fetch the file."""
        with TestClient(self.app, base_url=BASE) as client:
            return self._download(client, token, address)

    def _download(self, client: TestClient, token: str, address: str) -> bytes:
        first = client.get(f"/d/{token}")
        target = re.search(r'url=([^"]+)"', first.text)
        assert first.status_code == 200 and target, first.text
        here = target.group(1)
        page = client.get(here)
        assert page.status_code == 200, page.text
        start = {"csrf": csrf(page.text, "start"), "address": address}
        r = client.post(here + "start", data=start)
        r = client.post(here + "send", data={"csrf": csrf(r.text, "send")})
        mail = self.portal_mail.sent[-1].content
        assert isinstance(mail, bytes)
        text = email.message_from_bytes(mail, policy=policy.default).get_body(("plain",))
        assert text is not None
        code = re.findall(r"\b\d{6}\b", text.get_content())[0]
        r = client.post(here + "verify", data={"csrf": csrf(r.text, "verify"), "code": code})
        assert r.status_code == 200 and 'id="download"' in r.text, r.text
        got = client.get(here + "file")
        assert got.status_code == 200
        return got.content


@contextlib.contextmanager
def make_world(tmp_path: Path, mta: str = "postfix") -> Iterator[World]:
    crypto.keygen(str(tmp_path / "key"))
    kek = crypto.load_kek(str(tmp_path / "key"))
    store = SqliteStore.open(str(tmp_path / "store"), kek)
    cfg = make_config(
        {
            "milter": {"mta": mta},
            "submission": {"any_address_of_own_domains": True},
            "portal": {"base_url": BASE + "/"},
            "policy": {
                "outbound_direct_delivery": {"domains": ["partner.example", "secure.example"]},
                "large_attachment_bytes": 20_000,
            },
        }
    )
    facts = facts_from_mapping({"transport": {"partner.example": "pkix", "secure.example": "dane"}})
    gateway = Gateway(cfg, facts, store, Collecting(), hostname="gw.test")
    mail = Collecting()
    portal = Portal(
        cfg=cfg,
        store=store,
        keys=PortalKeys.from_kek(kek),
        sms=FileSms(str(tmp_path / "sms.log")),
        mailer=mail,
    )
    try:
        yield World(store, tmp_path / "store", gateway, mail, create_app(portal))
    finally:
        store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


@functools.cache  # the same bytes for every try: the client sends the message again as it was
def _message() -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = f"{DAN}, {BOB}, {CAROL}"
    msg["Subject"] = "Scan"
    msg["Message-ID"] = "<scan-retry@hospital.example>"
    msg.set_content("The scan is attached.")
    msg.add_attachment(SCAN, maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes(policy=policy.SMTP)


def _transaction(rcpts: list[str]) -> Transaction:
    return transaction(_message(), ALICE, rcpts)


def _link(data: bytes) -> str:
    """The one download link a copy carries (its notice gives it in English and Dutch)."""
    (found,) = set(LINK.findall(data))
    return str(found.decode())


def _direct_to(listener: FlakyListener, address: str) -> list[Any]:
    return [t for t in listener.received if t.rcpt_tos == (address,) and LINK.search(t.data)]


def test_a_retry_after_a_refusal_sends_the_link_the_first_try_stored(world: World) -> None:
    # First try: Bob's direct copy is taken, then the listener refuses Carol's notification
    # (450 to its RCPT): the milter tempfails, and the message stays stored, since Bob's copy
    # goes out with its link. The retry hands over Carol's notification and keeps Dan's direct
    # copy in the transaction: its link is Bob's, and the store holds the attachment once.
    refusing = [True]
    port = free_port()
    with FlakyListener(
        "127.0.0.1",
        port,
        lambda n: "250",
        refuse_rcpt=lambda a: "450 4.2.0 busy" if refusing[0] and a == CAROL else None,
    ) as listener:
        world.gateway.reinjector = SmtpReinjector("127.0.0.1", port, 10)
        with pytest.raises(DeliveryError) as caught:
            world.gateway.process(_transaction([DAN, BOB, CAROL]))
        assert caught.value.accepted == 1 and not caught.value.uncertain
        assert [t.rcpt_tos for t in listener.received] == [(BOB,)]
        assert world.attachments() == 1
        refusing[0] = False
        plan = world.gateway.process(_transaction([DAN, BOB, CAROL]))
    assert [t.rcpt_tos for t in listener.received] == [(BOB,), (CAROL,)]  # Bob's once
    (bobs,) = _direct_to(listener, BOB)
    assert plan.replace_body is not None  # Dan's copy, its attachment a link
    assert _link(plan.replace_body) == _link(bobs.data)
    assert world.attachments() == 1
    assert world.download(_link(bobs.data), BOB) == SCAN
    assert world.download(_link(plan.replace_body), DAN) == SCAN


def test_a_copy_that_may_have_gone_out_keeps_its_link_and_the_retry_sends_it_again(
    world: World,
) -> None:
    # The listener reads Bob's whole direct copy, then hangs up without a reply: the MTA may
    # have queued it, so the attachment its link points to must stay. The retry sends Bob's
    # copy again (nothing is lost) with the same link, and stores the attachment no second time.
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "drop" if n == 0 else "250") as listener:
        world.gateway.reinjector = SmtpReinjector("127.0.0.1", port, 10)
        with pytest.raises(DeliveryError) as caught:
            world.gateway.process(_transaction([DAN, BOB]))
        assert caught.value.uncertain
        (maybe,) = _direct_to(listener, BOB)
        assert maybe.dropped
        assert world.attachments() == 1
        assert world.download(_link(maybe.data), BOB) == SCAN  # kept: it may be read
        plan = world.gateway.process(_transaction([DAN, BOB]))
    first, again = _direct_to(listener, BOB)
    assert not again.dropped and _link(again.data) == _link(first.data)
    assert plan.replace_body is not None and _link(plan.replace_body) == _link(first.data)
    assert world.attachments() == 1
    assert world.download(_link(again.data), DAN) == SCAN


def test_a_try_refused_before_any_copy_went_out_leaves_nothing_behind(world: World) -> None:
    # Bob's copy, the only one re-injected, is refused at its final dot: nothing went out, so
    # the try's message and attachment go; the retry stores them once.
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "452" if n == 0 else "250") as listener:
        world.gateway.reinjector = SmtpReinjector("127.0.0.1", port, 10)
        with pytest.raises(DeliveryError) as caught:
            world.gateway.process(_transaction([DAN, BOB]))
        assert caught.value.accepted == 0 and not caught.value.uncertain
        assert listener.received == [] and world.attachments() == 0
        world.gateway.process(_transaction([DAN, BOB]))
    (bobs,) = _direct_to(listener, BOB)
    assert world.attachments() == 1
    assert world.download(_link(bobs.data), BOB) == SCAN


def test_sendmail_a_single_direct_copy_retried_links_to_what_its_first_try_kept(
    tmp_path: Path,
) -> None:
    # Sendmail cannot route on a header: even a lone direct copy leaves through the relay, so
    # the transaction keeps nothing. Dropped after its final dot (it may have been queued),
    # then taken on the client's retry: the same link both times, the attachment stored once.
    port = free_port()
    with (
        make_world(tmp_path, mta="sendmail") as world,
        FlakyListener("127.0.0.1", port, lambda n: "drop" if n == 0 else "250") as listener,
    ):
        world.gateway.reinjector = SmtpReinjector("127.0.0.1", port, 10)
        with pytest.raises(DeliveryError) as caught:
            world.gateway.process(_transaction([BOB]))
        assert caught.value.uncertain
        assert world.gateway.process(_transaction([BOB])).discard
        first, again = _direct_to(listener, BOB)
        assert first.dropped and not again.dropped
        assert _link(again.data) == _link(first.data)
        assert world.attachments() == 1
        assert world.download(_link(first.data), BOB) == SCAN
