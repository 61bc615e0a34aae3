"""The sender's side of the portal (issue 19) in a real headless Chromium, from a message that
went through the real Postfix and `zivmilter run`: the sender enrols through the link
`zivmilter account invite` prints, signs in with password and authenticator, sees the recipient
has not opened the message; the recipient opens it (another browser context); the sender sees
when, and gets a read receipt; the sender withdraws it for one recipient, whose link then says
so; another sender sees nothing of it and gets a 404 at its URLs. Screenshots go to
test-artifacts/portal/sent-*.png (a phone-sized viewport).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.portal import (
    ARTIFACTS,
    CODE,
    PASSWORD,
    World,
    browser,
    fill_enrolment,
    open_invite,
    open_link,
    open_store,
    plain_message,
    portal_world,
    totp,
)

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration
_ = browser  # the module fixture from the shared harness

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    config = {"notification": {"read_receipts": True}}
    with portal_world(config, senders=("alice@hospital.example", "mallory@hospital.example")) as w:
        yield w


def new_page(browser: Any) -> Any:
    page = browser.new_context(viewport=PHONE, is_mobile=True).new_page()
    page.set_default_timeout(15_000)
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"sent-{name}.png"), full_page=True)


def enrol(world: World, page: Any, address: str) -> bytes:
    secret = open_invite(world, page, address)
    fill_enrolment(page, secret, PASSWORD, PASSWORD)
    page.locator("#who").wait_for()
    return secret


def test_sender_sees_opens_withdraws_and_nobody_else_sees_it(world: World, browser: Any) -> None:
    alice = new_page(browser)
    secret = enrol(world, alice, "alice@hospital.example")
    alice.click("#sign-out")
    alice.locator("#sign-in").wait_for()
    shot(alice, "1-sign-in")
    alice.fill("#address", "alice@hospital.example")
    alice.fill("#password", PASSWORD)
    alice.fill("#totp", totp(secret, time.time() + 30))  # the enrolment's step is spent
    alice.click("#sign-in")
    alice.locator("#who").wait_for()

    before = len(world.sink.received)
    msg = plain_message(
        "dave@oldmail.example, s@x.example",
        "SENT-MARKER",
        {"zivver-access-right": f"dave@oldmail.example access-code {CODE}"},
    )
    world.send(msg, ["dave@oldmail.example", "s@x.example"])
    link, _ = world.notification_link("dave@oldmail.example", before)
    world.notification_link("s@x.example", before)

    alice.reload()
    subject = str(msg["Subject"])
    card = alice.locator("article.sent", has_text=subject)
    dave = card.locator('li.rcpt[data-address="dave@oldmail.example"]')
    assert "Not opened yet" in dave.locator(".opened").inner_text()
    shot(alice, "2-not-opened")

    recipient = new_page(browser)
    open_link(recipient, link)
    recipient.fill("#code", CODE)
    recipient.click("form.verify button")
    recipient.locator("#text").wait_for()

    alice.reload()
    opened = dave.locator(".opened").inner_text()
    assert re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC", opened.strip()), opened
    shot(alice, "3-opened")
    receipt = world.mail_for("alice@hospital.example", before, "Opened").message()
    assert receipt["In-Reply-To"] == msg["Message-ID"]
    text = receipt.as_string()  # nothing of the message but its Message-ID (to thread under it)
    assert "see you on Tuesday" not in text and subject not in text

    card.locator("h2 a").click()
    alice.locator('li.rcpt[data-address="dave@oldmail.example"] a.revoke-one').click()
    assert "dave@oldmail.example" in alice.inner_text("#question")
    shot(alice, "4-confirm")
    alice.click("#confirm")
    alice.locator("#notice").wait_for()
    shot(alice, "5-withdrawn")
    found = re.search(r"/sent/m/([0-9a-f]{44})/", alice.url)
    assert found is not None, alice.url
    mid = found.group(1)
    row = alice.locator('li.rcpt[data-address="dave@oldmail.example"]')
    assert "Withdrawn" in row.inner_text()
    assert "Withdrawn" not in alice.locator('li.rcpt[data-address="s@x.example"]').inner_text()

    recipient.reload()
    recipient.get_by_role("heading", name="This message was withdrawn").wait_for()

    mallory = new_page(browser)
    enrol(world, mallory, "mallory@hospital.example")
    assert subject not in mallory.inner_text("main")
    for path in (f"/sent/m/{mid}/", f"/sent/m/{mid}/revoke", f"/sent/m/{mid}/expiry"):
        r = mallory.goto(f"http://127.0.0.1:{world.port}{path}")
        assert r is not None and r.status == 404, path
    r = mallory.request.post(
        f"http://127.0.0.1:{world.port}/sent/m/{mid}/revoke", form={"csrf": "x", "recipient": ""}
    )
    assert r.status == 404
    shot(mallory, "6-not-found")
    with open_store(world) as store:
        assert store.message(mid) is not None
        assert store.message(mid).revoked_at is None  # type: ignore[union-attr]
