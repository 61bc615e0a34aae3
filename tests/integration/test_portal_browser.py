"""The guest portal in a real headless Chromium (Playwright), from a real notification.

A message goes into a private Postfix with the real `zivmilter run` attached; the notification
arrives at a receiving server (aiosmtpd); its personal link is opened in Chromium against the
real `zivmilter portal` process on loopback (http: the `Secure` cookie flag follows the scheme of
portal.base_url, tested in tests/test_portal_app.py). Codes come the way a recipient gets them:
the SMS provider's webhook (a local HTTP server) and the verification email at the receiving
server. Replies come back through Postfix to the sender's mailbox. Every page is saved as a
screenshot under test-artifacts/portal/.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.harness.portal import (
    ARTIFACTS,
    CODE,
    PASSWORD,
    PDF,
    World,
    browser,
    html_message,
    open_link,
    open_store,
    plain_message,
    portal_world,
    shown_secret,
    totp,
)
from zivmilter.portal.accounts import add_recipient_account

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration
_ = browser  # the module fixture from the shared harness

PHONE = "+31612345678"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # "remember this browser" offered after SMS and emailed codes (issue 25)
    with portal_world(
        lambda sms: {
            "policy": {"methods": {"remember_device_days": 30}},
            "sms": sms.webhook("Authorization: Bearer provider-key"),
        }
    ) as w:
        yield w


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    # Where the test ended (the last screen of a failure too).
    pg.screenshot(path=str(ARTIFACTS / f"last-{request.node.name}.png"), full_page=True)
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def rich_message(to: str, extra: dict[str, str]) -> EmailMessage:
    return html_message(
        to,
        extra,
        "HTML-ONLY-MARKER plain alternative",
        "<h2 style='color:#1f5fbf'>BODY-MARKER Your lab results</h2>"
        "<p>Everything is <b>fine</b>. <img src='cid:scan@hospital' alt='scan' width='8'></p>"
        "<img src='https://tracker.example/open.gif'>"
        "<script>document.title='pwned'; alert('xss')</script>"
        "<img src='x' onerror=\"alert('xss')\">",
    )


# --- the tests -----------------------------------------------------------------------------------


def test_access_code_read_download_reply_language_revoke(
    world: World, page: Any, tmp_path: Path
) -> None:
    before = len(world.sink.received)
    msg = rich_message(
        "Dave <dave@oldmail.example>",
        {"zivver-access-right": f"dave@oldmail.example access-code {CODE}"},
    )
    world.send(msg, ["dave@oldmail.example"])
    link, text = world.notification_link("dave@oldmail.example", before)
    assert CODE not in text

    loaded: list[tuple[str, int]] = []
    page.on("response", lambda r: loaded.append((r.url, r.status)))
    open_link(page, link)
    page.get_by_role("heading", name="Confirm that this message is for you").wait_for()
    shot(page, "access-code-1-verify")

    page.fill("#code", "not-the-code")
    page.click("form.verify button")
    page.locator("#error").wait_for()
    assert "not right" in page.inner_text("#error")
    shot(page, "access-code-2-wrong-code")

    page.fill("#code", CODE)
    page.click("form.verify button")
    page.locator("#subject").wait_for()
    assert page.inner_text("#subject") == "Lab results"
    assert "Dr. Alice <alice@hospital.example>" in page.inner_text("#from")
    frame = page.frame_locator("#body")
    frame.get_by_text("BODY-MARKER Your lab results").wait_for()
    page.wait_for_load_state("networkidle")
    shot(page, "access-code-3-message")
    # Sanitized: nothing ran, nothing remote loaded, the inline image came from the portal.
    assert page.dialogs == [] and page.title() != "pwned"
    assert frame.locator("script").count() == 0
    assert not [u for u, _ in loaded if "tracker.example" in u]
    assert [s for u, s in loaded if re.search(r"/r/\d+/part/\d+$", u)] == [200]
    assert page.locator("#remote").is_visible()

    with page.expect_download() as download:
        page.click("text=results.pdf")
    saved = tmp_path / "results.pdf"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "results.pdf"
    assert saved.read_bytes() == PDF, "the attachment downloads byte-identical"

    attachment = tmp_path / "answers.csv"
    attachment.write_bytes(b"question,answer\nfasting,yes\n")
    page.fill("#reply-text", "REPLY-MARKER Thank you, doctor.")
    page.set_input_files("#reply-files", str(attachment))
    page.click("#send-reply")
    page.locator("#notice").wait_for()
    shot(page, "access-code-4-replied")
    reply = world.mail_for("alice@hospital.example", before, "REPLY-MARKER").message()
    assert reply["In-Reply-To"] == msg["Message-ID"]
    assert reply["Reply-To"] == "dave@oldmail.example"
    body = reply.get_body(("plain",))
    assert body is not None and "REPLY-MARKER Thank you, doctor." in body.get_content()
    (attached,) = reply.iter_attachments()
    assert attached.get_filename() == "answers.csv"
    assert attached.get_payload(decode=True) == attachment.read_bytes()
    # It came in through the replies' listener (the site's content filters), not the
    # milter-free one of copies (issue 15 item 5).
    came_in = world.pf.wait_for_log(r"postfix/zivmilter-replies/smtpd\[\d+\]: (\w+): client=")
    world.pf.wait_for_log(rf"{came_in.group(1)}: message-id={re.escape(reply['Message-ID'])}")

    page.click("text=Nederlands")
    page.get_by_role("heading", name="Beveiligd antwoorden").wait_for()
    shot(page, "access-code-5-dutch")

    status = world.cli("status", str(msg["Message-ID"]))
    assert status.returncode == 0, status.stderr
    assert "failed attempts 1" in status.stdout and "opened 20" in status.stdout
    assert "1 reply" in status.stdout
    revoke = world.cli("revoke", str(msg["Message-ID"]))
    assert revoke.returncode == 0 and "data key destroyed" in revoke.stdout, revoke.stderr
    # Withdrawn while this page was open (as on another device): the attachment's link says so
    # (issue 15), it does not download an error page without a word.
    page.click("text=results.pdf")
    page.get_by_role("heading", name="Dit bericht is ingetrokken").wait_for()
    shot(page, "access-code-6-revoked")
    page.goto(link)
    page.get_by_role("heading", name="Dit bericht is ingetrokken").wait_for()

    with open_store(world) as store:
        contact = store.contact("dave@oldmail.example")
    assert contact is not None and contact.access_code


def test_sms_code_then_the_contact_book_feeds_rule_5(world: World, page: Any) -> None:
    before = len(world.sink.received)
    world.send(
        plain_message(
            "carol@oldmail.example",
            "SMS-MARKER",
            {"zivver-access-right": f"carol@oldmail.example sms {PHONE}"},
        ),
        ["carol@oldmail.example"],
    )
    link, text = world.notification_link("carol@oldmail.example", before)
    assert "+31 6•••••678" in text and PHONE not in text
    open_link(page, link)
    assert "+31 6•••••678" in page.inner_text("main")
    shot(page, "sms-1-verify")
    calls = len(world.sms.handler.calls)
    page.click("#send")
    page.locator("#notice").wait_for()
    headers, body = world.sms.wait_for(calls + 1)[-1]
    assert headers["Authorization"] == "Bearer provider-key"
    assert body["recipient"] == PHONE
    (code,) = re.findall(r"\b\d{6}\b", body["body"])
    shot(page, "sms-2-code-sent")
    page.fill("#code", code)
    page.click("form.verify button")
    page.locator("#text").wait_for()
    assert "SMS-MARKER see you on Tuesday" in page.inner_text("#text")
    shot(page, "sms-3-message")

    # The next message to carol carries no directive: rule A5 finds her number in the contact
    # book (through the milter's live facts) and the notification names it again.
    before = len(world.sink.received)
    second = plain_message("carol@oldmail.example", "SECOND-MARKER")
    world.send(second, ["carol@oldmail.example"])
    _, text = world.notification_link("carol@oldmail.example", before)
    assert "+31 6•••••678" in text
    status = world.cli("status", str(second["Message-ID"]))
    assert "method sms (rule A5)" in status.stdout, status.stdout


def test_email_verification_code_from_the_receiving_server(world: World, page: Any) -> None:
    before = len(world.sink.received)
    world.send(plain_message("s@x.example", "EMAIL-MARKER"), ["s@x.example"])
    link, text = world.notification_link("s@x.example", before)
    assert "verification code by email" in text
    # Opened from another site (as from webmail): the SameSite=Strict cookie still works,
    # because the portal moves on from the token URL by itself (same-site).
    page.set_content(f'<a id="mail" href="{link}">open the secure message</a>')
    page.click("#mail")
    page.wait_for_url(re.compile(r"/r/\d+/$"))
    page.locator("#send").wait_for()
    shot(page, "email-1-verify")
    page.click("#send")
    page.locator("#notice").wait_for()
    code_mail = world.mail_for("s@x.example", before, "Your verification code").message()
    assert code_mail["From"].addresses[0].addr_spec == "noreply@hospital.example"
    body = code_mail.get_body(("plain",))
    assert body is not None and "EMAIL-MARKER" not in body.get_content()
    (code,) = re.findall(r"\b\d{6}\b", body.get_content())
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    page.fill("#code", wrong)
    page.click("form.verify button")
    page.locator("#error").wait_for()
    shot(page, "email-2-wrong-code")
    page.fill("#code", code)
    page.click("form.verify button")
    page.locator("#text").wait_for()
    assert "EMAIL-MARKER" in page.inner_text("#text")
    shot(page, "email-3-message")


def test_a_remembered_browser_skips_the_code_until_it_expires_or_is_forgotten(
    world: World, page: Any
) -> None:
    """Issue 25 part 3: after an emailed code the recipient ticks "remember this browser";
    later links for the same address open in that browser without a code, a second address on
    it is still asked for its own, and the store's expiry and `contacts forget` end it."""
    dev, other = "dev@x.example", "eve@x.example"

    def notify(*rcpts: str) -> list[str]:
        before = len(world.sink.received)
        world.send(plain_message(", ".join(rcpts), "DEVICE-MARKER"), list(rcpts))
        return [world.notification_link(r, before)[0] for r in rcpts]

    def answer_code(address: str, before: int, remember: bool) -> None:
        page.click("#send")
        page.locator("#notice").wait_for()
        mail = world.mail_for(address, before, "Your verification code").message()
        body = mail.get_body(("plain",))
        assert body is not None
        (code,) = re.findall(r"\b\d{6}\b", body.get_content())
        page.fill("#code", code)
        if remember:
            page.check("#remember")  # by its label's text for a screen reader too
            assert page.get_by_label("Remember this browser for 30 days").is_checked()
        page.click("form.verify button")
        page.locator("#text").wait_for()

    def asked_for_code(link: str) -> bool:
        open_link(page, link)
        page.locator("#send, #text").first.wait_for()
        return page.locator("#send").count() == 1

    before = len(world.sink.received)
    first_dev, first_other = notify(dev, other)
    open_link(page, first_dev)
    answer_code(dev, before, remember=True)
    shot(page, "device-1-remembered")
    (cookie,) = [c for c in page.context.cookies() if c["name"].startswith("zv_d")]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert dev not in cookie["value"] and cookie["expires"] > time.time() + 29 * 24 * 3600

    # A second address on the same browser: asked for its own code.
    assert asked_for_code(first_other)
    shot(page, "device-2-other-address-asked")

    # The next message to the first address: no code, the message at once.
    mails = len(world.sink.received)
    (second,) = notify(dev)
    assert not asked_for_code(second)
    assert "DEVICE-MARKER" in page.inner_text("#text")
    code_mails = [r for r in world.sink.received[mails:] if b"Your verification code" in r.data]
    assert not code_mails
    shot(page, "device-3-skipped")

    # Expired in the store (its clock passed the configured days): asked again. The browser
    # still holds the cookie; the store no longer honours it.
    with open_store(world) as store:
        store._conn.execute(
            "UPDATE devices SET expires_at = ? WHERE address = ?", (int(time.time()), dev)
        )
    before = len(world.sink.received)
    (third,) = notify(dev)
    assert asked_for_code(third)
    shot(page, "device-4-expired-asked")
    answer_code(dev, before, remember=True)  # remembered anew

    listed = world.cli("contacts", "list")
    assert f"{dev}\tsms -\taccess code no\tlast used -\tremembered 1 browser" in listed.stdout
    assert cookie["value"].split(".")[0] not in listed.stdout
    forgot = world.cli("contacts", "forget", dev)
    assert forgot.returncode == 0 and f"{dev}: 1 browser ended" in forgot.stdout
    (fourth,) = notify(dev)
    assert asked_for_code(fourth)
    shot(page, "device-5-forgotten-asked")


def test_account_sign_in_enrols_an_authenticator(world: World, page: Any) -> None:
    with open_store(world) as store:
        add_recipient_account(store, "erin@oldmail.example", PASSWORD)
    before = len(world.sink.received)
    world.send(plain_message("erin@oldmail.example", "ACCOUNT-MARKER"), ["erin@oldmail.example"])
    link, text = world.notification_link("erin@oldmail.example", before)
    assert "Sign in with your Hospital account" in text
    open_link(page, link)
    shot(page, "account-1-sign-in")
    page.fill("#password", PASSWORD)
    page.click("form.verify button")
    page.locator("figure.qr svg").wait_for()
    shot(page, "account-2-enrol")
    page.fill("#totp", totp(shown_secret(page), time.time()))
    page.click("form.verify button")
    page.locator("#text").wait_for()
    assert "ACCOUNT-MARKER" in page.inner_text("#text")
    shot(page, "account-3-message")


def test_portal_process_serves_only_what_it_should(world: World) -> None:
    """Plain HTTP checks against the running process: headers, and no token in its log."""
    with urllib.request.urlopen(f"http://127.0.0.1:{world.port}/static/portal.css") as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/css")
    with socket.create_connection(("127.0.0.1", world.port)) as s:
        s.sendall(b"GET /r/1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = s.recv(65536).decode("latin-1")
    assert (
        head.startswith("HTTP/1.1 403")
        and "content-security-policy: default-src 'none'" in head.lower()
    )
    log = (world.z.dir / "portal.log").read_text()
    assert "/m/" not in log, "the access log would leak link tokens"
