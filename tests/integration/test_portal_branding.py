"""Branding through the real thing (issue 25 part 2): two brands on one gateway, the hospital's
(a PNG logo, its colour) and its radiology unit's (an SVG logo, another colour), chosen by the
author's address. Mail goes through a private Postfix with `zivmilter run`; the notification is
read at the receiving server and shown in Chromium, its link opened against the real
`zivmilter portal`; each page is checked by element (name, logo loaded, button colour), and
axe-core (as in test_portal_a11y.py) finds nothing on the branded pages."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.harness.portal import CODE, World, browser, open_link, portal_world
from tests.integration.test_portal_a11y import Audit

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("axe_playwright_python")

pytestmark = pytest.mark.integration
_ = browser  # the module fixture from the shared harness

DATA = Path(__file__).parent.parent / "data" / "branding"
HOSPITAL = {"name": "Hospital", "logo": "/brand/default.png?v=", "color": "rgb(20, 80, 122)"}
RADIOLOGY = {"name": "Example Radiology", "logo": "/brand/radiology.svg?v=",
             "color": "rgb(90, 45, 130)"}  # fmt: skip
SENDERS = {"hospital": "alice@hospital.example", "radiology": "xray-1@hospital.example"}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    branding = {
        "logo": str(DATA / "logo.png"),
        "color": "#14507a",
        "support": {"phone": "+31 20 555 0100", "url": "https://hospital.example/"},
        "footer": {"en": "Hospital, 1 Example Road, Amsterdam"},
        "units": {
            "radiology": {
                "name": "Example Radiology",
                "logo": str(DATA / "radiology.svg"),
                "color": "#5a2d82",
                "senders": ["xray-*@hospital.example"],
            }
        },
    }
    with portal_world({"branding": branding}, senders=()) as w:
        yield w


def send(world: World, author: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Dr. Example <{author}>"
    msg["To"] = to
    msg["Subject"] = "Your scan"
    msg["Message-ID"] = f"<brand-{time.monotonic_ns()}@hospital.example>"
    msg["zivver-access-right"] = f"{to} access-code {CODE}"
    msg.set_content("The scan looks fine.")
    world.send(msg, [to], sender=author)
    return msg


def logo_loaded(page: Any, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


@pytest.mark.parametrize(("unit", "brand"), [("hospital", HOSPITAL), ("radiology", RADIOLOGY)])
def test_each_unit_gets_its_own_name_logo_and_colour(
    world: World, browser: Any, unit: str, brand: dict[str, str]
) -> None:
    to = f"patient-{unit}@oldmail.example"
    before = len(world.sink.received)
    send(world, SENDERS[unit], to)

    # The notification as it reached the receiving server through Postfix.
    received = world.mail_for(to, before, "/m/")
    note = received.message()
    html_part, text_part = note.get_body(("html",)), note.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html, text = html_part.get_content(), text_part.get_content()
    assert f"Sent through the secure email of {brand['name']}." in text
    assert "phone: +31 20 555 0100" in text
    assert "Hospital, 1 Example Road, Amsterdam" in text
    link, _ = world.notification_link(to, before)

    a = Audit(browser, world, "en", f"brand-{unit}")
    try:
        page = a.page
        # The notification's HTML part in Chromium: the unit's logo, loaded from the portal.
        # Shown at an address of its own (Chromium's private network rules keep about:blank
        # from loading 127.0.0.1, where a mail program would load the portal's public name).
        shown = f"http://127.0.0.1:{world.port}/__notification-{unit}"
        page.route(shown, lambda route: route.fulfill(body=html, content_type="text/html"))
        page.goto(shown)
        logo = page.locator("img").first
        assert brand["logo"] in (logo.get_attribute("src") or "")
        assert logo.get_attribute("alt") == brand["name"]
        page.wait_for_function("() => document.images[0].complete")
        assert logo_loaded(page, "img")
        button = page.locator("a", has_text="Open the secure message")
        assert button.evaluate("a => getComputedStyle(a).backgroundColor") == brand["color"]
        a.check("notification")

        # The portal's pages of this message: the same brand.
        open_link(page, link)
        assert page.locator("header .org").inner_text() == brand["name"]
        assert brand["logo"] in (page.get_attribute("header img.logo", "src") or "")
        assert logo_loaded(page, "header img.logo")
        send_button = page.locator("form.verify button")
        assert send_button.evaluate("b => getComputedStyle(b).backgroundColor") == brand["color"]
        assert "Hospital, 1 Example Road, Amsterdam" in page.locator("footer").inner_text()
        a.check("verify")
        page.fill("#code", CODE)
        page.click("form.verify button")
        page.locator("#subject").wait_for()
        assert page.locator("header .org").inner_text() == brand["name"]
        a.check("message")
        a.assert_clean()
    finally:
        a.context.close()


def test_a_page_of_no_message_has_the_organizations_brand(world: World, browser: Any) -> None:
    a = Audit(browser, world, "nl", "brand-none")
    try:
        a.page.goto(f"http://127.0.0.1:{world.port}/m/" + "x" * 40)
        assert a.page.locator("header .org").inner_text() == "Hospital"
        assert HOSPITAL["logo"] in (a.page.get_attribute("header img.logo", "src") or "")
        a.check("unknown-link")
        a.assert_clean()
    finally:
        a.context.close()


def test_the_svg_logo_is_served_as_an_image_only(world: World) -> None:
    url = f"http://127.0.0.1:{world.port}/brand/radiology.svg"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["content-type"] == "image/svg+xml"
        assert "sandbox" in response.headers["content-security-policy"]
        assert "script-src" not in response.headers["content-security-policy"]
        assert response.read() == (DATA / "radiology.svg").read_bytes()
